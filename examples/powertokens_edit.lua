-- Edit an image with powertokens (Qwen / Wan models): one synchronous
-- request; the images come back as URLs, saved here to disk.
--
--   POWERTOKENS_API_KEY=... lua5.4 examples/powertokens_edit.lua [output-dir]
--
-- POWERTOKENS_BASE_URL points it at a gateway or at the emulator.
local imgedit = require("imgedit")

local out_dir = arg[1] or "."
local pt = assert(imgedit.client("powertokens"))

local result, err = pt:edit({
  prompt = "Replace the background with a seaside sunset",
  images = { "https://example.com/source.webp" },
  size = "1536x1024",          -- sent as 1536*1024
  n = 2,
  seed = 0,                    -- an explicit 0 is sent and kept
  watermark = false,
  negative_prompt = "low quality",
})
if not result then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end

for i, image in ipairs(result.images) do
  -- streamed to disk, no API key sent to the result host; the file appears
  -- only once complete
  local path = assert(image:save(("%s/sunset-%d.png"):format(out_dir, i)))
  print(path, image.revised_prompt or "")
end
