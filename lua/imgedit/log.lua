--- Logging: one line per HTTP attempt, to stderr with `IMGEDIT_LOG=debug` or
-- to a function given to `imgedit.log(fn)`.
--
-- Lines are built from the method, URL, status, sizes and timings only; the
-- request headers (which carry the API key) never reach this module.
-- @module imgedit.log

local errors = require("imgedit.errors")

local log = {}

local function stderr_sink(line)
  io.stderr:write(line, "\n")
end

local level = os.getenv("IMGEDIT_LOG")
local sink = (level == "debug") and stderr_sink or nil

--- Sends log lines to `fn(line, record)`; `nil` turns logging off.
function log.set(fn)
  sink = fn
end

function log.enabled()
  return sink ~= nil
end

--- Reports one HTTP attempt. `record` has method, url, status, bytes, time,
-- attempt, max_attempts and error (a string) fields.
function log.attempt(record)
  if not sink then return end
  local outcome
  if record.status then
    outcome = tostring(record.status)
  else
    outcome = "failed (" .. tostring(record.error) .. ")"
  end
  local line = ("imgedit: %s %s -> %s, %d bytes, %.3f s, attempt %d/%d"):format(
    record.method, record.url, outcome, record.bytes or 0, record.time or 0,
    record.attempt, record.max_attempts)
  -- a URL or an error can hold what a server sent back: a key echoed in a task id
  record.url, record.error = errors.scrub(record.url), errors.scrub(record.error)
  sink(errors.scrub(line), record)
end

--- Reports a request sent without full validation (a model outside the
-- catalog, a body given as is, extra fields): one line, before it is sent.
-- `record` has operation, provider, model and note (why) fields.
function log.unvalidated(record)
  if not sink then return end
  local line = ("imgedit: %s %s: unvalidated request: %s"):format(record.provider, record.operation,
    record.note)
  sink(errors.scrub(line), record)
end

return log
