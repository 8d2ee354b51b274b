--- foxapi: image models as asynchronous tasks.
--
-- `POST /v1/images/generations` creates a task (billed); `GET /v1/tasks/{id}`
-- is polled until it is completed, failed or cancelled. Every image model of
-- the gateway uses these two endpoints, `model` choosing the model. The wire
-- facts are in doc/providers.md; this module is their one copy in code: the
-- descriptor (see `imgedit.providers`), the model catalog, and how a task's
-- JSON is read.
-- @module imgedit.providers.foxapi

local errors = require("imgedit.errors")
local log = require("imgedit.log")
local params = require("imgedit.params")
local result = require("imgedit.result")
local scheduler = require("imgedit.scheduler")
local task = require("imgedit.task")
local transport = require("imgedit.transport")

local foxapi = {
  name = "foxapi",
  title = "PHOTA, Wan, Grok and Gemini image models; asynchronous tasks",
  env = { api_key = "FOXAPI_API_KEY", base_url = "FOXAPI_BASE_URL" },
  base_url = "https://api.foxapi.cc",
  timeout = 60,
  asynchronous = true,
  local_files = false,
  operations = { "edit", "generate", "enhance", "create_profile" },
  defaults = {
    edit = "phota-image-edit", generate = "phota-image", enhance = "phota-image-enhance",
    create_profile = "phota-create-profile", submit = "phota-image-edit",
  },
  --- The per-call options an operation takes beside its parameters.
  control = { timeout = true, on_progress = true, poll = true },
  control_names = { "timeout", "on_progress", "poll" },
  --- Wire names `extra` may not set: imgedit builds them itself.
  reserved = { "model" },
  --- One authenticated request that is never billed: an unknown task id is
  -- 404 for an accepted key, 401 or 403 for a rejected one.
  ping = { method = "GET", path = "/v1/tasks/imgedit-doctor-ping", accepted = { 404 }, rejected = { 401, 403 } },
  --- Command lines for the command's help, per operation.
  examples = {
    edit = { 'imgedit edit -i https://example.com/me.jpg --prompt "Beach at sunset" -o out',
             'imgedit edit --model wan-2.7-image -i https://example.com/a.jpg \\',
             '  -i https://example.com/b.jpg --prompt "Put the hat of 2 on 1" -n 2' },
    generate = { 'imgedit generate --prompt "A red fox in the snow" --aspect-ratio 16:9 -o out',
                 'imgedit generate --model grok-imagine-image --prompt "A fox" --output-format png' },
    enhance = { "imgedit enhance -i https://example.com/me.jpg --resemblance 0.8 -o out" },
    create_profile = { "imgedit create_profile --archive https://example.com/faces.zip" },
  },
}

-- The catalog ------------------------------------------------------------------------
--
-- Each model's own fields, as the gateway's reference gives them for that
-- model; no limit the reference does not give (the server decides those).
-- Friendly names: `images` is `image_urls`, `n` is `num_outputs`, `image`
-- is `image_url`, `archive` is `image_archive_url`.

local RESOLUTIONS = { "1K", "4K" }

local function prompt(doc, max_length)
  return { name = "prompt", type = "string", required = true, max_length = max_length, doc = doc }
end

local function images(operations, max_items)
  return { name = "images", wire = "image_urls", type = "array", items = { type = "string", format = "image" },
           required = true, min_items = 1, max_items = max_items, operations = operations,
           doc = "public URLs of the images to edit" }
end

local function outputs(max, operations)
  return { name = "n", wire = "num_outputs", type = "integer", min = 1, max = max, default = 1,
           send_default = true, operations = operations, doc = "how many images to make; each one is billed" }
end

local PROFILE_IDS = { name = "profile_ids", type = "array", items = { type = "string" }, nullable = true,
                      doc = "profiles from phota-create-profile; pass them only when necessary" }

local WAN_SIZES = { "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9" }

local WAN_FIELDS = {
  prompt("what to make or change", 2000),
  images({ "edit" }, 4),
  outputs(5, { "generate" }),
  outputs(4, { "edit" }),
  { name = "image_size", default = "square_hd", doc = "a preset, or {width =, height =} in pixels",
    variants = { { type = "string", choices = WAN_SIZES },
                 { type = "object", properties = { width = { type = "integer", min = 1 },
                                                   height = { type = "integer", min = 1 } } } } },
}

