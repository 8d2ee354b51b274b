-- Concurrency: many requests at once in one thread, over one multi handle.
local imgedit = require("imgedit")
local scheduler = require("imgedit.scheduler")
local task = require("imgedit.task")
local helpers = require("spec.helpers")

local SUBMIT = "/foxapi/v1/images/generations"
local EDITS = "/powertokens/v1/images/edits"
local SEED_URL = "https://example.com/portrait.jpg"

--- Open file descriptors of this process.
local function open_fds()
  local n = 0
  for _ in require("lfs").dir("/proc/self/fd") do n = n + 1 end
  return n
end

describe("concurrency", function()
  local m

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    m:config({ task_delay = 0.4 })
  end)

  describe("imgedit.gather", function()
    it("runs edits at once: every task is submitted before any is polled", function()
      local fox = helpers.fox(m)
      local jobs = {}
      for i = 1, 8 do
        jobs[i] = function() return fox:edit({ prompt = "p" .. i, images = { SEED_URL } }) end
      end
      local outcomes = imgedit.gather(jobs)
      assert.equal(8, #outcomes)
      local log = helpers.api_requests(m)
      local last_submit, first_poll = 0, math.huge
      for i, request in ipairs(log) do
        if request.method == "POST" then last_submit = i end
        if request.method == "GET" and i < first_poll then first_poll = i end
      end
      assert.is_true(last_submit < first_poll, "a task was polled before all were submitted")
      for _, outcome in ipairs(outcomes) do
        assert.is_true(outcome.ok)
        assert.equal(1, #outcome.value.images)
      end
      assert.equal(8, #m:requests({ path = SUBMIT }))
    end)

    it("keeps the order of results and counts nil, err and raised errors as failures", function()
      local pt = helpers.pt(m)
      local outcomes = imgedit.gather({
        function() return pt:edit({ prompt = "ok", images = { SEED_URL } }) end,
        function() return pt:edit({ prompt = "", images = { SEED_URL } }) end,
        function() error("boom") end,
        function() return 42 end,
      })
      assert.is_true(outcomes[1].ok)
      assert.equal(1, #outcomes[1].value.images)
      assert.is_false(outcomes[2].ok)
      assert.equal("invalid_request", outcomes[2].err.kind)
      assert.is_false(outcomes[3].ok)
      assert.matches("boom", outcomes[3].err)
      assert.is_true(outcomes[4].ok)
      assert.equal(42, outcomes[4].value)
    end)

    it("runs at most `concurrency` functions at a time", function()
      local active, peak = 0, 0
      local jobs = {}
      for i = 1, 9 do
        jobs[i] = function()
          active = active + 1
          peak = math.max(peak, active)
          imgedit.sleep(0.01 * (i % 3))
          active = active - 1
          return i
        end
      end
      local outcomes = imgedit.gather(jobs, { concurrency = 3 })
      assert.equal(3, peak)
      for i = 1, 9 do assert.equal(i, outcomes[i].value) end
    end)

    it("raises for a wrong Lua type", function()
      assert.has_error(function() imgedit.gather("x") end, "bad argument #1 to 'gather' (table expected, got string)")
      assert.has_error(function() imgedit.gather({ 1 }) end)
      assert.has_error(function() imgedit.gather({}, { concurrency = 0 }) end)
    end)
  end)

  describe("imgedit.run and imgedit.spawn", function()
    it("returns what fn returns, and re-raises what it raises", function()
      assert.same({ 1, "two" }, { imgedit.run(function(a) return a, "two" end, 1) })
      assert.has_error(function() imgedit.run(function() error("inner failure") end) end)
    end)

    it("interleaves sleeping coroutines instead of running them one after another", function()
      local order = {}
      imgedit.run(function()
        local a = imgedit.spawn(function() imgedit.sleep(0.2); order[#order + 1] = "slow" end)
        local b = imgedit.spawn(function() imgedit.sleep(0.05); order[#order + 1] = "fast" end)
        a:join()
        b:join()
      end)
      assert.same({ "fast", "slow" }, order)
    end)

    it("join returns a coroutine's error with its traceback, and others carry on", function()
      local fox = helpers.fox(m)
      local failed, edited
      imgedit.run(function()
        local bad = imgedit.spawn(function() local t = nil; return t.field end)
        local good = imgedit.spawn(function() return fox:edit({ prompt = "p", images = { SEED_URL } }) end)
        failed = { bad:join() }
        edited = { good:join() }
      end)
      assert.is_nil(failed[1])
      assert.matches("attempt to index", failed[2])
      assert.matches("stack traceback", failed[2])
      assert.equal(1, #edited[1].images)
    end)

    it("a coroutine that dies mid-operation leaks no transfer and no descriptor", function()
      local fox = helpers.fox(m)
      assert(fox:edit({ prompt = "warm up", images = { SEED_URL } }))
      collectgarbage()
      local before = open_fds()
      local results = imgedit.gather({
        function()
          return fox:edit({ prompt = "p", images = { SEED_URL }, on_progress = function(t)
            if t.status == "processing" then error("the user's callback failed") end
          end })
        end,
        function() return fox:edit({ prompt = "q", images = { SEED_URL } }) end,
      })
      assert.is_false(results[1].ok)
      assert.matches("the user's callback failed", results[1].err)
      assert.is_true(results[2].ok)
      collectgarbage()
      collectgarbage()
      assert.matches("%(0 transfers%)", tostring(scheduler.multi()))
      assert.is_true(open_fds() <= before, "descriptors leaked")
    end)

    it("outside run, the same calls block and still work", function()
      local result = assert(helpers.pt(m):edit({ prompt = "p", images = { SEED_URL } }))
      assert.equal(1, #result.images)
      local handle = imgedit.spawn(function() return "spawned" end)
      assert.equal("spawned", handle:join())
    end)
  end)

  describe("the scheduler's interface for runtimes", function()

    it("a host's own runtime table drives every wait, through the loop's declared methods", function()
      local calls = { perform = 0, wait = 0 }
      -- a runtime as a host would write it, outside the library: only the
      -- loop's declared methods and the multi handle it gives
      local host = {
        name = "host",
        perform = function(loop)
          calls.perform = calls.perform + 1
          loop:multi():perform()
        end,
        wait = function(loop, seconds)
          calls.wait = calls.wait + 1
          assert.is_false(loop:has_ready())
          -- nil: the loop has no timer; this host is not told when a
          -- transfer ends, so it bounds the wait itself
          local due = loop:next_due()
          if seconds then assert.is_true(due ~= nil and due <= seconds + 1e-6) end
          loop:multi():poll(seconds or 0.5)
        end,
      }
      -- an answer that takes a while: the loop has to wait for it
      m:faults({ { kind = "slow", seconds = 0.2 } })
      local previous = imgedit.runtime()
      assert.equal("host", imgedit.runtime(host))
      local ok, result = pcall(imgedit.run, function()
        return helpers.pt(m):edit({ prompt = "p", images = { SEED_URL } })
      end)
      imgedit.runtime(previous)
      assert(ok and result, tostring(result))
      assert.is_true(calls.perform >= 1, "perform " .. calls.perform)
      assert.is_true(calls.wait >= 1, "wait " .. calls.wait)
    end)

    it("a table that is no runtime is refused, saying what it lacks", function()
      local chosen, err = imgedit.runtime({ name = "broken", perform = function() end })
      assert.is_nil(chosen)
      assert.equal("invalid_request", err.kind)
      assert.matches("wait must be a function", err.message, 1, true)
      assert.has_error(function() imgedit.runtime(42) end)
    end)

    it("an alarm cuts a sleep short, and its timer never fires afterwards", function()
      local alarm = scheduler.alarm()
      local woke_at, planned
      imgedit.run(function()
        local sleeper = imgedit.spawn(function()
          planned = scheduler.now() + 3600
          scheduler.sleep(3600, alarm)
          woke_at = scheduler.now()
        end)
        imgedit.spawn(function() alarm:ring() end)
        sleeper:join()
      end)
      assert.is_true(woke_at < planned)
      assert.is_nil(scheduler.loop():next_due())
    end)

    it("run waits for what it started only: an unjoined spawn outside it does not hold it open", function()
      local stray = imgedit.spawn(function() scheduler.sleep(3600) end)
      local finished = imgedit.run(function() return "done" end)
      assert.equal("done", finished)
      assert.is_false(stray.done)
    end)
  end)

  describe("max_in_flight", function()
    it("keeps at most that many requests of a client on the wire; the rest wait in order", function()
      m:faults({ { path = EDITS, kind = "slow", seconds = 0.5, times = 4 } })
      local pt = helpers.pt(m, { max_in_flight = 2 })
      local jobs = {}
      for i = 1, 4 do
        jobs[i] = function() return pt:edit({ prompt = "p" .. i, images = { SEED_URL } }) end
      end
      for _, outcome in ipairs(imgedit.gather(jobs)) do assert.is_true(outcome.ok) end
      local log = helpers.api_requests(m, EDITS)
      assert.equal(4, #log)
      -- Events on the emulator, not durations: each request counts from
      -- when it came to when its answer was written. Two at once at the
      -- peak means the first two were on the wire together and no third
      -- went out before an answer came back.
      local events = {}
      for _, r in ipairs(log) do
        events[#events + 1] = { at = r.time, step = 1 }
        events[#events + 1] = { at = r.answered, step = -1 }
      end
      -- an answer written at the very moment a request came counts first
      table.sort(events, function(a, b) return a.at < b.at or (a.at == b.at and a.step < b.step) end)
      local in_flight, peak = 0, 0
      for _, e in ipairs(events) do
        in_flight = in_flight + e.step
        peak = math.max(peak, in_flight)
      end
      assert.equal(2, peak)
    end)
  end)

  describe("adaptive polling", function()
    local poll = { interval = 0.5, max_interval = 15 }

    it("polls a task once, at its estimated finish, when that is near", function()
      assert.near(1.01, task.next_delay(0, nil, 1, poll), 1e-9)
      m:config({ task_delay = 1.0 })
      local fox = helpers.fox(m, { poll = { interval = 0.5 } })
      local result = assert(fox:edit({ prompt = "p", images = { SEED_URL } }))
      local polls = helpers.api_requests(m, "/foxapi/v1/tasks/" .. result.task.id)
      assert.is_true(#polls <= 2, ("a 1 s task took %d polls"):format(#polls))
    end)

    it("polls at least every 10% of the task's age, and never more often than interval", function()
      assert.equal(0.5, task.next_delay(1, nil, nil, poll))
      assert.near(3.0, task.next_delay(30, nil, nil, poll), 1e-9)
      assert.equal(15, task.next_delay(1000, nil, nil, poll))
    end)

    it("aims at the finish that the progress predicts", function()
      -- 80% after 8 s: done at 10 s, more than two gaps (0.8 s each) away: the regular gap
      assert.near(0.8, task.next_delay(8, 80, 45, poll), 1e-9)
      -- 90% after 9 s: done 1 s from now, within two gaps (0.9 s each)
      assert.near(1.01, task.next_delay(9, 90, 45, poll), 1e-9)
    end)

    it("over a long task, polls less than once a second beyond the first five", function()
      local age, polls_after_5 = 0, 0
      while age < 45 do
        age = age + task.next_delay(age, nil, nil, poll)
        if age > 5 then polls_after_5 = polls_after_5 + 1 end
      end
      assert.is_true(polls_after_5 <= 40, polls_after_5 .. " polls")
    end)
  end)
end)
