--- Parameter validation: catalog fields compiled into checks, run on a
-- caller's table before anything is sent.
--
-- A provider's catalog (`imgedit.providers.<name>`) describes each model's
-- fields as plain data: name, wire name, type, range, length, choices,
-- default, the operations a field belongs to. `params.request` compiles one
-- model's fields for one operation into a schema once, the first time they
-- are asked for, then checks a caller's table against it and returns the
-- wire body (flat, under wire names: the provider shapes it further). Every
-- problem becomes an
-- `invalid_request` error naming the field and the fix, and no request is
-- made.
--
-- Field properties (all but `name` and `type` optional):
--
--   name         the friendly name callers use
--   wire         the name on the wire (also accepted from callers), default `name`
--   type         "string", "integer", "number", "boolean", "array" or "object"
--   required     the field must be given
--   operations   the operations the field belongs to (default: all the model's)
--   default      what the server assumes when the field is absent (documentation)
--   send_default the default is sent when the field is absent
--   min, max     numbers: the range, inclusive
--   max_length   strings: the most characters (code points)
--   plain        strings: no control characters (NUL, CR, LF...): for values
--                that end up in a URL, a header or a path
--   choices      strings: the values allowed
--   format       strings: "url" (public http(s)), "image" (an image the
--                provider can take: a URL, or a data: URI / imgedit.file where
--                it takes local files), "size" ("W*H", "WxH" or a preset)
--   presets, min_pixels, max_pixels    format "size"
--   items        arrays: the field-like description of each item
--   min_items, max_items               arrays
--   properties   objects: name -> field-like description (others refused)
--   variants     a list of field-like descriptions; a value valid for any is valid
--   nullable     JSON null (`imgedit.null`) is accepted and sent
--   when         { {field = name, equals = value, <property> = ...}, ... }:
--                properties that apply while another field has that value
--   same_length_as  arrays: as many items as that other array field
--   into         where the provider puts the value (e.g. the "text" or
--                "image" items of the user message)
--   doc          one line for people
-- @module imgedit.params

local core = require("imgedit.core")
local errors = require("imgedit.errors")
local file = require("imgedit.file")
local providers = require("imgedit.providers")

local params = {}

local json = require("imgedit.json")

--- JSON null.
local NULL = json.null
params.null = NULL

--- The largest integer a request can carry unchanged.
local MAX_SENT = json.max_integer

--- Raises the Lua error that `luaL_argerror` would: a wrong Lua type is a
-- programming mistake, not a run-time failure.
function params.argerror(position, fname, expected, value, hint)
  local message = ("bad argument #%d to '%s' (%s expected, got %s)")
    :format(position, fname, expected, type(value))
  if hint then message = message .. "; " .. hint end
  error(message, 3)
end

--- Checks that `self` is an object of the class whose metatable is `mt`.
function params.check_self(self, mt, fname, what)
  if getmetatable(self) ~= mt then
    params.argerror(1, fname, what, self, "call it as " .. fname:gsub("%.", ":") .. "{...}")
  end
end

--- Integers beyond 2^53 cannot all be told apart as numbers: refused.
local MAX_EXACT = 2 ^ 53

--- A whole, finite number whose value survives a double (|v| <= 2^53).
local function is_integer(v)
  return type(v) == "number" and v == math.floor(v) and v >= -MAX_EXACT and v <= MAX_EXACT
end
params.is_integer = is_integer

local HUGE = math.huge

--- A number that is neither NaN nor infinite.
local function is_finite(v)
  return type(v) == "number" and v == v and v > -HUGE and v < HUGE
end
params.is_finite = is_finite

--- A short printable rendering of a value for error messages: strings
-- quoted and cut, numbers readable (NaN, infinities, huge values), other
-- values by their type.
function params.show(v)
  local kind = type(v)
  if kind == "string" then
    if #v > 40 then v = v:sub(1, 37) .. "..." end
    return (("%q"):format(v):gsub("\\\n", "\\n"))
  elseif kind == "number" then
    if v ~= v then return "NaN" end
    if v == math.huge then return "infinity" end
    if v == -math.huge then return "-infinity" end
    if v == math.floor(v) and v >= -MAX_EXACT and v <= MAX_EXACT then return ("%d"):format(v) end
    -- the shortest form that reads back as the same number
    for digits = 14, 17 do
      local text = ("%." .. digits .. "g"):format(v)
      if tonumber(text) == v then return text end
    end
    return ("%.17g"):format(v)
  elseif kind == "boolean" or kind == "nil" then
    return tostring(v)
  elseif v == NULL then
    return "null"
  end
  return "a " .. kind
end
local show = params.show

--- What one pass over a string finds: its length in UTF-8 characters (nil
-- when it is not valid UTF-8: overlong forms, surrogates and code points
-- above U+10FFFF are not), whether it holds a control byte (0-31, 127),
-- whether it holds a space. In C, so that every interpreter and C locale
-- counts the same way, and cheaper than a character-class pattern.
local classify = core.classify

--- A public http(s) URL: the problem with `v`, or nil.
local function url_problem(v)
  if type(v) ~= "string" then return "must be a URL string, got " .. show(v) end
  if not v:match("^[hH][tT][tT][pP][sS]?://[^/%s]") or v:find("[%s%z]") then
    return ("must be an http(s) URL, got %s"):format(show(v))
  end
  return nil
end

-- Checks --------------------------------------------------------------------------
--
-- A check takes a value and returns the value to send, or nil and what is
-- wrong with it (the end of a sentence that starts with the field's name).

local compile_check -- forward: a field-like description to a check
local json_problem  -- forward: why a value cannot be sent as JSON

local function check_string(spec, ctx)
  local choices, listed
  if spec.choices then
    choices = {}
    for _, c in ipairs(spec.choices) do choices[c] = true end
    listed = '"' .. table.concat(spec.choices, '", "') .. '"'
  end
  local max_length, format = spec.max_length, spec.format
  local size
  if format == "size" then
    local presets = {}
    for _, p in ipairs(spec.presets or {}) do presets[p] = true end
    local example = spec.presets and ('be "' .. table.concat(spec.presets, '", "') .. '" or ') or ""
    size = function(v)
      if presets[v] then return v end
      local w, h = v:match("^(%d+)%s*[*xX]%s*(%d+)$")
      if not w or #w > 9 or #h > 9 then
        return nil, ('must %slook like "1536*1024" or "1536x1024" (W*H in pixels), got %s')
          :format(example, show(v))
      end
      -- floats: the product of two 9-digit numbers stays exact enough and never wraps
      local pixels = (tonumber(w) + 0.0) * tonumber(h)
      if (spec.min_pixels and pixels < spec.min_pixels) or (spec.max_pixels and pixels > spec.max_pixels) then
        local function square(p) local side = math.floor(math.sqrt(p) + 0.5) return side .. "*" .. side end
        return nil, ("is %s*%s = %s pixels; it must have between %s and %s pixels in total")
          :format(w, h, show(pixels), square(spec.min_pixels or 1), square(spec.max_pixels or MAX_EXACT))
      end
      return ("%d*%d"):format(tonumber(w), tonumber(h))
    end
  end
  local find, byte = string.find, string.byte
  local plain = spec.plain
  -- the common cases first, with tests cheaper than the general ones: an
  -- http(s) URL in lower case, a choice, text short enough
  local function general(v)
    if format == "image" then
      if file.is(v) then
        if not ctx.local_files then
          return nil, ("is a local file (%s): %s only takes public URLs; upload it and pass its URL%s")
            :format(v.path, ctx.provider, ctx.files_elsewhere or "")
        end
        return v
      end
      if type(v) == "string" and v:sub(1, 5) == "data:" then
        if not ctx.local_files then
          return nil, ("is a data: URI: %s only takes public http(s) URLs"):format(ctx.provider)
        end
        local payload = v:match("^data:image/[%w.+-]+;base64,(.*)$")
        if not payload or payload == "" or not payload:match("^[%w+/]+=?=?$") then
          return nil, "is not a data:image/<type>;base64,<data> URI"
        end
        return v
      end
    end
    if type(v) ~= "string" then return nil, "must be a string, got " .. show(v) end
    if format == "url" or format == "image" then
      local problem = url_problem(v)
      if problem then
        if format == "image" and ctx.local_files then
          problem = problem .. " (or a data:image URI, or imgedit.file(path))"
        end
        return nil, problem
      end
      return v
    end
    local len, control = classify(v)
    if not len then return nil, "is not valid UTF-8 text" end
    if len == 0 then return nil, "must not be empty" end
    if plain and control then
      return nil, "must not contain control characters (NUL, CR, LF, ...), got " .. show(v)
    end
    if size then return size(v) end
    if choices and not choices[v] then
      return nil, ("must be one of %s, got %s"):format(listed, show(v))
    end
    if max_length and len > max_length then
      return nil, ("is %d characters long; the limit is %d"):format(len, max_length)
    end
    return v
  end
  if format == "url" or format == "image" then
    return function(v)
      -- "https://" or "http://", a host, no control byte nor space: no pattern needed to say so
      if type(v) == "string" then
        local after = (find(v, "https://", 1, true) == 1 and 9) or (find(v, "http://", 1, true) == 1 and 8)
        local c = after and byte(v, after)
        if c and c ~= 47 then
          local _, control, space = classify(v)
          if not control and not space then return v end
        end
      end
      return general(v)
    end
  elseif choices and not size then
    -- every choice is valid, non-empty text: being one says it all
    return function(v)
      if choices[v] then return v end
      return general(v)
    end
  elseif not size then
    return function(v)
      if type(v) == "string" then
        local len, control = classify(v)
        if len and len > 0 and (not max_length or len <= max_length) and not (plain and control) then return v end
      end
      return general(v)
    end
  end
  return general
end

local function range_problem(v, min, max)
  if (min and v < min) or (max and v > max) then
    if min and max then return ("must be between %s and %s, got %s"):format(show(min), show(max), show(v)) end
    if min then return ("must be at least %s, got %s"):format(show(min), show(v)) end
    return ("must be at most %s, got %s"):format(show(max), show(v))
  end
  return nil
end

local tointeger = math.tointeger

local function check_integer(spec)
  local min, max = spec.min, spec.max
  -- the range a valid value lies in: a number there that is whole is one
  local low, high = math.max(min or -MAX_SENT, -MAX_SENT), math.min(max or MAX_SENT, MAX_SENT)
  return function(v)
    if type(v) == "number" and v >= low and v <= high and v % 1 == 0 then return tointeger and tointeger(v) or v end
    if not is_integer(v) or v > MAX_SENT or v < -MAX_SENT then
      if is_finite(v) and v == math.floor(v) then
        return nil, ("must be an integer of at most %s in size (the largest sent exactly), got %s")
          :format(show(MAX_SENT), show(v))
      end
      return nil, "must be an integer, got " .. show(v)
    end
    local problem = range_problem(v, min, max)
    if problem then return nil, problem end
    return tointeger and tointeger(v) or v
  end
end

local function check_number(spec)
  local min, max = spec.min, spec.max
  return function(v)
    if type(v) ~= "number" then return nil, "must be a number, got " .. show(v) end
    if not is_finite(v) then return nil, "must be a finite number, got " .. show(v) end
    local problem = range_problem(v, min, max)
    if problem then return nil, problem end
    return v
  end
end

local function check_boolean(v)
  if type(v) ~= "boolean" then return nil, "must be true or false, got " .. show(v) end
  return v
end

--- The length of `v` when it is a Lua array (keys exactly 1..n), else nil
-- and the offending key.
local function array_length(v)
  local n = #v
  for k in pairs(v) do
    if type(k) ~= "number" or not (k >= 1 and k <= n and k % 1 == 0) then return nil, k end
  end
  return n
end

local function check_array(spec, ctx)
  local item = compile_check(spec.items or {}, ctx)
  local min_items, max_items = spec.min_items, spec.max_items
  return function(v)
    if type(v) ~= "table" or (getmetatable(v) ~= nil and file.is(v)) then
      return nil, "must be an array, got " .. show(v)
    end
    local n, key = array_length(v)
    if not n then return nil, "must be an array (keys 1..n), found key " .. show(key) end
    if n == 0 and (min_items or 0) > 0 then return nil, "must not be empty" end
    if min_items and n < min_items then
      return nil, ("has %d item%s; it needs at least %d"):format(n, n == 1 and "" or "s", min_items)
    end
    if max_items and n > max_items then
      return nil, ("has %d items; the limit is %d"):format(n, max_items)
    end
    -- a copy is made only when a check changes an item (a size normalized...)
    local out = v
    for i = 1, n do
      local value, problem = item(v[i])
      if problem then return nil, ("[%d] %s"):format(i, problem) end
      if value ~= v[i] then
        if out == v then
          out = {}
          for k = 1, n do out[k] = v[k] end
        end
        out[i] = value
      end
    end
    return out
  end
end

local function check_object(spec, ctx)
  local properties = {}
  for name, property in pairs(spec.properties or {}) do properties[name] = compile_check(property, ctx) end
  local open = spec.properties == nil
  return function(v)
    if type(v) ~= "table" or file.is(v) then return nil, "must be an object (a table of names), got " .. show(v) end
    local out = {}
    for key, value in pairs(v) do
      if type(key) ~= "string" then return nil, "must be an object: its keys must be names, found " .. show(key) end
      if open then
        local problem = json_problem(value)
        if problem then return nil, ("%s %s"):format(key, problem) end
        out[key] = value
      else
        local check = properties[key]
        if not check then return nil, ("has an unknown field %q"):format(key) end
        local checked, problem = check(value)
        if problem then return nil, ("%s %s"):format(key, problem) end
        out[key] = checked
      end
    end
    return out
  end
end

local BY_TYPE = { string = check_string, integer = check_integer, number = check_number, array = check_array,
                  object = check_object, boolean = function() return check_boolean end }

local function describe_variants(variants)
  local parts = {}
  for _, variant in ipairs(variants) do
    if variant.choices then
      parts[#parts + 1] = 'one of "' .. table.concat(variant.choices, '", "') .. '"'
    elseif variant.properties then
      local names = {}
      for name in pairs(variant.properties) do names[#names + 1] = name end
      table.sort(names)
      parts[#parts + 1] = "an object {" .. table.concat(names, ", ") .. "}"
    else
      parts[#parts + 1] = "a " .. variant.type
    end
  end
  return table.concat(parts, ", or ")
end

function compile_check(spec, ctx)
  local check
  if spec.variants then
    local list = {}
    for i, variant in ipairs(spec.variants) do list[i] = compile_check(variant, ctx) end
    local described = describe_variants(spec.variants)
    check = function(v)
      local first
      for _, variant in ipairs(list) do
        local value, problem = variant(v)
        if not problem then return value end
        first = first or problem
      end
      return nil, ("must be %s (%s)"):format(described, first)
    end
  else
    local make = BY_TYPE[spec.type]
    if not make then error(("imgedit internal error: field %s has no known type"):format(tostring(spec.name)), 0) end
    check = make(spec, ctx)
  end
  if spec.nullable then
    local inner = check
    check = function(v)
      if v == NULL then return v end
      return inner(v)
    end
  end
  return check
end

--- A check for one value described as a field is (`{type = "number", min =
-- 0}`...): returns the value to use, or nil and what is wrong with it.
function params.check(spec)
  return compile_check(spec, {})
end

--- A check for a duration: a positive, finite number of seconds, within
-- [min, max] (default 0.001 to 1e9: no wait is endless by accident).
function params.seconds(min, max)
  min, max = min or 0.001, max or 1e9
  return function(v)
    if not is_finite(v) or v <= 0 then
      return nil, "must be a positive number of seconds, got " .. show(v)
    end
    if v < min or v > max then
      return nil, ("must be between %s and %s seconds, got %s"):format(show(min), show(max), show(v))
    end
    return v
  end
end

--- Why `value` cannot be sent as JSON (a function, a key that is not a
-- name, a cycle, NaN...), or nil. Tables are arrays (keys 1..n) or objects
-- (string keys); `imgedit.null` is null.
function json_problem(value, depth)
  depth = depth or 0
  local kind = type(value)
  if kind == "string" or kind == "boolean" or value == NULL then return nil end
  if kind == "number" then
    if not is_finite(value) then return "must be a finite number, got " .. show(value) end
    if value == math.floor(value) and (value > MAX_SENT or value < -MAX_SENT) then
      return ("is %s: integers beyond %s would not be sent exactly"):format(show(value), show(MAX_SENT))
    end
    return nil
  end
  if kind ~= "table" or file.is(value) then return "cannot be sent as JSON (" .. show(value) .. ")" end
  if depth >= 64 then return "is nested more than 64 levels deep (a cycle?)" end
  local n = array_length(value)
  for k, v in pairs(value) do
    if not n and type(k) ~= "string" then
      return ("has a key %s: a JSON object's keys are strings"):format(show(k))
    end
    local problem = json_problem(v, depth + 1)
    if problem then return ("%s %s"):format(n and ("[" .. show(k) .. "]") or k, problem) end
  end
  return nil
end

-- Schemas -----------------------------------------------------------------------------

local function in_list(list, value)
  for _, v in ipairs(list) do
    if v == value then return true end
  end
  return false
end

--- The fields of `entry` that belong to `operation`, in catalog order.
local function fields_for(entry, operation)
  local out = {}
  for _, field in ipairs(entry.fields) do
    if not field.operations or in_list(field.operations, operation) then out[#out + 1] = field end
  end
  return out
end

--- A copy of field-like `spec` with the properties of `override` (less its
-- `field` and `equals`).
local function overridden(spec, override)
  local copy = {}
  for k, v in pairs(spec) do copy[k] = v end
  for k, v in pairs(override) do
    if k ~= "field" and k ~= "equals" then copy[k] = v end
  end
  copy.when = nil
  return copy
end

--- The per-call options of a request that gives none (its callers only read it).
local NO_OPTIONS = {}

local function invalid(schema, message)
  return nil, errors.new("invalid_request", schema.label .. ": " .. message)
end

--- Splits `input` into the per-call options and the rest; refuses `body`
-- (handled before a schema is chosen) and keys that are not names.
local function split_control(schema, input)
  local control, rest = {}, {}
  for key, value in pairs(input) do
    if type(key) ~= "string" then
      return invalid(schema, "parameter keys must be names, got " .. show(key))
    end
    if schema.control[key] then control[key] = value else rest[key] = value end
  end
  return rest, control
end

--- Merges `extra` (the caller's fields beyond the catalog) into `body`:
-- a name the schema knows is ambiguous, and values must be JSON.
local function merge_extra(schema, body, extra)
  if extra == nil then return true end
  if type(extra) ~= "table" or file.is(extra) then
    return invalid(schema, "extra must be a table {name = value} of fields to send as given, got " .. show(extra))
  end
  for key, value in pairs(extra) do
    if type(key) ~= "string" then return invalid(schema, "extra: keys must be field names, got " .. show(key)) end
    local field = schema.known[key]
    if field then
      return invalid(schema, ("extra.%s is ambiguous: %s is a parameter of %s; pass it as %s = ... (checked),"
        .. " not through extra"):format(key, key, schema.model, field.name))
    end
    if schema.reserved[key] then
      return invalid(schema, ("extra.%s cannot be set: imgedit builds %s itself"):format(key, key))
    end
    local problem = json_problem(value)
    if problem then return invalid(schema, ("extra.%s %s"):format(key, problem)) end
    body[key] = value
  end
  return true
end

--- The builder of a schema: Lua source written for its fields, compiled
-- once. It checks that every key of the input is known, gathers each
-- field under any of its names, checks it, and builds the wire body with
-- one table constructor; a problem goes to one of the `U.*` functions,
-- which make the error. (A schema is checked on every request: an
-- interpreted walk over the field list cost most of a submission's time.)
local function generate(schema)
  local U = { checks = {}, when = {}, defaults = {}, model = schema.model, known = {}, NO_OPTIONS = NO_OPTIONS }
  for name in pairs(schema.known) do U.known[name] = true end
  for name in pairs(schema.control) do U.known[name] = true end
  U.known.model, U.known.extra = true, true
  local index = {}
  for i, f in ipairs(schema.fields) do index[f.name] = i end

  function U.unknown(key)
    if type(key) ~= "string" then return invalid(schema, "parameter keys must be names, got " .. show(key)) end
    return invalid(schema, ("unknown parameter %q (known: %s); a field imgedit does not know yet can be sent"
      .. " with extra = {%s = ...}"):format(key, schema.listed, key))
  end
  function U.dup(a, b)
    return invalid(schema, ("%s and %s are the same parameter; give only one"):format(a, b))
  end
  function U.required(name) return invalid(schema, name .. " is required") end
  function U.failed(i, problem, input)
    local names = schema.fields[i].names
    local as = (names[2] and input[names[2]] ~= nil) and names[2] or names[1]
    return invalid(schema, as .. " " .. problem)
  end
  function U.length(i, got, want)
    local f = schema.fields[i]
    return invalid(schema, ("%s has %d item%s; it needs one per %s item (%d)"):format(f.name, got,
      got == 1 and "" or "s", f.same_length_as, want))
  end
  function U.merge_extra(body, extra) return merge_extra(schema, body, extra) end

  local src = { "local U = ...",
    "local known, unknown, dup, required, failed, length, merge_extra, model ="
      .. " U.known, U.unknown, U.dup, U.required, U.failed, U.length, U.merge_extra, U.model",
    "local next, type, NO_OPTIONS = next, type, U.NO_OPTIONS" }
  local function emit(fmt, ...) src[#src + 1] = fmt:format(...) end
  -- A default that the field's check accepts as it is need not be checked
  -- on every request (only a field without `when` has one check).
  local prechecked = {}
  for i, f in ipairs(schema.fields) do
    local default = f.default
    if default ~= nil and not f.when and not f.same_length_as then
      local checked, problem = f.check(default)
      if not problem and checked == default then prechecked[i] = true end
    end
  end
  for i, f in ipairs(schema.fields) do
    U.checks[i] = f.check
    U.defaults[i] = f.default
    emit("local check%d, default%d = U.checks[%d], U.defaults[%d]", i, i, i, i)
    for j in ipairs(f.when or {}) do
      U.when[#U.when + 1] = f.when[j]
      emit("local when%d_%d = U.when[%d]", i, j, #U.when)
    end
  end
  emit("return function(input)")
  emit("  for k in next, input do if not known[k] then return unknown(k) end end")
  for i, f in ipairs(schema.fields) do
    emit("  local v%d = input[%q]", i, f.names[1])
    if f.names[2] then
      emit("  local w%d = input[%q]", i, f.names[2])
      emit("  if w%d ~= nil then if v%d ~= nil then return dup(%q, %q) end v%d = w%d end", i, i, f.names[1],
        f.names[2], i, i)
    end
    if f.required then
      emit("  if v%d == nil then return required(%q) end", i, f.name)
    elseif prechecked[i] then
      emit("  local given%d = v%d ~= nil", i, i)
      emit("  if not given%d then v%d = default%d end", i, i, i)
    elseif f.default ~= nil then
      emit("  if v%d == nil then v%d = default%d end", i, i, i)
    end
  end
  for i, f in ipairs(schema.fields) do
    emit(prechecked[i] and "  if given%d then" or "  if v%d ~= nil then", i)
    emit("    local check, problem = check%d, nil", i)
    for j, override in ipairs(f.when or {}) do
      local other = index[override.field]
      if other then emit("    if v%d == when%d_%d.equals then check = when%d_%d.check end", other, i, j, i, j) end
    end
    emit("    v%d, problem = check(v%d)", i, i)
    emit("    if problem then return failed(%d, problem, input) end", i)
    if f.same_length_as then
      local other = index[f.same_length_as]
      local want = other and ("(type(v%d) == 'table' and #v%d or 0)"):format(other, other) or "0"
      emit("    if #v%d ~= %s then return length(%d, #v%d, %s) end", i, want, i, i, want)
    end
    emit("  end")
  end
  local items = { "model = model" }
  for i, f in ipairs(schema.fields) do items[#items + 1] = ("[%q] = v%d"):format(f.wire, i) end
  emit("  local body = { %s }", table.concat(items, ", "))
  emit("  local extra = input.extra")
  emit("  if extra ~= nil then")
  emit("    local ok, problem = merge_extra(body, extra)")
  emit("    if not ok then return nil, problem end")
  emit("  end")
  -- the per-call options: none given (the common case) is one shared empty table
  local names, none, control = {}, {}, {}
  for name in pairs(schema.control) do names[#names + 1] = name end
  table.sort(names)
  for i, name in ipairs(names) do
    none[i] = ("c%d == nil"):format(i)
    control[i] = ("[%q] = c%d"):format(name, i)
    emit("  local c%d = input[%q]", i, name)
  end
  if #names > 0 then emit("  if %s then return body, NO_OPTIONS end", table.concat(none, " and ")) end
  emit("  return body, { %s }", table.concat(control, ", "))
  emit("end")
  local chunk = assert((loadstring or load)(table.concat(src, "\n"), "=params " .. schema.label))
  return chunk(U)
end

--- Compiles the fields of catalog `entry` for `operation` into a schema.
-- ctx: `label` (e.g. "<provider> edit"), `provider` (its name), `local_files`,
-- `files_elsewhere` (advice when local files are refused), `control` (the
-- per-call options allowed beside the parameters: {name = true}), `reserved`
-- (wire names that `extra` may not set).
local function compile(entry, operation, ctx)
  local schema = {
    label = ("%s (%s)"):format(ctx.label, entry.name), base_label = ctx.label,
    model = entry.name, operation = operation,
    fields = {}, known = {}, control = ctx.control or {}, reserved = {},
  }
  local listed = { "model", "extra" }
  for _, field in ipairs(fields_for(entry, operation)) do
    local compiled = {
      name = field.name, wire = field.wire or field.name, required = field.required,
      default = field.send_default and field.default or nil,
      check = compile_check(field, ctx), same_length_as = field.same_length_as, into = field.into,
      names = { field.name }, spec = field,
    }
    if compiled.wire ~= field.name then compiled.names[2] = compiled.wire end
    if field.when then
      compiled.when = {}
      for i, override in ipairs(field.when) do
        compiled.when[i] = { field = override.field, equals = override.equals,
                             check = compile_check(overridden(field, override), ctx) }
      end
    end
    schema.fields[#schema.fields + 1] = compiled
    for _, name in ipairs(compiled.names) do schema.known[name] = compiled end
    listed[#listed + 1] = field.name
  end
  for name in pairs(schema.control) do listed[#listed + 1] = name end
  table.sort(listed)
  schema.listed = table.concat(listed, ", ")
  for _, name in ipairs(ctx.reserved or {}) do schema.reserved[name] = true end
  schema.reserved.model = true
  schema.build = generate(schema)
  return schema
end

--- The problem with `v` as a value of Lua type `spec.type` (items of
-- arrays included), or nil: all a model outside the catalog is checked for.
local function lua_type_problem(spec, v)
  if file.is(v) then
    if spec.format == "image" then return nil end
    return "must be a " .. spec.type .. ", got a local file"
  end
  local kind = spec.type
  if kind == "integer" then
    if not is_integer(v) then return "must be an integer, got " .. show(v) end
  elseif kind == "number" then
    if not is_finite(v) then return "must be a finite number, got " .. show(v) end
  elseif kind == "array" then
    if type(v) ~= "table" then return "must be an array, got " .. show(v) end
    local n, key = array_length(v)
    if not n then return "must be an array (keys 1..n), found key " .. show(key) end
    for i = 1, n do
      local problem = lua_type_problem(spec.items or { type = "any" }, v[i])
      if problem then return ("[%d] %s"):format(i, problem) end
    end
    return nil
  elseif kind == "object" then
    if type(v) ~= "table" then return "must be an object, got " .. show(v) end
  elseif kind ~= "any" and type(v) ~= kind then
    return ("must be a %s, got %s"):format(kind == "boolean" and "boolean (true or false)" or kind, show(v))
  end
  return json_problem(v)
end

--- For a model that is not in the catalog: `input` sent as given, friendly
-- names mapped to wire names as `schema` (the operation's default model)
-- maps them, each value's Lua type checked but no range, length or choice.
local function build_unvalidated(schema, input, model)
  local label = ("%s (%s, not in the catalog)"):format(schema.base_label, model)
  local unvalidated = { label = label, control = schema.control, known = {}, reserved = schema.reserved,
                        model = model }
  local rest, control = split_control(unvalidated, input)
  if not rest then return nil, control end
  local body = { model = model }
  for key, value in pairs(rest) do
    if key ~= "model" and key ~= "extra" then
      local f = schema.known[key]
      local wire = f and f.wire or key
      if body[wire] ~= nil then
        return invalid(unvalidated, ("%s and %s are the same parameter; give only one")
          :format(key, f and f.name or key))
      end
      local problem
      if f then problem = lua_type_problem(f.spec, value) else problem = json_problem(value) end
      if problem then return invalid(unvalidated, key .. " " .. problem) end
      body[wire] = value
    end
  end
  local merged, problem = merge_extra(unvalidated, body, rest.extra)
  if not merged then return nil, problem end
  return body, control
end

-- Requests -------------------------------------------------------------------------

--- Schemas compiled so far: catalog entry -> operation -> schema.
local compiled = setmetatable({}, { __mode = "k" })

--- Advice for a local file given to a provider that takes none: the
-- providers that do.
local function files_elsewhere()
  local names = {}
  for _, name in ipairs(providers.names()) do
    if providers.get(name).local_files then names[#names + 1] = name end
  end
  if #names == 0 then return "" end
  return (", or use a provider that takes local files (%s)"):format(table.concat(names, ", "))
end

local function schema_for(d, entry, operation)
  local by_op = compiled[entry]
  if not by_op then
    by_op = {}
    compiled[entry] = by_op
  end
  local schema = by_op[operation]
  if not schema then
    schema = compile(entry, operation, {
      label = d.name .. " " .. operation, provider = d.name, local_files = d.local_files,
      files_elsewhere = not d.local_files and files_elsewhere() or nil, control = d.control,
      reserved = d.reserved,
    })
    by_op[operation] = schema
  end
  return schema
end

local function quoted_list(names)
  return '"' .. table.concat(names, '", "') .. '"'
end

--- Per catalog: entries by name; per entry: the operations it serves and
-- each one's required names (worked out once: this is on every request).
local entries = setmetatable({}, { __mode = "k" })
local served = setmetatable({}, { __mode = "k" })

local function find_entry(d, model)
  local by_name = entries[d.models]
  if not by_name then
    by_name = {}
    for _, e in ipairs(d.models) do by_name[e.name] = e end
    entries[d.models] = by_name
  end
  return by_name[model]
end

--- {operation = {required names...}} of `entry`.
local function served_by(entry)
  local ops = served[entry]
  if not ops then
    ops = {}
    for _, o in ipairs(entry.operations) do
      local required = {}
      for _, f in ipairs(fields_for(entry, o)) do
        if f.required then required[#required + 1] = { f.name, f.wire or f.name } end
      end
      ops[o] = required
    end
    served[entry] = ops
  end
  return ops
end

--- The operation of `entry` that `input` is for: `operation` itself, or,
-- when `operations` lists several (an asynchronous provider's submit), the
-- first the entry serves whose required fields `input` gives (else the
-- first it serves).
local candidates = setmetatable({}, { __mode = "k" }) -- entry -> operations list -> the ones it serves

local function pick_operation(entry, operation, operations, input)
  local ops = served_by(entry)
  if not operations then return ops[operation] and operation or nil, true end
  local by_list = candidates[entry]
  if not by_list then
    by_list = setmetatable({}, { __mode = "k" })
    candidates[entry] = by_list
  end
  local list = by_list[operations]
  if not list then
    list = {}
    for _, o in ipairs(operations) do
      if ops[o] then list[#list + 1] = o end
    end
    by_list[operations] = list
  end
  -- one candidate: it is the first whatever input gives (most models)
  if #list <= 1 then return list[1], true end
  for _, o in ipairs(list) do
    local complete = true
    for _, names in ipairs(ops[o]) do
      if input[names[1]] == nil and input[names[2]] == nil then complete = false end
    end
    if complete then return o end
  end
  return list[1]
end

--- Per descriptor, per operation (or list of operations asked for), per
-- model name: the schema, where the model alone decides it.
local routes = setmetatable({}, { __mode = "k" })

--- Validates the parameters of one operation of provider `d` (its
-- descriptor) and returns what to send:
--
--     { body = wire body (flat; the provider shapes it), control = per-call
--       options, model = name, operation = the catalog operation it was
--       checked as, schema =, validated = true | false, note = what was
--       sent unchecked }
--
-- or nil and an `invalid_request` error. `input.body` is the exact body
-- (only the per-call options may stand beside it); `input.model` picks a
-- model, the catalog's when it is there, else (unless `strict`) one sent
-- with the parameters as given; `input.extra` is merged after validation.
-- `operations` (optional) lists the operations `input` may be for
-- (`submit`: any that waits), see `pick_operation`.
function params.request(d, operation, input, strict, operations)
  if input.body ~= nil then
    local label = d.name .. " " .. operation
    local body = input.body
    if type(body) ~= "table" or file.is(body) or (array_length(body) or 0) > 0 then
      return nil, errors.new("invalid_request", label .. ": body must be a table: the exact JSON object to send")
    end
    local control = {}
    for key, value in pairs(input) do
      if key ~= "body" then
        if not d.control[key] then
          return nil, errors.new("invalid_request", ("%s: body is the exact request, so %s cannot stand beside it"
            .. " (only %s may)"):format(label, show(key), table.concat(d.control_names, ", ")))
        end
        control[key] = value
      end
    end
    local problem = json_problem(body)
    if problem then return nil, errors.new("invalid_request", label .. ": body " .. problem) end
    return { body = body, control = control, model = type(body.model) == "string" and body.model or nil,
             operation = operation, validated = false, note = "the body was given as is" }
  end

  local model = input.model
  if model == nil then model = d.defaults[operation] end
  if type(model) ~= "string" or model == "" then
    return nil, errors.new("invalid_request", ("%s %s: model must be a model name (a string), got %s")
      :format(d.name, operation, show(model)))
  end
  -- the schema a model of the catalog is checked with, when the input has
  -- no say in it: looked up once, then remembered
  local per_key = routes[d]
  if not per_key then
    per_key = setmetatable({}, { __mode = "k" })
    routes[d] = per_key
  end
  local key = operations or operation
  local remembered = per_key[key]
  if not remembered then
    remembered = {}
    per_key[key] = remembered
  end
  local schema = remembered[model]
  local entry = not schema and find_entry(d, model)
  if entry then
    local op, fixed = pick_operation(entry, operation, operations, input)
    if not op then
      return nil, errors.new("invalid_request", ("%s %s: %s does not do %s; it does %s"):format(d.name, operation,
        model, operation, table.concat(entry.operations, ", ")))
    end
    schema = schema_for(d, entry, op)
    if fixed then remembered[model] = schema end
  end
  if schema then
    local op = schema.operation
    local body, control = schema.build(input)
    if not body then return nil, control end
    return { body = body, control = control, model = model, operation = op, schema = schema,
             validated = true, note = input.extra ~= nil and "its extra fields were sent as given" or nil }
  end

  local known = {}
  for _, e in ipairs(d.models) do
    if pick_operation(e, operation, operations, {}) then known[#known + 1] = e.name end
  end
  if strict then
    return nil, errors.new("invalid_request", ("%s: unknown model %s (known: %s); the client has strict_models"
      .. " = true, which refuses models outside the catalog"):format(d.name .. " " .. operation, show(model),
      quoted_list(known)))
  end
  -- friendly names are mapped as the operation's default model maps them
  local default = find_entry(d, d.defaults[operation])
  local op = pick_operation(default, operation, operations, input)
  schema = schema_for(d, default, op)
  local body, control = build_unvalidated(schema, input, model)
  if not body then return nil, control end
  return { body = body, control = control, model = model, operation = op, schema = schema, validated = false,
           note = ("model %s is not in the catalog (known: %s)"):format(show(model), quoted_list(known)) }
end

return params
