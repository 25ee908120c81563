-- wrk script: POST the same signed push body, each request a NEW delivery.
--
-- Arguments (after `--`): <tag> <headers file> <body file>
--   headers file: one "Name: value" per line (the signature covers the body only)
--   body file:    the raw JSON body
-- X-GitHub-Delivery is not covered by the signature, so it is set per request from the
-- tag, the thread number and a per-thread counter; the body and signature stay fixed.
-- done() prints one `INGEST ...` line that the runner parses.

local threads = {}
local headers = {}
local counter = 0
-- globals, so that done() can read them from each thread with thread:get()
accepted = 0
rejected = 0

local function read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function setup(thread)
  thread:set("thread_no", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  tag = args[1]
  for line in read(args[2]):gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  wrk.method = "POST"
  wrk.body = read(args[3])
end

function request()
  counter = counter + 1
  headers["X-GitHub-Delivery"] = string.format("%s-%d-%d", tag, thread_no, counter)
  return wrk.format(nil, nil, headers, nil)
end

function response(status, hdrs, body)
  if status == 202 then
    accepted = accepted + 1
  else
    rejected = rejected + 1
  end
end

function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("accepted")
    bad = bad + thread:get("rejected")
  end
  local e = summary.errors
  io.write(string.format(
    "INGEST requests=%d duration_us=%d accepted=%d rejected=%d connect=%d read=%d "
      .. "write=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, ok, bad, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max
  ))
end
