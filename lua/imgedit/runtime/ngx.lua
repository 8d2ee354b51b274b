--- The OpenResty runtime: imgedit inside nginx (lua-nginx-module).
--
-- nginx runs one event loop per worker, and a request handler that blocks
-- stops every other request of that worker. libcurl's sockets cannot be
-- handed to that loop, so each worker has one driver: a light thread (an
-- `ngx.timer`, started on first use, started again should it die, ended
-- when the worker exits) that asks the C core's readiness set (epoll,
-- `m:watch_ready()`) which of curl's sockets are ready, with a zero
-- timeout, and lets curl serve those and its due timer (`m:tick()`): a tick
-- costs O(ready sockets), however many transfers are in flight. Between
-- ticks the driver sleeps 1 ms, doubled while nothing is ready, at most
-- 20 ms (never past curl's own timer); it stops while nothing is in flight.
--
-- A request that waits parks on a semaphore of its own (`ngx.semaphore`)
-- and is resumed only when the driver hands it a finished transfer, when a
-- coroutine of its loop becomes ready (a transfer, a release, a join) or
-- when its own timer is due (a poll interval, a back-off, a deadline): no
-- per-request sleep loop, no per-request `perform`. At most M.BURST
-- requests are resumed in one pass of nginx's loop (500 poll intervals that
-- end together would otherwise hold it for tens of ms). A waiter whose light
-- thread was killed (`ngx.thread.kill`, a request that ended) is found by
-- the driver, and what it waited for is closed: no transfer of it runs on.
--
-- In the phases where nginx cannot yield (init, init_worker, set,
-- header/body filters, log, balancer...) a wait blocks the worker in the
-- readiness set (`m:tick(seconds)`), as the blocking runtime does.
--
-- The multi handle (and its connection pool) is shared by the whole worker;
-- each request (`ngx.ctx`) gets its own scheduler loop, so `imgedit.run`,
-- `spawn` and `gather` in concurrent requests do not meet.
-- @module imgedit.runtime.ngx

local IDLE_BLOCKING = require("imgedit.runtime").IDLE
local core = require("imgedit.core")

local M = { name = "ngx" }

--- Shortest and longest sleep of the driver between ticks (seconds).
M.MIN_STEP = 0.001
M.MAX_STEP = 0.020

--- Longest park of a request that has no timer of its own (seconds): a
-- request whose coroutines wait on each other in a cycle, while transfers
-- of other requests keep the worker busy, is still told (imgedit's "every
-- coroutine waits for something that cannot happen").
M.IDLE = 10

--- How often (seconds) the driver looks for waiters whose thread is gone
-- (a look costs a coroutine.status call per parked request).
M.SWEEP = 1

--- The most waiting requests resumed in one pass of nginx's event loop.
M.BURST = 24

--- Phases in which the request may yield to nginx (lua-nginx-module docs).
local YIELDS = {
  rewrite = true, server_rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
  preread = true, -- the stream module
}

--- Phases without `ngx.ctx`: those keep the worker's one loop.
local NO_CONTEXT = { init = true, init_worker = true, exit_worker = true }

--- Counters of this worker (for measurements and specs): the driver's
-- `drivers` (times it was started), `ticks`, `served` (ready sockets and
-- curl timer expiries served); the waiting requests' `parks` (yielding
-- waits), `resumes` (parks ended by the driver: a transfer finished, a
-- coroutine became ready), `timeouts` (parks ended by the request's own
-- timer), `deferred` (resumes put off to a later pass of nginx's loop,
-- beyond M.BURST), `blocking` (waits that could not yield), `swept`
-- (parks of threads found gone).
M.stats = { drivers = 0, ticks = 0, served = 0, parks = 0, resumes = 0, timeouts = 0, deferred = 0, blocking = 0,
  swept = 0 }

-- The worker's driver: the multi handle it ticks, its semaphore (posted
-- when a request starts a transfer while it sleeps), its state, and when
-- it last looked for waiters that are gone (ngx.now()).
local driver = { multi = nil, backend = nil, loop = nil, sem = nil, running = false, sleeping = false,
  swept_at = 0 }

-- Waiters: one record per waiting thread (a request's handler, a light
-- thread, a timer), {sem, and while parked: co, loop, transfer, posted},
-- found by its coroutine; those parked right now, by loop. A record holds
-- its coroutine and loop only while parked: LuaJIT's weak tables are no
-- ephemerons, and a value that refers to its own weak key keeps it alive.
local by_co = setmetatable({}, { __mode = "k" })
local parked = {} -- loop -> {waiter = true}, while one of its waiters is parked
local nparked = 0
local MAIN = {} -- Lua 5.1's main thread, which is no coroutine

--- lua-nginx-module's `ngx` table, or nil outside nginx.
local function api()
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.get_phase) == "function" then return ngx end
  return nil
end

local function phase()
  local ngx = api()
  return ngx and ngx.get_phase()
end

