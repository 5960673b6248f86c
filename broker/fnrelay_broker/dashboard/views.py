"""The dashboard's routes under /dashboard: server-rendered pages and the htmx fragments
they refresh themselves with.

Every read goes through the API's own read paths (registry, task_list, tasks) with the
session's user, so the tenant boundary is the API's: another user's id is 404 here as there.
Only the admin view reads every tenant, and only for operators.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations.
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

import jinja2
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from fnrelay_broker import registry, task_list, tasks
from fnrelay_broker.auth import CurrentUser
from fnrelay_broker.dashboard import charts, queries
from fnrelay_broker.dashboard.present import FILTERS, timeline
from fnrelay_broker.dashboard.session import COOKIE, LIFETIME, Sessions, load_key
from fnrelay_broker.errors import ApiError

HERE = Path(__file__).parent
PREFIX = "/dashboard"
#: Scripts and styles from the broker only: the page works offline and no CDN is trusted.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY", "Cache-Control": "no-store",
    # not no-referrer: under it a browser sends "Origin: null" with the pages' own forms
    "Referrer-Policy": "same-origin",
}
#: The time filter's choices: hours back (None: any time).
SINCE_HOURS = {"1h": 1.0, "6h": 6.0, "24h": 24.0, "7d": 168.0}
#: The chart: this many hours back, in this many buckets.
CHART_HOURS, CHART_BUCKETS = 6.0, 36


class PageError(Exception):
    """A page that cannot be shown: rendered as an HTML error page with its status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class LoginNeeded(Exception):
    """No valid session: pages go to the login form, htmx fragments answer 401."""


@contextmanager
def api_errors() -> Iterator[None]:
    """The read paths' ApiError (404 for others' ids) as a PageError of the same status."""
    try:
        yield
    except ApiError as e:
        raise PageError(e.http_status, e.message) from e