local GEMINI_RATIOS = { "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "match_input_image" }
local FLASH_RATIOS = { "1:4", "1:8", "4:1", "8:1" }
for i, ratio in ipairs(GEMINI_RATIOS) do table.insert(FLASH_RATIOS, i, ratio) end

local function gemini(name, ratios, doc)
  return {
    name = name, operations = { "generate" }, doc = doc,
    fields = {
      prompt("what to make"),
      { name = "aspect_ratio", type = "string", choices = ratios, default = "1:1" },
      { name = "resolution", type = "string", default = "1K", doc = "the reference shows 1K; other values unreadable" },
    },
  }
end

foxapi.models = {
  {
    name = "phota-image-edit", operations = { "edit" }, doc = "PHOTA: edits photos by prompt",
    fields = {
      prompt("what to change"),
      images(),
      outputs(),
      { name = "resolution", type = "string", choices = RESOLUTIONS, default = "1K", send_default = true,
        doc = "4K costs double" },
      PROFILE_IDS,
    },
  },
  {
    name = "phota-image", operations = { "generate" }, doc = "PHOTA: images from a prompt",
    fields = {
      prompt("what to make; [[profile_id]] refers to a profile"),
      outputs(),
      { name = "resolution", type = "string", choices = RESOLUTIONS, default = "1K", send_default = true,
        doc = "4K costs double" },
      { name = "aspect_ratio", type = "string", choices = { "1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9" },
        default = "1:1" },
    },
  },
  {
    name = "phota-image-enhance", operations = { "enhance" }, doc = "PHOTA: enhances one photo",
    fields = {
      { name = "image", wire = "image_url", type = "string", format = "image", required = true,
        doc = "the public URL of the photo" },
      { name = "resolution", type = "string", choices = RESOLUTIONS, default = "4K" },
      { name = "creativity", type = "number", min = 0, max = 1, nullable = true },
      { name = "resemblance", type = "number", min = 0, max = 1, nullable = true },
      PROFILE_IDS,
    },
  },
  {
    name = "phota-create-profile", operations = { "create_profile" },
    doc = "PHOTA: a face profile from a ZIP of photos; the result has profile_id",
    fields = {
      { name = "archive", wire = "image_archive_url", type = "string", format = "url", required = true,
        doc = "the public URL of a ZIP of face photos" },
    },
  },
  { name = "wan-2.7-image", operations = { "edit", "generate" },
    doc = "Wan 2.7: images from a prompt, or edits of 1-4 images", fields = WAN_FIELDS },
  { name = "wan-2.7-image-pro", operations = { "edit", "generate" },
    doc = "Wan 2.7 Pro: images from a prompt, or edits of 1-4 images", fields = WAN_FIELDS },
  {
    name = "grok-imagine-image", operations = { "edit", "generate" },
    doc = "Grok Imagine: images from a prompt, or edits of images",
    fields = {
      prompt("what to make or change"),
      images({ "edit" }),
      outputs(4),
      { name = "aspect_ratio", type = "string", nullable = true, operations = { "generate" },
        choices = { "2:1", "20:9", "19.5:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:19.5", "9:20",
                    "1:2" } },
      { name = "output_format", type = "string", choices = { "jpg", "jpeg", "png", "webp" }, default = "jpeg" },
    },
  },
  gemini("gemini-3-pro-image-preview", GEMINI_RATIOS, "Gemini 3 Pro Image (preview): images from a prompt"),
  gemini("gemini-3.1-flash-image-preview", FLASH_RATIOS, "Gemini 3.1 Flash Image (preview): images from a prompt"),
}

-- Tasks ----------------------------------------------------------------------------

--- JSON numbers arrive as floats from lua-cjson; whole ones read better
-- (and compare equal in string form) as integers where Lua has them.
local to_integer = math.tointeger or function(v) return v end

--- A number from the server, or nil when it is not a finite one.
local HUGE = math.huge
local function number_or_nil(v)
  if type(v) ~= "number" or v ~= v or v == HUGE or v == -HUGE then return nil end
  return to_integer(v) or v
end

--- The longest `estimated_time` taken as an estimate (seconds): a week.
local MAX_ESTIMATE = 7 * 86400

--- What the reference advises for each code of a failed task: whether a
-- new (billed) submission may succeed, and what to do.
local AGAIN = "submit it again (billed again)"
local FAILURES = {
  model_unavailable = { true, "the model is unavailable for now: " .. AGAIN .. " after a short delay" },
  content_policy_violation = { false, "the content was refused: change the prompt or the images" },
  generation_failed = { true, "the generation failed: " .. AGAIN },
  timeout = { true, "the task timed out: " .. AGAIN .. ", with simpler parameters" },
  invalid_image_url = { false, "an image URL could not be fetched: check that it is public and reachable" },
  file_too_large = { false, "an input file is too large: reduce it" },
  unsupported_format = { false, "an input is in an unsupported format: use PNG, JPEG or WebP" },
  -- codes seen on platforms that run the same gateway
  invalid_parameters = { false, "the parameters were refused: fix them" },
  image_processing_error = { true, "an image could not be processed: " .. AGAIN },
  image_dimension_mismatch = { false, "the images' dimensions do not match: fix the inputs" },
  request_cancelled = { true, "the request was cancelled: " .. AGAIN .. " if it is still wanted" },
  generation_failed_no_content = { true, "the model returned no image: " .. AGAIN .. ", maybe with another prompt" },
  service_error = { true, "the service failed: " .. AGAIN .. " later" },
  generation_timeout = { true, "the generation timed out: " .. AGAIN .. ", with simpler parameters" },
  resource_exhausted = { true, "the service is overloaded: " .. AGAIN .. " later" },
  quota_exceeded = { false, "the quota is exhausted: top up the balance, then " .. AGAIN },
  service_unavailable = { true, "the service is unavailable: " .. AGAIN .. " later" },
  resource_not_found = { false, "something the task needs was not found: check its inputs" },
  unknown_error = { true, "the provider gave no reason: " .. AGAIN .. " later, or report it if it persists" },
}

--- The result URLs of a completed task's JSON, and its profile id: every
-- shape the reference shows — `results` of `{url}` objects or plain URL
-- strings, `{result_type = "profile", profile_id}`, and `output.url` /
-- `output.urls`.
local function task_results(raw)
  local urls, profile_id = {}, nil
  if type(raw.results) == "table" then
    for _, entry in ipairs(raw.results) do
      if type(entry) == "string" and entry ~= "" then
        urls[#urls + 1] = entry
      elseif type(entry) == "table" then
        if type(entry.url) == "string" and entry.url ~= "" then
          urls[#urls + 1] = entry.url
        elseif type(entry.profile_id) == "string" and entry.profile_id ~= "" then
          profile_id = profile_id or entry.profile_id
        end
      end
    end
  end
  if #urls == 0 and not profile_id and type(raw.output) == "table" then
    local list = type(raw.output.urls) == "table" and raw.output.urls or { raw.output.url }
    for _, url in ipairs(list) do
      if type(url) == "string" and url ~= "" then urls[#urls + 1] = url end
    end
  end
  return urls, profile_id
end

local NO_INFO = {}

--- How imgedit.task reads this provider's tasks.
foxapi.task = {
  --- The poll path of task `id` (ids are opaque: everything outside the
  -- unreserved set is escaped).
  path = function(id)
    return "/v1/tasks/" .. id:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end)
  end,
  --- Sets the normalized fields of task `t` (status, progress,
  -- estimated_time, can_cancel, model, created, error) from its JSON
  -- (`task_info` may be missing from polls).
  read = function(raw, t)
    local info = raw.task_info
    if type(info) ~= "table" then info = NO_INFO end
    -- numbers from the server are ignored unless finite, and clamped
    local progress = number_or_nil(raw.progress)
    if progress then progress = progress < 0 and 0 or progress > 100 and 100 or progress end
    local estimate = number_or_nil(info.estimated_time)
    if estimate and (estimate < 0 or estimate > MAX_ESTIMATE) then estimate = nil end
    t.status = type(raw.status) == "string" and raw.status or nil
    t.progress, t.estimated_time, t.can_cancel = progress, estimate, info.can_cancel == true
    t.model = type(raw.model) == "string" and raw.model or nil
    t.created = number_or_nil(raw.created)
    t.error = type(raw.error) == "table" and raw.error or nil
  end,
  --- The result URLs and profile id of a completed task's JSON.
  results = task_results,
  --- `{retryable, advice}` for a failed task's error code, or nil.
  failure = function(code)
    local known = FAILURES[code]
    if not known then return nil end
    return { retryable = known[1], advice = known[2] }
  end,
}

--- The Result of a completed task, or nil and an error when it lists none.
function foxapi.task.result(client, t)
  local urls, profile_id = task_results(t.raw)
  if #urls == 0 and not profile_id then
    return nil, errors.new("decode", ("task %s is completed but lists no results"):format(t.id),
      { task_id = t.id, request_id = t.request_id })
  end
  local list = {}
  for i, url in ipairs(urls) do list[i] = { url = url } end
  return result.new(client, {
    images = list, profile_id = profile_id, model = t.model, created = t.created,
    request_id = t.request_id, task = t, raw = t.raw,
  })
end

-- Operations ------------------------------------------------------------------------

--- The operations that submit and wait, in the order `submit` tries them.
local WAITING = { "edit", "generate", "enhance", "create_profile" }

--- Validates `input` for `operation`; returns what params.request returns.
local function prepare(client, operation, input, operations)
  local request, err = params.request(foxapi, operation, input, client.config.strict_models, operations)
  if not request then return nil, err end
  if operation == "submit" then
    -- nothing waits: the options are checked, no wait is planned
    local ok, problem = task.check_wait_options(request.control)
    if not ok then return nil, problem end
  else
    -- the wait's options, checked once and made a deadline before the submission
    local plan, problem = task.plan(client, request.control)
    if not plan then return nil, problem end
    request.plan = plan
  end
  if not request.validated or request.note then
    log.unvalidated({ provider = foxapi.name, operation = operation, model = request.model, note = request.note })
  end
  return request
end

--- Submits a body; returns a Task.
local function submit_body(client, request, deadline)
  local res, err = transport.request(client.session, {
    method = "POST", url = client.config.base_url .. "/v1/images/generations",
    json = request.body, auth = true, billed = true, decode = true, deadline = deadline, model = request.model,
  })
  if not res then return nil, err end
  local raw = res.json
  if type(raw) ~= "table" or type(raw.id) ~= "string" or raw.id == "" then
    return nil, errors.new("decode", "the provider accepted the request but returned no task id",
      { status = res.status, request_id = res.request_id })
  end
  return task.new(client, foxapi.task, raw.id, raw, res.request_id)
end

local function run(client, operation, input)
  local request, err = prepare(client, operation, input)
  if not request then return nil, err end
  local t
  t, err = submit_body(client, request, request.plan.deadline)
  if not t then return nil, err end
  return t:wait(request.plan)
end

foxapi.implementation = {}

for _, operation in ipairs(WAITING) do
  foxapi.implementation[operation] = function(client, input)
    return run(client, operation, input)
  end
end

--- Submits only; returns a Task (billed once).
function foxapi.implementation.submit(client, input)
  local request, err = prepare(client, "submit", input, WAITING)
  if not request then return nil, err end
  local control = request.control
  if control.on_progress or control.poll then
    return nil, errors.new("invalid_request", "foxapi submit: submit does not wait; pass on_progress and poll"
      .. " to task:wait{...}")
  end
  local deadline = control.timeout and (scheduler.now() + control.timeout) or nil
  return submit_body(client, request, deadline)
end

--- Validates `input` for `operation` as the operation would, sending
-- nothing: true, or nil and the error.
function foxapi.implementation.check(client, operation, input)
  local request, err = prepare(client, operation, input, operation == "submit" and WAITING or nil)
  if not request then return nil, err end
  return true
end

--- A handle for an existing task id; no request is made.
function foxapi.implementation.task(client, id)
  if id == "" or id:find("[%c%s]") then
    return nil, errors.new("invalid_request", ("task id %s is not a valid id"):format(params.show(id)))
  end
  return task.new(client, foxapi.task, id)
end

return foxapi
