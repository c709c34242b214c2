"""The Lua scripts of pyrowire's queue: every state change a crash must not split is one of them.

These scripts are the one implementation of the queue's semantics. The daemon runs
them on Redis (:mod:`pyrowire.redis_store`); the in-memory store of
:mod:`pyrowire.testing` runs the very same text on fakeredis.

No script re-encodes a message with ``cjson``: Redis's cjson keeps 14 significant
digits of a float and turns ``[]`` into ``{}``, while fakeredis's keeps both, so a
payload that went through cjson would differ between the two and from what the webhook
wrote. Scripts only *read* a payload with ``cjson.decode`` (its sid and sender), and a
payload stays byte for byte what the webhook queued from acceptance to its record.

Redis does not undo a script's earlier writes when a later command fails (an error reply
such as WRONGTYPE). So every script writes in an order where
stopping after any command loses nothing: a message is added to its new place before it
is removed from its old one (or moved with one LMOVE), and a MessageSid is remembered only
after its message is queued. The worst a failure can leave is a message in two places,
which at-least-once allows. Out of memory, Redis refuses a script's first write that may
grow memory, and lets a script that has already written go on: FINISH starts with a DEL
(the message's send records) and HEARTBEAT with an EXPIRE, so finishing and staying alive
go on through an OOM outage while taking new work and accepting do not.

The schema (docs/operations.md has the whole table): a topic's ``queue`` holds messages
ready to run; in an ordered topic at most one per conversation, the others waiting in
that sender's ``conv:<number>`` list while the sender is in the ``active`` set. A worker
moves a message into its ``inflight:<worker>`` list (``TAKE``, or ``BLMOVE`` then
``BEGIN``), counting the run in ``runs`` before the handler starts; ``FINISH`` records
it and hands the conversation its next message, ``RETRY`` parks it in ``schedule`` until
``DUE`` puts it back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA1 digest (what EVALSHA names it by)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# a payload's MessageSid and sender, each nil when it has none: the payload is only read, never re-encoded
_READ = """
local function read(item)
  local ok, envelope = pcall(cjson.decode, item)
  if ok and type(envelope) == 'table' and type(envelope['message']) == 'table' then
    local message = envelope['message']
    local sid, number = message['sid'], message['number']
    if type(sid) ~= 'string' then sid = nil end
    if type(number) ~= 'string' then number = nil end
    return sid, number
  end
  return nil, nil
end
"""

# a dead letter going back to the queue is no longer finished: its seen value loses FINISH's mark
# (its TTL stays), so /replies reads it as not yet handled until it finishes again
_UNMARK = """
local function unmark(seen_key)
  local value = redis.call('GET', seen_key)
  if value then
    local answer = string.gsub(value, '[%+%-]+$', '')
    if answer ~= value then redis.call('SET', seen_key, answer, 'KEEPTTL') end
  end
end
"""

# the common part of TAKE and BEGIN: count the run (before the handler starts), read the
# conversation's session and whether its sender opted out
_BEGIN = _READ + """
local function begin(item, runs_key, session_prefix, optout_key)
  local sid, number = read(item)
  sid = sid or ''
  local runs = redis.call('HINCRBY', runs_key, sid, 1)
  local session = false
  local opted_out = 0
  if number then
    session = redis.call('GET', session_prefix .. number)
    opted_out = redis.call('SISMEMBER', optout_key, number)
  end
  return {runs, session, opted_out}
end
"""

# KEYS: seen, queue, active, conv, optout. ARGV: answer, ttl, payload ('' = answer only),
# conversation ('' for a topic that is not ordered), opt-out change ('', 'out' or 'in'), sender.
# Returns the earlier answer when the MessageSid was seen before, else nil. A message of a
# conversation that is active waits in its conv list. STOP and START change the topic's opt-out
# set here, at once, before any reply to the sender can go out.
ACCEPT = Script("accept", """
local prior = redis.call('GET', KEYS[1])
if prior then return prior end
if ARGV[5] == 'out' then
  redis.call('SADD', KEYS[5], ARGV[6])
elseif ARGV[5] == 'in' then
  redis.call('SREM', KEYS[5], ARGV[6])
