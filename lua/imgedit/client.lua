--- Clients: `imgedit.client(provider, opts)`.
--
-- A client holds one provider's options and dispatches the operations
-- (`edit`, `generate`, ...) to the provider's descriptor
-- (`imgedit.providers`), which implements them; nothing here knows a
-- provider's name, models or wire format.
-- @module imgedit.client

local core = require("imgedit.core")
local errors = require("imgedit.errors")
local params = require("imgedit.params")
local providers = require("imgedit.providers")
local task = require("imgedit.task")
local transport = require("imgedit.transport")

local client = {}

local Client = {}
Client.__index = Client

local MIB = 1024 * 1024

--- Options every client accepts, described as fields are, and checked so.
local OPTIONS = {
  api_key = { type = "string" },
  base_url = { type = "string", plain = true },
  timeout = { type = "number", min = 0.001, max = 1e9 },
  connect_timeout = { type = "number", min = 0.001, max = 1e9 },
  max_retries = { type = "integer", min = 0, max = 10 },
  proxy = { type = "string", plain = true },
  ca_file = { type = "string", plain = true },
  user_agent = { type = "string", plain = true },
  insecure = { type = "boolean" },
  allow_http = { type = "boolean" },
  max_response_bytes = { type = "integer", min = 1, max = 2 ^ 52 },
  max_buffered_bytes = { type = "integer", min = 1, max = 2 ^ 52 },
  max_in_flight = { type = "integer", min = 1, max = 100000 },
  strict_models = { type = "boolean" },
}
local OPTION_CHECKS = {}
for name, spec in pairs(OPTIONS) do OPTION_CHECKS[name] = params.check(spec) end

local function invalid(message)
  return nil, errors.new("invalid_request", message)
end

