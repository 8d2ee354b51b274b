--- The single-job commands of `imgedit`: edit, generate, enhance and task.
--
-- Each returns an exit status: 0 success, 1 an API or task failure, or
-- nil and a usage error (status 2) for bad options, a missing key, or
-- parameters the library refuses before sending anything.
-- @module imgedit.cli.commands

local cjson = require("cjson")
local errors = require("imgedit.errors")
local imgedit = require("imgedit")
local job = require("imgedit.cli.job")
local models = require("imgedit.cli.models")
local output = require("imgedit.cli.output")
local progress = require("imgedit.cli.progress")
local providers = require("imgedit.providers")

local commands = {}

--- Kinds of error after which the task may still finish on the server.
local STILL_RUNNING = { timeout = true, network = true, server = true, rate_limited = true, decode = true }

--- argparse's key of an option's value (its long name, dashes as underscores).
local function arg_key(option)
  return option.name
end

--- The parameters the options of `op` give, by field name, and the
-- options that were given (for messages).
local function given_options(args, op)
  local params, given = {}, {}
  for _, option in ipairs(models.options(op)) do
    local value = args[arg_key(option)]
    if value ~= nil then
      params[option.name] = value
      given[#given + 1] = option
    end
  end
  return params, given
end

--- `--set NAME=JSON` values: into `params` where the model has the name
-- (checked as that parameter), into `extra` otherwise (sent as given).
local function apply_set(list, entry, own, op, params)
  local known = {}
  if own then
    for _, f in ipairs(models.fields(entry, op)) do
      known[f.name] = true
      if f.wire then known[f.wire] = true end
    end
  end
  local extra
  for _, item in ipairs(list or {}) do
    local name, text = item:match("^([%w_.-]+)=(.*)$")
    if not name then
      return nil, output.usage(("--set %s: write NAME=JSON, e.g. --set 'seed=7' or --set 'style=\"vivid\"'")
        :format(item), op)
    end
    local ok, value = pcall(cjson.decode, text)
    if not ok then
      return nil, output.usage(("--set %s: the value is not JSON (a string needs quotes: %s='\"%s\"')")
        :format(item, name, text), op)
    end
    if known[name] then
      params[name] = value
    else
      extra = extra or {}
      extra[name] = value
    end
  end
  if extra then params.extra = extra end
  return true
end

--- Options given that the chosen model does not take: a usage error that
-- lists the ones it does, and which models take the option.
local function check_options(given, entry, op, d, model)
  local fields = {}
  for _, f in ipairs(models.fields(entry, op)) do fields[f.name] = true end
  for _, option in ipairs(given) do
    if not fields[option.name] then
      local takers = {}
      for _, t in ipairs(option.takers) do takers[#takers + 1] = ("%s %s"):format(t.provider, t.model) end
      local flags = models.flags_of(entry, op)
      return output.usage(("%s is not an option of %s %s; its options: %s (and --set NAME=JSON for fields"
        .. " beyond them). %s is taken by %s: pick one with --model%s"):format(option.flag, d.name, model,
        #flags > 0 and table.concat(flags, ", ") or "none", option.flag, table.concat(takers, ", "),
        " (and -p for another provider)"), op)
    end
  end
  return nil
end

--- The job spec of an operation's options.
local function spec_of(args, op)
  local d = providers.get(args.provider)
  local offered = false
  for _, o in ipairs(d.operations) do offered = offered or o == op end
  if not offered then
    return nil, output.usage(("%s is not an operation of %s (it offers: %s): use -p %s"):format(op, d.name,
      table.concat(d.operations, ", "), table.concat(models.providers_for(op), " or -p ")), op)
  end
  local model = args.model or d.defaults[op]
  local entry, own = job.entry(d, op, model)
  local params, given = given_options(args, op)
  if own then
    local problem = check_options(given, entry, op, d, model)
    if problem then return nil, problem end
  end
  local ok, problem = apply_set(args.set, entry, own, op, params)
  if not ok then return nil, problem end
  params.provider, params.op, params.id, params.model = args.provider, op, args.name, args.model
  for _, f in ipairs(models.fields(entry, op)) do
    if f.name == "prompt" then
      if args.prompt == nil and f.required and own then
        return nil, output.usage(("%s %s needs --prompt TEXT"):format(d.name, model), op)
      end
      params.prompt = args.prompt
    end
  end
  local field = job.image_field(entry, op)
  local images = args.image or {}
  if field then
    if field.type ~= "array" then
      if #images ~= 1 and (field.required or #images > 1) then
        return nil, output.usage(("%s takes exactly one --image URL"):format(op), op)
      end
      params[field.name] = images[1]
    elseif #images == 0 and field.required then
      return nil, output.usage(("%s needs at least one input image: add --image URL%s"):format(op,
        d.local_files and " (or --image PATH)" or ""), op)
    elseif #images > 0 then
      params[field.name] = images
    end
  elseif #images > 0 then
    return nil, output.usage(("%s %s takes no input image: drop --image"):format(d.name, model), op)
  end
  return params
end

--- What to tell about an error after which the task goes on on the server.
local function resume_hint(err, dir)
  if type(err) == "table" and err.task_id and STILL_RUNNING[err.kind] then
    return ("the task may still finish on the server: follow it with: imgedit task %s --wait -o %s")
      :format(err.task_id, dir)
  end
  return nil
end

--- Reports a failure (stderr, and a JSON line with --json); returns the exit status.
local function fail(args, err, display)
  local status = (type(err) == "table" and err.kind == "invalid_request") and 2 or 1
  local hint = resume_hint(err, args.output)
  if display then display:close() end
  io.stderr:write(output.error_text(err), "\n")
  if hint then io.stderr:write("imgedit: ", hint, "\n") end
  if args.json then
    output.json_line({ ok = false, error = output.error_fields(err), hint = hint })
  end
  return status
end

--- Prints a finished job's files (or its JSON).
local function succeed(args, j, result, display)
  if args.json then
    local line = { ok = true, provider = j.provider, op = j.op }
    for k, v in pairs(result) do line[k] = v end
    output.json_line(line)
  else
    for _, path in ipairs(result.files) do display:result(path) end
    if result.profile_id then io.stdout:write(result.profile_id, "\n") end
  end
  return 0
end

--- With --gallery: adds the job's card to the output directory's gallery.
local function add_to_gallery(args, j, result, err, seconds)
  local outcome = result or { error = err, hint = resume_hint(err, args.output) }
  local page, problem = require("imgedit.cli.gallery").single(args.output, j, outcome, seconds)
  io.stderr:write("imgedit: ", page and ("gallery: " .. page) or problem, "\n")
end

--- Runs one job (built) with a display; returns the exit status.
local function run_job(args, ctx, j)
  local display = progress.new({ mode = ctx.progress_mode })
  local started = display.now()
  ctx.display = display
  display:add(j.key)
  local submitted
  ctx.on_submitted = function(_, task) submitted = task.id end
  local ok, result, err = pcall(progress.run, display, function() return job.run(j, ctx) end)
  if not ok then
    display:close()
    if submitted and tostring(result):find("interrupted", 1, true) then
      io.stderr:write(("imgedit: interrupted; task %s keeps running on the server: follow it with:"
        .. " imgedit task %s --wait -o %s\n"):format(submitted, submitted, args.output))
    end
    error(result, 0)
  end
  if args.gallery then add_to_gallery(args, j, result, err, display.now() - started) end
  if not result then
    display:finish(j.key, "failed")
    return fail(args, err, display)
  end
  display:finish(j.key, "completed", table.concat(result.files, " "))
  display:close()
  return succeed(args, j, result, display)
end

--- `imgedit <operation> ...`
function commands.operation(args, ctx)
  local op = args.command
  local spec, err = spec_of(args, op)
  if not spec then return nil, err end
  local j
  j, err = job.build(spec, "--image")
  if not j then
    err.help = op
    return nil, err
  end
  j.key = op
  local ready
  ready, err = ctx.prepare(j.provider)
  if not ready then return nil, err end
  return run_job(args, ctx, j)
end

--- `imgedit task ID [--wait]`
function commands.task(args, ctx)
  local ready, err = ctx.prepare(args.provider)
  if not ready then return nil, err end
  local client = ctx.client(args.provider)
  if args.wait then
    local j = { key = "task", provider = args.provider, op = "edit", resume = args.id,
                name = args.name and job.safe_name(args.name) or nil }
    return run_job(args, ctx, j)
  end
  local task
  task, err = client:task(args.id)
  if not task then return fail(args, err) end
  local ok, refresh_err = imgedit.run(function() return task:refresh() end)
  if not ok then return fail(args, refresh_err) end
  local urls = output.array()
  if task.status == "completed" then
    -- a finished task's wait makes no request: it reads the result
    local result = task:wait()
    for _, image in ipairs(result and result.images or {}) do urls[#urls + 1] = image.url end
  end
  local failed = task.status == "failed" or task.status == "cancelled"
  local e = type(task.error) == "table" and task.error or {}
  if args.json then
    output.json_line({ ok = not failed, id = task.id, status = task.status, progress = task.progress,
                       estimated_time = task.estimated_time, model = task.model, urls = urls,
                       error = failed and { code = e.code, message = e.message } or nil })
  else
    local line = ("%s  %s  %s%%"):format(task.id, tostring(task.status), tostring(task.progress or 0))
    if not task:done() then
      line = line .. "  (follow it with: imgedit task " .. task.id .. " --wait -o DIR)"
    end
    io.stdout:write(errors.scrub(line), "\n")
    for _, url in ipairs(urls) do io.stdout:write(errors.scrub(url), "\n") end
    io.stdout:flush()
  end
  if failed then
    io.stderr:write(errors.scrub(("imgedit: task %s %s%s; submit it again if it is still wanted\n"):format(task.id,
      task.status, e.message and (": " .. tostring(e.message)) or "")))
    return 1
  end
  return 0
end

return commands
