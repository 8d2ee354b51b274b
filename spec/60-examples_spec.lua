-- Examples: each script in examples/ runs against the emulator, as a user
-- would run it, so that none of them rots.
local helpers = require("spec.helpers")

local PNG = "\137PNG\r\n\26\n"

describe("examples", function()
  local m, dir

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    m:config({ task_delay = 0.3 })
    dir = helpers.tmpdir()
  end)
  after_each(function() helpers.rmdir(dir) end)

  --- Runs an example with the emulator's URLs and key in its environment;
  -- returns its exit status and its output lines.
  local function run(script, args)
    local env = ("FOXAPI_BASE_URL=%s FOXAPI_API_KEY=sk-test POWERTOKENS_BASE_URL=%s POWERTOKENS_API_KEY=sk-test")
      :format(m.foxapi, m.powertokens)
    local command = ("%s timeout 60 %s examples/%s %s 2>&1; echo \"exit=$?\"")
      :format(env, helpers.LUA, script, table.concat(args or {}, " "))
    local p = assert(io.popen(command))
    local lines = {}
    for line in p:lines() do lines[#lines + 1] = line end
    p:close()
    local status = tonumber(table.remove(lines):match("^exit=(%d+)$"))
    return status, lines
  end

  local function assert_pngs(names)
    assert.same(names, helpers.ls(dir))
    for _, name in ipairs(names) do
      assert.equal(PNG, helpers.read(dir .. "/" .. name):sub(1, 8))
    end
  end

  it("foxapi_edit.lua submits, reports progress and saves the image", function()
    local status, lines = run("foxapi_edit.lua", { dir })
    assert.equal(0, status, table.concat(lines, "\n"))
    assert.matches("^task task%-.*: pending 0%%$", lines[1])
    assert.equal(dir .. "/beach-1.png", lines[#lines])
    assert_pngs({ "beach-1.png" })
    assert.equal(1, #m:requests({ method = "POST", path = "/foxapi/v1/images/generations" }))
  end)

  it("powertokens_edit.lua sends the seed body and saves both images", function()
    local status, lines = run("powertokens_edit.lua", { dir })
    assert.equal(0, status, table.concat(lines, "\n"))
    assert_pngs({ "sunset-1.png", "sunset-2.png" })
    local sent = m:requests({ path = "/powertokens/v1/images/edits" })[1].json
    assert.equal("1536*1024", sent.size)
    assert.equal(0, sent.seed)
    assert.is_false(sent.watermark)
  end)

  it("b64_results.lua sends a local file and saves base64 results", function()
    local input = dir .. "/input.png"
    helpers.write(input, helpers.png(3))
    local out = dir .. "/out"
    assert(os.execute("mkdir -p '" .. out .. "'"))
    local status, lines = run("b64_results.lua", { input, out })
    assert.equal(0, status, table.concat(lines, "\n"))
    assert.same({ "watercolour-1.png", "watercolour-2.png" }, helpers.ls(out))
    local content = m:requests({ path = "/powertokens/v1/images/edits" })[1].json.input.messages[1].content
    assert.matches("^data:image/png;base64,", content[1].image)
    assert.equal(0, #m:requests({ listener = "cdn" }))
  end)

  it("b64_results.lua without arguments is a usage error", function()
    local status, lines = run("b64_results.lua")
    assert.equal(2, status)
    assert.matches("usage", lines[1])
  end)

  it("batch.lua runs eight jobs on both providers, and a failure stops no other", function()
    m:faults({ { path = "/powertokens/v1/images/edits", status = 400, times = 1 } })
    local status, lines = run("batch.lua", { dir })
    assert.equal(1, status)
    local failed, done = 0, 0
    for _, line in ipairs(lines) do
      if line:match("^job %d+ failed: imgedit: api") then failed = failed + 1 end
      if line:match("^job %d+: ") then done = done + 1 end
    end
    assert.equal(1, failed)
    assert.equal(7, done)
    assert.equal(7, #helpers.ls(dir))
  end)

  it("resume_task.lua submits in one process and collects in another, paying once", function()
    local status, lines = run("resume_task.lua", { "submit" })
    assert.equal(0, status, table.concat(lines, "\n"))
    local id = lines[1]
    assert.matches("^task%-", id)
    status, lines = run("resume_task.lua", { "wait", id, dir })
    assert.equal(0, status, table.concat(lines, "\n"))
    assert_pngs({ id .. "-1.png" })
    assert.equal(1, #m:requests({ method = "POST" }))
  end)

  it("demo.lua (make demo) writes one PNG per provider", function()
    local status, lines = run("demo.lua", { dir })
    assert.equal(0, status, table.concat(lines, "\n"))
    assert_pngs({ "foxapi-1.png", "powertokens-1.png" })
  end)
end)
