-- A TLS + HTTP/2 front for the specs: nginx on 127.0.0.1 with a certificate
-- made at test time, proxying every request to the emulator.
--
--   local tls = require("spec.support.tls")
--   local front = tls.start(m.api)      -- m from helpers.start_mock()
--   front.url                           -- https://127.0.0.1:PORT
--   front.ca_file                       -- the CA that signed nginx's certificate
--   front:requests{count = n}           -- nginx's access log, parsed (see below)
--   front:connections()                 -- distinct client connections in it
--   front:reset()                       -- forget the log so far
--   front:stop()                        -- idempotent
--
-- Needs the `nginx` and `openssl` commands (Debian packages nginx, openssl).
-- Everything lives in a temporary prefix directory that stop() removes:
-- configuration, keys, certificates, logs, pid file and nginx's temp files.
-- nginx runs in the foreground under a small shell that also ends it when
-- this process goes away without calling stop() (its stdin is our pipe).

local socket = require("socket")

local tls = {}

local START_TIMEOUT = 10 -- seconds for nginx to listen
local STOP_TIMEOUT = 10  -- seconds for nginx to exit
local LOG_TIMEOUT = 5    -- seconds for the access log to show what was asked for
local PORT_ATTEMPTS = 3  -- a free port can be taken by someone else before nginx binds it

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  assert(f:close())
end

--- Runs a shell command; raises with its output when it fails.
local function run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1", "r"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  if not ok then
    error(("command failed (%s): %s\n%s"):format(tostring(code), cmd, out), 3)
  end
  return out
end

local function find_nginx()
  local path = run("command -v nginx || true"):match("^(%S+)")
  if path then return path end
  for _, p in ipairs({ "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx" }) do
    local f = io.open(p)
    if f then
      f:close()
      return p
    end
  end
  error("nginx not found: install the Debian package nginx (make deps)", 3)
end

