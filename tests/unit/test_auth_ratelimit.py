"""Failed sign-ins are limited per client (an injectable clock: no sleeping)."""

from __future__ import annotations

from backend.auth.ratelimit import MAX_CLIENTS, FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_past_the_limit_a_client_waits_until_its_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    limiter = FailureLimiter(max_failures=3, window=60, clock=clock)
    for _ in range(2):
        limiter.failed("10.0.0.1")
        clock.now += 1
    assert limiter.retry_after("10.0.0.1") is None  # 2 of 3
    limiter.failed("10.0.0.1")  # at 1002
    assert limiter.retry_after("10.0.0.1") == 58  # the first (1000) leaves at 1060
    assert limiter.retry_after("10.0.0.2") is None  # per client
    clock.now = 1059.5
    assert limiter.retry_after("10.0.0.1") == 1
    clock.now = 1060
    assert limiter.retry_after("10.0.0.1") is None  # one failure left the window


def test_a_success_clears_the_client() -> None:
    clock = Clock()
    limiter = FailureLimiter(max_failures=2, window=60, clock=clock)
    limiter.failed("c")
    limiter.failed("c")
    assert limiter.retry_after("c") is not None
    limiter.succeeded("c")
    assert limiter.retry_after("c") is None


def test_memory_is_bounded() -> None:
    limiter = FailureLimiter(max_failures=1, window=60, clock=Clock())
    for n in range(MAX_CLIENTS + 10):
        limiter.failed(f"client-{n}")
    assert len(limiter._failures) == MAX_CLIENTS
    assert limiter.retry_after("client-0") is None  # the least recent were forgotten
    assert limiter.retry_after(f"client-{MAX_CLIENTS + 9}") is not None
