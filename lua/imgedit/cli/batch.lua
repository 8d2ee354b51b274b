--- `imgedit batch jobs.jsonl`: many jobs at once, resumable.
--
-- Each non-blank line of the file is one JSON object: a job (see
-- `imgedit.cli.job.build`). Every line is checked before anything is sent: a
-- line that is not a valid job is a usage error and nothing runs. The jobs
-- then run concurrently (`imgedit.gather`); a failed job never stops the
-- others; a summary ends the run.
--
-- Resuming: a job is skipped when its outputs exist, and a job of an
-- asynchronous provider whose task id is in the journal (`imgedit.cli.journal`) is polled, not submitted
-- again. So a batch killed mid-way and started again pays for nothing twice.
--
-- The run keeps the gallery of the output directory (`imgedit.cli.gallery`)
-- up to date: a card per job, rewritten as each job starts and ends.
-- @module imgedit.cli.batch

local cjson = require("cjson")
local errors = require("imgedit.errors")
local imgedit = require("imgedit")
local file = require("imgedit.file")
local gallery = require("imgedit.cli.gallery")
local job = require("imgedit.cli.job")
local journal = require("imgedit.cli.journal")
local output = require("imgedit.cli.output")
local progress = require("imgedit.cli.progress")
local providers = require("imgedit.providers")

local batch = {}

--- Extensions `result:save_all` gives images.
local EXTENSIONS = file.EXTENSIONS

--- Errors after which a resumed task is not worth polling again: with
-- --retry-failed, its job is submitted anew.
local DEAD = { task_failed = true, cancelled = true, not_found = true }

local function exists(path)
  local f = io.open(path, "rb")
  if not f then return false end
  f:close()
  return true
end

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