--- A port nobody listens on right now (the kernel's pick for port 0).
local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function can_connect(port)
  local c = socket.tcp()
  c:settimeout(0.2)
  local ok = c:connect("127.0.0.1", port)
  c:close()
  return ok ~= nil
end

--- A CA, and a certificate for 127.0.0.1 and localhost signed by it.
local function make_certificates(dir)
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  run(("cd %s && openssl req -x509 %s -keyout ca.key -out ca.crt -days 2 -subj '/CN=imgedit spec CA'"
    .. " -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign'")
    :format(quote(dir), ec))
  run(("cd %s && openssl req %s -keyout server.key -out server.csr -subj '/CN=127.0.0.1'")
    :format(quote(dir), ec))
  write_file(dir .. "/server.ext", table.concat({
    "basicConstraints = CA:FALSE",
    "keyUsage = critical, digitalSignature, keyEncipherment",
    "extendedKeyUsage = serverAuth",
    "subjectAltName = IP:127.0.0.1, DNS:localhost",
    "",
  }, "\n"))
  run(("cd %s && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
    .. " -out server.crt -days 2 -extfile server.ext"):format(quote(dir)))
end

-- $connection is the connection's serial number (one worker: unique);
-- $msec is when the request ended and $request_time how long it took.
local LOG_FORMAT = "$connection $server_protocol $request_method $status $ssl_protocol $msec $request_time $request_uri"

local function nginx_conf(dir, port, upstream)
  return ([[
worker_processes 1;
error_log DIR/error.log info;
pid DIR/nginx.pid;
events {
  worker_connections 1024;
}
http {
  client_body_temp_path DIR/tmp/client_body;
  proxy_temp_path DIR/tmp/proxy;
  fastcgi_temp_path DIR/tmp/fastcgi;
  uwsgi_temp_path DIR/tmp/uwsgi;
  scgi_temp_path DIR/tmp/scgi;
  log_format front 'FORMAT';
  access_log DIR/access.log front;
  upstream emulator {
    server UPSTREAM;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:PORT ssl http2;
    server_name localhost;
    ssl_certificate DIR/server.crt;
    ssl_certificate_key DIR/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    http2_max_concurrent_streams 512;
    http2_chunk_size 16k;
    http2_body_preread_size 1m;
    large_client_header_buffers 8 64k;
    keepalive_requests 100000;
    keepalive_timeout 120s;
    client_max_body_size 64m;
    client_body_buffer_size 16m;
    location / {
      proxy_pass http://emulator;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host UPSTREAM;
      proxy_buffer_size 64k;
      proxy_buffers 64 64k;
      proxy_busy_buffers_size 128k;
      proxy_request_buffering on;
      proxy_max_temp_file_size 0;
      proxy_read_timeout 120s;
      proxy_next_upstream off;
    }
  }
}
]]):gsub("FORMAT", LOG_FORMAT):gsub("DIR", dir):gsub("UPSTREAM", upstream):gsub("PORT", tostring(port))
end

local Front = {}
Front.__index = Front

local function parse_line(line)
  local conn, proto, method, status, ssl, msec, rtime, uri =
    line:match("^(%d+) (%S+) (%S+) (%d+) (%S+) ([%d.]+) ([%d.]+) (%S*)$")
  if not conn then return nil end
  local ended = tonumber(msec)
  return {
    connection = tonumber(conn), protocol = proto, method = method, status = tonumber(status),
    ssl_protocol = ssl, uri = uri, ended = ended, started = ended - tonumber(rtime),
  }
end

--- The access log since the start (or the last reset), oldest first: one
-- {connection, protocol ("HTTP/2.0"), method, uri, status, ssl_protocol,
-- started, ended} per request. nginx writes a line when a request is done,
-- which can be just after the client has its response: with opts.count the
-- log is read again (for at most a few seconds) until it has that many lines.
function Front:requests(opts)
  local want = opts and opts.count or 0
  local deadline = socket.gettime() + LOG_TIMEOUT
  local list
  repeat
    list = {}
    local text = read_file(self.prefix .. "/access.log") or ""
    local n = 0
    for line in text:gmatch("[^\n]+") do
      n = n + 1
      if n > self.skip then list[#list + 1] = assert(parse_line(line), "unexpected access log line: " .. line) end
    end
    if #list >= want then break end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return list
end

--- How many distinct client TCP connections the access log shows.
function Front:connections(opts)
  local seen, n = {}, 0
  for _, r in ipairs(self:requests(opts)) do
    if not seen[r.connection] then
      seen[r.connection] = true
      n = n + 1
    end
  end
  return n
end

--- Makes requests() and connections() start from here.
function Front:reset()
  local text = read_file(self.prefix .. "/access.log") or ""
  local n = 0
  for _ in text:gmatch("[^\n]+") do n = n + 1 end
  self.skip = n
end

--- nginx's error log (for messages when something goes wrong).
function Front:error_log()
  return read_file(self.prefix .. "/error.log") or ""
end

--- Ends nginx (by its pid file) and removes the prefix directory. Idempotent.
function Front:stop()
  if self.stopped then return end
  self.stopped = true
  local pidfile = self.prefix .. "/nginx.pid"
  local pid = (read_file(pidfile) or ""):match("^(%d+)")
  if pid then
    os.execute("kill -TERM " .. pid .. " 2>/dev/null")
    -- the master removes its pid file when it exits
    local deadline = socket.gettime() + STOP_TIMEOUT
    while read_file(pidfile) and socket.gettime() < deadline do socket.sleep(0.01) end
    if read_file(pidfile) then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  end
  -- the watcher shell ends on EOF, and close() waits for it (and nginx)
  self.proc:close()
  os.execute("rm -rf " .. quote(self.prefix))
end

local function launch(nginx, prefix, port, upstream)
  write_file(prefix .. "/nginx.conf", nginx_conf(prefix, port, upstream))
  os.remove(prefix .. "/error.log")
  local conf = prefix .. "/nginx.conf"
  local pidfile = prefix .. "/nginx.pid"
  -- nginx in the background (stdin /dev/null), the shell reading our pipe:
  -- on EOF (stop(), or this process ended) it stops nginx if still running.
  local cmd = table.concat({
    quote(nginx), "-p", quote(prefix .. "/"), "-e", quote(prefix .. "/error.log"),
    "-c", quote(conf), "-g", quote("daemon off;"),
    "</dev/null >>" .. quote(prefix .. "/stderr.log") .. " 2>&1 &",
    "pid=$!;",
    "cat >/dev/null;",
    "if [ -f " .. quote(pidfile) .. " ]; then kill -TERM \"$pid\" 2>/dev/null; fi;",
    "wait \"$pid\" 2>/dev/null;",
    -- the prefix goes too, unless launch() wants it for another attempt
    "[ -f " .. quote(prefix .. "/keep") .. " ] || rm -rf " .. quote(prefix),
  }, " ")
  local proc = assert(io.popen(cmd, "w"))
  local deadline = socket.gettime() + START_TIMEOUT
  while socket.gettime() < deadline do
    if read_file(pidfile) and can_connect(port) then return proc end
    local log = (read_file(prefix .. "/error.log") or "") .. (read_file(prefix .. "/stderr.log") or "")
    if log:find("[emerg]", 1, true) then
      write_file(prefix .. "/keep", "")
      proc:close()
      os.remove(prefix .. "/keep")
      return nil, log
    end
    socket.sleep(0.02)
  end
  write_file(prefix .. "/keep", "")
  proc:close()
  os.remove(prefix .. "/keep")
  return nil, ("nginx did not listen on 127.0.0.1:%d within %d s\n%s%s"):format(port, START_TIMEOUT,
    read_file(prefix .. "/error.log") or "", read_file(prefix .. "/stderr.log") or "")
end

--- Starts nginx with TLS and HTTP/2 in front of upstream_url, an origin
-- such as the emulator's m.api ("http://127.0.0.1:PORT"); paths are passed
-- through unchanged. opts is reserved. Raises when nginx does not start.
function tls.start(upstream_url, opts)
  assert(opts == nil or type(opts) == "table", "opts must be a table")
  local upstream = tostring(upstream_url):match("^http://([%w.%-]+:%d+)/?$")
  assert(upstream, "tls.start wants an http://HOST:PORT origin, got " .. tostring(upstream_url))
  local nginx = find_nginx()
  local prefix = run("mktemp -d /tmp/imgedit-tls.XXXXXX"):match("^(%S+)")
  local ok, err = pcall(function()
    -- nginx's worker (an unprivileged user when run as root) writes the temp files
    run("chmod 711 " .. quote(prefix) .. " && mkdir -p " .. quote(prefix .. "/tmp"))
    make_certificates(prefix)
  end)
  if not ok then
    os.execute("rm -rf " .. quote(prefix))
    error(err, 2)
  end
  local proc, port, log
  for _ = 1, PORT_ATTEMPTS do
    port = free_port()
    proc, log = launch(nginx, prefix, port, upstream)
    if proc or not log:find("in use", 1, true) then break end
  end
  if not proc then
    os.execute("rm -rf " .. quote(prefix))
    error("the TLS front did not start: " .. log, 2)
  end
  return setmetatable({
    url = "https://127.0.0.1:" .. port,
    port = port,
    ca_file = prefix .. "/ca.crt",
    prefix = prefix,
    proc = proc,
    skip = 0,
  }, Front)
end

return tls
