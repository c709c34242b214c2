"""The console (SPEC section 10) through the real root resource, in memory: StubTreq, a MemoryStore, a Clock.

What a browser does with these pages is tested in tests/browser/ against a real daemon.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

import pyrowire
from pyrowire import envelope
from pyrowire.console import Access
from pyrowire.console.access import COOKIE, Refused
from pyrowire.metrics import Metrics
from pyrowire.testing.memory import MemoryStore
from pyrowire.web import root
from tests.deferreds import result_of
from tests.unit.test_webhook import TOKEN, Response, topics

PASSWORD = "console-secret-password"


class Console:
    """The root of a web process with its console, behind a StubTreq; the phone posts through the same stub."""

    def __init__(self, access: Access | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = MemoryStore(self.clock)
        self.app = pyrowire.App({"TOPICS": topics(), "PROFILES": {"dev": {"debug": True}}})
        self.http: Any = None
        resource = root(self.app, self.store, self.clock, Metrics(self.app.topics),
                        console=access or Access(None, True), http=self)
        self.stub: Any = StubTreq(resource)
        self.token = "t" * 43

    def post(self, url: str, **kwargs: Any) -> Any:
        """What the console's phone calls: the same stub, as a real process calls itself over HTTP."""
        kwargs.pop("timeout", None)
        return self.stub.post(url, **kwargs)

    def request(self, method: str, path: str, data: Any = None, headers: dict[str, Any] | None = None,
                cookie: bool = True) -> Response:
        all_headers = dict(headers or {})
        if cookie:
            all_headers.setdefault("Cookie", f"{COOKIE.decode()}={self.token}")

        async def go() -> Response:
            response = await self.stub.request(method, "http://127.0.0.1:8080" + path, data=data, headers=all_headers,
                                              allow_redirects=False)
            body: bytes = await response.content()
            raw = {k.lower(): v for k, v in response.headers.getAllRawHeaders()}
            return Response(response.code, raw, body)

        d = Deferred.fromCoroutine(go())
        for _ in range(5):
            self.stub.flush()
        return result_of(d)

    def run(self, coroutine: Any) -> Any:
        return result_of(Deferred.fromCoroutine(coroutine))

    def dead_letter(self, topic: str, sid: str, body: str, number: str = "+15551234567") -> str:
        payload = envelope.encode({"sid": sid, "number": number, "message": body, "topic": topic}, 1.0)
        self.run(self.store.push_capped(self.store.keys(topic).dead, payload, 100))
        return payload

    def record(self, topic: str, sid: str, body: str, reply: str, number: str = "+15551234567") -> None:
        message = {"sid": sid, "number": number, "message": body, "topic": topic, "reply": reply}
        record = {"message": message, "result": message, "sids": ["SM" + "9" * 32], "received_at": 5.0,
                  "finished_at": 6.0}
        self.run(self.store.push_capped(self.store.keys(topic).complete, json.dumps(record), 100))


def test_the_overview_links_each_topic_by_its_name() -> None:
    c = Console()
    r = c.request("GET", "/console/")
    assert r.code == 200 and r.content_type.startswith(b"text/html")
    for name in ("echo", "signed", "quiet"):
        assert f'<a href="/console/topics/{name}">{name}</a>'.encode() in r.body


def test_with_a_password_it_asks_for_basic_credentials_of_any_user() -> None:
    c = Console(Access(PASSWORD, debug=False))
    r = c.request("GET", "/console/")
    assert r.code == 401 and r.headers[b"www-authenticate"][0].startswith(b"Basic ")
    wrong = base64.b64encode(b"admin:nope").decode()
    assert c.request("GET", "/console/", headers={"Authorization": f"Basic {wrong}"}).code == 401
    assert c.request("GET", "/console/", headers={"Authorization": "Basic !!!"}).code == 401
    right = base64.b64encode(f"anyone:{PASSWORD}".encode()).decode()
    r = c.request("GET", "/console/api/overview", headers={"Authorization": f"Basic {right}"})
    assert r.code == 200 and PASSWORD.encode() not in r.body


def test_without_a_password_a_profile_that_is_not_debug_serves_no_console() -> None:
    c = Console(Access(None, debug=False))
    assert c.request("GET", "/console/").code == 404
    assert c.request("GET", "/console/api/overview").code == 404


class _Request:
    def __init__(self, host: str, forwarded: bytes | None = None) -> None:
        self.host = host
        self.forwarded = forwarded

    def getHeader(self, name: bytes) -> bytes | None:
        return self.forwarded if name == b"x-forwarded-for" else None

    def getClientAddress(self) -> IPv4Address:
        return IPv4Address("TCP", self.host, 5000)


