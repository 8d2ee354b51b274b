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
-- or, for a describe block, the emulator and its front together:
--
--   setup(function() m, front = tls.start_with_mock() end)
--   teardown(function() tls.stop_with_mock(m, front) end)
--   before_each(function() tls.reset_with_mock(m, front, {task_delay = 0.1}) end)
--
-- Needs the `nginx` and `openssl` commands (Debian packages nginx, openssl).
-- Everything lives in a temporary directory that stop() removes:
-- configuration, keys, certificates, logs, pid file and nginx's temp files;
-- spec/support/nginx.lua starts and stops nginx (and ends it should this
-- process go away without calling stop()).

local socket = require("socket")
local helpers = require("spec.helpers")
local nginx = require("spec.support.nginx")

local quote, run = helpers.shell_quote, helpers.run

local tls = {}

local LOG_TIMEOUT = 5    -- seconds for the access log to show what was asked for

--- A CA, and a certificate for 127.0.0.1 and localhost signed by it.
local function make_certificates(dir)
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  run(("cd %s && openssl req -x509 %s -keyout ca.key -out ca.crt -days 2 -subj '/CN=imgedit spec CA'"
    .. " -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign'")
    :format(quote(dir), ec))
  run(("cd %s && openssl req %s -keyout server.key -out server.csr -subj '/CN=127.0.0.1'")
    :format(quote(dir), ec))
  helpers.write(dir .. "/server.ext", table.concat({
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

--- A front is an nginx.Server (port, error_log(), stop()...) with these too.
local Front = setmetatable({}, { __index = nginx.Server })
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
    local text = self:read("access.log") or ""
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

--- How many distinct client TCP connections a list from requests() shows.
function tls.distinct_connections(list)
  local seen, n = {}, 0
  for _, r in ipairs(list) do
    if not seen[r.connection] then
      seen[r.connection] = true
      n = n + 1
    end
  end
  return n
end

--- How many distinct client TCP connections the access log shows.
function Front:connections(opts)
  return tls.distinct_connections(self:requests(opts))
end

--- Makes requests() and connections() start from here.
function Front:reset()
  local text = self:read("access.log") or ""
  local n = 0
  for _ in text:gmatch("[^\n]+") do n = n + 1 end
  self.skip = n
end

--- Starts nginx with TLS and HTTP/2 in front of upstream_url, an origin
-- such as the emulator's m.api ("http://127.0.0.1:PORT"); paths are passed
-- through unchanged. opts is reserved. Raises when nginx does not start.
function tls.start(upstream_url, opts)
  assert(opts == nil or type(opts) == "table", "opts must be a table")
  local upstream = tostring(upstream_url):match("^http://([%w.%-]+:%d+)/?$")
  assert(upstream, "tls.start wants an http://HOST:PORT origin, got " .. tostring(upstream_url))
  local front, err = nginx.start({
    name = "tls",
    prepare = make_certificates,
    conf = function(dir, port) return nginx_conf(dir, port, upstream) end,
  })
  if not front then error("the TLS front did not start: " .. err, 2) end
  front.url = "https://127.0.0.1:" .. front.port
  front.ca_file = front.dir .. "/ca.crt"
  front.skip = 0
  return setmetatable(front, Front)
end

--- For a describe block's setup: the emulator and a front before it.
-- Returns both; when the front does not start, stops the emulator and raises.
function tls.start_with_mock()
  local m = helpers.start_mock()
  local ok, front = pcall(tls.start, m.api)
  if not ok then
    m:stop()
    error(front, 0)
  end
  return m, front
end

--- Before each test: both forget what they saw; the emulator takes `config`.
function tls.reset_with_mock(m, front, config)
  m:reset()
  m:config(config)
  front:reset()
end

--- For teardown: stops both (either may be nil, when setup failed).
function tls.stop_with_mock(m, front)
  if front then front:stop() end
  if m then m:stop() end
end

return tls
