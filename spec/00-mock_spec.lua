-- luacheck: std +busted
-- The emulator itself, over real HTTP (socket.http and raw sockets): every
-- other spec trusts it, so its wire behaviour is pinned down here.

local socket = require("socket")
local socket_http = require("socket.http")
local ltn12 = require("ltn12")
local cjson = require("cjson")
local mock = require("imgedit.mock.process")

local floor = math.floor
local KEY = "sk-test"

-- HTTP helpers -------------------------------------------------------------------

-- method, url, body (string, or a table sent as JSON), headers (map).
-- Returns status, headers (lowercase names), body text, decoded JSON or nil.
local function request(method, url, body, headers)
  local h = {}
  for k, v in pairs(headers or {}) do h[k:lower()] = v end
  if type(body) == "table" then
    body = cjson.encode(body)
    h["content-type"] = h["content-type"] or "application/json"
  end
  body = body or ""
  if body ~= "" or method == "POST" then h["content-length"] = #body end
  local chunks = {}
  local ok, status, rheaders = socket_http.request{
    url = url, method = method, headers = h,
    source = body ~= "" and ltn12.source.string(body) or nil,
    sink = ltn12.sink.table(chunks),
    redirect = false,
    create = function()
      local s = socket.tcp()
      s:settimeout(10)
      return s
    end,
  }
  assert(ok, "HTTP request failed: " .. tostring(status))
  local text = table.concat(chunks)
  local json = require("cjson.safe").decode(text)
  return status, rheaders, text, json
end

local function authed(extra)
  local h = {authorization = "Bearer " .. KEY}
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

local function host_port(url)
  local host, port = url:match("^http://%[?([^%]/]+)%]?:(%d+)")
  return host, tonumber(port)
end

-- Reads one HTTP/1.1 response from a blocking socket: status, headers, body
-- (or nil, error, bytes of body read when the connection ends early).
local function read_response(c)
  local line, err = c:receive("*l")
  if not line then return nil, err, "" end
  local status = tonumber(line:match("^HTTP/1%.1 (%d+)"))
  local headers = {}
  while true do
    line, err = c:receive("*l")
    if not line then return nil, err, "" end
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    headers[k:lower()] = v
  end
  if status < 200 then return status, headers, "" end -- interim (100 Continue)
  local body, partial
  body, err, partial = c:receive(tonumber(headers["content-length"] or 0))
  if not body then return nil, err, partial end
  return status, headers, body
end

local function raw_connect(url)
  local host, port = host_port(url)
  local c = assert(socket.connect(host, port))
  c:settimeout(5)
  return c
end

