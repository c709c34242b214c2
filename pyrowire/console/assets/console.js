// pyrowire console: refreshes the page's live part every 2 s, and drives the phone.
// Everything inserted as HTML was rendered (and escaped) by the server; what this script
// writes itself goes in through textContent.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="console-token"]');
  var token = meta ? meta.content : "";

  function openDetails(root) {
    var open = [];
    root.querySelectorAll("details").forEach(function (d, i) { if (d.open) open.push(i); });
    return open;
  }

  var live = document.getElementById("live");
  if (live && live.dataset.live) {
    var last = null;
    var refresh = function () {
      if (document.hidden) return;
      fetch(live.dataset.live, {headers: {"X-Console-Partial": "1"}, credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null || html === last) return;
          var open = openDetails(live);
          live.innerHTML = html;
          var details = live.querySelectorAll("details");
          open.forEach(function (i) { if (details[i]) details[i].open = true; });
          last = html;
        })
        .catch(function () {});
    };
    setInterval(refresh, 2000);
  }

  var phone = document.getElementById("phone");
  if (!phone) return;
  var thread = document.getElementById("phone-thread");
  var text = document.getElementById("phone-body");

  function bubble(kind, body, meta) {
    var li = document.createElement("li");
    li.className = "bubble " + kind;
    var b = document.createElement("span");
    b.className = "body";
    b.textContent = body;
    li.appendChild(b);
    var m = document.createElement("span");
    m.className = "meta";
    m.textContent = meta || "";
    li.appendChild(m);
    thread.appendChild(li);
    return m;
  }

  function wait(topic, sid) {
    var shown = {};
    var deadline = Date.now() + 30000;
    var poll = function () {
      var url = "/console/api/replies?topic=" + encodeURIComponent(topic) + "&sid=" + encodeURIComponent(sid);
      fetch(url, {credentials: "same-origin"})
        .then(function (r) { return r.json(); })
        .then(function (answer) {
          (answer.replies || []).forEach(function (reply) {
            var label = "reply" + (reply.status ? " · " + reply.status : "");
            if (shown[reply.sid]) { shown[reply.sid].textContent = label; return; }
            shown[reply.sid] = bubble("out", reply.body === null ? "(media only)" : reply.body, label);
          });
          if (answer.handled) {
            if (answer.error && !shown.error) shown.error = bubble("error", answer.error, "the handler failed");
            else if (answer.refused && !shown.refused) shown.refused = bubble("note", "refused by " + answer.refused, "");
            else if (!Object.keys(shown).length) shown.none = bubble("note", "handled, no reply", "");
            if (Date.now() < deadline) setTimeout(poll, 1500);  // statuses may still move
            deadline = Math.min(deadline, Date.now() + 5000);
          } else if (Date.now() < deadline) {
            setTimeout(poll, 400);
          } else {
            bubble("note", "no answer from a worker within 30 s", "");
          }
        })
        .catch(function () { if (Date.now() < deadline) setTimeout(poll, 1000); });
    };
    poll();
  }

  phone.addEventListener("submit", function (event) {
    event.preventDefault();
    var topic = document.getElementById("phone-topic").value;
    var number = document.getElementById("phone-number").value;
    var body = text.value;
    bubble("in", body, "you, as " + number);
    text.value = "";
    fetch("/console/api/phone", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-Console-Token": token},
      body: JSON.stringify({topic: topic, number: number, body: body})
    })
      .then(function (r) { return r.json().then(function (answer) { return [r.ok, answer]; }); })
      .then(function (result) {
        var answer = result[1];
        if (!result[0]) { bubble("error", answer.error || "refused", ""); return; }
        if (answer.status !== 200) { bubble("error", "webhook answered " + answer.status + ": " + answer.twiml, ""); return; }
        if (answer.messages.length) {
          answer.messages.forEach(function (m) { bubble("answer", m, "TwiML answer"); });
        } else {
          bubble("note", "empty TwiML answer", "");
        }
        wait(topic, answer.sid);
      })
      .catch(function (error) { bubble("error", String(error), ""); });
  });
})();
