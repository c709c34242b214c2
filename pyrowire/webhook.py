"""The Twilio webhook: ``GET``/``POST /queue/<topic>`` answered with TwiML at once.

Order of checks: topic (404), size (413), signature (403), required fields
(400), validators (TwiML with the validator's message), then one Redis round
trip that de-duplicates the MessageSid and queues the message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pyrowire import envelope, signature, twiml
from pyrowire.errors import BadRequest, RedisUnavailable
from pyrowire.keys import ACCEPTED, INVALID
from pyrowire.message import parse_message
from pyrowire.metrics import Metrics
from pyrowire.settings import Topic
from pyrowire.validators import first_failure

if TYPE_CHECKING:
    from pyrowire.app import App
    from pyrowire.store import Store

MAX_BODY = 64 * 1024
_REFUSED = {400: "bad_request", 403: "forbidden", 413: "too_large"}


def _decode(pairs: Mapping[bytes, Sequence[bytes]]) -> dict[str, list[str]]:
    try:
        return {k.decode("utf-8"): [v.decode("utf-8") for v in vs] for k, vs in pairs.items()}
    except UnicodeDecodeError:
        raise BadRequest(400, "The request's parameters are not valid UTF-8.") from None


def _parse(query: bytes, strict: bool = False) -> dict[str, list[str]]:
    try:
        parsed = parse_qs(query.decode("utf-8"), keep_blank_values=True, strict_parsing=strict, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "The request's parameters are not a valid UTF-8 form.") from None
    return parsed


class QueueResource(Resource):
    """The webhook route as a twisted.web leaf: ``postpath`` is ``[topic]``."""

    isLeaf = True

    def __init__(self, webhook: Webhook) -> None:
        super().__init__()
        self.webhook = webhook

    def render(self, request: Any) -> Any:
        postpath = request.postpath
        if len(postpath) != 1 or not postpath[0]:
            return Webhook._plain(request, 404, "There is no such page.")
        try:
            topic = postpath[0].decode("utf-8")
        except UnicodeDecodeError:
            return Webhook._plain(request, 404, "There is no such topic.")
        d = Deferred.fromCoroutine(self.webhook.queue(request, topic))
        d.addCallbacks(self._write, self._failed, callbackArgs=(request,), errbackArgs=(request,))
        return NOT_DONE_YET

    @staticmethod
    def _write(body: bytes, request: Any) -> None:
        if not request._disconnected:
            request.write(body)
            request.finish()

    def _failed(self, failure: Any, request: Any) -> None:
        self.webhook.log.failure("webhook failed", failure)
        if not request._disconnected:
            request.setResponseCode(500)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.write(b"Internal error.\n")
            request.finish()


class Webhook:
    """The webhook and operational endpoints of one App, as a Klein application."""

    router = Klein()
    log = Logger()

    def __init__(self, app: App, store: Store, clock: IReactorTime, public_url: str | None = None,
                 metrics: Metrics | None = None, serve_webhook: bool = True) -> None:
        self.app = app
        self.store = store
        self.clock = clock
        self.public_url = public_url
        self.metrics = metrics if metrics is not None else Metrics(app.settings.topics)
        self.serve_webhook = serve_webhook
        self._redis_down = False

    def resource(self) -> Any:
        return self.router.resource()

    def queue_resource(self) -> QueueResource:
        """``/queue/<topic>`` as a plain leaf resource: the same handling without the router's cost."""
        return QueueResource(self)

    # --- the webhook -------------------------------------------------------

    @router.route("/queue/<string:topic>", methods=["GET", "POST"])
    async def queue(self, request: IRequest, topic: str) -> bytes:
        if request.method not in (b"GET", b"POST"):  # werkzeug adds HEAD to every GET route
            request.setHeader(b"Allow", b"GET, POST")
            return self._plain(request, 405, "Only GET and POST are allowed here.")
        conf = self.app.settings.topics.get(topic) if self.serve_webhook else None
        if conf is None:
            self.metrics.webhook("", "unknown_topic")
            return self._plain(request, 404, f"There is no topic called {topic!r}.")
        try:
            params = self._params(request)
            if conf.validate_signature:
                self._check_signature(request, conf, params)
            message = parse_message(topic, params)
        except BadRequest as e:
            self.metrics.webhook(topic, _REFUSED.get(e.status, "bad_request"))
            return self._plain(request, e.status, e.sentence)
        request.setHeader(b"Content-Type", b"text/xml; charset=utf-8")
        answer, outcome = await self._answer(conf, message)
        self.metrics.webhook(topic, outcome)
        return answer

    def _params(self, request: IRequest) -> dict[str, list[str]]:
        length = request.getHeader(b"content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            raise BadRequest(413, "The request body is larger than 64 KiB.")
        if request.method == b"GET":
            return _parse(request.uri.partition(b"?")[2])
        content = request.content
        content.seek(0, 2)
        if content.tell() > MAX_BODY:
            raise BadRequest(413, "The request body is larger than 64 KiB.")
        content.seek(0)
        return _parse(content.read())

    def _url(self, request: IRequest) -> str:
        uri: str = request.uri.decode("utf-8", "replace")
        if self.public_url:
            return self.public_url + uri
        proto = request.getHeader(b"x-forwarded-proto")
        if proto:
            scheme = proto.split(b",")[0].strip().decode("ascii", "replace")
        else:
            scheme = "https" if request.isSecure() else "http"
        host = (request.getHeader(b"host") or b"").decode("utf-8", "replace")
        return f"{scheme}://{host}{uri}"

    def _check_signature(self, request: IRequest, conf: Topic, params: Mapping[str, Sequence[str]]) -> None:
        token = conf.twilio.auth_token or ""
        given = request.getHeader(b"x-twilio-signature")
        signed = {} if request.method == b"GET" else params
        if not given or not signature.is_valid(self._url(request), signed, given.decode("ascii", "replace"), token):
            raise BadRequest(403, "The X-Twilio-Signature header is missing or does not match.")

    async def _answer(self, conf: Topic, message: dict[str, Any]) -> tuple[bytes, str]:
        """The TwiML answer and the outcome it counts as."""
        checks = self.app.checks(conf)
        failure = await first_failure(checks, message) if checks else None
        if failure is None:
            answer = ACCEPTED
            payload: str | None = envelope.encode(message, self.clock.seconds())
        else:
            answer = INVALID + failure[0]
            payload = None
        try:
            prior = await self.store.accept(conf.name, message["sid"], answer, payload)
        except RedisUnavailable as e:
            if failure is not None:
                return twiml.response(failure[1]), "invalid"
            if not self._redis_down:
                self._redis_down = True
                self.log.error("Redis unavailable, answering error_response: {error}", error=str(e))
            return twiml.response(conf.error_response), "redis_down"
        if self._redis_down:
            self._redis_down = False
            self.log.info("Redis is back")
        if prior is not None:
            return self._replay(conf, prior), "duplicate"
        if failure is not None:
            return twiml.response(failure[1]), "invalid"
        if conf.send_on_accept and conf.accept_response:
            self.app.send_accept(conf, message)
        return twiml.response(conf.accept_response), "queued"

    def _replay(self, conf: Topic, prior: str) -> bytes:
        if prior.startswith(INVALID):
            text = conf.validators.get(prior[len(INVALID):])
            if text is not None:
                return twiml.response(text)
        return twiml.response(conf.accept_response)

    @staticmethod
    def _plain(request: IRequest, status: int, sentence: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return (sentence + "\n").encode("utf-8")

    # --- operations --------------------------------------------------------

    @router.route("/metrics", methods=["GET"])
    async def metrics_page(self, request: IRequest) -> bytes:
        await self.metrics.refresh_depths(self.store)
        body, content_type = self.metrics.render()
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return body

    @router.route("/health", methods=["GET"])
    async def health(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        try:
            await self.store.ping()
        except RedisUnavailable:
            request.setResponseCode(503)
            return json.dumps({"status": "unavailable", "redis": "unreachable"}).encode()
        return json.dumps({"status": "ok", "redis": "ok"}).encode()
