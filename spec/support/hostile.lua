-- A hostile HTTP server for the specs that need answers the emulator cannot
-- give (a garbage status line, a header of any size, an HTML page or any
-- chosen bytes where an image is expected): spec/support/hostile_server.lua
-- run as a child process on 127.0.0.1, one rule per misbehaviour.
--
--   local hostile = require("spec.support.hostile")
--   local server = hostile.start()
--   server:rules({
--     { path = "/img.png", headers = { { "Content-Type", "text/html" } }, body = "<html>...</html>" },
--     { path = "/odd", status_line = "HTTP/1.1 ABC garbage" },
--     { path = "/huge", header_bytes = 200000 },
--     { path = "/raw", raw = "HTTP/0.9 nonsense\r\n\r\n" },
--   })
--   server.url .. "/img.png"                  -- http://127.0.0.1:PORT/img.png
--   server:requests()                         -- {method, target, path, head, body}, oldest first
--   server:reset()                            -- no rules, empty log
--   server:stop()                             -- idempotent
--
-- The rule fields are described at the top of hostile_server.lua. The
-- server ends when this process closes its standard input (stop(), or
-- this process going away), and after MAX_SECONDS in any case.

local cjson = require("cjson")
local socket = require("socket")
local socket_http = require("socket.http")
local ltn12 = require("ltn12")
local helpers = require("spec.helpers")

local hostile = {}

local START_TIMEOUT = 10   -- seconds to wait for the ready line
local CONTROL_TIMEOUT = 5  -- seconds for one control request
local MAX_SECONDS = 600    -- the server's own lifetime limit

local Server = {}
Server.__index = Server

function Server:_control(method, path, value)
  local body = value ~= nil and cjson.encode(value) or ""
  local chunks = {}
  local ok, status = socket_http.request({
    url = self.url .. path, method = method,
    headers = { ["content-type"] = "application/json", ["content-length"] = #body },
    source = ltn12.source.string(body),
    sink = ltn12.sink.table(chunks),
    create = function()
      local s = socket.tcp()
      s:settimeout(CONTROL_TIMEOUT)
      return s
    end,
  })
  local text = table.concat(chunks)
  if not ok or status ~= 200 then
    error(("hostile server %s %s: %s %s"):format(method, path, tostring(status), text), 3)
  end
  return cjson.decode(text)
end

--- Replaces the rules.
function Server:rules(list)
  -- an empty Lua table would encode as {}
  if #list == 0 then return self:_control("POST", "/_hostile/reset") end
  return self:_control("POST", "/_hostile/rules", { rules = list })
end

--- The requests answered by rules or by the 404 of no rule, oldest first.
function Server:requests()
  return self:_control("GET", "/_hostile/log").requests
end

function Server:reset()
  return self:_control("POST", "/_hostile/reset")
end

function Server:stop()
  if self.stopped then return end
  self.stopped = true
  self.proc:close()
  os.remove(self.log)
end

--- Starts a server; raises with its log when it does not come up.
function hostile.start()
  local lua = os.getenv("IMGEDIT_MOCK_LUA") or "lua5.4"
  local ready = os.tmpname()
  local log = ready .. ".log"
  local script = helpers.ROOT .. "/spec/support/hostile_server.lua"
  local proc = assert(io.popen(("exec %s %s %s %d >%s 2>&1"):format(lua, helpers.shell_quote(script),
    helpers.shell_quote(ready), MAX_SECONDS, helpers.shell_quote(log)), "w"))
  local line
  local deadline = socket.gettime() + START_TIMEOUT
  repeat
    line = (helpers.read(ready) or ""):match("^([^\n]*)\n")
    if not line then socket.sleep(0.01) end
  until line or socket.gettime() > deadline
  os.remove(ready)
  if not line then
    proc:close()
    error(("the hostile server did not start within %d s: %s"):format(START_TIMEOUT, helpers.read(log) or ""), 2)
  end
  local info = cjson.decode(line)
  return setmetatable({ url = info.url, pid = info.pid, proc = proc, log = log }, Server)
end

return hostile
