--- foxapi: PHOTA models, asynchronous tasks.
--
-- `POST /v1/images/generations` creates a task (billed); `GET /v1/tasks/{id}`
-- is polled until it is completed, failed or cancelled. Wire facts:
-- PROVIDERS.md §1.
-- @module imgedit.providers.foxapi

local errors = require("imgedit.errors")
local file = require("imgedit.file")
local params = require("imgedit.params")
local result = require("imgedit.result")
local scheduler = require("imgedit.scheduler")
local task = require("imgedit.task")
local transport = require("imgedit.transport")

local checks = params.checks

local foxapi = {
  name = "foxapi",
  env = { api_key = "FOXAPI_API_KEY", base_url = "FOXAPI_BASE_URL" },
  base_url = "https://api.foxapi.cc",
  timeout = 60,
  operations = {},
}

--- A public image URL; local files cannot be sent to foxapi.
local function public_url(v)
  if file.is(v) then
    return nil, ("is a local file (%s): foxapi only takes public URLs; upload it and pass its URL,"
      .. " or use the powertokens provider"):format(v.path)
  end
  if type(v) == "string" and v:match("^data:") then
    return nil, "is a data: URI: foxapi only takes public http(s) URLs"
  end
  return checks.url(v)
end

local text = checks.text()
local outputs = checks.integer(1)
local resolution = checks.one_of({ "1K", "4K" })
local unit = checks.number(0, 1)
local profile_ids = checks.array(text)

--- Per-call options of operations that wait for a task.
local WAIT_CONTROL = { timeout = true, on_progress = true, poll = true }

--- One schema per model; `model` picks it for `submit`.
local SCHEMAS = {
  ["phota-image-edit"] = {
    operation = "foxapi edit",
    fields = {
      { name = "prompt", required = true, check = text },
      { name = "images", wire = "image_urls", required = true, check = checks.array(public_url),
        hint = "an array of public image URLs" },
      { name = "n", wire = "num_outputs", default = 1, check = outputs },
      { name = "resolution", default = "1K", check = resolution },
      { name = "profile_ids", check = profile_ids },
    },
  },
  ["phota-image"] = {
    operation = "foxapi generate",
    fields = {
      { name = "prompt", required = true, check = text },
      { name = "n", wire = "num_outputs", default = 1, check = outputs },
      { name = "resolution", default = "1K", check = resolution },
      { name = "aspect_ratio", check = checks.one_of({ "1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9" }) },
    },
  },
  ["phota-image-enhance"] = {
    operation = "foxapi enhance",
    fields = {
      { name = "image", wire = "image_url", required = true, check = public_url, hint = "a public image URL" },
      { name = "resolution", check = resolution },
      { name = "creativity", check = unit },
      { name = "resemblance", check = unit },
      { name = "profile_ids", check = profile_ids },
    },
  },
  ["phota-create-profile"] = {
    operation = "foxapi create_profile",
    fields = {
      { name = "archive", wire = "image_archive_url", required = true, check = public_url,
        hint = "the public URL of a ZIP of face photos" },
    },
  },
}

for model, schema in pairs(SCHEMAS) do
  schema.control = WAIT_CONTROL
  table.insert(schema.fields, 1, { name = "model", check = checks.one_of({ model }), default = model })
end

--- Validates `input` for `model` and returns the wire body and per-call options.
local function build(model, input)
  local schema = SCHEMAS[model]
  if not schema then
    local known = {}
    for name in pairs(SCHEMAS) do known[#known + 1] = name end
    table.sort(known)
    return nil, errors.new("invalid_request", ("foxapi: unknown model %s (known: %s)")
      :format(params.show(model), table.concat(known, ", ")))
  end
  local body, control = params.build(schema, input)
  if not body then return nil, control end
  local ok, problem = task.check_wait_options(control)
  if not ok then return nil, problem end
  return body, control
end

function foxapi.task_path(id)
  -- task ids are opaque: escape everything outside the unreserved set
  return "/v1/tasks/" .. id:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end)
end

--- JSON numbers arrive as floats from lua-cjson; whole ones read better
-- (and compare equal in string form) as integers where Lua has them.
local to_integer = math.tointeger or function(v) return v end

