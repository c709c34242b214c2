"""The console's routes (SPEC section 10), a Klein application the site serves under ``/console/``.

Pages: ``/console/`` (every topic), ``/console/topics/<topic>``,
``/console/topics/<topic>/numbers/<number>`` (a conversation as a thread) and
``/console/phone?topic=T&number=N``. Their JSON is under ``/console/api/``. Actions
(Re-queue, Discard, the phone's Send) are POSTs with the anti-forgery token. Every route
checks :class:`~pyrowire.console.access.Access` first.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pyrowire.console import pages
from pyrowire.console.access import TOKEN_HEADER, Access, Refused, check_token, token
from pyrowire.console.data import ConsoleData
from pyrowire.console.phone import Phone
from pyrowire.errors import RedisReplyError, RedisUnavailable
from pyrowire.settings import Topic
from pyrowire.store import Store

PARTIAL = b"x-console-partial"
ASSETS = {"console.js": b"text/javascript; charset=utf-8", "console.css": b"text/css; charset=utf-8"}
MAX_TEXT = 1600

Handler = Callable[..., Awaitable[Any]]


def _api(f: Handler) -> Handler:
    """A JSON route: access checked, errors answered as ``{"error": sentence}`` with their status."""

    @functools.wraps(f)
    async def route(self: Console, request: Any, *args: Any, **kwargs: Any) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        try:
            self.access.check(request)
            answer = await f(self, request, *args, **kwargs)
        except Refused as refused:
            request.setResponseCode(refused.status)
            return json.dumps({"error": refused.sentence}).encode()
        except (RedisUnavailable, RedisReplyError) as error:
            return self._unavailable(request, error, lambda sentence: json.dumps({"error": sentence}).encode())
        return json.dumps(answer).encode()

    return route


def _page(f: Handler) -> Handler:
    """An HTML route: access checked, errors answered as a small page with their status."""

    @functools.wraps(f)
    async def route(self: Console, request: Any, *args: Any, **kwargs: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Frame-Options", b"DENY")
        request.setHeader(b"Content-Security-Policy",
                          b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                          b"frame-ancestors 'none'; form-action 'self'")
        try:
            self.access.check(request)
            body: bytes = await f(self, request, *args, **kwargs)
        except Refused as refused:
            request.setResponseCode(refused.status)
            return pages.error_page(refused.status, refused.sentence)
        except (RedisUnavailable, RedisReplyError) as error:
            return self._unavailable(request, error, lambda sentence: pages.error_page(503, sentence))
        return body

    return route


def _form(request: Any, name: str) -> str:
    """A field of a POSTed form. The site leaves form bodies unparsed (the webhook parses its own), so
    the console reads the body itself."""
    request.content.seek(0)
    fields = parse_qs(request.content.read(64 * 1024).decode("utf-8", "replace"))
    values = fields.get(name)
    return values[0] if values else _arg(request, name)


def _arg(request: Any, name: str) -> str:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else ""


class Console:
    """The console of one application's topics, on its store."""

    router = Klein()
    log = Logger()

    def __init__(self, store: Store, topics: Mapping[str, Topic], clock: IReactorTime, access: Access,
                 phone: Phone) -> None:
        self.topics = topics
        self.access = access
        self.data = ConsoleData(store, topics, clock)
        self.store = store
        self.phone = phone

    def resource(self) -> Any:
        return self.router.resource()

    def _topic(self, name: str) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            raise Refused(404, f"There is no topic called {name!r}.")
        return topic

    def _unavailable(self, request: Any, error: Exception, render: Callable[[str], bytes]) -> bytes:
        self.log.warn("console: Redis did not answer: {error}", error=str(error))
        request.setResponseCode(503)
        return render("Redis is not answering right now; the console shows nothing until it does.")

    @staticmethod
    def _partial(request: Any) -> bool:
        return request.getHeader(PARTIAL) is not None

    # --- pages ---------------------------------------------------------------------------

    @router.route("/", methods=["GET"])
    @_page
    async def overview_page(self, request: Any) -> bytes:
        live = pages.overview(await self.data.overview())
        if self._partial(request):
            return live.encode()
        return pages.layout("Topics", live, token(request), "/console/")

    @router.route("/topics/<string:name>", methods=["GET"])
    @_page
    async def topic_page(self, request: Any, name: str) -> bytes:
        self._topic(name)
        csrf = token(request)
        live = pages.topic_live(name, await self.data.topic(name), csrf)
        if self._partial(request):
            return live.encode()
        phone = pages.e(pages.phone_url(name, ""))
        return pages.layout(name, live, csrf, pages.topic_url(name),
                            before=f'<p><a href="/console/">Topics</a> · <a href="{phone}">Text this topic</a></p>')

    @router.route("/topics/<string:name>/numbers/<string:number>", methods=["GET"])
    @_page
    async def conversation_page(self, request: Any, name: str, number: str) -> bytes:
        self._topic(name)
        live = pages.conversation_live(await self.data.conversation(name, number))
        if self._partial(request):
            return live.encode()
        links = (f'<p><a href="{pages.e(pages.topic_url(name))}">{pages.e(name)}</a> · '
                 f'<a href="{pages.e(pages.phone_url(name, number))}">Text as this number</a></p>')
        return pages.layout(f"{number} in {name}", live, token(request), pages.number_url(name, number), before=links)

    @router.route("/phone", methods=["GET"])
    @_page
    async def phone_page(self, request: Any) -> bytes:
        names = sorted(self.topics)
        topic = _arg(request, "topic") or (names[0] if names else "")
        if topic:
            self._topic(topic)
        number = _arg(request, "number")
        if number.startswith(" ") and number.strip().isdigit():
            number = "+" + number.strip()  # ?number=+1555… typed as is: the form encoding made the + a space
        number = number.strip() or "+15551234567"
        return pages.layout("Phone", "", token(request), before=pages.phone_form(names, topic, number))

    @router.route("/topics/<string:name>/dead/<string:sid>/<string:action>", methods=["POST"])
    @_page
    async def dead_action(self, request: Any, name: str, sid: str, action: str) -> bytes:
        check_token(request, _form(request, "token"))
        await self._act(name, sid, action)
        request.setResponseCode(303)
        request.setHeader(b"Location", pages.topic_url(name).encode())
        return b""

    @router.route("/assets/<string:name>", methods=["GET"])
    def asset(self, request: Any, name: str) -> bytes:
        content_type = ASSETS.get(name)
        try:
            self.access.check(request)
            if content_type is None:
                raise Refused(404, "There is no such file.")
        except Refused as refused:
            request.setResponseCode(refused.status)
            return b""
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"no-cache")
        return resources.files("pyrowire.console").joinpath("assets", name).read_bytes()

    # --- the JSON API --------------------------------------------------------------------

    @router.route("/api/overview", methods=["GET"])
    @_api
    async def overview_api(self, request: Any) -> Any:
        return await self.data.overview()

    @router.route("/api/topics/<string:name>", methods=["GET"])
    @_api
    async def topic_api(self, request: Any, name: str) -> Any:
        self._topic(name)
        return await self.data.topic(name)

    @router.route("/api/topics/<string:name>/numbers/<string:number>", methods=["GET"])
    @_api
    async def conversation_api(self, request: Any, name: str, number: str) -> Any:
        self._topic(name)
        return await self.data.conversation(name, number)

    @router.route("/api/topics/<string:name>/dead/<string:sid>/<string:action>", methods=["POST"])
    @_api
    async def dead_action_api(self, request: Any, name: str, sid: str, action: str) -> Any:
        check_token(request, request.getHeader(TOKEN_HEADER))
        return {"done": await self._act(name, sid, action)}

    @router.route("/api/phone", methods=["POST"])
    @_api
    async def phone_api(self, request: Any) -> Any:
        check_token(request, request.getHeader(TOKEN_HEADER))
        try:
            sent = json.loads(request.content.read(64 * 1024) or b"{}")
        except ValueError:
            raise Refused(400, "The body is not JSON.") from None
        if not isinstance(sent, dict):
            raise Refused(400, "The body is not a JSON object.")
        topic = self._topic(str(sent.get("topic") or ""))
        number, body = sent.get("number"), sent.get("body")
        if not isinstance(number, str) or not number.strip():
            raise Refused(400, "Say which number the text comes from (number).")
        if not isinstance(body, str) or len(body) > MAX_TEXT:
            raise Refused(400, f"The text (body) must be a string of at most {MAX_TEXT} characters.")
        return await self.phone.text(request, topic, number.strip(), body)

    @router.route("/api/replies", methods=["GET"])
    @_api
    async def replies_api(self, request: Any) -> Any:
        name, sid = _arg(request, "topic"), _arg(request, "sid")
        self._topic(name)
        if not sid:
            raise Refused(400, "Say which inbound message (sid).")
        found = await self.store.replies(name, sid)
        return {"handled": found.handled, "replies": found.replies, "refused": found.refused, "error": found.error}

    async def _act(self, name: str, sid: str, action: str) -> bool:
        topic = self._topic(name)
        if action not in ("requeue", "discard"):
            raise Refused(404, "There is no such action.")
        payload = await self.data.find_dead(name, sid)
        if payload is None:
            raise Refused(404, f"There is no dead letter {sid!r} in {name!r} (any more).")
        if action == "requeue":
            done = await self.store.requeue_letter(name, payload, topic.ordered)
        else:
            done = await self.store.discard_letter(name, payload)
        self.log.info("console: {action} dead letter {sid} of {topic}", action=action, sid=sid, topic=name,
                      outcome=action)
        return done
