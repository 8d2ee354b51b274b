-- imgedit.mock: a local emulator of the foxapi and powertokens HTTP APIs and
-- of their CDN, for offline development and the spec suite.
--
--   mock.main(argv) -> exit status      command line (bin/imgedit-mock)
--   mock.serve(opts) -> true | nil, err runs until POST /_mock/shutdown
--
-- Two listeners: "api" (the providers under /foxapi and /powertokens, plus the
-- /_mock control endpoints) and "cdn" (result files). Both bind loopback
-- addresses only: the emulator accepts any key and is not meant to be
-- reachable from other machines.

local cjson = require("cjson")
local socket = require("socket")
local http = require("imgedit.mock.http")
local foxapi = require("imgedit.mock.foxapi")
local powertokens = require("imgedit.mock.powertokens")
local cdn = require("imgedit.mock.cdn")

local M = {}

local USAGE = [[
usage: imgedit-mock [options]

Emulates the foxapi and powertokens image APIs on loopback addresses and
prints one JSON line with their URLs when ready. Stop it with
POST /_mock/shutdown on the api URL (or Ctrl-C).

  --host ADDR       api listener address (127.0.0.0/8 or ::1; default 127.0.0.1)
  --cdn-host ADDR   cdn listener address (default 127.0.0.2)
  --port N          api port (default 0: any free port)
  --cdn-port N      cdn port (default 0: any free port)
  --delay SECONDS   time a foxapi task takes (default 0.3)
  --key KEY         accepted API key; repeat for several (default sk-test)

Faults (all can also be changed at run time with POST /_mock/config and
POST /_mock/faults):
  --fail-rate R     fraction (0 to 1) of billed requests that fail: a foxapi
                    task ends "failed", a powertokens request gets HTTP 500
  --task-outcome S  how foxapi tasks end: completed (default), failed or
                    cancelled
  --result-shape S  foxapi results as "results" (default), "output" or
                    "strings" (plain URL strings)
  --image-bytes N   size of the PNGs served (default 4096)
  --fault JSON      a fault, as POST /_mock/faults takes one; repeat for
                    several; /_mock/reset restores them. Examples:
                      --fault '{"status":503,"times":2}'
                      --fault '{"kind":"slow","seconds":2,"times":100}'
                      --fault '{"kind":"reset","listener":"cdn"}'
                    fields: method path path_match listener times status
                    headers body kind (status reset stall slow refuse html
                    truncated_json big bad_base64 redirect) seconds bytes
                    location
  --exit-on-eof     exit when standard input reaches end of file
  -h, --help        show this help
]]

-- Configuration ----------------------------------------------------------------

local function one_of(...)
  local set = {}
  for _, v in ipairs({...}) do set[v] = true end
  return function(v) return set[v] == true end
end

local function is_string(v) return type(v) == "string" end

local CONFIG = {
  task_delay = {function(v) return type(v) == "number" and v >= 0 and v <= 86400 end,
                "a number of seconds between 0 and 86400"},
  task_outcome = {one_of("completed", "failed", "cancelled"), '"completed", "failed" or "cancelled"'},
  fail_code = {is_string, "a string"},
  fail_message = {is_string, "a string"},
  result_shape = {one_of("results", "output", "strings"), '"results", "output" or "strings"'},
  poll_task_info = {function(v) return type(v) == "boolean" end, "true or false"},
  failed_images = {function(v)
                     if not http.is_array(v) then return false end
                     for _, i in ipairs(v) do if not http.is_integer(i) or i < 1 then return false end end
                     return true
                   end, "an array of image positions (1, 2, ...)"},
  image_bytes = {function(v) return http.is_integer(v) and v >= 1 and v <= 2 ^ 31 end,
                 "an integer between 1 and 2^31"},
  fail_rate = {function(v) return type(v) == "number" and v >= 0 and v <= 1 end,
               "a number between 0 and 1"},
  keys = {function(v)
            if not http.is_array(v) then return false end
            for _, k in ipairs(v) do if type(k) ~= "string" then return false end end
            return true
          end, "an array of strings"},
}