local function number_or_nil(v)
  if type(v) ~= "number" then return nil end
  return to_integer(v) or v
end

--- Normalized fields of a task JSON (see `imgedit.task`).
function foxapi.read_task(raw)
  local info = type(raw.task_info) == "table" and raw.task_info or {}
  return {
    id = type(raw.id) == "string" and raw.id or nil,
    status = type(raw.status) == "string" and raw.status or nil,
    progress = number_or_nil(raw.progress),
    estimated_time = number_or_nil(info.estimated_time),
    can_cancel = info.can_cancel == true,
    model = type(raw.model) == "string" and raw.model or nil,
    created = number_or_nil(raw.created),
    error = type(raw.error) == "table" and raw.error or nil,
  }
end

--- The Result of a completed task: `results[]` (or the `output` variant some
-- responses of this gateway use).
function foxapi.task_result(client, t)
  local raw = t.raw
  local images, profile_id = {}, nil
  if type(raw.results) == "table" then
    for _, entry in ipairs(raw.results) do
      if type(entry) == "table" then
        if type(entry.url) == "string" then
          images[#images + 1] = { url = entry.url }
        elseif type(entry.profile_id) == "string" then
          profile_id = profile_id or entry.profile_id
        end
      end
    end
  elseif type(raw.output) == "table" then
    local urls = type(raw.output.urls) == "table" and raw.output.urls or { raw.output.url }
    for _, url in ipairs(urls) do
      if type(url) == "string" then images[#images + 1] = { url = url } end
    end
  end
  if #images == 0 and not profile_id then
    return nil, errors.new("decode", ("task %s is completed but lists no results"):format(t.id),
      { task_id = t.id, request_id = t.request_id })
  end
  return result.new(client, {
    images = images, profile_id = profile_id, model = t.model, created = t.created,
    request_id = t.request_id, task = t, raw = raw,
  })
end

--- Submits a validated body; returns a Task.
local function submit_body(client, body, deadline)
  local res, err = transport.request(client, {
    method = "POST", url = client.config.base_url .. "/v1/images/generations",
    json = body, auth = true, billed = true, decode = true, deadline = deadline,
  })
  if not res then return nil, err end
  local raw = res.json
  if type(raw) ~= "table" or type(raw.id) ~= "string" or raw.id == "" then
    return nil, errors.new("decode", "the provider accepted the request but returned no task id",
      { status = res.status, request_id = res.request_id })
  end
  local t = task.new(client, raw.id, raw)
  t.request_id = res.request_id
  return t
end

--- Submits `input` for `model`, then waits for its Result.
local function run(client, model, input)
  local body, control = build(model, input)
  if not body then return nil, control end
  local timeout = control.timeout or (control.poll and control.poll.timeout)
    or (client.config.poll and client.config.poll.timeout) or task.POLL_DEFAULTS.timeout
  local deadline = scheduler.now() + timeout
  local t, err = submit_body(client, body, deadline)
  if not t then return nil, err end
  return t:wait({ on_progress = control.on_progress, poll = control.poll, deadline = deadline,
                  timeout = timeout })
end

--- The operations that submit and wait, and the model each uses unless
-- the caller names another.
local WAITING_OPERATIONS = {
  edit = "phota-image-edit",
  generate = "phota-image",
  enhance = "phota-image-enhance",
  create_profile = "phota-create-profile",
}

for operation, model in pairs(WAITING_OPERATIONS) do
  foxapi.operations[operation] = function(client, input)
    return run(client, input.model or model, input)
  end
end

--- Submits only; returns a Task (billed once).
function foxapi.operations.submit(client, input)
  local body, control = build(input.model or "phota-image-edit", input)
  if not body then return nil, control end
  if control.on_progress or control.poll then
    return nil, errors.new("invalid_request", "foxapi submit: submit does not wait; pass on_progress and poll"
      .. " to task:wait{...}")
  end
  local deadline = control.timeout and (scheduler.now() + control.timeout) or nil
  return submit_body(client, body, deadline)
end

--- A handle for an existing task id; no request is made.
function foxapi.operations.task(client, id)
  if id == "" or id:find("[%c%s]") then
    return nil, errors.new("invalid_request", ("task id %s is not a valid id"):format(params.show(id)))
  end
  return task.new(client, id)
end

return foxapi