@pytest.mark.parametrize(("host", "forwarded", "allowed"), [
    ("127.0.0.1", None, True), ("::1", None, True), ("::ffff:127.0.0.1", None, True),
    ("127.0.0.1", b"203.0.113.9", False), ("192.0.2.10", None, False), ("unix", None, False),
])
def test_without_a_password_only_loopback_clients_without_a_proxy_see_it(host: str, forwarded: bytes | None,
                                                                          allowed: bool) -> None:
    access = Access(None, debug=True)
    if allowed:
        access.check(_Request(host, forwarded))
    else:
        with pytest.raises(Refused) as refused:
            access.check(_Request(host, forwarded))
        assert refused.value.status == 404


def test_a_proxied_request_gets_404_over_http() -> None:
    c = Console()
    assert c.request("GET", "/console/", headers={"X-Forwarded-For": "198.51.100.7"}).code == 404


def test_a_texters_markup_is_shown_as_text() -> None:
    c = Console()
    c.record("echo", "SM" + "1" * 32, "<script>window.owned=1</script>", "<b>bold</b>")
    for path in ("/console/topics/echo", "/console/topics/echo/numbers/+15551234567"):
        r = c.request("GET", path)
        assert b"<script>window.owned" not in r.body and b"<b>bold" not in r.body
        assert b"&lt;script&gt;window.owned=1&lt;/script&gt;" in r.body
        assert b"&lt;b&gt;bold&lt;/b&gt;" in r.body


def test_a_topic_page_lists_dead_letters_with_requeue_and_discard() -> None:
    c = Console()
    c.dead_letter("echo", "SM" + "d" * 32, "lost text")
    r = c.request("GET", "/console/topics/echo")
    assert b"lost text" in r.body
    assert b"<button>Re-queue</button>" in r.body and b">Discard</button>" in r.body
    assert f'action="/console/topics/echo/dead/SM{"d" * 32}/requeue"'.encode() in r.body


def _form(token: str) -> tuple[bytes, dict[str, Any]]:
    return urlencode({"token": token}).encode(), {"Content-Type": ["application/x-www-form-urlencoded"]}


def test_requeue_moves_the_dead_letter_back_to_the_queue() -> None:
    c = Console()
    payload = c.dead_letter("echo", "SM" + "d" * 32, "lost text")
    body, headers = _form(c.token)
    r = c.request("POST", f"/console/topics/echo/dead/SM{'d' * 32}/requeue", body, headers)
    assert r.code == 303 and r.headers[b"location"] == [b"/console/topics/echo"]
    k = c.store.keys("echo")
    assert c.run(c.store.lrange(k.queue)) == [payload]
    assert c.run(c.store.llen(k.dead)) == 0
    again = c.request("POST", f"/console/topics/echo/dead/SM{'d' * 32}/requeue", body, headers)
    assert again.code == 404 and b"no dead letter" in again.body


def test_discard_drops_only_that_dead_letter() -> None:
    c = Console()
    keep = c.dead_letter("echo", "SM" + "1" * 32, "keep me")
    c.dead_letter("echo", "SM" + "2" * 32, "drop me")
    body, headers = _form(c.token)
    assert c.request("POST", f"/console/topics/echo/dead/SM{'2' * 32}/discard", body, headers).code == 303
    k = c.store.keys("echo")
    assert c.run(c.store.lrange(k.dead)) == [keep]
    assert c.run(c.store.llen(k.queue)) == 0


@pytest.mark.parametrize("how", ["no token", "wrong token", "no cookie", "another origin"])
def test_an_action_without_the_anti_forgery_token_is_refused(how: str) -> None:
    c = Console()
    payload = c.dead_letter("echo", "SM" + "d" * 32, "lost text")
    body, headers = _form("" if how == "no token" else "x" * 43 if how == "wrong token" else c.token)
    if how == "another origin":
        headers["Origin"] = ["https://evil.example"]
    r = c.request("POST", f"/console/topics/echo/dead/SM{'d' * 32}/discard", body, headers, cookie=how != "no cookie")
    assert r.code == 403 and (b"anti-forgery" in r.body or b"another site" in r.body)
    assert c.run(c.store.lrange(c.store.keys("echo").dead)) == [payload]
    api_headers = {} if how == "no token" else {"X-Console-Token": body.decode()[6:]}
    if how == "another origin":
        api_headers["Origin"] = "https://evil.example"
    api = c.request("POST", f"/console/api/topics/echo/dead/SM{'d' * 32}/discard", cookie=how != "no cookie",
                    headers=api_headers)
    assert api.code == 403 and "error" in json.loads(api.body)


def test_a_page_sets_the_token_cookie_strictly_and_carries_the_token() -> None:
    c = Console()
    r = c.request("GET", "/console/topics/echo", cookie=False)
    [cookie] = r.headers[b"set-cookie"]
    assert b"HttpOnly" in cookie and b"SameSite=strict" in cookie and b"Path=/console" in cookie
    token = cookie.split(b";")[0].split(b"=", 1)[1]
    assert b'<meta name="console-token" content="' + token + b'">' in r.body


