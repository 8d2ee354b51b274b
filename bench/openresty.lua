-- The OpenResty workload of `make bench` (issue 12, item 5), in a process of
-- its own; bench/run.lua starts it and prints its tables.
--
--   lua bench/openresty.lua [DELAY [WINDOW [QUICK [NS [PROVIDERS]]]]]
--   (defaults 5 2.5 50 1,50,200,500 powertokens,foxapi)
--
-- One nginx (Debian's, with its Lua module; one worker) per cell, so that
-- every cell starts from an empty worker and connection pool. A cell is a
-- provider, N and a client: imgedit (bench/openresty_handler.lua, the ngx
-- runtime of this checkout) or the plain cosocket client of the same
-- handler file. For each cell:
--
--   1. N slow edits at once from this process, one connection each: the
--      emulator answers a powertokens edit DELAY seconds after it came (the
--      "slow" fault), or ends a foxapi task DELAY seconds after its creation
--      (task_delay), which both clients poll;
--   2. once the emulator has seen all N submissions (or GIVE_UP seconds
--      after they were sent: a runtime that cannot put them on the wire in
--      time is measured with those it could, and the cell says how many),
--      a window of WINDOW seconds (cut short before the first answer is
--      due): the worker's CPU over it, as a share of one core, and QUICK
--      requests of /quick at a fixed pace (one every WINDOW / QUICK
--      seconds, or right after the previous one when that was slower), one
--      keep-alive connection;
--   3. every edit's lateness: when its answer reached this process, minus
--      when the emulator wrote the server's answer it waited for (the
--      powertokens answer; the poll answer that said "completed").
--
-- Clocks: this process, the emulator and nginx each read the machine's wall
-- clock (gettimeofday: socket.gettime, ngx.now); the emulator's request log
-- counts from its own start, which GET /_mock/clock gives on that clock.
-- ngx.now has a resolution of 1 ms, so the lateness the handler saw itself
-- (kept in the JSON) can be up to 1 ms below zero.
-- CPU: the worker's time on a CPU from /proc/PID/schedstat (nanoseconds);
-- utime + stime of /proc/PID/stat (clock ticks, 10 ms) is kept as a check
-- (they differ if the worker has threads: schedstat counts the main one).
--
-- With BENCH_PIN not 0 and two CPUs or more, the nginx worker runs alone
-- on CPU 1 and the emulator and this process on CPU 0 (taskset), so that
-- neither the emulator's nor the client's work is taken from the worker.
--
-- Prints one JSON line: {delay, window, quick, give_up, pinned, cpus, cells = [...]}.

local cjson = require("cjson")
local socket = require("socket")
local mock = require("imgedit.mock.process")
local openresty = require("spec.support.openresty")
local read_file = require("spec.helpers").read

