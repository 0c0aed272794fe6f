"""The Content-Security-Policy in Chromium: the pages break none of it (a
violation is a console error, which fails the `page` fixture; the
`securitypolicyviolation` events are counted too), it is in force (an
injected inline script does not run), and /docs works under it with every
request staying on the server (no CDN)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Page, Request, expect

from tests.support.runs import run_to_end
from tests.support.server import ServerProcess

VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""

BASE_IMAGE = "pullrun/busybox:base"


def requests_of(page: Page) -> list[str]:
    seen: list[str] = []

    def on_request(request: Request) -> None:
        seen.append(request.url)

    page.on("request", on_request)
    return seen


def assert_local(urls: list[str], server: ServerProcess) -> None:
    """Every request went to the server (or was a data: URL)."""
    origin = urlsplit(server.base_url)
    away = [
        u
        for u in urls
        if not u.startswith("data:")
        and (urlsplit(u).hostname, urlsplit(u).port) != (origin.hostname, origin.port)
    ]
    assert away == [], away


def test_the_index_run_and_login_pages_break_no_policy(
    page: Page, new_page: Any, server: ServerProcess, client: httpx.Client
) -> None:
    run, _ = run_to_end(
        client,
        image=BASE_IMAGE,
        command=["sh", "-c", r"printf '\033[38;5;208mcolour\033[0m set from a script\n'"],
    )
    page.context.add_init_script(VIOLATIONS)
    seen = requests_of(page)
    page.goto("/")
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")
    assert page.evaluate("window.__violations") == []
    page.goto(run["links"]["page"])
    expect(page.locator("#log-body .ln")).to_have_count(1)
    # A 256-colour SGR is an inline colour set from the script (element.style):
    # allowed, unlike a style attribute in markup.
    colour = page.locator("#log-body .ln span").first.evaluate("(el) => el.style.color")
    assert colour == "rgb(255, 135, 0)"
    assert page.evaluate("window.__violations") == []
    assert_local(seen, server)

    login, problems = new_page(signed_in=False)
    login.context.add_init_script(VIOLATIONS)
    login.goto("/login")
    expect(login.get_by_label("Username")).to_be_visible()
    assert login.evaluate("window.__violations") == []
    assert problems.errors == []


def test_the_policy_is_in_force(new_page: Any) -> None:
    page, problems = new_page()
    page.context.add_init_script(VIOLATIONS)
    page.goto("/")
    ran = page.evaluate(
        """() => {
            const s = document.createElement('script');
            s.textContent = 'window.__injected = true';
            document.body.append(s);
            const img = document.createElement('img');
            img.setAttribute('onerror', 'window.__handler = true');
            img.src = 'data:,not an image';
            document.body.append(img);
            return window.__injected === true;
        }"""
    )
    assert ran is False
    page.wait_for_function("() => window.__violations.length >= 2")
    assert not page.evaluate("window.__handler === true")
    violations = page.evaluate("window.__violations")
    assert all(v.startswith("script-src") for v in violations), violations
    assert any("Content Security Policy" in e for e in problems.errors), problems.errors
    problems.errors.clear()  # expected: the policy refused them


def test_docs_work_offline_under_the_policy(page: Page, server: ServerProcess) -> None:
    page.context.add_init_script(VIOLATIONS)
    seen = requests_of(page)
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("pullrun")
    runs = page.locator(".opblock-summary-path", has_text="/api/runs").first
    expect(runs).to_be_visible()
    runs.click()  # an operation opens: the UI answers
    expect(page.locator(".opblock.is-open")).to_have_count(1)
    assert page.evaluate("window.__violations") == []
    assert_local(seen, server)
    assert any(u.endswith("/static/swagger-ui/swagger-ui-bundle.js") for u in seen), seen
    assert any(u.endswith("/openapi.json") for u in seen), seen
