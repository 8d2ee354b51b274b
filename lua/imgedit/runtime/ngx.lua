--- The OpenResty runtime: imgedit inside nginx (lua-nginx-module).
--
-- nginx runs one event loop per worker, and a request handler that blocks
-- stops every other request of that worker. libcurl's sockets cannot be
-- handed to that loop, so a wait here is a short `ngx.sleep` (an nginx
-- timer: the request yields, the worker serves others) between non-blocking
-- `curl_multi_perform` calls:
--
-- * nothing in flight in the worker (a task's poll interval, a retry's
--   back-off): one sleep for the whole wait the scheduler asked for;
-- * transfers in flight: sleeps of 1 ms, doubled while nothing changes, at
--   most 20 ms (and never past curl's own next timer), back to 1 ms as soon
--   as a transfer starts or finishes.
--
-- So a response is noticed at most ~20 ms late (~2x late for one that takes
-- a few ms), and a request waiting on a slow transfer wakes at most ~50
-- times a second. In the phases where nginx cannot yield (init, init_worker,
-- set, header/body filters, log, balancer...) a wait blocks the worker in
-- `curl_multi_poll`, as the blocking runtime does.
--
-- The multi handle (and its connection pool) is shared by the whole worker;
-- each request (`ngx.ctx`) gets its own scheduler loop, so `imgedit.run`,
-- `spawn` and `gather` in concurrent requests do not meet.
-- @module imgedit.runtime.ngx

local M = { name = "ngx" }

--- Shortest and longest sleep while transfers are in flight (seconds).
M.MIN_STEP = 0.001
M.MAX_STEP = 0.020

--- Phases in which `ngx.sleep` yields to nginx (lua-nginx-module docs).
local YIELDS = {
  rewrite = true, server_rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
  preread = true, -- the stream module
}

--- Phases without `ngx.ctx`: those keep the worker's one loop.
local NO_CONTEXT = { init = true, init_worker = true, exit_worker = true }

--- Per worker: what the last `perform` saw, and counters for diagnostics.
local running = 0    -- transfers curl still runs, as of the last perform
local generation = 0 -- bumped whenever that number changes

--- Counters of this worker (for measurements and specs): `waits`, `sleeps`
-- (yields to nginx), `blocking` (waits that could not yield), `performs`.
M.stats = { waits = 0, sleeps = 0, blocking = 0, performs = 0 }

-- The backoff of each waiting coroutine (a request's handler, a timer...);
-- MAIN stands for Lua 5.1's main thread, which is no coroutine.
local steps = setmetatable({}, { __mode = "k" })
local MAIN = {}

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

function M.perform(loop)
  local multi = loop:multi()
  M.stats.performs = M.stats.performs + 1
  -- nil when the multi handle failed: its transfers are then done, with that error
  local now_running = multi:perform() or 0
  if now_running ~= running then
    running = now_running
    generation = generation + 1
  end
end

local function blocking_wait(multi, seconds)
  M.stats.blocking = M.stats.blocking + 1
  multi:poll(seconds)
end

function M.wait(loop, seconds)
  local multi = loop:multi()
  M.stats.waits = M.stats.waits + 1
  seconds = math.max(0, seconds or 0)
  if not M.yieldable() then return blocking_wait(multi, seconds) end
  local delay = seconds
  local co = coroutine.running() or MAIN
  if running > 0 then
    local state = steps[co]
    if not state then
      state = { step = M.MIN_STEP, generation = generation }
      steps[co] = state
    elseif state.generation ~= generation then
      state.step, state.generation = M.MIN_STEP, generation
    else
      state.step = math.min(state.step * 2, M.MAX_STEP)
    end
    delay = math.min(delay, state.step)
    local curl_next = multi:timeout()
    if curl_next and curl_next >= 0 then delay = math.min(delay, curl_next) end
  else
    steps[co] = nil
  end
  -- nginx's timers count whole milliseconds: a 0.4 ms rest would be a
  -- zero sleep, and the caller would come back at once for the rest
  delay = math.ceil(delay * 1000 - 1e-6) / 1000
  if delay <= 0 then delay = 0 end
  M.stats.sleeps = M.stats.sleeps + 1
  -- ngx.sleep cannot yield across a C call (a gsub callback, a metamethod):
  -- there the worker waits as the blocking runtime would
  if not pcall(api().sleep, delay) then
    M.stats.sleeps = M.stats.sleeps - 1
    return blocking_wait(multi, delay)
  end
end

return M
