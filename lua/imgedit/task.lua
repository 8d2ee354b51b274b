--- Tasks of asynchronous providers: submit once, then poll until done.
--
-- A task is made with its provider's codec (the descriptor's `task` table:
-- `path(id)`, `read(raw, task)` → sets the task's normalized fields from
-- its JSON, `result(client, task)` → a Result, `failure(code)` → what the
-- reference advises), so this file knows no provider's wire format.
-- @module imgedit.task

local errors = require("imgedit.errors")
local params = require("imgedit.params")
local scheduler = require("imgedit.scheduler")
local transport = require("imgedit.transport")

local task = {}

local Task = {}
Task.__index = Task

--- Statuses after which a task never changes again, and all those known.
local FINAL = { completed = true, failed = true, cancelled = true }
local KNOWN = { pending = true, processing = true, completed = true, failed = true, cancelled = true }

--- How long the poll made at a wait's deadline may take to be answered
-- (seconds): without it, a task done just before the deadline would be
-- reported as still running.
local FINAL_POLL_TIME = 2

--- Polling defaults (seconds). See `task.next_delay` for the schedule.
local POLL_DEFAULTS = { interval = 0.5, max_interval = 15, timeout = 600 }

--- The shortest poll interval allowed (seconds): no wait may busy-poll.
local MIN_INTERVAL = 0.05

-- What a task needs that is not a field (so that a task prints cleanly):
-- `{client, codec, submitted}`, the client it polls through, its
-- provider's codec, and when its submission was answered (or nil).
local private = setmetatable({}, { __mode = "k" })

--- A task handle for task `id` of `client`, read with `codec`. `raw`
-- (optional) is the task JSON its submission returned, `request_id` the
-- submission's. A task is made on every submission: one table, sized by
-- its constructor for every field the codec sets (those it sets to nil
-- included), so that reading them in grows nothing.
function task.new(client, codec, id, raw, request_id)
  local t = setmetatable({ id = id, raw = raw, request_id = request_id, status = nil, progress = nil,
                           estimated_time = nil, can_cancel = nil, model = nil, created = nil, error = nil }, Task)
  if raw then codec.read(raw, t) end
  private[t] = { client, codec, raw and scheduler.now() or nil }
  return t
end

function task.is(value)
  return getmetatable(value) == Task
end

-- The task keeps the id it was made with: the server's `id` field is not
-- read back (a poll answer cannot move the handle to another task).
function Task:_update(raw)
  private[self][2].read(raw, self)
  self.raw = raw
end

--- Fetches the task's current state once. Returns the task, or nil and an error.
-- @tparam[opt] table opts `deadline` (absolute, internal)
function Task:refresh(opts)
  params.check_self(self, Task, "task.refresh", "imgedit task")
  local client, codec = private[self][1], private[self][2]
  local res, err = transport.request(client.session, {
    method = "GET", url = client.config.base_url .. codec.path(self.id),
    auth = true, decode = true, deadline = opts and opts.deadline,
  })
  if not res then
    err.task_id = self.id
    return nil, err
  end
  if type(res.json) ~= "table" then
    return nil, errors.new("decode", "the task status is not a JSON object", { task_id = self.id, status = res.status })
  end
  self:_update(res.json)
  self.request_id = res.request_id
  return self
end

--- True when the task is completed, failed or cancelled.
function Task:done()
  params.check_self(self, Task, "task.done", "imgedit task")
  return FINAL[self.status] == true
end

--- How long after the predicted finish the poll is aimed, so that it lands
-- after the server's clock has passed it (seconds).
local FINISH_MARGIN = 0.01

