-- One rate-limit pause for the whole machine (issue 12): with the client
-- option shared_dict, a 429's pause is written to an nginx lua_shared_dict
-- and every worker backs off; without it, the pause stays the client's own.
local socket = require("socket")
local cjson = require("cjson")
local imgedit = require("imgedit")
local scheduler = require("imgedit.scheduler")
local helpers = require("spec.helpers")
local openresty = require("spec.support.openresty")

local GENERATE = "/powertokens/v1/images/generations"
local FOX_EDIT = { prompt = "p", images = { "https://example.com/portrait.jpg" } }
-- a key of its own, to look for in the dict (the emulator accepts it too)
local SECRET = "sk-shared-dict-7c1e9a4b2d"
local PAUSE = 2      -- seconds of the 429's Retry-After, between two workers
local DEADLINE = 30  -- seconds any wait of this file may take

--- Installs a stand-in for lua-nginx-module's `ngx` holding only `shared`
-- (not enough for imgedit's runtime to take it for nginx), for the time
-- of `fn`; returns what `fn` returns.
local function with_ngx(shared, fn)
  rawset(_G, "ngx", { shared = shared })
  local ok, a, b = pcall(fn)
  rawset(_G, "ngx", nil)
  assert(ok, a)
  return a, b
end

--- A stand-in for an ngx.shared.DICT: get, set (exptime recorded), get_keys.
local function fake_dict()
  local d = { values = {}, exptimes = {}, gets = 0, sets = 0 }
  function d.get(self, key)
    self.gets = self.gets + 1
    return self.values[key]
  end
  function d.set(self, key, value, exptime)
    self.sets = self.sets + 1
    self.values[key], self.exptimes[key] = value, exptime
    return true
  end
  function d.get_keys(self)
    local keys = {}
    for key in pairs(self.values) do keys[#keys + 1] = key end
    return keys
  end
  return d
end

describe("option shared_dict", function()
  local m

  setup(function() m = helpers.start_mock({ keys = { helpers.KEY, SECRET } }) end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    m:config({ task_delay = 0.2 })
  end)

  describe("is refused with what to do", function()
    it("when it is not a non-empty string", function()
      for _, bad in ipairs({ 5, "", true, {} }) do
        local client, err = imgedit.client("foxapi", { api_key = SECRET, shared_dict = bad })
        assert.is_nil(client)
        assert.equal("invalid_request", err.kind)
        assert.equal("shared_dict", err.option)
        assert.matches("option shared_dict must be the name of a lua_shared_dict", err.message, 1, true)
      end
    end)

    it("outside nginx, where there is no ngx.shared", function()
      assert.is_nil(rawget(_G, "ngx"))
      local client, err = imgedit.client("foxapi", { api_key = SECRET, shared_dict = "imgedit" })
      assert.is_nil(client)
      assert.equal("invalid_request", err.kind)
      assert.equal("shared_dict", err.option)
      assert.matches("needs nginx's Lua module (ngx.shared)", err.message, 1, true)
      assert.matches("leave it out", err.message, 1, true)
    end)

    it("when nginx has no lua_shared_dict of that name, saying how to declare one", function()
      local client, err = with_ngx({ other = fake_dict() }, function()
        return imgedit.client("foxapi", { api_key = SECRET, shared_dict = "imgedit" })
      end)
      assert.is_nil(client)
      assert.equal("invalid_request", err.kind)
      assert.equal("shared_dict", err.option)
      assert.matches('no lua_shared_dict "imgedit"', err.message, 1, true)
      assert.matches("lua_shared_dict imgedit 1m;", err.message, 1, true)
      assert.matches("http block", err.message, 1, true)
    end)
  end)

  describe("with a dict (a stand-in, in one process)", function()
    local dict

    --- A foxapi client on the emulator, sharing `dict` as shared_dict.
    local function sharing(opts)
      opts = opts or {}
      opts.api_key, opts.shared_dict = SECRET, "imgedit"
      return with_ngx({ imgedit = dict }, function() return helpers.fox(m, opts) end)
    end

    before_each(function() dict = fake_dict() end)

    it("holds back another client after a 429, without a request of its own", function()
      m:faults({ { path = "/foxapi/v1/images/generations", status = 429, headers = { ["Retry-After"] = "1" } } })
      local paused = false
      local first = sharing({ on_retry = function() paused = true end })
      local second = sharing()
      local held, entries
      imgedit.run(function()
        local a = imgedit.spawn(function() return assert(first:submit(FOX_EDIT)) end)
        local b = imgedit.spawn(function()
          -- once the first client is paused (its on_retry has run) ...
          for _ = 1, 1000 do
            if paused then break end
            imgedit.sleep(0.01)
          end
          assert(paused, "the first client never saw its 429")
          entries = dict:get_keys()
          -- ... with a time limit shorter than that pause: held back, this
          -- submission fails at once, before sending anything
          held = select(2, second:submit({ prompt = "second", images = FOX_EDIT.images, timeout = 0.5 }))
        end)
        a:join()
        b:join()
      end)
      assert.equal(1, #entries)
      assert.equal(1, dict.exptimes[entries[1]])
      assert.equal("number", type(dict.values[entries[1]]))
      assert.equal("rate_limited", held.kind)
      assert.equal(0, held.attempts)
      assert.matches("sharing this one's shared_dict", held.message, 1, true)
      local posts = helpers.api_requests(m, "/foxapi/v1/images/generations")
      assert.same({ "p", "p" }, { posts[1].json.prompt, posts[2].json.prompt })
    end)

    it("reads the dict once per attempt, and never shortens a longer pause", function()
      m:faults({ { path = "/foxapi/v1/images/generations", status = 429, headers = { ["Retry-After"] = "0.2" } } })
      local fox = sharing()
      local key = fox.session.shared_key
      local longer = scheduler.now() + 1000
      -- another worker writes a longer pause while the first attempt is on
      -- the wire: the first get (before it) finds nothing, later ones find it
      local get = dict.get
      dict.get = function(self, k)
        if self.gets == 1 then self.values[k] = longer end
        return get(self, k)
      end
      local _, err = fox:submit({ prompt = "p", images = FOX_EDIT.images, timeout = 20 })
      assert.equal("rate_limited", err.kind)
      assert.equal(1, err.attempts)
      assert.equal(longer, dict.values[key])
      assert.equal(0, dict.sets)
      -- before the attempt, when the 429 came, before the second attempt
      assert.equal(3, dict.gets)
    end)

    it("keys the pause by provider and base URL, and never stores the API key", function()
      m:faults({ { path = "/foxapi/v1/images/generations", status = 429, headers = { ["Retry-After"] = "0.1" } } })
      local fox = sharing()
      local elsewhere = with_ngx({ imgedit = dict }, function()
        return assert(imgedit.client("foxapi", { api_key = SECRET, shared_dict = "imgedit",
          base_url = m.foxapi .. "/other" }))
      end)
      assert.are_not.equal(fox.session.shared_key, elsewhere.session.shared_key)
      assert(fox:submit(FOX_EDIT))
      local keys = dict:get_keys()
      assert.same({ fox.session.shared_key }, keys)
      assert.matches("foxapi", keys[1], 1, true)
      assert.matches(m.foxapi, keys[1], 1, true)
      assert.is_nil(keys[1]:find(SECRET, 1, true))
      assert.equal("number", type(dict.values[keys[1]]))
    end)

    it("leaves the dict alone without a 429", function()
      assert(sharing():submit(FOX_EDIT))
      assert.equal(0, dict.sets)
      assert.same({}, dict:get_keys())
    end)
  end)
end)

-- Two nginx workers ---------------------------------------------------------------

--- One GET on its own connection (HTTP/1.0: the answer ends when the
-- server closes); `finish` reads it.
local function send(port, path)
  local c = assert(socket.tcp())
  c:settimeout(5)
  assert(c:connect("127.0.0.1", port))
  assert(c:send(("GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"):format(path)))
  return c
end

--- The status and body of the answer on `c`.
local function finish(c)
  c:settimeout(DEADLINE)
  local text, err = c:receive("*a")
  c:close()
  assert(text, err)
  return tonumber(text:match("^HTTP/1%.%d (%d%d%d)")), text:match("\r\n\r\n(.*)$")
end

local function get(port, path)
  return finish(send(port, path))
end

--- The prompt of a powertokens request the emulator saw (its text part).
local function prompt_of(r)
  for _, part in ipairs(r.json.input.messages[1].content) do
    if part.text then return part.text end
  end
end

-- /generate?who=a|b[&shared=1]: one powertokens generation through a client
-- made for the request; answers the worker's pid. "b" is refused (409) in
-- the worker that served "a", so that it reaches the other one. The client's
-- on_retry notes the worker that saw the 429 in the dict "spec".
local GENERATE_HANDLER = [[
  local imgedit = require("imgedit")
  local spec = ngx.shared.spec
  local args = ngx.req.get_uri_args()
  if args.who == "b" and spec:get("a_pid") == ngx.worker.pid() then
    ngx.status = 409
    ngx.say("the worker of a")
    return
  end
  local pt, err = imgedit.client("powertokens", {
    shared_dict = args.shared and "imgedit" or nil,
    on_retry = function() spec:set("a_pid", ngx.worker.pid()) end,
  })
  local result
  if pt then result, err = pt:generate({ prompt = args.who }) end
  if not result then
    ngx.status = 502
    ngx.say(tostring(err))
    return
  end
  ngx.say(ngx.worker.pid())
]]

-- /dict: the entries of the dict "imgedit", as JSON; /state: what "spec" noted.
local DICT_HANDLER = [[
  local dict = ngx.shared.imgedit
  local entries = {}
  for _, key in ipairs(dict:get_keys(0)) do entries[key] = dict:get(key) end
  ngx.say(require("cjson").encode({ entries = entries }))
]]
local STATE_HANDLER = [[ngx.say(ngx.shared.spec:get("a_pid") or "none")]]

describe("shared_dict in nginx with two workers", function()
  local m, web

  setup(function() m = helpers.start_mock({ keys = { SECRET } }) end)
  teardown(function()
    if web then web:stop() end
    m:stop()
  end)
  before_each(function()
    m:reset()
    web = openresty.start({
      workers = 2,
      http = { "lua_shared_dict imgedit 1m;", "lua_shared_dict spec 1m;" },
      env = { POWERTOKENS_API_KEY = SECRET, POWERTOKENS_BASE_URL = m.powertokens },
      locations = { ["/generate"] = GENERATE_HANDLER, ["/dict"] = DICT_HANDLER, ["/state"] = STATE_HANDLER },
    })
  end)
  after_each(function()
    local log = web:error_log()
    if log:find("%[error%]") or log:find("%[alert%]") or log:find("%[crit%]") then print(log) end
    web:stop()
    web = nil
  end)

  --- "a" meets a 429 (Retry-After: PAUSE) in one worker; once that worker
  -- is paused (its on_retry ran), "b" is sent until the other worker takes
  -- it. Returns both pids, the dict's entries during the pause, and the
  -- emulator's log of the 429 and of b's request.
  local function a_then_b(query)
    m:faults({ { path = GENERATE, status = 429, headers = { ["Retry-After"] = tostring(PAUSE) } } })
    local a = send(web.port, "/generate?who=a" .. query)
    local deadline = socket.gettime() + DEADLINE
    local a_pid
    repeat
      assert(socket.gettime() < deadline, "a never saw its 429")
      socket.sleep(0.01)
      local _, body = get(web.port, "/state")
      a_pid = tonumber(body)
    until a_pid
    local during = cjson.decode(select(2, get(web.port, "/dict"))).entries
    local status, b_body
    repeat
      assert(socket.gettime() < deadline, "b never reached the other worker")
      status, b_body = get(web.port, "/generate?who=b" .. query)
    until status ~= 409
    assert.equal(200, status, b_body)
    local a_status, a_body = finish(a)
    assert.equal(200, a_status, a_body)
    assert.equal(a_pid, tonumber(a_body))
    local posts = helpers.api_requests(m, GENERATE)
    local limited, b_post
    for _, r in ipairs(posts) do
      if prompt_of(r) == "a" and not limited then limited = r end
      if prompt_of(r) == "b" then b_post = r end
    end
    return { a_pid = a_pid, b_pid = tonumber(b_body), during = during, limited = limited, b = b_post,
             posts = posts }
  end

  it("makes a request in the other worker wait for the pause of a 429 seen by one", function()
    local seen = a_then_b("&shared=1")
    assert.are_not.equal(seen.a_pid, seen.b_pid)
    -- a's 429, its retry, b: three POSTs; b's reached the emulator only
    -- after the pause the 429 asked for had ended
    assert.equal(3, #seen.posts)
    assert.is_true(seen.limited.seq < seen.b.seq)
    local waited = seen.b.time - seen.limited.answered
    assert.is_true(waited >= PAUSE - 0.05, ("b was sent %.3f s after the 429"):format(waited))
  end)

  it("does not hold back the other worker without it (the control: the spec can tell)", function()
    local seen = a_then_b("")
    assert.are_not.equal(seen.a_pid, seen.b_pid)
    assert.equal(3, #seen.posts)
    -- b went out during a's pause: before a's retry
    assert.same({ "a", "b", "a" }, { prompt_of(seen.posts[1]), prompt_of(seen.posts[2]),
                                     prompt_of(seen.posts[3]) })
    assert.same({}, seen.during)
  end)

  it("stores the pause by provider and base URL, never the API key, and lets it expire", function()
    local seen = a_then_b("&shared=1")
    local keys = {}
    for key, value in pairs(seen.during) do
      keys[#keys + 1] = key
      assert.equal("number", type(value))
      assert.is_nil(tostring(value):find(SECRET, 1, true))
    end
    assert.equal(1, #keys)
    assert.matches("powertokens " .. m.powertokens, keys[1], 1, true)
    assert.is_nil(keys[1]:find(SECRET, 1, true))
    assert.is_nil(cjson.encode(seen.during):find(SECRET, 1, true))
    -- the entry's exptime removes it once the pause is over
    local deadline = socket.gettime() + DEADLINE
    while next(cjson.decode(select(2, get(web.port, "/dict"))).entries) do
      assert(socket.gettime() < deadline, "the pause's entry never expired")
      socket.sleep(0.05)
    end
  end)
end)
