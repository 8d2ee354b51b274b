--- The provider registry: which providers imgedit speaks, and their
-- descriptors.
--
-- Each provider is one module, `imgedit.providers.<name>`, whose table is
-- its descriptor: the single source of truth for everything about it that
-- the rest of imgedit needs — name, environment variables, base URL,
-- default timeout, whether it is asynchronous, whether local files can be
-- sent, its operations and the default model of each, its model catalog
-- (plain data: see `imgedit.params` for the field properties), and the
-- functions that build its requests and read its answers. The client, the
-- command, the type definitions and the README read provider facts from
-- here and from nowhere else.
--
-- Adding a provider is adding its module (and its emulator,
-- `imgedit.mock.<name>`) and its name below.
-- @module imgedit.providers

local providers = {}

--- The providers, in the order they are listed to people.
local NAMES = { "foxapi", "powertokens" }

local known = {}
for _, name in ipairs(NAMES) do known[name] = true end

--- The names of the providers, in order (a new table).
function providers.names()
  local copy = {}
  for i, name in ipairs(NAMES) do copy[i] = name end
  return copy
end

--- The descriptor of provider `name`, or nil when there is no such provider.
function providers.get(name)
  if not known[name] then return nil end
  return require("imgedit.providers." .. name)
end

--- `"foxapi" or "powertokens"`: the names for messages.
function providers.listed()
  local quoted = {}
  for i, name in ipairs(NAMES) do quoted[i] = ("%q"):format(name) end
  if #quoted == 1 then return quoted[1] end
  return table.concat(quoted, ", ", 1, #quoted - 1) .. " or " .. quoted[#quoted]
end

--- The catalog entry of `model` in descriptor `d`, or nil.
function providers.model(d, model)
  for _, entry in ipairs(d.models) do
    if entry.name == model then return entry end
  end
  return nil
end

--- Whether catalog entry `entry` serves `operation`.
function providers.serves(entry, operation)
  for _, op in ipairs(entry.operations) do
    if op == operation then return true end
  end
  return false
end

--- The names of the catalog models of `d` that serve `operation`, in
-- catalog order.
function providers.models_for(d, operation)
  local names = {}
  for _, entry in ipairs(d.models) do
    if providers.serves(entry, operation) then names[#names + 1] = entry.name end
  end
  return names
end

local function copy(value)
  if type(value) ~= "table" then return value end
  local out = {}
  for k, v in pairs(value) do out[k] = copy(v) end
  return out
end

--- The catalog of `d` as plain data (a deep copy, safe to change): each
-- entry `{name, doc, operations, default_for, fields}`.
function providers.catalog(d)
  local out = {}
  for i, entry in ipairs(d.models) do
    local e = copy(entry)
    e.default_for = {}
    for _, op in ipairs(d.operations) do
      if d.defaults[op] == entry.name then e.default_for[#e.default_for + 1] = op end
    end
    out[i] = e
  end
  return out
end

return providers
