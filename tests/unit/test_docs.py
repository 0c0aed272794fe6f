"""The docs stay true: every setting, request field and event type is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.events import EventType
from backend.models import RunCreate, RunRecord, RunStatus
from backend.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme(name: str) -> None:
    assert f"PULLRUN_{name.upper()}" in README


@pytest.mark.parametrize("name", sorted(RunCreate.model_fields))
def test_every_request_field_is_in_the_api_doc(name: str) -> None:
    assert f"| `{name}` |" in API


@pytest.mark.parametrize("name", sorted(RunRecord.model_fields))
def test_every_run_field_is_in_the_api_doc(name: str) -> None:
    assert f'"{name}"' in API


@pytest.mark.parametrize("event", [e.value for e in EventType])
def test_every_event_type_is_in_the_api_doc(event: str) -> None:
    assert f"`{event}`" in API


@pytest.mark.parametrize("status", [s.value for s in RunStatus])
def test_every_status_is_in_the_api_doc(status: str) -> None:
    assert status in API
