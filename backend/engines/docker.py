"""The real engine: the only module that talks to Docker (docker-py's low-level
APIClient). It implements `protocol.Engine`.

Each run gets its own `DockerEngine` (its own client and connections), closed
when the run ends: a docker-py client is not promised to be thread-safe and
every live stream holds one pooled connection.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import docker
import docker.auth
import docker.context
import docker.errors
import docker.tls
import requests
from docker.utils import kwargs_from_env

from ..errors import EngineUnavailable
from ..models import RunSpec
from ..reference import registry_of, split_reference
from ..run_options import host_config_options
from .config import EngineConfig

MANAGED_LABEL = "pullrun.managed"
RUN_LABEL = "pullrun.run"
READ_SIZE = 256 * 1024


def engine_message(exc: BaseException) -> str:
    """The engine's own words for a failure, without docker-py's URL noise."""
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"cannot reach the Docker engine: {exc}"
    return str(exc) or type(exc).__name__


def unreachable(exc: BaseException) -> bool:
    """Whether a failure means the engine itself is gone (not that it said no)."""
    if isinstance(exc, EngineUnavailable | ConnectionError):
        return True
    return isinstance(exc, requests.exceptions.ConnectionError)


def client_kwargs(config: EngineConfig | None) -> dict[str, Any]:
    """docker-py's APIClient arguments for an engine, as the docker CLI reaches it."""
    if config is None or (config.host is None and config.context is None):
        return dict(kwargs_from_env())
    if config.context is not None:
        context = docker.context.ContextAPI.get_context(config.context)
        if context is None:
            raise EngineUnavailable(f"no docker context named {config.context!r}")
        return {"base_url": context.Host, "tls": context.TLSConfig or False}
    kwargs: dict[str, Any] = {"base_url": config.host}
    if config.uses_tls:
        cert = (str(config.tls_cert), str(config.tls_key)) if config.tls_cert else None
        kwargs["tls"] = docker.tls.TLSConfig(
            client_cert=cert,
            ca_cert=str(config.tls_ca) if config.tls_ca else None,
            verify=config.tls_verify,
        )
    if config.host and config.host.startswith("ssh://"):
        kwargs["use_ssh_client"] = True  # the system's ssh, with its config and agent
    return kwargs


def _shutdown(sock: Any) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _response_socket(response: requests.Response) -> Any:
    """The socket under a streamed requests response (unix or TCP)."""
    fp = response.raw._fp.fp  # type: ignore[union-attr]
    raw = getattr(fp, "raw", fp)
    return getattr(raw, "_sock", raw)


class PullStream:
    """Daemon pull messages, read to the end; `close()` abandons the pull."""

    def __init__(self, api: Any, response: requests.Response) -> None:
        self._api = api
        self._response = response
        self._sock = _response_socket(response)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for message in self._api._stream_helper(self._response, decode=True):
            if isinstance(message, dict):
                yield message

    def close(self) -> None:
        """Safe from another thread: unblocks a reader stuck in recv."""
        _shutdown(self._sock)
        self._response.close()


