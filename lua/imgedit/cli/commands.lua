--- The single-job commands of `imgedit`: edit, generate, enhance and task.
--
-- Each returns an exit status: 0 success, 1 an API or task failure, or
-- nil and a usage error (status 2) for bad options, a missing key, or
-- parameters the library refuses before sending anything.
-- @module imgedit.cli.commands

local imgedit = require("imgedit")
local job = require("imgedit.cli.job")
local output = require("imgedit.cli.output")
local progress = require("imgedit.cli.progress")

local commands = {}

--- Options that belong to one provider only, and what the other uses instead.
local PROVIDER_OPTIONS = {
  { option = "size", flag = "--size", provider = "powertokens", instead = "foxapi uses --resolution 1K|4K" },
  { option = "format", flag = "--format", provider = "powertokens", instead = "foxapi results are URLs" },
  { option = "seed", flag = "--seed", provider = "powertokens" },
  { option = "negative", flag = "--negative", provider = "powertokens" },
  { option = "resolution", flag = "--resolution", provider = "foxapi", instead = "powertokens uses --size WxH" },
  { option = "aspect_ratio", flag = "--aspect-ratio", provider = "foxapi", instead = "powertokens uses --size WxH" },
}

--- Kinds of error after which the task may still finish on the server.
local STILL_RUNNING = { timeout = true, network = true, server = true, rate_limited = true, decode = true }

local function check_provider_options(args)
  for _, p in ipairs(PROVIDER_OPTIONS) do
    if args[p.option] ~= nil and args.provider ~= p.provider then
      return output.usage(("%s is a %s option%s: drop it, or add --provider %s"):format(p.flag, p.provider,
        p.instead and (" (" .. p.instead .. ")") or "", p.provider), args.command)
    end
  end
  return nil
end

--- The job spec of edit / generate / enhance options.
local function spec_of(args, op)
  local spec = {
    provider = args.provider, op = op, id = args.name,
    prompt = args.prompt, n = args.n, resolution = args.resolution, size = args.size,
    response_format = args.format, seed = args.seed, negative_prompt = args.negative,
    aspect_ratio = args.aspect_ratio, creativity = args.creativity, resemblance = args.resemblance,
    model = args.model,
  }
  local images = args.image or {}
  if op == "edit" then
    if #images == 0 then
      return nil, output.usage("edit needs at least one input image: add --image URL (or --image PATH with"
        .. " --provider powertokens)", op)
    end
    spec.images = images
  elseif op == "enhance" then
    if #images ~= 1 then
      return nil, output.usage("enhance takes exactly one --image URL", op)
    end
    spec.image = images[1]
  end
  return spec
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
  end
  return 0
end

--- Runs one job (built) with a display; returns the exit status.
local function run_job(args, ctx, j)
  local display = progress.new({ mode = ctx.progress_mode })
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
  if not result then
    display:finish(j.key, "failed")
    return fail(args, err, display)
  end
  display:finish(j.key, "completed", table.concat(result.files, " "))
  display:close()
  return succeed(args, j, result, display)
end

--- `imgedit edit|generate|enhance ...`
function commands.operation(args, ctx)
  local op = args.command
  if op == "enhance" and args.provider ~= "foxapi" then
    return nil, output.usage("enhance is a foxapi operation (powertokens has none): drop --provider "
      .. args.provider .. " or use --provider foxapi", op)
  end
  local problem = check_provider_options(args)
  if problem then return nil, problem end
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
  local ready, err = ctx.prepare("foxapi")
  if not ready then return nil, err end
  local client = ctx.client("foxapi")
  if args.wait then
    local j = { key = "task", provider = "foxapi", op = "edit", resume = args.id,
                name = args.name and job.safe_name(args.name) or nil }
    return run_job(args, ctx, j)
  end
  local task
  task, err = client:task(args.id)
  if not task then return fail(args, err) end
  local ok, refresh_err = imgedit.run(function() return task:refresh() end)
  if not ok then return fail(args, refresh_err) end
  local urls = output.array()
  for _, entry in ipairs(type(task.raw.results) == "table" and task.raw.results or {}) do
    if type(entry) == "table" and type(entry.url) == "string" then urls[#urls + 1] = entry.url end
  end
  if type(task.raw.output) == "table" and #urls == 0 then
    for _, url in ipairs(type(task.raw.output.urls) == "table" and task.raw.output.urls or { task.raw.output.url }) do
      if type(url) == "string" then urls[#urls + 1] = url end
    end
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
    io.stdout:write(line, "\n")
    for _, url in ipairs(urls) do io.stdout:write(url, "\n") end
    io.stdout:flush()
  end
  if failed then
    io.stderr:write(("imgedit: task %s %s%s; submit it again if it is still wanted\n"):format(task.id,
      task.status, e.message and (": " .. tostring(e.message)) or ""))
    return 1
  end
  return 0
end

return commands
