"""Configuration: environment variables with the PULLRUN_ prefix, or CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PULLRUN_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the server listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the server listens on.")
    data_dir: Path = Field(
        Path(".pullrun-data"), description="Where the run database and event logs live."
    )
    max_concurrent_runs: int = Field(4, ge=1, description="Runs executing at once.")
    max_queued_runs: int = Field(
        100, ge=0, description="Runs waiting for a slot; past this, POST /api/runs answers 429."
    )
    default_timeout: float = Field(
        3600,
        gt=0,
        le=365 * 24 * 3600,
        description="Seconds a container may run when a run gives no timeout.",
    )
    pull_stall_timeout: float = Field(
        300, gt=0, description="Seconds a pull may go without any progress before it fails."
    )
    max_log_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Output kept per run; past it lines are only counted."
    )
    partial_line_delay: float = Field(
        0.25, gt=0, description="Seconds unterminated output waits before it is sent as partial."
    )
    keepalive: float = Field(15, gt=0, description="Seconds between SSE keepalive comments.")
    shutdown_grace: float = Field(
        20, ge=0, description="Seconds a graceful shutdown waits for canceled runs to finish."
    )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "pullrun.db"

    @property
    def events_dir(self) -> Path:
        return self.data_dir / "events"

    def events_file(self, run_id: str) -> Path:
        """A run's event log: the SSE bytes its subscribers get."""
        return self.events_dir / f"{run_id}.events"
