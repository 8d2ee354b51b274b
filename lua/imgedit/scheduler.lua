--- The scheduler: where imgedit waits.
--
-- Every transfer of every client runs on one libcurl multi handle. A
-- coroutine started by `spawn` (or `run`) that waits — for a transfer, for
-- time, for another coroutine, for a free request slot — yields back to its
-- loop, which resumes whoever can go on once a transfer finishes or a timer
-- is due. How a loop waits for that is the runtime's business
-- (`imgedit.runtime`): block in `curl_multi_poll`, yield to nginx, or return
-- to Neovim's event loop. Outside a loop the same calls simply wait in place.
--
-- What a runtime may use of a loop (the loop is handed to each runtime
-- function; nothing else of the scheduler is a runtime's business):
--
--   loop:multi()      the curl multi handle (imgedit.core) of the loop
--   loop:turn()       one turn that never blocks: resumes every coroutine
--                     that can go on, then hands finished transfers to
--                     their waiters and wakes those whose timers are due
--                     (they run at the next turn)
--   loop:collect()    hands finished transfers to their waiters (after curl
--                     progressed in a host's callback); wakes them
--   loop:has_ready()  a coroutine can go on now
--   loop:next_due()   seconds until the loop's next timer (0: overdue), or nil
--   loop:busy()       a turn or a drive of the loop is under way
--   loop:on_ready(fn) fn(loop) runs when a coroutine becomes ready outside
--                     a turn, or a transfer awaited outside any coroutine
--                     finishes (nil: nobody to tell)
--   loop:abandon(t)   whoever waited on the loop is gone (an nginx light
--                     thread killed): closes transfer `t` (a wait outside
--                     any coroutine), or, without `t`, every transfer the
--                     loop's coroutines wait for, gives back the semaphore
--                     places they held, and forgets them and the loop's
--                     timers
-- @module imgedit.scheduler

local core = require("imgedit.core")
local heap = require("imgedit.heap")
local runtime = require("imgedit.runtime")

local scheduler = {}

local pack = table.pack or function(...) return { n = select("#", ...), ... } end
local unpack = table.unpack or unpack

--- What our own waits yield; anything else a coroutine yields is a plain
-- cooperative yield and the coroutine is simply resumed again.
local WAIT = setmetatable({}, { __tostring = function() return "imgedit.wait" end })

local multi
local handles = setmetatable({}, { __mode = "k" }) -- managed coroutine -> Handle
-- every semaphore, to give back the places that coroutines of an abandoned
-- loop held (weak: a semaphore nobody uses goes)
local semaphores = setmetatable({}, { __mode = "k" })
-- transfer -> the coroutine waiting for it, or the loop of a wait outside
-- any coroutine (scheduler.await)
local waiting = {}

scheduler.now = core.now

--- The multi handle shared by all clients of this Lua state.
function scheduler.multi()
  if not multi then multi = core.multi() end
  return multi
end

--- The handle of the running coroutine when a loop manages it.
local function current()
  local co = coroutine.running()
  return co and handles[co]
end

-- Loops --------------------------------------------------------------------------
--
-- A loop owns a ready queue and timers. There is one per Lua state, except
-- where the runtime gives each context its own (one per nginx request, so
-- that a request's coroutines only ever run inside that request).

local Loop = {}
Loop.__index = Loop

local function new_loop()
  return setmetatable({ ready = {}, timers = {}, timer_seq = 0, live = 0, driving = false, turning = false },
    Loop)
end

local global_loop = new_loop()

--- The loop of the running context.
function scheduler.loop()
  local context = runtime.current().context
  if not context then return global_loop end
  local store = context()
  if not store then return global_loop end
  local loop = store.imgedit_loop
  if not loop then
    loop = new_loop()
    store.imgedit_loop = loop
  end
  return loop
end

--- Queues `co` to be resumed (with the given values) at the loop's next turn.
function Loop:wake(co, ...)
  local ready = self.ready
  ready[#ready + 1] = { co, pack(...) }
  if #ready == 1 and self.ready_hook and not self.turning then self.ready_hook(self) end
end

--- Queues `co` on its own loop; a coroutine of an abandoned loop
-- (loop:abandon) is no longer managed and gets no turn.
local function wake(co, ...)
  local handle = handles[co]
  if handle then handle.loop:wake(co, ...) end
end

-- Timers: a heap of {at, seq, co}; a timer whose sleep was cut short has
-- lost its `co` and is dropped when it comes up.

function Loop:push_timer(at, co)
  self.timer_seq = self.timer_seq + 1
  local timer = { at = at, seq = self.timer_seq, co = co }
  heap.push(self.timers, timer)
  return timer
end

--- The multi handle the loop's transfers run on (shared by every loop of
-- the Lua state, with its connection pool).
function Loop:multi() -- luacheck: ignore 212/self (a method: runtimes call it on the loop)
  return multi or scheduler.multi()
end

--- Seconds until the loop's next timer is due (0 when overdue), or nil.
function Loop:next_due()
  local timers = self.timers
  while timers[1] and not timers[1].co do heap.pop(timers) end
  local top = timers[1]
  return top and math.max(0, top.at - core.now()) or nil
end

function Loop:has_ready()
  return #self.ready > 0
end

function Loop:busy()
  return self.turning or self.driving
end

function Loop:on_ready(fn)
  self.ready_hook = fn
end

function Loop:abandon(transfer)
  if transfer then
    waiting[transfer] = nil
    transfer:close()
    return
  end
  for t, co in pairs(waiting) do
    if type(co) == "thread" and handles[co] and handles[co].loop == self then
      waiting[t] = nil
      t:close()
    end
  end
  local gone = {}
  for co, handle in pairs(handles) do
    if handle.loop == self then gone[co] = true end
  end
  for co in pairs(gone) do handles[co] = nil end
  for sem in pairs(semaphores) do sem.forsake(gone) end
  self.ready, self.timers, self.live = {}, {}, 0
  self.driving, self.turning = false, false
end

-- Handles ---------------------------------------------------------------------------

local Handle = {}
Handle.__index = Handle

local function finish(handle, ok, ...)
  handle.done = true
  handle.loop.live = handle.loop.live - 1
  if handle.group then handle.group.live = handle.group.live - 1 end
  if ok then
    handle.results = pack(...)
  else
    local message = ...
    -- the traceback of the coroutine that died, not of the loop
    if type(message) == "string" or type(message) == "number" then
      message = debug.traceback(handle.co, tostring(message))
    end
    handle.error = message
  end
  for _, co in ipairs(handle.joiners) do wake(co) end
  handle.joiners = {}
end

local function resume(co, args)
  local handle = handles[co]
  local result = pack(coroutine.resume(co, unpack(args, 1, args.n)))
  if coroutine.status(co) == "dead" then
    finish(handle, unpack(result, 1, result.n))
  elseif result[2] ~= WAIT then
    wake(co) -- a yield of the user's own: carry on at the next turn
  end
end

--- Starts `fn(...)` as a coroutine of `group` (what a `run` waits for) on
-- the running context's loop, and returns its handle.
local function spawn_in(group, fn, ...)
  local loop = scheduler.loop()
  local co = coroutine.create(fn)
  local handle = setmetatable({ co = co, loop = loop, done = false, joiners = {}, group = group }, Handle)
  handles[co] = handle
  loop.live = loop.live + 1
  if group then group.live = group.live + 1 end
  loop:wake(co, ...)
  return handle
end

--- Starts `fn(...)` as a coroutine of the running context's loop and returns
-- its handle. It first runs when that loop next turns. A coroutine started
-- from another belongs to that one's `run`; one started outside any is
-- nobody's: no `run` waits for it.
function scheduler.spawn(fn, ...)
  local parent = current()
  return spawn_in(parent and parent.group, fn, ...)
end

-- Turning a loop ------------------------------------------------------------------

--- Moves the coroutines whose transfers finished to their loops' queues
-- (of every loop: the multi handle is shared).
function Loop:collect() -- luacheck: ignore 212/self (the multi handle is every loop's)
  local done = (multi or scheduler.multi()):done()
  for i = 1, #done do
    local waiter = waiting[done[i]]
    if waiter then
      waiting[done[i]] = nil
      if type(waiter) == "thread" then
        wake(waiter)
      elseif waiter.ready_hook then
        waiter.ready_hook(waiter)
      end
    end
  end
end

function Loop:turn()
  self.turning = true
  local ok, problem = pcall(function()
    local ready = self.ready
    if #ready > 0 then
      self.ready = {}
      for _, entry in ipairs(ready) do resume(entry[1], entry[2]) end
    end
    self:collect()
    local now, timers = core.now(), self.timers
    while timers[1] and timers[1].at <= now do
      local timer = heap.pop(timers)
      if timer.co then self:wake(timer.co) end
    end
  end)
  self.turning = false
  if not ok then error(problem, 0) end
end

--- Turns the loop until `finished()` is true, waiting the runtime's way.
function Loop:drive(finished)
  if self.driving then
    error("imgedit: this scheduler loop is already running; wait with imgedit calls inside it", 3)
  end
  self.driving = true
  local rt = runtime.current()
  local ok, problem = pcall(function()
    while not finished() do
      self:turn()
      -- what the turn started goes on the wire at once
      rt.perform(self)
      self:collect()
      if #self.ready == 0 and not finished() then
        local due = self:next_due()
        if not due and next(waiting) == nil then
          error("imgedit: every coroutine waits for something that cannot happen (a join on itself?)", 0)
        end
        -- without a timer of the loop's own (nil), until something happens
        rt.wait(self, due)
      end
    end
  end)
  self.driving = false
  if not ok then error(problem, 0) end
end

--- Waits for the coroutine to finish and returns its results; a coroutine
-- that raised an error gives `nil, message` (with its traceback).
function Handle:join()
  if getmetatable(self) ~= Handle then
    error("bad argument #1 to 'join' (imgedit handle expected, got " .. type(self) .. "); call it as h:join()", 2)
  end
  if not self.done then
    if current() then
      if current() == self then error("imgedit: a coroutine cannot join itself", 2) end
      self.joiners[#self.joiners + 1] = coroutine.running()
      coroutine.yield(WAIT)
    else
      self.loop:drive(function() return self.done end)
    end
  end
  if self.error ~= nil then return nil, self.error end
  return unpack(self.results, 1, self.results.n)
end

--- Runs `fn(...)` in the loop until it and every coroutine it spawned (and
-- they spawned) have finished; returns `fn`'s results, or raises the error it raised.
-- Inside the loop already, it simply calls `fn`.
function scheduler.run(fn, ...)
  if current() then return fn(...) end
  -- what this run started, and nothing else (an unjoined spawn made
  -- outside any run keeps no later run open)
  local group = { live = 0 }
  local handle = spawn_in(group, fn, ...)
  handle.loop:drive(function() return group.live == 0 end)
  if handle.error ~= nil then error(handle.error, 0) end
  return unpack(handle.results, 1, handle.results.n)
end

-- Waiting primitives ------------------------------------------------------------

--- Starts a transfer of `session` described by `request` (see
-- `imgedit.core`'s m:add); returns it, or nil and a message.
function scheduler.start(session, request)
  return (multi or scheduler.multi()):add(session, request)
end

--- Waits until `transfer` is done and returns its result table.
function scheduler.await(transfer)
  if current() then
    if not transfer:done() then
      waiting[transfer] = coroutine.running()
      coroutine.yield(WAIT)
    end
    return transfer:result()
  end
  local rt = runtime.current()
  local loop = rt.context and scheduler.loop() or global_loop
  rt.perform(loop)
  while not transfer:done() do
    -- whoever collects the transfer tells the loop (its on_ready hook)
    waiting[transfer] = loop
    rt.wait(loop, nil, transfer)
    rt.perform(loop)
  end
  waiting[transfer] = nil
  -- the loops' coroutines whose transfers finished meanwhile are woken (they
  -- run at their loop's next turn, which cannot come before this returns)
  loop:collect()
  return transfer:result()
end

--- An alarm: `scheduler.sleep(seconds, alarm)` sleeps until the time is up
-- or `alarm:ring()`, whichever comes first.
local Alarm = {}
Alarm.__index = Alarm

function scheduler.alarm()
  return setmetatable({}, Alarm)
end

--- Ends the sleep waiting on this alarm now (nothing when none waits).
function Alarm:ring()
  local timer = self.timer
  if timer and timer.co then
    local co = timer.co
    timer.co, self.timer = nil, nil
    wake(co)
  end
end

--- Waits `seconds` (less when `alarm` rings meanwhile, inside a loop).
function scheduler.sleep(seconds, alarm)
  if current() then
    local timer = current().loop:push_timer(core.now() + math.max(0, seconds), coroutine.running())
    if alarm then alarm.timer = timer end
    coroutine.yield(WAIT)
    timer.co = nil
    if alarm and alarm.timer == timer then alarm.timer = nil end
    return
  end
  local loop = scheduler.loop()
  local rt = runtime.current()
  local wake_at = core.now() + seconds
  local left = seconds
  while left > 0 do
    rt.wait(loop, left)
    left = wake_at - core.now()
  end
end

--- A counting semaphore: at most `n` holders; the others wait in order.
function scheduler.semaphore(n)
  local held = 0
  local queue, first, last = {}, 1, 0
  -- managed coroutine -> places it holds (weak: its numbers do not keep it)
  local holders = setmetatable({}, { __mode = "k" })
  local sem = {}

  -- A place is free: it goes to the first waiter still managed (one of an
  -- abandoned loop would keep it for ever), or back to the pool.
  local function hand_over()
    while first <= last do
      local co = queue[first]
      queue[first] = nil
      first = first + 1
      if handles[co] then
        holders[co] = (holders[co] or 0) + 1
        wake(co)
        return
      end
    end
    held = held - 1
  end

  function sem.acquire()
    local co = current() and coroutine.running()
    if held < n or not co then
      -- a caller outside any loop has nobody to wait for
      held = held + 1
      if co then holders[co] = (holders[co] or 0) + 1 end
      return
    end
    last = last + 1
    queue[last] = co
    coroutine.yield(WAIT) -- the releaser hands its place over
  end

  function sem.release()
    local co = coroutine.running()
    local mine = co and holders[co]
    if mine then holders[co] = mine > 1 and mine - 1 or nil end
    hand_over()
  end

  --- Gives back the places held by the coroutines of `gone` (a set).
  function sem.forsake(gone)
    for co in pairs(gone) do
      for _ = 1, holders[co] or 0 do hand_over() end
      holders[co] = nil
    end
  end

  semaphores[sem] = true
  return sem
end

--- Runs every function of `fns` as a coroutine, at most `concurrency` at a
-- time, and returns their outcomes in order: `{ok = true, value = v, values =
-- {...}}`, or `{ok = false, err = e}` for a function that returned `nil, e`
-- or raised `e`.
function scheduler.gather(fns, concurrency)
  if not current() then return scheduler.run(scheduler.gather, fns, concurrency) end
  local n = #fns
  local outcomes = {}
  local taken = 0
  local function worker()
    while taken < n do
      taken = taken + 1
      local i = taken
      local handle = scheduler.spawn(fns[i])
      local values = pack(handle:join())
      if handle.error ~= nil then
        outcomes[i] = { ok = false, err = handle.error }
      elseif values[1] == nil and values[2] ~= nil then
        outcomes[i] = { ok = false, err = values[2] }
      else
        outcomes[i] = { ok = true, value = values[1], values = values }
      end
    end
  end
  local workers = {}
  for w = 1, math.min(concurrency or n, n) do workers[w] = scheduler.spawn(worker) end
  for _, handle in ipairs(workers) do
    local ok, problem = handle:join()
    if ok == nil and problem ~= nil then error(problem, 0) end
  end
  return outcomes
end

return scheduler
