-- Smoke test of an installed rock (make check-rock): imgedit loads from the
-- LuaRocks tree, not from the checkout; the installed emulator command
-- starts; one edit through each provider saves a PNG.
local imgedit = require("imgedit")
local mock = require("imgedit.mock.process")

--- package.searchpath, which Lua 5.1 lacks.
local function search(name, path)
  for template in path:gmatch("[^;]+") do
    local file = template:gsub("%?", (name:gsub("%.", "/")))
    local f = io.open(file)
    if f then
      f:close()
      return file
    end
  end
end

local tree = assert(os.getenv("ROCK_TREE"), "ROCK_TREE is not set")
for _, name in ipairs({ "imgedit", "imgedit.mock.process" }) do
  local path = assert(search(name, package.path))
  assert(path:sub(1, #tree) == tree, name .. " comes from " .. path .. ", not from the installed tree")
end
assert(search("imgedit.core", package.cpath):sub(1, #tree) == tree, "imgedit.core is not the installed one")

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'"))
local emulator = mock.start({ config = { task_delay = 0.2 } })
local ok, problem = pcall(function()
  local fox = assert(imgedit.client("foxapi", { api_key = "sk-test", base_url = emulator.foxapi }))
  local pt = assert(imgedit.client("powertokens", { api_key = "sk-test", base_url = emulator.powertokens }))
  local fox_result = assert(fox:edit({ prompt = "p", images = { "https://example.com/a.jpg" } }))
  local fox_paths = assert(fox_result:save_all(dir, "fox"))
  local pt_paths = assert(assert(pt:edit({ prompt = "p", images = { "https://example.com/a.jpg" },
                                            response_format = "b64_json" })):save_all(dir, "pt"))
  for _, path in ipairs({ fox_paths[1], pt_paths[1] }) do
    local f = assert(io.open(path, "rb"))
    assert(f:read(8) == "\137PNG\r\n\26\n", path .. " is not a PNG")
    f:close()
  end
end)
emulator:stop()
os.execute("rm -rf '" .. dir .. "'")
assert(ok, problem)
print(("installed imgedit %s on %s: loads from the tree, edits through both providers"):format(
  imgedit._VERSION, rawget(_G, "jit") and jit.version or _VERSION))