--- True inside nginx: `ngx.get_phase` and `ngx.sleep` exist. Whether a wait
-- may yield is decided at each wait, from the phase it runs in; the runtime
-- is chosen once per worker, and a first use in `init_by_lua` must not pin
-- every later request to the blocking runtime.
function M.detect()
  local ngx = api()
  return ngx ~= nil and type(ngx.sleep) == "function" and ngx.get_phase() ~= nil
end

--- True when a wait in the running phase may yield to nginx.
function M.yieldable()
  return YIELDS[phase()] == true
end

--- The running request's `ngx.ctx` (or the timer's), where the scheduler
-- keeps that request's loop; nil outside a request.
function M.context()
  local p = phase()
  if p == nil or NO_CONTEXT[p] then return nil end
  local ngx = api()
  local ok, ctx = pcall(function() return ngx.ctx end)
  if ok and type(ctx) == "table" then return ctx end
  return nil
end

--- The multi handle of `loop`, switched to the readiness set on first use.
local function multi_of(loop)
  local multi = loop:multi()
  if driver.multi ~= multi then
    driver.backend = assert(multi:watch_ready())
    driver.multi = multi
  end
  return multi
end

--- Whole milliseconds, at least one: nginx's timers count milliseconds, and
-- Debian's nginx (without the delayed-events patch) warns of a zero sleep.
local function ms(seconds)
  return math.max(0.001, math.ceil(seconds * 1000 - 1e-6) / 1000)
end

--- Posts the waiters of `loop` that can go on: the one of a wait for a
-- transfer that is done, any other once the loop has a ready coroutine.
-- The loops' on_ready hook; it runs in the driver, or in the request itself
-- (then nobody of the loop is parked).
local function notify(loop)
  local set = parked[loop]
  if not set then return end
  for w in pairs(set) do
    if not w.posted and (w.transfer and w.transfer:done() or (not w.transfer and loop:has_ready())) then
      w.posted = true
      w.sem:post(1)
    end
  end
end

local function unpark(w)
  local set = parked[w.loop]
  if set and set[w] then
    set[w] = nil
    nparked = nparked - 1
    if next(set) == nil then parked[w.loop] = nil end
  end
  w.co, w.loop, w.transfer = nil, nil, nil
end

--- Closes what the parked waiters whose thread is gone waited for.
local function sweep(now)
  if nparked == 0 or now < driver.swept_at + M.SWEEP then return end
  driver.swept_at = now
  local gone = {}
  for _, set in pairs(parked) do
    for w in pairs(set) do
      -- lua-nginx-module says "dead" of a killed light thread, "running" of
      -- one suspended in an nginx API
      if w.co ~= MAIN and coroutine.status(w.co) == "dead" then gone[#gone + 1] = w end
    end
  end
  for _, w in ipairs(gone) do
    local co, loop, transfer = w.co, w.loop, w.transfer
    unpark(w)
    by_co[co] = nil
    M.stats.swept = M.stats.swept + 1
    loop:abandon(transfer)
  end
end

local start_driver

--- The driver's light thread: ticks while transfers are in flight.
local function drive(premature)
  if premature then
    driver.running = false
    return
  end
  local ngx = api()
  local multi, step = driver.multi, M.MIN_STEP
  local ok, problem = pcall(function()
    while not ngx.worker.exiting() do
      -- nil: the multi handle failed, and its transfers ended with that error
      local served = multi:tick() or 0
      M.stats.ticks = M.stats.ticks + 1
      M.stats.served = M.stats.served + served
      driver.loop:collect()
      local now = ngx.now()
      sweep(now)
      if #multi == 0 then return end
      if served > 0 then step = M.MIN_STEP else step = math.min(step * 2, M.MAX_STEP) end
      local delay, curl_next = step, multi:timer()
      if curl_next and curl_next < delay then delay = curl_next end
      driver.sleeping = true
      driver.sem:wait(ms(delay))
      driver.sleeping = false
    end
  end)
  driver.running, driver.sleeping = false, false
  if not ok then
    ngx.log(ngx.ERR, "imgedit: the curl driver of this worker stopped: ", tostring(problem))
    -- the transfers in flight still need one; a step later, so that a
    -- driver that keeps failing does not spin the worker
    if #multi > 0 then start_driver(M.MAX_STEP) end
  end
end

--- Starts the driver (`delay` seconds on, default 0) unless it runs; true
-- when it runs.
function start_driver(delay)
  local ngx = api()
  if driver.running or ngx.worker.exiting() then return driver.running end
  if not driver.sem then driver.sem = require("ngx.semaphore").new(0) end
  local ok, err = ngx.timer.at(delay or 0, drive)
  if not ok then
    ngx.log(ngx.ERR, "imgedit: cannot start the curl driver of this worker (", tostring(err),
      "): waits block the worker")
    return false
  end
  driver.running = true
  M.stats.drivers = M.stats.drivers + 1
  return true
end

--- A wait that blocks the worker: in the readiness set, serving what is
-- ready (or curl_multi_poll before the first yielding wait set it up).
local function blocking_wait(loop, seconds)
  M.stats.blocking = M.stats.blocking + 1
  local multi = loop:multi()
  if driver.multi == multi then
    multi:tick(seconds or IDLE_BLOCKING)
  else
    multi:poll(seconds or IDLE_BLOCKING)
    multi:perform()
  end
end

--- Lets curl progress: the driver does it (started, or woken when curl
-- wants to act now, as after a transfer was added); where nothing may
-- yield, the request does it itself.
function M.perform(loop)
  if not M.yieldable() then
    local multi = loop:multi()
    if driver.multi == multi then multi:tick() else multi:perform() end
    return
  end
  local multi = multi_of(loop)
  driver.loop = loop
  if not driver.running then
    start_driver()
  elseif driver.sleeping then
    local curl_next = multi:timer()
    if curl_next and curl_next <= M.MIN_STEP then
      driver.sleeping = false
      driver.sem:post(1)
    end
  end
end

--- Whether the running code may yield: not across a C call (a gsub
-- callback, a sort comparator), where a semaphore's wait would fail after
-- it registered the waiter. (OpenResty's coroutine table has no
-- coroutine.isyieldable; the core asks the C API.)
local isyieldable = core.yieldable

--- How far nginx's cached clock lags behind the real one (seconds, >= 0).
-- nginx times a semaphore's wait from that clock, which lags while the
-- worker is busy: a wait of `s` would end that much early, and the rest
-- would cost one more park. (ngx.update_time() would tell too, but it moves
-- the clock `pace` reads in the middle of a pass.) The offset between the
-- wall clock nginx caches and imgedit's monotonic one is taken once, and
-- again should the wall clock be set.
local offset
local function lag()
  local ngx = api()
  local behind = offset and core.now() + offset - ngx.now()
  if not behind or behind < -1 or behind > 1 then
    ngx.update_time()
    offset = ngx.now() - core.now()
    return 0
  end
  return math.max(0, behind)
end

--- Resumes in the current pass of nginx's event loop (its cached clock
-- stands still within a pass): when many waits end at once (500 requests
-- whose poll intervals began together), those beyond M.BURST queue, in
-- order, and a pacer (an ngx.timer, 1 ms on) lets the next M.BURST go on in
-- each later pass, so that nginx serves its other requests in between.
local pass_at, pass_resumes = nil, 0
local queue, head, tail = {}, 1, 0 -- waiters put off, oldest first
local pacing = false                -- the pacer's timer is pending

