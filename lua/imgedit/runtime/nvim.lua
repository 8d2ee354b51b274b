--- The Neovim runtime: the editor's libuv loop drives imgedit.
--
-- `imgedit.async(fn)` starts `fn` as a coroutine and returns at once; the
-- editor goes on while the coroutine's waits are served by the editor's own
-- event loop (`vim.uv`, `vim.loop` before Neovim 0.10):
--
-- * The shared multi handle is socket-driven (`m:watch()`): curl reports the
--   sockets it needs watched and when it next wants to be called, and the
--   runtime keeps one libuv poll handle per socket and one libuv timer, due
--   at the earlier of curl's timeout and the scheduler's next timer (a
--   `sleep`, a polling delay). Nothing wakes the editor otherwise: there is
--   no polling timer, and when nothing is under way no handle is left open.
-- * libuv callbacks run in Neovim's "fast" context, where most of `vim.api`
--   is off limits. They only let curl work (`m:socket_action`) and move the
--   coroutines that can go on to the ready queue; the coroutines themselves
--   run in a `vim.schedule` callback, so the code given to `imgedit.async`
--   may call `vim.api`, `vim.notify` and the like freely.
--
-- A waiting call made outside any coroutine (a plain `fox:edit{}` in a
-- mapping, `imgedit.run`, `handle:join()`) still works, but blocks in
-- `curl_multi_poll` until it is done: the editor freezes meanwhile. Plugins
-- use `imgedit.async`.
-- @module imgedit.runtime.nvim

-- luacheck: globals vim

local IDLE = require("imgedit.runtime").IDLE

local nvim = { name = "nvim" }

--- Counters (for measurements and specs): `turns` (vim.schedule callbacks
-- that turned the loop), `timers` (the libuv timer firing), `sockets`
-- (socket readiness callbacks). Each is a time the editor woke imgedit up.
nvim.stats = { turns = 0, timers = 0, sockets = 0 }

local uv           -- vim.uv or vim.loop, known once running in Neovim

local loop         -- the scheduler loop the editor turns (the one of this Lua state)
local multi        -- its socket-driven multi handle
local polls = {}   -- fd -> libuv poll handle, for the sockets curl watches
local timer        -- the one libuv timer, while something needs it
local scheduled = false -- a turn is queued with vim.schedule
local turning = false   -- a turn is running

--- Curl's timer counts as due this close to its time: a libuv timer fires
-- on a millisecond clock, so up to a millisecond early.
local EARLY = 0.001

local EVENTS = { ["in"] = "r", out = "w", inout = "rw" }

function nvim.detect()
  return type(vim) == "table" and type(vim.schedule) == "function" and (vim.uv or vim.loop) ~= nil
end

local sync

--- Serves curl's timer if it is due.
local function serve_timeout()
  local due = multi:timer()
  if due and due <= EARLY then multi:socket_action() end
end

--- A turn of the loop, in a vim.schedule callback (not a fast context):
-- resumes the coroutines that can go on, then watches what is left to wait
-- for.
local function turn()
  scheduled = false
  nvim.stats.turns = nvim.stats.turns + 1
  if turning or loop:busy() then
    -- an event processed inside a step (a coroutine in vim.wait) or inside
    -- a blocking wait in the editor: whoever turns the loop now looks at
    -- the ready queue once it is done
    return
  end
  turning = true
  local ok, problem = pcall(loop.turn, loop)
  -- the turn may have started transfers: let curl see them now, and hand
  -- over any that finished at once
  if ok then ok, problem = pcall(serve_timeout) end
  if ok then ok, problem = pcall(loop.collect, loop) end
  turning = false
  if loop:has_ready() then nvim.kick() end
  sync()
  if not ok then error(problem, 0) end
end

--- Queues a turn (the Loop's on_ready hook, and any callback that woke a
-- coroutine or found a scheduler timer due).
function nvim.kick()
  if scheduled then return end
  scheduled = true
  vim.schedule(turn)
end

