"""Random parameters, bodies, methods and content types thrown at the real Webhook resource over StubTreq."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from tests.unit.test_webhook import TOKEN, Harness, Response, sms

EXPECTED = {200, 400, 403, 404, 405, 413}
HOST = "http://example.com"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TWILIO_NAMES = [
    "MessageSid", "SmsSid", "AccountSid", "From", "To", "Body", "NumMedia", "NumSegments",
    "FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip", "ToCountry",
    *(f"MediaUrl{i}" for i in range(12)), *(f"MediaContentType{i}" for i in range(12)),
]
ABSURD_COUNTS = [
    "-1", "999999999999", "1e9", "", " 1", "1 ", "+1", "0x1", "1.0", "10", "11", "0", "00000000000000000000007",
    "0" * 5000 + "3", "9" * 5000, "\u0663", "\u00b2", "\uff11", "NaN", "inf",
]
Value = str | bytes


values: st.SearchStrategy[Value] = st.one_of(
    st.text(max_size=40),
    st.sampled_from(ABSURD_COUNTS),
    st.sampled_from(["https://example.com/a.jpg", "image/jpeg", "%", "%zz", "\x00", "<Response/>", "]]>"]),
)
names = st.one_of(st.sampled_from(TWILIO_NAMES), st.text(max_size=12))


@st.composite
def parameter_sets(draw: st.DrawFn) -> list[tuple[Value, Value]]:
    """A parameter list: sometimes a valid SMS to start from, with fields dropped, changed, repeated or added."""
    base: list[tuple[Value, Value]] = []
    if draw(st.integers(0, 3)):
        base = [(k, v) for k, v in sms(sid=draw(st.sampled_from(["SM1", "SM2", "SM3"])), body="hi").items()]
        if draw(st.booleans()):
            drop = draw(st.sets(st.sampled_from([k for k, _ in base]), max_size=3))
            base = [(k, v) for k, v in base if k not in drop]
    if draw(st.booleans()):  # an MMS whose media agree with NumMedia, or nearly
        count = draw(st.integers(0, 11))
        base = [(k, v) for k, v in base if k != "NumMedia"] + [("NumMedia", str(count))]
        base += [(f"MediaUrl{i}", f"https://example.com/{i}.png") for i in range(count) if draw(st.integers(0, 9))]
    media = draw(st.lists(st.tuples(st.integers(0, 11), st.booleans(), values), max_size=3))
    for index, is_url, value in media:
        base.append((f"MediaUrl{index}" if is_url else f"MediaContentType{index}", value))
    extra = draw(st.lists(st.tuples(names, values), max_size=6))
    if not draw(st.integers(0, 3)):  # bytes that are mostly not UTF-8, as a name or as a value
        extra.append((draw(st.one_of(names, st.binary(min_size=1, max_size=6))), draw(st.binary(max_size=20))))
    return extra + base if draw(st.booleans()) else base + extra


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(alphabet="%=&+;abcXYZ09\x00\u00e9\ufffd", max_size=80).map(lambda s: s.encode("utf-8")),
    st.sampled_from([b"%", b"%%", b"%zz=1", b"Body=%ff%fe", b"=&=&", b"&&&", b"MessageSid", b"a=%C3",
                     b"Body=" + b"x" * (70 * 1024), b"MessageSid=SM1&From=%2B1&Body=" + b"%ff" * 30000]),
    st.binary(max_size=200).map(lambda b: b"MessageSid=SM9&From=%2B15551234567&Body=hi&" + b),
)
content_types = st.sampled_from([
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data; boundary=xyz", "multipart/form-data", "text/plain", "application/json", "", "\u00e9",
    None,
])
methods = st.sampled_from(["GET"] * 4 + ["POST"] * 8 + ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"])
topics = st.sampled_from(["echo", "quiet", "signed"] * 4 + ["nope", "%ff", "a%2Fb", "\u00e9cho", ""])


def _text(value: Value) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _signature(url: str, method: str, params: list[tuple[Value, Value]]) -> str:
    """The signature Twilio would send, as far as it can be computed for these parameters."""
    signed = {} if method == "GET" else {_text(k): _text(v) for k, v in params}
    return str(RequestValidator(TOKEN).compute_signature(url, signed))


def check(r: Response, method: str) -> None:
    """What every answer must be, whatever was asked."""
    event(f"status {r.code}")
    assert r.code in EXPECTED, (r.code, r.body[:300])
    assert b"Traceback" not in r.body
    assert TOKEN.encode() not in r.body
    assert b"secret" not in r.body.lower()
    if r.code == 200 and method != "HEAD":
        assert r.content_type.startswith(b"text/xml"), r.content_type
        root = ElementTree.fromstring(r.body)
        assert root.tag == "Response"
    elif r.code != 200:
        assert b"<" not in r.body or r.code in (404, 405), r.body[:300]


def _request(h: Harness, method: str, url: str, body: bytes | None, content_type: str | None,
             headers: dict[str, Any]) -> Response:
    if content_type is not None:
        headers["Content-Type"] = [content_type]
    return h.request(method, url, body, headers)


@FUZZ
@given(method=methods, topic=topics, params=parameter_sets(), content_type=content_types,
       sign=st.booleans())
def test_random_parameters_never_break_the_webhook(method: str, topic: str, params: list[tuple[Value, Value]],
                                                   content_type: str | None, sign: bool) -> None:
    """Random Twilio-like parameter sets, sent by any method, answer an expected status and never leak."""
    h = Harness()
    encoded = urlencode(params).encode("ascii")
    url = f"{HOST}/queue/{topic}"
    body: bytes | None = encoded
    if method == "GET":
        url = f"{url}?{encoded.decode('ascii')}"
        body = None
        # twisted.web drops a request line over 16 KiB (LineReceiver.MAX_LENGTH) before any resource
        # sees it; Twilio's GET webhooks are far shorter
        assume(len(url) < 16_000)
    headers: dict[str, Any] = {}
    if sign:
        headers["X-Twilio-Signature"] = [_signature(url, method, params)]
    r = _request(h, method, url, body, content_type, headers)
    check(r, method)


@FUZZ
@given(method=methods, topic=topics, body=raw_bodies, query=st.binary(max_size=40), content_type=content_types,
       signature=st.one_of(st.none(), st.text(max_size=30)))
def test_random_bodies_never_break_the_webhook(method: str, topic: str, body: bytes, query: bytes,
                                               content_type: str | None, signature: str | None) -> None:
    """Random raw bodies and query strings (malformed percent-encodings, not UTF-8) answer an expected status."""
    h = Harness()
    url = f"{HOST}/queue/{topic}?{quote(query, safe='=&%+')}"
    headers: dict[str, Any] = {}
    if signature is not None:
        headers["X-Twilio-Signature"] = [signature]
    r = _request(h, method, url, None if method == "GET" else body, content_type, headers)
    check(r, method)


@FUZZ
@given(count=st.one_of(st.integers(0, 12).map(str), st.sampled_from(ABSURD_COUNTS)),
       urls=st.one_of(st.integers(0, 12).map(lambda n: set(range(n))), st.sets(st.integers(0, 11), max_size=12)))
def test_num_media_and_media_urls_that_disagree(count: str, urls: set[int]) -> None:
    """Any NumMedia with any set of MediaUrl parameters is 200 when they agree and a 400 naming the field otherwise."""
    h = Harness()
    params = sms(NumMedia=count, **{f"MediaUrl{i}": f"https://example.com/{i}.jpg" for i in urls})
    r = h.post("quiet", params)
    check(r, "POST")
    if r.code == 400:
        assert b"NumMedia" in r.body or b"MediaUrl" in r.body, r.body
    digits = count.lstrip("0")
    wanted = int(digits or "0") if count.isascii() and count.isdigit() and len(digits) <= 2 else None
    wanted = wanted if wanted is not None and wanted <= 10 else None
    if wanted is None:
        assert r.code == 400 and b"NumMedia" in r.body
    elif all(i in urls for i in range(wanted)):
        assert r.code == 200
    else:
        missing = min(i for i in range(wanted) if i not in urls)
        assert r.code == 400 and f"MediaUrl{missing}".encode() in r.body


def test_head_is_405_and_queues_nothing() -> None:
    """HEAD is a method other than GET/POST: 405, and a form body sent with it is never queued."""
    h = Harness()
    r = h.request("HEAD", f"{HOST}/queue/echo", urlencode(sms(sid="SMhead")).encode(),
                  {"Content-Type": ["application/x-www-form-urlencoded"]})
    assert r.code == 405
    assert h.queued("echo") == []
