-- powertokens emulation: synchronous image edits and generations
-- (doc/providers.md, powertokens): the messages form of the Qwen and Wan
-- models, each with its own rules (kept here, apart from the client's
-- catalog: this is the specs' oracle), and the flat form of the other
-- families. Every validation failure is a 400
-- invalid_request_error whose message names the field; unknown fields
-- (a top-level `parameters` included) are refused, so the specs prove that
-- the client sends nothing unasked.
--
-- ctx (shared with init.lua): {config, files, cdn = base URL}.

local cjson = require("cjson")
local http = require("imgedit.mock.http")
local png = require("imgedit.mock.png")

local M = {}

local MAX_SEED = 2147483647

-- The rules of each model of the messages form, per endpoint (edits: with
-- images; generations: without): the top-level fields it takes, the most
-- characters of its prompt, the range of n, the sizes.
local QWEN = {
  fields = {response_format = true, n = true, size = true, watermark = true, prompt_extend = true,
            negative_prompt = true, seed = true},
  max_prompt = 800, max_negative = 500, max_n = 6, min_pixels = 512 * 512, max_pixels = 2048 * 2048,
}
local MESSAGE_MODELS = {
  ["qwen-image-2.0-pro"] = {edits = QWEN, generations = QWEN},
  ["wan2.7-image-pro"] = {
    edits = {fields = {response_format = true, n = true, size = true, watermark = true, negative_prompt = true,
                       seed = true, bbox_list = true},
             max_n = 4, presets = {["1K"] = true, ["2K"] = true}},
    generations = {fields = {response_format = true, n = true, size = true, watermark = true, seed = true,
                             thinking_mode = true, enable_sequential = true, color_palette = true},
                   max_n = 4, max_n_sequential = 12, presets = {["1K"] = true, ["2K"] = true, ["4K"] = true}},
  },
}

-- The flat form (OpenAI style: top-level prompt and image), used by other
-- model families: the fields each takes.
local FLAT_MODELS = {
  seedream = {prompt = true, image = true, size = true, seed = true, sequential_image_generation = true,
              response_format = true, watermark = true, n = true, extra = true},
  minimax = {prompt = true, subject_reference = true, aspect_ratio = true, width = true, height = true,
             n = true, prompt_optimizer = true, response_format = true, extra = true},
}
local FLAT_FAMILY = {
  ["seedream-5-0-260128"] = "seedream", ["seedream-4-5-251128"] = "seedream",
  ["seedream-4-0-250828"] = "seedream", ["image-01"] = "minimax", ["image-01-live"] = "minimax",
}

local function bad(message, code)
  return http.error(400, "invalid_request_error", message, code or "invalid_parameter")
end

local function valid_base64(s)
  return #s > 0 and #s % 4 == 0 and s:match("^[A-Za-z0-9+/]*=?=?$") ~= nil
end

-- An image item: an http(s) URL or a data:image/<type>;base64,<data> URI.
local function check_image(v)
  if http.is_http_url(v) then return nil end
  if type(v) ~= "string" then return "must be a string" end
  local data = v:match("^data:image/[%w.+-]+;base64,(.*)$")
  if not data then return "must be an http(s) URL or a data:image/...;base64, URI" end
  if not valid_base64(data) then return "holds invalid base64 data" end
end

-- Validates input.messages; returns the prompt, or nil and an error response.
local function check_input(input, edits, max_prompt)
  if type(input) ~= "table" or input[1] ~= nil then
    return nil, bad("input must be an object with a messages array")
  end
  local unknown = http.unknown_key(input, {messages = true})
  if unknown then return nil, bad("unknown field: input." .. unknown, "unknown_parameter") end
  local messages = input.messages
  if not http.is_array(messages) or #messages ~= 1 then
    return nil, bad("input.messages must be an array of exactly one message")
  end
  local message = messages[1]
  if type(message) ~= "table" or message[1] ~= nil then
    return nil, bad("input.messages[0] must be an object")
  end
  unknown = http.unknown_key(message, {role = true, content = true})
  if unknown then
    return nil, bad("unknown field: input.messages[0]." .. unknown, "unknown_parameter")
  end
  if message.role ~= "user" then return nil, bad('input.messages[0].role must be "user"') end
  local content = message.content
  if not http.is_array(content) or #content == 0 then
    return nil, bad("input.messages[0].content must be a non-empty array")
  end
  local prompt, images = nil, 0
  for i, item in ipairs(content) do
    local name = ("input.messages[0].content[%d]"):format(i - 1)
    if type(item) ~= "table" or item[1] ~= nil then return nil, bad(name .. " must be an object") end
    unknown = http.unknown_key(item, {image = true, text = true})
    if unknown then return nil, bad("unknown field: " .. name .. "." .. unknown, "unknown_parameter") end
    if item.image ~= nil and item.text ~= nil or item.image == nil and item.text == nil then
      return nil, bad(name .. ' must have exactly one of "image" or "text"')
    end
    if item.text ~= nil then
      if prompt then return nil, bad(name .. ".text: exactly one text item is allowed") end
      if type(item.text) ~= "string" or item.text == "" then
        return nil, bad(name .. ".text must be a non-empty string")
      end
      if max_prompt and http.utf8_length(item.text) > max_prompt then
        return nil, bad(("%s.text must be at most %d characters"):format(name, max_prompt))
      end
      prompt = item.text
    else
      if not edits then
        return nil, bad(name .. ".image: image items are not accepted by generations")
      end
      local problem = check_image(item.image)
      if problem then return nil, bad(name .. ".image " .. problem) end
      images = images + 1
    end
  end
  if not prompt then return nil, bad("input.messages[0].content needs one text item") end
  if edits and images == 0 then
    return nil, bad("input.messages[0].content needs at least one image item")
  end
  return prompt, images
end

local function check_size(size, rules)
  if rules.presets and rules.presets[size] then return nil end
  local w, h
  if type(size) == "string" then w, h = size:match("^(%d+)[*x](%d+)$") end
  if not w or #w > 9 or #h > 9 then return 'size must be "W*H" or "WxH"' end
  local pixels = tonumber(w) * tonumber(h)
  if (rules.min_pixels and pixels < rules.min_pixels) or (rules.max_pixels and pixels > rules.max_pixels) then
    return "size must have between 512*512 and 2048*2048 pixels"
  end
end

-- bbox_list: integer[][][], one list of boxes per input image.
local function check_bbox_list(v, images)
  if not http.is_array(v) or #v ~= images then
    return "bbox_list must be an array with one list of boxes per input image"
  end
  for _, boxes in ipairs(v) do
    if not http.is_array(boxes) then return "bbox_list must be an array of arrays of boxes" end
    for _, box in ipairs(boxes) do
      if not http.is_array(box) then return "bbox_list boxes must be arrays of integers" end
      for _, c in ipairs(box) do
        if not http.is_integer(c) then return "bbox_list boxes must be arrays of integers" end
      end
    end
  end
end

-- The flat form: the fields of the model's family, `prompt` required.
local function validate_flat(body, family)
  local unknown = http.unknown_key(body, setmetatable({model = true}, {__index = FLAT_MODELS[family]}))
  if unknown then return nil, bad("unknown field: " .. unknown, "unknown_parameter") end
  if type(body.prompt) ~= "string" or body.prompt == "" then
    return nil, bad("prompt must be a non-empty string", "missing_parameter")
  end
  local n = body.n
  if n ~= nil and (not http.is_integer(n) or n < 1 or n > (family == "minimax" and 9 or 15)) then
    return nil, bad("n is out of range")
  end
  if family == "seedream" and body.seed ~= nil and (not http.is_integer(body.seed) or body.seed < -1
      or body.seed > MAX_SEED) then
    return nil, bad("seed must be an integer between -1 and 2147483647")
  end
  return {prompt = body.prompt, n = n or 1, format = body.response_format or "url"}
end

-- Returns the request parameters (defaults filled), or nil and a response.
local function validate(body, edits)
  if body.model == nil then return nil, bad("missing required field: model", "missing_parameter") end
  local family = FLAT_FAMILY[body.model]
  if family then return validate_flat(body, family) end
  if body.parameters ~= nil then
    return nil, bad("parameters is not accepted: send n, size, seed, ... at the top level",
      "unknown_parameter")
  end
  local model = MESSAGE_MODELS[body.model]
  if not model then
    return nil, bad(("model %s is not supported"):format(tostring(body.model)), "model_not_found")
  end
  local rules = model[edits and "edits" or "generations"]
  local allowed = {model = true, input = true}
  for name in pairs(rules.fields) do allowed[name] = true end
  local unknown = http.unknown_key(body, allowed)
  if unknown then
    return nil, bad(("unknown field for %s: %s"):format(body.model, unknown), "unknown_parameter")
  end
  if body.input == nil then return nil, bad("missing required field: input", "missing_parameter") end
  local prompt, images = check_input(body.input, edits, rules.max_prompt)
  if not prompt then return nil, images end

  local format = body.response_format
  if format ~= nil and format ~= "url" and format ~= "b64_json" then
    return nil, bad('response_format must be "url" or "b64_json"')
  end
  local max_n = body.enable_sequential == true and rules.max_n_sequential or rules.max_n
  local n = body.n
  if n ~= nil and (not http.is_integer(n) or n < 1 or n > max_n) then
    return nil, bad(("n must be an integer between 1 and %d"):format(max_n))
  end
  if body.size ~= nil then
    local problem = check_size(body.size, rules)
    if problem then return nil, bad(problem) end
  end
  for _, name in ipairs({"watermark", "prompt_extend", "thinking_mode", "enable_sequential"}) do
    if body[name] ~= nil and type(body[name]) ~= "boolean" then
      return nil, bad(name .. " must be a boolean")
    end
  end
  local negative = body.negative_prompt
  if negative ~= nil and (type(negative) ~= "string"
      or (rules.max_negative and http.utf8_length(negative) > rules.max_negative)) then
    return nil, bad(("negative_prompt must be a string of at most %d characters"):format(rules.max_negative or 0))
  end
  local seed = body.seed
  if seed ~= nil and (not http.is_integer(seed) or seed < 0 or seed > MAX_SEED) then
    return nil, bad("seed must be an integer between 0 and 2147483647")
  end
  if body.bbox_list ~= nil then
    local problem = check_bbox_list(body.bbox_list, images)
    if problem then return nil, bad(problem) end
  end
  if body.color_palette ~= nil and not http.is_array(body.color_palette) then
    return nil, bad("color_palette must be an array of objects")
  end
  return {prompt = prompt, n = n or 1, format = format or "url"}
end

-- The JSON body with each b64_json placeholder replaced by the image's base64
-- pieces: a 40 MB answer is never copied into one Lua string.
local function splice(text, images)
  local body, pos = {}, 1
  for i, img in ipairs(images) do
    local mark = "@@b64:" .. i .. "@@"
    local s, e = text:find(mark, pos, true)
    body[#body + 1] = text:sub(pos, s - 1)
    for _, piece in ipairs(png.base64_pieces(img)) do body[#body + 1] = piece end
    pos = e + 1
  end
  body[#body + 1] = text:sub(pos)
  return body
end

local function generate(ctx, req, edits)
  local body, err = http.json_body(req)
  if not body then return err end
  local params
  params, err = validate(body, edits)
  if not params then return err end

  local data, images = {}, {}
  local failed = {}
  for _, i in ipairs(ctx.config.failed_images or {}) do failed[i] = true end
  for i = 1, params.n do
    local name = ("pt-%d-%d"):format(req.id, i)
    if failed[i] then
      -- an image that failed alone: the others are still delivered
      data[i] = {error = {code = "image_generation_failed", message = "the model could not make this image"}}
    elseif params.format == "url" then
      ctx.files[name] = {bytes = ctx.config.image_bytes}
      data[i] = {url = ctx.cdn .. "/files/" .. name .. ".png", revised_prompt = params.prompt}
    else
      images[#images + 1] = png.image(name, ctx.config.image_bytes)
      data[i] = {b64_json = "@@b64:" .. #images .. "@@", revised_prompt = params.prompt}
    end
  end
  local text = cjson.encode({created = os.time(), data = data, metadata = {}})
  return http.response(200, #images > 0 and splice(text, images) or text, "application/json")
end

--- Handles a request under /powertokens; `path` is the rest.
function M.handle(ctx, req, path)
  local edits = path == "/v1/images/edits"
  if not edits and path ~= "/v1/images/generations" then
    return http.error(404, "not_found", "no such endpoint: " .. req.path)
  end
  if req.method ~= "POST" then
    local resp = http.error(405, "invalid_request_error", "use POST for " .. path)
    http.set_header(resp, "Allow", "POST")
    return resp
  end
  return generate(ctx, req, edits)
end

return M
