"""PullProgress: daemon pull messages -> per-layer state and overall figures."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.runs.progress import PullProgress

PULLS = Path(__file__).resolve().parents[1] / "fixtures" / "pulls"
STREAMS = sorted(PULLS.glob("*.jsonl"))
LAYER_ID = re.compile(r"^[0-9a-f]{12}$")


def load(path: Path) -> list[dict[str, Any]]:
    messages = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            message = json.loads(line)
            assert isinstance(message, dict), f"{path.name}:{number} is not a JSON object"
            messages.append(message)
    return messages


def is_final(message: dict[str, Any]) -> bool:
    status = message.get("status")
    return isinstance(status, str) and status.startswith("Status: ")


def check_stream(messages: list[dict[str, Any]]) -> tuple[PullProgress, list[dict[str, Any]]]:
    """Feed every message, checking the contract's invariants on each `pull` event."""
    progress = PullProgress()
    events = []
    previous = 0.0
    ended = False
    seen_layers: set[str] = set()
    for index, message in enumerate(messages):
        data = progress.update(message)
        events.append(data)
        where = f"message {index + 1}: {message}"
        raw_id = message.get("id")
        if isinstance(raw_id, str) and LAYER_ID.match(raw_id):
            seen_layers.add(raw_id)
            assert data["layer"] == raw_id, where
        else:
            assert data["layer"] is None, where
        for key in ("current", "total"):
            assert data[key] is None or (type(data[key]) is int and data[key] >= 0), where
        overall = data["overall"]
        fraction = overall["fraction"]
        assert isinstance(fraction, float), where
        assert 0.0 <= fraction <= 1.0, where
        assert fraction >= previous, f"fraction went back from {previous} to {fraction}: {where}"
        ended = ended or is_final(message)
        if ended:
            assert fraction == 1.0, where
        else:
            assert fraction < 1.0, where
        assert overall["layers_total"] == len(seen_layers), where
        assert 0 <= overall["layers_done"] <= overall["layers_total"], where
        assert overall["bytes_done"] >= 0, where
        assert overall["bytes_total"] >= 0, where
        previous = fraction
    assert progress.complete == ended
    assert progress.messages == len(messages)
    return progress, events


# -- every stream in tests/fixtures/pulls ------------------------------------------


def test_fixture_folder_has_streams() -> None:
    names = [path.name for path in STREAMS]
    assert any(name.startswith("synthetic-") for name in names), names


@pytest.mark.parametrize("path", STREAMS, ids=[path.name for path in STREAMS])
def test_stream_invariants(path: Path) -> None:
    messages = load(path)
    assert messages, f"{path.name} is empty"
    progress, events = check_stream(messages)
    ids = {m["id"] for m in messages if isinstance(m.get("id"), str) and LAYER_ID.match(m["id"])}
    cached = {m["id"] for m in messages if m.get("status") == "Already exists"}
    summary = progress.summary()
    assert summary["layers_total"] == len(ids)
    assert summary["layers_cached"] == len(cached)
    assert summary["messages"] == len(messages)
    digests = [m["status"][8:] for m in messages if str(m.get("status", "")).startswith("Digest: ")]
    assert summary["digest"] == (digests[-1] if digests else None)
    # Layers are never un-finished by a real stream: the done count only grows.
    done = [event["overall"]["layers_done"] for event in events]
    assert done == sorted(done)
    if progress.complete:
        final = events[-1]["overall"]
        assert final["fraction"] == 1.0
        assert final["layers_done"] == final["layers_total"] == len(ids)


# -- targeted cases --------------------------------------------------------------------

A = "a1b2c3d4e5f6"
B = "0f1e2d3c4b5a"


def msg(status: str, layer: str | None = None, **detail: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"status": status, "progressDetail": detail}
    if layer is not None:
        message["id"] = layer
    return message


def test_first_line_tag_id_is_not_a_layer() -> None:
    p = PullProgress()
    data = p.update({"status": "Pulling from library/busybox", "id": "latest"})
    assert data["layer"] is None
    assert data["overall"]["layers_total"] == 0
    data = p.update({"status": "Pulling from library/busybox", "id": "sha256:" + "a" * 64})
    assert data["layer"] is None
    assert p.layers == {}


