-- Shared by the specs: the emulator, clients pointed at it, files on disk.
local imgedit = require("imgedit")
local mock = require("imgedit.mock.process")

local helpers = {}

--- The interpreter running the specs, for child processes that load the
-- same build of imgedit.core.
helpers.LUA = rawget(_G, "jit") and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))

--- The key the emulator accepts.
helpers.KEY = "sk-test"

--- Polls fast: the emulator's tasks take a fraction of a second.
helpers.FAST_POLL = { interval = 0.05, max_interval = 0.2 }

--- Starts an emulator for one spec file (stop it in teardown).
function helpers.start_mock(opts)
  return mock.start(opts)
end

local function with_defaults(base_url, opts)
  local o = { api_key = helpers.KEY, base_url = base_url }
  for k, v in pairs(opts or {}) do o[k] = v end
  return o
end

--- A foxapi client on the emulator.
function helpers.fox(m, opts)
  local o = with_defaults(m.foxapi, opts)
  if o.poll == nil then o.poll = helpers.FAST_POLL end
  return assert(imgedit.client("foxapi", o))
end

--- A powertokens client on the emulator.
function helpers.pt(m, opts)
  return assert(imgedit.client("powertokens", with_defaults(m.powertokens, opts)))
end

--- The requests the emulator saw on its API listener (not the CDN), in order.
function helpers.api_requests(m, path)
  return m:requests({ listener = "api", path = path })
end

--- s as one word for sh (in single quotes).
function helpers.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs a shell command; returns what it printed (stdout and stderr).
-- Raises with that output when the command fails (under every interpreter:
-- Lua 5.1's close() of a pipe does not tell the exit status).
function helpers.run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"exit=$?\"", "r"))
  local text = p:read("*a")
  p:close()
  local out, status = text:match("^(.*)exit=(%d+)\n$")
  if status ~= "0" then
    error(("command failed (exit %s): %s\n%s"):format(tostring(status), cmd, out or text), 2)
  end
  return out
end

--- The checkout spec/ is in, as an absolute path.
helpers.ROOT = (function()
  local dir = debug.getinfo(1, "S").source:match("^@(.-)spec/helpers%.lua$") or ""
  if dir:sub(1, 1) ~= "/" then dir = helpers.run("pwd"):match("^(.-)%s*$") .. "/" .. dir end
  return (dir:gsub("/%./", "/"):gsub("/$", ""))
end)()

--- Runs this checkout's bin/imgedit with `args` against emulator `m` (its
-- URLs and the key in the environment; nil: none), with the module paths of
-- this process so that the child loads the same build. `opts`: `env` (more
-- variables; false unsets one), `shell` (commands run first in the same
-- shell: a ulimit, a trap), `timeout` (seconds, default 60). Standard input
-- is /dev/null. Returns {status, out, err}.
function helpers.imgedit(m, args, opts)
  opts = opts or {}
  local env = {
    FOXAPI_API_KEY = helpers.KEY, POWERTOKENS_API_KEY = helpers.KEY,
    FOXAPI_BASE_URL = m and m.foxapi or false, POWERTOKENS_BASE_URL = m and m.powertokens or false,
    LUA_PATH = package.path, LUA_CPATH = package.cpath, IMGEDIT_LOG = false,
  }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  -- env(1) takes its -u options before the assignments
  local unset, set = {}, {}
  for k, v in pairs(env) do
    if v == false then unset[#unset + 1] = "-u " .. k else set[#set + 1] = k .. "=" .. helpers.shell_quote(v) end
  end
  local words = { "env", table.concat(unset, " "), table.concat(set, " ") }
  words[#words + 1] = ("timeout -k 5 %d %s %s"):format(opts.timeout or 60, helpers.LUA,
    helpers.shell_quote(helpers.ROOT .. "/bin/imgedit"))
  for _, a in ipairs(args) do words[#words + 1] = helpers.shell_quote(a) end
  local out, err = os.tmpname(), os.tmpname()
  local p = assert(io.popen(("%s %s </dev/null >%s 2>%s; echo $?"):format(opts.shell or "",
    table.concat(words, " "), helpers.shell_quote(out), helpers.shell_quote(err))))
  local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  local result = { status = status, out = helpers.read(out) or "", err = helpers.read(err) or "" }
  os.remove(out)
  os.remove(err)
  return result
end

--- A loopback port with nothing listening on it: the kernel's pick for
-- port 0, bound, then closed.
function helpers.free_port()
  local s = assert(require("socket").bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

--- A new empty directory.
function helpers.tmpdir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkdir -p " .. helpers.shell_quote(path)))
  return path
end

function helpers.rmdir(path)
  os.execute("rm -rf " .. helpers.shell_quote(path))
end

--- Whether a file (or directory) exists.
function helpers.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- A file's whole content, or nil when it does not exist.
function helpers.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

function helpers.write(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

--- Names of the files in a directory.
function helpers.ls(dir)
  local names = {}
  local p = assert(io.popen("ls -A " .. helpers.shell_quote(dir)))
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  table.sort(names)
  return names
end

--- Fetches a URL with luasocket (independent of the code under test).
function helpers.fetch(url)
  local http = require("socket.http")
  local ltn12 = require("ltn12")
  local chunks = {}
  local _, status = http.request({ url = url, sink = ltn12.sink.table(chunks) })
  return table.concat(chunks), status
end

--- A valid PNG as bytes, from the emulator's generator.
function helpers.png(seed)
  local png = require("imgedit.mock.png")
  return png.bytes(png.image(tostring(seed or 1), 2000))
end

return helpers
