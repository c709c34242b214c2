"""The Twilio webhook: ``GET``/``POST /queue/<topic>`` answered with TwiML at once.

Order of checks: topic (404), size (413), signature (403), required fields
(400), validators (TwiML with the validator's message), then one Redis round
trip that de-duplicates the MessageSid and queues the message.

The webhook knows the application only through :class:`Inbound` (its topics, their
checks, and sending the accept response) and Redis only through the
:class:`~pyrowire.store.Store` it is given. It is a plain twisted.web leaf
(:class:`QueueResource`), served by the process's site without going through a router;
the same leaf serves ``GET /queue/<topic>/replies`` (:mod:`pyrowire.replies`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pyrowire import envelope, replies, signature, twiml
from pyrowire.errors import BadRequest, RedisReplyError, RedisUnavailable
from pyrowire.keys import ACCEPTED, INVALID, KEYWORD, read_seen
from pyrowire.message import parse_message
from pyrowire.metrics import Metrics
from pyrowire.settings import Topic
from pyrowire.validators import Check, first_failure

if TYPE_CHECKING:
    from pyrowire.store import Store

MAX_BODY = 64 * 1024
# SPEC section 9: a whole body (trimmed, any case) that is one of these opts out, back in, or asks for help
KEYWORDS = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"), "out"),
    **dict.fromkeys(("START", "UNSTOP", "YES"), "in"),
    **dict.fromkeys(("HELP", "INFO"), "help"),
}
_KEYWORD_OUTCOMES = {"out": "opt_out", "in": "opt_in", "help": "help"}
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


class Inbound(Protocol):
    """What the webhook needs of an application (:class:`pyrowire.App` provides it)."""

    @property
    def topics(self) -> Mapping[str, Topic]: ...

    def checks(self, topic: Topic) -> list[Check]:
        """The topic's validators in order."""
        ...

    def send_accept(self, topic: Topic, message: Mapping[str, Any]) -> None:
        """Send the accept response through the REST API too (``send_on_accept``)."""
        ...

    def watches_status(self, topic: str) -> bool:
        """Whether the app has an ``on_status`` function for ``topic``."""
        ...


Answerer = Callable[[Any, str], Coroutine[Any, Any, bytes]]


