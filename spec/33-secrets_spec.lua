-- The API key goes to the provider's API and nowhere else: not into errors,
-- log lines, tostring, or requests to the result host.
local imgedit = require("imgedit")
local helpers = require("spec.helpers")

local KEY = "sk-live-Zq8x-SECRET-0123456789"
local SEED_URL = "https://example.com/portrait.jpg"

--- Runs operations that succeed and fail in every way we can provoke and
-- returns everything a user could print.
local function exercise(m, seen)
  local function keep(value) seen[#seen + 1] = tostring(value) end
  local fox = helpers.fox(m, { api_key = KEY, timeout = 0.5, max_retries = 1 })
  local pt = helpers.pt(m, { api_key = KEY, timeout = 0.5, max_retries = 1 })
  keep(fox)
  keep(pt)

  local result = assert(fox:edit({ prompt = "p", images = { SEED_URL } }))
  keep(result)
  keep(result.task)
  keep(result.images[1])

  local faults = {
    { path = "/powertokens/v1/images/edits", status = 401,
      body = '{"error":{"message":"invalid key ' .. KEY .. '","type":"authentication_error","code":"' .. KEY .. '"}}' },
    { path = "/powertokens/v1/images/edits", status = 429, headers = { ["Retry-After"] = "0" }, times = 2 },
    { path = "/powertokens/v1/images/edits", kind = "html", status = 502 },
    { path = "/powertokens/v1/images/edits", kind = "stall", seconds = 1 },
    { path = "/powertokens/v1/images/edits", kind = "redirect", location = m.cdn .. "/files/x" },
  }
  for _, fault in ipairs(faults) do
    m:faults({ fault })
    local _, err = pt:edit({ prompt = "p", images = { SEED_URL } })
    keep(err)
    for _, field in pairs(err) do keep(field) end
  end
  m:config({ task_outcome = "failed", fail_message = "refused for " .. KEY })
  local _, failed = fox:edit({ prompt = "p", images = { SEED_URL } })
  keep(failed)
  for _, field in pairs(failed) do keep(field) end
  return result
end

describe("secrets", function()
  local m

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    m:config({ task_delay = 0.1, keys = { KEY } })
  end)
  after_each(function() imgedit.log(nil) end)

  it("the key is in no tostring, error field or log line", function()
    local seen = {}
    imgedit.log(function(line, record)
      seen[#seen + 1] = line
      for _, value in pairs(record) do seen[#seen + 1] = tostring(value) end
    end)
    exercise(m, seen)
    assert.is_true(#seen > 30)
    for _, text in ipairs(seen) do
      assert.is_nil(text:find(KEY, 1, true), "the key leaked into: " .. text:gsub(KEY:gsub("%p", "%%%0"), "<KEY>"))
    end
    -- the requests that went to the API did carry it
    assert.equal("Bearer " .. KEY, helpers.api_requests(m, "/foxapi/")[1].headers["authorization"])
  end)

  it("IMGEDIT_LOG=debug writes a line per attempt to stderr, without the key", function()
    local script = ([[
      local imgedit = require("imgedit")
      local pt = assert(imgedit.client("powertokens", { api_key = %q, base_url = %q }))
      assert(pt:edit({ prompt = "p", images = { %q } }))
      local _, err = imgedit.client("powertokens", { api_key = "wrong-" .. %q, base_url = %q }):edit({
        prompt = "p", images = { %q } })
      assert(err.kind == "auth")
    ]]):format(KEY, m.powertokens, SEED_URL, KEY, m.powertokens, SEED_URL)
    local path = os.tmpname()
    helpers.write(path, script)
    local p = assert(io.popen("IMGEDIT_LOG=debug " .. helpers.LUA .. " " .. path .. " 2>&1"))
    local output = p:read("*a")
    p:close()
    os.remove(path)
    assert.matches("imgedit: POST " .. m.powertokens .. "/v1/images/edits %-> 200", output)
    assert.matches("-> 401", output, 1, true)
    assert.is_nil(output:find(KEY, 1, true), "the key leaked into the debug log")
  end)

  it("no request to the result host carries the key or the client's headers", function()
    local dir = helpers.tmpdir()
    local fox = helpers.fox(m, { api_key = KEY, headers = { ["X-Team"] = "design" } })
    local result = assert(fox:edit({ prompt = "p", images = { SEED_URL }, n = 2 }))
    assert(result:save_all(dir))
    assert(result.images[1]:bytes())
    helpers.rmdir(dir)
    local downloads = m:requests({ listener = "cdn" })
    assert.equal(3, #downloads)
    for _, request in ipairs(downloads) do
      assert.is_nil(request.headers["authorization"])
      assert.is_nil(request.headers["x-team"])
      for name, value in pairs(request.headers) do
        assert.is_nil(value:find(KEY, 1, true), "header " .. name .. " carries the key")
      end
    end
  end)
end)
