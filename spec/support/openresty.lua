-- nginx with Debian's Lua module (libnginx-mod-http-lua) for the specs: one
-- worker on 127.0.0.1, imgedit loaded from this checkout (its Lua files and
-- build/luajit/imgedit/core.so, built here when missing).
--
--   local openresty = require("spec.support.openresty")
--   local web = openresty.start{
--     env = {FOXAPI_API_KEY = "sk-test", FOXAPI_BASE_URL = m.foxapi},
--     init_worker = 'require("imgedit").runtime("blocking")', -- optional
--     locations = {["/gather"] = "lua code"},                  -- optional, more content handlers
--   }
--   web.url, web.port, web.prefix
--   web:error_log()                -- nginx's error log so far
--   web:stop()                     -- idempotent
--   openresty.start{conf = text, prefix_is_root = true, env = ...} -- a whole nginx.conf of one's own
--
-- The default configuration serves /edit and /health with
-- examples/openresty/handler.lua, and /stats: the worker's pid, imgedit's
-- runtime and the ngx runtime's counters, as JSON.
--
-- As with spec/support/tls.lua: a temporary prefix directory that stop()
-- removes, and nginx in the foreground under a small shell that also ends it
-- when this process goes away without calling stop() (its stdin is our pipe).

local socket = require("socket")

local openresty = {}

local START_TIMEOUT = 10 -- seconds for nginx to listen
local STOP_TIMEOUT = 10  -- seconds for nginx to exit
local PORT_ATTEMPTS = 3  -- a free port can be taken by someone else before nginx binds it

--- Where Debian's packages put the modules (nginx's --modules-path), and
-- the older /usr/share/nginx/modules.
local MODULE_DIRS = { "/usr/lib/nginx/modules", "/usr/share/nginx/modules" }

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
  if ok ~= true and ok ~= 0 then -- Lua 5.1 returns the status number
    error(("command failed (%s): %s\n%s"):format(tostring(code or ok), cmd, out), 3)
  end
  return out
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- The checkout this file is in (absolute).
local function checkout()
  local dir = debug.getinfo(1, "S").source:match("^@(.-)spec/support/openresty%.lua$") or ""
  if dir:sub(1, 1) ~= "/" then dir = run("pwd"):match("^(.-)%s*$") .. "/" .. dir end
  return (dir:gsub("/%./", "/"):gsub("/$", ""))
end
openresty.ROOT = checkout()

local function find_nginx()
  local path = run("command -v nginx || true"):match("^(%S+)")
  if path then return path end
  for _, p in ipairs({ "/usr/sbin/nginx", "/usr/local/sbin/nginx" }) do
    if exists(p) then return p end
  end
  error("nginx not found: install the Debian packages nginx and libnginx-mod-http-lua (make deps)", 3)
end

--- The `load_module` lines for the NDK and the Lua module.
function openresty.load_modules()
  for _, dir in ipairs(MODULE_DIRS) do
    local ndk, lua = dir .. "/ndk_http_module.so", dir .. "/ngx_http_lua_module.so"
    if exists(ndk) and exists(lua) then
      return ("load_module %s;\nload_module %s;\n"):format(ndk, lua)
    end
  end
  error("nginx's Lua module not found in " .. table.concat(MODULE_DIRS, " or ")
    .. ": install the Debian package libnginx-mod-http-lua (make deps)", 3)
end

--- build/luajit/imgedit/core.so, for nginx's LuaJIT (made when missing).
function openresty.luajit_core()
  local so = openresty.ROOT .. "/build/luajit/imgedit/core.so"
  if not exists(so) then
    run(("make -C %s --no-print-directory -s all LUA=luajit LUA_PC=luajit"):format(quote(openresty.ROOT)))
  end
  return so
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

local STATS = [[
local rt = require("imgedit.runtime.ngx")
local s = rt.stats
ngx.header["Content-Type"] = "application/json"
ngx.say(require("cjson").encode({ pid = ngx.worker.pid(), runtime = require("imgedit").runtime(),
  waits = s.waits, sleeps = s.sleeps, blocking = s.blocking, performs = s.performs }))
]]

