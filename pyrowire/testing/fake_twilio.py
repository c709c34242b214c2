"""A local fake of Twilio's REST Messages API, for tests, benchmarks and offline development.

``FakeTwilio`` is a ``twisted.web`` resource: mount it as a site's root (or serve it
with ``python -m pyrowire.testing.fake_twilio --port 0 --port-file PATH``) and point a topic's
``twilio.api_base`` (or ``TWILIO_API_BASE``) at it.  It answers
``POST /2010-04-01/Accounts/<sid>/Messages.json`` as Twilio does, records every message,
and has test-control endpoints under ``/_fake/``:

* ``GET /_fake/messages`` lists the recorded messages, ``DELETE`` clears them;
* ``POST /_fake/fail`` ``{"status": 500, "count": 2, "code": 20500, "message": "...",
  "retry_after": null}`` makes the next ``count`` sends fail that way;
* ``POST /_fake/hang`` ``{"count": 1}`` makes the next sends never answer;
  ``DELETE /_fake/hang`` answers the hung ones with a 503 and cancels pending hangs;
* ``POST /_fake/statuses`` ``{"statuses": ["sent", "undelivered"], "error_code": 30003,
  "count": 1}`` sets the status callbacks of the next ``count`` messages (in that order,
  so an out-of-order delivery is ``["delivered", "sent"]``).

A message sent with a ``StatusCallback`` gets Twilio's status callbacks, ``queued``,
``sent`` and ``delivered`` by default, a moment apart, each signed (``X-Twilio-Signature``)
with the auth token the send was made with, as Twilio signs them.

It uses the standard library, Twisted, pyrowire's signature module and (to post status
callbacks when run as a program) treq.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import re
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from email.utils import formatdate
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from pyrowire.signature import compute

API_VERSION = "2010-04-01"
MAX_BODY = 1600
_NUMBER = re.compile(r"^(?:[a-z]+:)?\+?[0-9]{3,15}$")
_MORE_INFO = "https://www.twilio.com/docs/errors/{code}"
DEFAULT_STATUSES = ("queued", "sent", "delivered")
CALLBACK_SECONDS = 0.05  # between one status callback of a message and the next


@dataclass
class RecordedMessage:
    """One message the fake accepted."""

    account: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str | None
    media_urls: list[str]
    status_callback: str | None
    received_at: float
    sid: str

    def as_json(self) -> dict[str, Any]:
        """The record as the JSON object ``GET /_fake/messages`` lists (``from``, not ``from_``)."""
        record = asdict(self)
        record["from"] = record.pop("from_")
        return record


@dataclass
class _Plan:
    statuses: list[str]
    error_code: int | None
    remaining: int


@dataclass
class _Failure:
    status: int
    remaining: int
    code: int | None
    message: str
    retry_after: float | None


class _Refusal(Exception):
    """A Twilio-style error answer; raised inside the fake, turned into JSON in one place."""

    def __init__(
        self, status: int, code: int | None, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class FakeTwilio(Resource):
    """Twilio's Messages API in memory: checks auth and parameters, records and answers 201.

    ``auth_token`` (when set) is the password every account must present;
    ``accounts`` (when set) maps account SIDs to their own tokens instead.  With neither,
    any credentials are accepted.  ``now`` gives ``received_at``.
    """

    isLeaf = True

    def __init__(
        self,
        auth_token: str | None = None,
        accounts: Mapping[str, str] | None = None,
        now: Callable[[], float] = time.time,
        post: Callable[[str, dict[str, str], dict[str, str]], Any] | None = None,
        clock: Any = None,
    ) -> None:
        super().__init__()
        # how status callbacks are POSTed (url, form, headers) and when; without ``post``, none are
        self._post = post
        self._clock = clock
        self._plans: deque[_Plan] = deque()
        self._auth_token = auth_token
        self._accounts = dict(accounts) if accounts else None
        self._now = now
        self.messages: list[RecordedMessage] = []
        self._failures: deque[_Failure] = deque()
        self._hangs = 0
        self._hung: list[Request] = []

    def __repr__(self) -> str:
        return f"<FakeTwilio messages={len(self.messages)} hung={len(self._hung)}>"

    # -- the Python side of the test controls ------------------------------------------------

    def fail_next(
        self,
        status: int = 500,
        count: int = 1,
        code: int | None = None,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Make the next ``count`` sends fail with ``status`` (after any failures already queued)."""
        if count > 0:
            text = message or f"Simulated failure (HTTP {status})."
            self._failures.append(_Failure(status, count, code, text, retry_after))

    def plan_next(self, statuses: Sequence[str], error_code: int | None = None, count: int = 1) -> None:
        """Make the next ``count`` messages get these status callbacks, in this order."""
        if count > 0:
            self._plans.append(_Plan(list(statuses), error_code, count))

    def _statuses(self) -> tuple[list[str], int | None]:
        if not self._plans:
            return list(DEFAULT_STATUSES), None
        plan = self._plans[0]
        plan.remaining -= 1
        if plan.remaining <= 0:
            self._plans.popleft()
        return plan.statuses, plan.error_code

    def _schedule_callbacks(self, message: RecordedMessage, token: str) -> None:
        if self._post is None or not message.status_callback:
            return
        statuses, code = self._statuses()
        for i, status in enumerate(statuses):
            params = {"MessageSid": message.sid, "SmsSid": message.sid, "MessageStatus": status,
                      "SmsStatus": status, "AccountSid": message.account, "To": message.to,
                      "ApiVersion": API_VERSION}
            if message.from_:
                params["From"] = message.from_
            if code is not None and status in ("failed", "undelivered"):
                params["ErrorCode"] = str(code)
            headers = {"X-Twilio-Signature": compute(message.status_callback, params, token)}
            self._clock.callLater(CALLBACK_SECONDS * (i + 1), self._post, message.status_callback, params, headers)

    def hang_next(self, count: int = 1) -> None:
        """Make the next ``count`` sends never answer."""
        self._hangs += max(count, 0)

    def release_hung(self) -> int:
        """Answer every hung send with a 503, cancel pending hangs; return how many were hung."""
        hung, self._hung, self._hangs = self._hung, [], 0
        for request in hung:
            request.write(_answer(request, 503, _error_body(503, 20503, "Released by the test.")))
            request.finish()
        return len(hung)

    def reset(self) -> None:
        """Forget recorded messages, queued failures and hangs (hung sends are released)."""
        self.messages.clear()
        self._failures.clear()
        self.release_hung()

    # -- HTTP ------------------------------------------------------------------------------

    def render(self, request: Request) -> bytes | int:
        """Route one request; every refusal becomes a Twilio-style JSON error."""
        path = [p.decode("utf-8", "replace") for p in request.postpath or []]
        while path and path[-1] == "":
            path.pop()
        method = (request.method or b"").decode("ascii", "replace")
        try:
            if path[:1] == ["_fake"]:
                return self._control(request, method, path[1:])
            if len(path) >= 4 and path[0] == API_VERSION and path[1] == "Accounts":
                return self._api(request, method, path[2], path[3:])
            raise _Refusal(404, 20404, "The requested resource was not found.")
        except _Refusal as refusal:
            for name, value in refusal.headers.items():
                request.setHeader(name, value)
            return _answer(
                request, refusal.status, _error_body(refusal.status, refusal.code, refusal.message)
            )

    def _api(self, request: Request, method: str, account: str, rest: list[str]) -> bytes | int:
        self._authenticate(request, account)
        if rest == ["Messages.json"]:
            if method != "POST":
                raise _Refusal(405, 20004, "Method not allowed.")
            return self._create(request, account)
        if len(rest) == 2 and rest[0] == "Messages" and rest[1].endswith(".json") and method == "GET":
            sid = rest[1][: -len(".json")]
            for message in self.messages:
                if message.sid == sid and message.account == account:
                    return _answer(request, 200, _resource(message))
        raise _Refusal(404, 20404, "The requested resource was not found.")

    def _authenticate(self, request: Request, account: str) -> None:
        if self._accounts is None and self._auth_token is None:
            return
        user = request.getUser().decode("utf-8", "replace")
        password = request.getPassword()
        expected = self._accounts.get(account) if self._accounts is not None else self._auth_token
        ok = user == account and expected is not None and hmac.compare_digest(password, expected.encode())
        if not ok:
            raise _Refusal(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})

    def _create(self, request: Request, account: str) -> bytes | int:
        if self._hangs:
            self._hangs -= 1
            self._hung.append(request)
            request.notifyFinish().addErrback(lambda _: self._forget(request))
            return NOT_DONE_YET
        if self._failures:
            failure = self._failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.popleft()
            headers = {}
            if failure.status == 429 and failure.retry_after is not None:
                headers["Retry-After"] = f"{failure.retry_after:g}"
            raise _Refusal(failure.status, failure.code, failure.message, headers)
        args: dict[bytes, list[bytes]] = request.args or {}

        def first(name: str) -> str | None:
            values = args.get(name.encode())
            return values[0].decode("utf-8", "replace") if values else None

        to, from_, service = first("To"), first("From"), first("MessagingServiceSid")
        body = first("Body")
        media = [v.decode("utf-8", "replace") for v in args.get(b"MediaUrl") or []]
        if not to:
            raise _Refusal(400, 21604, "A 'To' phone number is required.")
        if not _NUMBER.match(to):
            raise _Refusal(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not from_ and not service:
            raise _Refusal(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        if not body and not media:
            raise _Refusal(400, 21602, "Message body is required.")
        if body is not None and len(body) > MAX_BODY:
            raise _Refusal(
                400, 21617, f"The concatenated message body exceeds the {MAX_BODY} character limit."
            )
        message = RecordedMessage(
            account=account,
            to=to,
            from_=from_,
            messaging_service_sid=service,
            body=body,
            media_urls=media,
            status_callback=first("StatusCallback"),
            received_at=self._now(),
            sid="SM" + secrets.token_hex(16),
        )
        self.messages.append(message)
        self._schedule_callbacks(message, request.getPassword().decode("utf-8", "replace"))
        return _answer(request, 201, _resource(message))

    def _forget(self, request: Request) -> None:
        if request in self._hung:
            self._hung.remove(request)

    def _control(self, request: Request, method: str, path: list[str]) -> bytes:
        if path == ["messages"] and method == "GET":
            return _answer(request, 200, [m.as_json() for m in self.messages])
        if path == ["messages"] and method == "DELETE":
            self.messages.clear()
            return _answer(request, 200, {"cleared": True})
        if path == ["fail"] and method == "POST":
            spec = _json_object(request)
            self.fail_next(
                status=_int(spec, "status", 500),
                count=_int(spec, "count", 1),
                code=spec.get("code") if isinstance(spec.get("code"), int) else None,
                message=str(spec["message"]) if spec.get("message") else None,
                retry_after=_number(spec, "retry_after"),
            )
            return _answer(request, 200, {"queued": sum(f.remaining for f in self._failures)})
        if path == ["statuses"] and method == "POST":
            spec = _json_object(request)
            statuses = spec.get("statuses")
            if not isinstance(statuses, list) or not all(isinstance(s, str) for s in statuses):
                raise _Refusal(400, 20001, "statuses must be a list of status names.")
            code = spec.get("error_code")
            self.plan_next(statuses, code if isinstance(code, int) else None, _int(spec, "count", 1))
            return _answer(request, 200, {"planned": sum(p.remaining for p in self._plans)})
        if path == ["hang"] and method == "POST":
            self.hang_next(_int(_json_object(request), "count", 1))
            return _answer(request, 200, {"pending": self._hangs})
        if path == ["hang"] and method == "DELETE":
            return _answer(request, 200, {"released": self.release_hung()})
        raise _Refusal(404, 20404, "Unknown test-control endpoint.")


def _json_object(request: Request) -> dict[str, Any]:
    raw = request.content.read() if request.content is not None else b""
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        raise _Refusal(400, None, "The request body is not JSON.") from None
    if not isinstance(value, dict):
        raise _Refusal(400, None, "The request body must be a JSON object.")
    return value


def _int(spec: Mapping[str, Any], key: str, default: int) -> int:
    value = spec.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refusal(400, None, f"{key} must be an integer.")
    return value


def _number(spec: Mapping[str, Any], key: str) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refusal(400, None, f"{key} must be a number.")
    return float(value)


def _error_body(status: int, code: int | None, message: str) -> dict[str, Any]:
    more_info = _MORE_INFO.format(code=code) if code is not None else None
    return {"code": code, "message": message, "more_info": more_info, "status": status}


def _resource(message: RecordedMessage) -> dict[str, Any]:
    """The message as Twilio's Messages API represents it."""
    created = formatdate(message.received_at, usegmt=True)
    return {
        "sid": message.sid,
        "account_sid": message.account,
        "api_version": API_VERSION,
        "to": message.to,
        "from": message.from_,
        "messaging_service_sid": message.messaging_service_sid,
        "body": message.body or "",
        "num_media": str(len(message.media_urls)),
        "num_segments": str(max(1, -(-len(message.body or "") // 160))),
        "status": "queued",
        "direction": "outbound-api",
        "date_created": created,
        "date_updated": created,
        "date_sent": None,
        "price": None,
        "price_unit": "USD",
        "error_code": None,
        "error_message": None,
        "uri": f"/{API_VERSION}/Accounts/{message.account}/Messages/{message.sid}.json",
        "subresource_uris": {
            "media": f"/{API_VERSION}/Accounts/{message.account}/Messages/{message.sid}/Media.json"
        },
    }


def _answer(request: Request, status: int, value: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(value).encode("utf-8")


def _write_port_file(path: str, port: int) -> None:
    """Write ``port`` to ``path`` atomically, so a reader never sees a half-written file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a FakeTwilio on 127.0.0.1 until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m pyrowire.testing.fake_twilio", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port-file", help="write the listening port to this file")
    parser.add_argument("--auth-token", help="the password every account must present (default: any)")
    options = parser.parse_args(sys.argv[1:] if argv is None else list(argv))

    import treq
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    def post(url: str, form: dict[str, str], headers: dict[str, str]) -> None:
        wire: dict[bytes | str, list[bytes | str]] = {k: [v] for k, v in headers.items()}
        d = treq.post(url, data=form, headers=wire, timeout=10)
        d.addErrback(lambda f: print(f"status callback to {url} failed: {f.getErrorMessage()}", flush=True))

    site = Site(FakeTwilio(auth_token=options.auth_token, post=post, clock=reactor))
    site.displayTracebacks = False
    started = TCP4ServerEndpoint(reactor, options.port, interface=options.host).listen(site)

    def listening(port: Any) -> None:
        number = port.getHost().port
        if options.port_file:
            _write_port_file(options.port_file, number)
        print(f"fake twilio listening on http://{options.host}:{number}", flush=True)

    def failed(failure: Any) -> None:
        print(f"fake twilio could not listen: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        exit_status[0] = 1
        if reactor.running:
            reactor.stop()

    exit_status = [0]
    started.addCallbacks(listening, failed)
    if exit_status[0] == 0:
        reactor.run()
    return exit_status[0]


if __name__ == "__main__":
    sys.exit(main())
