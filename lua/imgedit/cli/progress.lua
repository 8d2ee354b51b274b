--- The progress display of the `imgedit` command.
--
-- Three modes:
--
-- - `tty`: a live block at the bottom of the terminal, one line per running
--   task (status, a bar, percent, elapsed, estimated remaining) and, for a
--   batch, a total line. It is redrawn in place (`\r`, cursor up, ANSI clear)
--   at most every `REDRAW` seconds; finished tasks leave a permanent line
--   above it.
-- - `plain`: one log line per change of status (and at most one per
--   `PLAIN_EVERY` seconds per task for progress), for logs and pipes.
-- - `none`: nothing.
--
-- Everything goes to standard error: standard output carries the results.
-- @module imgedit.cli.progress

local core = require("imgedit.core")
local errors = require("imgedit.errors")
local imgedit = require("imgedit")

local progress = {}

--- Least time between two redraws of the live block (seconds).
local REDRAW = 0.1
--- Least time between two progress lines of one task in plain mode.
local PLAIN_EVERY = 2
--- How often the live display moves on its own (seconds).
local TICK = 0.2
--- Width of the bar, in characters.
local BAR = 20

local function execute_ok(command)
  local a, _, c = os.execute(command)
  if type(a) == "number" then return a == 0 end -- Lua 5.1, LuaJIT
  return a == true and (c == nil or c == 0)
end

--- True when file descriptor `fd` is a terminal. Lua has no isatty: the
-- POSIX shell's `test -t` answers for us (the shell inherits our fds).
function progress.isatty(fd)
  return execute_ok("test -t " .. math.floor(fd))
end

--- The size of the terminal on standard error: rows, columns (24, 80 when
-- unknown). `stty` reads its standard input, so it is pointed at fd 2.
function progress.terminal_size()
  local pipe = io.popen("stty size <&2 2>/dev/null")
  local text = pipe and pipe:read("*a") or ""
  if pipe then pipe:close() end
  local rows, cols = text:match("^(%d+)%s+(%d+)")
  rows, cols = tonumber(rows), tonumber(cols)
  if not rows or rows < 3 then rows = 24 end
  if not cols or cols < 20 then cols = 80 end
  return rows, cols
end

--- The mode to use for `requested` ("auto", "tty", "plain" or "none"):
-- auto is `tty` when standard error is a terminal (and TERM is not "dumb"),
-- else `plain`.
function progress.choose(requested)
  if requested and requested ~= "auto" then return requested end
  local term = os.getenv("TERM")
  if term and term ~= "" and term ~= "dumb" and progress.isatty(2) then return "tty" end
  return "plain"
end

