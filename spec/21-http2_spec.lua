-- HTTP/2 through a TLS front (nginx, spec/support/tls.lua): concurrent
-- requests share a connection as streams, and calls in a row reuse it.
local imgedit = require("imgedit")
local helpers = require("spec.helpers")
local tls = require("spec.support.tls")

local SUBMIT = "/foxapi/v1/images/generations"
local SEED_URL = "https://example.com/portrait.jpg"
local N = 30 -- edits at once

--- The most requests of the list that nginx was handling at one time.
local function peak_in_flight(list)
  local events = {}
  for _, r in ipairs(list) do
    events[#events + 1] = { r.started, 1 }
    events[#events + 1] = { r.ended, -1 }
  end
  -- at equal times an end counts before a start
  table.sort(events, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local now, peak = 0, 0
  for _, e in ipairs(events) do
    now = now + e[2]
    peak = math.max(peak, now)
  end
  return peak
end

local distinct_connections = tls.distinct_connections

describe("HTTP/2", function()
  local m, front

  setup(function() m, front = tls.start_with_mock() end)
  teardown(function() tls.stop_with_mock(m, front) end)
  before_each(function() tls.reset_with_mock(m, front, { task_delay = 0.3 }) end)

  local function fox(opts)
    local o = { base_url = front.url .. "/foxapi", ca_file = front.ca_file }
    for k, v in pairs(opts or {}) do o[k] = v end
    return helpers.fox(m, o)
  end

  --- nginx's log of this test, once it has every request the emulator saw.
  local function front_log()
    local upstream = helpers.api_requests(m)
    local seen = front:requests({ count = #upstream })
    assert.equal(#upstream, #seen, "nginx and the emulator saw different numbers of requests")
    return seen
  end

  it("multiplexes dozens of concurrent edits over one or two connections", function()
    -- Every submit is answered late, so all of them are on the wire together.
    m:faults({ { kind = "slow", method = "POST", path = SUBMIT, seconds = 0.5, times = N } })
    local client = fox()
    local jobs = {}
    for i = 1, N do
      jobs[i] = function() return client:edit({ prompt = "p" .. i, images = { SEED_URL } }) end
    end
    local outcomes = imgedit.gather(jobs, { concurrency = N })
    for i, outcome in ipairs(outcomes) do
      assert.is_true(outcome.ok, "edit " .. i .. ": " .. tostring(outcome.err))
      assert.equal(1, #outcome.value.images)
    end

    local seen = front_log()
    local submits = {}
    for _, r in ipairs(seen) do
      assert.equal("HTTP/2.0", r.protocol, r.method .. " " .. r.uri)
      assert.equal(200, r.status, r.method .. " " .. r.uri)
      if r.method == "POST" then submits[#submits + 1] = r end
    end
    assert.equal(N, #submits)
    assert.is_true(#seen > N, "the tasks were never polled")
    local connections = distinct_connections(seen)
    local peak = peak_in_flight(submits)
    assert.is_true(connections <= 2,
      ("%d requests (%d at once) used %d connections"):format(#seen, peak, connections))
    assert.is_true(peak >= 20, ("only %d of %d submits were in flight at once"):format(peak, N))
  end)

  it("reuses one connection for calls made one after another", function()
    local client = fox()
    for i = 1, 4 do
      local result, err = client:edit({ prompt = "p" .. i, images = { SEED_URL } })
      assert.is_nil(err)
      assert.equal(1, #result.images)
    end
    local task = assert(client:submit({ prompt = "last", images = { SEED_URL } }))
    assert(task:refresh())

    local seen = front_log()
    assert.is_true(#seen >= 4 * 2 + 2)
    for _, r in ipairs(seen) do
      assert.equal("HTTP/2.0", r.protocol, r.method .. " " .. r.uri)
    end
    assert.equal(1, distinct_connections(seen), ("%d requests in a row"):format(#seen))
    assert.equal(1, front:connections())
  end)

  it("keeps the connection across clients with the same TLS settings", function()
    for i = 1, 3 do
      assert(fox():submit({ prompt = "p" .. i, images = { SEED_URL } }))
    end
    local seen = front_log()
    assert.equal(3, #seen)
    assert.equal(1, distinct_connections(seen))
  end)
end)
