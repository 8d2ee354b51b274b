-- nginx for the specs, as spec/support/tls.lua and spec/support/openresty.lua
-- run it: one configuration, in a temporary directory, on a free port of
-- 127.0.0.1.
--
--   local nginx = require("spec.support.nginx")
--   local server, err = nginx.start{
--     name = "tls",                             -- the directory: /tmp/imgedit-NAME.XXXXXX
--     conf = function(dir, port) return text end, -- nginx.conf for that directory and port
--     prepare = function(dir) ... end,          -- optional: fills the directory first (keys...)
--     prefix = path,                            -- optional: nginx's -p (default: the directory)
--     env = {NAME = "value"},                   -- optional: nginx's environment
--     install = "install the Debian package nginx (make deps)", -- optional: when nginx is missing
--   }
--   server.port, server.dir, server.prefix
--   server:read("access.log")                   -- a file of the directory, or nil
--   server:error_log()                          -- what nginx said so far
--   server:stop()                               -- idempotent
--
-- start() returns nil and a message when nginx does not start; it tries a
-- few ports (someone else can take a free port before nginx binds it).
-- The configuration must listen on 127.0.0.1:port and put the pid file at
-- DIR/nginx.pid (start and stop go by it); its logs and temp files belong
-- in the directory too (DIR/tmp exists, writable by nginx's worker).
--
-- nginx runs in the foreground under a small shell that reads our pipe: on
-- EOF (stop(), or this process going away without calling it) the shell
-- ends nginx if it still runs and removes the directory.

local socket = require("socket")
local helpers = require("spec.helpers")

local quote, read = helpers.shell_quote, helpers.read

local nginx = {}

local START_TIMEOUT = 10 -- seconds for nginx to listen
local STOP_TIMEOUT = 10  -- seconds for nginx to exit
local PORT_ATTEMPTS = 3  -- a free port can be taken by someone else before nginx binds it

local CANDIDATES = { "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx" }

--- The nginx command; raises with `install` (what to do) when there is none.
function nginx.find(install)
  local path = helpers.run("command -v nginx || true"):match("^(%S+)")
  if path then return path end
  for _, p in ipairs(CANDIDATES) do
    if helpers.exists(p) then return p end
  end
  error("nginx not found: " .. (install or "install the Debian package nginx (make deps)"), 2)
end

local function can_connect(port)
  local c = socket.tcp()
  c:settimeout(0.2)
  local ok = c:connect("127.0.0.1", port)
  c:close()
  return ok ~= nil
end

local Server = {}
Server.__index = Server
nginx.Server = Server

--- A file of the temporary directory, or nil.
function Server:read(name)
  return read(self.dir .. "/" .. name)
end

--- nginx's error log, then what it wrote on stderr (for messages when
-- something goes wrong).
function Server:error_log()
  return (self:read("error.log") or "") .. (self:read("stderr.log") or "")
end

--- Ends nginx (by its pid file) and removes the temporary directory. Idempotent.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  local pidfile = self.dir .. "/nginx.pid"
  local pid = (read(pidfile) or ""):match("^(%d+)")
  if pid then
    os.execute("kill -TERM " .. pid .. " 2>/dev/null")
    -- the master removes its pid file when it exits
    local deadline = socket.gettime() + STOP_TIMEOUT
    while read(pidfile) and socket.gettime() < deadline do socket.sleep(0.01) end
    if read(pidfile) then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  end
  -- the watcher shell ends on EOF, and close() waits for it (and nginx)
  self.proc:close()
  helpers.rmdir(self.dir)
end

--- One attempt on one port: nginx under its watcher shell, then a bounded
-- wait until it listens. Returns the pipe to the shell, or nil and why not
-- (the directory stays, for another attempt).
local function launch(binary, dir, prefix, port, conf_text, env)
  local conf = dir .. "/nginx.conf"
  helpers.write(conf, conf_text)
  os.remove(dir .. "/error.log")
  local pidfile = dir .. "/nginx.pid"
  local assign = {}
  for name, value in pairs(env or {}) do assign[#assign + 1] = name .. "=" .. quote(value) end
  table.sort(assign)
  -- nginx in the background (stdin /dev/null), the shell reading our pipe:
  -- on EOF (stop(), or this process ended) it stops nginx if still running.
  -- make check-asan preloads the ASan runtime for the processes that load
  -- the sanitized core; nginx is not one of them (its LuaJIT loads the plain
  -- build), and its own exit-time allocations are not ours to report
  local cmd = table.concat({
    "env -u LD_PRELOAD", table.concat(assign, " "),
    quote(binary), "-p", quote(prefix .. "/"), "-e", quote(dir .. "/error.log"),
    "-c", quote(conf), "-g", quote("daemon off;"),
    "</dev/null >>" .. quote(dir .. "/stderr.log") .. " 2>&1 &",
    "pid=$!;",
    "cat >/dev/null;",
    "if [ -f " .. quote(pidfile) .. " ]; then kill -TERM \"$pid\" 2>/dev/null; fi;",
    "wait \"$pid\" 2>/dev/null;",
    -- the directory goes too, unless launch() wants it for another attempt
    "[ -f " .. quote(dir .. "/keep") .. " ] || rm -rf " .. quote(dir),
  }, " ")
  local proc = assert(io.popen(cmd, "w"))
  local function log()
    return (read(dir .. "/error.log") or "") .. (read(dir .. "/stderr.log") or "")
  end
  local function give_up(message)
    helpers.write(dir .. "/keep", "")
    proc:close()
    os.remove(dir .. "/keep")
    return nil, message
  end
  local deadline = socket.gettime() + START_TIMEOUT
  while socket.gettime() < deadline do
    if read(pidfile) and can_connect(port) then return proc end
    local text = log()
    if text:find("[emerg]", 1, true) then return give_up(text) end
    socket.sleep(0.02)
  end
  return give_up(("nginx did not listen on 127.0.0.1:%d within %d s\n%s"):format(port, START_TIMEOUT, log()))
end

--- Starts nginx (see above); returns the server, or nil and a message.
function nginx.start(opts)
  local ok, binary = pcall(nginx.find, opts.install)
  if not ok then return nil, binary end
  local dir
  ok, dir = pcall(helpers.run, "mktemp -d /tmp/imgedit-" .. opts.name .. ".XXXXXX")
  if not ok then return nil, dir end
  dir = dir:match("^(%S+)")
  local prepared, err = pcall(function()
    -- nginx's worker (an unprivileged user when run as root) writes the temp files
    helpers.run("chmod 711 " .. quote(dir) .. " && mkdir -p " .. quote(dir .. "/tmp"))
    if opts.prepare then opts.prepare(dir) end
  end)
  if not prepared then
    helpers.rmdir(dir)
    return nil, err
  end
  local prefix = opts.prefix or dir
  local proc, port, log
  for _ = 1, PORT_ATTEMPTS do
    port = helpers.free_port()
    proc, log = launch(binary, dir, prefix, port, opts.conf(dir, port), opts.env)
    if proc or not log:find("in use", 1, true) then break end
  end
  if not proc then
    helpers.rmdir(dir)
    return nil, log
  end
  return setmetatable({ port = port, dir = dir, prefix = prefix, proc = proc }, Server)
end

return nginx
