--- The scheduler: where imgedit waits.
--
-- Every transfer of every client runs on one libcurl multi handle. A
-- coroutine started by `spawn` (or `run`) that waits — for a transfer, for
-- time, for another coroutine, for a free request slot — yields back to the
-- loop, which sleeps in `curl_multi_poll` until a socket is ready or the next
-- timer is due, then resumes whoever can go on. Outside the loop the same
-- calls simply block the thread.
-- @module imgedit.scheduler

local core = require("imgedit.core")

local scheduler = {}

local pack = table.pack or function(...) return { n = select("#", ...), ... } end
local unpack = table.unpack or unpack

--- Longest single wait in curl_multi_poll. curl shortens it for its own
-- timers; this bounds a wait in which nothing at all happens, so a loop with
-- nothing left to wait for is detected in reasonable time.
local MAX_POLL = 1.0

--- What our own waits yield; anything else a coroutine yields is a plain
-- cooperative yield and the coroutine is simply resumed again.
local WAIT = setmetatable({}, { __tostring = function() return "imgedit.wait" end })

local multi
local handles = setmetatable({}, { __mode = "k" }) -- managed coroutine -> Handle
local ready = {}                                   -- queue of {co, args (packed)}
local waiting = {}                                 -- transfer -> coroutine
local timers = {}                                  -- binary heap of {when, seq, co}
local timer_seq = 0
local live = 0                                     -- managed coroutines not yet finished
local driving = false

scheduler.now = core.now

--- The multi handle shared by all clients of this Lua state.
function scheduler.multi()
  if not multi then multi = core.multi() end
  return multi
end

--- The handle of the running coroutine when the loop manages it.
local function current()
  local co = coroutine.running()
  return co and handles[co]
end
scheduler.current = current

local function wake(co, ...)
  ready[#ready + 1] = { co, pack(...) }
end

-- Timers: a binary heap ordered by (when, seq) ------------------------------

local function earlier(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end

local function push_timer(when, co)
  timer_seq = timer_seq + 1
  local heap = timers
  heap[#heap + 1] = { when, timer_seq, co }
  local i = #heap
  while i > 1 do
    local parent = math.floor(i / 2)
    if not earlier(heap[i], heap[parent]) then break end
    heap[i], heap[parent] = heap[parent], heap[i]
    i = parent
  end
end

local function pop_timer()
  local heap = timers
  local top = heap[1]
  local last = heap[#heap]
  heap[#heap] = nil
  local n = #heap
  if n > 0 then
    heap[1] = last
    local i = 1
    while true do
      local l, r, smallest = 2 * i, 2 * i + 1, i
      if l <= n and earlier(heap[l], heap[smallest]) then smallest = l end
      if r <= n and earlier(heap[r], heap[smallest]) then smallest = r end
      if smallest == i then break end
      heap[i], heap[smallest] = heap[smallest], heap[i]
      i = smallest
    end
  end
  return top
end

-- Handles ---------------------------------------------------------------------

local Handle = {}
Handle.__index = Handle

local function finish(handle, ok, ...)
  handle.done = true
  live = live - 1
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

--- Starts `fn(...)` as a coroutine of the loop and returns its handle. It
-- first runs when the loop next turns (inside `run`, or at a `join`).
function scheduler.spawn(fn, ...)
  local co = coroutine.create(fn)
  local handle = setmetatable({ co = co, done = false, joiners = {} }, Handle)
  handles[co] = handle
  live = live + 1
  ready[#ready + 1] = { co, pack(...) }
  return handle
end

-- The loop ---------------------------------------------------------------------

--- Moves the coroutines whose transfers finished to the ready queue.
local function harvest()
  for _, transfer in ipairs(scheduler.multi():done()) do
    local co = waiting[transfer]
    if co then
      waiting[transfer] = nil
      wake(co)
    end
  end
end

local function fire_timers()
  local now = core.now()
  while timers[1] and timers[1][1] <= now do
    wake(pop_timer()[3])
  end
end

--- Turns the loop until `finished()` is true.
local function drive(finished)
  if driving then
    error("imgedit: the scheduler loop is already running; wait with imgedit calls inside it", 3)
  end
  driving = true
  local m = scheduler.multi()
  local ok, problem = pcall(function()
    while not finished() do
      if #ready > 0 then
        local batch = ready
        ready = {}
        for _, entry in ipairs(batch) do resume(entry[1], entry[2]) end
        m:perform() -- start what the resumed coroutines added
        harvest()
      else
        m:perform()
        harvest()
        fire_timers()
        if #ready == 0 and not finished() then
          if not timers[1] and next(waiting) == nil then
            error("imgedit: every coroutine waits for something that cannot happen (a join on itself?)", 0)
          end
          local timeout = MAX_POLL
          if timers[1] then timeout = math.max(0, math.min(timeout, timers[1][1] - core.now())) end
          m:poll(timeout)
        end
      end
    end
  end)
  driving = false
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
      drive(function() return self.done end)
    end
  end
  if self.error ~= nil then return nil, self.error end
  return unpack(self.results, 1, self.results.n)
end

--- Runs `fn(...)` in the loop until it and every coroutine spawned meanwhile
-- have finished; returns `fn`'s results, or raises the error it raised.
-- Inside the loop already, it simply calls `fn`.
function scheduler.run(fn, ...)
  if current() then return fn(...) end
  local handle = scheduler.spawn(fn, ...)
  drive(function() return live == 0 end)
  if handle.error ~= nil then error(handle.error, 0) end
  return unpack(handle.results, 1, handle.results.n)
end

-- Waiting primitives ------------------------------------------------------------

--- Starts a transfer described by `request` (see `imgedit.core`'s Multi:add).
function scheduler.start(request)
  return scheduler.multi():add(request)
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
  local m = scheduler.multi()
  while not transfer:done() do
    m:perform()
    if transfer:done() then break end
    m:poll(MAX_POLL)
  end
  -- finished transfers of the loop's coroutines must still wake them
  harvest()
  return transfer:result()
end

--- Waits `seconds`.
function scheduler.sleep(seconds)
  if current() then
    push_timer(core.now() + math.max(0, seconds), coroutine.running())
    coroutine.yield(WAIT)
    return
  end
  if seconds <= 0 then return end
  local m = scheduler.multi()
  local wake_at = core.now() + seconds
  local left = seconds
  while left > 0 do
    m:poll(left)
    left = wake_at - core.now()
  end
end

--- A counting semaphore: at most `n` holders; the others wait in order.
function scheduler.semaphore(n)
  local held = 0
  local queue, first, last = {}, 1, 0
  local sem = {}
  function sem.acquire()
    if held < n or not current() then
      -- a blocking caller has nobody to wait for: the loop is not turning
      held = held + 1
      return
    end
    last = last + 1
    queue[last] = coroutine.running()
    coroutine.yield(WAIT) -- the releaser hands its place over
  end
  function sem.release()
    if first <= last then
      local co = queue[first]
      queue[first] = nil
      first = first + 1
      wake(co)
    else
      held = held - 1
    end
  end
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
