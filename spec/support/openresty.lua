-- nginx with Debian's Lua module (libnginx-mod-http-lua) for the specs: one
-- worker on 127.0.0.1, imgedit loaded from this checkout (its Lua files and
-- build/luajit/imgedit/core.so, built here when missing; IMGEDIT_LUAJIT_BUILD
-- names another build directory of the checkout, as `make check-poll` does).
--
--   local openresty = require("spec.support.openresty")
--   local web = openresty.start{
--     env = {FOXAPI_API_KEY = "sk-test", FOXAPI_BASE_URL = m.foxapi},
--     init_worker = 'require("imgedit").runtime("blocking")', -- optional
--     locations = {["/gather"] = "lua code"},                  -- optional, more content handlers
--     workers = 2,                                             -- optional, worker_processes (1)
--     http = {"lua_shared_dict imgedit 1m;"},                  -- optional, more lines of the http block
--   }
--   web.url, web.port, web.prefix, web.dir
--   web:error_log()                -- nginx's error log so far
--   web:stop()                     -- idempotent
--   openresty.start{conf = text, prefix_is_root = true, env = ...} -- a whole nginx.conf of one's own
--
-- The default configuration serves /edit and /health with
-- examples/openresty/handler.lua, and /stats: the worker's pid, imgedit's
-- runtime, the ngx runtime's counters and its state (transfers in flight,
-- parked requests, whether the driver runs), as JSON.
--
-- spec/support/nginx.lua runs nginx, as for spec/support/tls.lua: in a
-- temporary directory that stop() removes, and ended should this process go
-- away without calling stop().

local helpers = require("spec.helpers")
local nginx = require("spec.support.nginx")

local openresty = {}

--- Where Debian's packages put the modules (nginx's --modules-path), and
-- the older /usr/share/nginx/modules.
local MODULE_DIRS = { "/usr/lib/nginx/modules", "/usr/share/nginx/modules" }

local exists = helpers.exists

--- The checkout this file is in (absolute).
openresty.ROOT = helpers.ROOT

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

--- The build directory of the core for nginx's LuaJIT, in the checkout.
local LUAJIT_BUILD = os.getenv("IMGEDIT_LUAJIT_BUILD") or "build/luajit"

--- LUAJIT_BUILD/imgedit/core.so, for nginx's LuaJIT (made when missing).
function openresty.luajit_core()
  local so = openresty.ROOT .. "/" .. LUAJIT_BUILD .. "/imgedit/core.so"
  if not exists(so) then
    helpers.run(("make -C %s --no-print-directory -s all LUA=luajit LUA_PC=luajit BUILD=%s")
      :format(helpers.shell_quote(openresty.ROOT), helpers.shell_quote(LUAJIT_BUILD)))
  end
  return so
end

local STATS = [[
local rt = require("imgedit.runtime.ngx")
local out = { pid = ngx.worker.pid(), runtime = require("imgedit").runtime() }
for name, n in pairs(rt.stats) do out[name] = n end
for name, v in pairs(rt.state()) do out[name] = v end
ngx.header["Content-Type"] = "application/json"
ngx.say(require("cjson").encode(out))
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
    ("worker_processes %d;\n"):format(opts.workers or 1),
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
    '  lua_package_cpath "ROOT/' .. LUAJIT_BUILD .. '/?.so;;";\n',
    opts.init_worker and ("  init_worker_by_lua_block {\n" .. opts.init_worker .. "\n  }\n") or "",
    opts.http and ("  " .. table.concat(opts.http, "\n  ") .. "\n") or "",
    "  server {\n",
    "    listen 127.0.0.1:PORT;\n",
    table.concat(blocks),
    "  }\n",
    "}\n",
  })
end

--- Starts nginx; raises when it does not start. opts: env (variables for
-- nginx, passed on to the workers), init_worker, locations, workers and
-- http (see above);
-- or conf, a whole configuration in which DIR stands for the temporary
-- directory (logs, pid, temp files) and PORT for the port, with
-- prefix_is_root to run it with the checkout as nginx's prefix.
function openresty.start(opts)
  opts = opts or {}
  openresty.luajit_core()
  local template = opts.conf or default_conf(opts)
  -- as root, the worker would be nobody, who may not be able to read the checkout
  if helpers.run("id -u"):match("^0%s") then template = "user root;\n" .. template end
  local web, err = nginx.start({
    name = "openresty",
    install = "install the Debian packages nginx and libnginx-mod-http-lua (make deps)",
    prefix = opts.prefix_is_root and openresty.ROOT or nil,
    env = opts.env,
    conf = function(dir, port)
      return (template:gsub("DIR", dir):gsub("ROOT", openresty.ROOT):gsub("PORT", tostring(port)))
    end,
  })
  if not web then error("nginx did not start: " .. err, 2) end
  web.url = "http://127.0.0.1:" .. web.port
  return web
end

return openresty
