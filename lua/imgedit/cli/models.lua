--- What the command knows of the providers and their models, read from the
-- provider registry (`imgedit.providers`) and the catalogs: the options of
-- each operation, their help, which models take each, and `imgedit models`.
-- No provider or model is named here.
-- @module imgedit.cli.models

local imgedit = require("imgedit")
local output = require("imgedit.cli.output")
local providers = require("imgedit.providers")

local models = {}

--- Older spellings of some options, kept as aliases.
local ALIASES = { negative_prompt = "--negative", response_format = "--format" }

--- Fields with options of their own: the prompt, the input images, the model.
local DEDICATED = { prompt = true, model = true }

local SCALAR = { string = true, integer = true, number = true, boolean = true }

--- The command-line flag of field `name`.
function models.flag(name)
  if name == "n" then return "-n" end
  return "--" .. name:gsub("_", "-")
end

--- Whether field `f` holds input images (the `--image` option).
local function is_images(f)
  return f.format == "image" or (f.type == "array" and f.items and f.items.format == "image")
end
models.is_images = is_images

local function belongs(f, op)
  if not f.operations then return true end
  for _, o in ipairs(f.operations) do
    if o == op then return true end
  end
  return false
end

--- The fields of catalog entry `entry` for `op`.
function models.fields(entry, op)
  local list = {}
  for _, f in ipairs(entry.fields) do
    if belongs(f, op) then list[#list + 1] = f end
  end
  return list
end

local function serves(entry, op)
  for _, o in ipairs(entry.operations) do
    if o == op then return true end
  end
  return false
end

--- The descriptors of every provider, in registry order.
function models.descriptors()
  local list = {}
  for i, name in ipairs(providers.names()) do list[i] = providers.get(name) end
  return list
end

--- Every operation of any provider, in registry order.
function models.operations()
  local list, seen = {}, {}
  for _, d in ipairs(models.descriptors()) do
    for _, op in ipairs(d.operations) do
      if not seen[op] then
        seen[op] = true
        list[#list + 1] = op
      end
    end
  end
  return list
end

--- The providers that offer `op` (names, in order).
function models.providers_for(op)
  local list = {}
  for _, d in ipairs(models.descriptors()) do
    for _, o in ipairs(d.operations) do
      if o == op then list[#list + 1] = d.name break end
    end
  end
  return list
end

local function join(list, last)
  if #list <= 1 then return list[1] or "" end
  return table.concat(list, ", ", 1, #list - 1) .. " " .. (last or "or") .. " " .. list[#list]
end
models.join = join

--- A short description of field `f`'s values: type, range, choices,
-- length, default.
function models.describe(f)
  local parts = {}
  if f.variants then
    local alternatives = {}
    for i, v in ipairs(f.variants) do alternatives[i] = models.describe(v) end
    parts[1] = table.concat(alternatives, ", or ")
  elseif f.choices then
    parts[1] = "one of " .. table.concat(f.choices, ", ")
  elseif f.format == "size" then
    local forms = {}
    for _, p in ipairs(f.presets or {}) do forms[#forms + 1] = p end
    forms[#forms + 1] = "W*H"
    parts[1] = table.concat(forms, ", ")
    if f.min_pixels or f.max_pixels then
      local function side(p) local s = math.floor(math.sqrt(p) + 0.5) return s .. "*" .. s end
      parts[1] = parts[1] .. (" (%s to %s pixels)"):format(side(f.min_pixels or 1), side(f.max_pixels or 1e18))
    end
  elseif f.format == "url" then
    parts[1] = "a public URL"
  elseif f.format == "image" then
    parts[1] = "an image URL"
  elseif f.type == "array" then
    local items = f.items or {}
    local item = (items.format == "image" and "image URLs") or (items.format == "url" and "public URLs")
      or ((items.type == "string" and not items.choices) and "strings")
      or (items.type and ("(" .. models.describe(items) .. ")")) or "values"
    parts[1] = "array of " .. item
    if f.min_items and f.max_items then
      parts[1] = parts[1] .. (", %d to %d"):format(f.min_items, f.max_items)
    elseif f.min_items then
      parts[1] = parts[1] .. (", at least %d"):format(f.min_items)
    end
  elseif f.type == "object" then
    if f.properties then
      local names = {}
      for name in pairs(f.properties) do names[#names + 1] = name end
      table.sort(names)
      parts[1] = "{" .. table.concat(names, ", ") .. "}"
    else
      parts[1] = "object"
    end
  elseif (f.type == "integer" or f.type == "number") and (f.min or f.max) then
    local kind = f.type
    if f.min and f.max then parts[1] = ("%s %s-%s"):format(kind, f.min, f.max)
    elseif f.min then parts[1] = ("%s >= %s"):format(kind, f.min)
    else parts[1] = ("%s <= %s"):format(kind, f.max) end
  elseif f.type == "boolean" then
    parts[1] = "true or false"
  else
    parts[1] = f.type
  end
  if f.max_length then parts[#parts + 1] = ("at most %d characters"):format(f.max_length) end
  for _, override in ipairs(f.when or {}) do
    local changed = {}
    for k, v in pairs(override) do
      if k ~= "field" and k ~= "equals" then changed[#changed + 1] = k .. " " .. tostring(v) end
    end
    table.sort(changed)
    parts[#parts + 1] = ("%s with %s = %s"):format(table.concat(changed, ", "), override.field,
      tostring(override.equals))
  end
  if f.nullable then parts[#parts + 1] = "or null" end
  if f.default ~= nil then parts[#parts + 1] = "default " .. tostring(f.default) end
  return table.concat(parts, "; ")
end

--- The options of `op` the catalogs give, in a stable order: one per
-- field name with a scalar type, as
-- `{name, flag, alias, type, takers = {{provider, model, field}, ...}}`.
function models.options(op)
  local list, by_name = {}, {}
  for _, d in ipairs(models.descriptors()) do
    for _, entry in ipairs(d.models) do
      if serves(entry, op) then
        for _, f in ipairs(models.fields(entry, op)) do
          local scalar = SCALAR[f.type] or (f.variants and SCALAR[f.variants[1].type])
          if scalar and not DEDICATED[f.name] and not is_images(f) then
            local option = by_name[f.name]
            if not option then
              option = { name = f.name, flag = models.flag(f.name), alias = ALIASES[f.name],
                         type = f.type or f.variants[1].type, takers = {} }
              by_name[f.name] = option
              list[#list + 1] = option
            end
            option.takers[#option.takers + 1] = { provider = d.name, model = entry.name, field = f }
          end
        end
      end
    end
  end
  return list
end

--- The help of `option`: what its field is, then what each model takes,
-- models with the same rule grouped.
function models.help(option)
  local doc
  local groups, order = {}, {}
  for _, taker in ipairs(option.takers) do
    doc = doc or taker.field.doc
    local rule = models.describe(taker.field)
    local key = taker.provider .. "\0" .. rule
    if not groups[key] then
      groups[key] = { provider = taker.provider, rule = rule, models = {} }
      order[#order + 1] = key
    end
    local names = groups[key].models
    names[#names + 1] = taker.model
  end
  local parts = {}
  for _, key in ipairs(order) do
    local g = groups[key]
    parts[#parts + 1] = ("%s %s: %s"):format(g.provider, table.concat(g.models, ", "), g.rule)
  end
  return (doc and (doc:sub(1, 1):upper() .. doc:sub(2) .. ". ") or "") .. table.concat(parts, ". ") .. "."
end

--- The flags of the options entry `entry` takes for `op`, for messages.
function models.flags_of(entry, op)
  local flags = {}
  for _, f in ipairs(models.fields(entry, op)) do
    if not DEDICATED[f.name] and not is_images(f) then
      flags[#flags + 1] = (SCALAR[f.type] or f.variants) and models.flag(f.name) or ("--set " .. f.name .. "=JSON")
    end
  end
  return flags
end

--- `imgedit models [-p PROVIDER] [--json]`: every catalog model with its
-- operations and fields. Returns the exit status.
function models.command(args)
  local names = args.provider and { args.provider } or providers.names()
  for _, name in ipairs(names) do
    local d = providers.get(name)
    local catalog = assert(imgedit.models(name))
    if args.json then
      for _, entry in ipairs(catalog) do output.array(entry.default_for) end
      output.json_line({ provider = name, title = d.title, asynchronous = d.asynchronous,
                         local_files = d.local_files, defaults = d.defaults, models = catalog })
    else
      io.stdout:write(("%s: %s\n"):format(name, d.title))
      for _, entry in ipairs(catalog) do
        local default = #entry.default_for > 0 and ("; default for " .. table.concat(entry.default_for, ", ")) or ""
        io.stdout:write(("\n  %s  (%s%s)\n    %s\n"):format(entry.name, table.concat(entry.operations, ", "),
          default, entry.doc or ""))
        for _, f in ipairs(entry.fields) do
          local notes = {}
          if f.required then notes[#notes + 1] = "required" end
          if f.wire and f.wire ~= f.name then notes[#notes + 1] = "wire " .. f.wire end
          if f.operations and #f.operations < #entry.operations then
            notes[#notes + 1] = table.concat(f.operations, ", ") .. " only"
          end
          io.stdout:write(("    %-18s %s%s\n"):format(f.name, models.describe(f),
            #notes > 0 and ("  [" .. table.concat(notes, "; ") .. "]") or ""))
        end
      end
      io.stdout:write("\n")
    end
  end
  io.stdout:flush()
  return 0
end

return models
