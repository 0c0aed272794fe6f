"""HTML routes (Jinja)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from .deps import RunnerDep
from .snapshot import build_snapshot

ROOT = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(ROOT / "templates"))
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index(request: Request, runner: RunnerDep) -> HTMLResponse:
    runs, next_cursor = runner.page(None, request.query_params.get("cursor"), 50)
    return templates.TemplateResponse(
        request, "index.html", {"runs": runs, "next_cursor": next_cursor}
    )


TAIL_LINES = 1000


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, runner: RunnerDep) -> HTMLResponse:
    run = runner.get(run_id)
    snapshot = build_snapshot(
        runner.settings.events_dir / f"{run_id}.events", tail_lines=TAIL_LINES
    )
    return templates.TemplateResponse(
        request, "run.html", {"run": run, "snapshot": snapshot.as_dict()}
    )
