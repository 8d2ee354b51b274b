--- One unit of work of the `imgedit` command: an edit, generate or enhance
-- on one provider, from the command line's options or a line of a batch
-- file, run to saved files.
--
-- A job of an asynchronous provider is submitted, then waited for: between the two, `on_submitted`
-- lets a batch write the task id to its journal, and a job that already has a
-- task (`resume`) is only waited for, never submitted again.
-- @module imgedit.cli.job

local imgedit = require("imgedit")
local file = require("imgedit.file")
local output = require("imgedit.cli.output")
local providers = require("imgedit.providers")

local job = {}

--- The ids of the tasks this process submitted (billed), in order: what
-- the command prints first should it ever fail with an internal error.
job.submitted = {}

--- Names a batch line may use for the command line's spellings.
local ALIASES = { negative = "negative_prompt", format = "response_format" }

--- Fields of a job line that are the command's, not the operation's.
local CONTROL = { provider = true, op = true, id = true }

local function is_remote(value)
  return value:match("^[Hh][Tt][Tt][Pp][Ss]?://") ~= nil or value:match("^data:") ~= nil
end

-- a regular file only: opening a FIFO to look at it would block
local readable = file.readable

--- The providers that take local files, for advice.
local function file_takers()
  local names = {}
  for _, name in ipairs(providers.names()) do
    if providers.get(name).local_files then names[#names + 1] = name end
  end
  return names
end

--- An image value as the library takes it: URLs and data: URIs as they
-- are, a local path as `imgedit.file(path)` where provider `d` takes local
-- files. Returns the value, or nil and a message that says what to do.
function job.image(d, value, where)
  if type(value) ~= "string" or is_remote(value) then return value end
  if not d.local_files then
    local others = file_takers()
    local instead = #others > 0 and (", or use a provider that accepts local files (%s)"):format(
      table.concat(others, ", ")) or ""
    if readable(value) then
      return nil, ("%s: %s is a local file, but %s only takes public image URLs: upload it and pass its"
        .. " https:// URL%s"):format(where, value, d.name, instead)
    end
    return nil, ("%s: %s is not an http(s) URL: %s needs public image URLs"):format(where, value, d.name)
  end
  if not readable(value) then
    return nil, ("%s: %s is neither an http(s) URL nor a readable file: check the path"):format(where, value)
  end
  return imgedit.file(value)
end

--- The catalog entry a job's model resolves to (its own, else the
-- operation's default model's, which maps its names), and whether it is
-- the model's own.
function job.entry(d, op, model)
  local own = providers.model(d, model or d.defaults[op])
  if own then return own, true end
  return providers.model(d, d.defaults[op]), false
end

--- The image field of `entry` for `op` (`images`, `image`...), or nil.
local function image_field(entry, op)
  for _, f in ipairs(entry.fields) do
    local belongs = f.operations == nil
    for _, o in ipairs(f.operations or {}) do belongs = belongs or o == op end
    if belongs and (f.format == "image" or (f.type == "array" and f.items and f.items.format == "image")) then
      return f
    end
  end
  return nil
end
job.image_field = image_field

--- A file name prefix that stays in the output directory (as
-- `result:save_all` makes it).
function job.safe_name(name)
  name = tostring(name):gsub("[^%w._-]", "_"):gsub("^%.+", "")
  if name == "" then return "image" end
  return name
end

