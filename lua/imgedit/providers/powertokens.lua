--- powertokens: Qwen / Wan models, synchronous.
--
-- `POST /v1/images/edits` (and `/v1/images/generations` for text to image)
-- returns the images, as URLs or base64, in one response. Wire facts:
-- PROVIDERS.md §2.
-- @module imgedit.providers.powertokens

local errors = require("imgedit.errors")
local file = require("imgedit.file")
local params = require("imgedit.params")
local result = require("imgedit.result")
local scheduler = require("imgedit.scheduler")
local transport = require("imgedit.transport")

local checks = params.checks

local powertokens = {
  name = "powertokens",
  env = { api_key = "POWERTOKENS_API_KEY", base_url = "POWERTOKENS_BASE_URL" },
  base_url = "https://api.powertokens.ai",
  timeout = 300,
  operations = {},
}

local MIN_PIXELS, MAX_PIXELS = 512 * 512, 2048 * 2048

--- "W*H" or "WxH" within the pixel budget; always sent as "W*H".
local function size(v)
  if type(v) ~= "string" then return nil, "must be a string like \"1024*1024\", got " .. type(v) end
  local w, h = v:match("^(%d+)%s*[*xX]%s*(%d+)$")
  w, h = tonumber(w), tonumber(h)
  if not w then return nil, ("must look like \"1536*1024\" or \"1536x1024\", got %s"):format(params.show(v)) end
  local pixels = w * h
  if pixels < MIN_PIXELS or pixels > MAX_PIXELS then
    return nil, ("is %d pixels (%d*%d); it must be between 512*512 and 2048*2048 in total")
      :format(pixels, w, h)
  end
  return ("%d*%d"):format(w, h)
end

--- An image: http(s) URL, data:image/...;base64 URI, or imgedit.file(path).
-- Files are kept as they are here and read when the body is built.
local function image(v)
  if file.is(v) then return v end
  if type(v) == "string" and v:match("^data:") then
    local payload = v:match("^data:image/[%w.+-]+;base64,(.*)$")
    if not payload or payload == "" or not payload:match("^[%w+/]+=?=?$") then
      return nil, "is not a data:image/<type>;base64,<data> URI"
    end
    return v
  end
  local url, problem = checks.url(v)
  if not url then
    return nil, problem .. " (or a data:image URI, or imgedit.file(path))"
  end
  return url
end

local MODELS = checks.one_of({ "qwen-image-2.0-pro", "wan2.7-image-pro" })

local function fields(operation, with_images)
  local list = {
    { name = "model", default = "qwen-image-2.0-pro", check = MODELS },
    { name = "prompt", required = true, check = checks.text({ max = 800 }) },
    { name = "n", check = checks.integer(1, 6) },
    { name = "size", check = size },
    { name = "response_format", check = checks.one_of({ "url", "b64_json" }) },
    { name = "negative_prompt", check = checks.text({ max = 500 }) },
    { name = "seed", check = checks.integer(0, 2147483647) },
    { name = "watermark", check = checks.boolean },
    { name = "prompt_extend", check = checks.boolean },
  }
  if with_images then
    table.insert(list, 3, { name = "images", required = true, check = checks.array(image),
      hint = "an array of http(s) URLs, data: URIs or imgedit.file(path)" })
  end
  return { operation = operation, fields = list, control = { timeout = true } }
end

local EDIT = fields("powertokens edit", true)
local GENERATE = fields("powertokens generate", false)

--- Moves prompt and images into `input.messages[1].content`, reading files.
local function wire_body(body)
  local content = {}
  for _, item in ipairs(body.images or {}) do
    if file.is(item) then
      local uri, err = item:data_uri()
      if not uri then return nil, err end
      item = uri
    end
    content[#content + 1] = { image = item }
  end
  content[#content + 1] = { text = body.prompt }
  body.images, body.prompt = nil, nil
  body.input = { messages = { { role = "user", content = content } } }
  return body
end

local function run(client, schema, path, input)
  local body, control = params.build(schema, input)
  if not body then return nil, control end
  if control.timeout ~= nil and (type(control.timeout) ~= "number" or control.timeout <= 0) then
    return nil, errors.new("invalid_request", schema.operation .. ": timeout must be a positive number of seconds")
  end
  local model = body.model
  local err
  body, err = wire_body(body)
  if not body then return nil, err end
  local res
  res, err = transport.request(client, {
    method = "POST", url = client.config.base_url .. path, json = body,
    auth = true, billed = true, decode = true,
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
    if type(entry) ~= "table" or (type(entry.url) ~= "string" and type(entry.b64_json) ~= "string") then
      return nil, errors.new("decode", ("data[%d] has neither url nor b64_json"):format(i),
        { status = res.status, request_id = res.request_id })
    end
    local b64 = type(entry.b64_json) == "string" and entry.b64_json ~= "" and entry.b64_json or nil
    -- an extracted value: its placeholder names the blob that holds it
    local blob = b64 and blobs[tonumber(b64:match("^imgedit%-blob:(%d+)$"))]
    images[i] = {
      url = type(entry.url) == "string" and entry.url ~= "" and entry.url or nil,
      b64_json = not blob and b64 or nil, blob = blob,
      revised_prompt = type(entry.revised_prompt) == "string" and entry.revised_prompt or nil,
    }
  end
  return result.new(client, {
    images = images, model = model, created = type(raw.created) == "number" and raw.created or nil,
    request_id = res.request_id, raw = raw,
  })
end

function powertokens.operations.edit(client, input)
  return run(client, EDIT, "/v1/images/edits", input)
end

function powertokens.operations.generate(client, input)
  return run(client, GENERATE, "/v1/images/generations", input)
end

return powertokens
