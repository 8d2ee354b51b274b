-- Adding a model is one catalog entry in its provider file plus one rule in
-- its emulator file: a copy of the checkout gets exactly those two changes
-- (a test-only fixture model), and the library, the command and the
-- emulator of that copy serve the new model with no other file touched.
local cjson = require("cjson")
local helpers = require("spec.helpers")
local mock = require("imgedit.mock.process")

local quote = helpers.shell_quote

-- The fixture: a generate-only model with one field of its own.
local CATALOG_ENTRY = [[
  {
    name = "fixture-image", operations = { "generate" }, doc = "a test-only fixture model",
    fields = {
      { name = "prompt", type = "string", required = true, max_length = 100 },
      { name = "n", wire = "num_outputs", type = "integer", min = 1, max = 2, default = 1, send_default = true },
      { name = "fixture_style", type = "string", choices = { "plain", "fancy" } },
    },
  },
]]

local EMULATOR_RULE = [[
  ["fixture-image"] = {
    required = {"prompt"},
    fields = {prompt = check_prompt_upto(100), num_outputs = check_count(2),
              fixture_style = check_choice({"plain", "fancy"})},
  },
]]

--- `text` with `insert` added after the first line that is exactly `after`.
local function insert_after(text, after, insert)
  local s, e = text:find("\n" .. after .. "\n", 1, true)
  assert(s, "anchor not found: " .. after)
  return text:sub(1, e) .. insert .. text:sub(e + 1)
end

describe("a new model", function()
  local copy, m

  setup(function()
    copy = helpers.tmpdir()
    -- (cp without the sanitizer runtime check-asan preloads: it is not under test)
    helpers.run(("env -u LD_PRELOAD cp -r %s/lua %s/bin %s/"):format(quote(helpers.ROOT), quote(helpers.ROOT),
      quote(copy)))
    local provider = copy .. "/lua/imgedit/providers/foxapi.lua"
    helpers.write(provider, insert_after(helpers.read(provider), "foxapi.models = {", CATALOG_ENTRY))
    local emulator = copy .. "/lua/imgedit/mock/foxapi.lua"
    helpers.write(emulator, insert_after(helpers.read(emulator), "local MODELS = {", EMULATOR_RULE))
    m = mock.start({ root = copy })
  end)
  teardown(function()
    m:stop()
    helpers.rmdir(copy)
  end)
  before_each(function() m:reset() m:config({ task_delay = 0.05 }) end)

  --- Runs a Lua chunk, or the copy's command, against the copy's modules.
  local function in_copy(args)
    local env = ("FOXAPI_API_KEY=%s FOXAPI_BASE_URL=%s LUA_CPATH=%s"):format(helpers.KEY, quote(m.foxapi),
      quote(package.cpath))
    local out = os.tmpname()
    local p = assert(io.popen(("cd %s && env %s timeout 60 %s %s >%s 2>&1; echo $?"):format(quote(copy), env,
      helpers.LUA, args, quote(out))))
    local status = tonumber(p:read("*a"):match("%d+"))
    p:close()
    local text = helpers.read(out) or ""
    os.remove(out)
    return status, text
  end

  it("changes exactly two files: the provider's catalog and its emulator", function()
    local out = helpers.run(("cd %s && git diff --no-index --stat lua %s/lua || true"):format(quote(helpers.ROOT),
      quote(copy)))
    local changed = {}
    for path in out:gmatch("([%w_/.-]+%.lua)%s+|") do changed[#changed + 1] = path:match("imgedit/.*$") end
    table.sort(changed)
    assert.same({ "imgedit/mock/foxapi.lua", "imgedit/providers/foxapi.lua" }, changed)
  end)

  it("is listed by imgedit models and gets its own option in the command's help", function()
    local status, text = in_copy("bin/imgedit models -p foxapi --json")
    assert.equal(0, status, text)
    local listed = cjson.decode(text:match("^[^\n]+"))
    local names = {}
    for _, entry in ipairs(listed.models) do names[entry.name] = entry end
    assert.is_table(names["fixture-image"])
    status, text = in_copy("bin/imgedit generate --help")
    assert.equal(0, status, text)
    assert.matches("--fixture-style", text, 1, true)
    assert.matches("fixture-image: one of plain, fancy", text, 1, true)
  end)

  it("is validated by its own rules and sent to the emulator, which accepts it", function()
    local status, text = in_copy("bin/imgedit generate --model fixture-image --prompt p -n 2 --fixture-style fancy"
      .. " -o " .. quote(copy .. "/out"))
    assert.equal(0, status, text)
    local posts = m:requests({ method = "POST" })
    assert.equal(1, #posts)
    assert.same({ model = "fixture-image", prompt = "p", num_outputs = 2, fixture_style = "fancy" }, posts[1].json)
    status, text = in_copy("bin/imgedit generate --model fixture-image --prompt p -n 3")
    assert.equal(2, status)
    assert.matches("n must be between 1 and 2, got 3", text, 1, true)
    status, text = in_copy("bin/imgedit generate --model fixture-image --prompt p --aspect-ratio 1:1")
    assert.equal(2, status)
    assert.matches("--aspect-ratio is not an option of foxapi fixture-image", text, 1, true)
    assert.equal(1, #m:requests({ method = "POST" }))
  end)

  it("is served by the library of the copy", function()
    local chunk = [[
      package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
      local fox = assert(require("imgedit").client("foxapi"))
      local _, err = fox:generate({ model = "fixture-image", prompt = ("x"):rep(101) })
      print(err.kind, err.message)
      local result = assert(fox:generate({ model = "fixture-image", prompt = "p", fixture_style = "plain",
                                           poll = { interval = 0.05 } }))
      print(#result.images)]]
    local script = copy .. "/check.lua"
    helpers.write(script, chunk)
    local status, text = in_copy("check.lua")
    assert.equal(0, status, text)
    assert.matches("invalid_request\tfoxapi generate (fixture-image): prompt is 101 characters long", text, 1, true)
    assert.matches("\n1\n$", text)
  end)
end)
