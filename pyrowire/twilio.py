"""The Twilio REST client: POSTs to the Messages resource, retried when retrying can help.

One :class:`TwilioClient` is meant to be shared by the whole process: it owns one
persistent HTTP/1.1 connection pool (keep-alive, up to 64 idle connections per host,
:mod:`pyrowire.http11`), and it caches, per account, the Messages URL and the request's
head (``Authorization`` among its headers). A send is one write of that head, the
``Content-Length`` and the form body, and its answer is read whole by the pool's parser:
none of the per-request machinery of twisted.web's ``Agent`` or of treq. Tests may give
their own ``IAgent`` (a treq ``StubTreq``), which is then used instead.

A send is retried inside the client (SPEC §6): no answer (connection error, timeout),
HTTP 429 and 5xx are tried again after a capped exponential backoff with jitter
(:mod:`pyrowire.retry`), waited for on the injected reactor, and a ``Retry-After`` is
honoured as a lower bound; any other 4xx is permanent and raised at once.  After the
last attempt the last :class:`TwilioError` is raised.

Delivery is at least once.  Twilio's Messages API has no idempotency key, so when an
attempt times out or loses its connection after Twilio accepted the message, the retry
sends it a second time; the recipient then gets a duplicate.  We accept that rather
than risk dropping a reply.  (A refused connection or a failed DNS lookup never reached
Twilio, and an HTTP error answer means Twilio did not create the message: those
retries cannot duplicate.)
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlencode

from hyperlink import EncodedURL
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.error import ConnectError, ConnectingCancelledError, ConnectionClosed, DNSLookupError
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from pyrowire import http11
from pyrowire.errors import ConfigurationError, TwilioError
from pyrowire.retry import RetryPolicy, retry_after, sleep
from pyrowire.settings import TwilioConfig
from pyrowire.version import __version__

API_VERSION = "2010-04-01"
MAX_PERSISTENT_PER_HOST = 64
DEFAULT_TIMEOUT = 15.0
# the one place the per-attempt timeout can be changed from outside (tests use a short one)
TIMEOUT_VARIABLE = "PYROWIRE_TWILIO_TIMEOUT"
# how much of a non-JSON error body ends up in an exception message
_SNIPPET = 200

FormData = list[tuple[str, str]]
# called once per attempt's outcome: ("sent", None), ("retry", error) or ("failed", error)
Observer = Callable[[str, TwilioError | None], None]


def default_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """The per-attempt timeout: ``$PYROWIRE_TWILIO_TIMEOUT`` seconds when set, else 15."""
    text = environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigurationError(TIMEOUT_VARIABLE, f"must be a positive number of seconds, not {text!r}")
    return value


class _Failed(Exception):
    """One attempt failed with ``error``; ``wait`` is the Retry-After it came with, if any."""

    def __init__(self, error: TwilioError, wait: float | None = None) -> None:
        super().__init__(error, wait)
        self.error = error
        self.wait = wait


@implementer(IBodyProducer)
class _Form:
    """A request body already encoded: written whole at once (no cooperator, no copy)."""

    __slots__ = ("body", "length")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


_NO_REASON = Failure(ResponseDone())


class _Collect(Protocol):
    """Collects a response's body; ``done`` fires with it. Cancelling ``done`` drops the connection."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason: Failure = _NO_REASON) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            cast(Any, self.transport).stopProducing()  # the body's transport is a producer: this drops it


def _read(response: IResponse) -> Deferred[bytes]:
    collect = _Collect()
    response.deliverBody(collect)
    return collect.done


def _agent_of(http: Any) -> IAgent:
    """The IAgent to send with: ``http`` itself, or the agent under a treq ``HTTPClient``/``StubTreq``."""
    if IAgent.providedBy(http):
        return http  # type: ignore[no-any-return]
    return cast(IAgent, http._agent)  # treq keeps the agent it wraps there (tests inject a StubTreq)


