-- The transport and the core under a hostile server, a host program that
-- changed lua-cjson's settings, values C cannot carry and responses larger
-- than memory allows (issue 10, items 1, 11, 15, 16 and 18).
local imgedit = require("imgedit")
local core = require("imgedit.core")
local cjson = require("cjson")
local cjson_safe = require("cjson.safe")
local socket = require("socket")
local helpers = require("spec.helpers")

local SEED_URL = "https://example.com/portrait.jpg"
local FOX_EDIT = { prompt = "p", images = { SEED_URL } }
local PT_EDIT = { prompt = "p", images = { SEED_URL } }

--- A loopback server that answers every request with `answer` (raw bytes)
-- and closes the connection; it runs as a coroutine of imgedit's loop
-- (`server.run`, until `server.stop` is set, at most 20 s), so a client in
-- another coroutine of the same loop can talk to it. Counts connections and
-- keeps each request's first line.
local function hostile_server(answer)
  local listener = assert(socket.bind("127.0.0.1", 0))
  listener:settimeout(0)
  local _, port = listener:getsockname()
  local server = { url = "http://127.0.0.1:" .. port, connections = 0, requests = {}, stop = false }
  function server.run()
    local conns = {}
    local deadline = core.now() + 20
    while not server.stop and core.now() < deadline do
      local sock = listener:accept()
      if sock then
        sock:settimeout(0)
        server.connections = server.connections + 1
        conns[#conns + 1] = { sock = sock, data = "" }
      end
      for _, c in ipairs(conns) do
        if not c.sent and not c.closed then
          local data, err, partial = c.sock:receive(65536)
          c.data = c.data .. (data or partial or "")
          local head, rest = c.data:match("^(.-\r\n\r\n)(.*)$")
          local length = head and tonumber(head:lower():match("content%-length:%s*(%d+)")) or 0
          if head and #rest >= length then
            server.requests[#server.requests + 1] = head:match("^[^\r\n]*")
            c.sent = 0
          elseif err == "closed" then
            c.closed = true
          end
        end
        if c.sent and not c.closed then
          local last, _, partial = c.sock:send(answer, c.sent + 1)
          c.sent = last or partial or c.sent
          if c.sent >= #answer then
            c.sock:close()
            c.closed = true
          end
        end
      end
      imgedit.sleep(0.005)
    end
    for _, c in ipairs(conns) do c.sock:close() end
    listener:close()
  end
  return server
end

--- Runs `fn(server)` beside `server.run` in one loop; returns what fn returns.
local function against(server, fn)
  return imgedit.run(function()
    local h = imgedit.spawn(server.run)
    local a, b = fn(server)
    server.stop = true
    h:join()
    return a, b
  end)
end

describe("transport", function()
  local m

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  describe("a billed POST is resent only when none of its bytes left (item 1)", function()
    local answers = {
      ["a garbled status line"] = "FOO 200 BAR\r\nContent-Length: 2\r\n\r\n{}",
      ["an HTTP/0.9 answer"] = '{"id":"task-unified-1","status":"pending"}\n',
      ["a status line with a bad code"] = "HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\n{}",
    }
    for what, answer in pairs(answers) do
      it(("%s reaches the server once"):format(what), function()
        local server = hostile_server(answer)
        local _, err = against(server, function(s)
          local fox = assert(imgedit.client("foxapi", { api_key = helpers.KEY, base_url = s.url, max_retries = 2 }))
          return fox:submit(FOX_EDIT)
        end)
        assert.equal("network", err.kind)
        assert.equal(1, err.attempts)
        assert.is_false(err.retryable)
        assert.equal(1, server.connections)
        assert.same({ "POST /v1/images/generations HTTP/1.1" }, server.requests)
        assert.matches("not HTTP", tostring(err))
      end)
    end

    it("a refused connection is still resent", function()
      local fox = assert(imgedit.client("foxapi", { api_key = helpers.KEY, max_retries = 2,
        base_url = "http://127.0.0.1:" .. helpers.free_port() }))
      local _, err = fox:submit(FOX_EDIT)
      assert.equal("network", err.kind)
      assert.equal(3, err.attempts)
      assert.is_true(err.retryable)
      assert.matches("check base_url's host and port", tostring(err))
    end)

    it("a GET answered with garbage is retried: it is safe to repeat", function()
      local server = hostile_server("FOO 200 BAR\r\n\r\n")
      local _, err = against(server, function(s)
        local fox = assert(imgedit.client("foxapi", { api_key = helpers.KEY, base_url = s.url, max_retries = 2 }))
        return fox:task("task-unified-1"):refresh()
      end)
      assert.equal("network", err.kind)
      assert.equal(3, err.attempts)
      assert.equal(3, #server.requests)
    end)
  end)

  describe("JSON (item 16)", function()
    it("a host's cjson settings change nothing imgedit sends", function()
      local before, before_safe = cjson.encode_number_precision(), cjson_safe.encode_number_precision()
      cjson.encode_number_precision(2)
      cjson_safe.encode_number_precision(2)
      local ok, problem = pcall(function()
        assert.equal('{"seed":1.2e+05}', cjson_safe.encode({ seed = 120000 })) -- what the host gets
        local pt = helpers.pt(m)
        local edit = { seed = 120000 }
        for k, v in pairs(PT_EDIT) do edit[k] = v end
        assert(pt:edit(edit))
      end)
      cjson.encode_number_precision(before)
      cjson_safe.encode_number_precision(before_safe)
      assert(ok, problem)
      local seen = helpers.api_requests(m)
      assert.equal(1, #seen)
      assert.matches('"seed":120000[,}]', seen[1].body)
      assert.equal(120000, seen[1].json.seed)
    end)

    it("a body imgedit's JSON cannot encode is invalid_request, sent nowhere", function()
      local json = require("imgedit.json")
      local text, problem = json.encode({ f = print })
      assert.is_nil(text)
      assert.is_string(problem)
      assert.is_nil((json.encode({ n = 0 / 0 })))
      assert.is_nil((json.decode('{"n": NaN}')))
      assert.equal(2 ^ 40, json.decode(json.encode({ n = 2 ^ 40 })).n)
      assert.equal(2147483647, json.decode(json.encode({ n = 2147483647 })).n)
    end)
  end)

  describe("values C cannot carry (item 11)", function()
    --- The client refuses `opts` (at creation or at its first call), saying
    -- one of the `messages` (client() checks some values before the core
    -- would), and sends nothing.
    local function refused(opts, ...)
      local o = { api_key = helpers.KEY, base_url = m.foxapi }
      for k, v in pairs(opts) do o[k] = v end
      local fox, err = imgedit.client("foxapi", o)
      if fox then
        local _
        _, err = fox:submit(FOX_EDIT)
      end
      assert.equal("invalid_request", err.kind)
      local said = false
      for _, message in ipairs({ ... }) do said = said or err.message:find(message, 1, true) ~= nil end
      assert.is_true(said, err.message)
      assert.is_nil(tostring(err):find(helpers.KEY, 1, true))
      assert.equal(0, #m:requests())
    end

    it("a NUL byte in the base URL, user_agent, proxy or ca_file", function()
      local control = "must not contain control characters"
      refused({ base_url = m.foxapi .. "\0.evil.example" }, "url contains a NUL byte", control)
      refused({ user_agent = "my-app\0evil" }, "the value of User-Agent contains a line break or a NUL byte", control)
      refused({ proxy = m.api .. "\0x" }, "proxy contains a NUL byte", control)
      refused({ ca_file = "/etc/ssl\0/x.pem" }, "ca_file contains a NUL byte", control)
    end)

    it("a line break in user_agent", function()
      refused({ user_agent = "my-app\r\nX-Injected: 1" }, "User-Agent contains a line break",
        "must not contain control characters")
    end)

    it("a ca_file that does not exist, naming it", function()
      refused({ ca_file = "/nonexistent-dir/ca.pem" }, "ca_file /nonexistent-dir/ca.pem cannot be read",
        "option ca_file: cannot read /nonexistent-dir/ca.pem")
    end)
  end)

  describe("what is too large, said as such (item 18)", function()
    it("a 1 MB key is refused naming the key, not as 'Out of memory'", function()
      local key = ("k"):rep(1024 * 1024)
      local fox = assert(imgedit.client("foxapi", { api_key = key, base_url = m.foxapi }))
      local _, err = fox:submit(FOX_EDIT)
      assert.equal("invalid_request", err.kind)
      assert.matches("more than libcurl sends", err.message, 1, true)
      assert.matches("API key", err.message, 1, true)
      assert.is_nil(err.message:find("Out of memory", 1, true))
      assert.is_nil(tostring(err):find(key, 1, true))
      assert.equal(0, #m:requests())
    end)

    it("a 100 KB response header is named, not 'Out of memory'", function()
      local server = hostile_server("HTTP/1.1 200 OK\r\nX-Huge: " .. ("h"):rep(101 * 1024)
        .. "\r\nContent-Length: 2\r\n\r\n{}")
      local _, err = against(server, function(s)
        local fox = assert(imgedit.client("foxapi", { api_key = helpers.KEY, base_url = s.url, max_retries = 0 }))
        return fox:task("task-unified-1"):refresh()
      end)
      assert.equal("too_large", err.kind)
      assert.matches("header line longer than libcurl accepts", err.message, 1, true)
      assert.is_nil(tostring(err):find("max_response_bytes", 1, true))
    end)
  end)

  describe("the memory budget of all responses (item 15)", function()
    local function pt_edit(client, n)
      local edit = { response_format = "b64_json", n = n }
      for k, v in pairs(PT_EDIT) do edit[k] = v end
      return client:edit(edit)
    end

    it("a response over the client's max_buffered_bytes fails, saying which option to raise", function()
      m:config({ image_bytes = 200 * 1024 })
      local _, err = pt_edit(helpers.pt(m, { max_buffered_bytes = 100000 }), 1)
      assert.equal("too_large", err.kind)
      assert.matches("max_buffered_bytes (100000 bytes", err.message, 1, true)
      local line = tostring(err)
      assert.matches("raise max_buffered_bytes", line, 1, true)
      assert.is_nil(line:find("raise max_response_bytes", 1, true))
      assert.equal(1, err.attempts) -- billed, and it reached the server
      -- another client's budget is its own
      assert(pt_edit(helpers.pt(m), 1))
    end)

    it("concurrent large responses of one client share its budget", function()
      m:config({ image_bytes = 300 * 1024 })
      -- every answer is held back until all four requests are in
      m:faults({ { kind = "slow", seconds = 0.3, times = 4, path = "/powertokens/v1/images/edits" } })
      local pt = helpers.pt(m, { max_buffered_bytes = 2 * 1024 * 1024 })
      local jobs = {}
      for i = 1, 4 do jobs[i] = function() return pt_edit(pt, 2) end end
      local outcomes = imgedit.gather(jobs)
      local ok = 0
      for _, o in ipairs(outcomes) do
        if o.ok then
          ok = ok + 1
          assert.equal(2, #o.value.images)
        else
          assert.equal("too_large", o.err.kind)
          assert.matches("max_buffered_bytes", o.err.message, 1, true)
        end
      end
      assert.is_true(ok >= 1, "no response fitted in the budget")
      assert.equal(4, #helpers.api_requests(m))
    end)

    it("an allocation that fails while receiving is out of memory, not 'raise max_response_bytes'", function()
      -- a child process whose address space cannot hold the body: the
      -- buffer's growth fails, not a limit of imgedit's
      local lua = helpers.LUA
      -- the plain build, made without the sanitizer runtime a check-asan run preloads
      local built = os.execute(("cd %s && env -u LD_PRELOAD -u MAKEFLAGS -u MAKELEVEL make --no-print-directory"
        .. " all LUA=%s >/dev/null 2>&1"):format(helpers.shell_quote(helpers.ROOT), lua))
      assert(built == true or built == 0, "cannot build the core for " .. lua)
      m:faults({ { kind = "big", bytes = 600 * 1024 * 1024, listener = "api" } })
      local script = ([[
        local imgedit = require("imgedit")
        local fox = assert(imgedit.client("foxapi", {api_key = "k", base_url = %q,
          max_response_bytes = 2^40, max_buffered_bytes = 2^40, max_retries = 0}))
        local _, err = fox:task("task-unified-1"):refresh()
        io.write(err.kind, "\n", tostring(err), "\n")
      ]]):format(m.foxapi)
      local root = helpers.ROOT
      local child = ("ulimit -v 400000; exec %s -e %s"):format(lua, helpers.shell_quote(script))
      local out = helpers.run(("env -u LD_PRELOAD LUA_PATH=%s LUA_CPATH=%s sh -c %s"):format(
        helpers.shell_quote(root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;"),
        helpers.shell_quote(root .. "/build/" .. lua .. "/?.so;;"), helpers.shell_quote(child)))
      local kind, line = out:match("^(%S+)\n(.-)\n$")
      assert.equal("too_large", kind, out)
      assert.matches("out of memory while receiving the response", line, 1, true)
      assert.is_nil(line:find("raise max_response_bytes", 1, true))
      assert.matches("free memory", line, 1, true)
    end)
  end)
end)