--- How long to wait before the next poll.
--
-- The regular gap is `max(interval, 10% of the task's age)`, at most
-- `max_interval`: completion is noticed within 10% of the task's duration
-- (or `interval` for short tasks), and a long task is polled less and less
-- often (about 23 polls between its 5th and 45th second).
--
-- The task's expected finish comes from its progress (a task at 80% after
-- 8 s likely finishes at 10 s) or, before any progress, from the provider's
-- `estimated_time`. When that moment is at most two gaps away, the next poll
-- is aimed just after it instead: a 1 s task is polled once, at 1 s.
-- @tparam number age seconds since the task was created
-- @tparam[opt] number progress 0-100, as last reported
-- @tparam[opt] number estimate the provider's estimated_time, seconds
-- @tparam table poll `{interval =, max_interval =}`
function task.next_delay(age, progress, estimate, poll)
  local gap = math.min(math.max(poll.interval, 0.1 * age), poll.max_interval)
  local finish
  if progress and progress > 0 and progress < 100 and age > 0 then
    finish = age * 100 / progress
  elseif estimate and estimate > 0 then
    finish = estimate
  end
  if finish and finish > age and finish - age <= 2 * gap then
    return finish - age + FINISH_MARGIN
  end
  return gap
end

local NONE = {}

--- The poll options of a wait: the caller's, else the client's, else the
-- defaults (each checked already: numbers, never false).
local function poll_options(client, given)
  local d, c, g = POLL_DEFAULTS, client.config.poll or NONE, given or NONE
  return { interval = g.interval or c.interval or d.interval,
           max_interval = g.max_interval or c.max_interval or d.max_interval,
           timeout = g.timeout or c.timeout or d.timeout }
end

--- The wait options, described as fields are (imgedit.params).
local POLL_FIELDS = {
  interval = params.seconds(MIN_INTERVAL, 3600),
  max_interval = params.seconds(MIN_INTERVAL, 86400),
  timeout = params.seconds(),
}
local check_timeout = POLL_FIELDS.timeout

--- A wait's plan: its options checked once, and turned into a deadline.
local Plan = {}

--- The plan of a wait of `client`'s tasks with options `opts` (`timeout`,
-- `poll`, `on_progress`): `{poll, started, deadline, on_progress}`, the
-- timeout counting from now; or nil and an `invalid_request` error. An
-- operation that submits and then waits makes its plan before submitting,
-- so that its timeout covers both, and hands it to `wait`.
function task.plan(client, opts)
  local ok, problem = task.check_wait_options(opts)
  if not ok then return nil, problem end
  local poll = poll_options(client, opts.poll)
  local started = scheduler.now()
  return setmetatable({ poll = poll, started = started, deadline = started + (opts.timeout or poll.timeout),
                        on_progress = opts.on_progress }, Plan)
end

local function invalid(message)
  return nil, errors.new("invalid_request", message)
end

--- Validates `wait` options; returns them or nil and an error.
function task.check_wait_options(opts)
  if opts.timeout ~= nil then
    local _, problem = check_timeout(opts.timeout)
    if problem then return invalid("timeout " .. problem) end
  end
  if opts.on_progress ~= nil and type(opts.on_progress) ~= "function" then
    return invalid("on_progress must be a function, got " .. params.show(opts.on_progress))
  end
  if opts.poll ~= nil then
    if type(opts.poll) ~= "table" then
      return invalid("poll must be a table {interval =, max_interval =, timeout =}, got " .. params.show(opts.poll))
    end
    for key, value in pairs(opts.poll) do
      local check = POLL_FIELDS[key]
      if not check then
        return invalid(("poll.%s is unknown (known: interval, max_interval, timeout)"):format(tostring(key)))
      end
      local _, problem = check(value)
      if problem then return invalid(("poll.%s %s"):format(key, problem)) end
    end
  end
  return opts
end

