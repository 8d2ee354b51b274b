-- Many edits at once, in one thread: imgedit.gather runs them as
-- coroutines over one libcurl multi handle; a failure does not stop the
-- others.
--
--   FOXAPI_API_KEY=... POWERTOKENS_API_KEY=... lua5.4 examples/batch.lua [output-dir]
local imgedit = require("imgedit")

local out_dir = arg[1] or "."
local fox = assert(imgedit.client("foxapi"))
local pt = assert(imgedit.client("powertokens"))

local photos = {
  "https://example.com/shoe-1.jpg", "https://example.com/shoe-2.jpg",
  "https://example.com/shoe-3.jpg", "https://example.com/shoe-4.jpg",
}

local jobs = {}
for i, url in ipairs(photos) do
  jobs[#jobs + 1] = function()
    local result, err = fox:edit({ prompt = "Pure white studio background", images = { url } })
    if not result then return nil, err end
    return result:save_all(out_dir, "studio-" .. i)
  end
  jobs[#jobs + 1] = function()
    local result, err = pt:edit({ prompt = "Outdoor street scene", images = { url }, size = "1024x1024" })
    if not result then return nil, err end
    return result:save_all(out_dir, "street-" .. i)
  end
end

local failed = 0
for i, outcome in ipairs(imgedit.gather(jobs, { concurrency = 8 })) do
  if outcome.ok then
    print(("job %d: %s"):format(i, table.concat(outcome.value, " ")))
  else
    failed = failed + 1
    print(("job %d failed: %s"):format(i, tostring(outcome.err)))
  end
end
os.exit(failed == 0 and 0 or 1)
