--- The checks of `imgedit doctor` and of Neovim's `:checkhealth imgedit`,
-- as plain data.
--
--     local report = require("imgedit.doctor").run({ping = true})
--     report.ok, report.problems, report.warnings
--     report.sections[i] = {id, title, items = {
--       {id, label, status = "ok" | "info" | "warn" | "error", value, fix}, ...}}
--
-- What runs imgedit (the interpreter, the runtime, where its Lua modules and
-- `imgedit.core` were found and their versions, lua-cjson), what libcurl is
-- and can do (version, TLS backend, HTTP/2, asynchronous DNS, the CA bundle),
-- and for each provider of the registry whether a key is set (never the key
-- itself), the base URL that will be used (or the refusal `imgedit.client`
-- gives for it), and with `ping` whether the provider accepts the key — one
-- authenticated request the provider does not bill (`descriptor.ping`), and
-- none for a provider that documents no such request. An "error" item has a
-- `fix`; a report with one is not ok.
-- @module imgedit.doctor

local cjson = require("cjson")
local client = require("imgedit.client")
local core = require("imgedit.core")
local imgedit = require("imgedit")
local providers = require("imgedit.providers")

local doctor = {}

--- package.searchpath, which Lua 5.1 lacks: where `require(name)` finds
-- `name` on `path` (the first match).
local function search(name, path)
  for template in path:gmatch("[^;]+") do
    local candidate = template:gsub("%?", (name:gsub("%.", "/")))
    local f = io.open(candidate, "rb")
    if f then
      f:close()
      return candidate
    end
  end
  return nil
end

--- What libcurl is and can do, in the shape of `core.curl_info()`:
-- `{version, tls = {backend, version}, zlib, nghttp2, resolver, features =
-- {http2, async_dns, ...}, ca_file, ca_path}`. A core without curl_info
-- tells only its version line: what that line does not say stays nil.
function doctor.curl_info()
  if core.curl_info then return core.curl_info() end
  local line = core.curl_version or ""
  local info = { version = line:match("^libcurl/(%S+)"), features = {} }
  for name, version in line:gmatch(" ([^/%s]+)/(%S+)") do
    if name == "zlib" then
      info.zlib = version
    elseif name == "nghttp2" then
      info.nghttp2 = version
    elseif not info.tls then
      info.tls = { backend = name, version = version }
    end
  end
  info.features.http2 = info.nghttp2 ~= nil or nil
  return info
end

local function item(id, label, status, value, fix)
  return { id = id, label = label, status = status, value = value, fix = fix }
end

