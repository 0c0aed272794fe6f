"""HTML routes (Jinja): the runs index with the new-run form and the engines
panel, and the run page.

The pages are rendered from the same data the API serves; their scripts
(static/js/) then follow `GET /api/events` (index) and the run's own event
stream from the snapshot's `last_event_id` (run page).
"""

from __future__ import annotations

import shlex
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from ..auth import Role
from ..engines.pool import DOWN, UNKNOWN, UP
from ..errors import NotFound
from ..models import PIPELINE_PHASES, REDACTED, Phase, RunRecord, RunSpec, RunStatus
from ..run_options import port_text, volume_text
from ..runs.policy import redact
from ..runs.runner import Runner
from .deps import RunnerDep, ViewerDep
from .snapshot import tail_snapshot

ROOT = Path(__file__).resolve().parents[2]
templates = Jinja2Templates(directory=str(ROOT / "templates"))
router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
TAIL_LINES = 1000
PHASES = PIPELINE_PHASES
ACTIVE = tuple(status.value for status in RunStatus if not status.terminal)
STATUS_LABELS = {status.value: status.value.replace("_", " ") for status in RunStatus}
# A pull layer's states (backend/runs/progress.py `Layer.state`) as the page words them.
LAYER_LABELS = {
    "waiting": "waiting",
    "downloading": "downloading",
    "verifying": "verifying",
    "downloaded": "downloaded",
    "extracting": "extracting",
    "done": "done",
    "exists": "already exists",
}
# An engine's health states (backend/engines/pool.py) as the engines panel words them.
ENGINE_STATE_LABELS = {UP: "up", DOWN: "down", UNKNOWN: "not checked yet"}
NOTHING = "\u2013"  # an en dash: a fact not known (as the pages' scripts write it)


def vocabulary() -> dict[str, Any]:
    """Statuses, phases and the words the pages use for them.

    The one source for the pages' scripts too: templates/base.html embeds it
    as JSON (`#pullrun-vocabulary`), static/js/vocabulary.js reads it, and the
    scripts keep no copy of their own.
    """
    return {
        "statuses": [status.value for status in RunStatus],
        "active": list(ACTIVE),
        "phases": [phase.value for phase in PHASES],
        "phase_status": {phase.value: phase.status.value for phase in PHASES},
        "status_labels": dict(STATUS_LABELS),
        "layer_labels": dict(LAYER_LABELS),
        "engine_states": dict(ENGINE_STATE_LABELS),
    }


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status)


def shell_join(words: list[str] | None) -> str:
    return shlex.join(words) if words else ""


