-- Clients: options, base URLs, keys, and how HTTP failures become errors.
local imgedit = require("imgedit")
local helpers = require("spec.helpers")

local SUBMIT = "/foxapi/v1/images/generations"
local EDITS = "/powertokens/v1/images/edits"
local SEED_URL = "https://example.com/portrait.jpg"
local FOX_EDIT = { prompt = "p", images = { SEED_URL } }
local PT_EDIT = { prompt = "p", images = { SEED_URL } }

describe("clients", function()
  local m

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    m:config({ task_delay = 0.2 })
  end)

  describe("creation", function()
    it("tostring shows the provider and base URL, never the key", function()
      local fox = helpers.fox(m, { api_key = "sk-secret-123" })
      assert.equal("imgedit.client(foxapi, " .. m.foxapi .. ")", tostring(fox))
      for key, value in pairs(fox) do
        assert.is_nil(tostring(value):find("sk-secret-123", 1, true), "field " .. key .. " shows the key")
      end
      for key, value in pairs(fox.config) do
        assert.is_nil(tostring(value):find("sk-secret-123", 1, true), "config." .. key .. " shows the key")
      end
    end)

    it("uses the provider's URL by default, without a trailing slash", function()
      assert.equal("imgedit.client(powertokens, https://api.powertokens.ai)",
        tostring(assert(imgedit.client("powertokens"))))
      assert.equal("imgedit.client(foxapi, https://proxy.example/fox)",
        tostring(assert(imgedit.client("foxapi", { base_url = "https://proxy.example/fox/" }))))
    end)

    it("refuses plain http to a non-loopback host before any connection", function()
      local fox, err = imgedit.client("foxapi", { base_url = "http://gateway.invalid" })
      assert.is_nil(fox)
      assert.equal("invalid_request", err.kind)
      assert.matches("allow_http", err.message, 1, true)
      assert(imgedit.client("foxapi", { base_url = "http://gateway.invalid", allow_http = true }))
      assert(imgedit.client("foxapi", { base_url = "http://localhost:9" }))
    end)

    it("refuses unknown providers, unknown options and bad option values", function()
      local _, err = imgedit.client("openai")
      assert.equal("invalid_request", err.kind)
      assert.matches('unknown provider "openai"', err.message, 1, true)
      _, err = imgedit.client("foxapi", { apikey = "x" })
      assert.matches("unknown option \"apikey\"", err.message, 1, true)
      _, err = imgedit.client("foxapi", { timeout = "10" })
      assert.matches("option timeout must be a number", err.message, 1, true)
      _, err = imgedit.client("foxapi", { max_retries = -1 })
      assert.matches("option max_retries must be between 0 and 10", err.message, 1, true)
      _, err = imgedit.client("foxapi", { headers = { ["X-Bad"] = "a\r\nInjected: 1" } })
      assert.matches("line break", err.message, 1, true)
      _, err = imgedit.client("foxapi", { base_url = "ftp://example.com" })
      assert.matches("scheme \"ftp\" is not supported", err.message, 1, true)
      _, err = imgedit.client("foxapi", { poll = { every = 1 } })
      assert.matches("poll.every is unknown", err.message, 1, true)
    end)

    it("raises for a wrong Lua type of its arguments", function()
      assert.has_error(function() imgedit.client(1) end, "bad argument #1 to 'client' (string expected, got number)")
      assert.has_error(function() imgedit.client("foxapi", "key") end,
        "bad argument #2 to 'client' (table expected, got string)")
    end)

    it("a missing key is an auth error at the first call, with no request made", function()
      local fox = assert(imgedit.client("foxapi", { base_url = m.foxapi, api_key = nil }))
      local result, err = fox:edit(FOX_EDIT)
      assert.is_nil(result)
      assert.equal("auth", err.kind)
      assert.matches("FOXAPI_API_KEY", tostring(err), 1, true)
      assert.equal(0, #m:requests())
    end)

    it("adds the user's headers and User-Agent to API requests", function()
      local pt = helpers.pt(m, { headers = { ["X-Team"] = "design" }, user_agent = "my-app/2" })
      assert(pt:edit(PT_EDIT))
      local seen = helpers.api_requests(m, EDITS)[1].headers
      assert.equal("design", seen["x-team"])
      assert.equal("my-app/2", seen["user-agent"])
      assert.is_nil(seen["expect"])
    end)
  end)

  describe("HTTP errors", function()
    local statuses = {
      { 401, "auth", "authentication_error" },
      { 402, "quota", "insufficient_quota" },
      { 404, "not_found", "not_found" },
      { 422, "api", "invalid_request_error" },
      { 400, "api", "invalid_request_error" },
      { 500, "server", "server_error" },
      { 429, "rate_limited", "rate_limit_error" },
      { 503, "server", "service_unavailable_error" },
    }
    for _, case in ipairs(statuses) do
      local status, kind, type_ = case[1], case[2], case[3]
      it(("HTTP %d is %s with the body's fields"):format(status, kind), function()
        m:faults({ { method = "POST", path = SUBMIT, status = status, times = 10,
          headers = { ["X-Request-Id"] = "req-fault", ["Retry-After"] = "0" },
          body = ('{"error":{"message":"fault %d","type":"%s","code":"c%d"}}'):format(status, type_, status) } })
        local fox = helpers.fox(m, { max_retries = 2 })
        local result, err = fox:submit(FOX_EDIT)
        assert.is_nil(result)
        assert.equal(kind, err.kind)
        assert.equal(status, err.status)
        assert.equal(type_, err.type)
        assert.equal("c" .. status, err.code)
        assert.equal("fault " .. status, err.message)
        assert.equal("req-fault", err.request_id)
        -- a billed POST is resent only on 429 and 503 (doc/providers.md)
        local resent = status == 429 or status == 503
        assert.equal(resent, err.retryable)
        assert.equal(resent and 3 or 1, err.attempts)
        assert.equal(resent and 3 or 1, #helpers.api_requests(m, SUBMIT))
        local line = tostring(err)
        assert.is_nil(line:find("\n"))
        assert.matches("imgedit: " .. kind .. ": fault " .. status, line, 1, true)
        assert.matches("HTTP " .. status, line, 1, true)
      end)
    end

    it("the emulator's own 401 for a wrong key is auth", function()
      local _, err = helpers.pt(m, { api_key = "sk-wrong" }):edit(PT_EDIT)
      assert.equal("auth", err.kind)
      assert.equal(401, err.status)
      assert.equal("authentication_error", err.type)
      assert.is_string(err.request_id)
    end)

    it("an HTML error page from a proxy is still a structured error", function()
      m:faults({ { method = "POST", path = EDITS, kind = "html", status = 502 } })
      local _, err = helpers.pt(m, { max_retries = 0 }):edit(PT_EDIT)
      assert.equal("server", err.kind)
      assert.equal(502, err.status)
      assert.matches("not JSON", err.message, 1, true)
      assert.is_nil(err.message:find("<", 1, true))
    end)

    it("a refused connection is a network error that a POST may retry", function()
      local socket = require("socket")
      local probe = assert(socket.bind("127.0.0.1", 0))
      local _, port = probe:getsockname()
      probe:close()
      local retries = {}
      local pt = assert(imgedit.client("powertokens", { api_key = helpers.KEY, base_url = "http://127.0.0.1:" .. port,
        max_retries = 1, on_retry = function(info) retries[#retries + 1] = info end }))
      local _, err = pt:edit(PT_EDIT)
      assert.equal("network", err.kind)
      assert.is_nil(err.status)
      assert.equal(2, err.attempts)
      assert.equal(1, #retries)
      assert.equal(2, retries[1].attempt)
      assert.equal("network", retries[1].error.kind)
      assert.equal(1, retries[1].error.attempts)
    end)

    it("a 2xx body that is not JSON is a decode error", function()
      m:faults({ { method = "POST", path = EDITS, kind = "truncated_json" } })
      local _, err = helpers.pt(m):edit(PT_EDIT)
      assert.equal("decode", err.kind)
      assert.equal(200, err.status)
      assert.equal(1, #helpers.api_requests(m, EDITS))
    end)

    it("a provider message that echoes the key is redacted", function()
      m:faults({ { method = "POST", path = EDITS, status = 401,
        body = '{"error":{"message":"key sk-test is not valid","type":"authentication_error"}}' } })
      local _, err = helpers.pt(m):edit(PT_EDIT)
      assert.equal("key [redacted] is not valid", err.message)
      assert.is_nil(tostring(err):find(helpers.KEY, 1, true))
    end)
  end)

  describe("logging", function()
    after_each(function() imgedit.log(nil) end)

    it("reports one line per attempt without the key", function()
      local lines = {}
      imgedit.log(function(line) lines[#lines + 1] = line end)
      m:faults({ { method = "POST", path = SUBMIT, status = 503, headers = { ["Retry-After"] = "0" } } })
      assert(helpers.fox(m):edit(FOX_EDIT))
      assert.matches("POST " .. m.foxapi .. "/v1/images/generations %-> 503", lines[1])
      assert.matches("attempt 1/3", lines[1], 1, true)
      assert.matches("-> 200", lines[2], 1, true)
      assert.matches("attempt 2/3", lines[2], 1, true)
      for _, line in ipairs(lines) do assert.is_nil(line:find(helpers.KEY, 1, true)) end
    end)
  end)
end)