def test_layer_ids_must_be_twelve_lowercase_hex() -> None:
    p = PullProgress()
    for bad in ("a1b2c3d4e5f", "a1b2c3d4e5f6a", "g1b2c3d4e5f6", "", 123456789012):
        assert p.update({"status": "Pulling fs layer", "id": bad})["layer"] is None
    assert p.update({"status": "Pulling fs layer", "id": A})["layer"] == A
    assert list(p.layers) == [A]


def test_layer_id_with_trailing_newline_is_not_a_layer() -> None:
    # `$` in a Python regex also matches before a final "\n".
    p = PullProgress()
    assert p.update({"status": "Pulling fs layer", "id": A + "\n"})["layer"] is None
    assert p.layers == {}


def test_empty_progress_detail_and_missing_total() -> None:
    p = PullProgress()
    data = p.update(msg("Pulling fs layer", A))
    assert (data["current"], data["total"]) == (None, None)
    data = p.update(msg("Downloading", A, current=1000))
    assert (data["current"], data["total"]) == (1000, None)
    overall = data["overall"]
    assert overall["bytes_total"] == 0
    assert overall["layers_total"] == 1
    assert 0.0 <= overall["fraction"] < 1.0


def test_message_without_progress_detail_or_with_junk_detail() -> None:
    p = PullProgress()
    assert p.update({"status": "Downloading", "id": A})["current"] is None
    data = p.update({"status": "Downloading", "id": A, "progressDetail": "junk"})
    assert data["current"] is None
    data = p.update(msg("Downloading", A, current=True, total=-5))
    assert (data["current"], data["total"]) == (None, None)


def test_current_over_total_is_capped() -> None:
    p = PullProgress()
    data = p.update(msg("Downloading", A, current=150, total=100))
    overall = data["overall"]
    assert overall["bytes_done"] == 100
    assert overall["bytes_total"] == 100
    assert overall["fraction"] == 0.5  # download is half of a layer's weight
    data = p.update(msg("Extracting", A, current=300, total=100))
    assert data["overall"]["fraction"] == 0.999  # fully extracted, yet not finished


def test_units_seconds_is_passed_on_and_gives_no_fraction() -> None:
    p = PullProgress()
    p.update(msg("Downloading", A, current=100, total=100))
    p.update(msg("Download complete", A))
    before = p.overall()["fraction"]
    data = p.update(msg("Extracting", A, current=7, units="s"))
    assert data["units"] == "s"
    assert (data["current"], data["total"]) == (7, None)
    assert data["overall"]["fraction"] == before == 0.5
    data = p.update(msg("Extracting", A, current=7, total=8, units="s"))
    assert data["overall"]["fraction"] == 0.5


def test_no_units_key_unless_the_daemon_sent_one() -> None:
    p = PullProgress()
    assert "units" not in p.update(msg("Downloading", A, current=1, total=2))


def test_already_exists_counts_as_done() -> None:
    p = PullProgress()
    p.update(msg("Pulling fs layer", B))
    data = p.update(msg("Already exists", A))
    overall = data["overall"]
    assert overall["layers_done"] == 1
    assert overall["layers_total"] == 2
    assert overall["bytes_done"] == overall["bytes_total"] == 0  # done, with no bytes
    assert overall["fraction"] < 1.0
    # A later "Waiting" for the cached layer does not un-finish it.
    assert p.update(msg("Waiting", A))["overall"]["layers_done"] == 1
    assert p.summary()["layers_cached"] == 1


def test_cached_first_layer_does_not_pin_fraction_near_one() -> None:
    """The daemon reports a cached layer before announcing the others (see
    recorded-layers-one-cached.jsonl). The fraction must stay meaningful: with one
    of four layers cached and no byte of the other three downloaded, it is at most
    1/4 (0 if cached layers are not counted)."""
    p = PullProgress()
    p.update({"status": "Pulling from pullrun/layers", "id": "latest"})
    p.update(msg("Already exists", A))
    for layer in (B, "bd30c1f2a354", "9a57f4a2a30e"):
        p.update(msg("Pulling fs layer", layer))
    data = p.update(msg("Downloading", B, current=0, total=2097991))
    assert data["overall"]["layers_done"] == 1
    assert data["overall"]["fraction"] <= 0.25


def test_unknown_status_leaves_state_alone() -> None:
    p = PullProgress()
    p.update(msg("Downloading", A, current=50, total=100))
    before = p.overall()
    data = p.update(msg("Retrying in 3 seconds", A))
    assert data["status"] == "Retrying in 3 seconds"
    assert data["overall"] == before
    assert p.update({"id": A})["status"] == ""
    assert p.update({"status": None, "id": A})["overall"] == before


