"""PULLRUN_AUTH=off is only for a server nobody else can reach."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`; never 0.0.0.0, ::, or a name."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refuse_auth_off(auth: str, host: str) -> str | None:
    """Why the server must not start with these settings, or None."""
    if auth == "off" and not is_loopback(host):
        return (
            f"PULLRUN_AUTH=off is refused: the server would listen on {host!r}, which is not "
            "a loopback address, and anyone who can reach it could run any container "
            "(root on this host). Keep PULLRUN_AUTH=required (the default), or listen on "
            "127.0.0.1."
        )
    return None