def test_no_secret_appears_in_any_page_or_api_answer() -> None:
    c = Console()
    c.record("signed", "SM" + "1" * 32, "hello", "olleh")
    c.dead_letter("signed", "SM" + "2" * 32, "dead")
    for path in ("/console/", "/console/topics/signed", "/console/topics/signed/numbers/+15551234567",
                 "/console/phone?topic=signed", "/console/api/overview", "/console/api/topics/signed",
                 "/console/api/topics/signed/numbers/+15551234567"):
        r = c.request("GET", path)
        assert r.code == 200, path
        assert TOKEN.encode() not in r.body, path


def test_an_unknown_topic_is_404() -> None:
    c = Console()
    assert c.request("GET", "/console/topics/nope").code == 404
    answer = json.loads(c.request("GET", "/console/api/topics/nope").body)
    assert answer == {"error": "There is no topic called 'nope'."}


def test_the_overview_counts_queues_and_the_last_hour_per_minute() -> None:
    c = Console()
    c.dead_letter("echo", "SM" + "d" * 32, "lost")
    minute = int(c.clock.seconds() // 60)
    c.run(c.store.tally("echo", minute, 3))
    c.run(c.store.tally("echo", minute - 2, 4))
    c.run(c.store.tally("echo", minute - 60, 100))  # out of the hour
    [echo] = [t for t in json.loads(c.request("GET", "/console/api/overview").body)["topics"] if t["name"] == "echo"]
    assert echo["dead"] == 1 and echo["queued"] == 0
    assert echo["per_minute"][-1] == 3 and echo["per_minute"][-3] == 4 and echo["last_hour"] == 7
    assert len(echo["per_minute"]) == 60


def test_the_phone_posts_a_signed_webhook_through_the_real_webhook() -> None:
    c = Console()
    r = c.request("POST", "/console/api/phone", json.dumps({"topic": "signed", "number": "+15550001111",
                                                             "body": "hi from the console"}).encode(),
                  {"X-Console-Token": c.token, "Content-Type": "application/json"})
    answer = json.loads(r.body)
    assert r.code == 200 and answer["status"] == 200, answer
    assert answer["messages"] == ["ok"]
    [queued] = [json.loads(p) for p in c.run(c.store.lrange(c.store.keys("signed").queue))]
    assert queued["message"]["sid"] == answer["sid"] and queued["message"]["message"] == "hi from the console"
    assert queued["message"]["number"] == "+15550001111"


def test_the_phone_refuses_a_post_without_the_token() -> None:
    c = Console()
    r = c.request("POST", "/console/api/phone", json.dumps({"topic": "signed", "number": "+1", "body": "x"}).encode())
    assert r.code == 403
    assert c.run(c.store.llen(c.store.keys("signed").queue)) == 0


def test_without_redis_the_console_says_so_with_503() -> None:
    c = Console()
    result_of(c.store.stop())
    r = c.request("GET", "/console/topics/echo")
    assert r.code == 503 and b"Redis is not answering" in r.body
    assert c.request("GET", "/console/api/overview").code == 503


def test_the_supervisor_adds_what_its_process_finished_to_the_minute_each_beat() -> None:
    from pyrowire.recovery import Supervisor
    from pyrowire.runtime import Runtime

    clock = Clock()
    clock.advance(6_000)  # minute 100
    store = MemoryStore(clock)
    metrics = Metrics({"echo": None})  # type: ignore[dict-item]
    runtime = Runtime(store, None, clock, metrics=metrics, worker_id="me:1:cafe")  # type: ignore[arg-type]
    supervisor = Supervisor(runtime, ["echo"], [], heartbeat_ttl=3)
    for outcome in ("complete", "complete", "retry", "dead"):
        metrics.handled("echo", outcome, 0.01)
    supervisor.startService()
    clock.advance(1)  # a beat
    assert result_of(Deferred.fromCoroutine(store.handled_minutes("echo"))) == {100: 3}
    metrics.handled("echo", "complete", 0.01)
    clock.advance(60)
    assert result_of(Deferred.fromCoroutine(store.handled_minutes("echo"))) == {100: 3, 101: 1}
    result_of(supervisor.stopService())


@pytest.mark.parametrize("query", ["number=+15550001111", "number=%2B15550001111"])
def test_the_phone_opens_for_the_number_in_its_url(query: str) -> None:
    c = Console()
    r = c.request("GET", f"/console/phone?topic=signed&{query}")
    assert b'value="+15550001111"' in r.body and b'<option value="signed" selected>' in r.body
    assert b"Message <textarea" in r.body and b'<button type="submit">Send</button>' in r.body