local function default_conf(opts)
  local locations = {
    ["/edit"] = 'require("handler").edit()',
    ["/health"] = 'require("handler").health()',
    ["/stats"] = STATS,
  }
  for path, code in pairs(opts.locations or {}) do locations[path] = code end
  local names = {}
  for path in pairs(locations) do names[#names + 1] = path end
  table.sort(names)
  local blocks = {}
  for _, path in ipairs(names) do
    blocks[#blocks + 1] = ("    location = %s {\n      content_by_lua_block {\n%s\n      }\n    }\n")
      :format(path, locations[path])
  end
  local env = {}
  for name in pairs(opts.env or {}) do env[#env + 1] = "env " .. name .. ";\n" end
  table.sort(env)
  return table.concat({
    openresty.load_modules(),
    "worker_processes 1;\n",
    "error_log DIR/error.log info;\n",
    "pid DIR/nginx.pid;\n",
    table.concat(env),
    "events {\n  worker_connections 1024;\n}\n",
    "http {\n",
    "  access_log DIR/access.log;\n",
    "  client_body_temp_path DIR/tmp/client_body;\n",
    "  proxy_temp_path DIR/tmp/proxy;\n",
    "  fastcgi_temp_path DIR/tmp/fastcgi;\n",
    "  uwsgi_temp_path DIR/tmp/uwsgi;\n",
    "  scgi_temp_path DIR/tmp/scgi;\n",
    '  lua_package_path "ROOT/lua/?.lua;ROOT/lua/?/init.lua;ROOT/examples/openresty/?.lua;;";\n',
    '  lua_package_cpath "ROOT/build/luajit/?.so;;";\n',
    opts.init_worker and ("  init_worker_by_lua_block {\n" .. opts.init_worker .. "\n  }\n") or "",
    "  server {\n",
    "    listen 127.0.0.1:PORT;\n",
    table.concat(blocks),
    "  }\n",
    "}\n",
  })
end

local Server = {}
Server.__index = Server

--- nginx's error log (for messages when something goes wrong).
function Server:error_log()
  return (read_file(self.logs .. "/error.log") or "") .. (read_file(self.logs .. "/stderr.log") or "")
end

--- Ends nginx (by its pid file) and removes the prefix directory. Idempotent.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  local pidfile = self.logs .. "/nginx.pid"
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
  os.execute("rm -rf " .. quote(self.dir))
end

-- dir: our temporary directory (logs, pid); prefix: nginx's -p.
local function launch(nginx, dir, prefix, conf_text, env)
  local conf = dir .. "/nginx.conf"
  write_file(conf, conf_text)
  os.remove(dir .. "/error.log")
  local pidfile = dir .. "/nginx.pid"
  local assign = {}
  for name, value in pairs(env or {}) do assign[#assign + 1] = name .. "=" .. quote(value) end
  -- nginx in the background (stdin /dev/null), the shell reading our pipe:
  -- on EOF (stop(), or this process ended) it stops nginx if still running.
  local cmd = table.concat({
    "env", table.concat(assign, " "),
    quote(nginx), "-p", quote(prefix .. "/"), "-e", quote(dir .. "/error.log"),
    "-c", quote(conf), "-g", quote("daemon off;"),
    "</dev/null >>" .. quote(dir .. "/stderr.log") .. " 2>&1 &",
    "pid=$!;",
    "cat >/dev/null;",
    "if [ -f " .. quote(pidfile) .. " ]; then kill -TERM \"$pid\" 2>/dev/null; fi;",
    "wait \"$pid\" 2>/dev/null;",
    "[ -f " .. quote(dir .. "/keep") .. " ] || rm -rf " .. quote(dir),
  }, " ")
  local proc = assert(io.popen(cmd, "w"))
  local function give_up(message)
    write_file(dir .. "/keep", "")
    proc:close()
    os.remove(dir .. "/keep")
    return nil, message
  end
  local port = tonumber(conf_text:match("listen 127%.0%.0%.1:(%d+)"))
  local deadline = socket.gettime() + START_TIMEOUT
  while socket.gettime() < deadline do
    if read_file(pidfile) and can_connect(port) then return proc end
    local log = (read_file(dir .. "/error.log") or "") .. (read_file(dir .. "/stderr.log") or "")
    if log:find("[emerg]", 1, true) then return give_up(log) end
    socket.sleep(0.02)
  end
  return give_up(("nginx did not listen on 127.0.0.1:%d within %d s\n%s%s"):format(port, START_TIMEOUT,
    read_file(dir .. "/error.log") or "", read_file(dir .. "/stderr.log") or ""))
end

--- Starts nginx; raises when it does not start. opts: env (variables for
-- nginx, passed on to the worker), init_worker and locations (see above);
-- or conf, a whole configuration in which DIR stands for the temporary
-- directory (logs, pid, temp files) and PORT for the port, with
-- prefix_is_root to run it with the checkout as nginx's prefix.
function openresty.start(opts)
  opts = opts or {}
  local nginx = find_nginx()
  openresty.luajit_core()
  local dir = run("mktemp -d /tmp/imgedit-openresty.XXXXXX"):match("^(%S+)")
  local ok, err = pcall(function()
    -- nginx's worker (an unprivileged user when run as root) writes the temp files
    run("chmod 711 " .. quote(dir) .. " && mkdir -p " .. quote(dir .. "/tmp"))
  end)
  if not ok then
    os.execute("rm -rf " .. quote(dir))
    error(err, 2)
  end
  local template = opts.conf or default_conf(opts)
  -- as root, the worker would be nobody, who may not be able to read the checkout
  if run("id -u"):match("^0%s") then template = "user root;\n" .. template end
  local prefix = opts.prefix_is_root and openresty.ROOT or dir
  local proc, port, log
  for _ = 1, PORT_ATTEMPTS do
    port = free_port()
    local text = template:gsub("DIR", dir):gsub("ROOT", openresty.ROOT):gsub("PORT", tostring(port))
    proc, log = launch(nginx, dir, prefix, text, opts.env)
    if proc or not log:find("in use", 1, true) then break end
  end
  if not proc then
    os.execute("rm -rf " .. quote(dir))
    error("nginx did not start: " .. log, 2)
  end
  return setmetatable({
    url = "http://127.0.0.1:" .. port,
    port = port,
    prefix = prefix,
    dir = dir,
    logs = dir,
    proc = proc,
  }, Server)
end

return openresty
