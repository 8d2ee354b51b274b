-- imgedit's benchmark suite (`make bench`; not part of `make test`).
--
-- Runs each workload of the issue in its own process (bench/workload.lua for
-- imgedit, build/bench/baseline for plain C libcurl, the curl tool where the
-- issue asks for it) against local servers only (loopback addresses), and
-- prints one table: workload, metric, imgedit, baseline, ratio, target, result.
-- The table also goes to build/bench/results.md, and every raw measurement to
-- build/bench/results.json.
--
-- Servers: the emulator (imgedit.mock) for W2, W3, W4 and polling; for W1 a
-- trivial C server (bench/fastserver.c), because the emulator spends about as
-- much CPU per request as the client under test and would dominate the
-- per-request time (the suite measures and prints both). The OpenResty
-- workload (bench/openresty.lua) runs Debian's nginx with its Lua module and
-- an emulator of its own, and prints a second table.
--
-- Environment: BENCH_REPEATS (default 5) repeats of the short workloads, the
-- median is reported; BENCH_PIN=0 turns off pinning W1's client and server to
-- one CPU (see RESULTS.md); BENCH_SKIP_POLL=1 skips the 45 s polling workload;
-- BENCH_ONLY=w1 (or w2, w3, w4, polling, openresty; comma-separated) runs only
-- those; BENCH_OPENRESTY_N=1,50 runs the OpenResty workload (issue 12) at
-- those N only (default 1,50,200,500).
-- W1 also counts instructions per request under callgrind (valgrind), when
-- valgrind is installed: the steady-state figure, which does not depend on
-- the machine's load.

local cjson = require("cjson")
local socket = require("socket")
local imgedit = require("imgedit")
local mock = require("imgedit.mock.process")

-- Paths, tools, settings -------------------------------------------------------

local ROOT = (arg[0]:match("^(.*)/bench/[^/]*$")) or "."
local BUILD = ROOT .. "/build/bench"
local TMP = BUILD .. "/tmp"
local LUA = arg[-1] or "lua5.4"
local BASELINE = BUILD .. "/baseline"
local FASTSERVER = BUILD .. "/fastserver"
local WORKLOAD = ROOT .. "/bench/workload.lua"
local OPENRESTY = ROOT .. "/bench/openresty.lua"
local LUACURL = ROOT .. "/bench/luacurl.lua"
-- W1's peer runs under the interpreter Debian builds lua-curl for
local LUACURL_LUA = "lua5.1"
local KEY = "sk-test"
local MIB = 1048576

local REPEATS = math.max(1, math.min(15, tonumber(os.getenv("BENCH_REPEATS") or "") or 5))
local W1_N, W1_EMU_N = 2000, 500
-- callgrind runs of W1: the totals of a short and a long run; a Lua
-- collection cycle falls in or out of a short window, so the long one is
-- six times the short (200 and 400 requests varied by +-7K a request)
local W1_CG_SHORT, W1_CG_LONG = 200, 1200
local W2_N, W2_BIG_N, W2_DELAY = 200, 1000, 1.0
local W3_BYTES, W3_N = 6 * MIB, 4
local W4_BYTES = 200 * MIB
local W4_MIN_REPEATS = 9 -- writing 200 MiB into the page cache varies a lot from run to run on this VM
local POLL_DURATIONS = {1, 5, 45}
-- OpenResty (issue 12): each edit's answer 5 s late; a 2.5 s window while
-- they wait; 50 quick requests in it
local OR_DELAY, OR_WINDOW, OR_QUICK = 5, 2.5, 50
local OR_NS = os.getenv("BENCH_OPENRESTY_N") or "1,50,200,500"
local BUDGET = 540 -- seconds: later workloads are skipped past this (make bench must end within 10 min)

local W3_BODY = '{"model":"qwen-image-2.0-pro","response_format":"b64_json","n":4,"input":{"messages":[{"role":"user",'
  .. '"content":[{"image":"https://example.com/p.jpg"},{"text":"a cat in a hat"}]}]}}'

local started = socket.gettime()
local unpack = table.unpack or unpack

-- Characters of a UTF-8 string (the table has "µ" and "≤" in it).
local function width(s)
  local _, continuation = s:gsub("[\128-\191]", "")
  return #s - continuation
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function log(fmt, ...)
  io.stderr:write(("[bench %6.1fs] "):format(socket.gettime() - started), fmt:format(...), "\n")
end

local function have(tool)
  local p = io.popen("command -v " .. tool .. " 2>/dev/null")
  local out = p:read("*a")
  p:close()
  return out ~= ""
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local text = f:read("*a")
  f:close()
  return text
end

local PIN = ""
if os.getenv("BENCH_PIN") ~= "0" and have("taskset") then PIN = "taskset -c 0 " end

local CLK_TCK
do
  local p = io.popen("getconf CLK_TCK 2>/dev/null")
  CLK_TCK = tonumber((p:read("*a"))) or 100
  p:close()
end

-- CPU seconds a process has used so far (user + system), from /proc.
local function process_cpu(pid)
  local text = read_file("/proc/" .. pid .. "/stat")
  local rest = text:match("%) (.*)$")
  if not rest then return nil end
  local fields = {}
  for x in rest:gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK
end

