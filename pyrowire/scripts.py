"""The Lua scripts of pyrowire's queue: every state change a crash must not split is one of them.

These scripts are the one implementation of the queue's semantics. The daemon runs
them on Redis (:mod:`pyrowire.redis_store`); the in-memory store of
:mod:`pyrowire.testing` runs the very same text on fakeredis.

No script re-encodes a message with ``cjson``: Redis's cjson keeps 14 significant
digits of a float and turns ``[]`` into ``{}``, while fakeredis's keeps both, so a
payload that went through cjson would differ between the two and from what the webhook
wrote. Scripts only *read* a payload with ``cjson.decode`` (its sid and sender), and a
payload stays byte for byte what the webhook queued from acceptance to its record.

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


# the common part of TAKE and BEGIN: count the run (before the handler starts) and read the
# conversation's session; the payload is only read, never re-encoded
_BEGIN = """
local function begin(item, runs_key, session_prefix)
  local sid, number = '', nil
  local ok, envelope = pcall(cjson.decode, item)
  if ok and type(envelope) == 'table' and type(envelope['message']) == 'table' then
    local message = envelope['message']
    if type(message['sid']) == 'string' then sid = message['sid'] end
    if type(message['number']) == 'string' then number = message['number'] end
  end
  local runs = redis.call('HINCRBY', runs_key, sid, 1)
  local session = false
  if number then session = redis.call('GET', session_prefix .. number) end
  return {runs, session}
end
"""

# KEYS: seen, queue, active, conv. ARGV: answer, ttl, payload ('' = answer only), conversation
# ('' for a topic that is not ordered). Returns the earlier answer when the MessageSid was seen
# before, else nil. A message of a conversation that is active waits in its conv list.
ACCEPT = Script("accept", """
local prior = redis.call('GET', KEYS[1])
if prior then return prior end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] == '' then return false end
if ARGV[4] ~= '' and redis.call('SADD', KEYS[3], ARGV[4]) == 0 then
  redis.call('LPUSH', KEYS[4], ARGV[3])
else
  redis.call('LPUSH', KEYS[2], ARGV[3])
end
return false
""")

# KEYS: queue, inflight, runs. ARGV: session key prefix.
# Moves the oldest ready message in flight and begins it: {runs, session or nil, payload}; nil
# when nothing is ready (the worker then parks a BLMOVE). The payload comes last: txredisapi's
# reader pauses the connection for a reactor turn after a bulk string with more of the reply
# behind it, so without a session the reply holds one bulk string, at its end.
TAKE = Script("take", _BEGIN + """
local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if not item then return false end
local begun = begin(item, KEYS[3], ARGV[1])
return {begun[1], begun[2], item}
""")

# KEYS: runs. ARGV: session key prefix, payload (moved in flight by BLMOVE). {runs, session or nil}
BEGIN = Script("begin", _BEGIN + """
return begin(ARGV[2], KEYS[1], ARGV[1])
""")

# KEYS: inflight, records, sent, dead, runs, active, conv, queue, session.
# ARGV: payload, record, retention, dead ('1' or ''), sid, conversation ('' if not ordered),
# session change ('', 'set' or 'del'), session JSON, session ttl.
# Records the message (newest first, trimmed to retention). If it was still in this worker's
# in-flight list: forgets its sends and runs, dead-letters it if asked, stores the session, and
# hands the conversation its next message (to the consuming end of the queue) or frees it.
FINISH = Script("finish", """
local held = redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
if held == 0 then return 0 end
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[5], ARGV[5])
if ARGV[4] == '1' then redis.call('LPUSH', KEYS[4], ARGV[1]) end
if ARGV[7] == 'set' then
  redis.call('SET', KEYS[9], ARGV[8], 'EX', ARGV[9])
elseif ARGV[7] == 'del' then
  redis.call('DEL', KEYS[9])
end
if ARGV[6] ~= '' then
  local following = redis.call('RPOP', KEYS[7])
  if following then
    redis.call('RPUSH', KEYS[8], following)
  else
    redis.call('SREM', KEYS[6], ARGV[6])
  end
end
return 1
""")

# KEYS: inflight, errors, schedule. ARGV: payload, record, retention, due (seconds).
# A failed run with attempts left: recorded, and parked until due; its conversation stays active.
RETRY = Script("retry", """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 1
""")

# KEYS: schedule, queue. ARGV: now, at most how many. Moves the messages due by now to the
# consuming end of the queue, the earliest due first in line; returns how many.
DUE = Script("due", """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for i = #due, 1, -1 do
  redis.call('ZREM', KEYS[1], due[i])
  redis.call('RPUSH', KEYS[2], due[i])
end
return #due
""")

# KEYS: dead, queue, runs, active. ARGV: at most how many, conversation key prefix, ordered ('1'/'').
# Moves up to that many dead letters, oldest first, back behind the queue (or behind their
# conversation's current message), with their runs forgotten: max_attempts afresh.
# Returns {moved, dead letters left}.
REQUEUE = Script("requeue", """
local n = 0
while n < tonumber(ARGV[1]) do
  local item = redis.call('RPOP', KEYS[1])
  if not item then break end
  local sid, number = nil, nil
  local ok, envelope = pcall(cjson.decode, item)
  if ok and type(envelope) == 'table' and type(envelope['message']) == 'table' then
    local message = envelope['message']
    if type(message['sid']) == 'string' then sid = message['sid'] end
    if type(message['number']) == 'string' then number = message['number'] end
  end
  if sid then redis.call('HDEL', KEYS[3], sid) end
  if ARGV[3] == '1' and number and redis.call('SADD', KEYS[4], number) == 0 then
    redis.call('LPUSH', ARGV[2] .. number, item)
  else
    redis.call('LPUSH', KEYS[2], item)
  end
  n = n + 1
end
return {n, redis.call('LLEN', KEYS[1])}
""")

# KEYS: sent. ARGV: index, outbound sid, ttl.
SENT = Script("sent", """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
""")

# KEYS: inflight, queue, alive, workers. ARGV: worker id, 'force' or ''.
# Moves the worker's in-flight messages back to the consuming end of the queue, oldest first,
# unless the worker is still alive and this is not forced. Their runs were counted when they
# were taken, so a message that kills every worker taking it still ends as a dead letter; their
# conversations stay active, so they run before their conversations' later messages.
RECLAIM = Script("reclaim", """
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local n = 0
while true do
  local item = redis.call('LPOP', KEYS[1])
  if not item then break end
  redis.call('RPUSH', KEYS[2], item)
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
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
""")

# KEYS: workers, alive. ARGV: worker id, ttl.
HEARTBEAT = Script("heartbeat", """
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

ALL = (ACCEPT, TAKE, BEGIN, FINISH, RETRY, DUE, REQUEUE, SENT, RECLAIM, SWEEP, HEARTBEAT, PUSH_CAPPED)
