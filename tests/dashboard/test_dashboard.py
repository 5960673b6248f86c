"""The broker's dashboard in a real browser (Debian's Chromium through Playwright) against a
real broker, RabbitMQ and endpoint: login, a failed task's traceback, cancelling a running
task, an endpoint killed with kill -9 shown offline by the self-refreshing page, and the
tenant boundary, cookie flags and CSRF check. Every non-local request is aborted and must
never be attempted.

FNRELAY_DASHBOARD_SHOTS=DIR (what `make screenshots` sets) also saves the main pages as PNGs.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from fnrelay import Client, Executor
from fnrelay.devstack.services import BrokerServer, LocalEndpoint
from support.browser import chromium, offline_context
from support.session import MARKER
from support.waiting import wait_for, wait_recorded

pytestmark = pytest.mark.timeout(180)

#: The broker's heartbeat period (told to endpoints) and offline threshold: short, so that a
#: killed endpoint is offline about a second after its last heartbeat.
HEARTBEAT, THRESHOLD = "1", "1.2"
SHOTS = os.environ.get("FNRELAY_DASHBOARD_SHOTS")


def boom() -> None:
    print("about to fail")
    raise ValueError("dashboard boom")


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@dataclass
class Stack:
    broker: BrokerServer
    tokens: dict[str, str]
    endpoint: LocalEndpoint
    endpoint_id: str
    failed_task: str = ""
    group: str = ""
    attempted: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.broker.url}/dashboard"

    def client(self, user: str) -> Client:
        return Client(self.broker.url, self.tokens[user])


@pytest.fixture(scope="module")
def stack(new_vhost, _workdir: Path) -> Iterator[Stack]:
    """A broker of its own (own vhost, short heartbeats, operator 'ops'), users alice,
    mallory and ops, and one started endpoint of alice's with a failed task on it."""
    broker = BrokerServer(_workdir / f"dash-{uuid.uuid4().hex[:6]}", new_vhost("fnrelay-dash"),
                          marker=MARKER, extra_args=["--heartbeat-period", HEARTBEAT,
                                                     "--heartbeat-threshold", THRESHOLD,
                                                     "--operator", "ops"])
    broker.start()
    tokens = {name: broker.add_user(name) for name in ("alice", "mallory", "ops")}
    ep = LocalEndpoint(broker.dir / "alice-ep", "alice-site", broker.url, tokens["alice"],
                       marker=MARKER).configure(max_workers=2)
    ep.start(foreground=True)
    s = Stack(broker, tokens, ep, ep.endpoint_id)
    with Executor(s.endpoint_id, client=s.client("alice")) as ex:
        fut = ex.submit(boom)
        assert isinstance(fut.exception(timeout=60), Exception)
        s.failed_task, s.group = str(fut.task_id), str(ex.task_group_id)
        assert nap in [nap] and ex.submit(nap, 0.01).result(timeout=60) == 0.01
    try:
        yield s
    finally:
        ep.kill()
        broker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def login(browser: Browser, stack: Stack, user: str, token: str | None = None
          ) -> tuple[BrowserContext, Page]:
    """A new browser context logged in as `user` (with `token`, default the user's)."""
    context = offline_context(browser, stack.attempted)
    page = context.new_page()
    page.goto(f"{stack.url}/login")
    page.fill("#token", token or stack.tokens[user])
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{stack.url}/endpoints")
    return context, page


def shot(page: Page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"dashboard-{name}.png"), full_page=True)


def csrf_of(page: Page) -> str:
    return page.locator("input[name=csrf]").first.get_attribute("value") or ""


def test_login_sets_a_strict_httponly_cookie_without_the_token(browser: Browser,
                                                                stack: Stack) -> None:
    context, page = login(browser, stack, "alice")
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not cookie["secure"]  # plain HTTP here; see the TLS test for Secure
    assert stack.tokens["alice"] not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # HttpOnly: out of scripts' reach
    shot(page, "endpoints")
    forged = context.request.post(f"{stack.url}/login", form={"token": stack.tokens["mallory"]},
                                  headers={"Origin": "https://evil.example"}, max_redirects=0)
    assert forged.status == 403 and not forged.headers.get("set-cookie")  # login CSRF
    page.goto(f"{stack.url}/login")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("not a live user token")
    context.close()
    assert stack.attempted == []


