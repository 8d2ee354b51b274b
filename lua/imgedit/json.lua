--- JSON: the one place imgedit encodes request bodies and decodes responses.
--
-- A private lua-cjson instance (`cjson.safe.new()`), configured here, so
-- that no setting of the host program's shared `cjson` or `cjson.safe`
-- (`encode_number_precision(2)`, a lower depth limit...) changes what
-- imgedit sends or how it reads an answer:
--
-- - numbers keep every digit cjson can give: 14 significant digits with
--   lua-cjson 2.1.0 (Debian's; integers up to 10^14 exactly, so seeds and
--   sizes), 16 where the build allows it (OpenResty's; integers up to 2^53);
-- - NaN and infinities are refused, not sent as `nan`/`inf`, and only JSON
--   numbers are read (no `NaN`, `Infinity` or hexadecimal in answers);
-- - nesting deeper than 256 levels is refused both ways (the answers of the
--   gateways are a few levels deep; a hostile one cannot exhaust the stack);
-- - `/` is written unescaped where the build can be told to (OpenResty's
--   lua-cjson); lua-cjson 2.1.0 always writes `\/`, which JSON readers
--   treat as `/`.
-- @module imgedit.json

local cjson_safe = require("cjson.safe")

local codec = cjson_safe.new()

local MAX_DEPTH = 256

-- the largest precision this build accepts
local precision = 14
for _, digits in ipairs({ 16, 15, 14 }) do
  if pcall(codec.encode_number_precision, digits) then
    precision = digits
    break
  end
end
codec.encode_invalid_numbers(false)
codec.decode_invalid_numbers(false)
codec.encode_max_depth(MAX_DEPTH)
codec.decode_max_depth(MAX_DEPTH)
-- arrays with holes are refused unless dense enough (lua-cjson's default rule), explicitly
codec.encode_sparse_array(false, 2, 10)
codec.encode_keep_buffer(true)
if codec.encode_escape_forward_slash then codec.encode_escape_forward_slash(false) end

local json = {}

--- The JSON `null` in decoded values.
json.null = cjson_safe.null

--- The largest integer this build writes with every digit (10^14 with
-- 14 significant digits, 2^53 with 16): a larger one would be sent changed.
json.max_integer = math.min(2 ^ 53, 10 ^ precision)

--- `value` as JSON text, or nil and a message.
json.encode = codec.encode

--- The value of JSON `text`, or nil and a message.
json.decode = codec.decode

return json
