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

--- A new empty directory.
function helpers.tmpdir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkdir -p '" .. path .. "'"))
  return path
end

function helpers.rmdir(path)
  os.execute("rm -rf '" .. path .. "'")
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
  local p = assert(io.popen("ls -A '" .. dir .. "'"))
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
