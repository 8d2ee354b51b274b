-- A small HTTP/1.1 server on luasocket for the emulator.
--
-- One coroutine per connection, non-blocking sockets, one socket.select loop
-- whose timeout is the next timer (no busy waiting). Socket sets are kept
-- incrementally (array + index) so each loop iteration costs O(ready
-- sockets) beyond select itself. Handlers are plain functions that never
-- yield (Lua 5.1 cannot yield across pcall): anything that has to wait (a
-- delayed or stalled answer) is described in the response table and carried
-- out here.
--
-- Handlers (per listener):
--   on_head(req)    after the request head, before the body is read; returns
--                   nil to go on, or a response to send without reading the
--                   body (the connection is then closed).
--   on_request(req) with req.body read; returns a response.
-- req = {id, listener, method, target, path, query, version, headers
--        (lowercase name -> value, repeated joined with ", "), body}
-- response = {status, headers = {{name, value}, ...}, body = string or array
--   of strings, delay = seconds to wait first, no_reply = true (close without
--   answering), cut = bytes of the body to send before closing,
--   close = true, after = function called once the response is written}
-- Every response gets Content-Length and X-Request-Id: req-<id> (unless the
-- handler set an X-Request-Id of its own).

local socket = require("socket")
local cjson = require("cjson")
-- timers: {at, seq, fn}
local heap = require("imgedit.heap")

local M = {}

local MAX_LINE = 16384          -- request line or one header line
local MAX_HEADERS = 100
local MAX_BODY = 128 * 1048576  -- data: URIs of several 10 MiB files fit
local IDLE_TIMEOUT = 120        -- seconds without progress on a connection
local LINGER = 2                -- seconds to drain a request before closing
local SWEEP_EVERY = 5
local MAX_CONNECTIONS = 900     -- select() cannot watch descriptors >= 1024
local ACCEPT_BURST = 64
local MAX_REQUESTS = 100000     -- per connection, as web servers bound keep-alive
local SMALL_BODY = 65536        -- sent in the same write as the head

