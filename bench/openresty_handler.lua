-- The nginx side of the OpenResty workload (bench/openresty.lua writes the
-- nginx.conf that routes to these handlers).
--
--   GET /imgedit/powertokens?tag=K   one powertokens edit through imgedit
--   GET /imgedit/foxapi?tag=K        one foxapi edit through imgedit (task, polled)
--   GET /cosocket/powertokens?tag=K  the same POST by a plain ngx.socket.tcp client
--   GET /cosocket/foxapi?tag=K       the same POST, then a poll every POLL_INTERVAL
--   GET /quick                       "ok": the request that must not wait
--   GET /stats                       the worker's pid, imgedit's runtime, and the
--                                    ngx runtime's `stats` counters when it has any
--
-- An edit answers {tag, ok, id (foxapi task), done, error}: `done` is the
-- worker's wall clock (ngx.now after ngx.update_time, milliseconds) when the
-- edit returned, for the lateness the handler saw itself. The prompt is
-- "bench-K", so that the emulator's request log tells which request is which.
-- The emulator's URLs and key come from BENCH_POWERTOKENS, BENCH_FOXAPI and
-- BENCH_KEY (named by `env` in nginx.conf).
-- luacheck: globals ngx

local cjson = require("cjson.safe")
local imgedit = require("imgedit")

local M = {}

local KEY = os.getenv("BENCH_KEY") or "sk-test"
local SOURCE = "https://example.com/p.jpg"
-- imgedit's default poll interval (lua/imgedit/task.lua's POLL_DEFAULTS):
-- the cosocket client polls as often, so that both make about as many polls
local POLL_INTERVAL = 0.5
local MAX_POLLS = 1200
-- as many idle connections kept per pool as imgedit's multi handle keeps
-- (src/multi.c MAX_CACHED_CONNECTIONS), so both reconnect alike
local POOL_SIZE = 64
local IDLE_MS = 60000

local BASE = { powertokens = os.getenv("BENCH_POWERTOKENS"), foxapi = os.getenv("BENCH_FOXAPI") }

-- Exactly the JSON imgedit sends for these edits (its default model of
-- each provider), so that the emulator does the same work for both clients.
local function submit_body(provider, prompt)
  if provider == "powertokens" then
    return cjson.encode({ model = "qwen-image-2.0-pro", input = { messages = { {
      role = "user", content = { { image = SOURCE }, { text = prompt } } } } } })
  end
  return cjson.encode({ model = "phota-image-edit", resolution = "1K", num_outputs = 1,
    image_urls = { SOURCE }, prompt = prompt })
end

local SUBMIT_PATH = { powertokens = "/v1/images/edits", foxapi = "/v1/images/generations" }

-- The answer, with Content-Length: the bench client reads by length.
local function reply(status, value)
  local body = cjson.encode(value) .. "\n"
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

local function now()
  ngx.update_time()
  return ngx.now()
end

local function args()
  local a = ngx.req.get_uri_args()
  local provider = ngx.var.uri:match("^/%a+/(%a+)$")
  return provider, tostring(a.tag or "0")
end

-- imgedit ----------------------------------------------------------------------

-- One client per provider and worker, made at first use (as a real handler
-- would): every request of the worker shares its connections.
local clients = {}

function M.imgedit()
  local provider, tag = args()
  if not BASE[provider] then return reply(404, { error = "no such provider" }) end
  local client = clients[provider]
  if not client then
    local err
    client, err = imgedit.client(provider, { api_key = KEY, base_url = BASE[provider] })
    if not client then return reply(500, { tag = tag, ok = false, error = tostring(err) }) end
    clients[provider] = client
  end
  local result, err = client:edit({ prompt = "bench-" .. tag, images = { SOURCE } })
  local done = now()
  if not result then return reply(502, { tag = tag, ok = false, done = done, error = tostring(err) }) end
  return reply(200, { tag = tag, ok = true, done = done, id = result.task and result.task.id or cjson.null })
end

-- A plain cosocket client ---------------------------------------------------------

