-- wrk script of bench/ingest.py: POSTs pre-signed Twilio webhooks, each body once.
-- args: FILE NTHREADS. FILE has one "signature<TAB>form body" line per webhook; thread k
-- takes lines k, k+NTHREADS, ... and cycles through them.  done() prints one JSON line
-- starting with "WRK_JSON ".
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local sigs, bodies, n, idx = {}, {}, 0, 0

function init(args)
  local nthreads = tonumber(args[2])
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == tid then
      local tab = line:find("\t", 1, true)
      n = n + 1
      sigs[n] = line:sub(1, tab - 1)
      bodies[n] = line:sub(tab + 1)
    end
    i = i + 1
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  idx = idx + 1
  if idx > n then idx = 1 end
  wrk.headers["X-Twilio-Signature"] = sigs[idx]
  return wrk.format(nil, wrk.path, nil, bodies[idx])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
