"""The runner's Prometheus metrics (served by web/metrics.py at GET /metrics).

Each runner has a registry of its own (never prometheus_client's global one),
so apps made side by side (the tests) do not share or clash. Counters move
where a run is accepted (`started`) and where it ends (`finished`, from its
final record); the gauges, and the count of events written, are read from the
runner when Prometheus scrapes. Label values are engine names (from the
engines file) and run statuses only: nothing a request sends becomes a label
but the name of an engine that exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..models import RunRecord

if TYPE_CHECKING:
    from .runner import Runner

# Seconds: from a run that fails at once to a long batch job.
RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
PULL_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)


class RunMetrics:
    """The counters and histograms the runner updates, and the scrape-time
    collector of its gauges, in one registry."""

    def __init__(self, runner: Runner) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs_started = Counter(
            "pullrun_runs_started",
            "Runs accepted (POST /api/runs answered 201), by the engine the run asked for "
            "(or the only engine; empty when placement chooses among several)",
            ["engine"],
            registry=r,
        )
        self.runs_finished = Counter(
            "pullrun_runs_finished",
            "Runs ended, by final status and engine (empty: ended before placement)",
            ["status", "engine"],
            registry=r,
        )
        self.run_duration = Histogram(
            "pullrun_run_duration_seconds",
            "Runs ended: accepted to ended (the record's durations.total)",
            ["engine"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.pull_duration = Histogram(
            "pullrun_pull_duration_seconds",
            "Image pulls of runs ended (durations.pull; runs that pulled nothing are not in it)",
            ["engine"],
            buckets=PULL_BUCKETS,
            registry=r,
        )
        self.pull_bytes = Counter(
            "pullrun_pull_bytes",
            "Bytes of the layers pulled for runs ended (the pull summary's bytes_total)",
            ["engine"],
            registry=r,
        )
        self.log_lines = Counter(
            "pullrun_log_lines",
            "Output lines relayed (stdout and stderr) by runs ended",
            ["engine"],
            registry=r,
        )
        self.log_bytes = Counter(
            "pullrun_log_bytes",
            "Output bytes relayed (stdout and stderr) by runs ended",
            ["engine"],
            registry=r,
        )
        self.dropped_lines = Counter(
            "pullrun_log_dropped_lines",
            "Output lines dropped by the per-run log limits (PULLRUN_MAX_LOG_BYTES ...)",
            ["engine"],
            registry=r,
        )
        self.dropped_bytes = Counter(
            "pullrun_log_dropped_bytes",
            "Output bytes dropped by the per-run log limits",
            ["engine"],
            registry=r,
        )
        r.register(RunnerCollector(runner))

    def started(self, engine: str) -> None:
        self.runs_started.labels(engine=engine).inc()

    def finished(self, record: RunRecord) -> None:
        """A run ended: its final record's status, durations and counts."""
        if not record.status.terminal:
            return
        engine = record.engine or ""
        self.runs_finished.labels(status=record.status.value, engine=engine).inc()
        durations = record.durations
        if durations.total is not None:
            self.run_duration.labels(engine=engine).observe(durations.total)
        if durations.pull is not None:
            self.pull_duration.labels(engine=engine).observe(durations.pull)
        pull = record.pull or {}
        pulled = pull.get("bytes_total")
        if pull.get("pulled") and isinstance(pulled, int) and pulled > 0:
            self.pull_bytes.labels(engine=engine).inc(pulled)
        self.log_lines.labels(engine=engine).inc(record.log_lines)
        self.log_bytes.labels(engine=engine).inc(record.log_bytes)
        self.dropped_lines.labels(engine=engine).inc(record.dropped_lines)
        self.dropped_bytes.labels(engine=engine).inc(record.dropped_bytes)


class RunnerCollector(Collector):
    """What is true now, read at each scrape: runs queued and placed, engines
    up, event streams open, events written."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def describe(self) -> list[Metric]:
        return []  # its names are its own: nothing to check at register

    def collect(self) -> Iterator[Metric]:
        runner = self._runner
        queued = GaugeMetricFamily("pullrun_runs_queued", "Runs accepted and waiting for an engine")
        queued.add_metric([], runner.queued)
        yield queued
        active = GaugeMetricFamily(
            "pullrun_runs_active",
            "Runs placed on an engine and not ended (pulling to running), by engine",
            labels=["engine"],
        )
        slots = GaugeMetricFamily(
            "pullrun_engine_slots",
            "Runs an engine may hold at once (max_concurrent_runs)",
            labels=["engine"],
        )
        up = GaugeMetricFamily(
            "pullrun_engine_up",
            "1 when the engine answered its last health check, else 0",
            labels=["engine"],
        )
        for handle in runner.engines:
            active.add_metric([handle.name], handle.active)
            slots.add_metric([handle.name], handle.slots)
            up.add_metric([handle.name], 1 if handle.up else 0)
        yield active
        yield slots
        yield up
        streams = GaugeMetricFamily(
            "pullrun_sse_subscribers",
            "Server-Sent Events streams open: `run` (a run's events) or `feed` (/api/events)",
            labels=["stream"],
        )
        streams.add_metric(["run"], runner.subscribers.open)
        streams.add_metric(["feed"], runner.feed_subscribers.open)
        yield streams
        events = CounterMetricFamily(
            "pullrun_events_appended",
            "Events written to run event logs (each is one SSE event a follower receives)",
        )
        events.add_metric([], runner.space.events_written)
        yield events