local function copy_config(c)
  local t = {}
  for k, v in pairs(c) do t[k] = v end
  local keys = {}
  for i, k in ipairs(c.keys) do keys[i] = k end
  t.keys = keys
  return t
end

-- Faults -------------------------------------------------------------------------

local KINDS = one_of("status", "reset", "stall", "slow", "refuse", "html", "truncated_json",
                     "big", "bad_base64", "redirect")

local function is_count(v) return http.is_integer(v) and v >= 0 end

local FAULT_FIELDS = {
  method = {is_string, "a string"},
  path = {is_string, "a string"},
  path_match = {function(v) return is_string(v) and (pcall(string.find, "", v)) end,
                "a valid Lua pattern"},
  listener = {one_of("api", "cdn"), '"api" or "cdn"'},
  times = {function(v) return http.is_integer(v) and v >= 1 end, "a positive integer"},
  status = {function(v) return http.is_integer(v) and v >= 200 and v <= 599 end,
            "an HTTP status between 200 and 599"},
  headers = {function(v)
               if type(v) ~= "table" or v[1] ~= nil then return false end
               for k, x in pairs(v) do
                 if type(k) ~= "string" or (type(x) ~= "string" and type(x) ~= "number") then
                   return false
                 end
               end
               return true
             end, "an object of header names to strings"},
  body = {function() return true end, "anything"},
  kind = {KINDS, "one of status reset stall slow refuse html truncated_json big bad_base64 redirect"},
  seconds = {function(v) return type(v) == "number" and v >= 0 and v <= 3600 end,
             "a number of seconds between 0 and 3600"},
  bytes = {is_count, "a non-negative integer"},
  location = {is_string, "a string"},
}

-- Checks a table against a field table; returns nil or a message.
local function check_fields(t, fields, what)
  if type(t) ~= "table" or t[1] ~= nil then return what .. " must be a JSON object" end
  local unknown = http.unknown_key(t, fields)
  if unknown then return ("unknown %s field: %s"):format(what, unknown) end
  for name, value in pairs(t) do
    local check = fields[name]
    if not check[1](value) then return ("%s %s must be %s"):format(what, name, check[2]) end
  end
end

local ERROR_TYPES = {
  [400] = "invalid_request_error", [401] = "authentication_error",
  [402] = "insufficient_quota", [403] = "permission_error", [404] = "not_found",
  [422] = "invalid_request_error",
  [429] = "rate_limit_error", [503] = "service_unavailable_error",
}

local function fault_matches(f, req)
  return (f.listener == nil or f.listener == req.listener)
    and (f.method == nil or f.method:upper() == req.method)
    and (f.path == nil or f.path == req.path)
    and (f.path_match == nil or req.path:find(f.path_match) ~= nil)
end

local function take_fault(state, req)
  for i, f in ipairs(state.faults) do
    if fault_matches(f, req) then
      f.times = f.times - 1
      if f.times <= 0 then table.remove(state.faults, i) end
      return f
    end
  end
end

local BIG_PIECE = string.rep("x", 65536)