local function runtime_section()
  local items = {}
  local interpreter = _VERSION
  local jit = rawget(_G, "jit")
  if type(jit) == "table" and jit.version then interpreter = jit.version .. " (" .. _VERSION .. ")" end
  items[#items + 1] = item("interpreter", "interpreter", "ok", interpreter)
  items[#items + 1] = item("runtime", "runtime", "ok", imgedit.runtime())
  items[#items + 1] = item("modules", "Lua modules", "ok",
    ("imgedit %s from %s"):format(imgedit._VERSION, search("imgedit", package.path) or "package.preload"))
  local core_path = search("imgedit.core", package.cpath)
  items[#items + 1] = item("core", "imgedit.core", "ok",
    ("%s from %s"):format(core.version, core_path or "a loader other than package.cpath"))
  items[#items + 1] = item("cjson", "lua-cjson", "ok", ("%s from %s"):format(tostring(cjson._VERSION),
    search("cjson", package.cpath) or "a loader other than package.cpath"))
  return { id = "runtime", title = "imgedit " .. imgedit._VERSION, items = items }
end

local function readable(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function curl_section(opts)
  local info = doctor.curl_info()
  local items = { item("version", "libcurl", "ok", info.version or core.curl_version) }
  if info.tls then
    items[#items + 1] = item("tls", "TLS", "ok", ("%s %s"):format(info.tls.backend, info.tls.version or ""))
  else
    items[#items + 1] = item("tls", "TLS", "error", "none: this libcurl cannot make https:// requests",
      "install a libcurl built with TLS (Debian: libcurl4-openssl-dev), then rebuild imgedit.core")
  end
  local f = info.features or {}
  if f.http2 then
    items[#items + 1] = item("http2", "HTTP/2", "ok",
      "yes" .. (info.nghttp2 and (" (nghttp2 " .. info.nghttp2 .. ")") or ""))
  else
    items[#items + 1] = item("http2", "HTTP/2", "warn", f.http2 == false and "no: HTTP/1.1 only"
      or "unknown: this imgedit.core does not tell",
      f.http2 == false and "concurrent requests then each need a connection of their own; a libcurl with"
        .. " nghttp2 (Debian's) multiplexes them" or nil)
  end
  if f.async_dns then
    items[#items + 1] = item("async_dns", "asynchronous DNS", "ok", "yes" .. (info.resolver and
      (" (" .. info.resolver .. " resolver)") or ""))
  elseif f.async_dns == false then
    items[#items + 1] = item("async_dns", "asynchronous DNS", "warn", "no: a name lookup blocks the thread",
      "in Neovim and OpenResty the host then waits for each lookup; use a libcurl with the threaded"
        .. " resolver or c-ares (Debian's has one)")
  else
    items[#items + 1] = item("async_dns", "asynchronous DNS", "info", "unknown: this imgedit.core does not tell")
  end
  if opts.ca_file then
    items[#items + 1] = readable(opts.ca_file) and item("ca", "CA bundle", "ok", opts.ca_file .. " (ca_file)")
      or item("ca", "CA bundle", "error", opts.ca_file .. " (ca_file) cannot be read",
        "fix the ca_file option: the path of a PEM file of CA certificates")
  elseif info.ca_file then
    items[#items + 1] = readable(info.ca_file) and item("ca", "CA bundle", "ok", info.ca_file .. " (libcurl's default)")
      or item("ca", "CA bundle", "error", info.ca_file .. " (libcurl's default) cannot be read",
        "install the CA certificates (Debian: ca-certificates), or pass ca_file = PATH")
  elseif info.ca_path then
    items[#items + 1] = item("ca", "CA bundle", "ok", info.ca_path .. " (libcurl's default directory)")
  else
    items[#items + 1] = item("ca", "CA bundle", "info", core.curl_info
      and "none set: the TLS library's own default store" or "libcurl's default: this imgedit.core does not tell which")
  end
  return { id = "libcurl", title = "libcurl", items = items }
end

local function member(list, value)
  for _, v in ipairs(list or {}) do
    if v == value then return true end
  end
  return false
end

local function ping(d, c, hints)
  local p = d.ping
  local res, err = client.probe(c, p.method, p.path)
  local request = ("%s %s"):format(p.method, p.path)
  if not res then
    return item("key_check", "key check", "error", ("no answer to %s: %s"):format(request, tostring(err)),
      "check the base URL, the network and the proxy; the error says what failed")
  end
  local answered = ("%s answered HTTP %d%s"):format(request, res.status,
    res.request_id and (", request " .. res.request_id) or "")
  if member(p.accepted, res.status) then
    return item("key_check", "key check", "ok", "accepted: " .. answered .. " (not billed)")
  elseif member(p.rejected, res.status) then
    return item("key_check", "key check", "error", "rejected: " .. answered,
      ("the provider does not accept this key: set %s to a valid key%s"):format(d.env.api_key, hints.key or ""))
  end
  return item("key_check", "key check", "warn", "unexpected answer: " .. answered,
    "the provider may be down or the base URL may not be its API; try again, check the base URL")
end

local function provider_section(d, opts, any_key)
  local given = (opts.providers or {})[d.name] or {}
  local hints = opts.hints or {}
  local items = {}
  local key, key_from = given.api_key, "given"
  if key == nil then key, key_from = os.getenv(d.env.api_key), "$" .. d.env.api_key end
  if key == "" then key = nil end
  if key then
    items[#items + 1] = item("key", "API key", "ok", ("set (%s)"):format(key_from))
  else
    -- a key of a provider not in use is no problem, unless none has one
    local needed = opts.provider == d.name or not any_key
    items[#items + 1] = item("key", "API key", needed and "error" or "warn", "not set",
      ("set %s to your %s key%s"):format(d.env.api_key, d.name, hints.key or ""))
  end

  local base_url, url_from = given.base_url, "given"
  if base_url == nil and os.getenv(d.env.base_url) then
    base_url, url_from = os.getenv(d.env.base_url), "$" .. d.env.base_url
  end
  if base_url == nil then base_url, url_from = d.base_url, "the provider's" end
  local options = {}
  for k, v in pairs(given) do options[k] = v end
  options.api_key, options.base_url = key, base_url
  if opts.allow_http then options.allow_http = true end
  local c, err = imgedit.client(d.name, options)
  if c then
    items[#items + 1] = item("base_url", "base URL", "ok", ("%s (%s)"):format(base_url:gsub("/+$", ""), url_from))
  else
    local message = tostring(err.message or err)
    if hints.allow_http then message = message:gsub("pass allow_http = true", hints.allow_http) end
    local is_url = message:find("base_url", 1, true) ~= nil
    items[#items + 1] = item(is_url and "base_url" or "client", is_url and "base URL" or "client", "error",
      ("%s (%s): refused: %s"):format(base_url, url_from, message),
      is_url and ("set %s to the provider's https:// origin, or unset it for %s"):format(d.env.base_url, d.base_url)
        or "fix the key or the option named")
  end

  if not opts.ping then
    items[#items + 1] = item("key_check", "key check", "info", "not checked" .. (hints.ping and
      ("; " .. hints.ping) or ""))
  elseif not d.ping then
    items[#items + 1] = item("key_check", "key check", "info", ("cannot be checked without a billed request (%s):"
      .. " none was made; the first edit tells"):format(d.ping_unavailable or "the provider documents none"))
  elseif not key or not c then
    items[#items + 1] = item("key_check", "key check", "info", "not checked: " .. (key and "the client is refused"
      or "no key"))
  else
    items[#items + 1] = ping(d, c, hints)
  end
  return { id = d.name, title = ("%s: %s"):format(d.name, d.title or ""), items = items }
end

--- Runs the checks. opts (all optional): `ping` (true: one unbilled
-- request per provider that has one), `provider` (only this one; its key is
-- then required), `allow_http`, `ca_file`, `providers = {[name] = client
-- options}` (keys and base URLs given to a host program rather than in the
-- environment), `hints = {key =, ping =, allow_http =}` (how the caller's
-- user does those: an option name, a setting).
-- Returns the report (plain data).
function doctor.run(opts)
  opts = opts or {}
  local sections = { runtime_section(), curl_section(opts) }
  local names = opts.provider and { opts.provider } or providers.names()
  local any_key = false
  for _, name in ipairs(providers.names()) do
    local given = (opts.providers or {})[name] or {}
    local d = providers.get(name)
    local key = given.api_key or os.getenv(d.env.api_key)
    any_key = any_key or (key ~= nil and key ~= "")
  end
  for _, name in ipairs(names) do
    local d = providers.get(name)
    if d then sections[#sections + 1] = provider_section(d, opts, any_key) end
  end
  local report = { ok = true, problems = 0, warnings = 0, sections = sections }
  for _, section in ipairs(sections) do
    for _, it in ipairs(section.items) do
      if it.status == "error" then report.problems = report.problems + 1 end
      if it.status == "warn" then report.warnings = report.warnings + 1 end
    end
  end
  report.ok = report.problems == 0
  return report
end

return doctor
