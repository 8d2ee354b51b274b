-- OpenResty: nginx (Debian's libnginx-mod-http-lua, one worker) runs
-- examples/openresty/handler.lua; while a content handler's edit waits for
-- its task, the same worker goes on serving other requests.
local socket = require("socket")
local cjson = require("cjson")
local helpers = require("spec.helpers")
local openresty = require("spec.support.openresty")

local SUBMIT = "/foxapi/v1/images/generations"
local SEED_URL = "https://example.com/portrait.jpg"
local SLOW_TASK = 2    -- seconds the emulator takes for a task
local QUICK = 20       -- requests sent while the edit waits
local DEADLINE = 30    -- seconds any exchange of this file may take

--- Starts one GET on its own connection (HTTP/1.0: the answer is not chunked
-- and ends when the server closes); `collect` reads the answers.
local function send(port, path)
  local c = assert(socket.tcp())
  c:settimeout(5)
  assert(c:connect("127.0.0.1", port))
  assert(c:send(("GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"):format(path)))
  c:settimeout(0)
  return { sock = c, path = path, chunks = {} }
end

--- Reads every answer to the end (the server closes each connection); sets
-- `done` (when the last byte came), `status` and `body` on each request.
local function collect(requests, seconds)
  local deadline = socket.gettime() + (seconds or DEADLINE)
  local open = {}
  for _, r in ipairs(requests) do open[#open + 1] = r end
  while #open > 0 do
    assert(socket.gettime() < deadline, #open .. " answers still missing after " .. (seconds or DEADLINE) .. " s")
    local socks, by_sock = {}, {}
    for _, r in ipairs(open) do
      socks[#socks + 1] = r.sock
      by_sock[r.sock] = r
    end
    local readable = socket.select(socks, nil, 0.5)
    local now = socket.gettime()
    for _, s in ipairs(readable) do
      local r = by_sock[s]
      local data, err, partial = s:receive(65536)
      local got = data or partial
      if got and #got > 0 then r.chunks[#r.chunks + 1] = got end
      if err == "closed" then
        r.done = now
        s:close()
        local text = table.concat(r.chunks)
        r.status = tonumber(text:match("^HTTP/1%.%d (%d%d%d)"))
        r.body = text:match("\r\n\r\n(.*)$")
      elseif err and err ~= "timeout" then
        error("reading " .. r.path .. ": " .. err)
      end
    end
    local still = {}
    for _, r in ipairs(open) do
      if not r.done then still[#still + 1] = r end
    end
    open = still
  end
  return requests
end

local function get(port, path)
  local r = collect({ send(port, path) })[1]
  return r.status, r.body
end

--- Waits until the emulator has seen `n` task submissions.
local function await_submissions(m, n)
  local deadline = socket.gettime() + DEADLINE
  while #m:requests({ path = SUBMIT }) < n do
    assert(socket.gettime() < deadline, "the edit never reached the emulator")
    socket.sleep(0.01)
  end
end

--- One slow edit, then (once its task is submitted) QUICK /health requests
-- at once; returns the slow request and the quick ones, all answered.
local function slow_and_quick(m, web)
  local path = "/edit?prompt=slow&image=" .. SEED_URL
  local slow = send(web.port, path)
  await_submissions(m, 1)
  local quick = {}
  for i = 1, QUICK do quick[i] = send(web.port, "/health") end
  local all = { slow }
  for i = 1, QUICK do all[i + 1] = quick[i] end
  collect(all)
  return slow, quick
end

describe("OpenResty", function()
  local m, web

  local function stop_web()
    if web then web:stop() end
    web = nil
  end

  setup(function()
    m = helpers.start_mock()
  end)
  teardown(function()
    stop_web()
    m:stop()
  end)
  before_each(function()
    m:reset()
  end)
  after_each(function()
    -- on failure, what nginx said helps most
    if web then
      local log = web:error_log()
      if log:find("%[error%]") or log:find("%[alert%]") or log:find("%[crit%]") then print(log) end
    end
    stop_web()
  end)

  local function start(opts)
    opts = opts or {}
    opts.env = { FOXAPI_API_KEY = helpers.KEY, FOXAPI_BASE_URL = m.foxapi }
    web = openresty.start(opts)
    return web
  end

  it("serves 20 quick requests while one edit waits for its task, in one worker", function()
    m:config({ task_delay = SLOW_TASK })
    start()
    local before = cjson.decode(select(2, get(web.port, "/stats")))
    local slow, quick = slow_and_quick(m, web)

    assert.equal(200, slow.status, slow.body)
    local answer = cjson.decode(slow.body)
    assert.equal(1, answer.count)
    assert.matches("^http://", answer.images[1])
    -- the edit waited for its task: the emulator answered a poll of it only
    -- after the task's end
    local task = m:tasks()[1]
    assert.is_true(task.poll_times[#task.poll_times] >= task.finish, "the edit did not wait for its task")
    local last_quick = 0
    for _, r in ipairs(quick) do
      assert.equal(200, r.status)
      assert.equal("ok ngx\n", r.body)
      last_quick = math.max(last_quick, r.done)
    end
    assert.is_true(last_quick < slow.done, "a quick request finished after the slow edit")

    -- imgedit picked the ngx runtime by itself, and never blocked the worker
    local s = cjson.decode(select(2, get(web.port, "/stats")))
    assert.equal("ngx", s.runtime)
    assert.equal(0, s.blocking)
    -- the worker mostly slept while the edit waited: a bounded number of
    -- yields to nginx for each HTTP request of the edit, not a busy loop
    local sleeps, requests = s.sleeps - before.sleeps, #m:requests()
    assert.is_true(sleeps > 0)
    assert.is_true(sleeps <= 10 * requests + 10, ("%d sleeps for %d HTTP requests"):format(sleeps, requests))
  end)

  it("gives each request its own loop: imgedit.gather in concurrent requests", function()
    m:config({ task_delay = 0.3 })
    start({ locations = { ["/gather"] = [[
      local imgedit = require("imgedit")
      local fox = assert(imgedit.client("foxapi"))
      local jobs = {}
      for i = 1, 3 do
        jobs[i] = function() return fox:edit({ prompt = "p" .. i, images = { "]] .. SEED_URL .. [[" } }) end
      end
      local images = 0
      for _, outcome in ipairs(imgedit.gather(jobs)) do
        if not outcome.ok then error(tostring(outcome.err)) end
        images = images + #outcome.value.images
      end
      ngx.say(images)
    ]] } })
    local requests = {}
    for i = 1, 4 do requests[i] = send(web.port, "/gather") end
    collect(requests)
    for _, r in ipairs(requests) do
      assert.equal(200, r.status, web:error_log())
      assert.equal("3\n", r.body)
    end
    assert.equal(12, #m:requests({ path = SUBMIT }))
  end)

  it("stalls the worker with the blocking runtime (the control: the spec can tell)", function()
    m:config({ task_delay = 1 })
    start({ init_worker = 'require("imgedit").runtime("blocking")' })
    local slow, quick = slow_and_quick(m, web)
    assert.equal(200, slow.status, slow.body)
    for _, r in ipairs(quick) do
      assert.equal("ok blocking\n", r.body)
      assert.is_true(r.done >= slow.done, "a quick request was served while the worker was blocked")
    end
  end)

  it("runs examples/openresty/nginx.conf as documented", function()
    m:config({ task_delay = 0.2 })
    local conf = assert(helpers.read(openresty.ROOT .. "/examples/openresty/nginx.conf"))
    conf = conf:gsub("/tmp/imgedit%-openresty", "DIR"):gsub("127%.0%.0%.1:8080", "127.0.0.1:PORT")
    start({ conf = conf, prefix_is_root = true })
    local status, body = get(web.port, "/edit?prompt=watercolor&image=" .. SEED_URL)
    assert.equal(200, status, body)
    assert.equal(1, cjson.decode(body).count)
    status, body = get(web.port, "/health")
    assert.equal(200, status)
    assert.equal("ok ngx\n", body)
    status = get(web.port, "/edit")
    assert.equal(400, status)
  end)
end)

describe("ngx runtime, without nginx", function()
  local rt = require("imgedit.runtime.ngx")
  local fake, multi

  --- A stand-in for lua-nginx-module's `ngx` (ngx.sleep records, never yields).
  local function install(phase)
    fake = { phase = phase, slept = {}, ctx = {} }
    fake.get_phase = function() return fake.phase end
    fake.sleep = function(seconds) fake.slept[#fake.slept + 1] = seconds end
    rawset(_G, "ngx", setmetatable({}, {
      __index = function(_, key)
        if key == "ctx" then return fake.ctx end
        return fake[key]
      end,
    }))
  end

  --- A stand-in multi handle (and the loop that has it): perform() reports `running`.
  local function new_multi(running)
    return {
      running = running, next_timer = -1, polled = {},
      multi = function(self) return self end,
      perform = function(self) return self.running end,
      timeout = function(self) return self.next_timer end,
      poll = function(self, seconds) self.polled[#self.polled + 1] = seconds end,
    }
  end

  before_each(function()
    install("content")
    multi = new_multi(0)
    rt.perform(multi)
  end)
  after_each(function() rawset(_G, "ngx", nil) end)

  it("is detected inside nginx only, in any phase (the choice is made once per worker)", function()
    assert.is_true(rt.detect())
    fake.phase = "init" -- init_by_lua: waits block there, but later requests must yield
    assert.is_true(rt.detect())
    assert.is_false(rt.yieldable())
    rawset(_G, "ngx", nil)
    assert.is_false(rt.detect())
    assert.is_nil(rt.context())
  end)

  it("sleeps once for the whole wait when nothing is in flight", function()
    rt.wait(multi, 0.75)
    assert.same({ 0.75 }, fake.slept)
    assert.same({}, multi.polled)
  end)

  it("steps 1, 2, 4... ms up to 20 ms while a transfer is in flight, from 1 ms after a change", function()
    multi.running = 1
    rt.perform(multi)
    for _ = 1, 7 do rt.wait(multi, 1) end
    assert.same({ 0.001, 0.002, 0.004, 0.008, 0.016, 0.02, 0.02 }, fake.slept)
    multi.running = 2 -- a transfer started (or one finished): from 1 ms again
    rt.perform(multi)
    rt.wait(multi, 1)
    assert.equal(0.001, fake.slept[8])
  end)

  it("never sleeps past the caller's limit or curl's next timer, and counts whole milliseconds", function()
    multi.running = 1
    rt.perform(multi)
    for _ = 1, 6 do rt.wait(multi, 1) end
    rt.wait(multi, 0.005)
    multi.next_timer = 0
    rt.wait(multi, 1)
    multi.next_timer = -1
    rt.wait(multi, 0.0004)
    assert.same({ 0.005, 0, 0.001 }, { fake.slept[7], fake.slept[8], fake.slept[9] })
  end)

  it("blocks in curl_multi_poll where nginx cannot yield", function()
    for _, phase in ipairs({ "init", "init_worker", "set", "header_filter", "body_filter", "log", "balancer" }) do
      fake.phase = phase
      rt.wait(multi, 0.25)
    end
    assert.equal(7, #multi.polled)
    assert.same({}, fake.slept)
  end)

  it("falls back to blocking when ngx.sleep cannot yield here", function()
    fake.sleep = function() error("attempt to yield across C-call boundary") end
    rt.wait(multi, 0.1)
    assert.same({ 0.1 }, multi.polled)
  end)

  it("keeps a loop per request in ngx.ctx, none in init phases", function()
    assert.equal(fake.ctx, rt.context())
    fake.phase = "init"
    assert.is_nil(rt.context())
    fake.phase = "timer"
    assert.equal(fake.ctx, rt.context())
  end)

  it("is first in the detection order, blocking last", function()
    local names = require("imgedit.runtime").NAMES
    assert.equal("ngx", names[1])
    assert.equal("blocking", names[#names])
  end)
end)
