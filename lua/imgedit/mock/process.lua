--- Runs the emulator (`imgedit-mock`) as a child process and controls it:
-- what the specs, the demo and the benchmarks use.
--
--   local mock = require("imgedit.mock.process")
--   local m = mock.start{delay = 0.2}        -- flags: host, cdn_host, port,
--                                            -- cdn_port, delay, keys; config = {...};
--                                            -- root: another checkout's emulator
--   m.api, m.cdn, m.foxapi, m.powertokens, m.pid, m.log
--   m:requests{listener = "cdn", method = "GET", path = "/files/"}
--   m:tasks()                                -- foxapi tasks: timing and polls
--   m:clock()                                -- {start, now}: the log's time origin
--   m:reset(); m:config{task_outcome = "failed"}; m:faults{{status = 503}}
--   m:stop()
--
-- In a checkout it runs bin/imgedit-mock with $IMGEDIT_MOCK_LUA (default
-- lua5.4); installed, the `imgedit-mock` command on PATH. The emulator's
-- stderr goes to a log file under /tmp (m.log), not to the caller's output.

local socket = require("socket")
local socket_http = require("socket.http")
local ltn12 = require("ltn12")
local cjson = require("cjson")

local M = {}

local START_TIMEOUT = 10  -- seconds to wait for the ready line
local CONTROL_TIMEOUT = 5 -- seconds for one control request

-- the checkout this file is in, when it is in one (lua/imgedit/mock/)
-- ("" when it was found through a relative path such as lua/?.lua)
local ROOT = debug.getinfo(1, "S").source:match("^@(.-)lua/imgedit/mock/[^/]*$")

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local text = f:read("*a") or ""
  f:close()
  return text
end

local Mock = {}
Mock.__index = Mock

-- One control request; raises on transport errors and non-2xx answers.
function Mock:_control(method, path, value)
  local body = value ~= nil and cjson.encode(value) or ""
  local chunks = {}
  local ok, status = socket_http.request{
    url = self.api .. path, method = method,
    headers = {["content-type"] = "application/json", ["content-length"] = #body},
    source = ltn12.source.string(body),
    sink = ltn12.sink.table(chunks),
    create = function()
      local s = socket.tcp()
      s:settimeout(CONTROL_TIMEOUT)
      return s
    end,
  }
  local text = table.concat(chunks)
  if not ok then error(("mock %s %s failed: %s"):format(method, path, tostring(status)), 3) end
  if status < 200 or status > 299 then
    error(("mock %s %s: HTTP %d %s"):format(method, path, status, text), 3)
  end
  return cjson.decode(text)
end

local function matches(r, filter)
  return (filter.listener == nil or r.listener == filter.listener)
    and (filter.method == nil or r.method == filter.method)
    and (filter.path == nil or r.path:find(filter.path, 1, true) ~= nil)
end

--- The recorded requests (oldest first), optionally filtered by listener,
-- method and path (a plain substring of the path). Each has `time` (when it
-- was received) and, once its answer was written, `answered`: seconds on
-- the emulator's clock since it started.
function Mock:requests(filter)
  local list = self:_control("GET", "/_mock/requests").requests
  if not filter then return list end
  local out = {}
  for _, r in ipairs(list) do
    if matches(r, filter) then out[#out + 1] = r end
  end
  return out
end

function Mock:reset() return self:_control("POST", "/_mock/reset") end

--- The emulator's clock: {start, now} in seconds since the epoch
-- (socket.gettime); a request's `time` and `answered` plus `start` are
-- times on that clock, comparable with another process's socket.gettime().
function Mock:clock() return self:_control("GET", "/_mock/clock") end

--- The foxapi tasks, oldest first: {id, model, status, outcome, start, delay,
-- finish (start + delay), polls, poll_times}, times in seconds since the
-- epoch on the emulator's clock (socket.gettime).
function Mock:tasks() return self:_control("GET", "/_mock/tasks").tasks end

--- Merges t into the emulator's config; returns the resulting config.
function Mock:config(t) return self:_control("POST", "/_mock/config", t).config end

--- Appends faults (see the design doc); returns the pending faults.
function Mock:faults(list)
  return self:_control("POST", "/_mock/faults", {faults = list}).faults
end

--- Stops the emulator and waits for the process to end. Idempotent.
function Mock:stop()
  if self.stopped then return end
  self.stopped = true
  pcall(self._control, self, "POST", "/_mock/shutdown")
  -- Closing the pipe is the emulator's stdin EOF (--exit-on-eof): it ends
  -- even if the shutdown request failed; close() then waits for it.
  self.proc:close()
  if read_file(self.log) == "" then os.remove(self.log) end
end

--- Starts an emulator; raises with the log's content if it does not come up.
function M.start(opts)
  opts = opts or {}
  local lua = os.getenv("IMGEDIT_MOCK_LUA") or "lua5.4"
  local ready_file = os.tmpname()
  local log = ready_file .. ".log"
  local args = {"--port", opts.port or 0, "--cdn-port", opts.cdn_port or 0, "--exit-on-eof"}
  for _, name in ipairs({"host", "cdn_host", "delay"}) do
    if opts[name] ~= nil then
      args[#args + 1] = "--" .. name:gsub("_", "-")
      args[#args + 1] = opts[name]
    end
  end
  for _, key in ipairs(opts.keys or {}) do
    args[#args + 1] = "--key"
    args[#args + 1] = key
  end
  local cmd = {"exec", "imgedit-mock"}
  local root = opts.root and (opts.root:gsub("/?$", "/")) or ROOT
  local launcher = root and io.open(root .. "bin/imgedit-mock")
  if launcher then
    launcher:close()
    cmd = {"exec", lua, shell_quote(root .. "bin/imgedit-mock")}
  end
  for _, a in ipairs(args) do cmd[#cmd + 1] = shell_quote(a) end
  cmd[#cmd + 1] = ">" .. shell_quote(ready_file) .. " 2>>" .. shell_quote(log)
  -- "w": the child's stdin is our pipe, so the emulator also ends when this
  -- process does (even if a spec never calls stop()).
  local proc = assert(io.popen(table.concat(cmd, " "), "w"))

  -- The ready line goes to a file polled until a deadline: a read from a
  -- pipe could block forever if the emulator hung before printing it.
  local line
  for _ = 1, math.ceil(START_TIMEOUT / 0.01) do
    line = read_file(ready_file):match("^([^\n]*)\n")
    if line then break end
    socket.sleep(0.01)
  end
  os.remove(ready_file)
  if not line then
    error(("the emulator did not start within %d s; its log (%s):\n%s")
      :format(START_TIMEOUT, log, read_file(log)), 2)
  end
  local info = cjson.decode(line)
  if info.error then
    proc:close()
    error(("the emulator did not start: %s\n%s"):format(info.error, read_file(log)), 2)
  end
  local m = setmetatable({
    api = info.api, cdn = info.cdn, foxapi = info.foxapi,
    powertokens = info.powertokens, pid = info.pid and math.floor(info.pid), log = log,
    proc = proc,
  }, Mock)
  if opts.config then m:config(opts.config) end
  return m
end

return M