local function pacer(premature)
  pacing = false
  local ngx = api()
  -- a worker that exits lets everyone go at once
  local budget = premature and math.huge or M.BURST
  pass_at, pass_resumes = ngx.now(), 0
  while head <= tail and pass_resumes < budget do
    local w = queue[head]
    queue[head], head = nil, head + 1
    if w.queued then
      w.queued = false
      pass_resumes = pass_resumes + 1
      w.sem:post(1)
    end
  end
  if head <= tail and not premature then
    pacing = ngx.timer.at(0.001, pacer) and true or false
  end
end

local function pace(w)
  local ngx = api()
  local now = ngx.now()
  if now ~= pass_at then pass_at, pass_resumes = now, 0 end
  pass_resumes = pass_resumes + 1
  -- a queue that is not empty is joined, so that nobody overtakes it
  if pass_resumes <= M.BURST and head > tail then return end
  M.stats.deferred = M.stats.deferred + 1
  tail = tail + 1
  queue[tail], w.queued = w, true
  if not pacing then pacing = ngx.timer.at(0.001, pacer) and true or false end
  -- without a pacer (no timer left), the wait's own time lets it go
  if not w.sem:wait(pacing and M.IDLE or 0.001) and w.queued then
    w.queued = false
  end
end

function M.wait(loop, seconds, transfer)
  if not M.yieldable() or not isyieldable() then return blocking_wait(loop, seconds) end
  -- transfers in flight need the driver; without one, the worker blocks
  if #multi_of(loop) > 0 and not start_driver() then return blocking_wait(loop, seconds) end
  -- a killed thread that waited without a transfer is found here too,
  -- should the driver not run again
  sweep(api().now())
  local co = coroutine.running() or MAIN
  local w = by_co[co]
  if not w then
    w = { sem = require("ngx.semaphore").new(0) }
    by_co[co] = w
  end
  w.co, w.loop, w.transfer, w.posted = co, loop, transfer, false
  local set = parked[loop]
  if not set then
    set = {}
    parked[loop] = set
  end
  set[w] = true
  nparked = nparked + 1
  loop:on_ready(notify)
  M.stats.parks = M.stats.parks + 1
  local ok = w.sem:wait(ms(seconds and seconds + lag() or M.IDLE))
  unpark(w)
  if ok then
    M.stats.resumes = M.stats.resumes + 1
  else
    M.stats.timeouts = M.stats.timeouts + 1
    -- a post that came after the time was up is not left for the next wait
    if w.posted then w.sem:wait(0) end
  end
  pace(w)
end

--- What the worker's runtime holds right now: `{transfers = n (in flight
-- on the multi handle), parked = n (waiting requests), driver = bool,
-- backend = "epoll" or "poll" (nil before the first yielding wait)}`.
function M.state()
  return { transfers = driver.multi and #driver.multi or 0, parked = nparked, driver = driver.running,
    backend = driver.backend }
end

return M