--- What every libuv callback does after curl has worked: hands finished
-- transfers to their coroutines (which queues a turn), queues one for due
-- scheduler timers too, and re-arms.
local function after_curl()
  loop:collect()
  local left = loop:next_due()
  if loop:has_ready() or (left and left <= EARLY) then nvim.kick() end
  sync()
end

local function on_timer()
  nvim.stats.timers = nvim.stats.timers + 1
  serve_timeout()
  after_curl()
end

-- libuv's poll events ("r", "w", "rw", with "d" or "p" on some versions) as
-- the events of m:socket_action.
local function curl_events(err, events)
  if err or not events then return "err" end
  local mask = ""
  if events:find("r", 1, true) or events:find("d", 1, true) or events:find("p", 1, true) then
    mask = "in"
  end
  if events:find("w", 1, true) then mask = mask .. "out" end
  return mask
end

local function poll_callback(fd)
  return function(err, events)
    nvim.stats.sockets = nvim.stats.sockets + 1
    multi:socket_action(fd, curl_events(err, events))
    after_curl()
  end
end

local function close_poll(fd)
  local handle = polls[fd]
  if handle then
    polls[fd] = nil
    handle:stop()
    if not handle:is_closing() then handle:close() end
  end
end

--- Brings the libuv handles in line with what curl and the loop wait for.
function sync()
  for _, change in ipairs(multi:socket_changes()) do
    local fd, what = change[1], change[2]
    if what == "remove" then
      close_poll(fd)
    else
      local handle = polls[fd]
      if not handle then
        handle = assert(uv.new_socket_poll(fd))
        polls[fd] = handle
      end
      handle:start(EVENTS[what], poll_callback(fd))
    end
  end

  -- curl's timer, and the scheduler's unless a turn is queued anyway (the
  -- turn wakes what is due, and syncs again)
  local wait = multi:timer()
  if not scheduled then
    local next_timer = loop:next_due()
    if next_timer and (not wait or next_timer < wait) then wait = next_timer end
    -- in the middle of a turn of a blocking wait in the editor, coroutines
    -- may still be woken: look again once the wait is over. (A turn of
    -- ours ends with a sync of its own instead.)
    if loop:busy() and not turning then wait = 0 end
  end
  if wait then
    if not timer then timer = uv.new_timer() end
    -- at least 1 ms: libuv runs a timer re-armed for 0 ms from its own
    -- callback again at once, without returning to the loop
    timer:start(math.max(1, math.ceil(wait * 1000)), 0, on_timer)
  elseif timer then
    -- idle: nothing left to time
    timer:stop()
    timer:close()
    timer = nil
  end
end

--- Makes the loop's multi handle socket-driven and starts watching it (once).
local function attach(l)
  loop = l
  local m = l:multi()
  if multi == m then return end
  if multi ~= nil then
    -- a new multi handle: let go of the old one's sockets
    for fd in pairs(polls) do close_poll(fd) end
  end
  uv = vim.uv or vim.loop
  multi = m
  m:watch()
end

--- Lets curl progress without blocking: serves its timer when due. Socket
-- readiness is served by the poll handles as it happens.
function nvim.perform(l)
  attach(l)
  serve_timeout()
  sync()
end

--- A blocking wait, for waiting calls made outside any coroutine: sleeps in
-- curl_multi_poll (the editor freezes), then serves every socket and the
-- timer.
function nvim.wait(l, seconds)
  attach(l)
  sync()
  multi:poll(seconds or IDLE)
  local fds = {}
  for fd in pairs(polls) do fds[#fds + 1] = fd end
  for _, fd in ipairs(fds) do multi:socket_action(fd) end
  serve_timeout()
  sync()
end

--- The editor's loop turns `l` from now on (imgedit.async).
function nvim.start(l)
  attach(l)
  l:on_ready(nvim.kick)
  if l:has_ready() then nvim.kick() end
  sync()
end

--- The libuv handles open right now: `{polls = n, timer = true|false}`.
function nvim.handles()
  local n = 0
  for _ in pairs(polls) do n = n + 1 end
  return { polls = n, timer = timer ~= nil }
end

return nvim
