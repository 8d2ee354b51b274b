--- Parameter schemas: validation of user input before anything is sent.
--
-- A provider describes each operation as a list of fields; `params.build`
-- checks a user's table against it and returns the wire body. Every problem
-- becomes an `invalid_request` error naming the field and the fix, and no
-- request is made.
-- @module imgedit.params

local errors = require("imgedit.errors")

local params = {}

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

local function is_integer(v)
  return type(v) == "number" and v == math.floor(v) and v > -math.huge and v < math.huge
end
params.is_integer = is_integer

--- Length of a UTF-8 string in code points, or nil when it is not valid UTF-8.
-- Written out (not `utf8.len`) so that 5.1 and LuaJIT count the same way.
function params.utf8_length(s)
  -- plain ASCII, the common case, is counted by the C string library
  if not s:find("[\128-\255]") then return #s end
  local count, i, n = 0, 1, #s
  while i <= n do
    local c = s:byte(i)
    local extra
    if c < 0x80 then extra = 0
    elseif c >= 0xC2 and c <= 0xDF then extra = 1
    elseif c >= 0xE0 and c <= 0xEF then extra = 2
    elseif c >= 0xF0 and c <= 0xF4 then extra = 3
    else return nil end
    for k = i + 1, i + extra do
      local cc = s:byte(k)
      if not cc or cc < 0x80 or cc > 0xBF then return nil end
    end
    i = i + extra + 1
    count = count + 1
  end
  return count
end

-- Checks: each returns the value to send, or nil and what is wrong with it.

local checks = {}
params.checks = checks

function checks.text(opts)
  opts = opts or {}
  return function(v)
    if type(v) ~= "string" then return nil, "must be a string, got " .. type(v) end
    local len = params.utf8_length(v)
    if not len then return nil, "is not valid UTF-8 text" end
    if len == 0 and not opts.empty then return nil, "must not be empty" end
    if opts.max and len > opts.max then
      return nil, ("is %d characters long; the limit is %d"):format(len, opts.max)
    end
    return v
  end
end

function checks.one_of(choices)
  local set = {}
  for _, c in ipairs(choices) do set[c] = true end
  local listed = '"' .. table.concat(choices, '", "') .. '"'
  return function(v)
    if not set[v] then
      return nil, ("must be one of %s, got %s"):format(listed, params.show(v))
    end
    return v
  end
end

function checks.integer(min, max)
  return function(v)
    if not is_integer(v) then return nil, "must be an integer, got " .. params.show(v) end
    if (min and v < min) or (max and v > max) then
      if max then return nil, ("must be between %d and %d, got %d"):format(min, max, v) end
      return nil, ("must be at least %d, got %d"):format(min, v)
    end
    return math.floor(v)
  end
end

function checks.number(min, max)
  return function(v)
    if type(v) ~= "number" or v ~= v then return nil, "must be a number, got " .. params.show(v) end
    if v < min or v > max then
      return nil, ("must be between %s and %s, got %s"):format(min, max, v)
    end
    return v
  end
end

function checks.boolean(v)
  if type(v) ~= "boolean" then return nil, "must be true or false, got " .. params.show(v) end
  return v
end

--- A public http(s) URL.
function checks.url(v)
  if type(v) ~= "string" then return nil, "must be a URL string, got " .. type(v) end
  if not v:match("^[hH][tT][tT][pP][sS]?://[^/%s]+") or v:find("%s") then
    return nil, ("must be an http(s) URL, got %s"):format(params.show(v))
  end
  return v
end

--- A non-empty array whose every item passes `item`.
function checks.array(item, opts)
  opts = opts or {}
  return function(v)
    if type(v) ~= "table" then return nil, "must be an array, got " .. type(v) end
    local n = #v
    for k in pairs(v) do
      if not is_integer(k) or k < 1 or k > n then
        return nil, "must be an array (keys 1..n), found key " .. params.show(k)
      end
    end
    if n == 0 and not opts.empty then return nil, "must not be empty" end
    local out = {}
    for i = 1, n do
      local value, problem = item(v[i], i)
      if problem then return nil, ("[%d] %s"):format(i, problem) end
      out[i] = value
    end
    return out
  end
end

--- A short printable rendering of a value for error messages.
function params.show(v)
  if type(v) == "string" then
    if #v > 40 then v = v:sub(1, 37) .. "..." end
    return ("%q"):format(v)
  end
  return tostring(v)
end

--- Validates `input` against `schema` and returns the wire body.
--
-- schema = { operation = "foxapi edit", fields = { {name, wire = , aliases = ,
--   required = , default = , check = }, ... }, control = {name = true, ...} }
--
-- Returns body, control (the per-call options), or nil and an
-- `invalid_request` error.
--- What `build` needs to know of a schema, worked out once per schema: a
-- request's validation is on the path of every call.
local function index_of(schema)
  local index = schema.index
  if index then return index end
  index = { known = {}, names_of = {} }
  local listed = {}
  for _, field in ipairs(schema.fields) do
    local names = { field.name }
    if field.wire and field.wire ~= field.name then names[#names + 1] = field.wire end
    for _, alias in ipairs(field.aliases or {}) do names[#names + 1] = alias end
    for _, name in ipairs(names) do index.known[name] = field end
    index.names_of[field] = names
    listed[#listed + 1] = field.name
  end
  for name in pairs(schema.control or {}) do listed[#listed + 1] = name end
  table.sort(listed)
  index.listed = table.concat(listed, ", ")
  schema.index = index
  return index
end

function params.build(schema, input)
  local body, control = {}, {}
  local index = index_of(schema)
  local known, controls = index.known, schema.control or {}
  local function fail(message)
    return nil, errors.new("invalid_request", schema.operation .. ": " .. message)
  end

  for key, value in pairs(input) do
    if controls[key] then
      control[key] = value
    elseif not known[key] then
      if type(key) ~= "string" then
        return fail("parameter keys must be names, got " .. params.show(key))
      end
      return fail(("unknown parameter %q (known: %s)"):format(key, index.listed))
    end
  end

  for _, field in ipairs(schema.fields) do
    local given, given_as = nil, nil
    for _, name in ipairs(index.names_of[field]) do
      if input[name] ~= nil then
        if given ~= nil then
          return fail(("%s and %s are the same parameter; give only one"):format(given_as, name))
        end
        given, given_as = input[name], name
      end
    end
    if given == nil then
      if field.required then
        return fail(("%s is required%s"):format(field.name, field.hint and (" (" .. field.hint .. ")") or ""))
      end
      given = field.default
      given_as = field.name
    end
    if given ~= nil then
      local value, problem = field.check(given)
      if problem then return fail(given_as .. " " .. problem) end
      body[field.wire or field.name] = value
    end
  end
  return body, control
end

return params
