"""The dashboard's routes: each reads or acts through the admin API (:mod:`kanthorq.admin`)
and renders a template. No SQL here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from kanthorq.admin import Admin, Changed
from kanthorq.admin.views import ConsumerOverview
from kanthorq.commands import formatting
from kanthorq.commands.show import STATES, subjects_text
from kanthorq.commands.task_view import attempts_text, next_run
from kanthorq.dashboard import present
from kanthorq.dashboard.guard import COOKIE, Guard
from kanthorq.errors import (
    ConfigError,
    InvalidName,
    InvalidSubject,
    UnknownConsumer,
    UnknownStream,
)
from kanthorq.tokens import Token, Tokens

HERE = Path(__file__).parent
Endpoint = Callable[[Request], Awaitable[Response]]
# a page's own mistakes (400) and what it names that does not exist (404)
BAD_REQUEST = (ConfigError, InvalidName, InvalidSubject)
NOT_FOUND = (UnknownConsumer, UnknownStream)
SECURITY_HEADERS = {
    # no inline script or style: htmx and the stylesheet are files of the package
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class HasAdmin(Protocol):
    """An open :class:`kanthorq.App`, or anything else with an ``admin``."""

    @property
    def admin(self) -> Admin: ...


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped, whatever the template's name
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        count=formatting.count,
        duration=formatting.duration,
        timestamp=formatting.timestamp,
        moment=formatting.moment,
        relative=formatting.relative,
        one_line=formatting.one_line,
        json_text=present.json_text,
    )
    env.globals.update(
        attempts_text=attempts_text,
        next_run=next_run,
        subjects=subjects_text,
        urlencode=urlencode,
        STATES_SHOWN=STATES,
        PAGE_SIZE=present.PAGE_SIZE,
        LIST_TIMEOUT=present.LIST_TIMEOUT,
        OPERATIONS=present.OPERATIONS,
    )
    return env


class Dashboard:
    """The pages and actions, on ``source``'s admin, guarded by ``guard``."""

    def __init__(self, source: HasAdmin | Admin, guard: Guard, refresh: float) -> None:
        self._source = source
        self.guard = guard
        self.refresh = refresh
        self.templates = Jinja2Templates(env=_environment())

    @property
    def admin(self) -> Admin:
        return self._source if isinstance(self._source, Admin) else self._source.admin

    # ---- access -------------------------------------------------------------------------

    def _token(self, request: Request) -> Token | None:
        return self.guard.token(request.headers.get("authorization"), request.cookies.get(COOKIE))

    def reader(self, endpoint: Endpoint) -> Endpoint:
        """A page: open without tokens, else for a token with the read scope."""

        async def guarded(request: Request) -> Response:
            if not self.guard.read_only:
                token = self._token(request)
                if token is None or not token.allows("read"):
                    if request.method == "GET" and "hx-request" not in request.headers:
                        target = request.url.path + (
                            f"?{request.url.query}" * bool(request.url.query)
                        )
                        login = str(request.url_for("login")) + "?" + urlencode({"next": target})
                        return RedirectResponse(login, status_code=303)
                    return self._refusal(request, 401, "sign in with the dashboard's token")
            return await endpoint(request)

        return guarded

    def actor(self, endpoint: Callable[[Request, FormData], Awaitable[Response]]) -> Endpoint:
        """An action: a POST with a token that has the admin scope, and its CSRF token."""

        async def guarded(request: Request) -> Response:
            if self.guard.read_only:
                return self._refusal(
                    request,
                    403,
                    "the dashboard is read-only: start it with a token (--token or "
                    "KANTHORQ_DASHBOARD_TOKEN) to change anything",
                )
            token = self._token(request)
            if token is None:
                return self._refusal(request, 401, "this needs the dashboard's token")
            if not token.allows("admin"):
                return self._refusal(
                    request,
                    403,
                    f"the token {token.name!r} lacks the admin scope that actions need",
                )
            form = await request.form()
            csrf = form.get("csrf")
            if not self.guard.csrf_matches(token, csrf if isinstance(csrf, str) else None):
                return self._refusal(request, 403, "the form's CSRF token is missing or wrong")
            return await endpoint(request, form)

        return guarded

    def _refusal(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "error.html", {"message": message}, status=status)

    def render(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        token = None if self.guard.read_only else self._token(request)
        base = {
            "read_only": self.guard.read_only,
            "signed_in": token is not None,
            "can_act": token is not None and token.allows("admin"),
            "csrf": "" if token is None else self.guard.csrf(token),
            "refresh": self.refresh,
        }
        response = self.templates.TemplateResponse(
            request, name, base | context, status_code=status
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    # ---- signing in ----------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.render(
            request, "login.html", {"next": _local(request.query_params.get("next"))}
        )

    async def login(self, request: Request) -> Response:
        form = await request.form()
        secret = form.get("token")
        target = _local(form.get("next"))
        token = self.guard.tokens.match(secret if isinstance(secret, str) else None)
        if token is None:
            context = {"next": target, "failed": True}
            return self.render(request, "login.html", context, status=401)
        root = request.scope.get("root_path", "")
        response = RedirectResponse(target or str(request.url_for("overview")), status_code=303)
        response.set_cookie(
            COOKIE,
            self.guard.session(token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=(root or "") + "/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(str(request.url_for("login")), status_code=303)
        response.delete_cookie(COOKIE, path=request.scope.get("root_path", "") + "/")
        return response

    # ---- pages ---------------------------------------------------------------------------

    async def _overview(self) -> dict[str, Any]:
        admin = self.admin
        overview = await admin.show()
        rates = {
            s.name: await admin.stream_rate(s.name) for s in overview.streams if s.note is None
        }
        activity = {
            c.name: await admin.activity(c.name) for c in overview.consumers if c.note is None
        }
        return {"overview": overview, "rates": rates, "activity": activity}

    async def overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", await self._overview())

    async def overview_fragment(self, request: Request) -> Response:
        return self.render(request, "_overview.html", await self._overview())

    async def stream(self, request: Request) -> Response:
        name = request.path_params["name"]
        overview = await self.admin.show(name)
        rate = None if overview.streams[0].note else await self.admin.stream_rate(name)
        context = {"overview": overview, "stream": overview.streams[0], "rate": rate}
        return self.render(request, "stream.html", context)

    async def _consumer(self, name: str) -> tuple[ConsumerOverview, int]:
        """The consumer as ``show`` sees it, and the database's time then (ms)."""
        info = await self.admin.consumer(name)
        overview = await self.admin.show(info.stream_name)
        for consumer in overview.consumers:
            if consumer.name == name:
                return consumer, overview.now
        raise UnknownConsumer(f"no consumer named {name!r}")

    async def consumer(self, request: Request) -> Response:
        name = request.path_params["name"]
        params = request.query_params
        chosen = present.listing(
            params.getlist("state"),
            params.get("subject"),
            params.get("age"),
            params.get("order"),
            params.get("after"),
        )
        consumer, now = await self._consumer(name)
        slow = False
        try:
            tasks = await self.admin.list_tasks(
                name,
                chosen.filter,
                limit=present.PAGE_SIZE + 1,
                order=chosen.order,
                after=chosen.after or present.start_of(chosen, now),
                timeout=present.LIST_TIMEOUT,
            )
        except TimeoutError:
            tasks, slow = [], True
        more = len(tasks) > present.PAGE_SIZE
        tasks = tasks[: present.PAGE_SIZE]
        matched, estimated = None, False
        if chosen.only_states and consumer.tasks:
            names = chosen.states or tuple(consumer.tasks)
            matched = sum(consumer.tasks.get(s, 0) for s in names)
            estimated = any(f"tasks.{s}" in consumer.estimated for s in names)
        activity = await self.admin.activity(name) if consumer.note is None else None
        context = {
            "consumer": consumer,
            "listing": chosen,
            "tasks": tasks,
            "more": more,
            "slow": slow,
            "matched": matched,
            "matched_estimated": estimated,
            "chart": None if activity is None else present.chart(activity),
            "now": now,
        }
        return self.render(request, "consumer.html", context)

    async def chart_fragment(self, request: Request) -> Response:
        activity = await self.admin.activity(request.path_params["name"])
        context = {"chart": present.chart(activity), "name": activity.consumer}
        return self.render(request, "_chart.html", context)

    async def task(self, request: Request) -> Response:
        name, event_id = request.path_params["name"], request.path_params["event_id"]
        consumer, now = await self._consumer(name)
        task = await self.admin.get_task(name, event_id)
        if task is None:
            raise HTTPException(404, f"consumer {name!r} has no task for event {event_id!r}")
        context = {
            "consumer": consumer,
            "task": task,
            "errors": present.errors(task),
            "body": present.body(task),
            "now": now,
        }
        return self.render(request, "task.html", context)

    async def schedules(self, request: Request) -> Response:
        overview = await self.admin.show()
        return self.render(request, "schedules.html", {"overview": overview})

    # ---- actions ------------------------------------------------------------------------

    async def task_action(self, request: Request, form: FormData) -> Response:
        name = request.path_params["name"]
        op = _field(form, "op")
        if op not in present.OPERATIONS:
            raise ConfigError(f"unknown operation {op!r}")
        chosen = present.listing(
            _fields(form, "state"), _field(form, "subject"), _field(form, "age"), None, None
        )
        run = {
            "cancel": self.admin.cancel,
            "resume": self.admin.resume,
            "retry": self.admin.retry_now,
            "rerun": self.admin.rerun,
        }[op]
        target = _field(form, "target")
        ids = _fields(form, "event_id")
        if target == "selected":
            if not ids:
                raise ConfigError("no task selected: tick the tasks to change first")
            changed = await run(name, ids)
            what = f"{len(ids):,} selected task" + ("s" * (len(ids) != 1))
        elif target == "filter":
            changed = await run(name, filter=chosen.filter)
            what = "every task the filter selects" if chosen.filtered else "every task"
        else:
            raise ConfigError("say which tasks: the selected ones, or those the filter selects")
        back = str(request.url_for("consumer", name=name))
        if _field(form, "from") == "task" and len(ids) == 1:
            back = str(request.url_for("task", name=name, event_id=ids[0]))
        elif chosen.query():
            back += "?" + urlencode(chosen.query())
        return self._result(request, f"{op} on {what} of {name}", changed, back)

    async def replay(self, request: Request, form: FormData) -> Response:
        name = request.path_params["name"]
        when = present.since(_field(form, "since"))
        changed = await self.admin.replay(name, since=when)
        back = str(request.url_for("consumer", name=name))
        return self._result(request, f"replay {name} from {_field(form, 'since')}", changed, back)

    async def drop_consumer(self, request: Request, form: FormData) -> Response:
        name = request.path_params["name"]
        if _field(form, "confirm") != name:
            raise ConfigError(f"type the consumer's name, {name}, to drop it")
        changed = await self.admin.drop_consumer(name, confirm=True)
        return self._result(
            request, f"drop consumer {name}", changed, str(request.url_for("overview"))
        )

    async def drop_stream(self, request: Request, form: FormData) -> Response:
        name = request.path_params["name"]
        if _field(form, "confirm") != name:
            raise ConfigError(f"type the stream's name, {name}, to drop it")
        changed = await self.admin.drop_stream(name, confirm=True)
        return self._result(
            request, f"drop stream {name}", changed, str(request.url_for("overview"))
        )

    def _result(self, request: Request, title: str, changed: Changed, back: str) -> Response:
        context = {"title": title, "changed": changed, "back": back}
        return self.render(request, "result.html", context)

    # ---- errors --------------------------------------------------------------------------

    async def bad_request(self, request: Request, exc: Exception) -> Response:
        return self._refusal(request, 400, str(exc))

    async def not_found(self, request: Request, exc: Exception) -> Response:
        detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return self._refusal(request, status, str(detail))

    def routes(self) -> list[BaseRoute]:
        read, act = self.reader, self.actor
        return [
            Route("/", read(self.overview), name="overview"),
            Route("/fragments/overview", read(self.overview_fragment), name="overview_fragment"),
            Route("/schedules", read(self.schedules), name="schedules"),
            Route("/streams/{name}", read(self.stream), name="stream"),
            Route(
                "/streams/{name}/drop", act(self.drop_stream), methods=["POST"], name="drop_stream"
            ),
            Route("/consumers/{name}", read(self.consumer), name="consumer"),
            Route("/fragments/chart/{name}", read(self.chart_fragment), name="chart_fragment"),
            Route("/consumers/{name}/tasks/{event_id}", read(self.task), name="task"),
            Route(
                "/consumers/{name}/tasks",
                act(self.task_action),
                methods=["POST"],
                name="task_action",
            ),
            Route("/consumers/{name}/replay", act(self.replay), methods=["POST"], name="replay"),
            Route(
                "/consumers/{name}/drop",
                act(self.drop_consumer),
                methods=["POST"],
                name="drop_consumer",
            ),
            Route("/login", self.login_form, name="login"),
            Route("/login", self.login, methods=["POST"], name="login_post"),
            Route("/logout", self.logout, methods=["POST"], name="logout"),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _fields(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str) and v]


def _local(target: object) -> str:
    """A path on this site to go to after signing in; anything else is dropped."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        return ""
    return "" if "\\" in target else target


def app(
    source: HasAdmin | Admin,
    *,
    token: str | None = None,
    tokens: Tokens | None = None,
    refresh: float = 3.0,
) -> Starlette:
    """The dashboard, an ASGI app on ``source``: an open :class:`kanthorq.App` (its admin is
    read at each request, so it may open after this is built) or an :class:`Admin`.

    ``token`` (or ``tokens``, several with scopes: :mod:`kanthorq.tokens`) is needed to see
    it and to act: without one it is read-only. Mount it under a prefix in your own app:
    ``Mount("/kanthorq", app=kanthorq.dashboard.app(kq_app, token=...))``.
    """
    if token is not None and tokens is not None:
        raise ConfigError("give token= or tokens=, not both")
    if (
        isinstance(refresh, bool)
        or not isinstance(refresh, int | float)
        or not 0.5 <= refresh <= 3600
    ):
        raise ConfigError(f"refresh must be a number of seconds from 0.5 to 3600, got {refresh!r}")
    guard = Guard(tokens if tokens is not None else Tokens.of(token))
    dashboard = Dashboard(source, guard, float(refresh))
    handlers: dict[Any, Any] = {HTTPException: dashboard.not_found}
    handlers |= {kind: dashboard.bad_request for kind in BAD_REQUEST}
    handlers |= {kind: dashboard.not_found for kind in NOT_FOUND}
    return Starlette(routes=dashboard.routes(), exception_handlers=handlers)
