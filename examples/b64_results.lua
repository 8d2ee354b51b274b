-- Ask powertokens for the images themselves (base64) instead of URLs, and
-- send a local file as the input (a data: URI is made from it).
--
--   POWERTOKENS_API_KEY=... lua5.4 examples/b64_results.lua input.png [output-dir]
local imgedit = require("imgedit")

local input, out_dir = arg[1], arg[2] or "."
if not input then
  io.stderr:write("usage: b64_results.lua input.png [output-dir]\n")
  os.exit(2)
end
local pt = assert(imgedit.client("powertokens"))

local result, err = pt:edit({
  prompt = "Turn it into a watercolour",
  images = { imgedit.file(input) },     -- MIME type from the file's first bytes
  response_format = "b64_json",
  n = 2,
})
if not result then
  io.stderr:write(tostring(err), "\n")
  os.exit(err.kind == "invalid_request" and 2 or 1)
end

-- decoded, written to a temporary name, renamed when complete; the
-- extension follows the image's actual type
for _, path in ipairs(assert(result:save_all(out_dir, "watercolour"))) do print(path) end