local function big_body(bytes)
  local body = {}
  for i = 1, math.floor(bytes / #BIG_PIECE) do body[i] = BIG_PIECE end
  body[#body + 1] = BIG_PIECE:sub(1, bytes % #BIG_PIECE)
  return body
end

-- Makes every data[i].b64_json of a powertokens answer invalid base64.
local function corrupt_base64(resp)
  local value = http.decode(http.body_string(resp.body))
  if type(value) ~= "table" or type(value.data) ~= "table" then return resp end
  for _, item in ipairs(value.data) do
    local b64 = type(item.b64_json) == "string" and item.b64_json or "iVBORw0KGgo="
    local half = math.floor(#b64 / 2)
    item.b64_json = b64:sub(1, half) .. "!*#~" .. b64:sub(half + 1)
  end
  resp.body = cjson.encode(value)
  return resp
end

-- The response of a fault; `normal()` makes the response the request would
-- have had (for the kinds that damage a real answer).
local function fault_response(f, normal)
  local kind = f.kind or "status"
  local resp
  if kind == "stall" then
    return {delay = f.seconds or 30, no_reply = true}
  elseif kind == "slow" then
    -- the normal answer, late: requests that are in flight at the same time
    resp = normal()
    resp.delay = f.seconds or 1
    return resp
  elseif kind == "status" then
    local status = f.status or 500
    local body = f.body
    if body == nil then
      body = {error = {message = ("injected fault: HTTP %d"):format(status),
                       type = ERROR_TYPES[status] or (status >= 500 and "server_error"
                                                      or "invalid_request_error")}}
    end
    resp = http.response(status, type(body) == "string" and body or cjson.encode(body),
                         "application/json")
  elseif kind == "html" then
    local status = f.status or 502
    resp = http.response(status, type(f.body) == "string" and f.body or
      ("<html><head><title>%d Bad Gateway</title></head><body><center><h1>%d Bad Gateway</h1>"
       .. "</center><hr><center>nginx</center></body></html>\n"):format(status, status),
      "text/html")
  elseif kind == "big" then
    resp = http.response(f.status or 200, big_body(f.bytes or 1048576), "application/octet-stream")
  elseif kind == "redirect" then
    resp = http.response(f.status or 302, "")
    http.set_header(resp, "Location", f.location or "/")
  elseif kind == "reset" then
    resp = normal()
    resp.cut = math.floor(http.body_length(resp.body) / 2)
  elseif kind == "truncated_json" then
    resp = normal()
    local text = http.body_string(resp.body)
    resp.status = f.status or 200
    resp.body = text:sub(1, math.max(1, math.floor(#text / 2)))
    http.set_header(resp, "Content-Type", "application/json")
  else -- bad_base64
    resp = corrupt_base64(normal())
  end
  for name, value in pairs(f.headers or {}) do http.set_header(resp, name, tostring(value)) end
  return resp
end

-- Request log, auth and routing ---------------------------------------------------

-- The log keeps the newest requests only past this size, so that a long
-- benchmark cannot exhaust memory; specs never come near it.
local MAX_LOG, KEEP_LOG = 100000, 50000

local function record(state, req, body)
  local json = cjson.null
  if body ~= "" then
    local value = http.decode(body)
    if value ~= nil then json = value end
  end
  local entry = {
    seq = req.id, listener = req.listener, method = req.method, path = req.path,
    query = req.query, headers = req.headers, body = body, json = json,
    time = state.now() - state.start,
  }
  state.log[#state.log + 1] = entry
  if #state.log > MAX_LOG then
    local log, newest = state.log, {}
    for i = #log - KEEP_LOG + 1, #log do newest[#newest + 1] = log[i] end
    state.log = newest
  end
  return entry
end

-- Notes in the request's log entry when its answer was written (`answered`,
-- on the clock of `time`): specs compare events, not durations.
local function note_answer(state, entry, resp)
  local after = resp.after
  resp.after = function()
    entry.answered = state.now() - state.start
    if after then after() end
  end
  return resp
end

local function check_auth(state, req)
  local key = (req.headers.authorization or ""):match("^[Bb]earer +(%S+) *$")
  if not key then
    return http.error(401, "authentication_error",
      "missing API key: send Authorization: Bearer <key>")
  end
  for _, k in ipairs(state.config.keys) do
    if k == key then return nil end
  end
  return http.error(401, "authentication_error", "invalid API key")
end

-- fail_rate: a billed request (a POST) fails with this probability.
local function unlucky(state, req)
  local rate = state.config.fail_rate or 0
  return req.method == "POST" and rate > 0 and math.random() < rate
end

local function route_api(state, req)
  local provider, rest = req.path:match("^/(%w+)(/.*)$")
  if provider == "foxapi" or provider == "powertokens" then
    local denied = check_auth(state, req)
    if denied then return denied end
    if unlucky(state, req) then
      if provider == "powertokens" then
        return http.error(500, "server_error", "injected failure (fail_rate)")
      end
      -- the task is created, and ends failed
      local outcome = state.config.task_outcome
      state.config.task_outcome = "failed"
      local ok, resp = pcall(foxapi.handle, state, req, rest)
      state.config.task_outcome = outcome
      if not ok then error(resp, 0) end
      return resp
    end
    return (provider == "foxapi" and foxapi or powertokens).handle(state, req, rest)
  end
  return http.error(404, "not_found", "no such endpoint: " .. req.path)
end

-- cjson cannot mark an empty table as an array: write [] by hand.
local function json_list(key, list)
  if #list == 0 then return http.response(200, '{"' .. key .. '":[]}', "application/json") end
  return http.json(200, {[key] = list})
end

local function reset(state)
  state.log, state.tasks, state.files, state.faults = {}, {}, {}, {}
  state.config = copy_config(state.defaults)
  -- the faults given on the command line (--fault) come back with a reset
  for i, f in ipairs(state.default_faults or {}) do
    local copy = {}
    for k, v in pairs(f) do copy[k] = v end
    copy.times = copy.times or 1
    state.faults[i] = copy
  end
end

local function control(state, server, req)
  local path, method = req.path, req.method
  local what = path:match("^/_mock/(%w+)$")
  local value, err
  if method == "POST" and (what == "config" or what == "faults") then
    value, err = http.decode(req.body)
    if value == nil then
      return http.error(400, "invalid_request_error", "invalid JSON: " .. tostring(err))
    end
  end
  if what == "requests" and method == "GET" then
    return json_list("requests", state.log)
  elseif what == "tasks" and method == "GET" then
    return json_list("tasks", foxapi.list(state))
  elseif what == "clock" and method == "GET" then
    -- the origin of the request log's `time` and `answered` on the emulator's
    -- wall clock (socket.gettime), so that another process on this machine
    -- can compare them with its own socket.gettime()
    return http.json(200, {start = state.start, now = state.now()})
  elseif what == "reset" and method == "POST" then
    reset(state)
    return http.json(200, {ok = true})
  elseif what == "config" and method == "GET" then
    return http.json(200, {config = state.config})
  elseif what == "config" and method == "POST" then
    local problem = check_fields(value, CONFIG, "config")
    if problem then return http.error(400, "invalid_request_error", problem) end
    for k, v in pairs(value) do state.config[k] = v end
    return http.json(200, {config = state.config})
  elseif what == "faults" and method == "GET" then
    return json_list("faults", state.faults)
  elseif what == "faults" and method == "POST" then
    local list = type(value) == "table" and value.faults
    if not http.is_array(list) then
      return http.error(400, "invalid_request_error", 'expected {"faults": [...]}')
    end
    for i, f in ipairs(list) do
      local problem = check_fields(f, FAULT_FIELDS, "fault")
      if problem then
        return http.error(400, "invalid_request_error", ("faults[%d]: %s"):format(i - 1, problem))
      end
    end
    for _, f in ipairs(list) do
      f.times = f.times or 1
      state.faults[#state.faults + 1] = f
    end
    return json_list("faults", state.faults)
  elseif what == "shutdown" and method == "POST" then
    local resp = http.json(200, {ok = true})
    resp.close = true
    resp.after = function() server:stop() end
    return resp
  end
  return http.error(404, "not_found", "no such control endpoint: " .. method .. " " .. path)
end

local function is_control(req)
  return req.listener == "api" and req.path:sub(1, 7) == "/_mock/"
end

-- Handlers shared by both listeners: faults first, then the listener's route.
local function handlers(state, server, route)
  local function on_head(req)
    if is_control(req) then return nil end
    req.fault = take_fault(state, req)
    if req.fault and req.fault.kind == "refuse" then
      record(state, req, "")
      return {no_reply = true}
    end
  end
  local function on_request(req)
    if is_control(req) then return control(state, server, req) end
    local entry = record(state, req, req.body)
    local function normal() return route(state, req) end
    if req.fault then return note_answer(state, entry, fault_response(req.fault, normal)) end
    return note_answer(state, entry, normal())
  end
  return on_head, on_request
end

-- Serving ----------------------------------------------------------------------------

local function loopback(host)
  if host == "::1" then return true end
  local a, b, c, d = host:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  return a ~= nil and tonumber(a) == 127 and tonumber(b) <= 255
    and tonumber(c) <= 255 and tonumber(d) <= 255
end

local function base_url(host, port)
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  return "http://" .. host .. ":" .. port
end

local function own_pid()
  local f = io.open("/proc/self/stat", "r")
  if not f then return nil end
  local pid = tonumber((f:read("*l") or ""):match("^(%d+)"))
  f:close()
  return pid
end

--- Runs the emulator until POST /_mock/shutdown (or stdin EOF with
-- exit_on_eof). opts: host, cdn_host, port, cdn_port, delay, keys (array),
-- exit_on_eof, on_ready(info) called once listening with
-- {api, cdn, foxapi, powertokens, pid}. Returns true, or nil and a message.
function M.serve(opts)
  opts = opts or {}
  local host, cdn_host = opts.host or "127.0.0.1", opts.cdn_host or "127.0.0.2"
  for _, h in ipairs({host, cdn_host}) do
    if not loopback(h) then
      return nil, ("refusing to listen on %s: only 127.0.0.0/8 and ::1 are allowed"):format(h)
    end
  end
  local pid = own_pid()
  math.randomseed(os.time() + (pid or 0))

  local state = {
    defaults = {
      task_delay = opts.delay or 0.3, task_outcome = opts.task_outcome or "completed",
      fail_code = "generation_failed",
      fail_message = "the model could not generate an image for this request",
      result_shape = opts.result_shape or "results", image_bytes = opts.image_bytes or 4096,
      poll_task_info = true, failed_images = {},
      keys = opts.keys or {"sk-test"}, fail_rate = opts.fail_rate or 0,
    },
    default_faults = opts.faults,
    now = socket.gettime,
    start = socket.gettime(),
  }
  reset(state)

  local server = http.new()
  local api_head, api_request = handlers(state, server, route_api)
  local cdn_head, cdn_request = handlers(state, server, cdn.handle)
  local api_port, err = server:listen{name = "api", host = host, port = opts.port or 0,
                                      on_head = api_head, on_request = api_request}
  if not api_port then return nil, ("cannot listen on %s: %s"):format(host, err) end
  local cdn_port
  cdn_port, err = server:listen{name = "cdn", host = cdn_host, port = opts.cdn_port or 0,
                                on_head = cdn_head, on_request = cdn_request}
  if not cdn_port then
    server:close()
    return nil, ("cannot listen on %s: %s"):format(cdn_host, err)
  end
  state.cdn = base_url(cdn_host, cdn_port)

  if opts.exit_on_eof then
    -- socket.select accepts any object with getfd(): watch stdin (fd 0).
    server:watch({getfd = function() return 0 end}, function()
      if io.stdin:read(1) == nil then server:stop() end
    end)
  end
  local api = base_url(host, api_port)
  if opts.on_ready then
    opts.on_ready({api = api, cdn = state.cdn, foxapi = api .. "/foxapi",
                   powertokens = api .. "/powertokens", pid = pid or cjson.null})
  end
  server:run()
  return true
end

-- Command line -----------------------------------------------------------------------

local VALUE_FLAGS = {
  ["--host"] = "host", ["--cdn-host"] = "cdn_host", ["--port"] = "port",
  ["--cdn-port"] = "cdn_port", ["--delay"] = "delay", ["--key"] = "key",
  ["--fail-rate"] = "fail_rate", ["--task-outcome"] = "task_outcome",
  ["--result-shape"] = "result_shape", ["--image-bytes"] = "image_bytes", ["--fault"] = "fault",
}

-- --fail-rate, --task-outcome, --result-shape, --image-bytes: config fields.
local function parse_config_flag(opts, flag, name, value)
  if name == "fail_rate" or name == "image_bytes" then value = tonumber(value) end
  if value == nil or not CONFIG[name][1](value) then
    return ("%s must be %s"):format(flag, CONFIG[name][2])
  end
  opts[name] = value
end

-- --fault JSON: one fault object, checked as POST /_mock/faults checks it.
local function parse_fault(opts, value)
  local ok, fault = pcall(cjson.decode, value)
  if not ok then
    return "--fault must be a JSON object such as '{\"status\":503,\"times\":2}'"
  end
  local problem = check_fields(fault, FAULT_FIELDS, "fault")
  if problem then return "--fault: " .. problem end
  opts.faults = opts.faults or {}
  opts.faults[#opts.faults + 1] = fault
end

local function parse(argv)
  local opts = {}
  local i = 1
  while argv[i] ~= nil do
    local a = argv[i]
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    flag = flag or a
    if flag == "-h" or flag == "--help" then
      opts.help = true
    elseif flag == "--exit-on-eof" then
      opts.exit_on_eof = true
    elseif VALUE_FLAGS[flag] then
      local value = inline
      if not value then
        i = i + 1
        value = argv[i]
      end
      if value == nil then return nil, flag .. " needs a value" end
      local name = VALUE_FLAGS[flag]
      if name == "port" or name == "cdn_port" then
        value = value:match("^%d+$") and tonumber(value)
        if not value or value > 65535 then return nil, flag .. " must be a port number" end
        opts[name] = value
      elseif name == "delay" then
        value = tonumber(value)
        if not value or value < 0 or value > 86400 then
          return nil, "--delay must be a number of seconds"
        end
        opts.delay = value
      elseif name == "key" then
        opts.keys = opts.keys or {}
        opts.keys[#opts.keys + 1] = value
      elseif name == "fault" then
        local problem = parse_fault(opts, value)
        if problem then return nil, problem end
      elseif CONFIG[name] then
        local problem = parse_config_flag(opts, flag, name, value)
        if problem then return nil, problem end
      else
        if not loopback(value) then
          return nil, ("%s %s refused: only 127.0.0.0/8 and ::1 are allowed"):format(flag, value)
        end
        opts[name] = value
      end
    else
      return nil, "unknown option " .. a
    end
    i = i + 1
  end
  return opts
end

-- One JSON line on stdout. cjson writes "/" as "\/": undone for readable
-- URLs (an escaped backslash stays "\\", so this cannot change the value).
local function print_line(value)
  io.stdout:write((cjson.encode(value):gsub("\\/", "/")), "\n")
  io.stdout:flush()
end

-- Failures are also reported as a JSON line on stdout, where a launcher
-- waits for the ready line, so that it stops waiting at once.
local function fail(status, message, usage, prog)
  io.stderr:write((prog or "imgedit-mock") .. ": ", message, "\n",
    usage and (USAGE:gsub("imgedit%-mock", prog or "imgedit-mock")) or "")
  print_line({error = message})
  return status
end

--- Command line entry point; returns the process exit status. `prog`
-- names the command in messages (default "imgedit-mock"; `imgedit mock`).
function M.main(argv, prog)
  local opts, err = parse(argv or {})
  if not opts then return fail(2, err, true, prog) end
  if opts.help then
    io.stdout:write((USAGE:gsub("imgedit%-mock", prog or "imgedit-mock")))
    return 0
  end
  opts.on_ready = print_line
  local ok, result, serve_err = xpcall(function() return M.serve(opts) end, debug.traceback)
  if not ok then return fail(1, "internal error: " .. tostring(result)) end
  if not result then return fail(1, serve_err) end
  return 0
end

return M
