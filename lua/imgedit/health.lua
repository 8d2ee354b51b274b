--- Neovim's `:checkhealth imgedit`: the checks of `imgedit doctor`
-- (`imgedit.doctor`), reported through the editor's health API —
-- `vim.health.start/ok/info/warn/error` (Neovim 0.10 and later),
-- `vim.health.report_*` (0.8, 0.9) or the `health` module of 0.7, whose
-- `report_*` call `health#report_*`.
--
-- Neovim finds it as `lua/imgedit/health.lua` on 'runtimepath', or through
-- `autoload/health/imgedit.vim` of the example plugin (examples/nvim) when
-- imgedit itself is only on `package.path` (a LuaRocks tree, a checkout).
--
-- The keys of a plugin's clients need not be in the environment: a plugin
-- passes its client options with `setup{[provider] = opts}`, and the report
-- checks those. `let g:imgedit_health_ping = 1` adds `--ping`: one request
-- per provider that it does not bill.
-- @module imgedit.health

-- luacheck: globals vim

local health = {}

local client_options = {}

--- The client options (`{[provider] = opts}`) a plugin uses, to check them.
function health.setup(options)
  if options ~= nil and type(options) ~= "table" then
    error(("bad argument #1 to 'setup' (table expected, got %s)"):format(type(options)), 2)
  end
  client_options = options or {}
end

--- The health API of this Neovim, as {start, ok, info, warn, error}.
local function reporter()
  local h = vim.health
  if h and h.start then
    return { start = h.start, ok = h.ok, info = h.info, warn = h.warn, error = h.error }
  end
  if h and h.report_start then
    return { start = h.report_start, ok = h.report_ok, info = h.report_info, warn = h.report_warn,
             error = h.report_error }
  end
  local old = require("health") -- Neovim 0.7: runtime/lua/health.lua
  return { start = old.report_start, ok = old.report_ok, info = old.report_info, warn = old.report_warn,
           error = old.report_error }
end

local HINTS = {
  key = " (or pass api_key in the plugin's setup)",
  ping = "let g:imgedit_health_ping = 1 to ask each provider that has an unbilled request",
  allow_http = "pass allow_http = true in the plugin's setup",
}

--- Runs the checks (`:checkhealth imgedit` calls it).
function health.check()
  local report = reporter()
  report.start("Neovim")
  local v = vim.version()
  report.info(("Neovim %d.%d.%d, %s"):format(v.major, v.minor, v.patch, rawget(_G, "jit") and jit.version or _VERSION))
  local loaded, doctor = pcall(require, "imgedit.doctor")
  if not loaded then
    report.error("imgedit cannot be loaded: " .. tostring(doctor):match("^[^\n]*"), {
      "put imgedit's lua/ directory on package.path (or install its rock for Lua 5.1)",
      "build its core for Neovim's LuaJIT (make LUA=luajit) and put build/luajit/ on package.cpath",
    })
    return
  end
  local ping = vim.g.imgedit_health_ping
  local result = doctor.run({ ping = ping == 1 or ping == true, providers = client_options, hints = HINTS })
  for _, section in ipairs(result.sections) do
    report.start(section.title)
    for _, item in ipairs(section.items) do
      local text = ("%s: %s"):format(item.label, item.value or "")
      local say = report[item.status == "warn" and "warn" or item.status == "error" and "error"
        or item.status == "info" and "info" or "ok"]
      -- no advice argument at all when there is none (0.7 would print a null)
      if item.fix and (item.status == "warn" or item.status == "error") then say(text, { item.fix }) else say(text) end
    end
  end
end

return health
