-- OpenResty: nginx (Debian's libnginx-mod-http-lua, one worker) runs
-- examples/openresty/handler.lua; while a content handler's edit waits for
-- its task, the same worker goes on serving other requests.
local socket = require("socket")
local cjson = require("cjson")
local helpers = require("spec.helpers")
local openresty = require("spec.support.openresty")

local SUBMIT = "/foxapi/v1/images/generations"
local PT_EDITS = "/powertokens/v1/images/edits"
local SEED_URL = "https://example.com/portrait.jpg"
local SLOW_TASK = 2    -- seconds the emulator takes for a task
local SLOW_EDIT = 3    -- seconds the emulator takes to answer a slow powertokens edit
local MANY = 200       -- slow edits waiting at once in one worker
local QUICK = 20       -- requests sent while the edit waits
local DEADLINE = 30    -- seconds any exchange of this file may take

--- A content handler: one powertokens edit (`how=run`: two at once in
-- imgedit.run), answered with the number of images.
local PT_EDIT = [[
  local imgedit = require("imgedit")
  local pt = assert(imgedit.client("powertokens", { max_in_flight = 1000 }))
  local result, err = pt:edit({ prompt = "slow", images = { "]] .. SEED_URL .. [[" } })
  if not result then ngx.status = 502; ngx.say(tostring(err)); return end
  ngx.say(#result.images)
]]

--- A function (Lua source for nginx) returning how many powertokens edits
-- the emulator has received, asked on its control API with a cosocket.
local SEEN = [[function()
    local cjson = require("cjson")
    local host, port = os.getenv("POWERTOKENS_BASE_URL"):match("^http://([^:/]+):(%d+)")
    local sock = ngx.socket.tcp()
    sock:settimeout(5000)
    assert(sock:connect(host, tonumber(port)))
    assert(sock:send("GET /_mock/requests HTTP/1.0\r\nHost: " .. host .. "\r\n\r\n"))
    local text = assert(sock:receive("*a"))
    sock:close()
    local n = 0
    for _, r in ipairs(cjson.decode(text:match("\r\n\r\n(.*)$")).requests) do
      if r.path == "]] .. PT_EDITS .. [[" then n = n + 1 end
    end
    return n
  end]]

--- A content handler that starts a powertokens edit in a light thread
-- (`?how=run`: two, in imgedit.gather), kills the thread once the emulator
-- has its requests (asked on its control API, with a cosocket) and answers
-- the runtime's state before and after. Its waits are bounded (1000 steps
-- of 10 ms each).
local KILL = [[
  local imgedit = require("imgedit")
  local cjson = require("cjson")
  local rt = require("imgedit.runtime.ngx")
  local pt = assert(imgedit.client("powertokens"))
  local function edit() return pt:edit({ prompt = "slow", images = { "]] .. SEED_URL .. [[" } }) end
  local seen = ]] .. SEEN .. [[
  local how = ngx.var.arg_how
  local want = how == "run" and 2 or 1
  local thread = ngx.thread.spawn(function()
    if how == "run" then return imgedit.run(imgedit.gather, { edit, edit }) end
    return edit()
  end)
  local before, after
  for _ = 1, 1000 do
    before = rt.state()
    if before.transfers == want and before.parked == 1 and seen() == want then break end
    ngx.sleep(0.01)
  end
  local swept = rt.stats.swept
  ngx.thread.kill(thread)
  for _ = 1, 1000 do
    after = rt.state()
    if after.transfers == 0 and after.parked == 0 then break end
    ngx.sleep(0.01)
  end
  ngx.say(require("cjson").encode({ before = before, after = after, swept = rt.stats.swept - swept }))
]]

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

--- Waits until the emulator has seen `n` requests to `path` (task submissions).
local function await_submissions(m, n, path)
  local deadline = socket.gettime() + DEADLINE
  while #m:requests({ path = path or SUBMIT }) < n do
    assert(socket.gettime() < deadline, "the edits never reached the emulator")
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

--- A content handler on one client of the worker with a single request
-- slot: `?how=kill` runs two edits in imgedit.gather in a light thread (one
-- holds the slot, one waits for it) and kills the thread once the first is
-- on the wire; `?how=edit` then makes one more edit through the slot.
local SLOTS = [[
  local imgedit = require("imgedit")
  local rt = require("imgedit.runtime.ngx")
  local seen = ]] .. SEEN .. [[
  local pt = package.loaded.spec_one_slot or assert(imgedit.client("powertokens", { max_in_flight = 1 }))
  package.loaded.spec_one_slot = pt
  local function edit() return pt:edit({ prompt = "p", images = { "]] .. SEED_URL .. [[" } }) end
  if ngx.var.arg_how == "edit" then
    local result, err = imgedit.run(edit)
    ngx.say(result and #result.images or tostring(err))
    return
  end
  local thread = ngx.thread.spawn(function() return imgedit.run(imgedit.gather, { edit, edit }) end)
  for _ = 1, 1000 do
    if rt.state().transfers == 1 and seen() == 1 then break end
    ngx.sleep(0.01)
  end
  ngx.thread.kill(thread)
  for _ = 1, 1000 do
    if rt.state().transfers == 0 and rt.state().parked == 0 then break end
    ngx.sleep(0.01)
  end
  ngx.say(rt.state().transfers)
]]

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
    opts.env = { FOXAPI_API_KEY = helpers.KEY, FOXAPI_BASE_URL = m.foxapi,
      POWERTOKENS_API_KEY = helpers.KEY, POWERTOKENS_BASE_URL = m.powertokens }
    web = openresty.start(opts)
    return web
  end

  local function stats()
    return cjson.decode(select(2, get(web.port, "/stats")))
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
    -- the request was resumed once per finished transfer (each HTTP request
    -- of the edit) and once per timer of its own (each poll interval): not
    -- by a sleep loop of its own
    local requests, polls = #m:requests(), #task.poll_times
    -- (nginx counts whole milliseconds: a timer that still ended before
    -- imgedit's clock said it was due leaves one more, short, timer)
    local resumes, timeouts = s.resumes - before.resumes, s.timeouts - before.timeouts
    assert.equal(requests, resumes)
    assert.is_true(timeouts >= polls and timeouts <= 2 * polls, ("%d timers for %d polls"):format(timeouts, polls))
    assert.equal(resumes + timeouts, s.parks - before.parks)
    assert.same({ 0, 0 }, { s.transfers, s.parked })
  end)

  it("serves quick requests while 200 slow edits wait in one worker, resuming each edit once, when its answer comes",
    function()
      m:faults({ { path = PT_EDITS, kind = "slow", seconds = SLOW_EDIT, times = MANY } })
      start({ locations = { ["/ptedit"] = PT_EDIT } })
      local before = stats()
      local edits = {}
      for i = 1, MANY do edits[i] = send(web.port, "/ptedit") end
      await_submissions(m, MANY, PT_EDITS)
      local quick = {}
      for i = 1, QUICK do quick[i] = send(web.port, "/health") end
      local all = {}
      for _, r in ipairs(edits) do all[#all + 1] = r end
      for _, r in ipairs(quick) do all[#all + 1] = r end
      collect(all)

      local first_edit = math.huge
      for _, r in ipairs(edits) do
        assert.equal(200, r.status, r.body)
        assert.equal("1\n", r.body)
        first_edit = math.min(first_edit, r.done)
      end
      for _, r in ipairs(quick) do
        assert.equal("ok ngx\n", r.body)
        assert.is_true(r.done < first_edit, "a quick request finished after an edit's answer")
      end
      -- one transfer per edit, on the emulator's log; each waiting request
      -- was resumed once, by its transfer's end: never by a timer, never
      -- per tick of the driver
      local s = stats()
      assert.equal(MANY, #m:requests({ path = PT_EDITS }))
      assert.equal(MANY, s.resumes - before.resumes)
      assert.equal(0, s.timeouts - before.timeouts)
      assert.equal(MANY, s.parks - before.parks)
      assert.equal(0, s.blocking)
      assert.is_true(s.ticks - before.ticks > 0)
      assert.same({ 0, 0 }, { s.transfers, s.parked })
      -- the kernel's readiness set of the build (`make check-poll`: poll())
      assert.equal(os.getenv("IMGEDIT_READY_BACKEND") or "epoll", s.backend)
      -- Debian's nginx has no delayed-events patch: a zero sleep would be logged
      assert.is_nil(web:error_log():find("delayed events", 1, true))
    end)

  for _, case in ipairs({ { how = "", transfers = 1 }, { how = "run", transfers = 2 } }) do
    it(("leaves no transfer running and no waiter registered when a light thread is killed mid-transfer (%s)")
      :format(case.how == "run" and "its imgedit.gather" or "a plain edit"), function()
      m:faults({ { path = PT_EDITS, kind = "slow", seconds = 60, times = 2 } })
      start({ locations = { ["/kill"] = KILL } })
      local status, body = get(web.port, "/kill?how=" .. case.how)
      assert.equal(200, status, body)
      local state = cjson.decode(body)
      assert.equal(case.transfers, state.before.transfers, body)
      assert.equal(case.transfers, #m:requests({ path = PT_EDITS }))
      assert.same({ transfers = 0, parked = 0 }, { transfers = state.after.transfers, parked = state.after.parked })
      assert.equal(1, state.swept)
    end)
  end

  it("gives back the request slots that a killed light thread's coroutines held", function()
    m:faults({ { path = PT_EDITS, kind = "slow", seconds = 60, times = 1 } })
    start({ locations = { ["/slots"] = SLOTS } })
    local status, body = get(web.port, "/slots?how=kill")
    assert.equal(200, status, body)
    assert.equal("0\n", body)
    -- the client's only slot is free again: one more edit goes through
    status, body = get(web.port, "/slots?how=edit")
    assert.equal(200, status, body)
    assert.equal("1\n", body)
    assert.equal(2, #m:requests({ path = PT_EDITS }))
  end)

  it("starts the worker's driver again when it dies, and the edit it drove still finishes", function()
    m:faults({ { path = PT_EDITS, kind = "slow", seconds = 0.5, times = 1 } })
    start({ locations = { ["/die"] = [[
      local imgedit = require("imgedit")
      local rt = require("imgedit.runtime.ngx")
      local methods = getmetatable(require("imgedit.scheduler").multi()).__index
      local tick, failed = methods.tick, false
      -- the driver's next tick raises, once
      methods.tick = function(multi, ...)
        if not failed then
          failed = true
          error("a failure injected by the spec")
        end
        return tick(multi, ...)
      end
      local drivers = rt.stats.drivers
      local pt = assert(imgedit.client("powertokens"))
      local result, err = pt:edit({ prompt = "p", images = { "]] .. SEED_URL .. [[" } })
      methods.tick = tick
      ngx.say(result and #result.images or tostring(err), " ", tostring(failed), " ", rt.stats.drivers - drivers)
    ]] } })
    local status, body = get(web.port, "/die")
    assert.equal(200, status, body)
    local images, failed, drivers = body:match("^(%S+) (%S+) (%d+)")
    assert.same({ "1", "true" }, { images, failed })
    assert.is_true(tonumber(drivers) >= 2, body)
    assert.truthy(web:error_log():find("the curl driver of this worker stopped: ", 1, true))
  end)

  it("leaves no transfer running when the client of a waiting request goes away (lua_check_client_abort)", function()
    m:faults({ { path = PT_EDITS, kind = "slow", seconds = 60, times = 1 } })
    start({ http = { "lua_check_client_abort on;" }, locations = { ["/ptedit"] = PT_EDIT } })
    local before = stats()
    local edit = send(web.port, "/ptedit")
    await_submissions(m, 1, PT_EDITS)
    assert.equal(1, stats().transfers)
    edit.sock:close()
    local s
    local deadline = socket.gettime() + DEADLINE
    repeat
      assert(socket.gettime() < deadline, "the aborted request's transfer is still on the multi handle")
      socket.sleep(0.05)
      s = stats()
    until s.transfers == 0 and s.parked == 0
    assert.equal(1, s.swept - before.swept)
  end)

  it("resumes at most BURST waiting requests in one pass of nginx's loop, the others in later passes", function()
    start({ locations = { ["/burst"] = [[
      local imgedit = require("imgedit")
      local rt = require("imgedit.runtime.ngx")
      local before, done = rt.stats.deferred, 0
      local threads = {}
      -- made in one pass: their timers end in one pass too
      for i = 1, 100 do threads[i] = ngx.thread.spawn(function() imgedit.sleep(0.2); done = done + 1 end) end
      for i = 1, 100 do ngx.thread.wait(threads[i]) end
      ngx.say(require("cjson").encode({ done = done, deferred = rt.stats.deferred - before, burst = rt.BURST }))
    ]] } })
    local status, body = get(web.port, "/burst")
    assert.equal(200, status, body)
    local r = cjson.decode(body)
    assert.equal(100, r.done)
    assert.is_true(r.deferred >= 100 - r.burst, body)
    local s = stats()
    assert.same({ 0, 0 }, { s.parked, s.blocking })
  end)

  it("blocks the worker rather than fail where a wait cannot yield (inside a gsub callback)", function()
    start({ locations = { ["/gsub"] = [[
      local imgedit = require("imgedit")
      local pt = assert(imgedit.client("powertokens"))
      local out = string.gsub("x", "x", function()
        return tostring(#assert(pt:edit({ prompt = "p", images = { "]] .. SEED_URL .. [[" } })).images)
      end)
      ngx.say(out)
    ]] } })
    local before = stats()
    local status, body = get(web.port, "/gsub")
    assert.equal(200, status, web:error_log())
    assert.equal("1\n", body)
    assert.is_true(stats().blocking > before.blocking)
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

  --- A stand-in for lua-nginx-module's `ngx`: its phase and ngx.ctx (a
  -- blocking wait must call nothing else of it).
  local function install(phase)
    fake = { phase = phase, ctx = {} }
    fake.get_phase = function() return fake.phase end
    fake.sleep = function() error("a blocking wait yielded to nginx") end
    rawset(_G, "ngx", setmetatable({}, {
      __index = function(_, key)
        if key == "ctx" then return fake.ctx end
        return fake[key]
      end,
    }))
  end

  --- A stand-in multi handle (and the loop that has it): records its polls.
  local function new_multi()
    return {
      polled = {}, performed = 0,
      multi = function(self) return self end,
      perform = function(self) self.performed = self.performed + 1 end,
      poll = function(self, seconds) self.polled[#self.polled + 1] = seconds end,
    }
  end

  before_each(function()
    install("content")
    multi = new_multi()
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

  it("blocks in curl_multi_poll where nginx cannot yield", function()
    for _, phase in ipairs({ "init", "init_worker", "set", "header_filter", "body_filter", "log", "balancer" }) do
      fake.phase = phase
      rt.wait(multi, 0.25)
    end
    assert.same({ 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25 }, multi.polled)
    assert.equal(7, multi.performed)
    -- without a timer of the loop's own, at most runtime.IDLE
    fake.phase = "log"
    rt.wait(multi, nil)
    assert.equal(require("imgedit.runtime").IDLE, multi.polled[8])
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