-- PNG verification (independent of the emulator's own code) --------------------

local bxor
do
  local native = (loadstring or load)("return function(a, b) return a ~ b end")
  if native then
    bxor = native()
  else
    -- 32-bit XOR by nibbles, for Lua 5.1 without a bit library.
    local x4 = {}
    for a = 0, 15 do
      for b = 0, 15 do
        local r, m, x, y = 0, 1, a, b
        for _ = 1, 4 do
          if x % 2 ~= y % 2 then r = r + m end
          x, y, m = floor(x / 2), floor(y / 2), m * 2
        end
        x4[a * 16 + b] = r
      end
    end
    bxor = function(a, b)
      local r, m = 0, 1
      for _ = 1, 8 do
        r = r + x4[a % 16 * 16 + b % 16] * m
        a, b, m = floor(a / 16), floor(b / 16), m * 16
      end
      return r
    end
  end
end

local CRC_TABLE = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if c % 2 == 1 then c = bxor(floor(c / 2), 0xEDB88320) else c = floor(c / 2) end
  end
  CRC_TABLE[i] = c
end

local crc_memo = {}
local function crc32(s)
  -- Identical chunks (the emulator repeats them) are checked once.
  if crc_memo[s] then return crc_memo[s] end
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = bxor(CRC_TABLE[bxor(c % 256, s:byte(i))], floor(c / 256))
  end
  c = 0xFFFFFFFF - c
  crc_memo[s] = c
  return c
end

local function u32(s, i)
  local a, b, c, d = s:byte(i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

-- Checks signature, chunk CRCs, IHDR, the zlib stream (stored blocks, as the
-- emulator writes them) and its Adler-32, and the scanline layout.
-- Returns {width, height, rgb = {r, g, b}} or raises.
local function check_png(data)
  assert(data:sub(1, 8) == "\137PNG\r\n\26\n", "PNG signature")
  local pos, idat, ihdr, iend = 9, {}, nil, false
  while pos <= #data do
    assert(not iend, "data after IEND")
    local len = u32(data, pos)
    local kind = data:sub(pos + 4, pos + 7)
    local body = data:sub(pos + 8, pos + 7 + len)
    assert(#body == len, "truncated chunk " .. kind)
    assert(u32(data, pos + 8 + len) == crc32(kind .. body), "CRC of chunk " .. kind)
    if kind == "IHDR" then ihdr = body
    elseif kind == "IDAT" then idat[#idat + 1] = body
    elseif kind == "IEND" then iend = true end
    pos = pos + 12 + len
  end
  assert(ihdr and iend and #idat > 0, "IHDR, IDAT and IEND present")
  local width, height = u32(ihdr, 1), u32(ihdr, 5)
  assert(ihdr:sub(9) == "\8\2\0\0\0", "8-bit RGB, no interlace")
  local z = table.concat(idat)
  assert((z:byte(1) * 256 + z:byte(2)) % 31 == 0 and z:byte(1) % 16 == 8, "zlib header")
  local raw, p = {}, 3
  while true do
    local header = z:byte(p)
    assert(floor(header / 2) % 4 == 0, "stored block")
    local len = z:byte(p + 1) + z:byte(p + 2) * 256
    local nlen = z:byte(p + 3) + z:byte(p + 4) * 256
    assert(len + nlen == 65535, "LEN/NLEN")
    raw[#raw + 1] = z:sub(p + 5, p + 4 + len)
    p = p + 5 + len
    if header % 2 == 1 then break end
  end
  raw = table.concat(raw)
  local a, b = 1, 0
  for i = 1, #raw do
    a = (a + raw:byte(i)) % 65521
    b = (b + a) % 65521
  end
  assert(u32(z, p) == b * 65536 + a, "Adler-32")
  assert(p + 3 == #z, "nothing after the Adler-32")
  local rowlen = 1 + 3 * width
  assert(#raw == height * rowlen, "scanline data size")
  for row = 0, height - 1 do assert(raw:byte(row * rowlen + 1) == 0, "filter byte") end
  return {width = width, height = height, rgb = {raw:byte(2, 4)}}
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64_decode(s)
  assert(#s % 4 == 0 and s:match("^[A-Za-z0-9+/]*=?=?$"), "valid base64")
  local out = {}
  for i = 1, #s, 4 do
    local n, pad = 0, 0
    for j = i, i + 3 do
      local ch = s:sub(j, j)
      if ch == "=" then pad = pad + 1; n = n * 64
      else n = n * 64 + B64:find(ch, 1, true) - 1 end
    end
    local bytes = string.char(floor(n / 65536), floor(n / 256) % 256, n % 256)
    out[#out + 1] = bytes:sub(1, 3 - pad)
  end
  return table.concat(out)
end

local function keys_of(t)
  local list = {}
  for k in pairs(t) do list[#list + 1] = k end
  table.sort(list)
  return list
end

local function wait(seconds) socket.sleep(seconds) end

-- Request bodies -------------------------------------------------------------------

local function fox_edit(extra)
  local body = {model = "phota-image-edit", prompt = "a beach at sunset",
                image_urls = {"https://example.com/portrait.jpg"}}
  for k, v in pairs(extra or {}) do body[k] = v end
  return body
end

local function pt_edit(extra)
  local body = {
    model = "qwen-image-2.0-pro",
    input = {messages = {{role = "user", content = {
      {image = "https://example.com/source.webp"}, {text = "replace the background"}}}}},
  }
  for k, v in pairs(extra or {}) do body[k] = v end
  return body
end

describe("imgedit-mock", function()
  local m

  setup(function() m = mock.start{delay = 0.4} end)
  teardown(function() m:stop() end)
  before_each(function() m:reset() end)

  local function fox(method, path, body, headers)
    return request(method, m.foxapi .. path, body, headers or authed())
  end
  local function pt(path, body, headers)
    return request("POST", m.powertokens .. path, body, headers or authed())
  end
  local function poll_until_done(id, seen)
    for _ = 1, 400 do
      local status, _, _, task = fox("GET", "/v1/tasks/" .. id)
      assert.equal(200, status)
      if seen then seen[#seen + 1] = task end
      if task.status ~= "pending" and task.status ~= "processing" then return task end
      wait(0.02)
    end
    error("task did not finish")
  end

  describe("startup", function()
    it("prints a ready line with the URLs of both listeners and the pid", function()
      assert.truthy(m.api:match("^http://127%.0%.0%.1:%d+$"))
      assert.truthy(m.cdn:match("^http://127%.0%.0%.2:%d+$"))
      assert.equal(m.api .. "/foxapi", m.foxapi)
      assert.equal(m.api .. "/powertokens", m.powertokens)
      assert.is_number(m.pid)
    end)

    it("refuses a --host outside 127.0.0.0/8 and ::1", function()
      local lua = os.getenv("IMGEDIT_MOCK_LUA") or "lua5.4"
      for _, host in ipairs({"0.0.0.0", "192.168.1.10", "128.0.0.1", "localhost"}) do
        local p = io.popen(lua .. " bin/imgedit-mock --port 0 --host " .. host .. " 2>/dev/null")
        local out = p:read("*a")
        p:close()
        local info = cjson.decode(out)
        assert.truthy(info.error:find("refused", 1, true), host)
        assert.is_nil(info.api)
      end
    end)

    it("serves on ::1 when asked", function()
      local m6 = mock.start{host = "::1"}
      finally(function() m6:stop() end)
      assert.truthy(m6.api:match("^http://%[::1%]:%d+$"))
      local status, _, _, json = request("GET", m6.api .. "/_mock/requests")
      assert.equal(200, status)
      assert.same({}, json.requests)
    end)

    it("exits on POST /_mock/shutdown", function()
      local m2 = mock.start()
      local status, _, _, json = request("POST", m2.api .. "/_mock/shutdown", "")
      assert.equal(200, status)
      assert.is_true(json.ok)
      local host, port = host_port(m2.api)
      local refused = false
      for _ = 1, 100 do
        local c = socket.connect(host, port)
        if not c then refused = true break end
        c:close()
        wait(0.02)
      end
      assert.is_true(refused)
      m2:stop() -- idempotent after shutdown
      m2:stop()
    end)
  end)

  describe("auth", function()
    it("answers 401 authentication_error without a key or with a wrong one", function()
      for _, headers in ipairs({{}, {authorization = "Bearer sk-wrong"},
                                {authorization = "Basic c2stdGVzdA=="}}) do
        local status, h, _, json = fox("POST", "/v1/images/generations", fox_edit(), headers)
        assert.equal(401, status)
        assert.equal("application/json", h["content-type"])
        assert.same({"message", "type"}, keys_of(json.error))
        assert.equal("authentication_error", json.error.type)
        status = pt("/v1/images/edits", pt_edit(), headers)
        assert.equal(401, status)
      end
    end)

    it("accepts the keys of the config", function()
      m:config{keys = {"sk-one", "sk-two"}}
      assert.equal(401, (fox("GET", "/v1/tasks/x")))
      local status = fox("GET", "/v1/tasks/x", nil, {authorization = "Bearer sk-two"})
      assert.equal(404, status)
    end)

    it("puts X-Request-Id on every response", function()
      local ids = {}
      local _, h1 = fox("GET", "/v1/tasks/nope")
      local _, h2 = request("GET", m.cdn .. "/files/nope.png")
      local _, h3 = request("GET", m.api .. "/_mock/requests")
      for _, h in ipairs({h1, h2, h3}) do
        assert.truthy(h["x-request-id"]:match("^req%-%d+$"))
        assert.is_nil(ids[h["x-request-id"]])
        ids[h["x-request-id"]] = true
      end
    end)
  end)

  describe("foxapi lifecycle", function()
    it("answers a submit with exactly the fields of the reference", function()
      local status, _, _, task = fox("POST", "/v1/images/generations", fox_edit{num_outputs = 2})
      assert.equal(200, status)
      assert.same({"created", "id", "model", "object", "progress", "status", "task_info", "type"},
        keys_of(task))
      assert.truthy(task.id:match("^task%-unified%-%d+%-[a-z0-9]+$"))
      assert.equal("phota-image-edit", task.model)
      assert.equal("image.generation.task", task.object)
      assert.equal("pending", task.status)
      assert.equal(0, task.progress)
      assert.equal("image", task.type)
      assert.same({can_cancel = true, estimated_time = 1}, task.task_info)
      assert.is_true(math.abs(task.created - os.time()) <= 5)
    end)

    it("answers pending for the first tenth of task_delay", function()
      m:config{task_delay = 600}
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit{})
      local _, _, _, first = fox("GET", "/v1/tasks/" .. task.id)
      assert.equal("pending", first.status)
      assert.equal(0, first.progress)
    end)

    it("goes pending -> processing (rising progress) -> completed", function()
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit{num_outputs = 3})
      local seen = {}
      local done = poll_until_done(task.id, seen)
      -- every answer is what the task's timeline says at the moment the
      -- emulator took that poll (its own clock): pending for the first 10%
      -- of task_delay, then processing, then completed
      local record = m:tasks()[1]
      assert.equal(#seen, #record.poll_times)
      for i, t in ipairs(seen) do
        local elapsed = record.poll_times[i] - record.start
        local near_edge = math.abs(elapsed - 0.1 * record.delay) < 0.002 or math.abs(elapsed - record.delay) < 0.002
        local expected = elapsed < 0.1 * record.delay and "pending" or (elapsed < record.delay and "processing"
          or "completed")
        if not near_edge then assert.equal(expected, t.status, ("poll %d, %.3f s in"):format(i, elapsed)) end
      end
      local order = {pending = 1, processing = 2, completed = 3}
      local last_rank, last_progress, processing = 0, -1, {}
      for _, t in ipairs(seen) do
        assert.is_true(order[t.status] >= last_rank, "status never goes back")
        assert.is_true(t.progress >= last_progress, "progress never goes back")
        last_rank, last_progress = order[t.status], t.progress
        if t.status == "pending" then assert.equal(0, t.progress) end
        if t.status == "processing" then
          assert.is_true(t.progress >= 1 and t.progress <= 99)
          processing[t.progress] = true
          assert.equal(cjson.null, t.results)
          assert.is_true(t.task_info.can_cancel)
        end
      end
      assert.is_true(#keys_of(processing) >= 2, "progress rises while processing")
      assert.equal("completed", done.status)
      assert.equal(100, done.progress)
      assert.equal(cjson.null, done.error)
      assert.is_false(done.task_info.can_cancel)
      assert.equal(1, done.task_info.estimated_time)
      assert.equal("default", done.usage.user_group)
      assert.is_number(done.usage.credits_reserved)
      assert.equal("image.generation.task", done.object)
      assert.equal("image", done.type)
      assert.equal(task.created, done.created)
      assert.equal(3, #done.results)
      for i, r in ipairs(done.results) do
        assert.equal(m.cdn .. "/files/" .. task.id .. "-" .. i .. ".png", r.url)
      end
    end)

    it("serves the results from the CDN as valid PNG files", function()
      m:config{task_delay = 0, image_bytes = 3000}
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit{num_outputs = 2})
      local done = poll_until_done(task.id)
      local colours = {}
      for _, r in ipairs(done.results) do
        local status, h, body = request("GET", r.url)
        assert.equal(200, status)
        assert.equal("image/png", h["content-type"])
        assert.equal(#body, tonumber(h["content-length"]))
        assert.is_true(math.abs(#body - 3000) < 200)
        local info = check_png(body)
        colours[#colours + 1] = table.concat(info.rgb, ",")
      end
      assert.are_not.equal(colours[1], colours[2])
      local cdn = m:requests{listener = "cdn"}
      assert.equal(2, #cdn)
      assert.is_nil(cdn[1].headers.authorization)
    end)

    it("builds large PNGs (many IDAT chunks) that stay valid", function()
      m:config{task_delay = 0, image_bytes = 700000}
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit())
      local done = poll_until_done(task.id)
      local status, _, body = request("GET", done.results[1].url)
      assert.equal(200, status)
      assert.is_true(math.abs(#body - 700000) < 4000)
      local info = check_png(body)
      assert.is_true(info.width * info.height > 200000)
    end)

    it("accepts ?sync_upstream=true and answers 404 not_found for unknown ids", function()
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit())
      local status, _, _, t = fox("GET", "/v1/tasks/" .. task.id .. "?sync_upstream=true")
      assert.equal(200, status)
      assert.equal(task.id, t.id)
      local log = m:requests{path = "/v1/tasks/"}
      assert.equal("sync_upstream=true", log[1].query)
      assert.equal("/foxapi/v1/tasks/" .. task.id, log[1].path)
      local json
      status, _, _, json = fox("GET", "/v1/tasks/task-unified-1-nothere")
      assert.equal(404, status)
      assert.equal("not_found", json.error.type)
      assert.is_string(json.error.message)
    end)

    it("reports estimated_time as ceil(task_delay), at least 1", function()
      m:config{task_delay = 2.2}
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit())
      assert.equal(3, task.task_info.estimated_time)
      m:config{task_delay = 0}
      _, _, _, task = fox("POST", "/v1/images/generations", fox_edit())
      assert.equal(1, task.task_info.estimated_time)
    end)

    it("returns output = {url, urls, width, height} with result_shape output", function()
      m:config{task_delay = 0, result_shape = "output"}
      local _, _, _, task = fox("POST", "/v1/images/generations",
        {model = "phota-image", prompt = "a cat", num_outputs = 2, aspect_ratio = "16:9",
         resolution = "4K"})
      local done = poll_until_done(task.id)
      assert.is_nil(done.results)
      assert.equal(2, #done.output.urls)
      assert.equal(done.output.urls[1], done.output.url)
      assert.equal(4096, done.output.width)
      assert.equal(2304, done.output.height)
      assert.equal(200, (request("GET", done.output.urls[2])))
    end)

    it("runs phota-image-enhance and phota-create-profile", function()
      m:config{task_delay = 0}
      local _, _, _, task = fox("POST", "/v1/images/generations",
        {model = "phota-image-enhance", image_url = "https://example.com/a.png",
         creativity = 0.3, resemblance = cjson.null, profile_ids = cjson.null})
      local done = poll_until_done(task.id)
      assert.equal("phota-image-enhance", done.model)
      assert.equal(1, #done.results)
      assert.truthy(done.results[1].url)
      _, _, _, task = fox("POST", "/v1/images/generations",
        {model = "phota-create-profile", image_archive_url = "https://example.com/faces.zip"})
      done = poll_until_done(task.id)
      assert.equal(1, #done.results)
      assert.equal("profile", done.results[1].result_type)
      assert.truthy(done.results[1].profile_id:match("^profile_"))
    end)
  end)

  describe("foxapi outcomes", function()
    it("fails with error {code, message, type = task_error}", function()
      m:config{task_delay = 0.2, task_outcome = "failed", fail_code = "content_policy",
               fail_message = "refused by the safety system"}
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit())
      assert.equal("pending", task.status)
      local done = poll_until_done(task.id)
      assert.equal("failed", done.status)
      assert.same({code = "content_policy", message = "refused by the safety system",
                   type = "task_error"}, done.error)
      assert.equal(cjson.null, done.results)
      -- No files exist for a failed task.
      local url = m.cdn .. "/files/" .. task.id .. "-1.png"
      assert.equal(404, (request("GET", url)))
    end)

    it("can be cancelled", function()
      m:config{task_delay = 0.2, task_outcome = "cancelled"}
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit())
      local done = poll_until_done(task.id)
      assert.equal("cancelled", done.status)
      assert.equal(cjson.null, done.error)
      assert.equal(cjson.null, done.results)
    end)

    it("keeps the outcome a task was created with", function()
      m:config{task_delay = 0.2, task_outcome = "failed"}
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit())
      m:config{task_outcome = "completed"}
      assert.equal("failed", poll_until_done(task.id).status)
    end)
  end)

  describe("foxapi validation", function()
    it("answers 400 invalid_request_error for a wrong Content-Type or bad JSON", function()
      local body = cjson.encode(fox_edit())
      local status, _, _, json = fox("POST", "/v1/images/generations", body,
        authed{["content-type"] = "text/plain"})
      assert.equal(400, status)
      assert.equal("invalid_request_error", json.error.type)
      assert.truthy(json.error.message:find("Content-Type", 1, true))
      status = fox("POST", "/v1/images/generations", body, authed())
      assert.equal(400, status) -- no Content-Type at all
      for _, bad in ipairs({"{", "", "[1,2]", '"text"', '{"model": NaN}'}) do
        status, _, _, json = fox("POST", "/v1/images/generations", bad,
          authed{["content-type"] = "application/json; charset=utf-8"})
        assert.equal(400, status, bad)
        assert.equal("invalid_request_error", json.error.type)
      end
    end)

    local null = cjson.null
    local cases = {
      {"no model", {prompt = "x", image_urls = {"https://e.com/a.png"}}, "model"},
      {"unknown model", fox_edit{model = "phota-nope"}, "phota-nope"},
      {"model not a string", fox_edit{model = 3}, "model"},
      {"missing prompt", {model = "phota-image-edit", image_urls = {"https://e.com/a.png"}}, "prompt"},
      {"prompt false", fox_edit{prompt = false}, "prompt"},
      {"empty prompt", fox_edit{prompt = ""}, "prompt"},
      {"prompt not a string", fox_edit{prompt = 12}, "prompt"},
      {"missing image_urls", {model = "phota-image-edit", prompt = "x"}, "image_urls"},
      {"empty image_urls", fox_edit{image_urls = {}}, "image_urls"},
      {"image_urls a string", fox_edit{image_urls = "https://e.com/a.png"}, "image_urls"},
      {"image_urls not http", fox_edit{image_urls = {"ftp://e.com/a.png"}}, "image_urls"},
      {"image_urls an object", fox_edit{image_urls = {a = "https://e.com/a.png"}}, "image_urls"},
      {"num_outputs 0", fox_edit{num_outputs = 0}, "num_outputs"},
      {"num_outputs 11", fox_edit{num_outputs = 11}, "num_outputs"},
      {"num_outputs 1.5", fox_edit{num_outputs = 1.5}, "num_outputs"},
      {"num_outputs a string", fox_edit{num_outputs = "2"}, "num_outputs"},
      {"num_outputs null", fox_edit{num_outputs = null}, "num_outputs"},
      {"resolution 2K", fox_edit{resolution = "2K"}, "resolution"},
      {"resolution lowercase", fox_edit{resolution = "1k"}, "resolution"},
      {"profile_ids a string", fox_edit{profile_ids = "profile_a"}, "profile_ids"},
      {"profile_ids of numbers", fox_edit{profile_ids = {1, 2}}, "profile_ids"},
      {"unknown field", fox_edit{seed = 1}, "seed"},
      {"aspect_ratio on edit", fox_edit{aspect_ratio = "1:1"}, "aspect_ratio"},
      {"aspect_ratio 5:4", {model = "phota-image", prompt = "x", aspect_ratio = "5:4"}, "aspect_ratio"},
      {"image_urls on phota-image",
        {model = "phota-image", prompt = "x", image_urls = {"https://e.com/a.png"}}, "image_urls"},
      {"enhance without image_url", {model = "phota-image-enhance"}, "image_url"},
      {"enhance creativity 1.5",
        {model = "phota-image-enhance", image_url = "https://e.com/a.png", creativity = 1.5},
        "creativity"},
      {"enhance resemblance -0.1",
        {model = "phota-image-enhance", image_url = "https://e.com/a.png", resemblance = -0.1},
        "resemblance"},
      {"enhance num_outputs",
        {model = "phota-image-enhance", image_url = "https://e.com/a.png", num_outputs = 1},
        "num_outputs"},
      {"profile without archive", {model = "phota-create-profile"}, "image_archive_url"},
      {"profile archive not a URL",
        {model = "phota-create-profile", image_archive_url = "faces.zip"}, "image_archive_url"},
    }
    for _, case in ipairs(cases) do
      it("answers 422 invalid_request_error naming the field: " .. case[1], function()
        local status, _, _, json = fox("POST", "/v1/images/generations", case[2])
        assert.equal(422, status)
        assert.equal("invalid_request_error", json.error.type)
        assert.is_string(json.error.code)
        assert.truthy(json.error.message:find(case[3], 1, true), json.error.message)
      end)
    end

    it("accepts every documented field at its limits", function()
      local bodies = {
        fox_edit{num_outputs = 10, resolution = "4K", profile_ids = {"profile_a"}},
        fox_edit{num_outputs = 1, resolution = "1K", profile_ids = null},
        {model = "phota-image", prompt = "[[profile_a]] on a beach", aspect_ratio = "9:16"},
        {model = "phota-image-enhance", image_url = "http://e.com/a.png", creativity = 0,
         resemblance = 1, resolution = "1K", profile_ids = {"p"}},
      }
      for _, body in ipairs(bodies) do
        local status, _, text = fox("POST", "/v1/images/generations", body)
        assert.equal(200, status, text)
      end
    end)

    it("answers 405 for a wrong method and 404 for an unknown endpoint", function()
      assert.equal(405, (fox("GET", "/v1/images/generations")))
      assert.equal(404, (fox("GET", "/v1/nothing")))
    end)
  end)

  describe("powertokens", function()
    it("answers an edit with n image URLs on the CDN", function()
      m:config{image_bytes = 2500}
      local status, h, _, json = pt("/v1/images/edits", pt_edit{n = 2, size = "1536*1024",
        watermark = false, prompt_extend = true, negative_prompt = "low quality", seed = 0,
        response_format = "url"})
      assert.equal(200, status)
      assert.equal("application/json", h["content-type"])
      assert.same({"created", "data", "metadata"}, keys_of(json))
      assert.same({}, json.metadata)
      assert.equal(2, #json.data)
      for _, item in ipairs(json.data) do
        assert.equal("replace the background", item.revised_prompt)
        assert.is_nil(item.b64_json)
        assert.truthy(item.url:find(m.cdn .. "/files/", 1, true))
        local s, _, body = request("GET", item.url)
        assert.equal(200, s)
        check_png(body)
      end
    end)

    it("answers b64_json with whole PNG files", function()
      m:config{image_bytes = 5000}
      local status, _, _, json = pt("/v1/images/edits", pt_edit{n = 3, response_format = "b64_json"})
      assert.equal(200, status)
      assert.equal(3, #json.data)
      for _, item in ipairs(json.data) do
        assert.is_nil(item.url)
        check_png(base64_decode(item.b64_json))
      end
    end)

    it("answers a generation from a prompt alone", function()
      local status, _, _, json = pt("/v1/images/generations", {model = "wan2.7-image-pro",
        input = {messages = {{role = "user", content = {{text = "a red bicycle"}}}}}, size = "2048x2048"})
      assert.equal(200, status)
      assert.equal(1, #json.data)
    end)

    it("accepts data: URIs and several images", function()
      local status = pt("/v1/images/edits", {model = "qwen-image-2.0-pro",
        input = {messages = {{role = "user", content = {
          {image = "data:image/png;base64,iVBORw0KGgo="}, {image = "https://e.com/b.jpg"},
          {text = string.rep("é", 800)}}}}}})
      assert.equal(200, status)
    end)

    local function content(...) return {messages = {{role = "user", content = {...}}}} end
    local text = {text = "edit it"}
    local image = {image = "https://e.com/a.png"}
    local cases = {
      {"parameters", pt_edit{parameters = {n = 2}}, "parameters"},
      {"unknown field", pt_edit{quality = "hd"}, "quality"},
      {"no model", {input = pt_edit().input}, "model"},
      {"model null", pt_edit{model = cjson.null}, "model"},
      {"unknown model", pt_edit{model = "dall-e-3"}, "model"},
      {"no input", {model = "qwen-image-2.0-pro"}, "input"},
      {"input null", pt_edit{input = cjson.null}, "input"},
      {"two messages", pt_edit{input = {messages = {{role = "user", content = {image, text}},
                                                    {role = "user", content = {text}}}}},
        "input.messages"},
      {"assistant role", pt_edit{input = {messages = {{role = "assistant", content = {image, text}}}}},
        "role"},
      {"unknown input field", pt_edit{input = {messages = {{role = "user", content = {image, text}}},
                                               extra = 1}}, "input.extra"},
      {"no image", pt_edit{input = content(text)}, "image"},
      {"no text", pt_edit{input = content(image)}, "text"},
      {"two texts", pt_edit{input = content(image, text, text)}, "text"},
      {"text too long", pt_edit{input = content(image, {text = string.rep("a", 801)})}, "text"},
      {"empty text", pt_edit{input = content(image, {text = ""})}, "text"},
      {"image not a URL", pt_edit{input = content({image = "/tmp/a.png"}, text)}, "image"},
      {"image bad base64", pt_edit{input = content({image = "data:image/png;base64,@@@="}, text)},
        "image"},
      {"image and text in one item", pt_edit{input = content({image = "https://e.com/a", text = "x"})},
        "content[0]"},
      {"n 0", pt_edit{n = 0}, "n"},
      {"n 7", pt_edit{n = 7}, "n"},
      {"n 2.5", pt_edit{n = 2.5}, "n"},
      {"size bad", pt_edit{size = "1024-1024"}, "size"},
      {"size too small", pt_edit{size = "256*256"}, "size"},
      {"size too large", pt_edit{size = "4096x4096"}, "size"},
      {"size a number", pt_edit{size = 1024}, "size"},
      {"response_format", pt_edit{response_format = "png"}, "response_format"},
      {"negative_prompt too long", pt_edit{negative_prompt = string.rep("b", 501)}, "negative_prompt"},
      {"seed negative", pt_edit{seed = -1}, "seed"},
      {"seed too big", pt_edit{seed = 2147483648}, "seed"},
      {"watermark a string", pt_edit{watermark = "false"}, "watermark"},
      {"prompt_extend a number", pt_edit{prompt_extend = 1}, "prompt_extend"},
    }
    for _, case in ipairs(cases) do
      it("answers 400 invalid_request_error naming the field: " .. case[1], function()
        local status, _, _, json = pt("/v1/images/edits", case[2])
        assert.equal(400, status)
        assert.equal("invalid_request_error", json.error.type)
        assert.truthy(json.error.message:find(case[3], 1, true), json.error.message)
      end)
    end

    it("refuses image items on generations", function()
      local status, _, _, json = pt("/v1/images/generations", pt_edit())
      assert.equal(400, status)
      assert.truthy(json.error.message:find("image", 1, true))
    end)

    it("answers 400 for a wrong Content-Type", function()
      local status, _, _, json = pt("/v1/images/edits", cjson.encode(pt_edit()),
        authed{["content-type"] = "application/x-www-form-urlencoded"})
      assert.equal(400, status)
      assert.equal("invalid_request_error", json.error.type)
    end)
  end)

  describe("request log", function()
    it("records listener, method, path, query, headers, raw body, JSON and time", function()
      local body = cjson.encode(fox_edit{num_outputs = 1})
      local _, h = fox("POST", "/v1/images/generations", body,
        authed{["content-type"] = "application/json", ["x-custom"] = "yes"})
      request("GET", m.cdn .. "/files/x.png?a=1")
      request("GET", m.api .. "/_mock/requests") -- control requests are not recorded
      local log = m:requests()
      assert.equal(2, #log)
      local r = log[1]
      assert.equal("api", r.listener)
      assert.equal("POST", r.method)
      assert.equal("/foxapi/v1/images/generations", r.path)
      assert.equal("", r.query)
      assert.equal("Bearer " .. KEY, r.headers.authorization)
      assert.equal("yes", r.headers["x-custom"])
      assert.equal(body, r.body)
      assert.equal("phota-image-edit", r.json.model)
      assert.equal(1, r.json.num_outputs)
      assert.is_number(r.time)
      assert.equal(h["x-request-id"], ("req-%d"):format(r.seq))
      assert.equal("cdn", log[2].listener)
      assert.equal("/files/x.png", log[2].path)
      assert.equal("a=1", log[2].query)
      assert.equal(cjson.null, log[2].json)
      assert.is_true(log[2].seq > r.seq)
      assert.equal(1, #m:requests{listener = "cdn"})
      assert.equal(1, #m:requests{method = "POST", path = "/images/"})
      assert.equal(0, #m:requests{method = "GET", listener = "api"})
    end)

    it("tells its clock's origin: time and answered, plus start, are on the caller's clock", function()
      local before = socket.gettime()
      fox("POST", "/v1/images/generations", fox_edit())
      local after = socket.gettime()
      local clock = m:clock()
      assert.is_true(clock.now >= after - 0.001)
      local r = m:requests()[1]
      assert.is_number(r.answered)
      -- the same machine's wall clock in both processes (1 ms for rounding)
      assert.is_true(clock.start + r.time >= before - 0.001 and clock.start + r.answered <= after + 0.001)
    end)

    it("is emptied by reset, as are tasks, faults and config", function()
      m:config{task_delay = 5, image_bytes = 100}
      m:faults{{path = "/nothing"}}
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit())
      m:reset()
      assert.same({}, m:requests())
      assert.equal(404, (fox("GET", "/v1/tasks/" .. task.id)))
      local _, _, _, json = request("GET", m.api .. "/_mock/config")
      assert.equal(0.4, json.config.task_delay)
      assert.equal("completed", json.config.task_outcome)
      assert.same({KEY}, json.config.keys)
      _, _, _, json = request("GET", m.api .. "/_mock/faults")
      assert.same({}, json.faults)
    end)
  end)

  describe("control endpoints", function()
    it("refuse unknown config keys and invalid values with 400", function()
      for _, bad in ipairs({{task_delai = 1}, {task_delay = -1}, {task_outcome = "done"},
                            {result_shape = "list"}, {image_bytes = 0}, {keys = "sk"}}) do
        local status, _, _, json = request("POST", m.api .. "/_mock/config", bad)
        assert.equal(400, status)
        assert.equal("invalid_request_error", json.error.type)
      end
      assert.has_error(function() m:config{nope = true} end)
    end)

    it("refuse invalid faults with 400", function()
      for _, bad in ipairs({{kind = "explode"}, {status = 99}, {times = 0}, {colour = "red"},
                            {path_match = "[unclosed"}, {listener = "both"}}) do
        local status = request("POST", m.api .. "/_mock/faults", {faults = {bad}})
        assert.equal(400, status)
      end
      assert.equal(400, (request("POST", m.api .. "/_mock/faults", {nope = {}})))
    end)

    it("answer 404 for an unknown control path", function()
      assert.equal(404, (request("GET", m.api .. "/_mock/nothing")))
    end)
  end)

  describe("faults", function()
    local GEN = "/foxapi/v1/images/generations"

    it("status: replies the status with a JSON error body, `times` times", function()
      m:faults{{path = GEN, status = 503, times = 2,
                headers = {["Retry-After"] = "1", ["X-Request-Id"] = "req-fault"}}}
      for _ = 1, 2 do
        local status, h, _, json = fox("POST", "/v1/images/generations", fox_edit())
        assert.equal(503, status)
        assert.equal("1", h["retry-after"])
        assert.equal("req-fault", h["x-request-id"])
        assert.equal("service_unavailable_error", json.error.type)
      end
      assert.equal(200, (fox("POST", "/v1/images/generations", fox_edit())))
      assert.equal(3, #m:requests{path = GEN})
    end)

    it("status: a custom body, method and listener filters, path_match", function()
      m:faults{
        {listener = "cdn", status = 500, body = ""},
        {method = "GET", path_match = "^/foxapi/v1/tasks/", status = 429,
         body = {error = {message = "slow down", type = "rate_limit_error"}}},
      }
      local status, _, text = request("GET", m.cdn .. "/files/a.png")
      assert.equal(500, status)
      assert.equal("", text)
      assert.equal(401, (fox("POST", "/v1/images/generations", fox_edit(), {})))
      local json
      status, _, _, json = fox("GET", "/v1/tasks/abc")
      assert.equal(429, status)
      assert.equal("slow down", json.error.message)
      assert.equal(404, (fox("GET", "/v1/tasks/abc")))
    end)

    it("html: a status with an HTML body", function()
      m:faults{{kind = "html", path = GEN}}
      local status, h, text = fox("POST", "/v1/images/generations", fox_edit())
      assert.equal(502, status)
      assert.truthy(h["content-type"]:find("text/html", 1, true))
      assert.truthy(text:find("<html>", 1, true))
    end)

    it("redirect: 302 to location", function()
      m:faults{{kind = "redirect", location = "http://127.0.0.1:9/elsewhere"}}
      local status, h = fox("GET", "/v1/tasks/x")
      assert.equal(302, status)
      assert.equal("http://127.0.0.1:9/elsewhere", h.location)
    end)

    it("truncated_json: 200 with a cut JSON body", function()
      m:faults{{kind = "truncated_json", path = GEN}}
      local status, h, text, json = fox("POST", "/v1/images/generations", fox_edit())
      assert.equal(200, status)
      assert.equal("application/json", h["content-type"])
      assert.equal(#text, tonumber(h["content-length"]))
      assert.is_true(#text > 0)
      assert.is_nil(json)
    end)

    it("big: a 200 body of `bytes` bytes", function()
      m:faults{{kind = "big", bytes = 3 * 65536 + 7, listener = "cdn"}}
      local status, h, text = request("GET", m.cdn .. "/files/any.png")
      assert.equal(200, status)
      assert.equal(3 * 65536 + 7, #text)
      assert.equal(#text, tonumber(h["content-length"]))
    end)

    it("bad_base64: b64_json with invalid characters", function()
      m:faults{{kind = "bad_base64"}}
      local status, _, _, json = pt("/v1/images/edits", pt_edit{n = 2, response_format = "b64_json"})
      assert.equal(200, status)
      for _, item in ipairs(json.data) do
        assert.truthy(item.b64_json:find("[^A-Za-z0-9+/=]"))
      end
    end)

    it("reset: sends half of the normal body, then closes", function()
      m:faults{{kind = "reset", path = GEN}}
      local c = raw_connect(m.api)
      local body = cjson.encode(fox_edit())
      c:send("POST " .. GEN .. " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " .. KEY
        .. "\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
      local status, err, partial = read_response(c)
      c:close()
      assert.is_nil(status)
      assert.equal("closed", err)
      assert.is_true(#partial > 10)
      -- The task was created all the same: the client must not resend.
      assert.equal(1, #m:requests{path = GEN})

      -- A download (a body of many pieces) is cut the same way.
      m:config{task_delay = 0, image_bytes = 300000}
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit())
      local url = poll_until_done(task.id).results[1].url
      m:faults{{kind = "reset", listener = "cdn"}}
      c = raw_connect(m.cdn)
      c:send("GET " .. url:match("^http://[^/]+(/.*)$") .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      status, err, partial = read_response(c)
      c:close()
      assert.is_nil(status)
      assert.equal("closed", err)
      local full = select(3, request("GET", url))
      assert.equal(math.floor(#full / 2), #partial)
      assert.equal(full:sub(1, #partial), partial)
    end)

    it("stall: reads the request and never answers for `seconds`", function()
      m:faults{{kind = "stall", seconds = 0.5}}
      local c = raw_connect(m.api)
      local t0 = socket.gettime()
      c:send("GET /foxapi/v1/tasks/x HTTP/1.1\r\nHost: x\r\n\r\n")
      c:settimeout(0.2)
      local data, err = c:receive(1)
      assert.is_nil(data)
      assert.equal("timeout", err)
      c:settimeout(5)
      data, err = c:receive(1)
      assert.is_nil(data)
      assert.equal("closed", err)
      assert.is_true(socket.gettime() - t0 >= 0.4)
      c:close()
      assert.equal(1, #m:requests{path = "/foxapi/v1/tasks/x"})
    end)

    it("refuse: closes the connection without reading or answering", function()
      m:faults{{kind = "refuse", method = "POST"}}
      local c = raw_connect(m.api)
      c:send("POST " .. GEN .. " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        .. "Content-Length: 2\r\n\r\n{}")
      local data, err = c:receive(1)
      c:close()
      assert.is_nil(data)
      assert.truthy(err == "closed" or err:find("reset", 1, true), err)
      local log = m:requests{path = GEN}
      assert.equal(1, #log)
      assert.equal("", log[1].body)
      assert.equal(200, (fox("POST", "/v1/images/generations", fox_edit())))
    end)

    it("never applies to the control endpoints", function()
      m:faults{{status = 500}}
      assert.equal(0, #m:requests())
      local faults = m:faults{}
      assert.equal(1, #faults)
    end)
  end)

  describe("HTTP server", function()
    it("keeps connections alive and answers HEAD", function()
      m:config{task_delay = 0}
      local _, _, _, task = fox("POST", "/v1/images/generations", fox_edit())
      poll_until_done(task.id)
      local c = raw_connect(m.cdn)
      local path = "/files/" .. task.id .. "-1.png"
      c:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\nHEAD " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      local status, h, body = read_response(c)
      assert.equal(200, status)
      assert.equal("keep-alive", h.connection)
      check_png(body)
      local line = c:receive("*l")
      assert.equal("HTTP/1.1 200 OK", line)
      local length
      repeat
        line = c:receive("*l")
        length = length or tonumber(line:match("^Content%-Length: (%d+)"))
      until line == ""
      assert.equal(#body, length)
      c:send("GET /files/nope.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      status, h = read_response(c)
      assert.equal(404, status)
      assert.equal("close", h.connection)
      assert.equal("closed", select(2, c:receive(1)))
      c:close()
    end)

    it("answers Expect: 100-continue and reads chunked bodies", function()
      local c = raw_connect(m.api)
      local body = cjson.encode(fox_edit())
      c:send("POST /foxapi/v1/images/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        .. KEY .. "\r\nContent-Type: application/json\r\nContent-Length: " .. #body
        .. "\r\nExpect: 100-continue\r\n\r\n")
      assert.equal(100, (read_response(c)))
      c:send(body)
      assert.equal(200, (read_response(c)))
      c:send("POST /foxapi/v1/images/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        .. KEY .. "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. ("%x\r\n%s\r\n"):format(10, body:sub(1, 10))
        .. ("%x;ext=1\r\n%s\r\n"):format(#body - 10, body:sub(11)) .. "0\r\n\r\n")
      local status, _, text = read_response(c)
      assert.equal(200, status, text)
      c:close()
      local log = m:requests{method = "POST"}
      assert.equal(2, #log)
      assert.equal(body, log[2].body)
    end)

    it("takes a request without framing as bodiless, refuses bad framing", function()
      local c = raw_connect(m.api)
      c:send("POST /foxapi/v1/images/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        .. KEY .. "\r\nContent-Type: application/json\r\n\r\n")
      local status = read_response(c)
      assert.equal(400, status) -- an empty body is not JSON
      c:close()
      c = raw_connect(m.api)
      c:send("POST /x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")
      assert.equal(413, (read_response(c)))
      c:close()
      c = raw_connect(m.api)
      c:send("POST /x HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n")
      assert.equal(400, (read_response(c)))
      c:close()
      c = raw_connect(m.api)
      c:send("NONSENSE\r\n\r\n")
      local h
      status, h = read_response(c)
      assert.equal(400, status)
      assert.truthy(h["x-request-id"])
      c:close()
      c = raw_connect(m.api)
      c:send("POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
      assert.equal(400, (read_response(c)))
      c:close()
    end)

    it("serves 300 concurrent keep-alive connections", function()
      local conns = {}
      for i = 1, 300 do conns[i] = raw_connect(m.cdn) end
      for round = 1, 2 do
        for i, c in ipairs(conns) do
          assert(c:send(("GET /files/c%d-%d.png HTTP/1.1\r\nHost: x\r\n\r\n"):format(i, round)))
        end
        for _, c in ipairs(conns) do
          assert.equal(404, (read_response(c)))
        end
      end
      for _, c in ipairs(conns) do c:close() end
      assert.equal(600, #m:requests{listener = "cdn"})
    end)
  end)
end)