class OutputStream:
    """A container's attach stream: raw bytes, multiplexed unless tty."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._sock: Any = getattr(raw, "_sock", raw)
        # requests left its client timeout on the socket; a quiet container is
        # not an error, so block (poll decides how long we wait).
        self._sock.settimeout(None)
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)

    def read(self, timeout: float | None) -> bytes | None:
        """Next bytes; None when `timeout` seconds pass with none; b"" at the end."""
        pending = isinstance(self._sock, ssl.SSLSocket) and self._sock.pending()
        wait_ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        if not pending and wait_ms is not None and not self._poll.poll(wait_ms):
            return None
        try:
            return bytes(self._sock.recv(READ_SIZE))
        except OSError:
            return b""

    def close(self) -> None:
        _shutdown(self._sock)
        with contextlib.suppress(OSError):
            self._raw.close()


class LogStream:
    """A container's log (GET /containers/{id}/logs): raw bytes, multiplexed
    unless tty. The body is chunked, so the socket cannot be polled as attach's
    is: a thread of its own reads it, and `read` waits on what it hands over."""

    def __init__(self, response: requests.Response) -> None:
        self._response = response
        self._sock = _response_socket(response)
        self._chunks: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._ended = False
        self._reader = threading.Thread(target=self._pump, name="pullrun-logs", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        try:
            for chunk in self._response.raw.stream(READ_SIZE, decode_content=False):
                if chunk:
                    self._chunks.put(bytes(chunk))
        except Exception:  # closed under the reader, or the engine went away: the end
            pass
        finally:
            self._chunks.put(b"")

    def read(self, timeout: float | None) -> bytes | None:
        """Next bytes; None when `timeout` seconds pass with none; b"" at the end."""
        if self._ended:
            return b""
        try:
            chunk = self._chunks.get(timeout=None if timeout is None else max(0.0, timeout))
        except queue.Empty:
            return None
        self._ended = not chunk
        return chunk

    def close(self) -> None:
        _shutdown(self._sock)
        with contextlib.suppress(Exception):
            self._response.close()


class _APIClient(docker.APIClient):
    """docker-py's client, except that an engine's own CA (`tls_ca`) wins over
    `REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE`: requests lets those replace a
    session's `verify` path (psf/requests#3829), and then no TLS engine whose
    CA is not in that bundle could be reached."""

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if isinstance(self.verify, str) and verify is None:
            settings["verify"] = self.verify
        return settings


class DockerEngine:
    def __init__(self, config: EngineConfig | None = None, timeout: float = 60) -> None:
        try:
            kwargs = client_kwargs(config)
            self.api = _APIClient(timeout=int(timeout), version="auto", **kwargs)
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(engine_message(exc)) from exc

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self) -> dict[str, Any]:
        """Also the ping: it fails when the engine does not answer."""
        return dict(self.api.version())

    def info(self) -> dict[str, Any]:
        """The engine's /info: `NCPU`, `MemTotal`, `OSType`, `Architecture`, ..."""
        return dict(self.api.info())

    def image_present(self, image: str) -> bool:
        try:
            self.api.inspect_image(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    def image_digest(self, image: str) -> str | None:
        try:
            info = self.api.inspect_image(image)
        except docker.errors.ImageNotFound:
            return None
        repository, _, _ = split_reference(image)
        for repo_digest in info.get("RepoDigests") or []:
            name, _, digest = str(repo_digest).partition("@")
            if name == repository or name.endswith("/" + repository):
                return digest
        return str(info.get("Id")) if info.get("Id") else None

    def pull(
        self,
        image: str,
        *,
        platform: str | None,
        auth: dict[str, str] | None,
        stall_timeout: float,
        lend_credentials: bool = False,
    ) -> PullStream:
        """Start a pull. Errors before the daemon's first flush raise here;
        later ones arrive in the stream as `error`/`errorDetail` messages."""
        repository, tag, digest = split_reference(image)
        params: dict[str, str] = {"fromImage": repository, "tag": digest or tag or "latest"}
        if platform:
            params["platform"] = platform
        headers: dict[str, Any] = {}
        registry = registry_of(repository)
        if auth is not None:
            headers["X-Registry-Auth"] = docker.auth.encode_header(
                {**auth, "serveraddress": registry}
            )
        elif lend_credentials:  # the server's own login (docker config), when lent
            header = docker.auth.get_config_header(self.api, registry)
            if header:
                headers["X-Registry-Auth"] = header
        # The read timeout is the stall detector: no byte for that long = no progress.
        api: Any = self.api  # the streaming pull needs its response: private helpers
        response = api._post(
            api._url("/images/create"),
            params=params,
            headers=headers,
            stream=True,
            timeout=stall_timeout,
        )
        api._raise_for_status(response)
        return PullStream(api, response)

    def create(
        self,
        run_id: str,
        spec: RunSpec,
        name: str | None = None,
        *,
        no_new_privileges: bool = True,
    ) -> str:
        host_config = self.api.create_host_config(
            mem_limit=spec.memory,
            nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
            pids_limit=spec.pids_limit,
            security_opt=["no-new-privileges"] if no_new_privileges else None,
            auto_remove=False,  # we remove it ourselves after the logs are drained
        )
        # volumes, network, ports, gpus (checked by the run policy): HostConfig keys
        host_config.update(host_config_options(spec.volumes, spec.network, spec.ports, spec.gpus))
        labels = {**spec.labels, RUN_LABEL: run_id, MANAGED_LABEL: "true"}
        container = self.api.create_container(
            spec.image,
            command=spec.command,
            entrypoint=spec.entrypoint,
            environment=spec.env or None,
            working_dir=spec.workdir,
            user=spec.user or "",
            tty=spec.tty,
            labels=labels,
            host_config=host_config,
            name=name,
            platform=spec.platform,
            ports=[(p.container_port, p.protocol) for p in spec.ports] or None,
        )
        return str(container["Id"])

    def attach(self, container_id: str) -> OutputStream:
        # stream only, never logs=1 (a 20.10 engine hung attaching with logs to
        # a container whose log driver was `none`).
        raw = self.api.attach_socket(container_id, params={"stdout": 1, "stderr": 1, "stream": 1})
        return OutputStream(raw)

    def logs(self, container_id: str, *, follow: bool) -> LogStream:
        return self.log_stream("/containers/{0}/logs", container_id, follow=follow)

    def log_stream(self, path: str, object_id: str, *, follow: bool) -> LogStream:
        """A logs endpoint (a container's, a swarm task's) from its first line."""
        api: Any = self.api  # the raw body is needed: private helpers, as for the pull
        params = {"stdout": 1, "stderr": 1, "follow": int(follow), "tail": "all"}
        response = api._get(
            api._url(path, object_id),
            params=params,
            stream=True,
            # Following, a quiet container is no error: no read timeout then.
            **({"timeout": None} if follow else {}),
        )
        api._raise_for_status(response)
        return LogStream(response)

    def start(self, container_id: str) -> None:
        self.api.start(container_id)

    def wait(self, container_id: str) -> tuple[int, str | None]:
        result = self.api.wait(container_id)
        error = result.get("Error") or None
        message = error.get("Message") if isinstance(error, dict) else None
        return int(result.get("StatusCode", -1)), message or None

    def inspect(self, container_id: str) -> dict[str, Any]:
        return dict(self.api.inspect_container(container_id))

    def stop(self, container_id: str, grace: float = 10) -> None:
        # docker-py's stop adds the grace to its HTTP timeout itself.
        self.api.stop(container_id, timeout=int(grace))

    def remove(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.api.remove_container(container_id, force=True, v=True)

    def managed_containers(self, run_id: str | None = None) -> list[str]:
        label = f"{RUN_LABEL}={run_id}" if run_id else f"{MANAGED_LABEL}=true"
        return [str(c["Id"]) for c in self.api.containers(all=True, filters={"label": label})]