class _Account:
    """What is pre-computed once per account: its Messages URL and its request headers."""

    __slots__ = ("head", "headers", "secrets", "target", "uri", "url")

    def __init__(self, url: EncodedURL, authorization: bytes, secrets: tuple[str, ...]) -> None:
        self.url = url
        self.uri = url.to_uri().to_text().encode("ascii")
        host = URI.fromBytes(self.uri)
        default = 443 if host.scheme == b"https" else 80
        netloc = host.host if host.port == default else b"%s:%d" % (host.host, host.port)
        # never changed after this: Agent copies headers only when they lack a Host
        self.headers = Headers({
            b"Authorization": [authorization],
            b"Accept": [b"application/json"],
            b"Content-Type": [b"application/x-www-form-urlencoded"],
            b"Host": [netloc],
        })
        self.target: http11.Target = (host.scheme.decode("ascii"), host.host.decode("idna"), host.port)
        # the request up to its Content-Length's value, for the client's own pool
        self.head = b"".join([
            b"POST ", host.originForm, b" HTTP/1.1\r\nHost: ", netloc, b"\r\nAuthorization: ", authorization,
            b"\r\nAccept: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"User-Agent: pyrowire/", __version__.encode("ascii"), b"\r\nContent-Length: ",
        ])
        self.secrets = secrets

    def request(self, body: bytes) -> bytes:
        """The whole POST of ``body``, as the client's pool writes it."""
        return b"%s%d\r\n\r\n%s" % (self.head, len(body), body)

    def __repr__(self) -> str:
        return f"<_Account {self.url.to_text()}>"