--- Seconds as "4.2s", "3m05s" or "1h02m".
function progress.seconds(s)
  if s ~= s or s < 0 then s = 0 end
  -- an estimate from a server can be anything: past 100 days it says no more
  if s >= 8640000 then return ">100d" end
  if s < 60 then return ("%.1fs"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(math.floor(s / 60), math.floor(s % 60)) end
  return ("%dh%02dm"):format(math.floor(s / 3600), math.floor(s % 3600 / 60))
end
local seconds = progress.seconds

--- Seconds a task will likely still take: from its progress (a task at 40%
-- after 2 s needs 3 s more), else from the provider's estimate; nil if unknown.
function progress.remaining(elapsed, percent, estimate)
  if percent and percent > 0 and percent < 100 and elapsed > 0 then
    return elapsed * (100 - percent) / percent
  end
  if estimate and estimate > elapsed then return estimate - elapsed end
  return nil
end

local function bar(percent)
  local filled = math.floor((percent or 0) * BAR / 100 + 0.5)
  if filled > BAR then filled = BAR end
  return "[" .. ("#"):rep(filled) .. ("-"):rep(BAR - filled) .. "]"
end

local function clip(text, width)
  if #text <= width then return text end
  return text:sub(1, math.max(1, width - 3)) .. "..."
end

local Display = {}
Display.__index = Display

--- A display. opts: `mode` ("tty", "plain" or "none"), `stream` (default
-- io.stderr), `total` (true: show a batch total line), `now` (clock).
function progress.new(opts)
  opts = opts or {}
  local self = setmetatable({
    mode = opts.mode or "plain",
    stream = opts.stream or io.stderr,
    total = opts.total,
    now = opts.now or core.now,
    jobs = {}, order = {},
    drawn = 0, last_draw = -math.huge,
  }, Display)
  self.started = self.now()
  progress.current = self
  if self.mode == "tty" then
    self.rows, self.cols = progress.terminal_size()
    -- standard output on the same screen: the permanent lines already show
    -- what `result` would print there
    self.results_shown = progress.isatty(1)
  end
  return self
end

--- Registers a job (queued) under `key`.
function Display:add(key)
  if not self.jobs[key] then
    self.jobs[key] = { key = key, status = "queued" }
    self.order[#self.order + 1] = key
    -- one column for the names, as wide as the longest (up to 24)
    self.key_width = math.min(24, math.max(self.key_width or 4, #key))
  end
end

local FINISHED = { completed = true, failed = true, skipped = true }

local function counts(self)
  local c = { queued = 0, running = 0, completed = 0, failed = 0, skipped = 0, total = #self.order }
  for _, key in ipairs(self.order) do
    local status = self.jobs[key].status
    if FINISHED[status] then c[status] = c[status] + 1
    elseif status == "queued" then c.queued = c.queued + 1
    else c.running = c.running + 1 end
  end
  return c
end

--- The line of one running job.
local function job_line(job, now, key_width)
  local elapsed = now - (job.t0 or now)
  local percent = job.progress
  local parts = {
    ("%-" .. key_width .. "s"):format(clip(job.key, key_width)),
    ("%-10s"):format(job.status),
  }
  if percent then
    parts[#parts + 1] = bar(percent)
    parts[#parts + 1] = ("%3d%%"):format(math.floor(percent))
  else
    parts[#parts + 1] = "[" .. (" "):rep(BAR) .. "]"
    parts[#parts + 1] = "  --"
  end
  parts[#parts + 1] = seconds(elapsed)
  local left = progress.remaining(elapsed, percent, job.estimate)
  if left then parts[#parts + 1] = "~" .. seconds(left) .. " left" end
  return table.concat(parts, "  ")
end

--- The batch total line: jobs done, a bar of the whole, elapsed, estimate.
function Display:total_line(now)
  local c = counts(self)
  local sum = c.completed + c.failed + c.skipped
  for _, key in ipairs(self.order) do
    local job = self.jobs[key]
    if not FINISHED[job.status] and job.progress then sum = sum + job.progress / 100 end
  end
  local percent = c.total > 0 and 100 * sum / c.total or 100
  local elapsed = now - self.started
  local line = ("batch  %d/%d done  %s %3d%%  %d running  %d queued  %d failed  %s"):format(
    c.completed + c.skipped, c.total, bar(percent), math.floor(percent), c.running, c.queued,
    c.failed, seconds(elapsed))
  local left = progress.remaining(elapsed, percent)
  if left and sum > 0 then line = line .. "  ~" .. seconds(left) .. " left" end
  return line
end

--- The live block, as lines.
function Display:block(now)
  local lines, running = {}, {}
  local key_width = self.key_width or 4
  for _, key in ipairs(self.order) do
    local job = self.jobs[key]
    if not FINISHED[job.status] and job.status ~= "queued" then running[#running + 1] = job end
  end
  local room = (self.rows or 24) - 2 - (self.total and 1 or 0)
  for i, job in ipairs(running) do
    if i > room and #running > room + 1 then
      lines[#lines + 1] = ("... and %d more running"):format(#running - room)
      break
    end
    lines[#lines + 1] = job_line(job, now, key_width)
  end
  if self.total then lines[#lines + 1] = self:total_line(now) end
  local width = (self.cols or 80) - 1
  for i, line in ipairs(lines) do lines[i] = clip(line, width) end
  return lines
end

--- Escape codes that take the cursor back to the start of the block and
-- clear it (the cursor rests at the end of the block's last line).
function Display:erase_code()
  if self.drawn == 0 then return "" end
  local up = self.drawn > 1 and ("\27[" .. (self.drawn - 1) .. "A") or ""
  return "\r" .. up .. "\27[2K\27[J"
end

--- Redraws the live block (tty mode): at most every REDRAW seconds unless
-- `force`.
function Display:draw(force)
  if self.mode ~= "tty" or self.closed then return end
  local now = self.now()
  if not force and now - self.last_draw < REDRAW then return end
  self.last_draw = now
  local lines = self:block(now)
  self.stream:write(self:erase_code() .. table.concat(lines, "\n"))
  self.stream:flush()
  self.drawn = #lines
end

--- Periodic redraw, so that elapsed times move between task updates.
function Display:tick()
  self:draw(false)
end

--- Writes a permanent line: to `stream` (default standard error) above the
-- live block in tty mode; as it is otherwise. `text` has no newline.
function Display:print(text, stream)
  stream = stream or self.stream
  -- a task id or a message from a server: never shown with a key in it
  text = errors.scrub(text)
  if self.mode == "tty" and not self.closed and self.drawn > 0 then
    self.stream:write(self:erase_code())
    self.stream:flush()
    self.drawn = 0
    stream:write(text, "\n")
    stream:flush()
    self:draw(true)
  else
    stream:write(text, "\n")
    stream:flush()
  end
end

--- A result line for standard output (the files of a job), unless the
-- terminal shows it already (tty mode with standard output on a terminal).
function Display:result(text)
  if self.results_shown then return end
  self:print(text, io.stdout)
end

--- A log line (plain mode and tty mode; nothing in none mode).
function Display:log(text)
  if self.mode == "none" then return end
  self:print("imgedit: " .. text)
end

--- Statuses plain mode does not log (see Display:update).
local QUIET = { submitting = true, resuming = true, saving = true, completed = true }

local function percent_text(job)
  return job.progress and (" " .. math.floor(job.progress) .. "%") or ""
end

--- Updates job `key`: fields `status`, `progress` (0-100), `estimate`
-- (seconds), `task_id`, `t0` (when its task started, on this display's
-- clock), `resumed` (boolean).
function Display:update(key, fields)
  self:add(key)
  local job = self.jobs[key]
  local old_status, old_progress = job.status, job.progress
  for k, v in pairs(fields) do job[k] = v end
  if not job.t0 and job.status ~= "queued" then job.t0 = self.now() end
  if self.mode == "plain" then
    local now = self.now()
    if job.status ~= old_status then
      -- "submitting" is followed at once by its answer; "completed" and
      -- "saving" by the line of `finish`
      if not QUIET[job.status] then
        local what = job.status .. percent_text(job)
        if job.task_id and not job.announced then
          job.announced = true
          what = ("%s task %s (%s%s)"):format(job.resumed and "resumed" or "submitted", job.task_id, what,
            job.estimate and (", estimated " .. seconds(job.estimate)) or "")
        end
        self:log(("%s: %s"):format(key, what))
      end
      job.last_line = now
    elseif job.progress ~= old_progress and now - (job.last_line or 0) >= PLAIN_EVERY then
      local elapsed = now - job.t0
      local left = progress.remaining(elapsed, job.progress, job.estimate)
      self:log(("%s: %s%s, %s elapsed%s"):format(key, job.status, percent_text(job), seconds(elapsed),
        left and (", ~" .. seconds(left) .. " left") or ""))
      job.last_line = now
    end
  elseif self.mode == "tty" then
    self:draw(job.status ~= old_status)
  end
end

--- Marks job `key` finished: `status` "completed", "failed" or "skipped";
-- `text` says more (the files, the error). Leaves a permanent line.
function Display:finish(key, status, text)
  self:add(key)
  local job = self.jobs[key]
  job.status = status
  if status == "completed" then job.progress = 100 end
  local elapsed = self.now() - (job.t0 or self.now())
  if self.mode == "tty" then
    local parts = { ("%-" .. self.key_width .. "s"):format(job.key), ("%-10s"):format(status) }
    if status == "completed" then
      parts[#parts + 1] = bar(100)
      parts[#parts + 1] = "100%"
    end
    if status ~= "skipped" then parts[#parts + 1] = seconds(elapsed) end
    if text and text ~= "" then parts[#parts + 1] = text end
    self:print(table.concat(parts, "  "))
  elseif self.mode == "plain" then
    self:log(("%s: %s%s%s"):format(key, status, status == "skipped" and "" or (" in " .. seconds(elapsed)),
      text and text ~= "" and (": " .. text) or ""))
  end
end

--- Removes the live block (tty mode) before the final output.
function Display:close()
  if self.mode == "tty" and not self.closed and self.drawn > 0 then
    self.stream:write(self:erase_code())
    self.stream:flush()
    self.drawn = 0
  end
  self.closed = true
end

--- Elapsed seconds since the display was made.
function Display:elapsed()
  return self.now() - self.started
end

--- Runs `fn` in the scheduler, with a ticker that keeps the live display
-- moving on a terminal between task updates; the ticker's sleep is cut
-- short when `fn` returns, so the command ends at once. Returns fn's first
-- two results.
function progress.run(display, fn)
  local scheduler = require("imgedit.scheduler")
  return imgedit.run(function()
    local finished = false
    local alarm = scheduler.alarm()
    if display.mode == "tty" then
      imgedit.spawn(function()
        while not finished do
          display:tick()
          scheduler.sleep(TICK, alarm)
        end
      end)
    end
    local a, b = fn()
    finished = true
    alarm:ring()
    return a, b
  end)
end

return progress