def test_weighted_fraction_and_final_status() -> None:
    p = PullProgress()
    p.update({"status": "Pulling from x", "id": "latest"})
    p.update(msg("Downloading", A, current=0, total=100))
    p.update(msg("Downloading", B, current=0, total=300))
    assert p.overall()["fraction"] == 0.0
    data = p.update(msg("Download complete", A))
    assert data["overall"]["fraction"] == 0.125  # 100 * 0.5 / 400
    assert data["overall"]["bytes_done"] == 100
    assert data["overall"]["bytes_total"] == 400
    p.update(msg("Pull complete", A))
    data = p.update(msg("Pull complete", B))
    overall = data["overall"]
    assert overall == {
        "bytes_done": 400,
        "bytes_total": 400,
        "layers_done": 2,
        "layers_total": 2,
        "fraction": 0.999,
    }
    p.update({"status": "Digest: sha256:" + "1" * 64})
    data = p.update({"status": "Status: Downloaded newer image for x:latest"})
    assert data["overall"]["fraction"] == 1.0
    assert p.complete
    assert p.digest == "sha256:" + "1" * 64


def test_up_to_date_pull_with_no_layers_ends_at_one() -> None:
    p = PullProgress()
    assert p.update({"status": "Pulling from x", "id": "latest"})["overall"]["fraction"] == 0.0
    data = p.update({"status": "Status: Image is up to date for x:latest"})
    assert data["overall"]["fraction"] == 1.0
    assert data["overall"]["layers_total"] == 0


def test_fraction_does_not_go_back_when_a_new_layer_appears() -> None:
    p = PullProgress()
    p.update(msg("Downloading", A, current=100, total=100))
    p.update(msg("Pull complete", A))
    high = p.overall()["fraction"]
    assert high == 0.999
    data = p.update(msg("Pulling fs layer", B))
    assert data["overall"]["fraction"] == high
    data = p.update(msg("Downloading", B, current=1, total=10**9))
    assert data["overall"]["fraction"] == high


def test_each_layer_counted_once() -> None:
    p = PullProgress()
    for current in (10, 20, 20, 30):
        p.update(msg("Downloading", A, current=current, total=100))
    overall = p.overall()
    assert overall["layers_total"] == 1
    assert overall["bytes_total"] == 100
    assert overall["bytes_done"] == 30
    p.update(msg("Downloading", A, current=5, total=100))  # a stale, lower report
    assert p.overall()["bytes_done"] == 30


# -- arbitrary message sequences -------------------------------------------------------

_STATUSES = [
    "Pulling fs layer",
    "Waiting",
    "Downloading",
    "Verifying Checksum",
    "Download complete",
    "Extracting",
    "Pull complete",
    "Already exists",
    "Retrying in 5 seconds",
    "Some new status",
    "Digest: sha256:" + "f" * 64,
    "Pulling from library/busybox",
]
_numbers = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=10**10),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=3),
)
_detail = st.one_of(
    st.none(),
    st.just({}),
    st.just("x"),
    st.fixed_dictionaries(
        {},
        optional={
            "current": _numbers,
            "total": _numbers,
            "units": st.sampled_from(["s", 1, None]),
            "hidecounts": st.booleans(),
        },
    ),
)
_message = st.fixed_dictionaries(
    {},
    optional={
        "status": st.one_of(st.sampled_from(_STATUSES), st.none(), st.integers(), st.text()),
        "id": st.one_of(
            st.sampled_from([A, B, "c0ffee000001", "latest", "sha256:abc", ""]),
            st.none(),
            st.integers(),
        ),
        "progressDetail": _detail,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_message, max_size=40),
    st.one_of(st.none(), st.integers(min_value=0)),
    st.lists(_message, max_size=5),
)
def test_arbitrary_messages_keep_the_invariants(
    messages: list[dict[str, Any]], end_at: int | None, after: list[dict[str, Any]]
) -> None:
    if end_at is not None:
        end_at %= len(messages) + 1
        final = {"status": "Status: Downloaded newer image for x:latest"}
        messages = [*messages[:end_at], final, *after]
    progress, events = check_stream(messages)
    if end_at is not None:
        assert events[end_at]["overall"]["fraction"] == 1.0
        assert progress.complete
    else:
        assert all(event["overall"]["fraction"] < 1.0 for event in events)
