"""The Lua scripts of pyrowire's queue: every state change a crash must not split is one of them.

These scripts are the one implementation of the queue's semantics. The daemon runs
them on Redis (:mod:`pyrowire.redis_store`); the in-memory store of
:mod:`pyrowire.testing` runs the very same text on fakeredis.

No script decodes and re-encodes a message with ``cjson``: Redis's cjson keeps 14
significant digits of a float and turns ``[]`` into ``{}``, while fakeredis's keeps
both, so a payload that went through cjson would differ between the two and from
what the webhook wrote. The count of interrupted runs is kept as text at the head of
the envelope instead (:mod:`pyrowire.envelope`), and everything after it is left
byte for byte as it was.
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


# KEYS: seen, queue. ARGV: answer, ttl, payload ('' = answer only, nothing queued).
# Returns the earlier answer when the MessageSid was seen before, else nil.
ACCEPT = Script("accept", """
local prior = redis.call('GET', KEYS[1])
if prior then return prior end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] ~= '' then redis.call('LPUSH', KEYS[2], ARGV[3]) end
return false
""")

# KEYS: inflight, records, sent, dead. ARGV: payload, record, retention, dead ('1' or '').
# Drops the message from in-flight, records it, forgets its sends; a dead message is also
# kept whole in the dead-letter list (never trimmed: nothing is dropped silently).
FINISH = Script("finish", """
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('DEL', KEYS[3])
if ARGV[4] == '1' then redis.call('LPUSH', KEYS[4], ARGV[1]) end
return 1
""")

# KEYS: dead, queue. Moves every dead letter to the back of the queue, oldest first, with
# its count of interrupted runs removed: a re-queued message gets max_attempts afresh.
REQUEUE = Script("requeue", """
local n = 0
while true do
  local item = redis.call('RPOP', KEYS[1])
  if not item then break end
  item = (string.gsub(item, '^{"attempts": %d+, ', '{', 1))
  redis.call('LPUSH', KEYS[2], item)
  n = n + 1
end
return n
""")

# KEYS: sent. ARGV: index, outbound sid, ttl.
SENT = Script("sent", """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
""")

# KEYS: inflight, queue, alive, workers. ARGV: worker id, 'force' or ''.
# Moves the worker's in-flight messages back to the consuming end of the queue, oldest
# first, unless the worker is still alive and this is not forced. A dead worker's messages
# may have been started: each counts one interrupted run (the envelope's leading
# "attempts"), so a message that kills every worker that takes it still ends as a dead letter.
RECLAIM = Script("reclaim", """
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local n = 0
while true do
  local item = redis.call('LPOP', KEYS[1])
  if not item then break end
  if ARGV[2] ~= 'force' then
    local runs, rest = string.match(item, '^{"attempts": (%d+), (.*)$')
    if runs then
      item = '{"attempts": ' .. (tonumber(runs) + 1) .. ', ' .. rest
    elseif string.sub(item, 1, 2) == '{"' then
      item = '{"attempts": 1, ' .. string.sub(item, 2)
    end
  end
  redis.call('RPUSH', KEYS[2], item)
  n = n + 1
end
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[3])
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

ALL = (ACCEPT, FINISH, REQUEUE, SENT, RECLAIM, HEARTBEAT, PUSH_CAPPED)