local REASONS = {
  [100] = "Continue", [200] = "OK", [201] = "Created", [204] = "No Content",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [408] = "Request Timeout", [409] = "Conflict", [411] = "Length Required",
  [413] = "Content Too Large", [422] = "Unprocessable Content",
  [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [501] = "Not Implemented",
  [502] = "Bad Gateway", [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

-- Response helpers -----------------------------------------------------------

--- Sets a header, replacing one of the same name (case-insensitive).
function M.set_header(resp, name, value)
  resp.headers = resp.headers or {}
  local lname = name:lower()
  for _, h in ipairs(resp.headers) do
    if h[1]:lower() == lname then
      h[1], h[2] = name, value
      return
    end
  end
  resp.headers[#resp.headers + 1] = {name, value}
end

function M.response(status, body, content_type)
  local resp = {status = status, headers = {}, body = body or ""}
  if content_type then M.set_header(resp, "Content-Type", content_type) end
  return resp
end

function M.json(status, value)
  return M.response(status, cjson.encode(value), "application/json")
end

--- The error body both providers use: {"error":{"message","type","code"?}}.
function M.error(status, kind, message, code)
  return M.json(status, {error = {message = message, type = kind, code = code}})
end

--- Length of a body given as a string or an array of strings.
function M.body_length(body)
  if type(body) == "string" then return #body end
  local n = 0
  for i = 1, #body do n = n + #body[i] end
  return n
end

function M.body_string(body)
  if type(body) == "string" then return body end
  return table.concat(body)
end

-- Request body helpers (shared by the provider emulations) -------------------

-- A private decoder that refuses NaN, Infinity and hex numbers: they are not
-- JSON, and a strict server must not accept them from the client.
local decoder = require("cjson.safe").new()
decoder.decode_invalid_numbers(false)

--- Decodes untrusted JSON: value, or nil and a message.
function M.decode(text)
  local value, err = decoder.decode(text)
  if value == nil then return nil, err or "invalid JSON" end
  return value
end

--- The JSON object of a request that must send one. Returns the table, or
--- nil and a 400 invalid_request_error response.
function M.json_body(req)
  local ctype = (req.headers["content-type"] or ""):lower():match("^%s*([^;%s]+)")
  if ctype ~= "application/json" then
    return nil, M.error(400, "invalid_request_error",
      "Content-Type must be application/json", "invalid_content_type")
  end
  local value, err = M.decode(req.body)
  if value == nil then
    return nil, M.error(400, "invalid_request_error",
      "request body is not valid JSON: " .. tostring(err), "invalid_json")
  end
  if type(value) ~= "table" or (next(value) ~= nil and value[1] ~= nil) then
    return nil, M.error(400, "invalid_request_error",
      "request body must be a JSON object", "invalid_json")
  end
  return value
end

--- A decoded JSON array (keys exactly 1..n). An empty table counts: the
-- decoder cannot tell [] from {}.
function M.is_array(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  return n == #v
end

function M.is_integer(v)
  return type(v) == "number" and v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53
end

function M.is_http_url(v)
  return type(v) == "string" and #v <= 8192
    and (v:match("^[Hh][Tt][Tt][Pp][Ss]?://[^/%s?#]+[^%s]*$")) ~= nil
end

--- Number of code points of a UTF-8 string (continuation bytes not counted).
function M.utf8_length(s)
  local _, continuation = s:gsub("[\128-\191]", "")
  return #s - continuation
end

--- An object key check: the first key of t (sorted) not in `allowed`, or nil.
function M.unknown_key(t, allowed)
  local unknown = {}
  for k in pairs(t) do
    if not allowed[k] then unknown[#unknown + 1] = tostring(k) end
  end
  table.sort(unknown)
  return unknown[1]
end

-- Socket sets and timers ----------------------------------------------------

local function new_set() return {list = {}, index = {}} end

local function set_add(set, s)
  if set.index[s] then return end
  local n = #set.list + 1
  set.list[n] = s
  set.index[s] = n
end

local function set_remove(set, s)
  local i = set.index[s]
  if not i then return end
  local list = set.list
  local n = #list
  local last = list[n]
  list[i] = last
  set.index[last] = i
  list[n] = nil
  set.index[s] = nil
end

-- Server ----------------------------------------------------------------------

local Server = {}
Server.__index = Server

--- opts.log(message): where internal errors are reported (default stderr).
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({
    log = opts.log or function(msg) io.stderr:write(msg, "\n") end,
    readers = new_set(), writers = new_set(),
    on_readable = {}, on_writable = {}, -- socket -> function
    timers = {}, timer_seq = 0,
    listeners = {}, conns = {}, nconns = 0, accepting = true,
    next_id = 0, running = false,
  }, Server)
  self:after(SWEEP_EVERY, function() self:_sweep() end)
  return self
end

--- Calls fn() (outside any connection) after `seconds`.
function Server:after(seconds, fn)
  self.timer_seq = self.timer_seq + 1
  heap.push(self.timers, {at = socket.gettime() + seconds, seq = self.timer_seq, fn = fn})
end

--- Calls fn() whenever obj (anything with getfd(), e.g. a socket) is readable.
function Server:watch(obj, fn)
  self.on_readable[obj] = fn
  set_add(self.readers, obj)
end

function Server:stop() self.running = false end

--- Listens on host:port (port 0: any). Returns the bound port or nil, err.
function Server:listen(spec)
  local sock, err = (spec.host:find(":", 1, true) and socket.tcp6 or socket.tcp4 or socket.tcp)()
  if not sock then return nil, err end
  local ok
  ok, err = sock:setoption("reuseaddr", true)
  if ok then ok, err = sock:bind(spec.host, spec.port) end
  if ok then ok, err = sock:listen(1024) end
  if not ok then
    sock:close()
    return nil, err
  end
  sock:settimeout(0)
  local listener = {sock = sock, spec = spec}
  self.listeners[#self.listeners + 1] = listener
  self:watch(sock, function() self:_accept(listener) end)
  local _, port = sock:getsockname()
  return tonumber(port)
end

-- Leaves further clients in the backlog until a connection closes (or, with
-- a delay, after an accept error such as running out of descriptors, which
-- would otherwise make select() return at once, forever).
function Server:_pause_accepting(seconds)
  self.accepting = false
  for _, l in ipairs(self.listeners) do set_remove(self.readers, l.sock) end
  if seconds then self:after(seconds, function() self:_resume_accepting() end) end
end

function Server:_resume_accepting()
  if self.accepting or self.nconns >= MAX_CONNECTIONS then return end
  self.accepting = true
  for _, l in ipairs(self.listeners) do set_add(self.readers, l.sock) end
end

function Server:_accept(listener)
  for _ = 1, ACCEPT_BURST do
    if self.nconns >= MAX_CONNECTIONS then return self:_pause_accepting() end
    local client, err = listener.sock:accept()
    if not client then
      if err ~= "timeout" then
        self.log("imgedit-mock: accept failed: " .. tostring(err))
        self:_pause_accepting(0.1)
      end
      return
    end
    client:settimeout(0)
    client:setoption("tcp-nodelay", true)
    local conn = {sock = client, spec = listener.spec}
    conn.co = coroutine.create(function()
      self:_serve(conn)
      self:_close(conn)
    end)
    self.conns[client] = conn
    self.nconns = self.nconns + 1
    self:_resume(conn)
  end
end

function Server:_close(conn)
  if conn.closed then return end
  conn.closed = true
  local sock = conn.sock
  set_remove(self.readers, sock)
  set_remove(self.writers, sock)
  self.on_readable[sock], self.on_writable[sock] = nil, nil
  self.conns[sock] = nil
  sock:close()
  self.nconns = self.nconns - 1
  self:_resume_accepting()
end

function Server:_resume(conn)
  if conn.closed then return end
  local ok, err = coroutine.resume(conn.co)
  if not ok then
    self.log("imgedit-mock: connection error: " .. debug.traceback(conn.co, tostring(err)))
    self:_close(conn)
  end
end

-- Closes connections that made no progress before their deadline (clients
-- that vanished, or lingering closes that timed out).
function Server:_sweep()
  local now = socket.gettime()
  local expired = {}
  for _, conn in pairs(self.conns) do
    if conn.deadline and conn.deadline < now then expired[#expired + 1] = conn end
  end
  for _, conn in ipairs(expired) do self:_close(conn) end
  self:after(SWEEP_EVERY, function() self:_sweep() end)
end

--- Closes every connection and listener.
function Server:close()
  local conns = {}
  for _, conn in pairs(self.conns) do conns[#conns + 1] = conn end
  for _, conn in ipairs(conns) do self:_close(conn) end
  for _, l in ipairs(self.listeners) do l.sock:close() end
  self.listeners = {}
end

--- Runs the loop until stop(); then closes every socket.
function Server:run()
  self.running = true
  while self.running do
    local timeout = 0
    local next_timer = self.timers[1]
    if next_timer then
      timeout = next_timer.at - socket.gettime()
      if timeout < 0 then timeout = 0 end
    end
    local readable, writable = socket.select(self.readers.list, self.writers.list, timeout)
    for i = 1, #readable do
      local fn = self.on_readable[readable[i]]
      if fn then fn() end
    end
    for i = 1, #writable do
      local fn = self.on_writable[writable[i]]
      if fn then fn() end
    end
    local now = socket.gettime()
    -- Only timers already due when this pass started: one that re-arms
    -- itself with a zero delay waits for the next pass.
    local limit = self.timer_seq
    while self.running and self.timers[1] and self.timers[1].at <= now
        and self.timers[1].seq <= limit do
      heap.pop(self.timers).fn()
    end
  end
  self:close()
end

-- Connection I/O (inside the connection's coroutine) -------------------------

function Server:_wait(conn, set, callbacks, deadline)
  conn.deadline = deadline or socket.gettime() + IDLE_TIMEOUT
  callbacks[conn.sock] = function()
    set_remove(set, conn.sock)
    callbacks[conn.sock] = nil
    self:_resume(conn)
  end
  set_add(set, conn.sock)
  coroutine.yield()
end

function Server:_sleep(conn, seconds)
  conn.deadline = nil
  self:after(seconds, function() self:_resume(conn) end)
  coroutine.yield()
end

function Server:_read_line(conn)
  local partial
  for _ = 1, MAX_LINE + 1 do -- each pass waits for more data (or ends)
    local line, err, part = conn.sock:receive("*l", partial)
    if line then
      if #line > MAX_LINE then return nil, "too long" end
      return line
    end
    if err ~= "timeout" then return nil, err end
    if #part > MAX_LINE then return nil, "too long" end
    partial = part
    self:_wait(conn, self.readers, self.on_readable)
  end
  return nil, "too long"
end

function Server:_read_bytes(conn, n, parts)
  local got = 0
  while got < n do
    local data, err, part = conn.sock:receive(n - got)
    data = data or part
    if #data > 0 then
      parts[#parts + 1] = data
      got = got + #data
    end
    if err then
      if err ~= "timeout" then return nil, err end
      self:_wait(conn, self.readers, self.on_readable)
    end
  end
  return true
end

function Server:_write(conn, s)
  local i, j = 1, #s
  while i <= j do
    local last, err, sent = conn.sock:send(s, i, j)
    if last then return true end
    if err ~= "timeout" then return nil, err end
    i = sent + 1
    self:_wait(conn, self.writers, self.on_writable)
  end
  return true
end

-- Chunked request body: sizes in hex, extensions and trailers ignored.
function Server:_read_chunked(conn)
  local parts, total = {}, 0
  for _ = 1, MAX_BODY do -- bounded: each chunk carries at least one byte
    local line, err = self:_read_line(conn)
    if not line then return nil, err end
    local hex = line:match("^(%x+)%s*$") or line:match("^(%x+)%s*;")
    if not hex or #hex > 8 then return nil, "bad chunk size" end
    local size = tonumber(hex, 16)
    if size == 0 then
      for _ = 1, MAX_HEADERS do
        local trailer
        trailer, err = self:_read_line(conn)
        if not trailer then return nil, err end
        if trailer == "" then return table.concat(parts) end
      end
      return nil, "too many trailers"
    end
    total = total + size
    if total > MAX_BODY then return nil, "too large" end
    local ok
    ok, err = self:_read_bytes(conn, size, parts)
    if not ok then return nil, err end
    local crlf
    crlf, err = self:_read_line(conn)
    if crlf ~= "" then return nil, err or "bad chunk end" end
  end
  return nil, "too many chunks"
end

-- Parses the request head. Returns req, or nil, status (to answer and close),
-- or nil when the connection just ended.
function Server:_read_head(conn)
  local line, err
  for _ = 1, 4 do -- tolerate a few empty lines between requests (RFC 9112)
    line, err = self:_read_line(conn)
    if line ~= "" then break end
  end
  if not line then return nil, err == "too long" and 414 or nil end
  local method, target, version = line:match("^(%u+) (%S+) HTTP/(%d%.%d)$")
  if not method then return nil, 400 end
  local headers = {}
  for _ = 1, MAX_HEADERS + 1 do
    line, err = self:_read_line(conn)
    if not line then return nil, err == "too long" and 431 or nil end
    if line == "" then
      local path, query = target:match("^([^?]*)%??(.*)$")
      self.next_id = self.next_id + 1
      return {id = self.next_id, listener = conn.spec.name, method = method,
              target = target, path = path, query = query, version = version,
              headers = headers}
    end
    local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
    if not name then return nil, 400 end
    name = name:lower()
    headers[name] = headers[name] and headers[name] .. ", " .. value or value
  end
  return nil, 431
end

local function plain_error(status, message)
  local resp = M.error(status, "invalid_request_error", message)
  resp.close = true
  return resp
end

function Server:_call(fn, req)
  local ok, resp = xpcall(function() return fn(req) end, debug.traceback)
  if ok then return resp end
  self.log("imgedit-mock: handler error: " .. tostring(resp))
  local err = M.error(500, "server_error", "emulator internal error")
  err.close = true
  return err
end

function Server:_send(conn, req, resp)
  if resp.delay and resp.delay > 0 then self:_sleep(conn, resp.delay) end
  if resp.no_reply then return false end
  local body = resp.body or ""
  local length = M.body_length(body)
  local keep = not resp.close and not resp.cut and req.keep_alive
  local status = resp.status or 200
  local head = {("HTTP/1.1 %d %s\r\n"):format(status, REASONS[status] or "Unknown")}
  local has_request_id = false
  for _, h in ipairs(resp.headers or {}) do
    local lname = h[1]:lower()
    if lname ~= "content-length" and lname ~= "connection" then
      head[#head + 1] = h[1] .. ": " .. h[2] .. "\r\n"
      has_request_id = has_request_id or lname == "x-request-id"
    end
  end
  -- A fault may impose its own request id; every other response gets ours.
  if not has_request_id then head[#head + 1] = "X-Request-Id: req-" .. req.id .. "\r\n" end
  head[#head + 1] = "Content-Length: " .. length .. "\r\n"
  head[#head + 1] = keep and "Connection: keep-alive\r\n\r\n" or "Connection: close\r\n\r\n"
  head = table.concat(head)
  local limit = req.method == "HEAD" and 0 or resp.cut or length
  if type(body) == "string" and limit <= SMALL_BODY then
    if not self:_write(conn, head .. body:sub(1, limit)) then return false end
  else
    if not self:_write(conn, head) then return false end
    local pieces = type(body) == "string" and {body} or body
    for i = 1, #pieces do
      if limit <= 0 then break end
      local piece = pieces[i]
      if #piece > limit then piece = piece:sub(1, limit) end
      if not self:_write(conn, piece) then return false end
      limit = limit - #piece
    end
  end
  if resp.after then resp.after() end
  return keep
end

-- Stops sending, then reads and discards what the client still sends for a
-- moment, so that closing does not reset the connection (and destroy the
-- response) while the client is still writing its request.
function Server:_linger(conn)
  conn.sock:shutdown("send")
  local deadline = socket.gettime() + LINGER
  for _ = 1, 1024 do -- at most 1024 reads of whatever arrives
    local _, err = conn.sock:receive(65536)
    if err ~= "timeout" and err ~= nil then return end
    if socket.gettime() > deadline then return end
    self:_wait(conn, self.readers, self.on_readable, deadline)
  end
end

local function wants_keep_alive(req)
  local connection = (req.headers.connection or ""):lower()
  if req.version == "1.0" then return connection:find("keep%-alive") ~= nil end
  return connection:find("close") == nil
end

function Server:_serve(conn)
  local spec = conn.spec
  for served = 1, MAX_REQUESTS do
    local req, status = self:_read_head(conn)
    if not req then
      if status then
        self.next_id = self.next_id + 1
        self:_send(conn, {id = self.next_id, method = "GET"}, plain_error(status, "malformed request"))
        self:_linger(conn)
      end
      return
    end
    req.keep_alive = served < MAX_REQUESTS and wants_keep_alive(req)

    -- Body framing (RFC 9112 section 6).
    local te, cl = req.headers["transfer-encoding"], req.headers["content-length"]
    local length, framing_error
    if te then
      if te:lower() ~= "chunked" or cl then
        framing_error = plain_error(400, "unsupported Transfer-Encoding")
      end
    elseif cl then
      length = cl:match("^%d+$") and tonumber(cl)
      if not length then
        framing_error = plain_error(400, "invalid Content-Length")
      elseif length > MAX_BODY then
        framing_error = plain_error(413, "request body too large")
      end
    else
      length = 0 -- RFC 9112 6.3: no framing in a request means no body
    end
    if framing_error then
      self:_send(conn, req, framing_error)
      self:_linger(conn)
      return
    end

    local early = spec.on_head and self:_call(spec.on_head, req)
    if early then
      -- Answered without reading the body: the connection cannot be reused.
      if not early.no_reply then
        early.close = true
        self:_send(conn, req, early)
        self:_linger(conn)
      end
      return
    end

    if req.version == "1.1" and (te or length > 0)
        and (req.headers.expect or ""):lower() == "100-continue" then
      if not self:_write(conn, "HTTP/1.1 100 Continue\r\n\r\n") then return end
    end
    local body, err
    if te then
      body, err = self:_read_chunked(conn)
    else
      local parts = {}
      body, err = self:_read_bytes(conn, length, parts)
      body = body and table.concat(parts)
    end
    if not body then
      if err ~= "closed" then
        self:_send(conn, req, plain_error(err == "too large" and 413 or 400, "bad request body"))
        self:_linger(conn)
      end
      return
    end
    req.body = body

    local resp = self:_call(spec.on_request, req)
    if not self:_send(conn, req, resp) then
      if not resp.no_reply and not resp.cut then self:_linger(conn) end
      return
    end
  end
end

return M
