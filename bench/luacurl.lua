-- W1's peer: the same sequential POSTs through Debian's lua-curl (package
-- lua-curl, `require("curl")`: a thin binding of libcurl's easy interface,
-- built for Lua 5.1 and 5.2 only), for bench/run.lua's W1 table.
--
--   lua5.1 bench/luacurl.lua URL KEY N
--
-- What bench/baseline.c's w1 does, from Lua: one reused easy handle, the
-- JSON body of a foxapi submission as a fixed string, the Authorization and
-- Content-Type headers, each response buffered (chunks, then concatenated)
-- and checked to start as JSON does (this binding has no getinfo for the
-- status). Nothing is validated, encoded or decoded.
-- Prints one JSON line: workload, n, wall (seconds), cpu (os.clock).

local cjson = require("cjson")
local curl = require("curl")
local socket = require("socket")

local BODY = '{"model":"phota-image-edit","prompt":"a cat in a hat","image_urls":["https://example.com/p.jpg"],'
  .. '"num_outputs":1,"resolution":"1K"}'

local url, key, n = arg[1], arg[2], tonumber(arg[3])
if not (url and key and n) then
  io.stderr:write("usage: lua5.1 bench/luacurl.lua URL KEY N\n")
  os.exit(2)
end

local easy = curl.easy_init()
local chunks = {}
easy:setopt(curl.OPT_URL, url)
easy:setopt(curl.OPT_HTTPHEADER, { "Authorization: Bearer " .. key, "Content-Type: application/json" })
easy:setopt(curl.OPT_POSTFIELDS, BODY)
easy:setopt(curl.OPT_WRITEFUNCTION, function(data, len)
  chunks[#chunks + 1] = data
  return len
end)

local t0, c0 = socket.gettime(), os.clock()
for i = 1, n do
  for k = #chunks, 1, -1 do chunks[k] = nil end
  local code, message = easy:perform()
  local body = table.concat(chunks)
  if code ~= 0 or body:sub(1, 1) ~= "{" then
    io.stderr:write(("luacurl: request %d failed: %s %s\n"):format(i, tostring(code), tostring(message)))
    os.exit(1)
  end
end
local out = { workload = "w1luacurl", n = n, wall = socket.gettime() - t0, cpu = os.clock() - c0 }
io.stdout:write(cjson.encode(out), "\n")
