--- The scheduler: where imgedit waits.
--
-- Every transfer of every client runs on one libcurl multi handle. Waiting
-- for a transfer or for time to pass goes through this module, so that the
-- way of waiting (block the thread, yield a coroutine to a loop) is decided in
-- one place.
-- @module imgedit.scheduler

local core = require("imgedit.core")

local scheduler = {}

local multi

--- The multi handle shared by all clients of this Lua state.
function scheduler.multi()
  if not multi then multi = core.multi() end
  return multi
end

scheduler.now = core.now

--- Longest single wait in curl_multi_poll: curl shortens it itself when it
-- has an earlier timer, so this only bounds how long a wait lasts when
-- nothing happens at all.
local MAX_POLL = 1.0

--- Starts a transfer described by `request` (see `imgedit.core`'s Multi:add).
function scheduler.start(request)
  return scheduler.multi():add(request)
end

--- Waits until `transfer` is done and returns its result table.
function scheduler.await(transfer)
  local m = scheduler.multi()
  while not transfer:done() do
    m:perform()
    if transfer:done() then break end
    m:poll(MAX_POLL)
  end
  -- finished transfers are also queued for a loop that drives many waiters;
  -- a blocking wait has no use for the queue, so it is drained here
  m:done()
  return transfer:result()
end

--- Waits `seconds`.
function scheduler.sleep(seconds)
  if seconds <= 0 then return end
  local m = scheduler.multi()
  local wake = core.now() + seconds
  local left = seconds
  while left > 0 do
    m:poll(left)
    left = wake - core.now()
  end
end

return scheduler
