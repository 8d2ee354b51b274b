-- The parts of the documentation that are derived from the provider
-- catalogs: the README's model tables and the model types of
-- lua/imgedit/meta.lua, each between its markers.
--
--   lua tools/catalog.lua          rewrite both files (`make catalog`)
--   lua tools/catalog.lua --check  exit 1 when either is not what the catalogs say
--
-- spec/14-models_spec.lua runs the check, so the documentation cannot drift
-- from the catalogs. As a module (`dofile`), it returns the functions.

local models = require("imgedit.cli.models")
local providers = require("imgedit.providers")

local catalog = {}

local function code(s) return "`" .. s .. "`" end

--- The README's section: one table per provider.
function catalog.readme()
  local out = {}
  for _, name in ipairs(providers.names()) do
    local d = providers.get(name)
    out[#out + 1] = ("**%s** (%s):"):format(name, d.title)
    out[#out + 1] = ""
    out[#out + 1] = "| model | operations | parameters (* required) |"
    out[#out + 1] = "|---|---|---|"
    for _, entry in ipairs(d.models) do
      local ops = {}
      for _, op in ipairs(entry.operations) do
        ops[#ops + 1] = d.defaults[op] == entry.name and (op .. " (default)") or op
      end
      local fields, seen = {}, {}
      for _, f in ipairs(entry.fields) do
        if not seen[f.name] then
          seen[f.name] = true
          local text = code(f.name) .. (f.required and "*" or "")
          local notes = {}
          if f.wire and f.wire ~= f.name then notes[#notes + 1] = code(f.wire) end
          if f.operations and #f.operations < #entry.operations then
            notes[#notes + 1] = table.concat(f.operations, ", ")
          end
          if #notes > 0 then text = text .. " (" .. table.concat(notes, "; ") .. ")" end
          fields[#fields + 1] = text
        end
      end
      out[#out + 1] = ("| %s | %s | %s |"):format(code(entry.name), table.concat(ops, ", "),
        table.concat(fields, ", "))
    end
    out[#out + 1] = ""
  end
  return table.concat(out, "\n")
end

local LUA_TYPES = { string = "string", integer = "integer", number = "number", boolean = "boolean",
                    object = "table" }

local function lua_type(f, local_files)
  if f.variants then
    local parts = {}
    for i, v in ipairs(f.variants) do parts[i] = lua_type(v, local_files) end
    return table.concat(parts, "|")
  end
  if f.choices then
    local parts = {}
    for i, c in ipairs(f.choices) do parts[i] = ("%q"):format(c) end
    return table.concat(parts, "|")
  end
  if f.format == "image" then return local_files and "string|imgedit.File" or "string" end
  if f.type == "array" then
    local item = lua_type(f.items or { type = "any" }, local_files)
    if item:find("|", 1, true) then item = "(" .. item .. ")" end
    return item .. "[]"
  end
  return LUA_TYPES[f.type] or "any"
end

local function class_name(provider, model, op)
  return ("imgedit.params.%s.%s.%s"):format(provider, (model:gsub("[^%w]", "_")), op)
end

--- The section of lua/imgedit/meta.lua: the model names, one class of
-- parameters per model and operation, and per operation the union of them.
function catalog.meta()
  local out = { "---@alias imgedit.ProviderName" }
  for _, name in ipairs(providers.names()) do
    out[#out + 1] = ('---| %q # %s'):format(name, providers.get(name).title)
  end
  out[#out + 1] = ""
  out[#out + 1] = "---@alias imgedit.Model"
  for _, name in ipairs(providers.names()) do
    for _, entry in ipairs(providers.get(name).models) do
      out[#out + 1] = ('---| %q # %s: %s'):format(entry.name, name, entry.doc or "")
    end
  end
  out[#out + 1] = ""
  local by_op, ops = {}, {}
  for _, name in ipairs(providers.names()) do
    local d = providers.get(name)
    for _, entry in ipairs(d.models) do
      for _, op in ipairs(entry.operations) do
        local class = class_name(name, entry.name, op)
        if not by_op[op] then
          by_op[op] = {}
          ops[#ops + 1] = op
        end
        by_op[op][#by_op[op] + 1] = class
        out[#out + 1] = ("---@class %s: imgedit.%s"):format(class,
          d.asynchronous and "TaskCallOptions" or "CallOptions")
        out[#out + 1] = ("---@field model %q%s"):format(entry.name, d.defaults[op] == entry.name and "?" or "")
        for _, f in ipairs(models.fields(entry, op)) do
          local doc = models.describe(f) .. (f.doc and (": " .. f.doc) or "")
          out[#out + 1] = ("---@field %s %s%s %s"):format(f.name, lua_type(f, d.local_files),
            f.required and "" or "?", doc)
          if f.wire and f.wire ~= f.name then
            out[#out + 1] = ("---@field %s %s? wire name of %s"):format(f.wire, lua_type(f, d.local_files),
              f.name)
          end
        end
        out[#out + 1] = ""
      end
    end
  end
  for _, op in ipairs(ops) do
    local alias = op:gsub("^%l", string.upper):gsub("_(%l)", string.upper)
    out[#out + 1] = ("---@alias imgedit.%sParams %s|imgedit.BodyParams"):format(alias,
      table.concat(by_op[op], "|"))
  end
  return table.concat(out, "\n")
end

local FILES = {
  { path = "README.md", build = catalog.readme,
    first = "<!-- models: generated by `make catalog` from the provider catalogs; do not edit -->",
    last = "<!-- end of models -->" },
  { path = "lua/imgedit/meta.lua", build = catalog.meta,
    first = "-- models: generated by `make catalog` from the provider catalogs; do not edit",
    last = "-- end of models" },
}

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

--- The file's text with its section rebuilt, or nil and a message.
function catalog.rebuilt(root, spec)
  local text = read(root .. "/" .. spec.path)
  local a = text:find(spec.first, 1, true)
  local b = text:find(spec.last, 1, true)
  if not a or not b or b < a then return nil, spec.path .. " has no section between its markers" end
  return text:sub(1, a + #spec.first) .. "\n" .. spec.build() .. "\n" .. text:sub(b), text
end

--- The files whose section differs from the catalogs (relative paths).
function catalog.stale(root)
  local list = {}
  for _, spec in ipairs(FILES) do
    local new, old = catalog.rebuilt(root, spec)
    if not new then error(old, 0) end
    if new ~= old then list[#list + 1] = spec.path end
  end
  return list
end

function catalog.write(root)
  for _, spec in ipairs(FILES) do
    local new = assert(catalog.rebuilt(root, spec))
    local f = assert(io.open(root .. "/" .. spec.path, "wb"))
    assert(f:write(new))
    assert(f:close())
  end
end

-- run as a script (not loaded by a spec)
if arg and arg[0] and arg[0]:match("tools/catalog%.lua$") then
  local root = (arg[0]:match("^(.*)/tools/[^/]*$")) or "."
  if arg[1] == "--check" then
    local stale = catalog.stale(root)
    if #stale > 0 then
      io.stderr:write("not what the catalogs say: ", table.concat(stale, ", "), "; run `make catalog`\n")
      os.exit(1)
    end
  else
    catalog.write(root)
  end
end

return catalog