local DELAY = tonumber(arg[1]) or 5
local WINDOW = tonumber(arg[2]) or 2.5
local QUICK = math.floor(tonumber(arg[3]) or 50)
local NS, PROVIDERS = {}, {}
for n in (arg[4] or "1,50,200,500"):gmatch("%d+") do NS[#NS + 1] = tonumber(n) end
for p in (arg[5] or "powertokens,foxapi"):gmatch("%a+") do PROVIDERS[#PROVIDERS + 1] = p end
local CLIENTS = {"cosocket", "imgedit"}

local KEY = "sk-test"
local SUBMIT = {powertokens = "/powertokens/v1/images/edits", foxapi = "/foxapi/v1/images/generations"}
-- the window ends this long before the first answer is due (the emulator's
-- timers run a little late, never early)
local MARGIN = 0.3
-- this process watches its sockets with select(), which takes descriptors
-- below 1024 only; the emulator accepts 900 connections
local MAX_N = 800
local CONNECT_TIMEOUT = 5
-- seconds after sending the edits when the window opens even if the emulator
-- has not received them all: a whole window still fits before the first answer
local GIVE_UP = math.max(0.5, DELAY - WINDOW - MARGIN - 0.1)
-- seconds past DELAY an edit may take before the cell gives up on it (the
-- ngx runtime of 2026-12 needed 43 s to put 500 powertokens edits on the wire)
local ANSWER_GRACE = 90

local started = socket.gettime()

local function log(fmt, ...)
  io.stderr:write(("[openresty %6.1fs] "):format(socket.gettime() - started), fmt:format(...), "\n")
end

local function command(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  local out = p:read("*a")
  p:close()
  return out
end

local CLK_TCK = tonumber(command("getconf CLK_TCK")) or 100
local NCPU = tonumber(command("nproc")) or 1
local PIN = os.getenv("BENCH_PIN") ~= "0" and NCPU >= 2 and command("command -v taskset") ~= ""

local function pin(pid, cpu)
  if PIN then os.execute(("taskset -a -p -c %d %d >/dev/null 2>&1"):format(cpu, pid)) end
end

-- CPU seconds of a process: {run = schedstat's time on a CPU, ticks =
-- utime + stime}; nil when it is gone.
local function cpu(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  local rest = stat and stat:match("%) (.*)$")
  if not rest then return nil end
  local fields = {}
  for x in rest:gmatch("%S+") do fields[#fields + 1] = x end
  local ticks = (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK
  local sched = tonumber((read_file("/proc/" .. pid .. "/schedstat") or ""):match("^(%d+)"))
  return {run = sched and sched / 1e9 or ticks, ticks = ticks}
end

local function cpu_share(pid, a, b, seconds)
  local c = cpu(pid)
  return c, a and b and {run = (b.run - a.run) / seconds, ticks = (b.ticks - a.ticks) / seconds}
end

-- Sorted copy; the median; the p-th percentile by linear interpolation
-- between the closest ranks (of 50 samples, p99 lies between the two largest).
local function sorted(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  return t
end

local function percentile(list, p)
  local t = sorted(list)
  if #t == 0 then return nil end
  local pos = 1 + (#t - 1) * p
  local lo = math.floor(pos)
  local hi = math.min(lo + 1, #t)
  return t[lo] + (t[hi] - t[lo]) * (pos - lo)
end

local function summary(list)
  if #list == 0 then return {n = 0} end
  local t = sorted(list)
  return {n = #t, median = percentile(t, 0.5), p99 = percentile(t, 0.99), max = t[#t], min = t[1]}
end

-- HTTP client: non-blocking sockets, one select loop ---------------------------

-- A request on a connection of its own or on the keep-alive quick one:
-- {sock, sent, done, status, body, buf}.
local function parse(r)
  local buf = table.concat(r.parts)
  local head_end = buf:find("\r\n\r\n", 1, true)
  if not head_end then return false end
  local head = buf:sub(1, head_end + 1):lower()
  local length = tonumber(head:match("\r\ncontent%-length:%s*(%d+)")) or 0
  if #buf - head_end - 3 < length then return false end
  r.status = tonumber(buf:match("^HTTP/1%.%d (%d%d%d)"))
  r.body = buf:sub(head_end + 4, head_end + 3 + length)
  r.parts = {}
  return true
end

local Loop = {}
Loop.__index = Loop

local function new_loop()
  return setmetatable({list = {}, index = {}, by_sock = {}}, Loop)
end

function Loop:watch(r)
  if self.index[r.sock] then return end
  self.list[#self.list + 1] = r.sock
  self.index[r.sock] = #self.list
  self.by_sock[r.sock] = r
end

function Loop:unwatch(r)
  local i = self.index[r.sock]
  if not i then return end
  local last = self.list[#self.list]
  self.list[i] = last
  self.index[last] = i
  self.list[#self.list] = nil
  self.index[r.sock], self.by_sock[r.sock] = nil, nil
end

--- Waits up to `timeout` for answers; completes every request whose answer
-- is in (its `done`: the time it was read).
function Loop:pump(timeout)
  if #self.list == 0 then
    if timeout > 0 then socket.sleep(timeout) end
    return
  end
  local readable = socket.select(self.list, nil, timeout)
  local now = socket.gettime()
  for _, s in ipairs(readable) do
    local r = self.by_sock[s]
    local data, err, partial = s:receive(65536)
    local got = data or partial
    if got and #got > 0 then r.parts[#r.parts + 1] = got end
    if parse(r) then
      r.done = now
      self:unwatch(r)
      if not r.keep then s:close() end
    elseif err and err ~= "timeout" then
      r.done, r.status, r.body = now, nil, "connection " .. err
      self:unwatch(r)
      s:close()
    end
  end
end

local function connect(port)
  local s = assert(socket.tcp())
  s:settimeout(CONNECT_TIMEOUT)
  local ok, err = s:connect("127.0.0.1", port)
  if not ok then error("connect to nginx: " .. tostring(err), 0) end
  s:setoption("tcp-nodelay", true)
  return s
end

local function send(loop, r, path)
  r.parts, r.done, r.status, r.body = {}, nil, nil, nil
  r.sock:settimeout(CONNECT_TIMEOUT)
  r.sent = socket.gettime()
  local ok, err = r.sock:send(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n")
    :format(path, r.keep and "" or "Connection: close\r\n"))
  if not ok then error("send to nginx: " .. tostring(err), 0) end
  r.sock:settimeout(0)
  loop:watch(r)
end

-- One request on the keep-alive connection, waited for (setup and checks).
local function fetch(loop, quick, path, seconds)
  send(loop, quick, path)
  local deadline = socket.gettime() + (seconds or 30)
  while not quick.done do
    if socket.gettime() > deadline then error(path .. ": no answer within " .. (seconds or 30) .. " s", 0) end
    loop:pump(0.05)
  end
  return quick.status, quick.body
end

-- nginx -----------------------------------------------------------------------

-- core: the directory of the imgedit/core.so that nginx's LuaJIT loads.
local function nginx_conf(core)
  return table.concat({
    openresty.load_modules(),
    "worker_processes 1;\n",
    -- N client connections plus N upstream cosockets (curl's own sockets are
    -- no nginx connections, but are descriptors of the worker too)
    "worker_rlimit_nofile 8192;\n",
    "error_log DIR/error.log warn;\n",
    "pid DIR/nginx.pid;\n",
    "env BENCH_KEY;\nenv BENCH_POWERTOKENS;\nenv BENCH_FOXAPI;\n",
    "events {\n  worker_connections 4096;\n}\n",
    "http {\n",
    -- logging each request would be the worker's largest cost for /quick
    "  access_log off;\n",
    "  client_body_temp_path DIR/tmp/client_body;\n",
    "  proxy_temp_path DIR/tmp/proxy;\n",
    "  fastcgi_temp_path DIR/tmp/fastcgi;\n",
    "  uwsgi_temp_path DIR/tmp/uwsgi;\n",
    "  scgi_temp_path DIR/tmp/scgi;\n",
    "  keepalive_requests 100000;\n",
    '  lua_package_path "ROOT/lua/?.lua;ROOT/lua/?/init.lua;ROOT/bench/?.lua;;";\n',
    '  lua_package_cpath "' .. core .. '/?.so;;";\n',
    "  server {\n",
    -- all N connections of a cell arrive at once
    "    listen 127.0.0.1:PORT backlog=4096;\n",
    '    location = /quick { content_by_lua_block { require("openresty_handler").quick() } }\n',
    '    location = /stats { content_by_lua_block { require("openresty_handler").stats() } }\n',
    '    location /imgedit/ { content_by_lua_block { require("openresty_handler").imgedit() } }\n',
    '    location /cosocket/ { content_by_lua_block { require("openresty_handler").cosocket() } }\n',
    "  }\n",
    "}\n",
  })
end

-- Errors, alerts and worse in nginx's log: the count and the first line.
local function log_problems(web)
  local count, first = 0, nil
  for line in web:error_log():gmatch("[^\n]+") do
    if line:find("%[error%]") or line:find("%[alert%]") or line:find("%[crit%]") or line:find("%[emerg%]") then
      count = count + 1
      first = first or line
    end
  end
  return count, first
end

local function counters_delta(before, after)
  local out = {}
  for k, v in pairs(after or {}) do
    local b = (before or {})[k]
    if type(v) == "number" and type(b) == "number" then out[k] = v - b else out[k] = v end
  end
  return out
end

-- One cell ------------------------------------------------------------------------

local function cell(m, clock_start, conf, provider, n, client)
  m:reset()
  if provider == "powertokens" then
    m:faults{{kind = "slow", seconds = DELAY, times = n, method = "POST", path = SUBMIT.powertokens}}
  else
    m:config{task_delay = DELAY}
  end
  local web = openresty.start{conf = conf, env = {BENCH_KEY = KEY, BENCH_POWERTOKENS = m.powertokens,
                                                  BENCH_FOXAPI = m.foxapi}}
  local ok, result = pcall(function()
    local loop = new_loop()
    local quick = {sock = connect(web.port), keep = true}
    local status, body = fetch(loop, quick, "/stats")
    if status ~= 200 then error("/stats: HTTP " .. tostring(status) .. " " .. tostring(body), 0) end
    local before = cjson.decode(body)
    local worker = math.floor(before.pid)
    pin(worker, 1)
    for _ = 1, 5 do fetch(loop, quick, "/quick") end

    -- 1. N slow edits, each on a connection of its own
    local slow = {}
    local t_send = socket.gettime()
    for i = 1, n do
      slow[i] = {sock = connect(web.port), tag = i}
      send(loop, slow[i], ("/%s/%s?tag=%d"):format(client, provider, i))
    end
    -- until the emulator has seen them all, or until a whole window still
    -- fits before the first answer is due (a runtime that cannot put N
    -- edits on the wire in time is measured with fewer waiting: the table
    -- says how many)
    local seen, first_receipt = 0, nil
    local give_up = t_send + GIVE_UP
    while socket.gettime() < give_up do
      local subs = m:requests{method = "POST", path = SUBMIT[provider]}
      seen = #subs
      for _, r in ipairs(subs) do
        local t = clock_start + r.time
        if not first_receipt or t < first_receipt then first_receipt = t end
      end
      if seen >= n then break end
      loop:pump(0.05)
    end
    local t_seen = socket.gettime()

    -- 2. the window: the worker's CPU, quick requests at a fixed pace
    local t0 = socket.gettime()
    local t_end = math.min(t0 + WINDOW, (first_receipt or t_send) + DELAY - MARGIN)
    local w0, e0 = cpu(worker), cpu(m.pid)
    local pace = WINDOW / QUICK
    local next_slot, latencies, in_flight, w1, e1, closed_at = t0, {}, false, nil, nil, nil
    local quick_deadline = t_end + DELAY + ANSWER_GRACE
    while true do
      local now = socket.gettime()
      if in_flight and quick.done then
        latencies[#latencies + 1] = quick.done - quick.sent
        if quick.status ~= 200 then error("/quick: HTTP " .. tostring(quick.status), 0) end
        in_flight = false
      end
      if not w1 and now >= t_end then
        w1, e1, closed_at = cpu(worker), cpu(m.pid), now
      end
      if not in_flight and now < t_end and now >= next_slot then
        send(loop, quick, "/quick")
        in_flight = true
        next_slot = math.max(next_slot + pace, now)
      end
      if w1 and not in_flight then break end
      if now > quick_deadline then error("a quick request had no answer after " .. ANSWER_GRACE .. " s", 0) end
      local wake = in_flight and 0.05 or math.max(0, math.min(next_slot, t_end) - socket.gettime())
      loop:pump(math.min(wake, 0.05))
    end
    -- a window cut to nothing (the submissions took until the answers were
    -- due) still gives a figure, flagged by its length
    local seconds = math.max(closed_at - t0, 0.001)
    local _, worker_cpu = cpu_share(worker, w0, w1, seconds)
    local _, emulator_cpu = cpu_share(m.pid, e0, e1, seconds)

    -- 3. every answer, then when the emulator wrote the one it waited for
    local deadline = t_send + DELAY + ANSWER_GRACE
    local pending = n
    while pending > 0 and socket.gettime() < deadline do
      loop:pump(0.1)
      pending = 0
      for _, r in ipairs(slow) do
        if not r.done then pending = pending + 1 end
      end
    end
    local t_last = socket.gettime()
    status, body = fetch(loop, quick, "/stats")
    local after = status == 200 and cjson.decode(body) or {}
    quick.sock:close()

    local answered = {} -- tag or task id -> when the emulator wrote that answer (its clock)
    local waiting_at_start, waiting_at_end = 0, 0 -- submissions received by then
    for _, r in ipairs(m:requests{listener = "api"}) do
      if r.method == "POST" and r.path == SUBMIT[provider] then
        if clock_start + r.time <= t0 then waiting_at_start = waiting_at_start + 1 end
        if clock_start + r.time <= closed_at then waiting_at_end = waiting_at_end + 1 end
      end
      if r.answered then
        local at = clock_start + r.answered
        local tag = r.method == "POST" and r.body:match('"bench%-(%d+)"')
        local id = r.method == "GET" and r.path:match("^/foxapi/v1/tasks/(.+)$")
        local key = provider == "powertokens" and tag or id
        if key and (not answered[key] or at > answered[key]) then answered[key] = at end
      end
    end
    local late, late_handler, failures, first_failure = {}, {}, 0, nil
    for _, r in ipairs(slow) do
      local value = r.status == 200 and cjson.decode(r.body) or nil
      if not (value and value.ok) then
        failures = failures + 1
        first_failure = first_failure or ("HTTP %s: %s"):format(tostring(r.status), tostring(r.body or "no answer"))
      else
        local at = answered[provider == "powertokens" and tostring(value.tag) or value.id]
        if at then
          late[#late + 1] = r.done - at
          late_handler[#late_handler + 1] = value.done - at
        else
          failures = failures + 1
          first_failure = first_failure or ("no emulator answer found for tag %s"):format(tostring(value.tag))
        end
      end
    end
    for _, r in ipairs(slow) do
      if not r.done then r.sock:close() end
    end
    local problems, first_problem = log_problems(web)
    return {
      provider = provider, n = n, client = client, runtime = before.runtime,
      seen = seen, submitted_in = t_seen - t_send, window = seconds,
      waiting_at_start = waiting_at_start, waiting_at_end = waiting_at_end,
      worker_cpu = worker_cpu.run, worker_cpu_ticks = worker_cpu.ticks,
      emulator_cpu = emulator_cpu.run,
      quick = summary(latencies), quick_samples = latencies,
      lateness = summary(late), lateness_in_handler = summary(late_handler),
      ok = n - failures, failures = failures, first_failure = first_failure,
      counters = counters_delta(before.stats, after.stats), cell_seconds = t_last - t_send,
      nginx_errors = problems, first_nginx_error = first_problem,
    }
  end)
  web:stop()
  if not ok then error(("%s N=%d %s: %s"):format(provider, n, client, tostring(result)), 0) end
  return result
end

local function main()
  for _, n in ipairs(NS) do
    if n < 1 or n > MAX_N then error(("N = %d: between 1 and %d"):format(n, MAX_N), 0) end
  end
  -- the core nginx's LuaJIT loads (make bench builds it; made here if
  -- missing), where the specs' helper keeps it
  local conf = nginx_conf((openresty.luajit_core():match("^(.*)/imgedit/core%.so$")))
  local m = mock.start{}
  local own = tonumber((read_file("/proc/self/stat") or ""):match("^(%d+)"))
  pin(m.pid, 0)
  if own then pin(own, 0) end
  local clock_start = m:clock().start
  log("delay %g s, window %g s, %d quick requests, N = %s, %s", DELAY, WINDOW, QUICK, table.concat(NS, ", "),
    PIN and "nginx's worker on CPU 1, the emulator and the client on CPU 0" or "no pinning")
  local cells = {}
  local ok, err = pcall(function()
    for _, provider in ipairs(PROVIDERS) do
      for _, n in ipairs(NS) do
        for _, client in ipairs(CLIENTS) do
          local c = cell(m, clock_start, conf, provider, n, client)
          cells[#cells + 1] = c
          log("%-11s N=%-3d %-8s CPU %5.1f%%  quick %d: median %.1f ms, max %.1f ms; late median %s ms, max %s ms;"
            .. " %d/%d ok", provider, n, client, 100 * c.worker_cpu, c.quick.n, 1000 * (c.quick.median or 0),
            1000 * (c.quick.max or 0), c.lateness.median and ("%.0f"):format(1000 * c.lateness.median) or "-",
            c.lateness.max and ("%.0f"):format(1000 * c.lateness.max) or "-", c.ok, n)
        end
      end
    end
  end)
  m:stop()
  if not ok then
    io.stderr:write("openresty: ", tostring(err), "\n")
    os.exit(1)
  end
  io.stdout:write(cjson.encode({delay = DELAY, window = WINDOW, quick = QUICK, give_up = GIVE_UP,
                                pinned = PIN and true or false, cpus = NCPU, cells = cells}), "\n")
end

main()
