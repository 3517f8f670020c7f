-- wrk script: the feed scenario of loadtest/k6/feed.js, for the benchmark (loadtest/bench).
-- Tenants demo-a (70 %) and demo-b (30 %); users: a hot set of 20 % of the demo users takes
-- 80 % of the requests, the rest spread over the long tail, 5 % are never-seen users;
-- limit mostly 20. Optional pacing: `-- <requests per second per wrk thread>` turns the
-- closed loop into a fixed arrival rate (as far as wrk can; see delay() and loadtest/README.md).
--
--   wrk -t1 -c16 -d10s -s loadtest/wrk/feed.lua http://127.0.0.1:8080 [-- <rate per thread>]
--
-- With EAGLERANK_BENCH_TARGET=healthz it sends GET /healthz instead: the HTTP floor.

local tenants = {
  { id = "demo-a", key = "er_demo_a_7Qk2mV9xLp4sT8wZ", weight = 0.7 },
  { id = "demo-b", key = "er_demo_b_3Hn6rB1yKc5dF0jU", weight = 0.3 },
}
local users = tonumber(os.getenv("EAGLERANK_BENCH_USERS") or "2000")
local limits = { 20, 20, 20, 20, 20, 20, 10, 50 }
local interval_ms = 0
local counter = 0

-- A wall clock in ms (wrk's Lua is LuaJIT: its FFI reaches clock_gettime).
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } eaglerank_timespec;
  int clock_gettime(int clock, eaglerank_timespec *t);
]]
local ts = ffi.new("eaglerank_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local next_slot = nil

function init(args)
  if args[1] ~= nil and tonumber(args[1]) > 0 then
    interval_ms = 1000 / tonumber(args[1])
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

-- A fixed arrival rate for the whole thread, like k6's constant-arrival-rate: each request
-- takes the next slot of an evenly spaced schedule, whichever connection is free. (Pacing
-- each connection instead keeps the connections in lockstep: the rate then arrives as bursts
-- of one request per connection, and the burst's queueing, not the service, sets the tail.)
-- When every connection is busy the schedule slips (wrk is closed-loop; loadtest/README.md).
function delay()
  if interval_ms == 0 then return 0 end
  local now = now_ms()
  if next_slot == nil or next_slot < now - 1000 then next_slot = now end
  local wait = next_slot - now
  next_slot = next_slot + interval_ms
  if wait < 0 then return 0 end
  return wait
end

local function pick_user()
  local r = math.random()
  if r < 0.05 then
    counter = counter + 1
    return "bench-new-" .. math.random(1, 1e9) .. "-" .. counter
  elseif r < 0.81 then
    return "u" .. math.random(0, math.floor(users * 0.2) - 1)
  else
    return "u" .. math.random(math.floor(users * 0.2), users - 1)
  end
end

local healthz = os.getenv("EAGLERANK_BENCH_TARGET") == "healthz"

function request()
  if healthz then return wrk.format("GET", "/healthz") end
  local t = tenants[1]
  if math.random() > tenants[1].weight then t = tenants[2] end
  local path = "/v1/tenants/" .. t.id .. "/feed?user_id=" .. pick_user()
    .. "&limit=" .. limits[math.random(1, #limits)]
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. t.key })
end

-- One JSON line with the run's figures (latencies in microseconds).
function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
