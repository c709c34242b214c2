"""The console's HTML: server-rendered pages, every value written by :func:`e` (escaped).

A page is its frame (:func:`layout`) around a *live* part, which the page's script fetches
again every two seconds (the same URL with ``X-Console-Partial: 1``) and swaps in, so the
page updates without reloading. Everything that came from a texter or a handler goes
through :func:`e`; the script only inserts fragments rendered here, or sets ``textContent``.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from pyrowire.version import __version__


def e(value: Any) -> str:
    """``value`` as HTML text, escaped (None as an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def when(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + " UTC"


def topic_url(topic: str) -> str:
    return "/console/topics/" + quote(topic, safe="")


def number_url(topic: str, number: str) -> str:
    return topic_url(topic) + "/numbers/" + quote(number, safe="")


def phone_url(topic: str, number: str) -> str:
    return "/console/phone?" + urlencode({"topic": topic, "number": number})


def layout(title: str, live: str, token: str, live_url: str | None = None, before: str = "",
           after: str = "") -> bytes:
    """A whole page: the navigation, ``before``, the live part (refreshed from ``live_url``), ``after``."""
    refresh = f' data-live="{e(live_url)}"' if live_url else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="console-token" content="{e(token)}">
<title>{e(title)} · pyrowire console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script>
</head>
<body>
<header><nav><a href="/console/" class="brand">pyrowire</a> <a href="/console/">Topics</a>
<a href="/console/phone">Phone</a></nav></header>
<main>
<h1>{e(title)}</h1>
{before}
<div id="live"{refresh}>
{live}
</div>
{after}
</main>
<footer>pyrowire {e(__version__)} · updates every 2 s</footer>
</body>
</html>
""".encode()


def error_page(status: int, sentence: str) -> bytes:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{status} · pyrowire console</title>
<link rel="stylesheet" href="/console/assets/console.css"></head>
<body><main><h1>{status}</h1><p>{e(sentence)}</p><p><a href="/console/">Back to the topics</a></p></main></body>
</html>
""".encode()


def chart(per_minute: Sequence[int], label: str) -> str:
    """An inline SVG bar chart of the last hour, a bar a minute, newest on the right."""
    width, height, bar = 240, 36, 4
    top = max(per_minute) if per_minute and max(per_minute) > 0 else 1
    bars = []
    for i, count in enumerate(per_minute):
        h = 0 if count == 0 else max(1, round(count / top * height))
        ago = len(per_minute) - 1 - i
        bars.append(f'<rect x="{i * bar}" y="{height - h}" width="{bar - 1}" height="{h}">'
                    f'<title>{count} handled, {ago} min ago</title></rect>')
    return (f'<svg class="chart" role="img" aria-label="{e(label)}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}">{"".join(bars)}</svg>')


def _counts(t: Mapping[str, Any]) -> str:
    return (f'<td class="n">{e(t["queued"])}</td><td class="n">{e(t["in_flight"])}</td>'
            f'<td class="n">{e(t["scheduled"])}</td><td class="n">{e(t["dead"])}</td>'
            f'<td class="n">{e(t["last_hour"])}</td>')


def _delivery(delivery: Mapping[str, int]) -> str:
    if not delivery:
        return '<span class="quiet">none yet</span>'
    return " ".join(f'<span class="status status-{e(s)}">{e(s)} {e(n)}</span>' for s, n in delivery.items())


_COUNT_HEADS = ('<th>queued</th><th>in flight</th><th>waiting to retry</th><th>dead</th>'
                '<th>handled, last hour</th>')


def overview(data: Mapping[str, Any]) -> str:
    rows = []
    for t in data["topics"]:
        rows.append(f'<tr><th scope="row"><a href="{e(topic_url(t["name"]))}">{e(t["name"])}</a></th>{_counts(t)}'
                    f'<td>{chart(t["per_minute"], "handled per minute in " + t["name"])}</td>'
                    f'<td>{_delivery(t["delivery"])}</td></tr>')
    return (f'<table class="topics"><thead><tr><th>topic</th>{_COUNT_HEADS}<th>per minute</th>'
            f'<th>delivery</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _replies(replies: Iterable[Mapping[str, Any]]) -> str:
    items = []
    for r in replies:
        status = f' <span class="status status-{e(r["status"])}">{e(r["status"])}</span>' if r.get("status") else ""
        body = e(r["body"]) if r.get("body") is not None else '<span class="quiet">(body not kept)</span>'
        items.append(f'<li><span class="body">{body}</span>{status} <code class="sid">{e(r["sid"])}</code></li>')
    return f'<ul class="replies">{"".join(items)}</ul>' if items else '<span class="quiet">no reply</span>'


def _who(topic: str, number: Any) -> str:
    if not isinstance(number, str):
        return ""
    return f'<a href="{e(number_url(topic, number))}">{e(number)}</a>'


def topic_live(topic: str, t: Mapping[str, Any], token: str) -> str:
    counts = (f'<table class="topics"><thead><tr>{_COUNT_HEADS}<th>per minute</th><th>delivery</th></tr></thead>'
              f'<tbody><tr>{_counts(t)}<td>{chart(t["per_minute"], "handled per minute")}</td>'
              f'<td>{_delivery(t["delivery"])}</td></tr></tbody></table>')
    exchanges = "".join(
        f'<tr><td>{e(when(x["received_at"]))}</td><td>{_who(topic, x["number"])}</td>'
        f'<td class="text">{e(x["text"])}</td><td>{_replies(x["replies"])}</td></tr>'
        for x in t["exchanges"]) or '<tr><td colspan="4" class="quiet">nothing handled yet</td></tr>'
    errors = "".join(
        f'<li><details><summary>{e(when(x["finished_at"]))} {_who(topic, x["number"])} '
        f'<span class="text">{e(x["text"])}</span>: <strong>{e(x.get("error"))}</strong> '
        f'(attempt {e(x["attempt"])})</summary><pre>{e(x.get("traceback"))}</pre></details></li>'
        for x in t["errors"]) or '<li class="quiet">no errors</li>'
    dead = "".join(_dead_row(topic, d, token) for d in t["dead_letters"]) \
        or '<tr><td colspan="4" class="quiet">no dead letters</td></tr>'
    opted = t["opted_out"]
    numbers = "".join(f"<li>{_who(topic, n)}</li>" for n in opted["numbers"]) or '<li class="quiet">nobody</li>'
    more = f' <span class="quiet">(showing {len(opted["numbers"])})</span>' if opted["count"] > len(opted["numbers"]) \
        else ""
    return f"""{counts}
<section><h2>Recent exchanges</h2>
<table class="exchanges"><thead><tr><th>received</th><th>from</th><th>text</th><th>replies</th></tr></thead>
<tbody>{exchanges}</tbody></table></section>
<section><h2>Dead letters ({e(t["dead"])})</h2>
<table class="dead"><thead><tr><th>from</th><th>text</th><th>last error</th><th></th></tr></thead>
<tbody>{dead}</tbody></table></section>
<section><h2>Errors</h2><ul class="errors">{errors}</ul></section>
<section><h2>Opted out ({e(opted["count"])})</h2>{more}<ul class="opted-out">{numbers}</ul></section>
"""


def _dead_row(topic: str, letter: Mapping[str, Any], token: str) -> str:
    sid = letter.get("sid")
    if not isinstance(sid, str):
        actions = '<span class="quiet">unreadable</span>'
    else:
        base = topic_url(topic) + "/dead/" + quote(sid, safe="")
        hidden = f'<input type="hidden" name="token" value="{e(token)}">'
        actions = (f'<form method="post" action="{e(base)}/requeue">{hidden}<button>Re-queue</button></form> '
                   f'<form method="post" action="{e(base)}/discard">{hidden}'
                   f'<button class="danger">Discard</button></form>')
    return (f'<tr data-sid="{e(sid)}"><td>{_who(topic, letter.get("number"))}</td>'
            f'<td class="text">{e(letter.get("text"))}</td><td>{e(letter.get("error"))}</td>'
            f'<td class="actions">{actions}</td></tr>')


def conversation_live(c: Mapping[str, Any]) -> str:
    items = []
    for item in c["thread"]:
        kind = item["kind"]
        text = e(item["text"]) if item.get("text") is not None else '<span class="quiet">(body not kept)</span>'
        status = f' · <span class="status status-{e(item["status"])}">{e(item["status"])}</span>' \
            if item.get("status") else ""
        items.append(f'<li class="bubble {e(kind)}"><span class="body">{text}</span>'
                     f'<span class="meta">{e(when(item["at"]))}{status}</span></li>')
    thread = "".join(items) or '<li class="quiet">no messages recorded for this number</li>'
    state = " · opted out" if c["opted_out"] else ""
    return (f'<p class="meta">{e(c["waiting"])} waiting{e(state)} · session '
            f'<code>{e(json.dumps(c["session"], sort_keys=True))}</code></p>'
            f'<ol class="thread">{thread}</ol>')


def phone_form(topics: Sequence[str], topic: str, number: str) -> str:
    options = "".join(f'<option value="{e(t)}"{" selected" if t == topic else ""}>{e(t)}</option>' for t in topics)
    return f"""<form id="phone" class="phone" autocomplete="off">
<label>Topic <select name="topic" id="phone-topic">{options}</select></label>
<label>From <input name="number" id="phone-number" value="{e(number)}" size="16"></label>
<ol class="thread" id="phone-thread" aria-live="polite"></ol>
<label class="message">Message <textarea name="body" id="phone-body" rows="2" maxlength="1600"></textarea></label>
<button type="submit">Send</button>
<p class="hint">Posts a signed webhook through this process's own webhook, as Twilio would, and shows the
TwiML answer and the replies as they arrive.</p>
</form>"""