class TwilioClient:
    """Sends messages through Twilio's REST API; errors are :class:`TwilioError`.

    ``http`` (tests) is the ``IAgent`` to send with, or a treq ``HTTPClient`` or ``StubTreq``
    whose agent is used; by default an ``Agent`` over the client's own pool.

    ``timeout`` bounds every attempt (default :func:`default_timeout`); ``policy`` says how
    often and how patiently to retry, ``jitter`` (numbers in [0, 1]) spreads the delays.
    ``observer``, when given, is called after each attempt with ``"sent"`` and None,
    ``"retry"`` and the error (another attempt follows) or ``"failed"`` and the error
    raised to the caller; it is meant for counting, and an exception it raises is logged
    and ignored.  A send cancelled while it waits or while it is in flight stops there,
    failing with CancelledError, and notifies nothing.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        http: Any = None,
        timeout: float | None = None,
        *,
        policy: RetryPolicy | None = None,
        jitter: Callable[[], float] = random.random,
        observer: Observer | None = None,
    ) -> None:
        self._reactor = reactor
        self._timeout = default_timeout() if timeout is None else timeout
        self._policy = policy or RetryPolicy()
        self._jitter = jitter
        self._observer = observer
        self._pool: http11.Pool | None = None
        self._agent: IAgent | None = None
        if http is None:
            self._pool = http11.Pool(reactor, MAX_PERSISTENT_PER_HOST)
        else:
            self._agent = _agent_of(http)
        # keyed by (api_base, account_sid): never by the token, so no repr of it shows one
        self._accounts: dict[tuple[str, str], _Account] = {}

    def __repr__(self) -> str:
        return (
            f"<TwilioClient accounts={len(self._accounts)} timeout={self._timeout}"
            f" attempts={self._policy.max_attempts}>"
        )

    def send(
        self,
        creds: TwilioConfig,
        *,
        to: str,
        body: str | None = None,
        media_urls: Sequence[str] = (),
        status_callback: str | None = None,
        observer: Observer | None = None,
    ) -> Deferred[str]:
        """POST one message and fire with its SID, or fail with TwilioError (or ConfigurationError).

        ``observer`` (for this send only) is told of each attempt as the client's own observer is.
        """
        return Deferred.fromCoroutine(
            self._send(creds, to=to, body=body, media_urls=media_urls, status_callback=status_callback,
                       observer=observer)
        )

    def close(self) -> Deferred[None]:
        """Close the pooled persistent connections; fires when they are closed."""
        if self._pool is None:
            return succeed(None)
        return self._pool.close()

    async def _send(
        self,
        creds: TwilioConfig,
        *,
        to: str,
        body: str | None,
        media_urls: Sequence[str],
        status_callback: str | None,
        observer: Observer | None = None,
    ) -> str:
        account = self._account(creds)
        form: FormData = [("To", to)]
        if creds.messaging_service_sid:
            form.append(("MessagingServiceSid", creds.messaging_service_sid))
        elif creds.from_number:
            form.append(("From", creds.from_number))
        else:
            raise ConfigurationError("twilio", "from_number or messaging_service_sid is needed to send")
        if body is not None:
            form.append(("Body", body))
        if isinstance(media_urls, str):
            media_urls = (media_urls,)
        form.extend(("MediaUrl", url) for url in media_urls)
        if status_callback:
            form.append(("StatusCallback", status_callback))
        sid = await self._post(account, _Form(urlencode(form).encode("ascii")), observer)
        return sid

    def _account(self, creds: TwilioConfig) -> _Account:
        """The cached URL and headers of ``creds``' account, built on first use."""
        sid, token = creds.account_sid, creds.auth_token
        if not sid or not token:
            raise ConfigurationError("twilio", "account_sid and auth_token are needed to send")
        key = (creds.api_base, sid)
        account = self._accounts.get(key)
        if account is None or account.secrets[0] != token:
            url = EncodedURL.from_text(creds.api_base).child(API_VERSION, "Accounts", sid, "Messages.json")
            basic = base64.b64encode(f"{sid}:{token}".encode()).decode("ascii")
            account = _Account(url, b"Basic " + basic.encode("ascii"), (token, basic))
            self._accounts[key] = account
        return account

    async def _post(self, account: _Account, form: _Form, observer: Observer | None = None) -> str:
        """POST ``form`` until Twilio accepts it, a permanent error comes, or the policy gives up."""
        policy = self._policy
        first = self._reactor.seconds()
        attempt = 0
        while True:
            attempt += 1
            try:
                sid = await self._attempt(account, form)
            except _Failed as failed:
                error = failed.error
                delay = self._delay(error, failed.wait, attempt, first)
                if delay is None:
                    self._notify("failed", error, observer)
                    raise error from None
                self.log.warn(
                    "Twilio send failed ({status}), retry {attempt} in {delay:.1f}s",
                    status=error.status if error.status is not None else "no answer",
                    code=error.code,
                    reason=error.message,
                    attempt=attempt,
                    attempts=policy.max_attempts,
                    delay=delay,
                )
                self._notify("retry", error, observer)
                # At least once: after a timeout or a lost connection Twilio may already have
                # created the message, and with no idempotency key for Messages this retry
                # then sends it twice (see the module docstring).
                # Cancelling the send here cancels the wait: CancelledError leaves the loop.
                await sleep(self._reactor, delay)
            else:
                self._notify("sent", None, observer)
                return sid

    def _delay(self, error: TwilioError, wait: float | None, attempt: int, first: float) -> float | None:
        """How long to wait before the attempt after ``attempt``; None to give up with ``error``."""
        policy = self._policy
        if not error.retryable or attempt >= policy.max_attempts:
            return None
        delay = policy.delay(attempt - 1, self._jitter)
        if wait is not None:
            delay = max(delay, wait)
        if policy.deadline is not None and self._reactor.seconds() + delay - first > policy.deadline:
            return None
        return delay

    def _notify(self, outcome: str, error: TwilioError | None, observer: Observer | None = None) -> None:
        for notify in (self._observer, observer):
            if notify is None:
                continue
            try:
                notify(outcome, error)
            except Exception:
                self.log.failure("the Twilio send observer failed on {outcome}", outcome=outcome)

    def _request(self, agent: IAgent, account: _Account, form: _Form) -> Deferred[IResponse]:
        """The POST, cancelled when the timeout runs out before the response's headers came (a TimeoutError
        then; a cancellation by the caller stays one)."""
        d: Deferred[IResponse] = agent.request(b"POST", account.uri, account.headers, form)
        timer = self._reactor.callLater(self._timeout, d.cancel)

        def done(result: object) -> object:
            if timer.active():
                timer.cancel()
            elif isinstance(result, Failure) and (result.check(CancelledError, ConnectingCancelledError) or (
                    result.check(ResponseFailed) and _was_cancelled(cast(Exception, result.value)))):
                return Failure(TimeoutError())
            return result

        return d.addBoth(done)

    async def _attempt(self, account: _Account, form: _Form) -> str:
        """Make exactly one attempt at POSTing ``form``, bounded by the timeout; failures are _Failed.

        Running out of time is a TimeoutError from either path; a cancellation is the caller
        cancelling the send, and is re-raised as such.
        """
        try:
            if self._pool is not None:
                answer = await self._pool.request(account.target, account.request(form.body), self._timeout)
                status, raw, wait_header = answer.status, answer.body, answer.headers.get(b"retry-after")
            else:
                status, raw, wait_header = await self._exchange(account, form)
        except TimeoutError:
            raise _Failed(self._no_answer()) from None
        except (CancelledError, ConnectingCancelledError):
            raise CancelledError() from None
        except DNSLookupError:
            raise _Failed(TwilioError(None, "The Twilio API host name could not be resolved.")) from None
        except http11.BadAnswer as e:
            raise _Failed(TwilioError(None, f"The Twilio API's answer could not be read: {e}.")) from None
        except ConnectError:
            raise _Failed(TwilioError(None, "Could not connect to the Twilio API.")) from None
        except (ResponseFailed, ConnectionClosed) as e:
            if _was_cancelled(e):
                raise CancelledError() from None
            raise _Failed(TwilioError(None, "The connection to the Twilio API was lost before it answered.")) from None
        if 200 <= status < 300:
            try:
                return _sid_from(raw, status, account.secrets)
            except TwilioError as error:
                # a 2xx without a SID is not retryable (its status is 2xx): a retry could only duplicate
                raise _Failed(error) from None
        wait = None
        if status == 429 or status >= 500:
            wait = retry_after(wait_header, now=self._reactor.seconds())
        raise _Failed(_error_from(raw, status, account.secrets), wait)

    async def _exchange(self, account: _Account, form: _Form) -> tuple[int, bytes, bytes | None]:
        """One POST through the given agent: its status, its body and its Retry-After header, if any.

        The timeout bounds the wait for the headers (cancelling the request: a CancelledError), then
        again the wait for the body (addTimeout's TimeoutError)."""
        assert self._agent is not None
        response = await self._request(self._agent, account, form)
        content = _read(response)
        content.addTimeout(self._timeout, self._reactor)
        raw: bytes = await content
        header = response.headers.getRawHeaders(b"retry-after")
        return response.code, raw, header[0] if header else None

    def _no_answer(self) -> TwilioError:
        return TwilioError(None, f"Twilio did not answer within {self._timeout:g} seconds.")