def test_logout_and_a_revoked_token_end_the_session(browser: Browser, stack: Stack) -> None:
    from sqlalchemy import text

    from fnrelay_broker import auth
    from fnrelay_broker.db import Database

    db = Database(stack.broker.db_url)  # what `fnrelay-broker token create|revoke` call
    try:
        spare = auth.create_token(db, "alice")
        context, page = login(browser, stack, "alice", spare)
        assert auth.revoke_token(db, spare)
    finally:
        db.dispose()
    page.goto(f"{stack.url}/endpoints")
    expect(page).to_have_url(f"{stack.url}/login")
    context.close()
    context, page = login(browser, stack, "alice")
    (cookie,) = context.cookies()
    db = Database(stack.broker.db_url)
    try:  # the database holds no cookie value: reading it is not enough to make one
        with db.read() as s:
            rows = s.execute(text("SELECT * FROM dashboard_sessions")).all()
        assert rows and cookie["value"] not in repr(rows)
    finally:
        db.dispose()
    refused = context.request.post(f"{stack.url}/logout", form={}, max_redirects=0)
    assert refused.status == 403
    page.click("form.logout button")
    expect(page).to_have_url(f"{stack.url}/login")
    assert context.cookies() == []
    page.goto(f"{stack.url}/tasks")
    expect(page).to_have_url(f"{stack.url}/login")
    context.close()
    # A copy of the cookie taken before logout no longer works: logout ended it on the server.
    stolen = browser.new_context()
    stolen.add_cookies([cookie])
    assert stolen.request.get(f"{stack.url}/tasks", max_redirects=0).status == 303
    stolen.close()
    assert stack.attempted == []


def test_failed_task_shows_its_traceback_and_output(browser: Browser, stack: Stack) -> None:
    context, page = login(browser, stack, "alice")
    page.goto(f"{stack.url}/tasks?status=failed")
    rows = page.locator("#task-rows tr[data-task-id]")
    expect(rows).to_have_count(1)
    shot(page, "tasks")
    rows.first.locator("a").first.click()
    expect(page).to_have_url(f"{stack.url}/tasks/{stack.failed_task}")
    traceback = page.locator("#traceback")
    expect(traceback).to_contain_text("ValueError: dashboard boom")
    expect(traceback).to_contain_text("in boom")
    expect(page.locator("#stdout")).to_contain_text("about to fail")
    states = page.locator(".timeline td.state").all_inner_texts()
    assert states[0] == "received" and states[-1] == "failed", states
    shot(page, "task")
    boom_fn = stack.client("alice").task_record(stack.failed_task)["function_id"]
    listed = {f"since=1h&endpoint_id={stack.endpoint_id}": 2, f"function_id={boom_fn}": 1,
              f"endpoint_id={uuid.uuid4()}": 0, "status=running": 0}
    for query, count in listed.items():
        page.goto(f"{stack.url}/tasks?{query}")
        expect(page.locator("#task-rows tr[data-task-id]")).to_have_count(count)
    page.goto(f"{stack.url}/groups")
    page.click(f"text={stack.group}")
    expect(page.locator("#task-rows tr[data-task-id]")).to_have_count(2)
    page.goto(f"{stack.url}/charts")
    expect(page.locator("svg.chart")).to_have_count(2)
    expect(page.locator("main")).to_contain_text("2 of your tasks finished")
    shot(page, "charts")
    context.close()
    assert stack.attempted == []


