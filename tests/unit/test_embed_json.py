"""The run page embeds its snapshot as JSON in a <script type="application/json">
(templates/run.html): `embed_json` (backend/web/pages.py) writes it with orjson,
escaped as Jinja's `tojson` escapes it, so no output a run prints can end the
element or start markup, and the page reads back exactly what was embedded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from backend.web.pages import embed_json, templates

HOSTILE: list[Any] = [
    "</script><script>alert(1)</script>",
    "<!-- <script> -->",
    "a & b; 'quoted' \"double\"",
    "é ü \u2028 \u2029 😀 \x00 \x1b[31mred\x1b[0m",
    {"lines": [{"n": 1, "text": "</SCRIPT>", "partial": False, "at": None}], "total": 2**53},
    [1, 2.5, None, True, False, ""],
]


@pytest.mark.parametrize("value", HOSTILE)
def test_embedded_json_reads_back_the_same_and_cannot_end_the_element(value: Any) -> None:
    out = embed_json(value)
    assert isinstance(out, Markup)  # not escaped again by the template
    assert not set("<>&'") & set(out)
    assert json.loads(out) == value == json.loads(htmlsafe_json_dumps(value))


def test_the_run_page_uses_it_for_the_snapshot() -> None:
    source = templates.env.loader.get_source(templates.env, "run.html")[0]  # type: ignore[union-attr]
    assert (
        '<script type="application/json" id="snapshot">{{ snapshot|embed_json }}</script>' in source
    )
