--- Output of the `imgedit` command: JSON lines, error reports, usage errors.
--
-- lua-cjson cannot tell an empty array from an empty object, and writes "/"
-- as "\/"; this small encoder writes arrays marked with `output.array` as
-- arrays, objects with sorted keys (stable, diffable output), and leaves
-- "/" alone.
-- @module imgedit.cli.output

local cjson = require("cjson")
local errors = require("imgedit.errors")

local output = {}

local ARRAY = {}

--- Marks `t` (default a new table) as a JSON array.
function output.array(t)
  return setmetatable(t or {}, ARRAY)
end

local function encode(value, buffer)
  local kind = type(value)
  if value == nil or value == cjson.null then
    buffer[#buffer + 1] = "null"
  elseif kind == "string" then
    -- what a server sent is never printed with a key in it
    buffer[#buffer + 1] = (cjson.encode(errors.scrub(value)):gsub("\\/", "/"))
  elseif kind == "number" then
    if value ~= value or value == math.huge or value == -math.huge then
      buffer[#buffer + 1] = "null"
    elseif value == math.floor(value) and math.abs(value) < 2 ^ 53 then
      buffer[#buffer + 1] = ("%d"):format(value)
    else
      buffer[#buffer + 1] = ("%.14g"):format(value)
    end
  elseif kind == "boolean" then
    buffer[#buffer + 1] = tostring(value)
  elseif kind == "table" then
    if getmetatable(value) == ARRAY or (#value > 0 and next(value, #value) == nil) then
      buffer[#buffer + 1] = "["
      for i = 1, #value do
        if i > 1 then buffer[#buffer + 1] = "," end
        encode(value[i], buffer)
      end
      buffer[#buffer + 1] = "]"
    else
      local keys = {}
      for k in pairs(value) do
        if type(k) == "string" then keys[#keys + 1] = k end
      end
      table.sort(keys)
      buffer[#buffer + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then buffer[#buffer + 1] = "," end
        encode(k, buffer)
        buffer[#buffer + 1] = ":"
        encode(value[k], buffer)
      end
      buffer[#buffer + 1] = "}"
    end
  else
    buffer[#buffer + 1] = "null"
  end
end

--- `value` as one line of JSON.
function output.encode(value)
  local buffer = {}
  encode(value, buffer)
  return table.concat(buffer)
end

--- Writes `value` as one JSON line on standard output (flushed).
function output.json_line(value)
  io.stdout:write(output.encode(value), "\n")
  io.stdout:flush()
end

--- The fields of an imgedit error (or any error value) for JSON output.
function output.error_fields(err)
  if type(err) ~= "table" then
    return { kind = "internal", message = tostring(err), text = "imgedit: " .. tostring(err) }
  end
  return {
    kind = err.kind, message = err.message, status = err.status, code = err.code, type = err.type,
    task_id = err.task_id, request_id = err.request_id, retryable = err.retryable,
    attempts = err.attempts, text = tostring(err),
  }
end

--- Usage errors: bad options, bad job lines, a missing key. Exit status 2.
local Usage = {}
Usage.__index = Usage
Usage.__tostring = function(self) return self.message end

--- A usage error; `message` says what is wrong and what to do; `help` names
-- the command whose --help to suggest.
function output.usage(message, help)
  return setmetatable({ message = message, help = help }, Usage)
end

function output.is_usage(value)
  return getmetatable(value) == Usage
end

--- One-line text of an error for people (imgedit errors already say what to do).
function output.error_text(err)
  if type(err) == "table" and err.kind then return tostring(err) end
  local text = tostring(err)
  if text:sub(1, 8) ~= "imgedit:" then text = "imgedit: " .. text end
  return text
end

return output