def test_cancel_needs_the_csrf_token_and_cancels(browser: Browser, stack: Stack) -> None:
    alice = stack.client("alice")
    with Executor(stack.endpoint_id, client=alice) as ex:
        fut = ex.submit(nap, 120)
        wait_for(lambda: fut.task_id, "the task to be accepted")
        task_id = str(fut.task_id)
        try:
            wait_recorded(alice, task_id, "running")
            context, page = login(browser, stack, "alice")
            page.goto(f"{stack.url}/tasks/{task_id}")
            expect(page.locator("#task-state")).to_have_text("running")
            cancel_url = f"{stack.url}/tasks/{task_id}/cancel"
            for form in ({}, {"csrf": "0" * 64}, {"csrf": csrf_of(page)[:-1] + "x"}):
                refused = context.request.post(cancel_url, form=form, max_redirects=0)
                assert refused.status == 403, refused.text()
            assert alice.task_record(task_id)["status"] == "running"
            page.click("form.cancel button")
            expect(page.locator("#task-state")).to_have_text("cancelled")
            assert alice.task_record(task_id)["status"] == "cancelled"
            context.close()
        finally:  # a failed check must not leave the Executor waiting for the nap
            alice.cancel(task_id)
    assert stack.attempted == []


def test_mallory_sees_none_of_alices_objects(browser: Browser, stack: Stack) -> None:
    context, page = login(browser, stack, "mallory")
    first = page.goto(f"{stack.url}/endpoints")
    assert first is not None
    bodies = [first.text()]
    for _ in range(2):  # what the list's own refreshes bring
        with page.expect_response(lambda r: r.url.endswith("/endpoints/rows")) as refresh:
            pass
        bodies.append(refresh.value.text())
    for path in ("/tasks", "/groups", "/charts"):
        answer = page.goto(stack.url + path)
        assert answer is not None and answer.ok
        bodies.append(answer.text())
    secrets = (stack.endpoint_id, stack.failed_task, stack.group, "alice-site")
    assert not [s for s in secrets for body in bodies if s in body]
    probes = [f"/tasks/{stack.failed_task}", f"/tasks/{stack.failed_task}/live",
              f"/endpoints/{stack.endpoint_id}", f"/tasks?task_group_id={stack.group}"]
    for path in probes:
        r = context.request.get(stack.url + path)
        assert r.status == 404, (path, r.status)
        assert "dashboard boom" not in r.text() and "alice-site" not in r.text()
    unknown = context.request.get(f"{stack.url}/tasks/{uuid.uuid4()}")
    assert unknown.status == 404  # alike for unknown ids
    cancel = context.request.post(f"{stack.url}/tasks/{stack.failed_task}/cancel",
                                  form={"csrf": csrf_of(page)}, max_redirects=0)
    assert cancel.status == 404
    assert context.request.get(f"{stack.url}/admin").status == 403
    context.close()
    assert stack.attempted == []


def test_operators_see_every_tenant(browser: Browser, stack: Stack) -> None:
    context, page = login(browser, stack, "ops")
    page.click("text=Admin")
    main = page.locator("main")
    for text in ("alice", "mallory", "alice-site", stack.endpoint_id[:8], "failed 1"):
        expect(main).to_contain_text(text)
    shot(page, "admin")
    context.close()
    assert stack.attempted == []


def test_killed_endpoint_shows_offline_without_reload(browser: Browser, stack: Stack) -> None:
    context, page = login(browser, stack, "alice")
    state = page.locator(f"tr[data-endpoint-id='{stack.endpoint_id}'] td.state")
    expect(state).to_have_text("online")
    page.evaluate("window.notReloaded = true")
    stack.endpoint.kill()
    killed = time.monotonic()
    expect(state).to_have_text("offline", timeout=2000)
    print(f"offline shown {time.monotonic() - killed:.2f} s after kill -9")
    page.wait_for_timeout(1500)  # a live endpoint's late heartbeat would be back by now
    expect(state).to_have_text("offline", timeout=1)
    assert page.evaluate("window.notReloaded") is True  # htmx refreshed the rows in place
    context.close()
    assert stack.attempted == []
