-- foxapi emulation: the gateway's image models as asynchronous tasks
-- (doc/providers.md, foxapi). This file keeps its own copy of each model's
-- rules, written from the reference and not from the client's catalog: it
-- is the specs' oracle.
--
-- Validation is deliberately stricter than the real gateway: unknown fields
-- are refused too, so the specs prove that the client sends nothing unasked.
--
-- ctx (shared with init.lua): {config, tasks, files, cdn = base URL, now()}.

local cjson = require("cjson")
local http = require("imgedit.mock.http")

local M = {}

-- Field checks: nil when valid, else the rest of the message after the name.

local function check_prompt(v)
  if type(v) ~= "string" or v == "" then return "must be a non-empty string" end
end

local function check_url(v)
  if not http.is_http_url(v) then return "must be an http(s) URL" end
end

local function check_urls(v)
  if not http.is_array(v) or #v == 0 then return "must be a non-empty array of http(s) URLs" end
  for i = 1, #v do
    if not http.is_http_url(v[i]) then
      return ("must be an array of http(s) URLs (item %d is not)"):format(i - 1)
    end
  end
end

local function check_num_outputs(v)
  if not http.is_integer(v) or v < 1 or v > 10 then
    return "must be an integer between 1 and 10"
  end
end

local function check_resolution(v)
  if v ~= "1K" and v ~= "4K" then return 'must be "1K" or "4K"' end
end

local ASPECT_RATIOS = {
  ["1:1"] = true, ["2:3"] = true, ["3:2"] = true, ["3:4"] = true,
  ["4:3"] = true, ["9:16"] = true, ["16:9"] = true,
}
local function check_aspect_ratio(v)
  if not ASPECT_RATIOS[v] then return "must be one of 1:1 2:3 3:2 3:4 4:3 9:16 16:9" end
end

local function check_unit_or_null(v)
  if v == cjson.null then return nil end
  if type(v) ~= "number" or not (v >= 0 and v <= 1) then
    return "must be a number between 0 and 1, or null"
  end
end

local function check_profile_ids(v)
  if v == cjson.null then return nil end
  if not http.is_array(v) then return "must be an array of strings or null" end
  for i = 1, #v do
    if type(v[i]) ~= "string" or v[i] == "" then
      return ("must be an array of non-empty strings (item %d is not)"):format(i - 1)
    end
  end
end

local function check_prompt_upto(max)
  return function(v)
    if type(v) ~= "string" or v == "" then return "must be a non-empty string" end
    if http.utf8_length(v) > max then return ("must be at most %d characters"):format(max) end
  end
end

local function check_choice(list)
  local set = {}
  for _, v in ipairs(list) do set[v] = true end
  local text = table.concat(list, " ")
  return function(v, nullable)
    if nullable and v == cjson.null then return nil end
    if not set[v] then return "must be one of " .. text end
  end
end

local function nullable(check)
  return function(v) return check(v, true) end
end

-- image_urls of the models where it is optional: null, or 1..max URLs.
local function check_optional_urls(max)
  return function(v)
    if v == cjson.null then return nil end
    local problem = check_urls(v)
    if problem then return problem end
    if max and #v > max then return ("must hold at most %d URLs"):format(max) end
  end
end

local function check_count(max)
  return function(v)
    if not http.is_integer(v) or v < 1 or v > max then
      return ("must be an integer between 1 and %d"):format(max)
    end
  end
end

local WAN_PRESETS = check_choice({"square_hd", "square", "portrait_4_3", "portrait_16_9",
                                  "landscape_4_3", "landscape_16_9"})

local function check_image_size(v)
  if type(v) == "table" and v[1] == nil then
    local unknown = http.unknown_key(v, {width = true, height = true})
    if unknown then return "has an unknown field: " .. unknown end
    for _, k in ipairs({"width", "height"}) do
      if not http.is_integer(v[k]) or v[k] < 1 then return k .. " must be a positive integer" end
    end
    return nil
  end
  if WAN_PRESETS(v) then return "must be a preset name or {width, height}" end
end

-- Wan 2.7: edit mode with image_urls (1-4, at most 4 outputs), text to image
-- without (at most 5).
local function wan_rules(body)
  local editing = body.image_urls ~= nil and body.image_urls ~= cjson.null
  local n = body.num_outputs
  if n ~= nil and editing and n > 4 then return "num_outputs", "must be between 1 and 4 when editing" end
  return nil
end

local WAN = {
  required = {"prompt"},
  fields = {prompt = check_prompt_upto(2000), image_urls = check_optional_urls(4),
            num_outputs = check_count(5), image_size = check_image_size},
  check = wan_rules,
}

local GROK_RATIOS = check_choice({"2:1", "20:9", "19.5:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4",
                                  "9:16", "9:19.5", "9:20", "1:2"})

local GEMINI_PRO_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
                           "match_input_image"}
