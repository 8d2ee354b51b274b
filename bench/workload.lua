-- One benchmark workload of imgedit, in a process of its own (so that the
-- peak RSS, VmHWM, is this workload's alone). bench/run.lua starts it.
--
--   lua bench/workload.lua MODE ARGS...
--
--   w1     BASE N           N sequential foxapi client:submit calls
--   w1core URL N            the same POST N times through imgedit.core alone
--                           (multi:add, perform, poll, result): a diagnostic
--   w2     BASE N           imgedit.gather of N fox:edit calls (the emulator's
--                           task_delay is set by the caller)
--   w3     BASE DIR         one powertokens edit, n = 4, b64_json; result:save_all(DIR)
--   w4     BASE PATH        one foxapi edit (setup, not timed), then image:save(PATH)
--   poll   API BASE D1 D2.. one foxapi task per duration (set through the
--                           emulator's /_mock/config before each submission),
--                           all waited for at once
--
-- Prints one JSON line: workload, wall (seconds, imgedit.core.now), cpu
-- (seconds of process CPU, os.clock), peak_rss_kib (VmHWM), plus the mode's
-- own fields. Times cover the work only, not loading Lua and the modules.
-- Exits 1 (with a message on stderr) if anything fails.

local cjson = require("cjson")
local imgedit = require("imgedit")
local core = require("imgedit.core")

local KEY = "sk-test"
local PROMPT = "a cat in a hat"
local SOURCE = "https://example.com/p.jpg"

local function fail(...)
  io.stderr:write("workload: ", string.format(...), "\n")
  os.exit(1)
end

local function peak_rss_kib()
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmHWM:%s*(%d+)"))
end

local function number_arg(i, name)
  local v = tonumber(arg[i])
  if not v then fail("argument %d (%s) must be a number", i, name) end
  return v
end

local function client(provider, base)
  local c, err = imgedit.client(provider, {api_key = KEY, base_url = base})
  if not c then fail("client: %s", tostring(err)) end
  return c
end

-- Runs fn() and returns its results after recording wall and CPU time in `out`.
local function timed(out, fn)
  local t0, c0 = core.now(), os.clock()
  local a, b = fn()
  out.wall, out.cpu = core.now() - t0, os.clock() - c0
  return a, b
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local size = f:seek("end")
  f:close()
  return size
end

-- One blocking request of `session` through imgedit.core alone; returns its result table.
local function core_request(multi, session, request)
  local t, err = multi:add(session, request)
  if not t then fail("core request: %s", tostring(err)) end
  for _ = 1, 100000 do -- at most 100000 turns of 1 s each: bounded
    if t:done() then break end
    multi:perform()
    if t:done() then break end
    multi:poll(1)
  end
  multi:done()
  local res = t:result()
  t:close()
  return res
end

local modes = {}

function modes.w1()
  local fox, n = client("foxapi", arg[2]), number_arg(3, "N")
  local out = {n = n}
  timed(out, function()
    for i = 1, n do
      local t, err = fox:submit{prompt = PROMPT, images = {SOURCE}}
      if not t then fail("submit %d: %s", i, tostring(err)) end
    end
  end)
  return out
end

function modes.w1core()
  local json = require("imgedit.json")
  local url, n = arg[2], number_arg(3, "N")
  local multi = core.multi()
  local ua = ("imgedit/%s (%s)"):format(core.version, core.curl_version:match("^(%S+)") or "libcurl")
  -- what a foxapi client prepares once
  local session = assert(core.session({
    headers = {"Authorization: Bearer " .. KEY, "Accept: application/json", "Content-Type: application/json",
               "User-Agent: " .. ua},
    connect_timeout = 10, max_response_bytes = 256 * 1048576, max_buffered_bytes = 1024 * 1048576,
    request_id_headers = {"x-request-id", "x-oneapi-request-id", "request-id", "x-trace-id"},
  }))
  local out = {n = n}
  timed(out, function()
    for i = 1, n do
      -- what client:submit hands to the core for this request
      local res = core_request(multi, session, {
        method = "POST", url = url, timeout = 60,
        body = json.encode({model = "phota-image-edit", prompt = PROMPT, image_urls = {SOURCE}, num_outputs = 1,
                            resolution = "1K"}),
      })
      if res.status ~= 200 or type(json.decode(res.body)) ~= "table" then
        fail("request %d: %s", i, tostring(res.status))
      end
    end
  end)
  return out
end

function modes.w2()
  local socket = require("socket")
  local fox, n = client("foxapi", arg[2]), number_arg(3, "N")
  local fns, noticed, ids = {}, {}, {}
  for i = 1, n do
    fns[i] = function()
      local result, err = fox:edit{prompt = PROMPT .. " " .. i, images = {SOURCE}, timeout = 120}
      noticed[i] = socket.gettime()
      if result then ids[i] = result.task.id end
      return result, err
    end
  end
  local out = {n = n}
  local outcomes = timed(out, function() return imgedit.gather(fns) end)
  local ok, first_error = 0, nil
  for _, o in ipairs(outcomes) do
    if o.ok then ok = ok + 1 else first_error = first_error or tostring(o.err) end
  end
  if ok ~= n then fail("%d of %d edits failed; first: %s", n - ok, n, tostring(first_error)) end
  out.ok = ok
  out.process_cpu = os.clock() -- since the process started: Lua, the modules, the clients included
  out.tasks = {}
  for i = 1, n do out.tasks[i] = {id = ids[i], noticed = noticed[i]} end
  return out
end

function modes.w3()
  local pt, dir = client("powertokens", arg[2]), arg[3]
  local out = {}
  local paths = timed(out, function()
    local t0 = core.now()
    local result, err = pt:edit{prompt = PROMPT, images = {SOURCE}, n = 4, response_format = "b64_json"}
    if not result then fail("edit: %s", tostring(err)) end
    out.edit_wall = core.now() - t0
    local saved, save_err = result:save_all(dir, "imgedit")
    if not saved then fail("save_all: %s", tostring(save_err)) end
    return saved
  end)
  out.files = {}
  for i, p in ipairs(paths) do out.files[i] = {path = p, bytes = file_size(p)} end
  return out
end

function modes.w4()
  local fox, path = client("foxapi", arg[2]), arg[3]
  local result, err = fox:edit{prompt = PROMPT, images = {SOURCE}, timeout = 120}
  if not result then fail("edit: %s", tostring(err)) end
  local image = result.images[1]
  local out = {url = image.url}
  local saved, save_err = timed(out, function() return image:save(path) end)
  if not saved then fail("save: %s", tostring(save_err)) end
  out.bytes = file_size(path)
  return out
end

function modes.poll()
  local socket = require("socket")
  local api, fox = arg[2], client("foxapi", arg[3])
  local durations = {}
  for i = 4, #arg do durations[#durations + 1] = number_arg(i, "duration") end
  local multi = core.multi()
  local session = assert(core.session({headers = {"Content-Type: application/json"}}))
  local tasks = {}
  for i, d in ipairs(durations) do
    local res = core_request(multi, session, {method = "POST", url = api .. "/_mock/config",
                                              body = cjson.encode({task_delay = d}), timeout = 10})
    if res.status ~= 200 then fail("emulator config: HTTP %s", tostring(res.status)) end
    local t, err = fox:submit{prompt = PROMPT, images = {SOURCE}}
    if not t then fail("submit: %s", tostring(err)) end
    tasks[i] = {id = t.id, duration = d, task = t}
  end
  local fns = {}
  for i, entry in ipairs(tasks) do
    fns[i] = function()
      local result, err = entry.task:wait{timeout = entry.duration * 2 + 30}
      entry.noticed = socket.gettime()
      return result, err
    end
  end
  local out = {tasks = {}}
  local outcomes = timed(out, function() return imgedit.gather(fns) end)
  for i, entry in ipairs(tasks) do
    if not outcomes[i].ok then fail("task of %g s: %s", entry.duration, tostring(outcomes[i].err)) end
    out.tasks[i] = {id = entry.id, duration = entry.duration, noticed = entry.noticed}
  end
  return out
end

local mode = arg[1]
if not modes[mode] then fail("unknown mode %s (w1, w1core, w2, w3, w4, poll)", tostring(mode)) end
local out = modes[mode]()
out.workload = mode
out.peak_rss_kib = peak_rss_kib()
io.stdout:write(cjson.encode(out), "\n")
