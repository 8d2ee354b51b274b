-- Retries: backoff with jitter, Retry-After honoured within the caller's
-- deadline, and a whole client pausing after a 429.
local imgedit = require("imgedit")
local transport = require("imgedit.transport")
local helpers = require("spec.helpers")

local SUBMIT = "/foxapi/v1/images/generations"
local TASKS = "/foxapi/v1/tasks/"
local FOX_EDIT = { prompt = "p", images = { "https://example.com/portrait.jpg" } }

describe("retries", function()
  local m

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    m:config({ task_delay = 0.2 })
  end)

  local function recording_client(opts)
    local infos = {}
    opts = opts or {}
    opts.on_retry = function(info) infos[#infos + 1] = info end
    return helpers.fox(m, opts), infos
  end

  describe("Retry-After", function()
    it("reads seconds, HTTP dates and retry-after-ms", function()
      assert.equal(3, transport.retry_after({ ["retry-after"] = "3" }))
      assert.equal(0.25, transport.retry_after({ ["retry-after-ms"] = "250", ["retry-after"] = "9" }))
      local soon = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2)
      local ahead = transport.retry_after({ ["retry-after"] = soon })
      assert.is_true(ahead > 0.5 and ahead <= 2.5, "HTTP date read as " .. tostring(ahead))
      assert.equal(0, transport.retry_after({ ["retry-after"] = "Sun, 06 Nov 1994 08:49:37 GMT" }))
      assert.is_nil(transport.retry_after({ ["retry-after"] = "soon" }))
      assert.is_nil(transport.retry_after({}))
    end)

    it("is the delay of the retry", function()
      m:faults({ { path = SUBMIT, status = 503, headers = { ["retry-after-ms"] = "150" } } })
      local fox, infos = recording_client()
      assert(fox:submit(FOX_EDIT))
      assert.equal(1, #infos)
      assert.equal(0.15, infos[1].delay)
      assert.equal(2, infos[1].attempt)
      assert.equal("server", infos[1].error.kind)
    end)

    it("is never waited past the caller's deadline", function()
      m:faults({ { path = SUBMIT, status = 429, headers = { ["Retry-After"] = "30" } } })
      local fox, infos = recording_client()
      local _, err = fox:submit({ prompt = "p", images = FOX_EDIT.images, timeout = 2 })
      assert.equal("rate_limited", err.kind)
      assert.equal(1, err.attempts)
      assert.matches("past the time limit", err.message, 1, true)
      assert.equal(0, #infos)
      assert.equal(1, #helpers.api_requests(m, SUBMIT))
    end)
  end)

  describe("backoff", function()
    it("waits a random part of an exponential ceiling between GET attempts", function()
      local fox, infos = recording_client({ max_retries = 3 })
      local t = assert(fox:submit(FOX_EDIT))
      m:faults({ { path = TASKS .. t.id, status = 500, times = 3 } })
      assert(t:refresh())
      assert.equal(3, #infos)
      for i, info in ipairs(infos) do
        assert.is_true(info.delay >= 0 and info.delay <= 0.5 * 2 ^ (i - 1), "delay " .. info.delay)
        assert.equal(i + 1, info.attempt)
      end
    end)

    it("max_retries = 2 means at most 3 attempts, all counted", function()
      local fox = helpers.fox(m, { max_retries = 2 })
      local t = assert(fox:submit(FOX_EDIT))
      m:faults({ { path = TASKS .. t.id, status = 502, times = 5, headers = { ["Retry-After"] = "0" } } })
      local _, err = t:refresh()
      assert.equal("server", err.kind)
      assert.equal(3, err.attempts)
      assert.equal(3, #helpers.api_requests(m, TASKS))
    end)

    it("max_retries = 0 makes one attempt", function()
      m:faults({ { path = SUBMIT, status = 503, times = 5 } })
      local _, err = helpers.fox(m, { max_retries = 0 }):submit(FOX_EDIT)
      assert.equal(1, err.attempts)
      assert.is_true(err.retryable)
    end)
  end)

  describe("after a 429", function()
    it("every request of the client waits, not only the one that saw it", function()
      m:faults({ { path = SUBMIT, status = 429, headers = { ["Retry-After"] = "0.6" } } })
      local fox = helpers.fox(m)
      imgedit.run(function()
        local first = imgedit.spawn(function() return assert(fox:submit(FOX_EDIT)) end)
        local second = imgedit.spawn(function()
          imgedit.sleep(0.2) -- starts while the client is paused
          return assert(fox:submit({ prompt = "second", images = FOX_EDIT.images }))
        end)
        first:join()
        second:join()
      end)
      local posts = helpers.api_requests(m, SUBMIT)
      assert.equal(3, #posts)
      local limited = posts[1].time
      for i = 2, 3 do
        assert.is_true(posts[i].time - limited >= 0.55, "a request went out during the pause")
      end
    end)

    it("another client is not held back", function()
      m:faults({ { path = SUBMIT, status = 429, headers = { ["Retry-After"] = "1" } } })
      local paused = false
      local fox = helpers.fox(m, { on_retry = function() paused = true end })
      local other = helpers.fox(m)
      local task, err
      imgedit.run(function()
        local first = imgedit.spawn(function() return assert(fox:submit(FOX_EDIT)) end)
        local second = imgedit.spawn(function()
          -- once the first client is paused (its on_retry has run) ...
          for _ = 1, 1000 do
            if paused then break end
            imgedit.sleep(0.01)
          end
          assert(paused, "the first client never saw its 429")
          -- ... with a time limit shorter than that pause: held back, this
          -- submission would fail at once (rate_limited, past its deadline)
          task, err = other:submit({ prompt = "other", images = FOX_EDIT.images, timeout = 0.5 })
        end)
        first:join()
        second:join()
      end)
      assert(task, tostring(err))
      local posts = helpers.api_requests(m, SUBMIT)
      assert.same({ "p", "other", "p" }, { posts[1].json.prompt, posts[2].json.prompt, posts[3].json.prompt })
    end)
  end)
end)
