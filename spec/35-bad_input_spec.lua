-- Careless and hostile input: numbers that are not numbers, bytes C would
-- cut, headers that break the request, a key echoed back by a server.
-- Every case is a clear `nil, err` (never a raise), and nothing is sent.
local cjson = require("cjson")
local imgedit = require("imgedit")
local helpers = require("spec.helpers")

local URL = "https://example.com/portrait.jpg"
local KEY = "sk-live-Echo-7f3a9c-SECRET"
local NAN, INF = 0 / 0, math.huge

describe("bad input", function()
  local m

  setup(function() m = helpers.start_mock({ keys = { helpers.KEY, KEY } }) end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() m:config({ task_delay = 0.05 }) end)

  local function refused(fn, says)
    local ok, result, err = pcall(fn)
    assert(ok, "raised: " .. tostring(result))
    assert.is_nil(result)
    assert.equal("invalid_request", err.kind)
    if says then assert.matches(says, err.message, 1, true) end
    return err
  end

  describe("numbers", function()
    local values = {
      { NAN, "NaN" }, { INF, "infinity" }, { -INF, "-infinity" }, { 1e300, "1e+300" },
      { 2 ^ 53 + 2, "9007199254740994" },
    }
    for _, v in ipairs(values) do
      it(("%s is refused readably for every integer and number field"):format(v[2]), function()
        local value, shown = v[1], v[2]
        local fox, pt = helpers.fox(m), helpers.pt(m)
        for _, case in ipairs({
          function() return fox:edit({ prompt = "p", images = { URL }, n = value }) end,
          function() return pt:edit({ prompt = "p", images = { URL }, seed = value }) end,
          function() return fox:enhance({ image = URL, creativity = value }) end,
          function() return fox:edit({ prompt = "p", images = { URL }, timeout = value }) end,
          function() return pt:edit({ prompt = "p", images = { URL }, timeout = value }) end,
          function() return fox:edit({ prompt = "p", images = { URL }, poll = { interval = value } }) end,
          function() return fox:edit({ prompt = "p", images = { URL }, poll = { max_interval = value } }) end,
          function() return fox:edit({ prompt = "p", images = { URL }, poll = { timeout = value } }) end,
          function() return fox:task("task-1"):wait({ timeout = value }) end,
        }) do
          local err = refused(case)
          assert.matches(shown, err.message, 1, true)
          assert.is_nil(err.message:find("-9223372036854775808", 1, true))
        end
        for _, option in ipairs({ "max_retries", "max_in_flight", "max_response_bytes", "timeout",
                                  "connect_timeout" }) do
          local err = refused(function() return imgedit.client("foxapi", { [option] = value }) end, option)
          assert.matches(shown, err.message, 1, true)
        end
        assert.equal(0, #m:requests())
      end)
    end

    it("an integer the JSON encoder would round is refused, in a parameter or in extra", function()
      local big = require("imgedit.json").max_integer + 2
      refused(function() return helpers.fox(m):edit({ prompt = "p", images = { URL }, n = big }) end,
        "the largest sent exactly")
      refused(function() return helpers.fox(m):edit({ prompt = "p", images = { URL }, extra = { id = big } }) end,
        "would not be sent exactly")
      assert.equal(0, #m:requests())
    end)

    it("poll.interval has a lower bound, so no wait busy-polls", function()
      refused(function()
        return helpers.fox(m):edit({ prompt = "p", images = { URL }, poll = { interval = 0.001 } })
      end, "poll.interval must be between 0.05 and 3600 seconds, got 0.001")
    end)

    it("the W*H product of a size cannot overflow", function()
      refused(function() return helpers.pt(m):edit({ prompt = "p", images = { URL }, size = "3x6148914691236604587" })
      end, "size must look like")
      refused(function() return helpers.pt(m):edit({ prompt = "p", images = { URL }, size = "99999*99999" }) end,
        "pixels in total")
      assert.equal(0, #m:requests())
    end)

    it("a wrong type is shown by its type, not its address", function()
      local err = refused(function() return helpers.fox(m):edit({ prompt = {}, images = { URL } }) end)
      assert.matches("must be a string, got a table", err.message, 1, true)
      assert.is_nil(err.message:find("0x", 1, true))
    end)
  end)

  describe("bytes C would cut, and broken URLs", function()
    it("a NUL byte or a control character is refused in the base URL, user agent, proxy and CA file", function()
      for _, option in ipairs({ "base_url", "user_agent", "proxy", "ca_file" }) do
        local err = refused(function() return imgedit.client("foxapi", { [option] = "http://127.0.0.1\0evil" }) end)
        assert.matches(option, err.message, 1, true)
      end
    end)

    it("ports outside 1-65535 are refused by client()", function()
      for _, port in ipairs({ "0", "65536", "99999999" }) do
        refused(function() return imgedit.client("foxapi", { base_url = "http://127.0.0.1:" .. port }) end,
          "a port is a number from 1 to 65535")
      end
      assert(imgedit.client("foxapi", { base_url = "http://127.0.0.1:65535" }))
    end)

    it("a base URL with credentials is refused without repeating them", function()
      local err = refused(function() return imgedit.client("foxapi", { base_url = "https://me:hunter2@api.example" })
      end, "credentials in a URL are refused")
      assert.is_nil(err.message:find("hunter2", 1, true))
    end)

    it("an unclosed IPv6 bracket says so", function()
      refused(function() return imgedit.client("foxapi", { base_url = "http://[::1/ok" }) end,
        "IPv6 host without its closing ]")
    end)

    it("a missing ca_file is refused by client()", function()
      refused(function() return imgedit.client("foxapi", { ca_file = "/nonexistent/ca.pem" }) end,
        "option ca_file: cannot read /nonexistent/ca.pem")
    end)

    it("an empty base URL variable counts as unset", function()
      local chunk = ([[package.path = %q; package.cpath = %q
        local c = assert(require("imgedit").client("foxapi", { api_key = "k" }))
        io.write(tostring(c))]]):format(package.path, package.cpath)
      local out = helpers.run(("FOXAPI_BASE_URL= %s -e %s"):format(helpers.LUA, helpers.shell_quote(chunk)))
      assert.matches("https://api.foxapi.cc", out, 1, true)
    end)

    it("surrogates and code points above U+10FFFF are not valid UTF-8 text", function()
      for _, text in ipairs({ "\237\160\128", "\244\144\128\128", "\192\175" }) do
        refused(function() return helpers.fox(m):edit({ prompt = "a" .. text, images = { URL } }) end,
          "not valid UTF-8")
      end
      assert(helpers.fox(m):edit({ prompt = "\244\143\191\191 ok", images = { URL } }))
    end)
  end)

  describe("headers", function()
    it("control characters are refused in user_agent and every header value", function()
      refused(function() return imgedit.client("foxapi", { user_agent = "imgedit\r\nX-Injected: 1" }) end,
        "user_agent must not contain control characters")
      refused(function() return imgedit.client("foxapi", { headers = { ["X-A"] = "a\rb" } }) end,
        "headers.X-A contains a control character")
      refused(function() return imgedit.client("foxapi", { headers = { ["X-A"] = "a\0b" } }) end,
        "headers.X-A contains a control character")
    end)

    it("headers may not set what the request itself decides", function()
      for _, name in ipairs({ "Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect",
                              "authorization" }) do
        refused(function() return imgedit.client("foxapi", { headers = { [name] = "1" } }) end,
          "headers." .. name .. " cannot be set")
      end
    end)
  end)

  describe("numbers from the server", function()
    local WEIRD = {
      '{"status":"processing","progress":1e999,"task_info":{"estimated_time":1e999}}',
      '{"status":"processing","progress":-1e999,"task_info":{"estimated_time":-5}}',
      '{"status":"processing","progress":"50","task_info":{"estimated_time":"soon"}}',
      '{"status":"processing","progress":1e300,"task_info":{"estimated_time":1e300}}',
    }

    it("are ignored or clamped by the library", function()
      m:config({ task_delay = 0.3 })
      local task = assert(helpers.fox(m):submit({ prompt = "p", images = { URL } }))
      for _, body in ipairs(WEIRD) do
        m:faults({ { method = "GET", path_match = "^/foxapi/v1/tasks/", status = 200, body = body } })
        assert(task:refresh())
        assert(task.progress == nil or (task.progress >= 0 and task.progress <= 100), tostring(task.progress))
        assert(task.estimated_time == nil or task.estimated_time <= 7 * 86400, tostring(task.estimated_time))
        assert.equal("string", type(tostring(task)))
      end
    end)

    it("never make the command fail with an internal error", function()
      m:config({ task_delay = 0.5 })
      local faults = {}
      for i, body in ipairs(WEIRD) do
        faults[i] = { method = "GET", path_match = "^/foxapi/v1/tasks/", status = 200, body = body }
      end
      m:faults(faults)
      local dir = helpers.tmpdir()
      for _, mode in ipairs({ "tty", "plain" }) do
        local words = { "env", "FOXAPI_API_KEY=" .. helpers.KEY, "FOXAPI_BASE_URL=" .. m.foxapi,
                        "LUA_PATH=" .. package.path, "LUA_CPATH=" .. package.cpath, helpers.LUA, "bin/imgedit",
                        "edit", "-i", URL, "--prompt", "p", "--progress", mode, "-o", dir }
        for i, w in ipairs(words) do words[i] = helpers.shell_quote(w) end
        local p = io.popen("cd " .. helpers.shell_quote(helpers.ROOT) .. " && " .. table.concat(words, " ")
          .. " 2>&1; echo exit=$?")
        local out = p:read("*a")
        p:close()
        assert.is_nil(out:find("internal error", 1, true), out)
        assert.matches("exit=0", out, 1, true)
      end
      helpers.rmdir(dir)
    end)
  end)

  describe("a key echoed by a server", function()
    local function no_key(text, where)
      assert.is_nil(tostring(text):find(KEY, 1, true), (where or "") .. " carries the key: " .. tostring(text))
    end

    it("an x-request-id holding the key reaches no error field, tostring or log line", function()
      local lines = {}
      imgedit.log(function(line) lines[#lines + 1] = line end)
      m:faults({ { path = "/powertokens/v1/images/edits", status = 500,
                   headers = { ["X-Request-Id"] = "req-" .. KEY } } })
      local _, err = helpers.pt(m, { api_key = KEY, max_retries = 0 }):edit({ prompt = "p", images = { URL } })
      imgedit.log(nil)
      assert.equal("server", err.kind)
      assert.equal("req-[redacted]", err.request_id)
      no_key(tostring(err))
      for k, v in pairs(err) do no_key(v, k) end
      for _, line in ipairs(lines) do no_key(line, "log") end
    end)

    it("a task id holding the key reaches no log line, error or file name", function()
      -- a real result to point the hostile task at
      local real = assert(helpers.fox(m):edit({ prompt = "p", images = { URL } }))
      local hostile = "task-" .. KEY
      m:faults({
        { method = "POST", path = "/foxapi/v1/images/generations", status = 200,
          body = { id = hostile, status = "pending", progress = 0 } },
        { method = "GET", path_match = "^/foxapi/v1/tasks/", status = 200, times = 5,
          body = { id = hostile, status = "completed", progress = 100, results = { { url = real.images[1].url } } } },
      })
      local lines = {}
      imgedit.log(function(line) lines[#lines + 1] = line end)
      local result = assert(helpers.fox(m, { api_key = KEY }):edit({ prompt = "p", images = { URL } }))
      imgedit.log(nil)
      no_key(tostring(result.task))
      for _, line in ipairs(lines) do no_key(line, "log") end
      local dir = helpers.tmpdir()
      local paths = assert(result:save_all(dir))
      for _, path in ipairs(paths) do no_key(path, "file name") end
      for _, name in ipairs(helpers.ls(dir)) do no_key(name, "file name") end
      helpers.rmdir(dir)
    end)

    it("imgedit task shows a failed task's message and code without the key", function()
      m:config({ task_outcome = "failed", fail_message = "refused for " .. KEY, fail_code = "bad_" .. KEY })
      local task = assert(helpers.fox(m, { api_key = KEY }):submit({ prompt = "p", images = { URL } }))
      helpers.fox(m, { api_key = KEY }):task(task.id):wait({ timeout = 5 })
      for _, json in ipairs({ false, true }) do
        local words = { "env", "FOXAPI_API_KEY=" .. KEY, "FOXAPI_BASE_URL=" .. m.foxapi,
                        "LUA_PATH=" .. package.path, "LUA_CPATH=" .. package.cpath, helpers.LUA, "bin/imgedit",
                        "task", task.id }
        if json then words[#words + 1] = "--json" end
        for i, w in ipairs(words) do words[i] = helpers.shell_quote(w) end
        local out = io.popen("cd " .. helpers.shell_quote(helpers.ROOT) .. " && " .. table.concat(words, " ")
          .. " 2>&1"):read("*a")
        assert.matches("refused for [redacted]", out, 1, true)
        no_key(out, "imgedit task")
        if json then assert.equal("bad_[redacted]", cjson.decode(out:match("{.*}")).error.code) end
      end
    end)
  end)
end)