def _was_cancelled(error: Exception) -> bool:
    reasons = getattr(error, "reasons", None) or []
    return any(r.check(CancelledError) for r in reasons)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced, so a token echoed by a proxy never travels on."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _sid_from(raw: bytes, status: int, secrets: tuple[str, ...]) -> str:
    answer = _decode(raw)
    sid = answer.get("sid") if isinstance(answer, dict) else None
    if not isinstance(sid, str) or not sid:
        raise TwilioError(None, "Twilio's answer carried no message SID.", status)
    return sid


def _error_from(raw: bytes, status: int, secrets: tuple[str, ...]) -> TwilioError:
    """A TwilioError from Twilio's JSON error body, or from a body that is not JSON at all."""
    answer = _decode(raw)
    if isinstance(answer, dict):
        code = answer.get("code")
        message = answer.get("message")
        more_info = answer.get("more_info")
        return TwilioError(
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            _scrub(str(message), secrets) if message else f"Twilio answered HTTP {status}.",
            status,
            more_info if isinstance(more_info, str) else None,
        )
    snippet = raw[:_SNIPPET].decode("utf-8", "replace").strip()
    detail = f": {_scrub(snippet, secrets)}" if snippet else "."
    return TwilioError(None, f"Twilio answered HTTP {status} without a JSON error body{detail}", status)
