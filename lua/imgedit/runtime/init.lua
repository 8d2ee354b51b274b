--- Runtimes: how imgedit waits in the host program.
--
-- A runtime is a table with
--   name               "blocking", "nvim", "ngx", ...
--   perform(multi)     lets curl progress without blocking
--   wait(multi, s)     waits at most `s` seconds for something to happen,
--                      letting the host run meanwhile where it has a loop
--   context()          optional: a table private to the running context
--                      (an nginx request) to keep that context's loop in
--   detect()           optional: true when running inside that host
--   start(loop, multi) optional: the host's own event loop turns `loop`
--                      from now on (imgedit.async); without it, coroutines
--                      run when something waits on the loop (join, run)
-- `imgedit.runtime(name)` picks one; by default the first whose detect()
-- is true at first use (ngx, then nvim), else "blocking".
-- @module imgedit.runtime

local runtime = {}

--- The runtimes, in the order they are detected.
runtime.NAMES = { "ngx", "nvim", "blocking" }

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

--- Picks the runtime by name; returns its name, or nil and a message.
function runtime.set(name)
  local chosen = load(name)
  if not chosen then
    return nil, ("unknown runtime %q (known: %s)"):format(tostring(name), table.concat(runtime.NAMES, ", "))
  end
  active = chosen
  return chosen.name
end

return runtime
