-- The imgedit command on a real terminal: tmux runs it in a pane, and the
-- pane's screen (capture-pane) shows the live progress display.
local cjson = require("cjson")
local socket = require("socket")
local helpers = require("spec.helpers")

local URL = "https://example.com/portrait.jpg"

local quote = helpers.shell_quote

local function succeeded(a, _, c)
  if type(a) == "number" then return a == 0 end
  return a == true and (c == nil or c == 0)
end

--- A private tmux server (its own socket), so that no user session is touched
-- and the server inherits nothing but what the command line sets.
local Terminal = {}
Terminal.__index = Terminal

local function terminal(command)
  local self = setmetatable({ socket = ("imgedit-spec-%d-%d"):format(os.time(), math.random(1e6)) }, Terminal)
  -- tmux itself runs without a preloaded library (make check-asan preloads
  -- the ASan runtime, whose leak report at tmux's exit is not imgedit's)
  local ok = succeeded(os.execute(("env -u LD_PRELOAD tmux -L %s new-session -d -s spec -x 120 -y 30 %s")
    :format(self.socket, quote(command))))
  assert(ok, "tmux could not start a session (is the tmux package installed?)")
  return self
end

function Terminal:screen()
  local p = io.popen(("tmux -L %s capture-pane -p -t spec 2>/dev/null"):format(self.socket))
  local text = p and p:read("*a") or ""
  if p then p:close() end
  return text
end

--- Polls the screen (bounded) until `pattern` shows; returns the screen
-- then, or nil and the last screen.
function Terminal:wait_for(pattern, seconds)
  local deadline = socket.gettime() + seconds
  local screen
  repeat
    screen = self:screen()
    if screen:find(pattern) then return screen end
    socket.sleep(0.05)
  until socket.gettime() > deadline
  return nil, screen
end

function Terminal:kill()
  os.execute(("tmux -L %s kill-server >/dev/null 2>&1"):format(self.socket))
end

--- The shell command the pane runs: imgedit with the emulator's environment,
-- then the exit status, then a pause that keeps the pane (and its screen).
local function pane_command(m, args)
  local words = {
    "cd", quote(helpers.ROOT), "&&", "env",
    "FOXAPI_API_KEY=" .. helpers.KEY, "FOXAPI_BASE_URL=" .. quote(m.foxapi),
    "POWERTOKENS_API_KEY=" .. helpers.KEY, "POWERTOKENS_BASE_URL=" .. quote(m.powertokens),
    "LUA_PATH=" .. quote(package.path), "LUA_CPATH=" .. quote(package.cpath),
  }
  if os.getenv("LD_PRELOAD") then words[#words + 1] = "LD_PRELOAD=" .. quote(os.getenv("LD_PRELOAD")) end
  words[#words + 1] = helpers.LUA
  words[#words + 1] = "bin/imgedit"
  for _, a in ipairs(args) do words[#words + 1] = quote(a) end
  return table.concat(words, " ") .. "; echo EXIT=$?; sleep 60"
end

describe("imgedit on a terminal", function()
  local m, out

  setup(function() m = helpers.start_mock() end)
  teardown(function() m:stop() end)
  before_each(function()
    m:reset()
    out = helpers.tmpdir()
  end)
  after_each(function() helpers.rmdir(out) end)

  it("a batch shows a live line per task and a total, then the summary", function()
    m:config({ task_delay = 3 })
    local jobs = out .. "/jobs.jsonl"
    helpers.write(jobs, cjson.encode({ id = "beach", prompt = "Beach", images = { URL } }) .. "\n"
      .. cjson.encode({ id = "fox", op = "generate", prompt = "A red fox", n = 2 }) .. "\n")
    local term = terminal(pane_command(m, { "batch", jobs, "-o", out .. "/images" }))
    finally(function() term:kill() end)

    -- a live line per task: status, bar, percent, elapsed, estimated remaining
    local live, last = term:wait_for("processing +%[#+%-*%] +%d+%% +[%d.]+s +~[%d.]+s left", 15)
    assert(live, "no live progress line appeared; the screen was:\n" .. tostring(last))
    assert.matches("beach +processing", live)
    assert.matches("fox +processing", live)
    assert.matches("batch +0/2 done +%[[#%-]+%] +%d+%% +2 running +0 queued +0 failed", live)
    -- redrawn in place: one line per task, not one per update
    local _, lines_of_beach = live:gsub("beach +processing", "")
    assert.equal(1, lines_of_beach)

    local final
    final, last = term:wait_for("EXIT=%d", 20)
    assert(final, "the batch did not finish; the screen was:\n" .. tostring(last))
    assert.matches("EXIT=0", final)
    assert.matches("batch " .. jobs:gsub("%p", "%%%0") .. ": 2 jobs in [%d.]+s: 2 completed, 0 skipped", final)
    assert.matches("beach +completed +%[#+%] +100%%", final)
    assert.matches("fox +completed +%[#+%] +100%%", final)
    -- the live block is gone: only the permanent lines and the summary remain
    assert.is_nil(final:find("processing", 1, true))
    assert.is_nil(final:find("batch  ", 1, true))
  end)

  it("a single edit shows its task's progress, then its file", function()
    m:config({ task_delay = 2 })
    local term = terminal(pane_command(m, { "edit", "-i", URL, "--prompt", "Beach", "-o", out, "--name", "beach" }))
    finally(function() term:kill() end)
    local live, last = term:wait_for("edit +processing +%[#*%-*%] +%d+%%", 15)
    assert(live, "no live progress line appeared; the screen was:\n" .. tostring(last))
    local final
    final, last = term:wait_for("EXIT=%d", 20)
    assert(final, "the edit did not finish; the screen was:\n" .. tostring(last))
    assert.matches("EXIT=0", final)
    assert.matches("edit +completed +%[#+%] +100%% +[%d.]+s +" .. out:gsub("%p", "%%%0") .. "/beach%-1%.png", final)
  end)
end)