--- Builds a job. `spec`: `provider`, `op`, `id` (its name: the output files'
-- prefix), and the operation's parameters (the library's names, friendly or
-- wire; `negative` and `format` too; `model`, `extra`). `where` names its
-- origin in messages ("line 3"). Returns the job, or nil and a usage error.
-- A job: {key, provider, op, params, name, outputs (expected image count)}.
function job.build(spec, where)
  local provider = spec.provider or providers.names()[1]
  local d = type(provider) == "string" and providers.get(provider)
  if not d then
    return nil, output.usage(("%s: unknown provider %s: use %s"):format(where, tostring(provider),
      providers.listed()))
  end
  local op = spec.op or "edit"
  local offered = false
  for _, o in ipairs(d.operations) do offered = offered or o == op end
  if not offered then
    local others = {}
    for _, name in ipairs(providers.names()) do
      for _, o in ipairs(providers.get(name).operations) do
        if o == op then others[#others + 1] = name end
      end
    end
    return nil, output.usage(("%s: %s has no %s operation (it offers: %s)%s"):format(where, provider,
      tostring(op), table.concat(d.operations, ", "),
      #others > 0 and ("; use the provider " .. table.concat(others, " or ")) or ""))
  end
  local params = {}
  for key, value in pairs(spec) do
    if not CONTROL[key] then params[ALIASES[key] or key] = value end
  end
  -- images: under the name the model gives them, a list or one string
  local entry = job.entry(d, op, type(params.model) == "string" and params.model or nil)
  local field = entry and image_field(entry, op)
  if field then
    local names = { "images", "image", "image_urls", "image_url" }
    if field.name ~= "images" and field.name ~= "image" then names[#names + 1] = field.name end
    local given_as
    for _, name in ipairs(names) do
      if params[name] ~= nil and given_as == nil then given_as = name end
    end
    if given_as then
      local value = params[given_as]
      params[given_as] = nil
      local single = field.type ~= "array"
      if single and type(value) == "table" and #value == 1 then value = value[1] end
      if not single and type(value) == "string" then value = { value } end
      if type(value) == "table" then
        local images = {}
        for i, v in ipairs(value) do
          local converted, problem = job.image(d, v, where)
          if not converted then return nil, output.usage(problem) end
          images[i] = converted
        end
        value = images
      elseif type(value) == "string" then
        local converted, problem = job.image(d, value, where)
        if not converted then return nil, output.usage(problem) end
        value = converted
      end
      local name = (given_as == field.wire) and field.wire or field.name
      params[name] = value
    end
  end
  local n = params.n or params.num_outputs
  return {
    key = spec.id and job.safe_name(spec.id) or nil,
    name = spec.id and job.safe_name(spec.id) or nil,
    provider = provider, op = op, params = params,
    outputs = type(n) == "number" and n >= 1 and n < 1000 and math.floor(n) or 1,
  }
end

--- The API key for `provider`: `given` (--api-key), else the environment.
-- Returns it, or nil and a usage error that says how to set it.
function job.api_key(provider, given)
  local variable = providers.get(provider).env.api_key
  local key = given or os.getenv(variable)
  if not key or key == "" then
    return nil, output.usage(("no API key for %s: set %s in the environment (or pass --api-key KEY)")
      :format(provider, variable))
  end
  return key
end

local function urls_of(result)
  local urls = output.array()
  for _, image in ipairs(result.images) do
    if image.url then urls[#urls + 1] = image.url end
  end
  return urls
end

--- The client method a new job of `j` calls, and its parameters: an
-- asynchronous provider's job is submitted (then waited for), with the
-- model of its operation named.
function job.call(j)
  local d = providers.get(j.provider)
  if not d.asynchronous then return j.op, j.params end
  local params = j.params
  if params.model == nil and params.body == nil then
    -- submit alone does not know the operation: name its default model
    params = { model = d.defaults[j.op] }
    for k, v in pairs(j.params) do params[k] = v end
  end
  return "submit", params
end

--- Checks job `j` with `client`'s own validation, sending nothing: true,
-- or nil and the error.
function job.check(j, client)
  local method, params = job.call(j)
  return require("imgedit.client").check(client, method, params)
end

--- Runs a job to saved files.
-- ctx: `client(provider)` → client; `display` (imgedit.cli.progress);
-- `output` (directory); `timeout` (seconds to wait for a task, or nil);
-- `on_submitted(job, task)` (before waiting). A job with `resume` (a task
-- id) is waited for without submitting.
-- Returns `{files, urls, task_id, model, resumed}`, or nil and an error
-- (`err.task_id` set when a task exists).
function job.run(j, ctx)
  local display, key = ctx.display, j.key
  local client = ctx.client(j.provider)
  local d = providers.get(j.provider)
  local result, err
  local task_id
  if d.asynchronous then
    local task
    if j.resume then
      task, err = client:task(j.resume)
      if not task then return nil, err end
      display:update(key, { status = "resuming", task_id = j.resume, resumed = true })
    else
      display:update(key, { status = "submitting" })
      local _, params = job.call(j)
      task, err = client:submit(params)
      if not task then return nil, err end
      job.submitted[#job.submitted + 1] = task.id
      if ctx.on_submitted then ctx.on_submitted(j, task) end
    end
    task_id = task.id
    local t0
    result, err = task:wait({
      timeout = ctx.timeout,
      on_progress = function(t)
        if not t0 then
          -- a resumed task started before this process: count from its creation
          local age = (j.resume and type(t.created) == "number" and not t:done())
            and math.max(0, os.time() - t.created) or 0
          t0 = display.now() - age
        end
        display:update(key, { status = t.status, progress = t.progress, estimate = t.estimated_time,
                              task_id = t.id, t0 = t0 })
      end,
    })
    if not result then
      if type(err) == "table" then err.task_id = err.task_id or task_id end
      return nil, err
    end
  else
    display:update(key, { status = "running" })
    local params = j.params
    if ctx.timeout and params.timeout == nil then
      params = { timeout = ctx.timeout }
      for k, v in pairs(j.params) do params[k] = v end
    end
    result, err = client[j.op](client, params)
    if not result then return nil, err end
  end
  display:update(key, { status = "saving" })
  -- never over a file this command did not write, unless ctx.overwrite says so
  local files, taken = result:save_all(ctx.output, j.name, { overwrite = ctx.overwrite or false })
  if not files then
    local save_err = taken
    if type(save_err) == "table" then save_err.task_id = save_err.task_id or task_id end
    return nil, save_err
  end
  for i, name in pairs(taken) do
    -- on standard error even with --progress none: a file went elsewhere than its name says
    display:print(("imgedit: %s already exists and is kept: this image is saved as %s (--overwrite replaces"
      .. " existing files)"):format(name, files[i]))
  end
  return {
    files = output.array(files), urls = urls_of(result), task_id = task_id, model = result.model,
    request_id = result.request_id, resumed = j.resume ~= nil, profile_id = result.profile_id,
  }
end

return job
