--- Runtimes: how imgedit waits in the host program.
--
-- A runtime is a table with
--   name               "blocking", "nvim", "ngx", or a host's own
--   perform(loop)      lets curl progress without blocking (loop:multi())
--   wait(loop, s, t)   waits at most `s` seconds for something to happen,
--                      letting the host run meanwhile where it has a loop;
--                      `s` is nil when the loop has no timer of its own
--                      (wait until something happens: a runtime that is
--                      not told bounds the wait itself, runtime.IDLE), and
--                      `t` the transfer a wait outside any coroutine is for
--                      (the loop's on_ready hook runs when it finishes)
--   context()          optional: a table private to the running context
--                      (an nginx request) to keep that context's loop in
--   detect()           optional: true when running inside that host
--   start(loop)        optional: the host's own event loop turns `loop`
--                      from now on (imgedit.async); without it, coroutines
--                      run when something waits on the loop (join, run)
-- `loop` is a scheduler loop, and its methods (turn, collect, has_ready,
-- next_due, busy, on_ready, multi: see imgedit.scheduler) are all a
-- runtime uses of imgedit. `imgedit.runtime(name)` picks one of the
-- built-in runtimes, `imgedit.runtime(table)` a host's own (copas,
-- cqueues, bare luv: one file outside the library); by default the first
-- whose detect() is true at first use (ngx, then nvim), else "blocking".
-- @module imgedit.runtime

local runtime = {}

--- The runtimes, in the order they are detected.
runtime.NAMES = { "ngx", "nvim", "blocking" }

--- Longest wait (seconds) of a runtime that is not woken when a transfer
-- ends or a coroutine becomes ready (curl_multi_poll wakes for its own
-- sockets only): it bounds a wait without a timer, so that a loop left with
-- nothing to wait for is found in reasonable time.
runtime.IDLE = 1.0

local active

local function load(name)
  for _, known in ipairs(runtime.NAMES) do
    if known == name then return require("imgedit.runtime." .. name) end
  end
  return nil
end

--- The runtime in use, detected at first use.
function runtime.current()
  if active then return active end
  for _, name in ipairs(runtime.NAMES) do
    local candidate = load(name)
    if not candidate.detect or candidate.detect() then
      active = candidate
      break
    end
  end
  return active
end

--- Why `rt` is not a runtime table, or nil.
local function problem_of(rt)
  if type(rt.name) ~= "string" or rt.name == "" then return "a runtime table needs a name (a string)" end
  for _, fn in ipairs({ "perform", "wait" }) do
    if type(rt[fn]) ~= "function" then return ("runtime %s: %s must be a function(loop, ...)"):format(rt.name, fn) end
  end
  for _, fn in ipairs({ "context", "detect", "start" }) do
    if rt[fn] ~= nil and type(rt[fn]) ~= "function" then
      return ("runtime %s: %s must be a function or nil"):format(rt.name, fn)
    end
  end
  return nil
end

--- Picks the runtime: a built-in one by name, or a runtime table. Returns
-- its name, or nil and a message.
function runtime.set(name)
  if type(name) == "table" then
    local problem = problem_of(name)
    if problem then return nil, problem end
    active = name
    return name.name
  end
  local chosen = load(name)
  if not chosen then
    return nil, ("unknown runtime %q (known: %s, or a runtime table)"):format(tostring(name),
      table.concat(runtime.NAMES, ", "))
  end
  active = chosen
  return chosen.name
end

return runtime