local function host_port(base)
  local host, port, prefix = base:match("^http://([^:/]+):(%d+)(.*)$")
  return host, tonumber(port), prefix
end

-- One HTTP/1.1 request on a pooled connection, written and read by hand:
-- the status line, the headers (Content-Length, Connection), the body.
-- Returns status, body or nil, message.
local function request(base, method, path, body)
  local host, port, prefix = host_port(base)
  local sock = ngx.socket.tcp()
  sock:settimeouts(5000, 10000, 60000)
  local ok, err = sock:connect(host, port, { pool_size = POOL_SIZE })
  if not ok then return nil, "connect: " .. tostring(err) end
  local head = { method, " ", prefix, path, " HTTP/1.1\r\nHost: ", host, ":", port,
    "\r\nAuthorization: Bearer ", KEY, "\r\nAccept: application/json\r\n" }
  if body then
    head[#head + 1] = "Content-Type: application/json\r\nContent-Length: " .. #body .. "\r\n"
  end
  head[#head + 1] = "\r\n"
  head[#head + 1] = body or ""
  ok, err = sock:send(table.concat(head))
  if not ok then return nil, "send: " .. tostring(err) end
  local line
  line, err = sock:receive("*l")
  if not line then return nil, "receive: " .. tostring(err) end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then return nil, "bad status line: " .. line end
  local length, close = 0, false
  for _ = 1, 100 do
    line, err = sock:receive("*l")
    if not line then return nil, "receive: " .. tostring(err) end
    if line == "" then break end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    name = name and name:lower()
    if name == "content-length" then
      length = tonumber(value) or 0
    elseif name == "connection" then
      close = value:lower() == "close"
    end
  end
  local data = ""
  if length > 0 then
    data, err = sock:receive(length)
    if not data then return nil, "receive: " .. tostring(err) end
  end
  if close then sock:close() else sock:setkeepalive(IDLE_MS, POOL_SIZE) end
  return status, data
end

local function decoded(status, body)
  if not status then return nil, body end
  local value = cjson.decode(body)
  if status ~= 200 or type(value) ~= "table" then
    return nil, ("HTTP %d: %s"):format(status, body:sub(1, 200))
  end
  return value
end

function M.cosocket()
  local provider, tag = args()
  local base = BASE[provider]
  if not base then return reply(404, { error = "no such provider" }) end
  local value, err = decoded(request(base, "POST", SUBMIT_PATH[provider], submit_body(provider, "bench-" .. tag)))
  if value and provider == "foxapi" then
    local id = value.id
    for _ = 1, MAX_POLLS do
      ngx.sleep(POLL_INTERVAL)
      value, err = decoded(request(base, "GET", "/v1/tasks/" .. tostring(id)))
      if not value or value.status == "completed" then break end
      if value.status == "failed" or value.status == "cancelled" then
        value, err = nil, "task " .. tostring(value.status)
        break
      end
    end
    if value and value.status ~= "completed" then value, err = nil, "task not done after its polls" end
  end
  local done = now()
  if not value then return reply(502, { tag = tag, ok = false, done = done, error = tostring(err) }) end
  return reply(200, { tag = tag, ok = true, done = done, id = value.id or cjson.null })
end

-- The rest ------------------------------------------------------------------------

function M.quick()
  ngx.header["Content-Type"] = "text/plain"
  ngx.header["Content-Length"] = 3
  ngx.print("ok\n")
end

--- The ngx runtime's counters, whatever they are: the top-level numbers,
-- strings and booleans of its `stats` table (none when it has no such table).
function M.stats()
  local counters = {}
  local ok, rt = pcall(require, "imgedit.runtime.ngx")
  if ok and type(rt) == "table" and type(rt.stats) == "table" then
    for k, v in pairs(rt.stats) do
      local t = type(v)
      if t == "number" or t == "string" or t == "boolean" then counters[tostring(k)] = v end
    end
  end
  reply(200, { pid = ngx.worker.pid(), runtime = imgedit.runtime(), stats = counters })
end

return M
