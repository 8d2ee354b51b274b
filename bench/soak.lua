-- Soak: 10,000 requests through one client of each provider, with resident
-- memory and open descriptors sampled as they go. After a warm-up, both must
-- stay flat: RSS growth under 5 MiB, descriptor count unchanged.
--
--   lua5.4 bench/soak.lua [requests]        (make soak)
local imgedit = require("imgedit")
local core = require("imgedit.core")
local mock = require("imgedit.mock.process")

local TOTAL = tonumber(arg[1]) or 10000
local CONCURRENCY = 32
local WARM_UP = math.floor(TOTAL / 10)
local SEED_URL = "https://example.com/portrait.jpg"

local function rss_kib()
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

local function open_fds()
  local n = 0
  local p = assert(io.popen("ls /proc/" .. assert(io.open("/proc/self/stat")):read("*l"):match("^(%d+)") .. "/fd"))
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n - 1 -- the pipe of this very listing
end

local emulator = mock.start({ config = { task_delay = 0 } })
local fox = assert(imgedit.client("foxapi", { api_key = "sk-test", base_url = emulator.foxapi }))
local pt = assert(imgedit.client("powertokens", { api_key = "sk-test", base_url = emulator.powertokens }))

-- One round makes four requests: a billed POST to each provider, a poll and
-- a download from the result host.
local function round()
  local edited = assert(pt:edit({ prompt = "soak", images = { SEED_URL } }))
  local task = assert(fox:submit({ prompt = "soak", images = { SEED_URL } }))
  assert(task:refresh())
  assert(edited.images[1]:bytes())
end

local samples = {}
local done = 0
local started = core.now()
local cpu_started = os.clock()
while done < TOTAL do
  local jobs = {}
  for i = 1, CONCURRENCY do jobs[i] = round end
  for _, outcome in ipairs(imgedit.gather(jobs)) do
    if not outcome.ok then error(tostring(outcome.err)) end
  end
  done = done + 4 * CONCURRENCY
  if #samples == 0 and done >= WARM_UP or #samples > 0 and done - samples[#samples].requests >= TOTAL / 10 then
    collectgarbage()
    samples[#samples + 1] = { requests = done, rss = rss_kib(), fds = open_fds(), seconds = core.now() - started }
  end
end
local wall, cpu = core.now() - started, os.clock() - cpu_started
emulator:stop()

print(("%10s %12s %6s %9s"):format("requests", "RSS (KiB)", "fds", "seconds"))
for _, s in ipairs(samples) do
  print(("%10d %12d %6d %9.2f"):format(s.requests, s.rss, s.fds, s.seconds))
end
local first, last = samples[1], samples[#samples]
local growth = (last.rss - first.rss) / 1024
print(("%d requests in %.1f s (%.0f/s), CPU %.1f s; RSS growth after warm-up %.2f MiB; descriptors %d -> %d")
  :format(done, wall, done / wall, cpu, growth, first.fds, last.fds))
local flat = growth < 5 and last.fds <= first.fds
print(flat and "soak: flat" or "soak: NOT flat")
os.exit(flat and 0 or 1)
