--- powertokens: Qwen and Wan image models, synchronous.
--
-- `POST /v1/images/edits` (and `/v1/images/generations` for text to image)
-- returns the images, as URLs or base64, in one response. The catalog
-- holds the models of the gateway's "messages" form, where the prompt and
-- the images travel as items of one user message; other model families
-- (BytePlus Seedream, MiniMax) take a flat body, sent with `body = {...}`.
-- The wire facts are in doc/providers.md; this module is their one copy in
-- code (see `imgedit.providers` for the descriptor's fields).
-- @module imgedit.providers.powertokens

local core = require("imgedit.core")
local errors = require("imgedit.errors")
local file = require("imgedit.file")
local log = require("imgedit.log")
local params = require("imgedit.params")
local result = require("imgedit.result")
local scheduler = require("imgedit.scheduler")
local transport = require("imgedit.transport")

local powertokens = {
  name = "powertokens",
  title = "Qwen and Wan image models; synchronous",
  env = { api_key = "POWERTOKENS_API_KEY", base_url = "POWERTOKENS_BASE_URL" },
  base_url = "https://api.powertokens.ai",
  timeout = 300,
  asynchronous = false,
  local_files = true,
  operations = { "edit", "generate" },
  defaults = { edit = "qwen-image-2.0-pro", generate = "qwen-image-2.0-pro" },
  control = { timeout = true },
  control_names = { "timeout" },
  reserved = { "model", "input" },
  ping_unavailable = "powertokens documents no request that checks a key without being billed",
  --- Command lines for the command's help, per operation.
  examples = {
    edit = { 'imgedit edit -p powertokens -i photo.jpg --prompt "Seaside" --size 1536x1024' },
    generate = { 'imgedit generate -p powertokens --prompt "A red fox" --size 1024x1024' },
  },
}

--- Where each operation sends its body.
local PATHS = { edit = "/v1/images/edits", generate = "/v1/images/generations" }

-- The catalog ------------------------------------------------------------------------
--
-- `prompt` and `images` become the `{text}` and `{image}` items of the one
-- user message (`into`); every other field is sent at the top level. Each
-- model has its own rules: none is applied to another.

local function prompt(max_length)
  return { name = "prompt", type = "string", required = true, max_length = max_length, into = "text",
           doc = "what to make or change" }
end

local IMAGES = { name = "images", type = "array", required = true, min_items = 1, operations = { "edit" },
                 items = { type = "string", format = "image" }, into = "image",
                 doc = "http(s) URLs, data:image URIs or imgedit.file(path), in order" }
local RESPONSE_FORMAT = { name = "response_format", type = "string", choices = { "url", "b64_json" }, default = "url",
                          doc = "temporary links (url) or the images themselves (b64_json)" }
local WATERMARK = { name = "watermark", type = "boolean", default = false }
local SEED = { name = "seed", type = "integer", min = 0, max = 2147483647 }

powertokens.models = {
  {
    name = "qwen-image-2.0-pro", operations = { "edit", "generate" },
    doc = "Qwen Image 2.0 Pro: edits of images by prompt, or images from a prompt",
    fields = {
      prompt(800),
      IMAGES,
      RESPONSE_FORMAT,
      { name = "n", type = "integer", min = 1, max = 6, doc = "how many images" },
      { name = "size", type = "string", format = "size", min_pixels = 512 * 512, max_pixels = 2048 * 2048,
        default = "512*512", doc = "W*H or WxH; sent as W*H" },
      WATERMARK,
      { name = "prompt_extend", type = "boolean", doc = "let the model rewrite the prompt" },
      { name = "negative_prompt", type = "string", max_length = 500, doc = "what to avoid" },
      SEED,
    },
  },
  {
    name = "wan2.7-image-pro", operations = { "edit", "generate" },
    doc = "Wan 2.7 Image Pro: edits fusing several images, or images from a prompt",
    fields = {
      prompt(),
      IMAGES,
      RESPONSE_FORMAT,
      { name = "n", type = "integer", min = 1, max = 4, operations = { "edit" }, doc = "how many images" },
      { name = "n", type = "integer", min = 1, max = 4, operations = { "generate" },
        when = { { field = "enable_sequential", equals = true, max = 12 } },
        doc = "how many images; up to 12 with enable_sequential" },
      { name = "size", type = "string", format = "size", presets = { "1K", "2K" }, default = "1K",
        operations = { "edit" }, doc = "1K or 2K, or W*H" },
      { name = "size", type = "string", format = "size", presets = { "1K", "2K", "4K" }, default = "1K",
        operations = { "generate" }, doc = "1K, 2K or 4K, or W*H" },
      WATERMARK,
      { name = "negative_prompt", type = "string", operations = { "edit" }, doc = "what to avoid" },
      { name = "seed", type = "integer", min = 0, max = 2147483647, default = 0 },
      { name = "bbox_list", type = "array", operations = { "edit" }, same_length_as = "images",
        items = { type = "array", items = { type = "array", items = { type = "integer" } } },
        doc = "boxes to edit within: one list of boxes per input image, in order" },
      { name = "thinking_mode", type = "boolean", operations = { "generate" } },
      { name = "enable_sequential", type = "boolean", operations = { "generate" }, doc = "a sequence of images" },
      { name = "color_palette", type = "array", operations = { "generate" }, items = { type = "object" },
        doc = "a custom colour theme: an array of objects" },
    },
  },
}

-- Requests and answers ------------------------------------------------------------------

--- The wire body of the messages form: the fields marked `into` become the
-- items of the user message (images first, then the text), the others stay
-- at the top level. Files are read here. `request.schema` knows which field
-- goes where.
local function wire_body(request)
  local body = request.body
  if not request.schema then return body end
  local text, images
  for _, f in ipairs(request.schema.fields) do
    if f.into == "text" then
      text, body[f.wire] = body[f.wire], nil
    elseif f.into == "image" then
      images, body[f.wire] = body[f.wire], nil
    end
  end
  local content = {}
  for _, item in ipairs(images or {}) do
    if file.is(item) then
      local uri, err = item:data_uri()
      if not uri then return nil, err end
      item = uri
    end
    content[#content + 1] = { image = item }
  end
  content[#content + 1] = { text = text }
  body.input = { messages = { { role = "user", content = content } } }
  return body
end

--- An image of `data[i]`: its URL or base64 (a blob, when the core decoded
-- it as it arrived), or the error the provider gave for that image alone.
local function read_image(i, entry, blobs, res)
  if type(entry) ~= "table" then
    return nil, errors.new("decode", ("data[%d] is not an object"):format(i),
      { status = res.status, request_id = res.request_id })
  end
  if entry.error ~= nil and entry.error ~= params.null then
    local e = type(entry.error) == "table" and entry.error or { message = entry.error }
    local code = (type(e.code) == "string" or type(e.code) == "number") and e.code or nil
    local message = type(e.message) == "string" and e.message or "the provider gave no reason"
    return { error = errors.new("api", ("image %d failed on the provider's side: %s"):format(i, message),
      { code = code, request_id = res.request_id,
        advice = "the other images of the answer are kept; ask again for this one (billed again)" }) }
  end
  if type(entry.url) ~= "string" and type(entry.b64_json) ~= "string" then
    return nil, errors.new("decode", ("data[%d] has neither url nor b64_json"):format(i),
      { status = res.status, request_id = res.request_id })
  end
  local b64 = type(entry.b64_json) == "string" and entry.b64_json ~= "" and entry.b64_json or nil
  -- an extracted value: its placeholder (core.BLOB_PREFIX .. n) names the blob that holds it
  local prefix = core.BLOB_PREFIX
  local blob = b64 and b64:sub(1, #prefix) == prefix and blobs[tonumber(b64:sub(#prefix + 1), 10)]
  return {
    url = type(entry.url) == "string" and entry.url ~= "" and entry.url or nil,
    b64_json = not blob and b64 or nil, blob = blob,
    revised_prompt = type(entry.revised_prompt) == "string" and entry.revised_prompt or nil,
  }
end

local check_timeout = params.seconds()

--- Validates `input` for `operation`; returns what params.request returns.
local function prepare(client, operation, input)
  local request, err = params.request(powertokens, operation, input, client.config.strict_models)
  if not request then return nil, err end
  if request.control.timeout ~= nil then
    local _, problem = check_timeout(request.control.timeout)
    if problem then
      return nil, errors.new("invalid_request", ("powertokens %s: timeout %s"):format(operation, problem))
    end
  end
  return request
end

local function run(client, operation, input)
  local request, err = prepare(client, operation, input)
  if not request then return nil, err end
  local control = request.control
  if not request.validated or request.note then
    log.unvalidated({ provider = powertokens.name, operation = operation, model = request.model,
                      note = request.note })
  end
  local body
  body, err = wire_body(request)
  if not body then return nil, err end
  local res
  res, err = transport.request(client.session, {
    method = "POST", url = client.config.base_url .. PATHS[operation], json = body,
    auth = true, billed = true, decode = true, model = request.model,
    -- base64 images are decoded by the core as they arrive (imgedit.result)
    extract = body.response_format == "b64_json" and "b64_json" or nil,
    deadline = control.timeout and (scheduler.now() + control.timeout) or nil,
  })
  if not res then return nil, err end
  local raw = res.json
  if type(raw) ~= "table" or type(raw.data) ~= "table" or #raw.data == 0 then
    return nil, errors.new("decode", "the response lists no images (no data array)",
      { status = res.status, request_id = res.request_id })
  end
  local blobs = res.blobs or {}
  local images = {}
  for i, entry in ipairs(raw.data) do
    images[i], err = read_image(i, entry, blobs, res)
    if not images[i] then return nil, err end
  end
  return result.new(client, {
    images = images, model = type(raw.model) == "string" and raw.model or request.model,
    created = params.is_finite(raw.created) and raw.created or nil,
    request_id = res.request_id, raw = raw,
  })
end

powertokens.implementation = {}

for _, operation in ipairs(powertokens.operations) do
  powertokens.implementation[operation] = function(client, input)
    return run(client, operation, input)
  end
end

--- Validates `input` for `operation` as the operation would, sending
-- nothing (files are read when sending): true, or nil and the error.
function powertokens.implementation.check(client, operation, input)
  local request, err = prepare(client, operation, input)
  if not request then return nil, err end
  return true
end

return powertokens