async def form_fields(request: Request) -> dict[str, str]:
    """A url-encoded form's fields (first value each): no multipart parser needed. A
    dependency, so that the routes themselves run in the thread pool, off the event loop.

    403 for a form another site's page posted (its Origin names another host): the session
    cookie is SameSite=Strict, but a cross-site login would still set one, logging the
    victim's browser in as the attacker."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise PageError(403, "a form from another site: use the dashboard's own pages")
    fields = parse_qs((await request.body()).decode(errors="replace"))
    return {k: v[0] for k, v in fields.items()}


#: A POST route's form fields.
Form = Annotated[dict[str, str], Depends(form_fields)]


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(FILTERS)
    return env


def install(app: FastAPI, broker: Any) -> None:
    """Add the dashboard to the broker's app."""
    db, settings = broker.db, broker.settings
    sessions = Sessions(db, load_key(db))
    env = _env()
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="static")

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        cookie = request.cookies.get(COOKIE)
        user = ctx.pop("user", None)
        page = env.get_template(name).render(
            prefix=PREFIX, user=user, operator=bool(user and settings.is_operator(
                user.username)), csrf=sessions.csrf(cookie) if cookie and user else "", **ctx)
        return HTMLResponse(page, status_code=status, headers=HEADERS)

    def session_user(request: Request) -> CurrentUser:
        user = sessions.user(request.cookies.get(COOKIE))
        if user is None:
            raise LoginNeeded()
        return user

    def check_csrf(request: Request, fields: dict[str, str]) -> None:
        """403 unless a state-changing form carries this session's CSRF token."""
        if not sessions.csrf_ok(request.cookies.get(COOKIE), fields.get("csrf")):
            raise PageError(403, "the form's CSRF token is missing or wrong: reload the page")

    @app.exception_handler(LoginNeeded)
    async def _login(request: Request, _exc: LoginNeeded) -> Response:
        if request.headers.get("HX-Request"):
            return Response("session expired: log in again", status_code=401, headers=HEADERS)
        return RedirectResponse(f"{PREFIX}/login", status_code=303, headers=HEADERS)

    @app.exception_handler(PageError)
    def _error(request: Request, exc: PageError) -> HTMLResponse:  # sync: reads the database
        user = sessions.user(request.cookies.get(COOKIE))
        return render(request, "error.html", exc.status, user=user, message=exc.message)

    @app.get(PREFIX, include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/endpoints", status_code=303)

    @app.get(f"{PREFIX}/login", include_in_schema=False)
    def login_page(request: Request) -> HTMLResponse:
        return render(request, "login.html", message="")

    @app.post(f"{PREFIX}/login", include_in_schema=False)
    def login(request: Request, fields: Form) -> Response:
        made = sessions.login(fields.get("token", "").strip())
        if made is None:
            return render(request, "login.html", 401,
                          message="that is not a live user token (endpoint tokens cannot "
                                  "log in)")
        cookie, _user = made
        answer = RedirectResponse(f"{PREFIX}/endpoints", status_code=303, headers=HEADERS)
        answer.set_cookie(COOKIE, cookie, max_age=int(LIFETIME), path=PREFIX, httponly=True,
                          samesite="strict", secure=request.url.scheme == "https")
        return answer

    @app.post(f"{PREFIX}/logout", include_in_schema=False)
    def logout(request: Request, fields: Form) -> Response:
        check_csrf(request, fields)
        sessions.logout(request.cookies.get(COOKIE))
        answer = RedirectResponse(f"{PREFIX}/login", status_code=303, headers=HEADERS)
        answer.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict",
                             secure=request.url.scheme == "https")
        return answer

    # --- endpoints ------------------------------------------------------------------------
    def endpoint_list(user: CurrentUser) -> list[dict[str, Any]]:
        """The user's endpoints, each with the seconds left until the broker counts it
        offline if no heartbeat comes (the page's script counts them down)."""
        eps = registry.list_endpoints(db, user, settings.offline_after)
        now = time.time()
        for ep in eps:
            ep["offline_in"] = settings.offline_after - (now - (ep["last_heartbeat"] or now))
        return eps

    @app.get(f"{PREFIX}/endpoints", include_in_schema=False)
    def endpoints_page(request: Request) -> HTMLResponse:
        user = session_user(request)
        return render(request, "endpoints.html", user=user, endpoints=endpoint_list(user))

    @app.get(f"{PREFIX}/endpoints/rows", include_in_schema=False)
    def endpoint_rows(request: Request) -> HTMLResponse:
        user = session_user(request)
        return render(request, "_endpoint_rows.html", user=user, endpoints=endpoint_list(user))

    @app.get(f"{PREFIX}/endpoints/{{endpoint_id}}", include_in_schema=False)
    def endpoint_page(request: Request, endpoint_id: str) -> HTMLResponse:
        user = session_user(request)
        with api_errors():
            ep = registry.get_endpoint(db, user, endpoint_id, settings.offline_after)
        recent = task_list.list_tasks(db, user, task_list.TaskFilter(
            endpoint_id=endpoint_id, limit=20))["tasks"]
        return render(request, "endpoint.html", user=user, ep=ep, tasks=recent)

    # --- task groups and tasks -------------------------------------------------------------
    @app.get(f"{PREFIX}/groups", include_in_schema=False)
    def groups_page(request: Request) -> HTMLResponse:
        user = session_user(request)
        return render(request, "groups.html", user=user, groups=queries.task_groups(db, user))

    def task_filter(args: dict[str, str]) -> task_list.TaskFilter:
        hours = SINCE_HOURS.get(args["since"])
        return task_list.TaskFilter(
            states=[args["status"]] if args["status"] else None,
            endpoint_id=args["endpoint_id"] or None, function_id=args["function_id"] or None,
            since=time.time() - hours * 3600 if hours else None, after=args["after"] or None,
            limit=50)

    def task_rows(user: CurrentUser, args: dict[str, str]) -> dict[str, Any]:
        """The listed tasks: a group's (from its record) or the filtered page."""
        if args["task_group_id"]:
            with api_errors():
                ids = registry.get_task_group(db, user, args["task_group_id"])["task_ids"]
            found = tasks.task_records(db, user, ids[-200:])
            rows = [found[i] for i in reversed(ids[-200:]) if i in found]
            return {"tasks": rows, "next": None}
        with api_errors():
            return task_list.list_tasks(db, user, task_filter(args))

    def list_args(status: str = "", endpoint_id: str = "", function_id: str = "",
                  task_group_id: str = "", since: str = "", after: str = "") -> dict[str, str]:
        """The task list's filters, from the query string (a dependency of both views)."""
        return {"status": status, "endpoint_id": endpoint_id, "function_id": function_id,
                "task_group_id": task_group_id, "since": since, "after": after}

    ListArgs = Annotated[dict[str, str], Depends(list_args)]

    @app.get(f"{PREFIX}/tasks", include_in_schema=False)
    def tasks_page(request: Request, args: ListArgs) -> HTMLResponse:
        user = session_user(request)
        return render(request, "tasks.html", user=user, args=args, page=task_rows(user, args),
                      states=task_list.STATES, since_choices=list(SINCE_HOURS),
                      query=request.url.query)

    @app.get(f"{PREFIX}/tasks/rows", include_in_schema=False)
    def tasks_rows(request: Request, args: ListArgs) -> HTMLResponse:
        user = session_user(request)
        return render(request, "_task_rows.html", user=user, page=task_rows(user, args))

    def task_context(user: CurrentUser, task_id: str) -> dict[str, Any]:
        with api_errors():
            rec = tasks.task_record(db, user, task_id)
        end = time.time() if rec["pending"] else None
        return {"task": rec, "steps": timeline(rec["history"], end)}

    @app.get(f"{PREFIX}/tasks/{{task_id}}", include_in_schema=False)
    def task_page(request: Request, task_id: str) -> HTMLResponse:
        user = session_user(request)
        return render(request, "task.html", user=user, **task_context(user, task_id))

    @app.get(f"{PREFIX}/tasks/{{task_id}}/live", include_in_schema=False)
    def task_live(request: Request, task_id: str) -> HTMLResponse:
        user = session_user(request)
        return render(request, "_task_live.html", user=user, **task_context(user, task_id))

    @app.post(f"{PREFIX}/tasks/{{task_id}}/cancel", include_in_schema=False)
    def cancel(request: Request, task_id: str, fields: Form) -> Response:
        user = session_user(request)
        check_csrf(request, fields)
        with api_errors():
            tasks.cancel(db, user, task_id)
        broker.publisher.wake()
        return RedirectResponse(f"{PREFIX}/tasks/{quote(task_id, safe='')}", status_code=303,
                                headers=HEADERS)

    # --- chart and admin ---------------------------------------------------------------------
    @app.get(f"{PREFIX}/charts", include_in_schema=False)
    def charts_page(request: Request,
                    hours: float = Query(CHART_HOURS, gt=0, le=168)) -> HTMLResponse:
        user = session_user(request)
        end = time.time()
        b = charts.bucket(queries.finished(db, user, end - hours * 3600), end - hours * 3600,
                          end, CHART_BUCKETS)
        per_minute = [c * 60 / b.size for c in b.counts]
        return render(request, "charts.html", user=user, hours=hours, total=sum(b.counts),
                      throughput=charts.svg("finished tasks per minute", list(per_minute),
                                            "/min", hours),
                      latency=charts.svg("mean latency, submit to result", b.latency, "s",
                                         hours))

    @app.get(f"{PREFIX}/admin", include_in_schema=False)
    def admin_page(request: Request) -> HTMLResponse:
        user = session_user(request)
        if not settings.is_operator(user.username):
            raise PageError(403, "the admin view is for the broker's operators only")
        return render(request, "admin.html", user=user,
                      tenants=queries.overview(db, settings.offline_after))