--- Reads and checks the jobs file. Returns the jobs (in order), or nil and a
-- usage error naming the line.
function batch.read(path, defaults)
  local handle, problem = io.open(path, "rb")
  if not handle then
    return nil, output.usage(("cannot read the jobs file: %s; check the path"):format(tostring(problem)), "batch")
  end
  local text, read_problem = handle:read("*a")
  handle:close()
  if not text then
    return nil, output.usage(("cannot read the jobs file %s: %s; give a file of JSON lines"):format(path,
      tostring(read_problem)), "batch")
  end
  local base = job.safe_name((path:match("([^/]+)$") or "jobs"):gsub("%.[^.]*$", ""))
  local jobs, seen = {}, {}
  local number = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    number = number + 1
    local spec_text = trim(line)
    if spec_text ~= "" and spec_text:sub(1, 1) ~= "#" then
      local where = ("%s line %d"):format(path, number)
      local ok, spec = pcall(cjson.decode, spec_text)
      if not ok or type(spec) ~= "table" or (next(spec) ~= nil and spec[1] ~= nil) then
        return nil, output.usage(("%s is not a JSON object (one job per line, e.g. "
          .. "{\"prompt\": \"...\", \"images\": [\"https://...\"]}): fix it and run again"):format(where), "batch")
      end
      if spec.id ~= nil and type(spec.id) ~= "string" and type(spec.id) ~= "number" then
        return nil, output.usage(("%s: id must be a string (the output files' prefix)"):format(where), "batch")
      end
      if type(spec.id) == "number" then
        -- JSON numbers decode as floats: 12 is named "12", not "12.0"
        spec.id = spec.id == math.floor(spec.id) and math.abs(spec.id) < 2 ^ 53 and ("%d"):format(spec.id)
          or ("%.17g"):format(spec.id)
      end
      spec.provider = spec.provider or defaults.provider
      local j, err = job.build(spec, where)
      if not j then return nil, err end
      j.key = j.key or ("%s-%d"):format(base, number)
      j.name = j.name or j.key
      if seen[j.key] then
        return nil, output.usage(("%s: job id %q is also used on line %d; ids name the output files and"
          .. " must be unique"):format(where, j.key, seen[j.key]), "batch")
      end
      seen[j.key] = number
      j.line, j.spec = number, spec_text
      jobs[#jobs + 1] = j
    end
  end
  if #jobs == 0 then
    return nil, output.usage(("%s has no jobs: write one JSON object per line"):format(path), "batch")
  end
  return jobs
end

--- The files of job `j` in `dir` when all its outputs exist, else nil:
-- from the journal's record of it, else by the names save_all gives.
local function existing_outputs(j, dir, state)
  if state and state.spec == j.spec and state.done then
    for _, path in ipairs(state.done) do
      if not exists(path) then return nil end
    end
    if #state.done > 0 then return state.done end
  end
  if state and state.spec ~= j.spec then return nil end -- the files are of an older version of the job
  local files = {}
  for i = 1, j.outputs do
    local found
    for _, ext in ipairs(EXTENSIONS) do
      local path = ("%s/%s-%d%s"):format(dir, j.name, i, ext)
      if exists(path) then
        found = path
        break
      end
    end
    if not found then return nil end
    files[i] = found
  end
  return files
end

--- What to do about a failed job, for the summary (nil when the error's
-- own advice says it all).
local FIX_LINE = { invalid_request = true, api = true, not_found = true }
local TRANSIENT = { network = true, timeout = true, server = true, rate_limited = true, decode = true }

local function advice(j, err, unjournaled, dir)
  if type(err) ~= "table" then return nil end
  if err.task_id and unjournaled[j.key] == err.task_id then
    return ("its task %s is not in the journal, which could not be written: a new run would submit it again;"
      .. " follow it with: imgedit task %s --wait -o %s"):format(err.task_id, err.task_id, dir)
  end
  if DEAD[err.kind] and err.task_id then
    return ("its task %s %s; run again with --retry-failed to submit it again (billed again)")
      :format(tostring(err.task_id), err.kind == "cancelled" and "was cancelled" or
        (err.kind == "not_found" and "is gone" or "failed"))
  end
  if err.task_id and providers.get(j.provider).asynchronous then
    return ("run the same command again: it resumes polling task %s, without submitting it again")
      :format(err.task_id)
  end
  if FIX_LINE[err.kind] then
    return ("fix line %d of the jobs file, then run the same command again (finished jobs are skipped)")
      :format(j.line)
  end
  if TRANSIENT[err.kind] then return "run the same command again: finished jobs are skipped" end
  return nil
end

--- Runs a batch. opts: `file`, `output`, `concurrency`, `provider`,
-- `retry_failed`, `timeout`, `json`, `progress` (mode), `client(provider)`,
-- `check_key(provider)`. Returns the exit status, or nil and a usage error.
function batch.run(opts)
  local jobs, err = batch.read(opts.file, { provider = opts.provider })
  if not jobs then return nil, err end
  local used = {}
  for _, j in ipairs(jobs) do used[j.provider] = true end
  for _, name in ipairs(providers.names()) do
    if used[name] then
      local ok, problem = opts.check_key(name)
      if not ok then return nil, problem end
    end
  end
  -- every line as the library would check it, before anything is sent
  for _, j in ipairs(jobs) do
    local ok, problem = job.check(j, opts.client(j.provider))
    if not ok then
      return nil, output.usage(("%s line %d: %s; fix it and run again"):format(opts.file, j.line,
        tostring(problem.message or problem)), "batch")
    end
  end

  local dir = opts.output
  local book, problem = journal.open(dir)
  if not book then return nil, output.usage(problem) end

  local display = progress.new({ mode = opts.progress, total = true })
  if book.skipped_lines > 0 then
    display:log(("the journal %s has %d unreadable line(s) (a crash mid-write?); they are ignored")
      :format(book.path, book.skipped_lines))
  end
  local album = gallery.for_run(dir, function(message) display:log(message) end)

  -- Decide, for each job: skip, resume or submit.
  local todo, outcomes = {}, {}
  local skipped, resumed = 0, 0
  for i, j in ipairs(jobs) do
    display:add(j.key)
    local state = book:get(j.key)
    local files = existing_outputs(j, dir, state)
    if files then
      skipped = skipped + 1
      outcomes[i] = { ok = true, skipped = true, files = output.array(files) }
      display:finish(j.key, "skipped", "outputs exist")
      album:kept(j, files)
      if opts.json then
        output.json_line({ job = j.key, line = j.line, ok = true, skipped = true, provider = j.provider,
                           op = j.op, files = output.array(files) })
      end
    else
      if state and state.task_id and providers.get(j.provider).asynchronous then
        if state.spec ~= j.spec then
          display:log(("%s: line %d changed since it was submitted as task %s; submitting it again")
            :format(j.key, j.line, state.task_id))
        elseif state.failed and DEAD[state.failed] and opts.retry_failed then
          display:log(("%s: task %s %s; submitting it again (--retry-failed)")
            :format(j.key, state.task_id, state.failed == "cancelled" and "was cancelled" or "failed"))
        else
          j.resume = state.task_id
          resumed = resumed + 1
        end
      end
      todo[#todo + 1] = i
      album:put(j, "queued")
    end
  end
  album:write()

  if resumed > 0 then
    display:log(("resuming %d task%s found in %s (not submitted again)")
      :format(resumed, resumed == 1 and "" or "s", book.path))
  end

  -- A journal that cannot be written stops every submission not yet made:
  -- a task it cannot record would be paid for again by the next run.
  local unjournaled, not_submitted, reported = {}, 0, false
  local function journal_write(ok, message)
    if not ok and not reported then
      reported = true
      display:log(message .. "; no more jobs are submitted")
    end
  end
  local function refused(j)
    not_submitted = not_submitted + 1
    return nil, errors.new("io", ("%s: not submitted: %s"):format(j.key, book:broken()))
  end

  local ctx = {
    client = opts.client, display = display, output = dir, timeout = opts.timeout,
    -- the files the journal says this batch wrote are its own: replaced, not renamed around
    overwrite = opts.overwrite or function(path) return book:owns(path) end,
    on_submitted = function(j, task)
      local ok, message = book:submitted(j.key, j.spec, task.id)
      if not ok then unjournaled[j.key] = task.id end
      journal_write(ok, message)
    end,
  }

  local function attempt(j)
    if book:broken() and not j.resume then return refused(j) end
    return job.run(j, ctx)
  end

  local function run_one(j)
    local started = display.now()
    album:started(j)
    local result, run_err = attempt(j)
    if not result and j.resume and opts.retry_failed and type(run_err) == "table" and DEAD[run_err.kind] then
      display:log(("%s: resumed task %s: %s; submitting it again (--retry-failed)")
        :format(j.key, j.resume, run_err.kind))
      j.resume = nil
      result, run_err = attempt(j)
    end
    if result then
      journal_write(book:done(j.key, j.spec, result.files))
      display:finish(j.key, "completed", table.concat(result.files, " "))
    else
      journal_write(book:failed(j.key, j.spec, type(run_err) == "table" and run_err.task_id or j.resume,
        type(run_err) == "table" and run_err.kind or "internal"))
      display:finish(j.key, "failed", output.error_text(run_err))
    end
    album:finished(j, result or { error = run_err, hint = advice(j, run_err, unjournaled, dir) },
      display.now() - started)
    if opts.json then
      local line = { job = j.key, line = j.line, ok = result ~= nil, provider = j.provider, op = j.op }
      if result then
        for k, v in pairs(result) do line[k] = v end
      else
        line.error = output.error_fields(run_err)
        line.task_id = type(run_err) == "table" and run_err.task_id or nil
        line.hint = advice(j, run_err, unjournaled, dir)
      end
      display:print(output.encode(line), io.stdout)
    elseif result then
      display:result(("%s: %s"):format(j.key, table.concat(result.files, " ")))
    end
    if not result then return nil, run_err end
    return result
  end

  local fns = {}
  for n, i in ipairs(todo) do
    local j = jobs[i]
    fns[n] = function() return run_one(j) end
  end

  local results = progress.run(display, function()
    return imgedit.gather(fns, { concurrency = opts.concurrency })
  end)
  display:close()
  book:close()
  album:write()

  for n, i in ipairs(todo) do
    local r = results[n]
    if r.ok then
      outcomes[i] = { ok = true, files = r.value.files, resumed = r.value.resumed }
    else
      outcomes[i] = { ok = false, err = r.err }
    end
  end

  -- The summary.
  local completed, failed, resumed_done = 0, 0, 0
  for _, o in ipairs(outcomes) do
    if o.ok and not o.skipped then completed = completed + 1 end
    if o.ok and o.resumed then resumed_done = resumed_done + 1 end
    if not o.ok then failed = failed + 1 end
  end
  local elapsed = display:elapsed()
  if opts.json then
    output.json_line({ summary = {
      file = opts.file, jobs = #jobs, completed = completed, resumed = resumed_done, skipped = skipped,
      failed = failed, seconds = math.floor(elapsed * 1000 + 0.5) / 1000, journal = book.path,
      gallery = album.page,
      journal_error = book:broken(), not_submitted = not_submitted,
    } })
  else
    local lines = {}
    lines[1] = ("batch %s: %d job%s in %s: %d completed%s, %d skipped (outputs exist), %d failed"):format(
      opts.file, #jobs, #jobs == 1 and "" or "s", progress.seconds(elapsed), completed,
      resumed_done > 0 and (" (" .. resumed_done .. " resumed)") or "", skipped, failed)
    for i, o in ipairs(outcomes) do
      if not o.ok then
        local j = jobs[i]
        lines[#lines + 1] = ("  failed %s (line %d): %s"):format(j.key, j.line, output.error_text(o.err))
        local hint = advice(j, o.err, unjournaled, dir)
        if hint then lines[#lines + 1] = "    " .. hint end
      end
    end
    if book:broken() then
      lines[#lines + 1] = ("journal: %s; %d job%s not submitted. Fix that (disk space, permissions), then run the"
        .. " same command again: jobs whose outputs exist are skipped"):format(book:broken(), not_submitted,
        not_submitted == 1 and " was" or "s were")
    elseif failed > 0 then
      lines[#lines + 1] = "journal: " .. book.path
    end
    if album.page then lines[#lines + 1] = "gallery: " .. album.page end
    io.stdout:write(table.concat(lines, "\n"), "\n")
    io.stdout:flush()
  end
  return (failed == 0 and not book:broken()) and 0 or 1
end

return batch