def _parse_time(value: str) -> datetime | None:
    """RFC 3339 as the events write it (`...Z`), or None."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(value: str | None) -> str:
    """RFC 3339 -> `2026-11-27 21:57:15 UTC` (the script shows local, relative times)."""
    if not value:
        return ""
    moment = _parse_time(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else value


def _fixed(value: float, digits: int = 0) -> str:
    """`value` with `digits` decimals, a half rounded up, as JavaScript's
    `toFixed` and `Math.round` do (Python's `round` and format round a half to
    even): the page's script (static/js/format.js) redraws these figures."""
    return str(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(seconds, 0)
    if seconds < 1:
        return f"{_fixed(seconds * 1000)} ms"
    if seconds < 60:
        return f"{_fixed(seconds, 1)} s" if seconds < 10 else f"{_fixed(seconds)} s"
    minutes, rest = divmod(int(_fixed(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def format_bytes(size: float | None) -> str:
    if size is None:
        return ""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{_fixed(value, 0 if unit == 0 else 1)} {units[unit]}"


def format_memory(size: int | None) -> str:
    if size is None:
        return ""
    for unit, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def engine_facts(engine: dict[str, Any]) -> dict[str, str]:
    """An engine object (`GET /api/engines`, `engine` events) as the engines panel
    and the form's engine choice word it; static/js/engines.js says the same
    (tests/js/fixtures/engines.json keeps them in step)."""
    state = str(engine.get("state") or UNKNOWN)
    label = ENGINE_STATE_LABELS.get(state, state)
    version, api = engine.get("version"), engine.get("api_version")
    platform = "/".join(str(part) for part in (engine.get("os"), engine.get("arch")) if part)
    cpus, memory = engine.get("cpus"), engine.get("memory")
    labels = engine.get("labels") or {}
    name = str(engine["name"])
    return {
        "name": name,
        "host": str(engine.get("host") or ""),
        "labels": ", ".join(f"{k}={v}" for k, v in labels.items()),
        "state": state,
        "state_label": label,
        "error": "" if state == UP else str(engine.get("last_error") or ""),
        "version": (f"{version} (API {api})" if api else str(version)) if version else NOTHING,
        "platform": platform or NOTHING,
        "cpus": NOTHING if cpus is None else str(cpus),
        "memory": NOTHING if memory is None else format_bytes(memory),
        "load": f"{engine.get('active_runs') or 0}/{engine.get('max_concurrent_runs') or 0}",
        "queued": f"{engine.get('queued_runs') or 0} queued",
        "option": name if state == UP else f"{name} ({label})",
    }


def engines_summary(engines: list[dict[str, Any]]) -> str:
    """The engines panel's heading note: how many of them are up."""
    up = sum(1 for engine in engines if engine.get("state") == UP)
    return f"{up} of {len(engines)} up"


templates.env.filters["shell_join"] = shell_join
templates.env.filters["engine_facts"] = engine_facts
templates.env.filters["engines_summary"] = engines_summary
templates.env.filters["time"] = format_time
templates.env.filters["duration"] = format_duration
templates.env.filters["bytes"] = format_bytes
templates.env.filters["status_label"] = status_label


_SCRIPT_ESCAPES = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"), (b"'", b"\\u0027"))


def embed_json(value: Any) -> Markup:
    """JSON for a <script type="application/json"> element, escaped as Jinja's
    `tojson` does (<, >, & and ' as \\u escapes) but written by orjson: the
    run page's snapshot (1,000 lines) costs about 0.3 ms instead of 3.5 (issue 12)."""
    data = orjson.dumps(value)
    for char, escape in _SCRIPT_ESCAPES:
        data = data.replace(char, escape)  # on bytes: far faster than on str
    return Markup(data.decode())


templates.env.filters["embed_json"] = embed_json
templates.env.globals["vocabulary"] = vocabulary()


def prefill(spec: RunSpec) -> dict[str, Any]:
    """The new-run form's values for "Run again" (registry credentials and
    secret values are never kept: `secret_env` comes back as `KEY=***`)."""
    return {
        "image": spec.image,
        "command": shell_join(spec.command),
        "entrypoint": shell_join(spec.entrypoint),
        "env": "\n".join(f"{k}={v}" for k, v in spec.env.items()),
        "secret_env": "\n".join(f"{k}={REDACTED}" for k in spec.secret_env),
        "labels": "\n".join(f"{k}={v}" for k, v in spec.labels.items()),
        "workdir": spec.workdir or "",
        "user": spec.user or "",
        "platform": spec.platform or "",
        "pull": spec.pull.value,
        "tty": spec.tty,
        "timeout": "" if spec.timeout is None else f"{spec.timeout:g}",
        "memory": format_memory(spec.memory),
        "cpus": "" if spec.cpus is None else f"{spec.cpus:g}",
        "pids_limit": "" if spec.pids_limit is None else str(spec.pids_limit),
        "auto_remove": spec.auto_remove,
        "engine": spec.engine or "",
        "engine_labels": "\n".join(f"{k}={v}" for k, v in spec.engine_labels.items()),
        "volumes": "\n".join(volume_text(v) for v in spec.volumes),
        "ports": "\n".join(port_text(p) for p in spec.ports),
        "network": spec.network or "",
        "gpus": spec.gpus or "",
    }


EMPTY_FORM: dict[str, Any] = prefill(RunSpec.model_construct(image=""))  # the spec's defaults


def run_json(run: RunRecord) -> dict[str, Any]:
    return run.model_dump(mode="json")


def engine_views(runner: Runner) -> list[dict[str, Any]]:
    """The engines as `GET /api/engines` shows them: the panel's first state."""
    return [handle.view(runner.queued_for(handle)) for handle in runner.engines]


@router.get("/", response_class=HTMLResponse)
def index(request: Request, runner: RunnerDep, identity: ViewerDep) -> HTMLResponse:
    cursor = request.query_params.get("cursor") or None
    runs, next_cursor = runner.page(None, cursor, PAGE_SIZE)
    runs = [redact(run, identity) for run in runs]  # env values: its creator's and admins' only
    form = dict(EMPTY_FORM)
    source: str | None = None
    copy_error: str | None = None
    source_id = request.query_params.get("from")
    if source_id:
        try:
            form.update(prefill(redact(runner.get(source_id), identity).spec))
            source = source_id
        except NotFound:
            copy_error = f"There is no run {source_id!r} to copy; the form is empty."
    return templates.TemplateResponse(
        request,
        "index.html",
        {
            "runs": runs,
            "runs_json": [run_json(r) for r in runs],
            "cursor": cursor,
            "next_cursor": next_cursor,
            "page_size": PAGE_SIZE,
            "form": form,
            "source": source,
            "copy_error": copy_error,
            "engines": engine_views(runner),
            # What the identity may do decides what the page shows (the API checks it again).
            "can_start": identity.allows(Role.OPERATOR),
        },
    )


def timeline(at: dict[str, str], done: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each phase with its state (pending|active|done|skipped|failed) and duration.

    `at`: when the run entered each status; `done`: the `done` event's data.
    Durations come from `done` when the run has ended, else from the status
    events' times (the phase in progress is timed by the page's script, with
    the same rules: static/js/phases.js, kept in step by tests/js).
    """
    entered = [p for p in PHASES if p.status in at]
    error = (done or {}).get("error") or {}
    failed_phase: str | None = None
    if done and done.get("status") != "succeeded":
        # A non-zero exit or a timeout has no error: the run phase is what failed.
        failed_phase = error.get("phase") or Phase.RUN
    durations: dict[str, Any] = (done or {}).get("durations") or {}
    current = entered[-1] if entered and not done else None
    out = []
    for phase in PHASES:
        seconds: float | None = None
        if phase in entered:
            if done is not None:
                seconds = durations.get(phase)
            else:
                later = [p.status for p in entered if PHASES.index(p) > PHASES.index(phase)]
                if later:
                    seconds = _seconds_between(at[phase.status], at[later[0]])
        if phase == failed_phase:
            state = "failed"
        elif phase == current:
            state = "active"
        elif phase in entered:
            state = "done"
        elif done is not None or (entered and PHASES.index(entered[-1]) > PHASES.index(phase)):
            state = "skipped"
        else:
            state = "pending"
        out.append(
            {
                "name": phase.value,
                "state": state,
                "seconds": seconds,
                "at": at.get(phase.status),
            }
        )
    return out


def _seconds_between(start: str, end: str) -> float | None:
    a, b = _parse_time(start), _parse_time(end)
    if a is None or b is None:
        return None
    return max(0.0, (b - a).total_seconds())


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, runner: RunnerDep, identity: ViewerDep) -> HTMLResponse:
    run = redact(runner.get(run_id), identity)
    # Through the run's event index: its cost does not grow with the log.
    snapshot = tail_snapshot(runner.events(run_id), tail_lines=TAIL_LINES)
    done = snapshot.done
    status = done["status"] if done else (snapshot.status or run.status.value)
    view = {
        "status": status,
        "active": status in ACTIVE,
        "exit_code": done.get("exit_code") if done else None,
        "oom_killed": bool(done and done.get("oom_killed")),
        "error": done.get("error") if done else None,
        "total": (done.get("durations") or {}).get("total") if done else None,
        "log_lines": done.get("log_lines") if done else snapshot.total_lines,
        "phases": timeline(snapshot.status_at, done),
    }
    return templates.TemplateResponse(
        request,
        "run.html",
        {
            "run": run,
            "run_json": run_json(run),
            "snapshot": snapshot.as_dict(line_objects=True),  # (embed_json: orjson)
            "view": view,
            "tail_lines": TAIL_LINES,
            "layer_labels": LAYER_LABELS,
            "can_start": identity.allows(Role.OPERATOR),
            "can_cancel": identity.can_manage(run.created_by),
        },
    )
