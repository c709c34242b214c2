"""The console in a real headless Chromium, against a real daemon, Redis and fake Twilio (SPEC section 10)."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Page, expect

from tests.browser.conftest import ARTIFACTS, Console
from tests.process.harness import send_webhook, wait_for, webhook_params

WAIT_MS = 15_000
TOPICS = ("echo", "open", "fragile")


def _sid() -> str:
    return "SM" + uuid.uuid4().hex


def _number() -> str:
    return "+1555" + str(uuid.uuid4().int)[:7]


def test_the_overview_links_each_topic_by_its_name(console: Console, page: Page) -> None:
    page.goto(console.url("/console/"))
    for topic in TOPICS:
        expect(page.get_by_role("link", name=topic, exact=True)).to_have_attribute("href", f"/console/topics/{topic}")
    page.get_by_role("link", name="echo", exact=True).click()
    expect(page).to_have_url(console.url("/console/topics/echo"))
    expect(page.get_by_role("heading", name="echo", exact=True)).to_be_visible()


def test_a_new_exchange_appears_on_the_topic_page_without_a_reload(console: Console, page: Page) -> None:
    page.goto(console.url("/console/topics/open"))
    page.evaluate("window.notReloaded = true")
    text = f"fresh text {uuid.uuid4().hex[:8]}"
    status, _ = send_webhook(console.base, "open", webhook_params(_sid(), text, _number()), token=None)
    assert status == 200
    row = page.get_by_role("row").filter(has_text=text)
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(row.get_by_role("listitem")).to_contain_text(text, timeout=WAIT_MS)  # the open topic echoes it back
    assert page.evaluate("window.notReloaded") is True


def test_a_texters_script_is_shown_as_text_and_does_not_run(console: Console, page: Page) -> None:
    number = _number()
    body = '<script>window.owned = 1</script><img src=x onerror="window.owned = 2">'
    status, _ = send_webhook(console.base, "open", webhook_params(_sid(), body, number), token=None)
    assert status == 200
    page.goto(console.url("/console/topics/open"))
    expect(page.get_by_text(body).first).to_be_visible(timeout=WAIT_MS)
    page.goto(console.url(f"/console/topics/open/numbers/{number}"))
    expect(page.get_by_text(body).first).to_be_visible(timeout=WAIT_MS)
    page.wait_for_timeout(2500)  # one live refresh, which inserts the server's fragment
    assert page.evaluate("window.owned") is None


def _dead_letter(console: Console, page: Page, text: str) -> tuple[str, object]:
    sid = _sid()
    status, _ = send_webhook(console.base, "fragile", webhook_params(sid, text, _number()))
    assert status == 200
    page.goto(console.url("/console/topics/fragile"))
    row = page.locator(f'tr[data-sid="{sid}"]')
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(row).to_contain_text("fragile is broken")
    return sid, row


def test_requeue_a_dead_letter_after_fixing_the_cause(console: Console, page: Page) -> None:
    text = f"try again {uuid.uuid4().hex[:6]}"
    sid, row = _dead_letter(console, page, text)
    (console.deployment.dir / "markers" / f"fixed-{sid}").write_text("fixed")
    row.get_by_role("button", name="Re-queue").click()  # type: ignore[attr-defined]
    expect(page).to_have_url(console.url("/console/topics/fragile"))
    sent = wait_for(lambda: [m for m in console.deployment.twilio.messages() if m.get("body") == f"fixed {text}"],
                    15, "the reply of the re-queued message at the fake Twilio")
    assert len(sent) == 1
    expect(page.locator(f'tr[data-sid="{sid}"]')).to_have_count(0, timeout=WAIT_MS)
    expect(page.get_by_role("row").filter(has_text=f"fixed {text}")).to_be_visible(timeout=WAIT_MS)


def test_discard_a_dead_letter(console: Console, page: Page) -> None:
    text = f"give up {uuid.uuid4().hex[:6]}"
    sid, row = _dead_letter(console, page, text)
    row.get_by_role("button", name="Discard").click()  # type: ignore[attr-defined]
    expect(page.locator(f'tr[data-sid="{sid}"]')).to_have_count(0, timeout=WAIT_MS)
    answer = page.request.get(console.url("/console/api/topics/fragile")).json()
    assert sid not in [d["sid"] for d in answer["dead_letters"]]


def test_a_replayed_action_without_the_token_is_refused(console: Console, page: Page) -> None:
    sid, _row = _dead_letter(console, page, f"keep me {uuid.uuid4().hex[:6]}")
    action = console.url(f"/console/topics/fragile/dead/{sid}/discard")
    # the browser holds the console's cookie; the replayed POST lacks the form's token, or has another
    for form in ({}, {"token": "A" * 43}):
        refused = page.request.post(action, form=form, max_redirects=0)
        assert refused.status == 403 and "anti-forgery" in refused.text()
    api = page.request.post(console.url(f"/console/api/topics/fragile/dead/{sid}/discard"))
    assert api.status == 403
    page.reload()
    expect(page.locator(f'tr[data-sid="{sid}"]')).to_be_visible()


def test_the_phone_shows_the_twiml_answer_and_the_reply(console: Console, page: Page) -> None:
    number = _number()
    page.goto(console.url(f"/console/phone?topic=echo&number={number}"))
    page.get_by_label("Message").fill("hello phone")
    page.get_by_role("button", name="Send").click()
    thread = page.locator("#phone-thread")
    expect(thread.locator(".bubble.answer")).to_have_text(re.compile("Great, we'll get right back to you."),
                                                          timeout=WAIT_MS)
    reply = thread.locator(".bubble.out")
    expect(reply).to_contain_text("echo: hello phone", timeout=WAIT_MS)
    # it went through the real, signed webhook path: Twilio's fake got the reply for that number
    wait_for(lambda: [m for m in console.deployment.twilio.messages()
                      if m.get("to") == number and m.get("body") == "echo: hello phone"], 10, "the reply at Twilio")


def test_every_page_renders_for_the_record(console: Console, page: Page) -> None:
    """A screenshot of each page with something on it, saved with the test artifacts (docs/images/ holds two)."""
    number = "+15557770001"
    for text in ("hi there", "what's on today?", "thanks!"):
        send_webhook(console.base, "echo", webhook_params(_sid(), text, number))
    _dead_letter(console, page, "a text that met a bug")
    shots = [("overview", "/console/", page.get_by_role("link", name="echo", exact=True)),
             ("topic", "/console/topics/echo", page.get_by_role("row").filter(has_text="echo: thanks!")),
             ("conversation", f"/console/topics/echo/numbers/{number}",
              page.locator(".bubble.out").filter(has_text="echo: thanks!"))]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, path, ready in shots:
        page.goto(console.url(path))
        expect(ready).to_be_visible(timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / f"page-{name}.png"), full_page=True)
    page.goto(console.url(f"/console/phone?topic=echo&number={number}"))
    page.get_by_label("Message").fill("one more")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#phone-thread .bubble.out")).to_contain_text("echo: one more", timeout=WAIT_MS)
    page.screenshot(path=str(ARTIFACTS / "page-phone.png"), full_page=True)
