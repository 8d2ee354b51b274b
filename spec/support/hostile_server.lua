-- A hostile HTTP server for specs, run as a child process by
-- spec/support/hostile.lua: it answers exactly the bytes a rule says, well
-- formed or not, where the emulator (a well-behaved HTTP server) cannot.
--
--   lua5.4 spec/support/hostile_server.lua READY_FILE [MAX_SECONDS]
--
-- Listens on 127.0.0.1 (a port of the kernel's choice), writes
-- {"url": ..., "pid": ...} as one line to READY_FILE, and serves until its
-- standard input ends, or MAX_SECONDS (default 600) have passed.
--
-- Control requests (answered normally, as JSON):
--   POST /_hostile/rules  {"rules": [rule, ...]}  replaces the rules
--   GET  /_hostile/log    {"requests": [{method, target, path, head, body}, ...]}
--   POST /_hostile/reset  no rules, empty log
-- Any other request gets the first rule that matches it (method, path or
-- path_match, times), else a 404. A rule:
--   raw          these bytes, verbatim, then the connection closes
--   status_line  the first line ("HTTP/1.1 200 OK" from status and reason otherwise)
--   status, reason
--   headers      [[name, value], ...], in order, repeats kept
--   header_bytes an X-Padding header this many bytes long
--   body | body_base64
--   length       Content-Length to claim (a number or a string); false: none
--                (the body then ends where the connection closes); default
--                the body's length
--   delay        seconds (at most 30) to wait before answering
--   times        how many requests the rule answers (default: all)
-- Every connection is closed after its answer. Bounds: 64 connections, a
-- request head of 64 KiB and a body of 16 MiB, 30 s without progress.
local socket = require("socket")
local mime = require("mime")
local cjson = require("cjson")

local MAX_CONNECTIONS = 64
local MAX_HEAD = 64 * 1024
local MAX_BODY = 16 * 1024 * 1024
local IDLE = 30
local MAX_DELAY = 30

local ready_file, max_seconds = arg[1], tonumber(arg[2]) or 600
assert(ready_file, "usage: hostile_server.lua READY_FILE [MAX_SECONDS]")

local REASONS = { [200] = "OK", [301] = "Moved Permanently", [302] = "Found", [400] = "Bad Request",
                  [404] = "Not Found", [500] = "Internal Server Error", [502] = "Bad Gateway",
                  [503] = "Service Unavailable" }

local rules, log = {}, {}

local function plain(status, content_type, body)
  return ("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s")
    :format(status, REASONS[status] or "Status", content_type, #body, body)
end

local function json(status, value)
  return plain(status, "application/json", cjson.encode(value))
end

local function matches(rule, req)
  return (rule.method == nil or rule.method:upper() == req.method)
    and (rule.path == nil or rule.path == req.path)
    and (rule.path_match == nil or req.path:find(rule.path_match) ~= nil)
end

local function answer_of(rule)
  if rule.raw then return rule.raw end
  local status = rule.status or 200
  local body = rule.body_base64 and (mime.unb64(rule.body_base64) or "") or rule.body or ""
  local lines = { rule.status_line or ("HTTP/1.1 %d %s"):format(status, rule.reason or REASONS[status] or "Status") }
  for _, h in ipairs(rule.headers or {}) do lines[#lines + 1] = h[1] .. ": " .. h[2] end
  if rule.header_bytes then lines[#lines + 1] = "X-Padding: " .. ("p"):rep(rule.header_bytes) end
  local length = rule.length or #body
  -- cjson reads every number as a float: 1000, not 1000.0
  if type(length) == "number" then length = ("%d"):format(length) end
  if rule.length ~= false then lines[#lines + 1] = "Content-Length: " .. length end
  lines[#lines + 1] = "Connection: close"
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. body
end

--- The answer to a request: the bytes and the delay before them.
local function respond(req)
  if req.path == "/_hostile/rules" and req.method == "POST" then
    local ok, value = pcall(cjson.decode, req.body)
    if not ok or type(value) ~= "table" or type(value.rules) ~= "table" then
      return json(400, { error = 'expected {"rules": [...]}' }), 0
    end
    rules = value.rules
    return json(200, { rules = #rules }), 0
  elseif req.path == "/_hostile/log" then
    return json(200, { requests = log }), 0
  elseif req.path == "/_hostile/reset" then
    rules, log = {}, {}
    return json(200, { ok = true }), 0
  end
  log[#log + 1] = { method = req.method, target = req.target, path = req.path, head = req.head, body = req.body }
  for i, rule in ipairs(rules) do
    if matches(rule, req) then
      if rule.times then
        rule.times = rule.times - 1
        if rule.times <= 0 then table.remove(rules, i) end
      end
      return answer_of(rule), math.min(tonumber(rule.delay) or 0, MAX_DELAY)
    end
  end
  return plain(404, "text/plain", "no rule for " .. req.path .. "\n"), 0
end

local listener = assert(socket.bind("127.0.0.1", 0))
listener:settimeout(0)
local _, port = listener:getsockname()
local stat = io.open("/proc/self/stat")
local pid = stat and stat:read("*l"):match("^(%d+)")
if stat then stat:close() end
local f = assert(io.open(ready_file, "w"))
f:write(cjson.encode({ url = "http://127.0.0.1:" .. port, pid = tonumber(pid) }), "\n")
f:close()

local stdin = { getfd = function() return 0 end }
local conns = {}
local stop_at = socket.gettime() + max_seconds

-- Parses a request head; returns the request and the body length, or nil.
local function parse_head(head)
  local method, target = head:match("^(%u+) (%S+) HTTP/1%.[01]\r\n")
  if not method then return nil end
  local length = tonumber(head:lower():match("\r\ncontent%-length:%s*(%d+)") or "0")
  if length > MAX_BODY then return nil end
  return { method = method, target = target, path = target:match("^([^?#]*)"), head = head }, length
end

local function close(conn)
  conn.sock:close()
  for i, c in ipairs(conns) do
    if c == conn then
      table.remove(conns, i)
      break
    end
  end
end

local function copy(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = v end
  return out
end

local function step(conn, now)
  if conn.state == "read" then
    local data, err, partial = conn.sock:receive(65536)
    data = data or partial
    if data and #data > 0 then
      conn.buffer = conn.buffer .. data
      conn.deadline = now + IDLE
    end
    if not conn.req then
      local stop = conn.buffer:find("\r\n\r\n", 1, true)
      if stop then
        local req, length = parse_head(conn.buffer:sub(1, stop + 3))
        if not req then return close(conn) end
        conn.req, conn.length, conn.buffer = req, length, conn.buffer:sub(stop + 4)
      elseif #conn.buffer > MAX_HEAD then
        return close(conn)
      end
    end
    if conn.req and #conn.buffer >= conn.length then
      conn.req.body = conn.buffer:sub(1, conn.length)
      local bytes, delay = respond(conn.req)
      conn.out, conn.sent, conn.state, conn.at = bytes, 0, "write", now + delay
      conn.deadline = conn.at + IDLE
    elseif err == "closed" then
      return close(conn)
    end
  elseif conn.state == "write" and now >= conn.at then
    local last, err, partial = conn.sock:send(conn.out, conn.sent + 1)
    conn.sent = last or partial or conn.sent
    if conn.sent > 0 then conn.deadline = now + IDLE end
    if conn.sent >= #conn.out or (err and err ~= "timeout") then return close(conn) end
  end
end

while socket.gettime() < stop_at do
  local readers, writers = { listener, stdin }, {}
  local wait = 1
  local now = socket.gettime()
  for _, c in ipairs(conns) do
    if c.state == "read" then
      readers[#readers + 1] = c.sock
    elseif now >= c.at then
      writers[#writers + 1] = c.sock
    else
      wait = math.min(wait, c.at - now)
    end
  end
  local readable = socket.select(readers, writers, math.max(0, wait))
  if readable[stdin] and io.stdin:read(1) == nil then break end
  if readable[listener] and #conns < MAX_CONNECTIONS then
    local sock = listener:accept()
    if sock then
      sock:settimeout(0)
      conns[#conns + 1] = { sock = sock, state = "read", buffer = "", deadline = socket.gettime() + IDLE, at = 0 }
    end
  end
  now = socket.gettime()
  for _, c in ipairs(copy(conns)) do
    if now > c.deadline then close(c) else step(c, now) end
  end
end
listener:close()
for _, c in ipairs(copy(conns)) do c.sock:close() end
