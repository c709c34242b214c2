"""The Twilio REST client: one POST to the Messages resource per outbound message.

One :class:`TwilioClient` is meant to be shared by the whole process: it owns one
persistent HTTP connection pool, and it caches the Messages URL and the
``Authorization`` header of each account it has sent for.  It does not retry; a later
layer wraps :meth:`TwilioClient._post`, which makes exactly one attempt.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, cast

from hyperlink import EncodedURL
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.error import ConnectError, ConnectionClosed, DNSLookupError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed

from pyrowire.errors import ConfigurationError, TwilioError
from pyrowire.settings import TwilioConfig

API_VERSION = "2010-04-01"
MAX_PERSISTENT_PER_HOST = 64
# how much of a non-JSON error body ends up in an exception message
_SNIPPET = 200

FormData = list[tuple[str, str]]


class _Account:
    """What is pre-computed once per account: its Messages URL and its request headers."""

    __slots__ = ("headers", "secrets", "url")

    def __init__(self, url: EncodedURL, authorization: bytes, secrets: tuple[str, ...]) -> None:
        self.url = url
        self.headers: dict[bytes | str, list[bytes | str]] = {
            b"Authorization": [authorization],
            b"Accept": [b"application/json"],
        }
        self.secrets = secrets

    def __repr__(self) -> str:
        return f"<_Account {self.url.to_text()}>"


class TwilioClient:
    """Sends messages through Twilio's REST API with treq; errors are :class:`TwilioError`."""

    log = Logger()

    def __init__(self, reactor: IReactorTime, http: HTTPClient | None = None, timeout: float = 15.0) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._pool: HTTPConnectionPool | None = None
        if http is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
            http = HTTPClient(Agent(cast(Any, reactor), pool=self._pool))
        self._http = http
        # keyed by (api_base, account_sid): never by the token, so no repr of it shows one
        self._accounts: dict[tuple[str, str], _Account] = {}

    def __repr__(self) -> str:
        return f"<TwilioClient accounts={len(self._accounts)} timeout={self._timeout}>"

    def send(
        self,
        creds: TwilioConfig,
        *,
        to: str,
        body: str | None = None,
        media_urls: Sequence[str] = (),
        status_callback: str | None = None,
    ) -> Deferred[str]:
        """POST one message and fire with its SID, or fail with TwilioError (or ConfigurationError)."""
        return Deferred.fromCoroutine(
            self._send(creds, to=to, body=body, media_urls=media_urls, status_callback=status_callback)
        )

    def close(self) -> Deferred[None]:
        """Close the pooled persistent connections; fires when they are closed."""
        if self._pool is None:
            return succeed(None)
        return cast("Deferred[None]", self._pool.closeCachedConnections())

    async def _send(
        self,
        creds: TwilioConfig,
        *,
        to: str,
        body: str | None,
        media_urls: Sequence[str],
        status_callback: str | None,
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
        sid = await self._post(account, form)
        self.log.debug("twilio accepted {sid}", sid=sid)
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

    async def _post(self, account: _Account, form: FormData) -> str:
        """Make exactly one attempt at POSTing ``form``; the seam a retry policy wraps."""
        try:
            response = await self._http.post(
                account.url,
                data=form,
                headers=account.headers,
                allow_redirects=False,
                reactor=cast(Any, self._reactor),
                timeout=self._timeout,
            )
            content = response.content()
            content.addTimeout(self._timeout, self._reactor)
            raw: bytes = await content
        except (CancelledError, TimeoutError):
            raise TwilioError(None, f"Twilio did not answer within {self._timeout:g} seconds.") from None
        except DNSLookupError:
            raise TwilioError(None, "The Twilio API host name could not be resolved.") from None
        except ConnectError:
            raise TwilioError(None, "Could not connect to the Twilio API.") from None
        except (ResponseFailed, ConnectionClosed) as e:
            if _was_cancelled(e):
                raise TwilioError(None, f"Twilio did not answer within {self._timeout:g} seconds.") from None
            raise TwilioError(None, "The connection to the Twilio API was lost before it answered.") from None
        status: int = response.code
        if 200 <= status < 300:
            return _sid_from(raw, status, account.secrets)
        raise _error_from(raw, status, account.secrets)


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
