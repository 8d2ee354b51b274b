-- Task waits against a misbehaving server: the last poll at the deadline,
-- the caller's task id kept, and polls that keep failing reported as such.
local helpers = require("spec.helpers")

local URL = "https://example.com/portrait.jpg"

describe("task waits", function()
  local m

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  local function polls()
    local list = {}
    for _, r in ipairs(helpers.api_requests(m)) do
      if r.method == "GET" then list[#list + 1] = r end
    end
    return list
  end

  it("poll once at the deadline: a task done before it is completed, not still pending", function()
    -- the task is done at 0.3 s, but says it takes 1 s: the poll aimed at
    -- its finish falls on the deadline
    m:config({ task_delay = 0.3 })
    local fox = helpers.fox(m, { poll = { interval = 5, max_interval = 5 } })
    local result, err = fox:edit({ prompt = "p", images = { URL }, timeout = 1 })
    assert(result, tostring(err))
    assert.equal("completed", result.task.status)
    assert.equal(1, #polls())
  end)

  it("a wait that times out has polled at its deadline", function()
    m:config({ task_delay = 30 })
    local fox = helpers.fox(m, { poll = { interval = 5, max_interval = 5 } })
    local _, err = fox:edit({ prompt = "p", images = { URL }, timeout = 0.5 })
    assert.equal("timeout", err.kind)
    assert.equal(1, #polls())
  end)

  it("keeps the caller's task id whatever id the server's answers carry", function()
    m:config({ task_delay = 0.4 })
    local fox = helpers.fox(m)
    local task = assert(fox:submit({ prompt = "p", images = { URL } }))
    local id = task.id
    m:faults({ { method = "GET", path_match = "^/foxapi/v1/tasks/", times = 3, status = 200,
                 body = { id = "task-unified-0-elsewhere", status = "processing", progress = 10 } } })
    assert(task:wait({ timeout = 5 }))
    assert.equal(id, task.id)
    for _, poll in ipairs(polls()) do
      assert.equal("/foxapi/v1/tasks/" .. id, poll.path)
    end
  end)

  it("polls that keep failing return their cause, not a timeout", function()
    m:config({ task_delay = 30 })
    local fox = helpers.fox(m, { max_retries = 1 })
    local task = assert(fox:submit({ prompt = "p", images = { URL } }))
    m:faults({ { method = "GET", path_match = "^/foxapi/v1/tasks/", times = 100, status = 500 } })
    local _, err = task:wait({ timeout = 60 })
    assert.equal("server", err.kind)
    assert.equal(500, err.status)
    assert.equal(task.id, err.task_id)
    assert.is_true(err.retryable)
    assert.matches("polls of task", err.message, 1, true)
    -- the retry budget, spent on consecutive failed polls: 2 polls of 2 attempts each
    assert.equal(4, #polls())
  end)

  it("an HTML page answered with 200 to every poll is a decode error, not a timeout", function()
    m:config({ task_delay = 30 })
    local fox = helpers.fox(m, { max_retries = 1 })
    local task = assert(fox:submit({ prompt = "p", images = { URL } }))
    m:faults({ { method = "GET", path_match = "^/foxapi/v1/tasks/", times = 100, kind = "html", status = 200 } })
    local _, err = task:wait({ timeout = 60 })
    assert.equal("decode", err.kind)
    assert.equal(task.id, err.task_id)
    assert.equal(4, #polls())
  end)

  it("an unknown status is reported once the retry budget is spent, not waited on", function()
    m:config({ task_delay = 30 })
    local fox = helpers.fox(m, { max_retries = 2 })
    local task = assert(fox:submit({ prompt = "p", images = { URL } }))
    m:faults({ { method = "GET", path_match = "^/foxapi/v1/tasks/", times = 100, status = 200,
                 body = { id = task.id, status = "frobnicating", progress = 5 } } })
    local _, err = task:wait({ timeout = 60 })
    assert.equal("decode", err.kind)
    assert.matches('unknown status "frobnicating"', err.message, 1, true)
    assert.equal(3, #polls())
  end)

  it("a passing failure is one missed poll: the wait goes on", function()
    m:config({ task_delay = 0.5 })
    local fox = helpers.fox(m, { max_retries = 1 })
    local task = assert(fox:submit({ prompt = "p", images = { URL } }))
    -- both attempts of one poll fail
    m:faults({ { method = "GET", path_match = "^/foxapi/v1/tasks/", times = 2, status = 500 } })
    local result = assert(task:wait({ timeout = 10 }))
    assert.equal("completed", result.task.status)
  end)
end)