--- Polls until the task is done and returns its Result, or nil and an error
-- of kind `task_failed`, `cancelled` or `timeout` (the task keeps running on
-- the server: `err.task_id` resumes it with `client:task(id):wait()`).
-- @tparam[opt] table opts `timeout` (seconds, default poll.timeout = 600),
--   `on_progress` (function(task), on every change of status or progress),
--   `poll` (`{interval, max_interval, timeout}`); or a plan of `task.plan`
function Task:wait(opts)
  params.check_self(self, Task, "task.wait", "imgedit task")
  if opts ~= nil and type(opts) ~= "table" then params.argerror(1, "wait", "table", opts) end
  local client, codec, submitted = private[self][1], private[self][2], private[self][3]
  local plan = getmetatable(opts) == Plan and opts
  if not plan then
    local problem
    plan, problem = task.plan(client, opts or {})
    if not plan then
      problem.task_id = self.id
      return nil, problem
    end
  end
  opts = plan
  local poll, started, deadline = plan.poll, plan.started, plan.deadline
  -- The task's birth, for the schedule: when its submission was answered
  -- (the monotonic clock, precise), else from its `created` stamp (whole
  -- seconds: good enough for a resumed task, which is usually old).
  local function birth()
    if submitted then return submitted end
    if type(self.created) == "number" and self.created > 0 then
      return scheduler.now() - math.max(0, os.time() - self.created)
    end
    return started
  end

  local last_status, last_progress = nil, nil
  local function report()
    if self.status ~= last_status or self.progress ~= last_progress then
      last_status, last_progress = self.status, self.progress
      if opts.on_progress then opts.on_progress(self) end
    end
  end

  if self.status then report() end
  -- Consecutive polls that failed (each after the transport's own retries)
  -- or brought an unknown status: past the client's retry budget, the cause
  -- is returned rather than waited on until the deadline.
  local failures, budget = 0, client.config.max_retries
  -- a handle made from an id alone has no state yet: its first poll is at once
  local poll_now = not self.status
  local at_deadline = false
  while not FINAL[self.status] do
    if not poll_now then
      local now = scheduler.now()
      if at_deadline then
        return nil, errors.new("timeout", ("task %s is still %s after %.1f s of waiting; it keeps running on the"
          .. " server: resume with client:task(%q):wait()"):format(self.id, tostring(self.status or "unknown"),
          now - started, self.id), { task_id = self.id, retryable = true }, client.credentials())
      end
      local delay = task.next_delay(now - birth(), self.progress, self.estimated_time, poll)
      if now + delay >= deadline then
        -- the last poll falls on the deadline itself
        delay = math.max(0, deadline - now)
        at_deadline = true
      end
      scheduler.sleep(delay)
    end
    poll_now = false
    -- the poll at the deadline gets a moment of its own to be answered
    local ok, err = self:refresh({ deadline = at_deadline and (deadline + FINAL_POLL_TIME) or deadline })
    if ok and self.status ~= nil and not KNOWN[self.status] then
      ok, err = nil, errors.new("decode", ("task %s has an unknown status %s"):format(self.id,
        params.show(self.status)), { task_id = self.id, request_id = self.request_id, retryable = true },
        client.credentials())
    end
    if ok then
      failures = 0
      report()
    elseif not err.retryable then
      return nil, err
    else
      failures = failures + 1
      if failures > budget or (at_deadline and not FINAL[self.status]) then
        if failures > 1 then
          err.message = ("%d polls of task %s in a row failed; the last: %s"):format(failures, self.id, err.message)
        end
        err.task_id, err.retryable = self.id, true
        return nil, err
      end
      -- a passing failure is one missed poll: the schedule goes on
    end
  end

  if self.status == "failed" then
    local e = type(self.error) == "table" and self.error or {}
    local code = (type(e.code) == "string" or type(e.code) == "number") and e.code or nil
    local known = code and codec.failure(code) or {}
    return nil, errors.new("task_failed", ("task %s failed: %s"):format(self.id,
      type(e.message) == "string" and e.message or "the provider gave no reason"),
      { task_id = self.id, code = code, type = type(e.type) == "string" and e.type or nil,
        request_id = self.request_id, retryable = known.retryable, advice = known.advice },
      client.credentials())
  end
  if self.status == "cancelled" then
    return nil, errors.new("cancelled", ("task %s was cancelled on the provider's side"):format(self.id),
      { task_id = self.id, request_id = self.request_id })
  end
  return codec.result(client, self)
end

function Task:__tostring()
  return errors.scrub(("imgedit.task(%s, %s, %s%%)"):format(self.id, tostring(self.status or "unknown"),
    tostring(self.progress or 0)))
end

return task