class QueueResource(Resource):
    """A route ``/<name>/<topic>`` as a twisted.web leaf (``postpath`` is ``[topic]``), answered by an
    ``async`` function of the request and the topic: the webhook's ``queue``, or the status callbacks'.
    ``below`` answers ``/<name>/<topic>/<segment>`` by segment (the webhook's ``replies``), looked up
    only when the path is not ``/<name>/<topic>``, so the webhook pays nothing for it."""

    isLeaf = True

    def __init__(self, webhook: Webhook, answer: Answerer | None = None,
                 below: Mapping[bytes, Answerer] | None = None) -> None:
        super().__init__()
        self.webhook = webhook
        self.answer = answer or webhook.queue
        self.below = dict(below or {})

    def render(self, request: Any) -> Any:
        postpath = request.postpath
        answer = self.answer
        if len(postpath) != 1 or not postpath[0]:
            found = self.below.get(postpath[1]) if len(postpath) == 2 and postpath[0] else None
            if found is None:
                return Webhook._plain(request, 404, "There is no such page.")
            answer = found
        try:
            topic = postpath[0].decode("utf-8")
        except UnicodeDecodeError:
            return Webhook._plain(request, 404, "There is no such topic.")
        d: Deferred[bytes] = Deferred.fromCoroutine(answer(request, topic))
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
    """The webhook of one application: its topics' messages checked, queued and answered."""

    log = Logger()

    def __init__(self, inbound: Inbound, store: Store, clock: IReactorTime, public_url: str | None = None,
                 metrics: Metrics | None = None) -> None:
        self.inbound = inbound
        self.store = store
        self.clock = clock
        self.public_url = public_url
        self.metrics = metrics if metrics is not None else Metrics(inbound.topics)
        self._redis_down = False

    def queue_resource(self) -> QueueResource:
        """``/queue/<topic>``'s leaf (and ``/queue/<topic>/replies``'s): the site hands it the requests under
        ``/queue/``."""
        return QueueResource(self, below={replies.SEGMENT: replies.RepliesEndpoint(self).answer})

    def resource(self) -> Resource:
        """A resource with the webhook at ``queue/<topic>`` (and its replies at ``queue/<topic>/replies``)
        below it, to mount in any twisted.web site."""
        root = Resource()
        root.putChild(b"queue", self.queue_resource())
        return root

    # --- the webhook -------------------------------------------------------

    async def queue(self, request: IRequest, topic: str) -> bytes:
        """Answer one webhook request for ``topic``: the response body (status and headers set on ``request``)."""
        if request.method not in (b"GET", b"POST"):
            request.setHeader(b"Allow", b"GET, POST")
            return self._plain(request, 405, "Only GET and POST are allowed here.")
        conf = self.inbound.topics.get(topic)
        if conf is None:
            self.metrics.webhook("", "unknown_topic")
            return self._plain(request, 404, f"There is no topic called {topic!r}.")
        try:
            params = self.params(request)
            if conf.validate_signature:
                self.check_signature(request, conf, params)
            message = parse_message(topic, params)
        except BadRequest as e:
            self.metrics.webhook(topic, _REFUSED.get(e.status, "bad_request"))
            return self._plain(request, e.status, e.sentence)
        request.setHeader(b"Content-Type", b"text/xml; charset=utf-8")
        answer, outcome = await self._answer(conf, message)
        self.metrics.webhook(topic, outcome)
        return answer

    def params(self, request: IRequest) -> dict[str, list[str]]:
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

    def checked(self, request: IRequest, topic: str, method: bytes, required: Sequence[str]) -> dict[str, str]:
        """The first value of each parameter of a request to another endpoint of ``topic`` (status callbacks,
        replies), checked as the webhook checks its own: BadRequest for another method (405), an unknown
        topic (404), a bad signature (403) or a missing ``required`` parameter (400)."""
        if request.method != method:
            request.setHeader(b"Allow", method)
            raise BadRequest(405, f"Only {method.decode()} is allowed here.")
        conf = self.inbound.topics.get(topic)
        if conf is None:
            raise BadRequest(404, f"There is no topic called {topic!r}.")
        params = self.params(request)
        if conf.validate_signature:
            self.check_signature(request, conf, params)
        values = {name: found[0] for name, found in params.items() if found}
        for name in required:
            if not values.get(name):
                raise BadRequest(400, f"The {name} parameter is missing.")
        return values

    def check_signature(self, request: IRequest, conf: Topic, params: Mapping[str, Sequence[str]]) -> None:
        token = conf.twilio.auth_token or ""
        given = request.getHeader(b"x-twilio-signature")
        signed = {} if request.method == b"GET" else params
        if not given or not signature.is_valid(self._url(request), signed, given.decode("ascii", "replace"), token):
            raise BadRequest(403, "The X-Twilio-Signature header is missing or does not match.")

    async def _answer(self, conf: Topic, message: dict[str, Any]) -> tuple[bytes, str]:
        """The TwiML answer and the outcome it counts as."""
        if conf.opt_out:
            keyword = KEYWORDS.get(message["message"].strip().upper())
            if keyword is not None:
                return await self._keyword(conf, message, keyword)
        checks = self.inbound.checks(conf)
        failure = await first_failure(checks, message) if checks else None
        if failure is None:
            answer = ACCEPTED
            payload: str | None = envelope.encode(message, self.clock.seconds())
        else:
            answer = INVALID + failure[0]
            payload = None
        try:
            conversation = message["number"] if conf.ordered else None
            prior = await self.store.accept(conf.name, message["sid"], answer, payload, conversation)
        except (RedisUnavailable, RedisReplyError) as e:
            if failure is not None:
                return twiml.response(failure[1]), "invalid"
            return self._cannot_queue(conf, e)
        self._redis_back()
        if prior is not None:
            return self._replay(conf, prior), "duplicate"
        if failure is not None:
            return twiml.response(failure[1]), "invalid"
        if conf.send_on_accept and conf.accept_response:
            self.inbound.send_accept(conf, message)
        return twiml.response(conf.accept_response), "queued"

    async def _keyword(self, conf: Topic, message: dict[str, Any], keyword: str) -> tuple[bytes, str]:
        """STOP, START or HELP: the opt-out set changed at once, the message queued to be recorded (and
        seen by the app's opt-out hook), never validated or handed to the handler."""
        payload = envelope.encode(message, self.clock.seconds(), keyword)
        try:
            prior = await self.store.accept(conf.name, message["sid"], KEYWORD + keyword, payload,
                                            message["number"] if conf.ordered else None,
                                            "" if keyword == "help" else keyword, message["number"])
        except (RedisUnavailable, RedisReplyError) as e:
            return self._cannot_queue(conf, e)
        self._redis_back()
        if prior is not None:
            return self._replay(conf, prior), "duplicate"
        return self._keyword_answer(conf, keyword), _KEYWORD_OUTCOMES[keyword]

    def _cannot_queue(self, conf: Topic, error: RedisUnavailable | RedisReplyError) -> tuple[bytes, str]:
        """Redis is away, or refused the write (out of memory, a read-only replica, too few replicas): the
        message is not queued and the sender gets the topic's error_response; said once until Redis is back."""
        if not self._redis_down:
            self._redis_down = True
            what = "unavailable" if isinstance(error, RedisUnavailable) else "refused to queue a message"
            self.log.error("Redis {what}, answering error_response: {error}", what=what, error=str(error))
        return twiml.response(conf.error_response), "redis_down"

    def _redis_back(self) -> None:
        if self._redis_down:
            self._redis_down = False
            self.log.info("Redis is back")

    @staticmethod
    def _keyword_answer(conf: Topic, keyword: str) -> bytes:
        # Twilio's own opt-out handling answers STOP and START; HELP gets the topic's help_response
        return twiml.response(conf.help_response if keyword == "help" else "")

    def _replay(self, conf: Topic, prior: str) -> bytes:
        prior = read_seen(prior)[0]  # without the mark of a message that has finished
        if prior.startswith(KEYWORD):
            return self._keyword_answer(conf, prior[len(KEYWORD):])
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
