-- powertokens emulation: synchronous Qwen / Wan image edits and generations
-- (PROVIDERS.md section 2). Every validation failure is a 400
-- invalid_request_error whose message names the field; unknown fields
-- (a top-level `parameters` included) are refused, so the specs prove that
-- the client sends nothing unasked.
--
-- ctx (shared with init.lua): {config, files, cdn = base URL}.

local cjson = require("cjson")
local http = require("imgedit.mock.http")
local png = require("imgedit.mock.png")

local M = {}

local MODELS = {["qwen-image-2.0-pro"] = true, ["wan2.7-image-pro"] = true}
local MAX_PROMPT, MAX_NEGATIVE = 800, 500
local MIN_PIXELS, MAX_PIXELS = 512 * 512, 2048 * 2048
local MAX_SEED = 2147483647

local TOP_LEVEL = {
  model = true, input = true, response_format = true, n = true, size = true,
  watermark = true, prompt_extend = true, negative_prompt = true, seed = true,
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
local function check_input(input, edits)
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
      if http.utf8_length(item.text) > MAX_PROMPT then
        return nil, bad(("%s.text must be at most %d characters"):format(name, MAX_PROMPT))
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
  return prompt
end

-- Returns the request parameters (defaults filled), or nil and a response.
local function validate(body, edits)
  if body.parameters ~= nil then
    return nil, bad("parameters is not accepted: send n, size, seed, ... at the top level",
      "unknown_parameter")
  end
  local unknown = http.unknown_key(body, TOP_LEVEL)
  if unknown then return nil, bad("unknown field: " .. unknown, "unknown_parameter") end
  if body.model == nil then return nil, bad("missing required field: model", "missing_parameter") end
  if not MODELS[body.model] then
    return nil, bad("model must be qwen-image-2.0-pro or wan2.7-image-pro", "model_not_found")
  end
  if body.input == nil then return nil, bad("missing required field: input", "missing_parameter") end
  local prompt, err = check_input(body.input, edits)
  if not prompt then return nil, err end

  local format = body.response_format
  if format ~= nil and format ~= "url" and format ~= "b64_json" then
    return nil, bad('response_format must be "url" or "b64_json"')
  end
  local n = body.n
  if n ~= nil and (not http.is_integer(n) or n < 1 or n > 6) then
    return nil, bad("n must be an integer between 1 and 6")
  end
  if body.size ~= nil then
    local w, h
    if type(body.size) == "string" then w, h = body.size:match("^(%d+)[*x](%d+)$") end
    if not w then return nil, bad('size must be "W*H" or "WxH"') end
    local pixels = tonumber(w) * tonumber(h)
    if pixels < MIN_PIXELS or pixels > MAX_PIXELS then
      return nil, bad("size must have between 512*512 and 2048*2048 pixels")
    end
  end
  for _, name in ipairs({"watermark", "prompt_extend"}) do
    if body[name] ~= nil and type(body[name]) ~= "boolean" then
      return nil, bad(name .. " must be a boolean")
    end
  end
  local negative = body.negative_prompt
  if negative ~= nil and (type(negative) ~= "string" or http.utf8_length(negative) > MAX_NEGATIVE) then
    return nil, bad(("negative_prompt must be a string of at most %d characters"):format(MAX_NEGATIVE))
  end
  local seed = body.seed
  if seed ~= nil and (not http.is_integer(seed) or seed < 0 or seed > MAX_SEED) then
    return nil, bad("seed must be an integer between 0 and 2147483647")
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
  for i = 1, params.n do
    local name = ("pt-%d-%d"):format(req.id, i)
    if params.format == "url" then
      ctx.files[name] = {bytes = ctx.config.image_bytes}
      data[i] = {url = ctx.cdn .. "/files/" .. name .. ".png", revised_prompt = params.prompt}
    else
      images[i] = png.image(name, ctx.config.image_bytes)
      data[i] = {b64_json = "@@b64:" .. i .. "@@", revised_prompt = params.prompt}
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
