"""The audit trail: who started, canceled and deleted which run, sign-ins
(success and failure), sign-outs, users and tokens added or removed.

Each entry goes to the server log (logger `pullrun.audit`) and to the
`audit` table, which admins read through `GET /api/audit`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from .store import AuthStore

log = logging.getLogger("pullrun.audit")

RETENTION_ACTOR = "retention"  # the actor of runs deleted by retention (no caller)
DETAIL_MAX = 500  # characters of a detail kept (a refusal's message can be long)


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Audit:
    def __init__(self, store: AuthStore) -> None:
        self.store = store

    def record(
        self,
        actor: str,
        action: str,
        target: str | None = None,
        *,
        outcome: str = "ok",
        client: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Log and store one entry. Never raises: a failed write is logged, and
        the action it describes goes on."""
        if detail and len(detail) > DETAIL_MAX:
            detail = detail[: DETAIL_MAX - 1] + "…"
        # %r: a name or detail from a request cannot forge a log line.
        log.info(
            "audit action=%s target=%r actor=%r client=%s outcome=%s%s",
            action,
            target,
            actor,
            client or "-",
            outcome,
            f" detail={detail!r}" if detail else "",
        )
        try:
            self.store.add_audit(now_rfc3339(), actor, action, target, outcome, client, detail)
        except Exception:
            log.exception("could not store the audit entry %s %r", action, target)

    def page(
        self, before: int | None, limit: int, action: str | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        entries = self.store.audit_page(before, limit + 1, action)
        more = len(entries) > limit
        entries = entries[:limit]
        return entries, (int(entries[-1]["id"]) if more else None)