--- Headers imgedit or libcurl set from the request itself: a caller's
-- value would contradict them (a Content-Length that is not the body's...).
local RESERVED_HEADERS = {
  authorization = "pass the key as api_key", host = "it follows base_url",
  ["content-length"] = "it is the body's length", ["transfer-encoding"] = "libcurl frames the body",
  connection = "libcurl manages connections", expect = "libcurl decides it",
  ["content-type"] = "requests are JSON",
}

--- Header names are HTTP tokens; values may not hold control characters
-- (a CR or LF would start a header of the caller's own).
local function header_lines(headers)
  local lines, names = {}, {}
  for name in pairs(headers) do
    if type(name) ~= "string" or not name:match("^[%w!#$%%&'*+.^_`|~-]+$") then
      return nil, ("headers: %s is not a valid header name"):format(params.show(name))
    end
    local why = RESERVED_HEADERS[name:lower()]
    if why then return nil, ("headers.%s cannot be set: %s"):format(name, why) end
    names[#names + 1] = name
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local value = headers[name]
    if type(value) ~= "string" and not params.is_finite(value) then
      return nil, ("headers.%s must be a string, got %s"):format(name, params.show(value))
    end
    value = type(value) == "number" and params.show(value) or value
    if value:find("[%c\127]") then
      return nil, ("headers.%s contains a control character (a line break, NUL...): header values are one"
        .. " line of text"):format(name)
    end
    lines[#lines + 1] = name .. ": " .. value
  end
  return lines
end

--- A file the option names must be readable now: a CA bundle that is not
-- there fails every request later, with a message that does not say why.
local function readable_file(option, path)
  local f, problem = io.open(path, "rb")
  if not f then return ("option %s: cannot read %s (%s)"):format(option, path, tostring(problem)) end
  local ok = f:read(0)
  f:close()
  if not ok then return ("option %s: %s is not a readable file"):format(option, path) end
  return nil
end

--- An environment variable, unset when empty.
local function getenv(name)
  local value = os.getenv(name)
  if value == "" then return nil end
  return value
end

--- Creates a client.
-- @tparam string provider a provider's name (`imgedit.providers.names()`)
-- @tparam[opt] table opts see doc/api.md (api_key, base_url, timeout, ...)
-- @return a client, or nil and an `invalid_request` error
function client.new(provider, opts)
  if type(provider) ~= "string" then params.argerror(1, "client", "string", provider) end
  if opts ~= nil and type(opts) ~= "table" then params.argerror(2, "client", "table", opts) end
  opts = opts or {}

  local name = provider
  provider = providers.get(name)
  if not provider then
    return invalid(("unknown provider %s: use %s"):format(params.show(name), providers.listed()))
  end

  local config = {
    timeout = provider.timeout, connect_timeout = 10, max_retries = 2,
    max_response_bytes = 256 * MIB, max_buffered_bytes = 1024 * MIB, max_in_flight = 64,
    allow_http = false, insecure = false, strict_models = false,
    user_agent = ("imgedit/%s (%s)"):format(core.version, core.curl_version:match("^(%S+)") or "libcurl"),
    header_lines = {},
  }
  local api_key = getenv(provider.env.api_key)
  config.base_url = getenv(provider.env.base_url) or provider.base_url
  local base_url_from = getenv(provider.env.base_url) and provider.env.base_url or "base_url"

  for key, value in pairs(opts) do
    local check = OPTION_CHECKS[key]
    if check then
      local checked, problem = check(value)
      if problem then return invalid(("option %s %s"):format(key, problem)) end
      if key == "api_key" then api_key = checked else config[key] = checked end
      if key == "base_url" then base_url_from = "base_url" end
    elseif key == "headers" then
      if type(value) ~= "table" then return invalid("option headers must be a table {Name = value}") end
      local lines, problem = header_lines(value)
      if not lines then return invalid("option " .. problem) end
      config.header_lines = lines
    elseif key == "poll" then
      local checked, problem = task.check_wait_options({ poll = value })
      if not checked then return nil, problem end
      config.poll = value
    elseif key == "on_retry" then
      if type(value) ~= "function" then return invalid("option on_retry must be a function(info)") end
      config.on_retry = value
    elseif key == "shared_dict" then
      -- checked now, not at the first 429: a misspelt name must not go
      -- unnoticed until the gateway is already limiting every worker
      local dict, problem = transport.shared_dict(value)
      if not dict then return nil, errors.new("invalid_request", problem, { option = "shared_dict" }) end
      config.shared_dict = value
    else
      local names = { "headers", "poll", "on_retry", "shared_dict" }
      for option in pairs(OPTION_CHECKS) do names[#names + 1] = option end
      table.sort(names)
      return invalid(("unknown option %s (known: %s)"):format(params.show(key), table.concat(names, ", ")))
    end
  end

  if api_key and api_key:find("[%c%s]") then
    return nil, errors.new("invalid_request", "the API key contains white space or control characters;"
      .. " check how it was read (a trailing newline from a file?)", { option = "api_key" })
  end
  if config.ca_file then
    local problem = readable_file("ca_file", config.ca_file)
    if problem then return invalid(problem) end
  end

  -- base_url is an origin, optionally with a path prefix; /v1/... is appended
  local base_url = config.base_url:gsub("/+$", "")
  local problem = transport.check_url(base_url, config.allow_http)
  if problem then
    return nil, errors.new("invalid_request", base_url_from .. ": " .. problem, { option = "base_url" })
  end
  if base_url:find("[?#]") then
    return nil, errors.new("invalid_request", base_url_from .. " must not contain a query or fragment: " .. base_url,
      { option = "base_url" })
  end
  config.base_url = base_url

  -- `session`: what every request of this client shares (imgedit.transport):
  -- the key (in a closure, not in a field: printing or serializing a client
  -- must not reveal it), the 429 pause (and the shared_dict that spreads
  -- it to every nginx worker), the request slots, the prepared requests.
  -- Providers, tasks and results hand it to transport.request.
  local session = transport.session(provider, config, api_key)
  local self = setmetatable({ provider = provider, config = config, session = session,
                              credentials = session.secret }, Client)
  -- what servers send back is scrubbed of the key everywhere it is shown
  errors.protect(api_key)
  return self
end

-- The operations of every provider, in registry order: each client has a
-- method for each, and one its provider lacks says so.
local OPERATIONS, offered_by = {}, {}
for _, name in ipairs(providers.names()) do
  local d = providers.get(name)
  local ops = {}
  for _, op in ipairs(d.operations) do ops[#ops + 1] = op end
  if d.asynchronous then
    ops[#ops + 1] = "submit"
    ops[#ops + 1] = "task"
  end
  offered_by[name] = ops
  for _, op in ipairs(ops) do
    if not OPERATIONS[op] then
      OPERATIONS[op] = true
      OPERATIONS[#OPERATIONS + 1] = op
    end
  end
end

for _, name in ipairs(OPERATIONS) do
  local fname = "client." .. name
  Client[name] = function(self, ...)
    if getmetatable(self) ~= Client then params.check_self(self, Client, fname, "imgedit client") end
    local operation = self.provider.implementation[name]
    if not operation then
      return invalid(("%s has no %s operation (it offers: %s)"):format(self.provider.name, name,
        table.concat(offered_by[self.provider.name], ", ")))
    end
    local input = ...
    if name == "task" then
      if type(input) ~= "string" then params.argerror(1, name, "string", input) end
    elseif type(input) ~= "table" then
      params.argerror(1, name, "table", input)
    end
    return operation(self, input)
  end
end

--- Validates `input` for operation `name` of client `c` exactly as the
-- operation would, sending nothing: true, or nil and an `invalid_request`
-- error (what `imgedit batch` checks every line with first).
function client.check(c, name, input)
  params.check_self(c, Client, "client.check", "imgedit client")
  if not c.provider.implementation[name] or name == "check" or name == "task" then
    return invalid(("%s has no %s operation (it offers: %s)"):format(c.provider.name, name,
      table.concat(offered_by[c.provider.name], ", ")))
  end
  return c.provider.implementation.check(c, name, input)
end

--- One authenticated request of client `c` to its base URL plus `path`,
-- never retried: what `imgedit doctor --ping` asks a provider with
-- (descriptor.ping). Returns `{status =, request_id =}` for any HTTP
-- answer, or nil and an error when there was none (or no key).
function client.probe(c, method, path)
  params.check_self(c, Client, "client.probe", "imgedit client")
  local res, err = transport.request(c.session, { method = method, url = c.config.base_url .. path, auth = true,
                                          max_attempts = 1, any_status = true })
  if not res then return nil, err end
  return { status = res.status, request_id = res.request_id }
end

function Client:__tostring()
  return ("imgedit.client(%s, %s)"):format(self.provider.name, self.config.base_url)
end

return client
