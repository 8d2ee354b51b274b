--- Structured errors: every failure imgedit reports is one of these tables.
--
-- An error is a plain table with a metatable, so callers can read its fields
-- (`err.kind`, `err.status`, ...) and `tostring(err)` gives one line that says
-- what happened and what to do about it.
-- @module imgedit.errors

local errors = {}

--- What to do about each kind of error; the second half of `tostring(err)`.
local ADVICE = {
  invalid_request = "fix the parameters and call again",
  auth = "check the API key (opts.api_key or the provider's *_API_KEY variable)",
  quota = "top up the account balance, then retry",
  not_found = "check the task id or URL; result URLs expire after 24 hours",
  rate_limited = "slow down: retry later or lower the concurrency",
  api = "the provider refused the request; read its message and adjust the parameters",
  server = "the provider failed; retry later",
  timeout = "raise the timeout or retry later",
  network = "check the network, the proxy and base_url",
  decode = "the provider answered something unexpected; retry, or report it if it persists",
  too_large = "raise max_response_bytes or ask for fewer or smaller images",
  task_failed = "the task failed on the provider's side; change the input and submit again",
  cancelled = "the task was cancelled; submit it again if it is still wanted",
  io = "check the path and its permissions",
}

--- The kinds an error can have, for validation of our own code.
errors.KINDS = {}
for kind in pairs(ADVICE) do errors.KINDS[kind] = true end

local find = string.find

local Error = {}
Error.__index = Error

--- The secrets of this Lua state (API keys of the clients made), and
-- their percent-encoded forms: no text from a server reaches an error, a
-- log line, the command's output or a file name with one of them in it.
local secrets = {}
-- The same secrets as a list, walked by errors.scrub (every request id).
local secret_list = {}

local function encoded(secret)
  return (secret:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- Registers `secret` (a client's key): `errors.scrub` removes it from
-- every text from now on.
function errors.protect(secret)
  if type(secret) ~= "string" or secret == "" or secrets[secret] then return end
  for _, s in ipairs({ secret, encoded(secret) }) do
    if not secrets[s] then
      secrets[s] = true
      secret_list[#secret_list + 1] = s
    end
  end
end

--- Replaces every occurrence of `secret` in `text` with "[redacted]".
-- Provider messages can echo the key back ("invalid key sk-..."); this is the
-- one place that makes sure they never carry it further.
local function redact(text, secret)
  if type(text) ~= "string" or type(secret) ~= "string" or secret == "" then
    return text
  end
  local start = 1
  local parts = {}
  while true do
    local i, j = text:find(secret, start, true)
    if not i then break end
    parts[#parts + 1] = text:sub(start, i - 1)
    parts[#parts + 1] = "[redacted]"
    start = j + 1
  end
  if #parts == 0 then return text end
  parts[#parts + 1] = text:sub(start)
  return table.concat(parts)
end

--- `text` with `secret` and every registered secret replaced by "[redacted]".
local function redact_all(text, secret)
  if type(text) ~= "string" then return text end
  return errors.scrub(redact(text, secret))
end

--- `text` without any registered secret: for every string a server gave
-- that goes on to a log line, the command's output or a file name.
function errors.scrub(text)
  if type(text) ~= "string" then return text end
  for i = 1, #secret_list do
    local known = secret_list[i]
    if find(text, known, 1, true) then text = redact(text, known) end
  end
  return text
end

--- Creates an error.
-- @tparam string kind one of `errors.KINDS`
-- @tparam string message what happened, in words a user understands
-- @tparam[opt] table fields extra fields (status, code, type, request_id,
--   ...; `advice`: what to do, instead of the kind's usual advice)
-- @tparam[opt] string secret a value that must never appear in the error
function errors.new(kind, message, fields, secret)
  assert(errors.KINDS[kind], "imgedit internal error: unknown error kind")
  local err = {}
  if fields then
    -- every string field: the server's code, type, request id, task id...
    for k, v in pairs(fields) do err[k] = redact_all(v, secret) end
  end
  err.kind = kind
  err.message = redact_all(message, secret)
  if err.retryable == nil then err.retryable = false end
  return setmetatable(err, Error)
end

--- True when `value` is an imgedit error.
function errors.is(value)
  return getmetatable(value) == Error
end

--- The kinds of the error types both gateways use (the OpenAI convention:
-- `{"error": {"type": ...}}`), which say more than some statuses do.
local KIND_OF_TYPE = {
  authentication_error = "auth", permission_error = "auth",
  insufficient_quota = "quota",
  not_found = "not_found", not_found_error = "not_found",
  rate_limit_error = "rate_limited",
}

--- The error kind that an HTTP status (and the body's error type, when
-- there is one) maps to.
function errors.kind_for_status(status, error_type)
  if status >= 400 and status < 500 and KIND_OF_TYPE[error_type] then return KIND_OF_TYPE[error_type] end
  if status == 401 or status == 403 then return "auth" end
  if status == 402 then return "quota" end
  if status == 404 then return "not_found" end
  if status == 429 then return "rate_limited" end
  if status >= 500 then return "server" end
  return "api"
end

function Error:__tostring()
  local details = {}
  if self.status then details[#details + 1] = "HTTP " .. self.status end
  if self.type then details[#details + 1] = "type " .. tostring(self.type) end
  if self.code then details[#details + 1] = "code " .. tostring(self.code) end
  if self.task_id then details[#details + 1] = "task " .. self.task_id end
  if self.request_id then details[#details + 1] = "request " .. self.request_id end
  if self.attempts and self.attempts > 1 then
    details[#details + 1] = self.attempts .. " attempts"
  end
  local line = "imgedit: " .. self.kind .. ": " .. tostring(self.message)
  if #details > 0 then line = line .. " (" .. table.concat(details, ", ") .. ")" end
  -- one line, whatever the provider put in its message
  line = line:gsub("[\r\n]+", " ")
  return errors.scrub(line .. "; " .. (self.advice or ADVICE[self.kind]))
end

return errors
