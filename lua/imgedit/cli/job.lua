--- One unit of work of the `imgedit` command: an edit, generate or enhance
-- on one provider, from the command line's options or a line of a batch
-- file, run to saved files.
--
-- A foxapi job is submitted, then waited for: between the two, `on_submitted`
-- lets a batch write the task id to its journal, and a job that already has a
-- task (`resume`) is only waited for, never submitted again.
-- @module imgedit.cli.job

local imgedit = require("imgedit")
local output = require("imgedit.cli.output")

local job = {}

job.PROVIDERS = { foxapi = true, powertokens = true }
job.OPERATIONS = { edit = true, generate = true, enhance = true }

--- Which operations each provider offers (the command's subset).
local OFFERS = {
  foxapi = { edit = true, generate = true, enhance = true },
  powertokens = { edit = true, generate = true },
}

--- The foxapi model of each operation, for `submit`.
local FOX_MODEL = { edit = "phota-image-edit", generate = "phota-image", enhance = "phota-image-enhance" }

--- Environment variables of each provider (as the library reads them).
job.ENV = {
  foxapi = { api_key = "FOXAPI_API_KEY", base_url = "FOXAPI_BASE_URL" },
  powertokens = { api_key = "POWERTOKENS_API_KEY", base_url = "POWERTOKENS_BASE_URL" },
}

--- Names a batch line may use for the command line's spellings.
local ALIASES = { negative = "negative_prompt", format = "response_format" }

--- Fields of a job line that are the command's, not the operation's.
local CONTROL = { provider = true, op = true, id = true }

local function is_remote(value)
  return value:match("^[Hh][Tt][Tt][Pp][Ss]?://") ~= nil or value:match("^data:") ~= nil
end

local function readable(path)
  local f = io.open(path, "rb")
  if not f then return false end
  -- a directory opens, but reading it fails (an empty file reads nil too,
  -- without a message: the library reports it better)
  local data, problem = f:read(1)
  f:close()
  return data ~= nil or problem == nil
end

--- An image value as the library takes it: URLs and data: URIs as they
-- are, a local path as `imgedit.file(path)` (powertokens only).
-- Returns the value, or nil and a message that says what to do.
function job.image(provider, value, where)
  if type(value) ~= "string" or is_remote(value) then return value end
  if provider == "foxapi" then
    if readable(value) then
      return nil, ("%s: %s is a local file, but foxapi only takes public image URLs: upload it and pass its"
        .. " https:// URL, or use the powertokens provider, which accepts local files"):format(where, value)
    end
    return nil, ("%s: %s is not an http(s) URL: foxapi needs public image URLs"):format(where, value)
  end
  if not readable(value) then
    return nil, ("%s: %s is neither an http(s) URL nor a readable file: check the path"):format(where, value)
  end
  return imgedit.file(value)
end

--- A file name prefix that stays in the output directory (as
-- `result:save_all` makes it).
function job.safe_name(name)
  name = tostring(name):gsub("[^%w._-]", "_"):gsub("^%.+", "")
  if name == "" then return "image" end
  return name
end

--- Builds a job. `spec`: `provider`, `op`, `id` (its name: the output files'
-- prefix), and the operation's parameters (the library's names, friendly or
-- wire; `negative` and `format` too). `where` names its origin in messages
-- ("line 3"). Returns the job, or nil and a usage error.
-- A job: {key, provider, op, params, name, outputs (expected image count)}.
function job.build(spec, where)
  local provider = spec.provider or "foxapi"
  if not job.PROVIDERS[provider] then
    return nil, output.usage(("%s: unknown provider %s: use \"foxapi\" or \"powertokens\"")
      :format(where, tostring(provider)))
  end
  local op = spec.op or "edit"
  if not job.OPERATIONS[op] then
    return nil, output.usage(("%s: unknown op %s: use \"edit\", \"generate\" or \"enhance\"")
      :format(where, tostring(op)))
  end
  if not OFFERS[provider][op] then
    return nil, output.usage(("%s: %s has no %s operation: use the foxapi provider for %s")
      :format(where, provider, op, op))
  end
  local params = {}
  for key, value in pairs(spec) do
    if not CONTROL[key] then params[ALIASES[key] or key] = value end
  end
  -- images: a list, or one string
  local list_key = params.images ~= nil and "images" or (params.image_urls ~= nil and "image_urls") or nil
  if op == "enhance" then
    if params.image == nil and type(params.images) == "table" and #params.images == 1 then
      params.image, params.images = params.images[1], nil
    end
    if type(params.image) == "string" then
      local value, problem = job.image(provider, params.image, where)
      if not value then return nil, output.usage(problem) end
      params.image = value
    end
  else
    if params.image ~= nil and list_key == nil then
      params.images, params.image, list_key = params.image, nil, "images"
    end
    if type(params[list_key or ""]) == "string" then params[list_key] = { params[list_key] } end
    if list_key and type(params[list_key]) == "table" then
      local images = {}
      for i, value in ipairs(params[list_key]) do
        local converted, problem = job.image(provider, value, where)
        if not converted then return nil, output.usage(problem) end
        images[i] = converted
      end
      params[list_key] = images
    end
  end
  if provider == "foxapi" then params.model = params.model or FOX_MODEL[op] end
  local n = params.n or params.num_outputs
  return {
    key = spec.id and job.safe_name(spec.id) or nil,
    name = spec.id and job.safe_name(spec.id) or nil,
    provider = provider, op = op, params = params,
    outputs = type(n) == "number" and n >= 1 and math.floor(n) or 1,
  }
end

--- The API key for `provider`: `given` (--api-key), else the environment.
-- Returns it, or nil and a usage error that says how to set it.
function job.api_key(provider, given)
  local key = given or os.getenv(job.ENV[provider].api_key)
  if not key or key == "" then
    return nil, output.usage(("no API key for %s: set %s in the environment (or pass --api-key KEY)")
      :format(provider, job.ENV[provider].api_key))
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
  local result, err
  local task_id
  if j.provider == "foxapi" then
    local task
    if j.resume then
      task, err = client:task(j.resume)
      if not task then return nil, err end
      display:update(key, { status = "resuming", task_id = j.resume, resumed = true })
    else
      display:update(key, { status = "submitting" })
      task, err = client:submit(j.params)
      if not task then return nil, err end
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
  local files, save_err = result:save_all(ctx.output, j.name)
  if not files then
    if type(save_err) == "table" then save_err.task_id = save_err.task_id or task_id end
    return nil, save_err
  end
  return {
    files = output.array(files), urls = urls_of(result), task_id = task_id, model = result.model,
    request_id = result.request_id, resumed = j.resume ~= nil,
  }
end

return job
