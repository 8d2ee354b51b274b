-- The C core's readiness set (m:watch_ready(), m:tick()) over real HTTP
-- against the emulator: curl's sockets kept in the kernel's set (epoll on
-- Linux; `make check-poll` runs this file on the poll() fallback, with
-- IMGEDIT_READY_BACKEND=poll), a tick serving only what is ready.

local core = require("imgedit.core")
local helpers = require("spec.helpers")

local BACKEND = os.getenv("IMGEDIT_READY_BACKEND") or "epoll"
local TASKS = "/foxapi/v1/tasks/"

describe("the readiness set", function()
  local m, multi
  local api = core.session({ headers = { "Authorization: Bearer " .. helpers.KEY } })

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    multi = core.multi()
  end)
  after_each(function() multi:close() end)

  local function task_request(i)
    return { url = m.foxapi .. TASKS .. "none-" .. i }
  end

  --- Ticks (waiting at most 50 ms each) until every transfer is done;
  -- returns the sockets and timer expiries served in all.
  local function drive(transfers)
    local served, deadline = 0, core.now() + 15
    local function all_done()
      for _, t in ipairs(transfers) do
        if not t:done() then return false end
      end
      return true
    end
    while not all_done() do
      assert(core.now() < deadline, "the transfers did not finish in time")
      local n = assert(multi:tick(0.05))
      served = served + n
    end
    return served
  end

  it("is the kernel's set of this build: " .. BACKEND, function()
    assert.equal(BACKEND, multi:watch_ready())
    assert.equal(BACKEND, multi:watch_ready(), "a second call changes nothing")
  end)

  it("drives transfers from the sockets that are ready and curl's timer alone", function()
    multi:watch_ready()
    local t = assert(multi:add(api, task_request(1)))
    assert.equal(1, #multi)
    assert.equal(0, multi:timer(), "a new transfer is due at once")
    assert.is_true(drive({ t }) >= 2, "at least the timer and one socket were served")
    assert.equal(404, t:result().status)
    assert.same({ t }, multi:done())
    assert.equal(0, #multi)
    assert.same({ 0, 0 }, { multi:tick() })
  end)

  it("serves nothing while many transfers wait for slow answers, then each as its answer comes", function()
    local n = 40
    m:faults({ { path_match = TASKS, kind = "slow", seconds = 1, times = n } })
    multi:watch_ready()
    local transfers = {}
    for i = 1, n do transfers[i] = assert(multi:add(api, task_request(i))) end
    local deadline = core.now() + 15
    while #m:requests({ path = TASKS }) < n do
      assert(core.now() < deadline, "the requests did not reach the emulator")
      multi:tick(0.01)
    end
    -- every request is out: nothing is ready until the answers come, and a
    -- tick then serves nothing however many transfers are in flight
    local served, in_flight = multi:tick()
    assert.equal(0, served)
    assert.equal(n, in_flight)
    drive(transfers)
    for _, t in ipairs(transfers) do assert.equal(404, t:result().status) end
    assert.equal(n, #multi:done())
    assert.equal(0, #multi)
  end)

  it("takes over a transfer under way (m:perform) before the set was made", function()
    m:faults({ { path_match = TASKS, kind = "slow", seconds = 0.4, times = 1 } })
    local t = assert(multi:add(api, task_request(1)))
    local deadline = core.now() + 10
    while #m:requests({ path = TASKS }) < 1 do
      assert(core.now() < deadline, "the request did not reach the emulator")
      multi:perform()
      multi:poll(0.01)
    end
    assert.is_false(t:done())
    multi:watch_ready()
    drive({ t })
    assert.equal(404, t:result().status)
  end)

  it("keeps one mode: a host loop's watch or the core's set, never both", function()
    assert.has_error(function() multi:tick() end,
      "this multi handle has no readiness set: call m:watch_ready() first")
    multi:watch_ready()
    assert.has_error(function() multi:watch() end,
      "this multi handle watches its sockets itself (m:watch_ready())")
    local other = core.multi()
    other:watch()
    assert.has_error(function() other:watch_ready() end,
      "this multi handle is watched by a host loop (m:watch())")
    other:close()
  end)

  it("closes with its set, twice without harm; a closed multi refuses to tick", function()
    multi:watch_ready()
    local t = assert(multi:add(api, task_request(1)))
    multi:tick()
    multi:close()
    multi:close()
    assert.is_true(t:done())
    assert.equal(0, #multi)
    assert.has_error(function() multi:tick() end, "attempt to use a closed multi handle")
  end)
end)