local function median(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

-- "min / median / max" of a list of seconds, for the notes.
local function spread(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  return ("%.3f / %.3f / %.3f s"):format(t[1], median(t), t[#t])
end

local function collect(list, field)
  local out = {}
  for i, v in ipairs(list) do out[i] = v[field] end
  return out
end

-- Runs a command under `timeout`; returns its last JSON line decoded. Raises
-- with the command's stderr when it fails. show_progress: its stderr goes to
-- ours as it comes (a long workload's progress lines) instead.
local function run_json(cmd, limit, show_progress)
  local errfile = os.tmpname()
  local p = io.popen(("timeout -k 5 %d %s%s"):format(limit, cmd,
    show_progress and "" or " 2>" .. shell_quote(errfile)))
  local out = p:read("*a")
  local ok, _, code = p:close()
  local err = read_file(errfile)
  os.remove(errfile)
  local line
  for l in out:gmatch("[^\n]+") do
    if l:sub(1, 1) == "{" then line = l end
  end
  if not ok or not line then
    error(("command failed (exit %s): %s\n%s%s"):format(tostring(code), cmd, out, err), 0)
  end
  return cjson.decode(line)
end

local function workload(args, limit, pin)
  local parts = {}
  for i, a in ipairs(args) do parts[i] = shell_quote(a) end
  return run_json((pin and PIN or "") .. shell_quote(LUA) .. " " .. shell_quote(WORKLOAD) .. " "
    .. table.concat(parts, " "), limit or 120)
end

local function baseline(args, limit, pin)
  local parts = {}
  for i, a in ipairs(args) do parts[i] = shell_quote(a) end
  return run_json((pin and PIN or "") .. shell_quote(BASELINE) .. " " .. table.concat(parts, " "), limit or 120)
end

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

-- Debian's lua-curl, W1's peer, when it can be loaded
local HAVE_LUACURL = have(LUACURL_LUA)
  and sh(shell_quote(LUACURL_LUA) .. " -e 'require(\"curl\")' >/dev/null 2>&1")

local function luacurl(args, limit, pin)
  local parts = {}
  for i, a in ipairs(args) do parts[i] = shell_quote(a) end
  return run_json((pin and PIN or "") .. shell_quote(LUACURL_LUA) .. " " .. shell_quote(LUACURL) .. " "
    .. table.concat(parts, " "), limit or 120)
end

local function clean(path)
  sh("rm -rf " .. shell_quote(path) .. " && mkdir -p " .. shell_quote(path))
end

local function sync()
  sh("timeout 120 sync")
end

-- Results ---------------------------------------------------------------------

local rows, raw, notes = {}, {}, {}

--- A table row. verdict: true (met), false (missed), nil (no target).
local function row(w, metric, value, base, ratio, target, verdict)
  local result = "—"
  if verdict == true then result = "met" elseif verdict == false then result = "MISSED" end
  rows[#rows + 1] = {w, metric, value or "—", base or "—", ratio or "—", target or "—", result}
end

local function note(fmt, ...)
  notes[#notes + 1] = fmt:format(...)
end

local function us(s) return s and ("%.1f µs"):format(s * 1e6) end
local function secs(s) return s and ("%.3f s"):format(s) end
local function mib(kib) return kib and ("%.1f MiB"):format(kib / 1024) end
local function times(x) return x and ("%.2f×"):format(x) end

local function print_rows(out, header, list)
  local widths = {}
  for i, h in ipairs(header) do widths[i] = width(h) end
  for _, r in ipairs(list) do
    for i, cell in ipairs(r) do widths[i] = math.max(widths[i], width(cell)) end
  end
  local function line(cells)
    local parts = {}
    for i, cell in ipairs(cells) do
      parts[i] = cell .. string.rep(" ", widths[i] - width(cell))
    end
    return "| " .. table.concat(parts, " | ") .. " |"
  end
  local sep = {}
  for i, w in ipairs(widths) do sep[i] = string.rep("-", w) end
  out:write(line(header), "\n", line(sep), "\n")
  for _, r in ipairs(list) do out:write(line(r), "\n") end
end

local function print_table(out)
  print_rows(out, {"workload", "metric", "imgedit", "baseline", "ratio", "target", "result"}, rows)
end

-- The OpenResty workload's own table (one row per provider, N and client),
-- printed after the main one; its targets are rows of the main table.
local OR_HEADER = {"provider", "N", "client", "waiting", "worker CPU", "emulator CPU", "quick n",
                   "quick median / p99 / max", "edit late median / max", "edits ok"}
local or_rows = {}
local or_title

-- Servers ---------------------------------------------------------------------

-- The trivial C server of W1, on loopback; stopped by closing its stdin.
local function start_fastserver()
  local ready = os.tmpname()
  local proc = assert(io.popen(("exec %s%s 600 > %s"):format(PIN, shell_quote(FASTSERVER), shell_quote(ready)), "w"))
  local info
  for _ = 1, 500 do
    local line = read_file(ready):match("^([^\n]*)\n")
    if line then
      info = cjson.decode(line)
      break
    end
    socket.sleep(0.01)
  end
  os.remove(ready)
  if not info then
    proc:close()
    error("the fast server did not start within 5 s", 0)
  end
  info.proc = proc
  info.url = "http://127.0.0.1:" .. math.floor(info.port)
  info.pid = math.floor(info.pid)
  return info
end

-- Workloads ---------------------------------------------------------------------

-- Instructions per request under callgrind, in the steady state: each program
-- runs with W1_CG_SHORT and W1_CG_LONG requests, and the difference of the
-- totals is divided by the difference of the counts.
local function callgrind_total(cmd)
  local out = TMP .. "/callgrind.out"
  os.remove(out)
  local ok = sh(("timeout 300 valgrind --tool=callgrind --callgrind-out-file=%s %s >/dev/null 2>&1")
    :format(shell_quote(out), cmd))
  local total = tonumber(read_file(out):match("\nsummary: (%d+)") or read_file(out):match("\ntotals: (%d+)"))
  os.remove(out)
  if not ok or not total then error("callgrind failed: " .. cmd, 0) end
  return total
end

local function w1_instructions(fs, url)
  log("W1: instructions per request under callgrind (%d and %d requests of each)", W1_CG_SHORT, W1_CG_LONG)
  local lua, workload_script = shell_quote(LUA), shell_quote(WORKLOAD)
  local commands = {
    imgedit = function(n) return ("%s %s w1 %s %d"):format(lua, workload_script, shell_quote(fs.url), n) end,
    core = function(n) return ("%s %s w1core %s %d"):format(lua, workload_script, shell_quote(url), n) end,
    baseline = function(n) return ("%s w1 %s %s %d"):format(shell_quote(BASELINE), shell_quote(url), KEY, n) end,
  }
  if HAVE_LUACURL then
    commands.luacurl = function(n)
      return ("%s %s %s %s %d"):format(shell_quote(LUACURL_LUA), shell_quote(LUACURL), shell_quote(url), KEY, n)
    end
  end
  local counts = {}
  for name, cmd in pairs(commands) do
    counts[name] = (callgrind_total(cmd(W1_CG_LONG)) - callgrind_total(cmd(W1_CG_SHORT)))
      / (W1_CG_LONG - W1_CG_SHORT)
  end
  return counts
end

local function w1(m)
  log("W1: %d sequential submissions, %d repeats (fast C server%s)", W1_N, REPEATS,
    PIN ~= "" and ", client and server pinned to CPU 0" or "")
  local fs = start_fastserver()
  local url = fs.url .. "/v1/images/generations"
  local runs = {imgedit = {}, core = {}, baseline = {}, multi = {}, luacurl = {}}
  local server_cpu = {}
  for _ = 1, REPEATS do
    local b = baseline({"w1", url, KEY, W1_N}, 60, true)
    local c0 = process_cpu(fs.pid)
    local i = workload({"w1", fs.url, W1_N}, 60, true)
    server_cpu[#server_cpu + 1] = (process_cpu(fs.pid) - c0) / W1_N
    local c = workload({"w1core", url, W1_N}, 60, true)
    local bm = baseline({"w1multi", url, KEY, W1_N}, 60, true)
    if HAVE_LUACURL then
      local lc = luacurl({url, KEY, W1_N}, 60, true)
      runs.luacurl[#runs.luacurl + 1] = {wall = lc.wall / W1_N, cpu = lc.cpu / W1_N}
    end
    runs.multi[#runs.multi + 1] = {wall = bm.wall / W1_N, cpu = bm.cpu / W1_N}
    runs.baseline[#runs.baseline + 1] = {wall = b.wall / W1_N, cpu = b.cpu / W1_N}
    runs.imgedit[#runs.imgedit + 1] = {wall = i.wall / W1_N, cpu = i.cpu / W1_N, peak_rss_kib = i.peak_rss_kib}
    runs.core[#runs.core + 1] = {wall = c.wall / W1_N, cpu = c.cpu / W1_N}
  end
  -- the same without pinning: the scheduler then often puts client and server
  -- on different CPUs, and each request pays for cross-CPU wake-ups
  local unpinned = {imgedit = {}, baseline = {}}
  if PIN ~= "" then
    for _ = 1, math.min(REPEATS, 3) do
      unpinned.baseline[#unpinned.baseline + 1] = baseline({"w1", url, KEY, W1_N}, 60).wall / W1_N
      unpinned.imgedit[#unpinned.imgedit + 1] = workload({"w1", fs.url, W1_N}, 60).wall / W1_N
    end
  end
  local counts = have("valgrind") and w1_instructions(fs, url) or nil
  fs.proc:close()
  local iw, bw = median(collect(runs.imgedit, "wall")), median(collect(runs.baseline, "wall"))
  local ic, bc = median(collect(runs.imgedit, "cpu")), median(collect(runs.baseline, "cpu"))
  row("W1", "wall per request", us(iw), us(bw), times(iw / bw), "≤ 1.10×", iw / bw <= 1.10)
  row("W1", "CPU per request", us(ic), us(bc), times(ic / bc), "≤ 1.40× (stretch 1.25×)", ic / bc <= 1.40)
  if counts then
    local ki, kb, kc = counts.imgedit / 1000, counts.baseline / 1000, counts.core / 1000
    row("W1", "instructions per request (callgrind)", ("%.0fK"):format(ki), ("%.0fK"):format(kb),
      times(ki / kb), "≤ 150K", ki <= 150)
    row("W1 (diag.)", "instructions per request, imgedit.core alone", ("%.0fK"):format(kc), ("%.0fK"):format(kb),
      times(kc / kb), nil, nil)
    if counts.luacurl then
      local kl = counts.luacurl / 1000
      row("W1 (peer)", "instructions per request, Debian's lua-curl (Lua 5.1)", ("%.0fK"):format(kl),
        ("%.0fK"):format(kb), times(kl / kb), nil, nil)
    end
    raw.w1_instructions = counts
    note("W1 instructions: callgrind's total for %d and for %d submissions in one process, the difference divided"
      .. " by %d (start-up and the first connection cancel out).", W1_CG_SHORT, W1_CG_LONG, W1_CG_LONG - W1_CG_SHORT)
  else
    note("W1 instructions per request not measured: valgrind is not installed")
  end
  local cw, cc = median(collect(runs.core, "wall")), median(collect(runs.core, "cpu"))
  row("W1 (diag.)", "wall per request, imgedit.core alone", us(cw), us(bw), times(cw / bw), nil, nil)
  row("W1 (diag.)", "CPU per request, imgedit.core alone", us(cc), us(bc), times(cc / bc), nil, nil)
  local mc = median(collect(runs.multi, "cpu"))
  row("W1 (diag.)", "CPU per request, C driving libcurl as the core does", nil, us(mc), times(mc / bc), nil, nil)
  if #runs.luacurl > 0 then
    local lc = median(collect(runs.luacurl, "cpu"))
    row("W1 (peer)", "CPU per request, Debian's lua-curl (Lua 5.1)", us(lc), us(bc), times(lc / bc), nil, nil)
    note("W1's peer, bench/luacurl.lua: the same POSTs through Debian's lua-curl (a thin binding of the easy"
      .. " interface, for Lua 5.1 and 5.2) on one reused handle, the body a fixed string, each response buffered;"
      .. " nothing validated, encoded or decoded.")
  else
    note("W1's peer not measured: %s with Debian's lua-curl (package lua-curl) is not installed", LUACURL_LUA)
  end
  if #unpinned.imgedit > 0 then
    local uw, ub = median(unpinned.imgedit), median(unpinned.baseline)
    row("W1 (check)", "wall per request, not pinned", us(uw), us(ub), times(uw / ub), nil, nil)
  end
  raw.w1 = {runs = runs, fastserver_cpu_per_request = server_cpu, unpinned = unpinned}

  -- the same through the emulator: how much of a request's time is the emulator's
  log("W1 check: %d submissions through the emulator, %d repeats", W1_EMU_N, math.min(REPEATS, 3))
  local emu = {imgedit = {}, baseline = {}, server_cpu = {}}
  for _ = 1, math.min(REPEATS, 3) do
    m:reset()
    local b = baseline({"w1", m.foxapi .. "/v1/images/generations", KEY, W1_EMU_N}, 60)
    local c0 = process_cpu(m.pid)
    local i = workload({"w1", m.foxapi, W1_EMU_N}, 60)
    emu.server_cpu[#emu.server_cpu + 1] = (process_cpu(m.pid) - c0) / W1_EMU_N
    emu.imgedit[#emu.imgedit + 1] = i.wall / W1_EMU_N
    emu.baseline[#emu.baseline + 1] = b.wall / W1_EMU_N
  end
  m:reset()
  raw.w1.emulator = emu
  local ew, eb = median(emu.imgedit), median(emu.baseline)
  -- /proc counts CPU in clock ticks (10 ms): the per-request figure is taken over all the runs
  local function per_request(list)
    local sum = 0
    for _, v in ipairs(list) do sum = sum + v end
    return sum / #list
  end
  local es, fsc = per_request(emu.server_cpu), per_request(server_cpu)
  row("W1 (check)", "wall per request via the emulator", us(ew), us(eb), times(ew / eb), nil, nil)
  row("W1 (check)", "server CPU per request: emulator / fast server", us(es), us(fsc), times(es / fsc), nil, nil)
  note("W1 ran against bench/fastserver.c: through the emulator the server alone costs %s of CPU per request"
    .. " (%.0f%% of the C baseline's whole request there, %s), against %s for the fast server, so the emulator would"
    .. " dominate the per-request time and hide the client's cost.", us(es), 100 * es / eb, us(eb), us(fsc))
end

local function w2(m)
  log("W2: %d foxapi edits at once (task_delay %.1f s), %d repeats", W2_N, W2_DELAY, math.min(REPEATS, 3))
  local runs = {}
  for _ = 1, math.min(REPEATS, 3) do
    m:reset()
    m:config{task_delay = W2_DELAY}
    local out = workload({"w2", m.foxapi, W2_N}, 120)
    local reqs = m:requests{listener = "api"}
    local finish = {}
    for _, t in ipairs(m:tasks()) do finish[t.id] = t.finish end
    local delays = {}
    for _, t in ipairs(out.tasks) do delays[#delays + 1] = t.noticed - finish[t.id] end
    table.sort(delays)
    runs[#runs + 1] = {wall = out.wall, cpu = out.cpu, process_cpu = out.process_cpu, requests = #reqs,
                       per_task = #reqs / W2_N,
                       peak_rss_kib = out.peak_rss_kib, notice_median = median(delays),
                       notice_max = delays[#delays]}
  end
  local wall, cpu = median(collect(runs, "wall")), median(collect(runs, "cpu"))
  local per_task = median(collect(runs, "per_task"))
  row("W2", ("wall, %d tasks of %.1f s"):format(W2_N, W2_DELAY), secs(wall), nil, nil, "≤ 1.10 s", wall <= 1.10)
  row("W2", "HTTP requests per task", ("%.2f"):format(per_task), nil, nil, "≤ 3", per_task <= 3)
  local pcpu = median(collect(runs, "process_cpu"))
  row("W2", "process CPU (of which in gather)", ("%.3f s (%.3f s)"):format(pcpu, cpu), nil, nil, "≤ 0.10 s", pcpu <= 0.10)
  local nmax = math.max(unpack(collect(runs, "notice_max")))
  row("W2", "completion noticed after (median / max)",
    ("%.3f / %.3f s"):format(median(collect(runs, "notice_median")), nmax), nil, nil, "≤ 0.5 s", nmax <= 0.5)

  log("W2: %d foxapi edits at once, peak RSS", W2_BIG_N)
  m:reset()
  m:config{task_delay = W2_DELAY}
  local big = workload({"w2", m.foxapi, W2_BIG_N}, 180)
  local big_reqs = #m:requests{listener = "api"}
  m:reset()
  row("W2", ("peak RSS, %d tasks at once"):format(W2_BIG_N), mib(big.peak_rss_kib), nil, nil, "≤ 64 MiB",
    big.peak_rss_kib <= 64 * 1024)
  row("W2", ("wall / CPU, %d tasks at once"):format(W2_BIG_N), ("%.3f / %.3f s"):format(big.wall, big.cpu),
    nil, nil, nil, nil)
  raw.w2 = {runs = runs, big = {wall = big.wall, cpu = big.cpu, peak_rss_kib = big.peak_rss_kib,
                                requests = big_reqs}}
end

local function w3(m)
  log("W3: powertokens edit, n = %d b64_json images of %d MiB, %d repeats", W3_N, math.floor(W3_BYTES / MIB), REPEATS)
  m:reset()
  m:config{image_bytes = W3_BYTES}
  local url = m.powertokens .. "/v1/images/edits"
  local idir, bdir = TMP .. "/w3-imgedit", TMP .. "/w3-baseline"
  local runs = {imgedit = {}, baseline = {}, floor = {}}
  local check
  for r = 1, REPEATS do
    -- alternate which goes first, so that a slow spell of the machine does not always hit the same one
    local b, i
    for _, which in ipairs(r % 2 == 1 and {"baseline", "imgedit"} or {"imgedit", "baseline"}) do
      if which == "baseline" then
        clean(bdir)
        b = baseline({"w3", url, KEY, bdir}, 60)
      else
        clean(idir)
        i = workload({"w3", m.powertokens, idir}, 60)
      end
    end
    local isize = 0
    for _, f in ipairs(i.files) do isize = isize + (f.bytes or 0) end
    local bsize = 0
    for k = 1, b.files do bsize = bsize + #read_file(("%s/base-%d.png"):format(bdir, k)) end
    check = check or (isize ~= bsize or #i.files ~= b.files) and ("imgedit saved %d files, %d bytes; the baseline"
      .. " %d files, %d bytes"):format(#i.files, isize, b.files, bsize)
    runs.baseline[#runs.baseline + 1] = {wall = b.wall, cpu = b.cpu, peak_rss_kib = b.maxrss_kib, bytes = b.bytes}
    runs.imgedit[#runs.imgedit + 1] = {wall = i.wall, edit_wall = i.edit_wall, cpu = i.cpu,
                                       peak_rss_kib = i.peak_rss_kib, bytes = isize}
    -- the emulator's share: the same POST, body thrown away, by the curl tool
    if have("curl") then
      local p = io.popen(("timeout 60 curl -s -o /dev/null -w '%%{time_total}' -H 'Authorization: Bearer %s' -H"
        .. " 'Content-Type: application/json' --data-binary %s %s"):format(KEY, shell_quote(W3_BODY), shell_quote(url)))
      runs.floor[#runs.floor + 1] = tonumber(p:read("*a"))
      p:close()
    end
  end
  clean(idir)
  clean(bdir)
  m:reset()
  raw.w3 = runs
  local response = runs.baseline[1].bytes
  local iw, bw = median(collect(runs.imgedit, "wall")), median(collect(runs.baseline, "wall"))
  local ir, br = median(collect(runs.imgedit, "peak_rss_kib")), median(collect(runs.baseline, "peak_rss_kib"))
  local rk = response / 1024
  row("W3", "wall (edit + save_all)", secs(iw), secs(bw), times(iw / bw), "≤ 1.2×", iw / bw <= 1.2)
  row("W3", ("peak RSS (response %.1f MiB)"):format(rk / 1024), mib(ir), mib(br), times(ir / br), nil, nil)
  row("W3", "peak RSS / response size", times(ir / rk), times(br / rk), nil, "≤ 1.5×", ir / rk <= 1.5)
  if #runs.floor > 0 then
    row("W3 (check)", "emulator alone: curl POST to /dev/null", nil, secs(median(runs.floor)) .. " (curl)", nil, nil, nil)
  end
  note("W3 wall, min / median / max of %d: imgedit %s (the edit alone, before saving: %s), baseline %s.", REPEATS,
    spread(collect(runs.imgedit, "wall")), spread(collect(runs.imgedit, "edit_wall")), spread(collect(runs.baseline, "wall")))
  if check then
    row("W3", "saved files agree with the baseline", "no", nil, nil, "same files", false)
    note("W3: %s.", check)
  end
end

-- The URL of a new foxapi result on the emulator's CDN (its size: the emulator's image_bytes).
local function result_url(m)
  local fox = assert(imgedit.client("foxapi", {api_key = KEY, base_url = m.foxapi}))
  local result, err = fox:edit{prompt = "a cat in a hat", images = {"https://example.com/p.jpg"}, timeout = 60}
  if not result then error("cannot make a result for W4: " .. tostring(err), 0) end
  return result.images[1].url
end

local function w4(m)
  local repeats = math.max(REPEATS, W4_MIN_REPEATS)
  log("W4: one %d MiB result saved from the emulator's CDN, %d repeats", math.floor(W4_BYTES / MIB), repeats)
  m:reset()
  m:config{image_bytes = W4_BYTES, task_delay = 0}
  local dir = TMP .. "/w4"
  local runs = {imgedit = {}, baseline = {}, curl = {}, floor = {}}
  local check
  local curl = have("curl")
  for r = 1, repeats do
    -- the baseline and curl fetch a result of another task of the same size (the imgedit
    -- workload makes its own); the order alternates; each save starts on an empty directory
    local url = result_url(m)
    local b, i
    for _, which in ipairs(r % 2 == 1 and {"baseline", "imgedit"} or {"imgedit", "baseline"}) do
      clean(dir)
      sync()
      if which == "baseline" then
        b = baseline({"w4", url, dir .. "/baseline.png"}, 120)
      else
        i = workload({"w4", m.foxapi, dir .. "/imgedit.png"}, 120)
      end
    end
    if i.bytes ~= b.bytes then
      check = check or ("imgedit saved %s bytes, the baseline %s"):format(tostring(i.bytes), tostring(b.bytes))
    end
    runs.imgedit[#runs.imgedit + 1] = {wall = i.wall, cpu = i.cpu, peak_rss_kib = i.peak_rss_kib, bytes = i.bytes}
    runs.baseline[#runs.baseline + 1] = {wall = b.wall, cpu = b.cpu, peak_rss_kib = b.maxrss_kib, bytes = b.bytes}
    if curl then
      clean(dir)
      sync()
      local p = io.popen(("timeout 120 curl -s -o %s -w '%%{time_total}' %s"):format(shell_quote(dir .. "/curl.png"),
        shell_quote(url)))
      runs.curl[#runs.curl + 1] = tonumber(p:read("*a"))
      p:close()
      p = io.popen(("timeout 120 curl -s -o /dev/null -w '%%{time_total}' %s"):format(shell_quote(url)))
      runs.floor[#runs.floor + 1] = tonumber(p:read("*a"))
      p:close()
    end
  end
  clean(dir)
  m:reset()
  raw.w4 = runs
  local iw, bw = median(collect(runs.imgedit, "wall")), median(collect(runs.baseline, "wall"))
  local ir, br = median(collect(runs.imgedit, "peak_rss_kib")), median(collect(runs.baseline, "peak_rss_kib"))
  row("W4", "wall, image:save", secs(iw), secs(bw), times(iw / bw), "< 1.00× (faster)", iw < bw)
  if #runs.curl > 0 then
    local cw = median(runs.curl)
    row("W4", "wall: imgedit / curl -o", secs(iw), secs(cw) .. " (curl)", times(iw / cw), nil, nil)
    row("W4 (check)", "curl -o / the C baseline", secs(cw) .. " (curl)", secs(bw), times(cw / bw), nil, nil)
    row("W4 (check)", "emulator alone: curl -o /dev/null", nil, secs(median(runs.floor)) .. " (curl)", nil, nil, nil)
  end
  row("W4", "peak RSS", mib(ir), mib(br), times(ir / br), "< 16 MiB", ir < 16 * 1024)
  note("W4 wall, min / median / max of %d: imgedit %s, baseline %s%s.", repeats, spread(collect(runs.imgedit, "wall")),
    spread(collect(runs.baseline, "wall")), #runs.curl > 0 and (", curl -o " .. spread(runs.curl)) or "")
  if check then
    row("W4", "saved file agrees with the baseline", "no", nil, nil, "same file", false)
    note("W4: %s.", check)
  end
end

local function polling(m)
  log("polling: tasks of %s s at once (about %d s)", table.concat(POLL_DURATIONS, ", "),
    math.max(unpack(POLL_DURATIONS)))
  m:reset()
  local args = {"poll", m.api, m.foxapi}
  for _, d in ipairs(POLL_DURATIONS) do args[#args + 1] = d end
  local out = workload(args, math.max(unpack(POLL_DURATIONS)) * 2 + 60)
  local by_id = {}
  for _, t in ipairs(m:tasks()) do by_id[t.id] = t end
  m:reset()
  raw.polling = {}
  for _, entry in ipairs(out.tasks) do
    local t = by_id[entry.id]
    local d = entry.duration
    local noticed = entry.noticed - t.finish
    local after5 = 0
    for _, pt in ipairs(t.poll_times) do
      if pt - t.start > 5 then after5 = after5 + 1 end
    end
    local limit = math.max(0.5, 0.1 * d)
    row("polling", ("%g s task: completion noticed after"):format(d), secs(noticed), nil, nil,
      ("≤ %.1f s"):format(limit), noticed <= limit)
    if d > 5 then
      local rate = after5 / (d - 5)
      row("polling", ("%g s task: polls (after its first 5 s)"):format(d), ("%d (%d): %.2f/s"):format(t.polls, after5, rate),
        nil, nil, "≤ 1/s after 5 s", rate <= 1)
    else
      row("polling", ("%g s task: polls (after its first 5 s)"):format(d), ("%d (%d)"):format(t.polls, after5),
        nil, nil, nil, nil)
    end
    local offsets = {}
    for k, pt in ipairs(t.poll_times) do offsets[k] = ("%.2f"):format(pt - t.start) end
    raw.polling[#raw.polling + 1] = {duration = d, noticed_after = noticed, polls = t.polls, polls_after_5 = after5,
                                     poll_offsets = offsets}
    note("polling, %g s task: polled at %s s after its creation.", d, table.concat(offsets, ", "))
  end
end

-- OpenResty (issue 12, item 5): bench/openresty.lua runs nginx and its own
-- emulator (pinned apart from nginx's worker, which the suite's emulator
-- must not be for the later workloads), one cell per provider, N and client.
local function pct(x) return x and ("%.1f %%"):format(100 * x) end
local function ms(x) return x and ("%.1f ms"):format(1000 * x) or "—" end

local function or_cells(out)
  local by = {}
  for _, c in ipairs(out.cells) do
    by[c.provider] = by[c.provider] or {}
    by[c.provider][c.n] = by[c.provider][c.n] or {}
    by[c.provider][c.n][c.client] = c
  end
  return by
end

local function openresty_workload()
  log("OpenResty: one nginx worker, N = %s slow edits of each provider (answers %g s late), imgedit and a cosocket"
    .. " client; about 2-3 min", OR_NS, OR_DELAY)
  local cmd = ("%s %s %s %s %d %s"):format(shell_quote(LUA), shell_quote(OPENRESTY), OR_DELAY, OR_WINDOW, OR_QUICK,
    shell_quote(OR_NS))
  local out = run_json(cmd, 900, true)
  raw.openresty = out
  or_title = ("OpenResty (issue 12): one nginx worker, imgedit's runtime \"%s\"; N edits at once, answered %g s"
    .. " late; a %g s window while they wait, %d quick requests in it; %s"):format(out.cells[1] and
    out.cells[1].runtime or "?", out.delay, out.window, out.quick, out.pinned and
    "the worker alone on CPU 1, the emulator and the client on CPU 0" or "no CPU pinning")
  note("OpenResty: each window opens once the emulator has received all N submissions, or %.1f s after they were"
    .. " sent if it has not (then \"waiting\" gives how many it had when the window opened and when it closed); it"
    .. " closes %g s later, or earlier so that no answer is due yet.", out.give_up, out.window)
  for _, c in ipairs(out.cells) do
    local waiting = ("%d"):format(c.n)
    if c.waiting_at_start < c.n then
      waiting = ("%d-%d of %d"):format(c.waiting_at_start, c.waiting_at_end, c.n)
    end
    local q, l = c.quick, c.lateness
    or_rows[#or_rows + 1] = {
      c.provider, ("%d"):format(c.n), c.client, waiting, pct(c.worker_cpu), pct(c.emulator_cpu), ("%d"):format(q.n),
      q.n > 0 and ("%.1f / %.1f / %.1f ms"):format(1000 * q.median, 1000 * q.p99, 1000 * q.max) or "—",
      l.n > 0 and ("%.0f / %.0f ms"):format(1000 * l.median, 1000 * l.max) or "—",
      ("%d/%d"):format(c.ok, c.n),
    }
    if c.failures > 0 then
      note("OpenResty %s N=%d %s: %d edits failed; the first: %s", c.provider, c.n, c.client, c.failures,
        tostring(c.first_failure))
    end
    if c.nginx_errors > 0 then
      note("OpenResty %s N=%d %s: %d errors in nginx's log; the first: %s", c.provider, c.n, c.client,
        c.nginx_errors, tostring(c.first_nginx_error))
    end
    if c.window < 0.9 * out.window then
      note("OpenResty %s N=%d %s: the window lasted %.2f s only (the submissions took until the answers were near)",
        c.provider, c.n, c.client, c.window)
    end
    -- the runtime's counters, whatever it calls them: their growth over the cell
    local keys = {}
    for k in pairs(c.counters or {}) do keys[#keys + 1] = k end
    table.sort(keys)
    if c.client == "imgedit" and #keys > 0 then
      local parts = {}
      for i, k in ipairs(keys) do
        local v = c.counters[k]
        parts[i] = type(v) == "number" and ("%s +%s"):format(k, ("%.10g"):format(v)) or ("%s = %s"):format(k, tostring(v))
      end
      note("OpenResty %s N=%d imgedit: the runtime's stats, growth over the cell (%.1f s): %s", c.provider, c.n,
        c.cell_seconds, table.concat(parts, ", "))
    end
  end

  -- the issue's targets, at N = 500 (and from N = 50 to 500 for flatness)
  local by = or_cells(out)
  for _, provider in ipairs({"powertokens", "foxapi"}) do
    local at = by[provider] or {}
    local top, fifty = at[500], at[50]
    if top and top.imgedit and top.cosocket then
      local i, b = top.imgedit, top.cosocket
      local label = provider .. " N=500: "
      if i.waiting_at_start < i.n then
        row("OpenResty", label .. "edits waiting in the window (opened-closed)", ("%d-%d"):format(i.waiting_at_start,
          i.waiting_at_end), ("%d (cosocket)"):format(b.waiting_at_start), nil, "all 500", false)
      end
      local limit = 2 * b.worker_cpu + 0.02
      row("OpenResty", label .. "worker CPU during the wait", pct(i.worker_cpu), pct(b.worker_cpu) .. " (cosocket)",
        b.worker_cpu > 0 and times(i.worker_cpu / b.worker_cpu) or nil,
        ("≤ 2× cosocket + 2 %% (%s)"):format(pct(limit)), i.worker_cpu <= limit)
      row("OpenResty", label .. "quick request p99", ms(i.quick.p99), ms(b.quick.p99) .. " (cosocket)", nil,
        "≤ 10 ms", i.quick.p99 ~= nil and i.quick.p99 <= 0.010)
      row("OpenResty", label .. "each edit answered after the server's answer (max)", ms(i.lateness.max),
        ms(b.lateness.max) .. " (cosocket)", nil, "≤ 50 ms", i.ok == i.n and i.lateness.max ~= nil
        and i.lateness.max <= 0.050)
      if fifty and fifty.imgedit then
        local r = i.worker_cpu / math.max(fifty.imgedit.worker_cpu, 1e-9)
        row("OpenResty", provider .. ": worker CPU, N=500 / N=50", ("%s / %s"):format(pct(i.worker_cpu),
          pct(fifty.imgedit.worker_cpu)), nil, times(r), "0.50-1.50× (flat ±50 %)", r >= 0.5 and r <= 1.5)
      end
    end
  end
  note("OpenResty: worker CPU is the worker's time on a CPU (/proc/PID/schedstat) over the window, as a share of"
    .. " one core; quick requests go one at a time on one keep-alive connection, one every %g s (p99 interpolated"
    .. " between the closest ranks); an edit's lateness is when its answer reached the bench client minus when the"
    .. " emulator wrote the answer it waited for (the powertokens answer; the poll answer saying \"completed\"),"
    .. " both on the machine's wall clock. The cosocket client polls foxapi every 0.5 s, as imgedit does until a"
    .. " task is near its estimated end.", out.window / out.quick)
end

-- Main ----------------------------------------------------------------------------

local function main()
  for _, path in ipairs({BASELINE, FASTSERVER}) do
    if not io.open(path, "rb") then error(path .. " is missing: run `make bench`", 0) end
  end
  sh("mkdir -p " .. shell_quote(TMP))
  local m = mock.start{}
  log("emulator: %s (pid %d); %s", m.api, m.pid, PIN ~= "" and "W1 pinned to CPU 0" or "no pinning")
  local steps = {}
  local only = os.getenv("BENCH_ONLY")
  -- {name, function, seconds it may take past the budget's check}: a long
  -- workload is not started when it would end past the budget
  for _, step in ipairs({{"w1", w1}, {"w2", w2}, {"w3", w3}, {"w4", w4}, {"polling", polling},
                         {"openresty", openresty_workload, 180}}) do
    local wanted = not only or ("," .. only .. ","):find("," .. step[1] .. ",", 1, true)
    if wanted and not (step[1] == "polling" and os.getenv("BENCH_SKIP_POLL") == "1") then
      steps[#steps + 1] = step
    end
  end
  local ok = true
  for _, step in ipairs(steps) do
    if socket.gettime() - started > BUDGET - (step[3] or 0) then
      note("skipped a workload (%s and after): the suite's time budget (%d s) was spent", step[1], BUDGET)
      break
    end
    local problem
    ok, problem = pcall(step[2], m)
    if not ok then
      note("a workload failed: %s", tostring(problem))
      log("FAILED: %s", tostring(problem))
      break
    end
  end
  m:stop()
  sh("rm -rf " .. shell_quote(TMP))

  local date = os.date("!%Y-%m-%d %H:%M UTC")
  local header = ("imgedit benchmarks, %s; %d repeats (median); %s; total %.0f s"):format(date, REPEATS,
    PIN ~= "" and "W1 client and server pinned to CPU 0" or "no CPU pinning", socket.gettime() - started)
  print(header)
  print_table(io.stdout)
  if #or_rows > 0 then
    print("\n" .. or_title)
    print_rows(io.stdout, OR_HEADER, or_rows)
  end
  for _, n in ipairs(notes) do print("- " .. n) end
  local md = assert(io.open(BUILD .. "/results.md", "w"))
  md:write(header, "\n\n")
  print_table(md)
  md:write("\n")
  if #or_rows > 0 then
    md:write(or_title, "\n\n")
    print_rows(md, OR_HEADER, or_rows)
    md:write("\n")
  end
  for _, n in ipairs(notes) do md:write("- ", n, "\n") end
  md:close()
  local js = assert(io.open(BUILD .. "/results.json", "w"))
  js:write(cjson.encode({date = date, repeats = REPEATS, pinned = PIN ~= "", rows = rows, raw = raw, notes = notes}), "\n")
  js:close()
  if not ok then os.exit(1) end
end

main()