end
if ARGV[3] ~= '' then
  if ARGV[4] ~= '' and redis.call('SADD', KEYS[3], ARGV[4]) == 0 then
    redis.call('LPUSH', KEYS[4], ARGV[3])
  else
    redis.call('LPUSH', KEYS[2], ARGV[3])
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
""")

# KEYS: queue, inflight, runs, optout. ARGV: session key prefix.
# Moves the oldest ready message in flight and begins it: {runs, opted out (0 or 1), session or
# nil, payload}; nil when nothing is ready (the worker then parks a BLMOVE). The payload comes last:
# txredisapi's reader gives the reactor a turn after a bulk string with more of the reply behind it.
TAKE = Script("take", _BEGIN + """
local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if not item then return false end
local begun = begin(item, KEYS[3], ARGV[1], KEYS[4])
return {begun[1], begun[3], begun[2], item}
""")

# KEYS: queue, inflight, runs, optout. ARGV: session key prefix, at most how many.
# TAKE for up to that many ready messages in one round trip, oldest first: each moved in flight and
# begun before the reply, so a SIGKILL after it leaves them where recovery finds them. In an ordered
# topic the queue holds one message per conversation, so a conversation never has two in a batch.
# Returns nil when nothing is ready, else {runs, opted out, session length (-1: none), payload length}
# per message, then one string: each message's session and payload, in turn. Lengths are in bytes. One
# string, last: txredisapi's reader gives the reactor a turn after a bulk string with more behind it.
TAKE_MANY = Script("take_many", _BEGIN + """
local reply, texts = {}, {}
for i = 1, tonumber(ARGV[2]) do
  local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not item then break end
  local begun = begin(item, KEYS[3], ARGV[1], KEYS[4])
  local session, n = begun[2], #reply
  reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4] = begun[1], begun[3], session and #session or -1, #item
  if session then texts[#texts + 1] = session end
  texts[#texts + 1] = item
end
if #texts == 0 then return false end
reply[#reply + 1] = table.concat(texts)
return reply
""")

# KEYS: runs, optout. ARGV: session key prefix, payload (moved in flight by BLMOVE).
# {runs, session or nil, opted out}
BEGIN = Script("begin", _BEGIN + """
return begin(ARGV[2], KEYS[1], ARGV[1], KEYS[2])
""")

# KEYS: inflight, records, sent, dead, runs, active, conv, queue, session, seen, replies.
# ARGV: payload, record, retention, dead ('1' or ''), sid, conversation ('' if not ordered),
# session change ('', 'set' or 'del'), session JSON, session ttl, replies ttl, the replies not yet
# recorded by SENT ('' or index and details (JSON) alternately, each followed by a newline).
# Records the message (newest first, trimmed to retention). If it was still in this worker's
# in-flight list: forgets its sends and runs, dead-letters it if asked, stores the session, hands
# the conversation its next message (to the consuming end of the queue) or frees it, records the
# last replies and gives them the short replies ttl, and marks the message as finished by appending
# '+' (or '-' for a dead letter) to its seen value, when there is one (its TTL stays).
FINISH = Script("finish", """
local held = redis.call('LPOS', KEYS[1], ARGV[1])
if held then redis.call('DEL', KEYS[3]) end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
if not held then return 0 end
if ARGV[4] == '1' then redis.call('LPUSH', KEYS[4], ARGV[1]) end
if ARGV[7] == 'set' then
  redis.call('SET', KEYS[9], ARGV[8], 'EX', ARGV[9])
elseif ARGV[7] == 'del' then
  redis.call('DEL', KEYS[9])
end
if ARGV[6] ~= '' then
  if redis.call('LMOVE', KEYS[7], KEYS[8], 'RIGHT', 'RIGHT') == false then
    redis.call('SREM', KEYS[6], ARGV[6])
  end
end
redis.call('HDEL', KEYS[5], ARGV[5])
if ARGV[11] ~= '' then
  local index = false
  for line in string.gmatch(ARGV[11], '[^\\n]+') do
    if index then
      redis.call('HSET', KEYS[11], index, line)
      index = false
    else
      index = line
    end
  end
end
redis.call('EXPIRE', KEYS[11], ARGV[10])
if redis.call('EXISTS', KEYS[10]) == 1 then
  if ARGV[4] == '1' then redis.call('APPEND', KEYS[10], '-') else redis.call('APPEND', KEYS[10], '+') end
end
redis.call('LREM', KEYS[1], 1, ARGV[1])
return 1
""")

# FINISH for several messages of one worker in one round trip: FINISH's own text, run once per
# message as a Lua function whose parameters shadow KEYS and ARGV.
# KEYS: each message's FINISH keys in turn. ARGV: keys per message, arguments per message, then
# each message's FINISH arguments in turn. Returns one reply per message: FINISH's (1 held, 0 not),
# or -1 when Redis refused one of its commands (an error reply such as OOM): that message is
# finished again on its own; the others are done. Each message's record is pushed in the same
# step that removes it from in-flight, as in FINISH.
FINISH_MANY = Script("finish_many", "local function finish(KEYS, ARGV)\n" + FINISH.source + """
end
local nk, na = tonumber(ARGV[1]), tonumber(ARGV[2])
local replies = {}
for i = 0, #KEYS / nk - 1 do
  local ok, held = pcall(finish, {unpack(KEYS, i * nk + 1, (i + 1) * nk)},
                         {unpack(ARGV, 3 + i * na, 2 + (i + 1) * na)})
  if ok then replies[i + 1] = held else replies[i + 1] = -1 end
end
return replies
""")

# KEYS: inflight, errors, schedule. ARGV: payload, record, retention, due (seconds).
# A failed run with attempts left: recorded, and parked until due; its conversation stays active.
RETRY = Script("retry", """
local held = redis.call('LPOS', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
if not held then return 0 end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('LREM', KEYS[1], 1, ARGV[1])
return 1
""")

# KEYS: schedule, queue. ARGV: now, at most how many. Moves the messages due by now to the
# consuming end of the queue, the earliest due first in line; returns how many.
DUE = Script("due", """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for i = #due, 1, -1 do
  redis.call('RPUSH', KEYS[2], due[i])
  redis.call('ZREM', KEYS[1], due[i])
end
return #due
""")

# KEYS: dead, queue, runs, active. ARGV: at most how many, conversation key prefix, ordered ('1'/''),
# seen key prefix. Moves up to that many dead letters, oldest first, back behind the queue (or behind
# their conversation's current message), with their runs forgotten (max_attempts afresh) and their
# finish mark taken off. Returns {moved, dead letters left}.
REQUEUE = Script("requeue", _READ + _UNMARK + """
local n = 0
while n < tonumber(ARGV[1]) do
  local item = redis.call('LINDEX', KEYS[1], -1)
  if not item then break end
  local sid, number = read(item)
  if sid then
    redis.call('HDEL', KEYS[3], sid)
    unmark(ARGV[4] .. sid)
  end
  if ARGV[3] == '1' and number and redis.call('SADD', KEYS[4], number) == 0 then
    redis.call('LPUSH', ARGV[2] .. number, item)
  else
    redis.call('LPUSH', KEYS[2], item)
  end
  redis.call('RPOP', KEYS[1])
  n = n + 1
end
return {n, redis.call('LLEN', KEYS[1])}
""")

# KEYS: delivery, events, queue, optout, delivered (status -> messages that reached it).
# ARGV: status, rank, error code, event (JSON), ttl, the
# on_status message's text before and after its "previous" value ('' when nobody listens), a number
# to opt out ('' for none). Keeps every new event; the status moves only forward (rank, and a final
# status (rank 3) changes only from delivered to read). Returns {changed (0/1), previous status}.
STATUS = Script("status", """
local current = redis.call('HGET', KEYS[1], 'status')
if ARGV[8] ~= '' then redis.call('SADD', KEYS[4], ARGV[8]) end
if current == ARGV[1] then return {0, current} end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('LTRIM', KEYS[2], -100, -1)
redis.call('EXPIRE', KEYS[2], ARGV[5])
local rank = tonumber(redis.call('HGET', KEYS[1], 'rank') or '-1')
local changed
if rank >= 3 then
  changed = current == 'delivered' and ARGV[1] == 'read'
else
  changed = tonumber(ARGV[2]) > rank
end
if not changed then return {0, current} end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'rank', ARGV[2], 'error_code', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
if ARGV[6] ~= '' then
  local previous = 'null'
  if current then previous = cjson.encode(current) end
  redis.call('LPUSH', KEYS[3], ARGV[6] .. previous .. ARGV[7])
end
return {1, current}
""")

# KEYS: bucket. ARGV: rate (segments a second), burst, cost (segments), now (seconds).
# A token bucket that may go into debt: the send takes its tokens at once and waits until the
# debt is paid, so every process sharing the sender queues behind the others in one round trip.
# Returns the seconds to wait (as a string, 0 when the send may go now).
PACE = Script("pace", """
local rate, burst, cost, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or ARGV[2])
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or ARGV[4])
if now > at then tokens = math.min(burst, tokens + (now - at) * rate) else now = at end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 60)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
""")

# KEYS: sent, replies. ARGV: index, outbound sid, ttl, the reply's details (JSON).
SENT = Script("sent", """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
""")

# KEYS: seen, replies. ARGV: delivery key prefix. Reads only: {seen value or nil, the replies hash
# (index, details, ...), the delivery status of each reply in that order (nil when there is none)}.
REPLIES = Script("replies", """
local items = redis.call('HGETALL', KEYS[2])
local statuses = {}
for i = 2, #items, 2 do
  local ok, reply = pcall(cjson.decode, items[i])
  local status = false
  if ok and type(reply) == 'table' and type(reply['sid']) == 'string' then
    status = redis.call('HGET', ARGV[1] .. reply['sid'], 'status')
  end
  statuses[#statuses + 1] = status
end
return {redis.call('GET', KEYS[1]), items, statuses}
""")

# KEYS: inflight, queue, alive, workers. ARGV: worker id, 'force' or ''.
# Moves the worker's in-flight messages back to the consuming end of the queue, oldest first,
# unless the worker is still alive and this is not forced. Their runs were counted when they
# were taken, so a message that kills every worker taking it still ends as a dead letter; their
# conversations stay active, so they run before their conversations' later messages.
RECLAIM = Script("reclaim", """
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do
  n = n + 1
end
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[3])
return n
""")

# KEYS: inflight, queue. ARGV: payloads no handler of this live worker holds.
# Puts each back at the consuming end of the queue if it is still in the in-flight list.
SWEEP = Script("sweep", """
local n = 0
for i = 1, #ARGV do
  if redis.call('LPOS', KEYS[1], ARGV[i]) then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    redis.call('LREM', KEYS[1], 1, ARGV[i])
    n = n + 1
  end
end
return n
""")

# KEYS: inflight, queue, runs. ARGV: payloads this worker took and never started, oldest first.
# Puts each still in the in-flight list back at the consuming end of the queue, oldest nearest it,
# and takes back the run TAKE_MANY counted for it (a stopping worker's prefetched messages).
UNTAKE = Script("untake", _READ + """
local n = 0
for i = #ARGV, 1, -1 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    local sid = read(ARGV[i]) or ''
    if redis.call('HINCRBY', KEYS[3], sid, -1) <= 0 then redis.call('HDEL', KEYS[3], sid) end
    n = n + 1
  end
end
return n
""")

# KEYS: workers, alive. ARGV: worker id, ttl. The EXPIRE comes first: it frees nothing but is not
# refused when Redis is out of memory, and a script that has written may go on, so a live worker's
# heartbeat survives an OOM outage (its messages are not reclaimed from under it).
HEARTBEAT = Script("heartbeat", """
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
return 1
""")

# KEYS: list. ARGV: item, retention.
PUSH_CAPPED = Script("push_capped", """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
""")

# KEYS: dead, queue, runs, active. ARGV: the dead letter, the conversations' key prefix, '1' when ordered,
# seen key prefix.
# Moves one given dead letter back (the console's Re-queue) as REQUEUE moves each: added to the queue,
# or behind its conversation's active message, before it leaves the dead letters. Returns 1, or 0 when
# it was not (or no longer) a dead letter.
REQUEUE_ONE = Script("requeue_one", _READ + _UNMARK + """
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
local sid, number = read(ARGV[1])
if sid then
  redis.call('HDEL', KEYS[3], sid)
  unmark(ARGV[4] .. sid)
end
if ARGV[3] == '1' and number and redis.call('SADD', KEYS[4], number) == 0 then
  redis.call('LPUSH', ARGV[2] .. number, ARGV[1])
else
  redis.call('LPUSH', KEYS[2], ARGV[1])
end
redis.call('LREM', KEYS[1], 1, ARGV[1])
return 1
""")

# KEYS: the topic's handled-per-minute hash. ARGV: the minute (seconds // 60), how many finished in it,
# the minutes kept. Adds a worker's count and drops the minutes that fell out of the window; the hash
# never holds more than about an hour of fields, and goes when nobody writes it for two hours.
TALLY = Script("tally", """
local minute, keep = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if tonumber(field) == nil or tonumber(field) <= minute - keep then redis.call('HDEL', KEYS[1], field) end
end
redis.call('EXPIRE', KEYS[1], 7200)
return 1
""")

ALL = (ACCEPT, TAKE, TAKE_MANY, BEGIN, FINISH, FINISH_MANY, RETRY, DUE, REQUEUE, STATUS, PACE, SENT, REPLIES,
       RECLAIM, SWEEP, UNTAKE, HEARTBEAT, PUSH_CAPPED, REQUEUE_ONE, TALLY)
