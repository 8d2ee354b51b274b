-- Neovim: imgedit.async driven by the editor's libuv loop. A headless
-- Neovim (its own LuaJIT, with the LuaJIT build of the core) runs a script
-- against the emulator that this spec starts, and writes a JSON report that
-- the spec checks. Also: the socket-driven multi handle of the C core that
-- the "nvim" runtime stands on, and imgedit.async outside Neovim.
local cjson = require("cjson")
local core = require("imgedit.core")
local imgedit = require("imgedit")
local helpers = require("spec.helpers")

local SEED_URL = "https://example.com/portrait.jpg"
local PNG_SIGNATURE = "\137PNG\r\n\26\n"

--- Upper bounds on one Neovim run: its own watchdog, then timeout(1).
local WATCHDOG_SECONDS = 30
local KILL_SECONDS = 45

--- Neovim and make run without what `make check-asan` and `make test` put
-- in the environment: the sanitizer runtime (Neovim and the compiler are not
-- built for it) and the module paths of the interpreter running the specs.
local CLEAN_ENV = "env -u LD_PRELOAD -u LUA_PATH -u LUA_CPATH"

local quote = helpers.shell_quote

-- Runs before the body of every script, in Neovim: module paths, the report
-- and its writer, a watchdog, and the measuring tools.
local PRELUDE = [[
local root = os.getenv("IMGEDIT_ROOT")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/luajit/?.so;" .. package.cpath
local uv = vim.uv or vim.loop
local cjson = require("cjson")

local report = {}
local finished = false
local function finish()
  if finished then return end
  finished = true
  local f = assert(io.open(os.getenv("IMGEDIT_REPORT"), "w"))
  f:write(cjson.encode(report))
  f:close()
  vim.cmd("qa!")
end
local watchdog = uv.new_timer()
watchdog:start(tonumber(os.getenv("IMGEDIT_WATCHDOG")) * 1000, 0, vim.schedule_wrap(function()
  report.watchdog = true
  finish()
end))

-- An editor timer firing every 50 ms, counting its ticks.
local function ticker()
  local t = { ticks = 0 }
  local handle = uv.new_timer()
  handle:start(50, 50, function()
    t.ticks = t.ticks + 1
  end)
  function t.stop()
    handle:stop()
    handle:close()
    return t
  end
  return t
end

local imgedit = require("imgedit")
-- How often the editor woke imgedit up since `before` (a copy of the stats).
local stats = require("imgedit.runtime.nvim").stats
local function counters() return { turns = stats.turns, timers = stats.timers, sockets = stats.sockets } end
local function wakeups(before)
  return (stats.turns - before.turns) + (stats.timers - before.timers) + (stats.sockets - before.sockets)
end
-- HTTP attempts, each with the editor timer's tick count when it ended
local attempts = {}
local attempt_tick = function() return 0 end
imgedit.log(function() attempts[#attempts + 1] = attempt_tick() end)
local fox = assert(imgedit.client("foxapi", {
  api_key = "sk-test", base_url = os.getenv("IMGEDIT_FOX"),
  poll = { interval = 0.05, max_interval = 0.2 },
}))
local SEED = "https://example.com/portrait.jpg"
local OUT = os.getenv("IMGEDIT_OUT")
report.runtime = imgedit.runtime()

local ok, problem = xpcall(function()
]]

local POSTLUDE = [[
end, debug.traceback)
if not ok then
  report.error = tostring(problem)
  finish()
end
]]

describe("Neovim", function()
  local m, root, dir

  setup(function()
    root = helpers.ROOT
    -- the core for Neovim's LuaJIT (`make test` has built it already; this
    -- is a no-op then, and keeps a direct `busted` run from using a stale one)
    local make = CLEAN_ENV .. " -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -s"
    local built = os.execute(("cd %s && %s LUA=luajit LUA_PC=luajit all >/dev/null"):format(quote(root), make))
    assert(built == true or built == 0, "cannot build the LuaJIT core (make LUA=luajit LUA_PC=luajit)")
    m = helpers.start_mock()
    dir = helpers.tmpdir()
  end)
  teardown(function()
    m:stop()
    helpers.rmdir(dir)
  end)
  before_each(function() m:reset() end)

  --- Runs `body` in a headless Neovim and returns its report.
  local function nvim(body)
    local script = dir .. "/script.lua"
    local report = dir .. "/report.json"
    local log = dir .. "/nvim.log"
    os.remove(report)
    helpers.write(script, PRELUDE .. body .. POSTLUDE)
    local env = {
      IMGEDIT_ROOT = root, IMGEDIT_FOX = m.foxapi, IMGEDIT_PT = m.powertokens, IMGEDIT_REPORT = report,
      IMGEDIT_DIR = dir, IMGEDIT_OUT = dir .. "/out.png", IMGEDIT_WATCHDOG = WATCHDOG_SECONDS,
    }
    local vars = {}
    for name, value in pairs(env) do vars[#vars + 1] = name .. "=" .. quote(value) end
    os.execute(("cd %s && %s %s timeout -k 5 %d nvim --headless --clean -u NONE -i NONE -n -c %s </dev/null >%s 2>&1")
      :format(quote(dir), CLEAN_ENV, table.concat(vars, " "), KILL_SECONDS, quote("luafile " .. script), quote(log)))
    local text = helpers.read(report)
    assert(text, "Neovim wrote no report; its output:\n" .. (helpers.read(log) or ""))
    if os.getenv("IMGEDIT_SHOW_NVIM_REPORT") then io.stderr:write(text, "\n") end
    local result = cjson.decode(text)
    assert(not result.error, result.error)
    assert(not result.watchdog, "the script did not finish within " .. WATCHDOG_SECONDS .. " s")
    return result
  end

  it("runs an edit whose task takes 2 s while an editor timer keeps ticking, without spinning", function()
    m:config({ task_delay = 2 })
    local r = nvim([[
      local tick = ticker()
      attempt_tick = function() return tick.ticks end
      local before = counters()
      local statuses = {}
      local handle = imgedit.async(function()
        local result, err = fox:edit({ prompt = "p", images = { SEED }, on_progress = function(task)
          statuses[#statuses + 1] = task.status
        end })
        report.wakeups = wakeups(before)
        report.ticks_at = attempts
        tick.stop()
        report.images = result and #result.images
        report.err = err and tostring(err)
        report.statuses = statuses
        -- not a libuv callback: the editor's API is usable here
        report.fast_event = vim.in_fast_event()
        vim.api.nvim_buf_set_lines(0, 0, -1, false, { "edited" })
        report.line = vim.api.nvim_buf_get_lines(0, 0, 1, false)[1]
        report.handles_at_end = require("imgedit.runtime.nvim").handles()
        vim.defer_fn(function()
          report.handles_idle = require("imgedit.runtime.nvim").handles()
          finish()
        end, 100)
      end)
      report.done_at_return = handle.done
      report.progress_at_return = #statuses
    ]])
    assert.equal("nvim", r.runtime)
    assert.is_nil(r.err)
    assert.equal(1, r.images)
    -- imgedit.async returned before the edit had even been submitted
    assert.is_false(r.done_at_return)
    assert.equal(0, r.progress_at_return)
    assert.is_true(#r.statuses >= 2, "on_progress: " .. table.concat(r.statuses, ", "))
    local task = m:tasks()[1]
    assert.is_true(task.polls >= 2, task.polls .. " polls")
    -- the editor went on: its timer ticked between the first HTTP attempt
    -- of the edit and its last (a frozen editor ticks not once meanwhile)
    local ticks = r.ticks_at
    assert.equal(1 + task.polls, #ticks)
    assert.is_true(ticks[#ticks] > ticks[1], ("ticks at each attempt: %s"):format(table.concat(ticks, " ")))
    -- nothing spun: the editor woke imgedit up a few times per HTTP
    -- attempt, not in a loop (a 1 ms timer would be ~2000 wakeups)
    assert.is_true(r.wakeups <= 20 * #ticks + 20, ("%d wakeups for %d HTTP attempts"):format(r.wakeups, #ticks))
    assert.is_false(r.fast_event)
    assert.equal("edited", r.line)
    -- no poll handle or timer is left open once nothing is under way
    assert.same({ polls = 0, timer = false }, r.handles_idle)
  end)

  it("saves the image inside imgedit.async", function()
    m:config({ task_delay = 0.2 })
    local r = nvim([[
      imgedit.async(function()
        local result = assert(fox:edit({ prompt = "p", images = { SEED } }))
        local saved, err = result.images[1]:save(OUT)
        report.saved, report.err = saved and true, err and tostring(err)
        report.url = result.images[1].url
        finish()
      end)
    ]])
    assert.is_nil(r.err)
    assert.is_true(r.saved)
    local bytes = helpers.read(dir .. "/out.png")
    assert.equal(PNG_SIGNATURE, bytes:sub(1, 8))
    assert.equal(helpers.fetch(r.url), bytes)
  end)

  it("runs several coroutines at once, sleeps included, while vim.wait waits with a time limit", function()
    m:config({ task_delay = 1 })
    local r = nvim([[
      local order, results, left = {}, {}, 4
      for i = 1, 3 do
        imgedit.async(function()
          local result = fox:edit({ prompt = "p" .. i, images = { SEED } })
          results[i] = result and #result.images
          order[#order + 1] = "edit"
          left = left - 1
        end)
      end
      imgedit.async(function()
        imgedit.sleep(0.3)
        order[#order + 1] = "sleep"
        left = left - 1
      end)
      report.waited = vim.wait(10000, function() return left == 0 end, 20)
      report.order, report.results = order, results
      finish()
    ]])
    assert.is_true(r.waited)
    assert.same({ 1, 1, 1 }, r.results)
    -- the sleep ended while the three edits still waited for their tasks
    assert.same({ "sleep", "edit", "edit", "edit" }, r.order)
    -- at once: every task was submitted before any was polled
    local last_submit, first_poll = 0, math.huge
    for i, request in ipairs(helpers.api_requests(m, "/foxapi/")) do
      if request.method == "POST" then last_submit = i end
      if request.method == "GET" then first_poll = math.min(first_poll, i) end
    end
    assert.is_true(last_submit < first_poll, "a task was polled before all were submitted")
  end)

  it("does not spin while a coroutine sits in vim.wait, and carries on after it", function()
    m:config({ task_delay = 0.3 })
    local r = nvim([[
      local before = counters()
      local edit = imgedit.async(function()
        return fox:edit({ prompt = "p", images = { SEED } })
      end)
      imgedit.async(function()
        vim.wait(800, function() return false end, 200) -- the user's own blocking wait
        report.wakeups = wakeups(before)
        report.attempts = #attempts
        local edited = edit:join()
        report.images = edited and #edited.images
        finish()
      end)
    ]])
    -- a few wakeups per HTTP attempt, not a loop for the 800 ms of vim.wait
    -- (a 1 ms timer would be ~800)
    assert.is_true(r.wakeups <= 20 * r.attempts + 20, ("%d wakeups for %d HTTP attempts"):format(r.wakeups,
      r.attempts))
    assert.equal(1, r.images)
  end)

  it("a waiting call outside imgedit.async still works, but freezes the editor meanwhile", function()
    m:config({ task_delay = 1 })
    local r = nvim([[
      local tick = ticker()
      local before = tick.ticks
      local result = fox:edit({ prompt = "p", images = { SEED } })
      report.ticks_during = tick.ticks - before
      report.images = result and #result.images
      vim.defer_fn(function()
        report.ticks_after = tick.stop().ticks - before
        finish()
      end, 120)
    ]])
    assert.equal(1, r.images)
    -- the editor's timer could not tick once while the edit blocked, and
    -- ticks again afterwards
    assert.equal(0, r.ticks_during)
    assert.is_true(r.ticks_after >= 1)
  end)

  it("examples/nvim: edits the local file, then the URL, under the cursor, with progress in vim.notify", function()
    m:config({ task_delay = 0.3 })
    helpers.write(dir .. "/cat.png", helpers.png("cat"))
    os.remove(dir .. "/portrait-edited.png")
    local r = nvim([[
      -- installed as a plugin manager would: on 'runtimepath', its plugin/ sourced
      vim.opt.runtimepath:append(root .. "/examples/nvim")
      vim.cmd("runtime! plugin/imgedit.lua")
      local plugin = require("imgedit_nvim")
      plugin.setup({
        foxapi = { api_key = "sk-test", base_url = os.getenv("IMGEDIT_FOX"), poll = { interval = 0.05 } },
        powertokens = { api_key = "sk-test", base_url = os.getenv("IMGEDIT_PT") },
      })
      report.messages = {}
      local saved = 0
      vim.notify = function(message)
        table.insert(report.messages, message)
        if message:find("^imgedit: saved") or message:find("error") then
          saved = saved + 1
          if saved == 1 then
            vim.api.nvim_win_set_cursor(0, { 2, 0 })
            vim.cmd("ImgeditEdit Make the sky stormy")
          else
            finish()
          end
        end
      end
      vim.cmd("edit " .. os.getenv("IMGEDIT_DIR") .. "/notes.txt")
      vim.api.nvim_buf_set_lines(0, 0, -1, false, { "see cat.png", SEED })
      vim.api.nvim_win_set_cursor(0, { 1, 6 })
      vim.cmd("ImgeditEdit Make the sky stormy")
    ]])
    local messages = table.concat(r.messages, "\n")
    assert.matches("imgedit: editing cat.png with powertokens", messages, 1, true)
    assert.matches("imgedit: saved cat-edited.png", messages, 1, true)
    assert.matches("imgedit: editing " .. SEED_URL .. " with foxapi", messages, 1, true)
    assert.matches("imgedit: task [%w_-]+: processing", messages)
    assert.matches("imgedit: saved portrait-edited.png", messages, 1, true)
    assert.equal(PNG_SIGNATURE, helpers.read(dir .. "/cat-edited.png"):sub(1, 8))
    assert.equal(PNG_SIGNATURE, helpers.read(dir .. "/portrait-edited.png"):sub(1, 8))
  end)

  --- The lines of the :checkhealth imgedit buffer, run after `setup` (Lua),
  --- with the example plugin installed.
  local function checkhealth(setup)
    return nvim([[
      vim.opt.runtimepath:append(root .. "/examples/nvim")
      vim.cmd("runtime! plugin/imgedit.lua")
    ]] .. setup .. [[
      vim.cmd("checkhealth imgedit")
      report.lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
      finish()
    ]]).lines
  end

  it(":checkhealth imgedit reports the doctor's checks, and with ping one unbilled request", function()
    local lines = checkhealth([[
      vim.env.FOXAPI_API_KEY, vim.env.FOXAPI_BASE_URL = "sk-test", os.getenv("IMGEDIT_FOX")
      vim.env.POWERTOKENS_API_KEY, vim.env.POWERTOKENS_BASE_URL = nil, os.getenv("IMGEDIT_PT")
      vim.g.imgedit_health_ping = 1
    ]])
    local text = table.concat(lines, "\n")
    assert.is_nil(text:find("No healthcheck found", 1, true), text)
    for _, expected in ipairs({
      "## imgedit " .. imgedit._VERSION, "- OK: runtime: nvim", "- OK: imgedit.core: " .. core.version .. " from "
        .. root .. "/build/luajit/imgedit/core.so", "## libcurl", "- OK: TLS: ", "## foxapi: ",
      "- OK: API key: set ($FOXAPI_API_KEY)", "- OK: base URL: " .. m.foxapi .. " ($FOXAPI_BASE_URL)",
      "- OK: key check: accepted: GET /v1/tasks/imgedit-doctor-ping answered HTTP 404",
      "## powertokens: ", "- WARNING: API key: not set", "set POWERTOKENS_API_KEY to your powertokens key",
      "- INFO: key check: cannot be checked without a billed request",
    }) do
      assert.matches(expected, text, 1, true)
    end
    local requests = helpers.api_requests(m)
    assert.equal(1, #requests)
    assert.same({ "GET", "/foxapi/v1/tasks/imgedit-doctor-ping" }, { requests[1].method, requests[1].path })
  end)

  it(":checkhealth imgedit checks the keys given to the plugin's setup: a rejected one is an ERROR, never shown",
    function()
    local lines = checkhealth([[
      vim.env.FOXAPI_API_KEY, vim.env.POWERTOKENS_API_KEY = nil, nil
      require("imgedit_nvim").setup({ foxapi = { api_key = "sk-wrong-777", base_url = os.getenv("IMGEDIT_FOX") } })
      vim.g.imgedit_health_ping = 1
    ]])
    local text = table.concat(lines, "\n")
    assert.matches("- OK: API key: set (given)", text, 1, true)
    assert.matches("- ERROR: key check: rejected: GET /v1/tasks/imgedit-doctor-ping answered HTTP 401", text, 1, true)
    assert.matches("set FOXAPI_API_KEY to a valid key (or pass api_key in the plugin's setup)", text, 1, true)
    assert.is_nil(text:find("sk-wrong-777", 1, true), "the key was shown")
    assert.equal(0, #m:requests({ method = "POST" }))
  end)
end)

describe("imgedit.async outside Neovim", function()
  it("is spawn under the blocking runtime: the coroutine runs at the next join", function()
    assert.equal("blocking", imgedit.runtime())
    local ran = false
    local handle = imgedit.async(function(a, b)
      ran = true
      return a + b
    end, 1, 2)
    assert.is_false(ran)
    assert.equal(3, handle:join())
    assert.is_true(ran)
  end)

  it("raises for a wrong Lua type", function()
    assert.has_error(function() imgedit.async("x") end, "bad argument #1 to 'async' (function expected, got string)")
  end)
end)

describe("socket-driven multi handle", function()
  local m, multi
  local session = core.session({})
  local api = core.session({ headers = { "Authorization: Bearer sk-test" } })

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    multi = core.multi()
  end)
  after_each(function() multi:close() end)

  local function request()
    return { url = m.api .. "/_mock/tasks" }
  end

  -- A host loop in miniature: applies the socket changes to a set of
  -- watched sockets, waits in curl_multi_poll, then reports every watched
  -- socket (events "" let curl look for itself) and the timer when due.
  local function drive(t, seen)
    local watched = {}
    local deadline = core.now() + 10
    local function sync()
      for _, change in ipairs(multi:socket_changes()) do
        seen[#seen + 1] = change
        if change[2] == "remove" then watched[change[1]] = nil else watched[change[1]] = change[2] end
      end
    end
    sync()
    while not t:done() do
      assert(core.now() < deadline, "the transfer did not finish in time")
      multi:poll(math.min(multi:timer() or 0.1, 0.1))
      for fd in pairs(watched) do multi:socket_action(fd) end
      local due = multi:timer()
      if due and due <= 0.001 then multi:socket_action() end
      sync()
    end
    return watched
  end

  it("reports no socket and no timer, and refuses socket actions, until watched", function()
    assert.same({}, multi:socket_changes())
    assert.is_nil(multi:timer())
    assert.has_error(function() multi:socket_action() end,
      "this multi handle is not socket-driven: call m:watch() first")
  end)

  it("records what curl watches and when it wants to be called, and reaps like perform", function()
    multi:watch()
    multi:watch() -- a second call changes nothing
    local t = assert(multi:add(session, request()))
    assert.equal(0, multi:timer(), "a new transfer is due at once")
    assert.same({}, multi:socket_changes(), "no socket before curl acted")
    multi:socket_action()
    local seen = {}
    local watched = drive(t, seen)
    assert.is_true(#seen >= 1)
    for _, change in ipairs(seen) do
      assert.equal("number", type(change[1]))
      assert.is_truthy(({ ["in"] = true, out = true, inout = true, remove = true })[change[2]])
    end
    assert.equal(200, t:result().status)
    assert.same({ t }, multi:done())
    -- the connection goes back to the pool: nothing left to watch or time
    assert.same({}, watched)
    assert.is_nil(multi:timer())
  end)

  it("takes over a transfer added before it was watched", function()
    local t = assert(multi:add(session, request()))
    multi:watch()
    local seen = {}
    drive(t, seen)
    assert.is_true(#seen >= 1)
    assert.equal(200, t:result().status)
  end)

  it("takes over a transfer under way (m:perform) before it was watched", function()
    m:faults({ { path_match = "/v1/tasks/", kind = "slow", seconds = 0.4, times = 1 } })
    local t = assert(multi:add(api, { url = m.foxapi .. "/v1/tasks/none" }))
    local until_sent = core.now() + 0.15
    while core.now() < until_sent do
      multi:perform()
      multi:poll(0.01)
    end
    assert.is_false(t:done())
    multi:watch()
    local seen = {}
    drive(t, seen)
    assert.is_true(#seen >= 1)
    assert.is_number(t:result().status)
  end)

  it("serves readiness events given by name", function()
    multi:watch()
    local t = assert(multi:add(session, request()))
    multi:socket_action()
    local deadline = core.now() + 10
    local watched = {}
    while not t:done() do
      assert(core.now() < deadline, "the transfer did not finish in time")
      for _, change in ipairs(multi:socket_changes()) do
        watched[change[1]] = change[2] ~= "remove" and change[2] or nil
      end
      multi:poll(0.05)
      for fd, what in pairs(watched) do multi:socket_action(fd, what) end
      if (multi:timer() or 1) <= 0.001 then multi:socket_action() end
    end
    assert.equal(200, t:result().status)
    assert.has_error(function() multi:socket_action(3, "read") end)
    assert.has_error(function() multi:socket_action(-1, "in") end)
    assert.is_number(multi:socket_action(3, "inerr"))
  end)
end)
