"""GET /metrics: the runner's metrics in the Prometheus text format
(runs/metrics.py), behind sign-in like the API (the viewer role: a scraper
sends `Authorization: Bearer TOKEN`)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from .deps import RunnerDep, ViewerDep

router = APIRouter()


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {}},
            "description": "Prometheus text exposition format 0.0.4 (README, Metrics)",
        }
    },
)
def metrics(runner: RunnerDep, _: ViewerDep) -> Response:
    """Counters, gauges and histograms named `pullrun_...`, for Prometheus."""
    return Response(generate_latest(runner.metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
