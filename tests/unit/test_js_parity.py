"""The pages' scripts and the server agree: the Python side of tests/js.

The Node tests (`node --test tests/js/`, `make test-js`) check static/js
against fixtures that tests/js/make_fixtures.py writes from the server's own
code. Here: those fixtures are up to date, and the server hands the scripts
their vocabulary (statuses, phases, labels) instead of the scripts keeping a
copy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from backend.models import RunStatus
from backend.storage.reader import Event, LineJoiner, join_lines
from backend.web import pages
from tests.js import make_fixtures

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "static" / "js").glob("*.js"))
REGENERATE = "run `.venv/bin/python -m tests.js.make_fixtures` (make js-fixtures) and commit"


@pytest.fixture(scope="module")
def built() -> dict[Path, str]:
    return make_fixtures.build()


def test_fixtures_are_up_to_date(built: dict[Path, str]) -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in built.items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"stale JS fixtures {stale}: {REGENERATE}"


def test_no_fixture_is_left_over(built: dict[Path, str]) -> None:
    extra = sorted(set(make_fixtures.FIXTURES.rglob("*.json")) - set(built))
    assert not extra, f"fixtures nothing writes any more {extra}: {REGENERATE}"


def test_every_recorded_pull_has_a_fixture(built: dict[Path, str]) -> None:
    recorded = {path.stem for path in make_fixtures.PULLS.glob("*.jsonl")}
    written = {path.stem for path in built if path.parent.name == "pulls"}
    assert recorded <= written


def test_line_cases_are_well_formed_streams() -> None:
    """The joiner finds nothing wrong with the cases: they are streams the
    server could send, so the page must show exactly these lines."""
    for name, events in make_fixtures.LINE_CASES.items():
        joiner = LineJoiner()
        lines = join_lines((Event(str(n), "log", e) for n, e in enumerate(events, 1)), joiner)
        assert lines, name
        assert not joiner.problems, (name, joiner.problems)
        assert [line.n for line in lines] == list(range(1, len(lines) + 1)), name


def test_line_cases_cover_partial_lines_across_streams() -> None:
    events = [e for case in make_fixtures.LINE_CASES.values() for e in case]
    assert {e["stream"] for e in events} == {"stdout", "stderr", "tty"}
    assert any(e["partial"] for e in events)
    assert any(len(e["lines"]) > 1 and e["partial"] for e in events)


def test_the_fixtures_join_lines_with_the_servers_joiner() -> None:
    assert make_fixtures.JOIN_LINES is join_lines


# -- the vocabulary --------------------------------------------------------------------


def embedded_vocabulary(html: str) -> Any:
    match = re.search(
        r'<script type="application/json" id="pullrun-vocabulary">(.*?)</script>', html, re.S
    )
    assert match, "no #pullrun-vocabulary in the page"
    return json.loads(match.group(1))


def test_every_page_carries_the_vocabulary() -> None:
    html = pages.templates.env.get_template("error.html").render(status=404, message="x")
    assert embedded_vocabulary(html) == pages.vocabulary()


def test_the_vocabulary_is_the_models() -> None:
    vocabulary = pages.vocabulary()
    assert vocabulary["statuses"] == [s.value for s in RunStatus]
    assert vocabulary["active"] == [s.value for s in RunStatus if not s.terminal]
    assert [vocabulary["phase_status"][p] for p in vocabulary["phases"]] == [
        p.status.value for p in pages.PHASES
    ]
    assert set(vocabulary["status_labels"]) == set(vocabulary["statuses"])
    assert vocabulary["status_labels"]["timed_out"] == "timed out"


def test_the_templates_label_statuses_as_the_scripts_do() -> None:
    badge = pages.templates.env.from_string(
        '{% from "_partials.html" import badge %}{{ badge("timed_out") }}'
    ).render()
    assert ">timed out</span>" in badge


def test_the_scripts_keep_no_copy_of_the_vocabulary() -> None:
    """A list or map of statuses or phases in a script is a second source.

    Naming one is fine (`done.status !== "succeeded"`); three within a few
    lines is a copy. A layer label that is not its state's name is a copy.
    """
    words = [s.value for s in RunStatus] + [p.value for p in pages.PHASES]
    quoted = re.compile(rf"""["'`]({"|".join(words)})["'`]""")
    for path in SCRIPTS:
        lines = path.read_text().splitlines()
        for number in range(len(lines)):
            window = "\n".join(lines[number : number + 3])
            found = set(quoted.findall(window))
            assert len(found) < 3, (
                f"{path.name}:{number + 1} names {sorted(found)}: use vocabulary.js"
            )
        text = "\n".join(lines)
        for state, label in pages.LAYER_LABELS.items():
            if label != state:
                assert label not in text, f"{path.name} has the label {label!r}"