local GEMINI_FLASH_RATIOS = {"1:4", "1:8", "4:1", "8:1"}
for _, r in ipairs(GEMINI_PRO_RATIOS) do GEMINI_FLASH_RATIOS[#GEMINI_FLASH_RATIOS + 1] = r end

local function gemini(ratios)
  return {
    required = {"prompt"},
    -- image_urls: the name sibling platforms use for the input images
    fields = {prompt = check_prompt, aspect_ratio = check_choice(ratios),
              resolution = function(v) if type(v) ~= "string" or v == "" then return "must be a string" end end,
              image_urls = check_optional_urls()},
    resolution = "1K",
  }
end

local MODELS = {
  ["wan-2.7-image"] = WAN,
  ["wan-2.7-image-pro"] = WAN,
  ["grok-imagine-image"] = {
    required = {"prompt"},
    fields = {prompt = check_prompt, image_urls = check_optional_urls(),
              num_outputs = check_count(4), aspect_ratio = nullable(GROK_RATIOS),
              output_format = check_choice({"jpg", "jpeg", "png", "webp"})},
    check = function(body)
      if body.aspect_ratio ~= nil and body.aspect_ratio ~= cjson.null
        and body.image_urls ~= nil and body.image_urls ~= cjson.null then
        return "aspect_ratio", "applies to text to image only (no image_urls)"
      end
    end,
  },
  ["gemini-3-pro-image-preview"] = gemini(GEMINI_PRO_RATIOS),
  ["gemini-3.1-flash-image-preview"] = gemini(GEMINI_FLASH_RATIOS),
  ["phota-image-edit"] = {
    required = {"prompt", "image_urls"},
    fields = {prompt = check_prompt, image_urls = check_urls,
              num_outputs = check_num_outputs, resolution = check_resolution,
              profile_ids = check_profile_ids},
    resolution = "1K",
  },
  ["phota-image"] = {
    required = {"prompt"},
    fields = {prompt = check_prompt, num_outputs = check_num_outputs,
              resolution = check_resolution, aspect_ratio = check_aspect_ratio},
    resolution = "1K",
  },
  ["phota-image-enhance"] = {
    required = {"image_url"},
    fields = {image_url = check_url, resolution = check_resolution,
              creativity = check_unit_or_null, resemblance = check_unit_or_null,
              profile_ids = check_profile_ids},
    resolution = "4K",
  },
  ["phota-create-profile"] = {
    required = {"image_archive_url"},
    fields = {image_archive_url = check_url},
    profile = true,
  },
}

local function invalid(message, code)
  return http.error(422, "invalid_request_error", message, code)
end

-- Returns the model spec, or nil and an error response.
local function validate(body)
  local model = body.model
  if model == nil then return nil, invalid("missing required field: model", "missing_parameter") end
  if type(model) ~= "string" then return nil, invalid("model must be a string", "invalid_parameter") end
  local spec = MODELS[model]
  if not spec then
    return nil, invalid(("model %q is not supported"):format(model), "model_not_found")
  end
  local allowed = {model = true}
  for name in pairs(spec.fields) do allowed[name] = true end
  local unknown = http.unknown_key(body, allowed)
  if unknown then
    return nil, invalid(("unknown field for %s: %s"):format(model, unknown), "unknown_parameter")
  end
  for _, name in ipairs(spec.required) do
    if body[name] == nil then
      return nil, invalid("missing required field: " .. name, "missing_parameter")
    end
  end
  local names = {}
  for name in pairs(body) do
    if name ~= "model" then names[#names + 1] = name end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local problem = spec.fields[name](body[name])
    if problem then return nil, invalid(name .. " " .. problem, "invalid_parameter") end
  end
  if spec.check then
    local name, problem = spec.check(body)
    if name then return nil, invalid(name .. " " .. problem, "invalid_parameter") end
  end
  return spec
end

local ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"

local function new_id(tasks, created)
  for _ = 1, 100 do
    local suffix = {}
    for i = 1, 8 do
      local k = math.random(#ID_CHARS)
      suffix[i] = ID_CHARS:sub(k, k)
    end
    local id = ("task-unified-%d-%s"):format(created, table.concat(suffix))
    if not tasks[id] then return id end
  end
  error("cannot find a free task id")
end

-- Nominal output dimensions (reported by the "output" result shape).
local function dimensions(resolution, aspect_ratio)
  local long = resolution == "4K" and 4096 or 1024
  local w, h = (type(aspect_ratio) == "string" and aspect_ratio or "1:1"):match("^([%d.]+):([%d.]+)$")
  w, h = tonumber(w) or 1, tonumber(h) or 1
  if w >= h then return long, math.floor(long * h / w + 0.5) end
  return math.floor(long * w / h + 0.5), long
end

local function estimated_time(task)
  return math.max(1, math.ceil(task.delay))
end

local function submit(ctx, req)
  local body, err = http.json_body(req)
  if not body then return err end
  local spec
  spec, err = validate(body)
  if not spec then return err end

  local config = ctx.config
  local created = os.time()
  local resolution = body.resolution or spec.resolution
  local outputs = spec.profile and 1 or body.num_outputs or 1
  local task = {
    id = new_id(ctx.tasks, created), model = body.model, created = created,
    start = ctx.now(), delay = config.task_delay, outcome = config.task_outcome,
    fail_code = config.fail_code, fail_message = config.fail_message,
    shape = spec.profile and "results" or config.result_shape,
    task_info = config.poll_task_info,
    profile = spec.profile, outputs = outputs,
    credits = outputs * (resolution == "4K" and 10 or 5),
  }
  task.width, task.height = dimensions(resolution, body.aspect_ratio)
  ctx.tasks[task.id] = task
  if task.outcome == "completed" and not task.profile then
    for i = 1, outputs do
      ctx.files[task.id .. "-" .. i] = {bytes = config.image_bytes}
    end
  end
  -- Exactly the fields of the reference's submit response.
  return http.json(200, {
    created = created, id = task.id, model = task.model,
    object = "image.generation.task", progress = 0, status = "pending",
    task_info = {can_cancel = true, estimated_time = estimated_time(task)},
    type = "image",
  })
end

local function task_view(ctx, task)
  local elapsed = ctx.now() - task.start
  local view = {
    created = task.created, id = task.id, model = task.model,
    object = "image.generation.task", type = "image",
    usage = {credits_reserved = task.credits, user_group = "default"},
    error = cjson.null,
  }
  local done = elapsed >= task.delay
  if not done then
    if elapsed < 0.1 * task.delay then
      view.status, view.progress = "pending", 0
    else
      view.status = "processing"
      view.progress = math.min(99, math.max(1, math.floor(elapsed / task.delay * 100)))
    end
  else
    view.status, view.progress = task.outcome, 100
  end
  if task.task_info then
    view.task_info = {can_cancel = not done, estimated_time = estimated_time(task)}
  end

  local results = cjson.null
  if view.status == "completed" then
    results = {}
    for i = 1, task.outputs do
      if task.profile then
        results[i] = {result_type = "profile", profile_id = "profile_" .. task.id:sub(-8)}
      else
        results[i] = {url = ctx.cdn .. "/files/" .. task.id .. "-" .. i .. ".png"}
      end
    end
  elseif view.status == "failed" then
    view.error = {code = task.fail_code, message = task.fail_message, type = "task_error"}
  end
  if task.shape == "strings" and results ~= cjson.null then
    -- plain URL strings, as sibling platforms answer
    for i, r in ipairs(results) do results[i] = r.url or r end
    view.results = results
  elseif task.shape == "output" then
    if results ~= cjson.null then
      local urls = {}
      for i, r in ipairs(results) do urls[i] = r.url end
      view.output = {url = urls[1], urls = urls, width = task.width, height = task.height}
    else
      view.output = cjson.null
    end
  else
    view.results = results
  end
  return view
end

-- Poll times kept per task (for GET /_mock/tasks); the count goes on past it.
local MAX_POLL_TIMES = 1000

local function poll(ctx, id)
  local task = ctx.tasks[id]
  if not task then
    return http.error(404, "not_found", "task not found: " .. id, "task_not_found")
  end
  task.polls = (task.polls or 0) + 1
  task.poll_times = task.poll_times or {}
  if #task.poll_times < MAX_POLL_TIMES then task.poll_times[#task.poll_times + 1] = ctx.now() end
  return http.json(200, task_view(ctx, task))
end

--- What GET /_mock/tasks reports of every task, oldest first: its timing on
-- the emulator's wall clock (seconds since the epoch) and its polls.
function M.list(ctx)
  local list = {}
  for _, task in pairs(ctx.tasks) do
    local view = task_view(ctx, task)
    list[#list + 1] = {
      id = task.id, model = task.model, status = view.status, outcome = task.outcome,
      start = task.start, delay = task.delay, finish = task.start + task.delay,
      polls = task.polls or 0, poll_times = task.poll_times or {},
    }
  end
  table.sort(list, function(a, b) return a.start < b.start or (a.start == b.start and a.id < b.id) end)
  return list
end

--- Handles a request under /foxapi; `path` is the rest (e.g. /v1/tasks/ID).
function M.handle(ctx, req, path)
  if path == "/v1/images/generations" then
    if req.method ~= "POST" then
      local resp = http.error(405, "invalid_request_error", "use POST for " .. path)
      http.set_header(resp, "Allow", "POST")
      return resp
    end
    return submit(ctx, req)
  end
  local id = path:match("^/v1/tasks/([^/]+)$")
  if id then
    if req.method ~= "GET" and req.method ~= "HEAD" then
      local resp = http.error(405, "invalid_request_error", "use GET for " .. path)
      http.set_header(resp, "Allow", "GET")
      return resp
    end
    return poll(ctx, id)
  end
  return http.error(404, "not_found", "no such endpoint: " .. req.path)
end

return M
