"""Who am I (`GET /api/me`) and the audit trail (`GET /api/audit`, admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from ..auth import Role
from .deps import AdminDep, ViewerDep, get_auth

router = APIRouter()


class Me(BaseModel):
    name: str
    role: Role
    via: str = Field(description="`token`, `session`, or `open` (PULLRUN_AUTH=off)")


class AuditEntry(BaseModel):
    id: int
    at: str
    actor: str = Field(description="The user or token name; `cli` for the commands")
    action: str = Field(description="run.start, run.cancel, run.delete, signin, signout, ...")
    target: str | None = Field(None, description="A run id, user or token name")
    outcome: str = Field(description="`ok`, `failed`, `rate_limited`, `denied`")
    client: str | None = None
    detail: str | None = None


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_cursor: int | None = Field(None, description="Pass as `cursor` for the next page.")


@router.get("/api/me", response_model=Me)
def me(identity: ViewerDep) -> Me:
    """The caller's name, role and how it signed in."""
    return Me(name=identity.name, role=identity.role, via=identity.via)


@router.get("/api/audit", response_model=AuditPage)
def audit(
    request: Request,
    _: AdminDep,
    cursor: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    action: Annotated[str | None, Query(max_length=64, description="Only this action.")] = None,
) -> AuditPage:
    """The audit trail, newest first (admins only)."""
    auth = get_auth(request)
    if auth is None:
        return AuditPage(entries=[])
    entries, next_cursor = auth.audit.page(cursor, limit, action)
    return AuditPage(entries=[AuditEntry(**e) for e in entries], next_cursor=next_cursor)
