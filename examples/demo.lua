-- `make demo`: one edit through each provider, against the local emulator.
--
-- Starts the emulator, edits an image with foxapi (asynchronous: submit,
-- poll, download) and with powertokens (synchronous, base64 result, the
-- input sent as a local file), writes the PNGs and prints their paths.
local imgedit = require("imgedit")
local mock = require("imgedit.mock.process")

local out_dir = arg[1] or "demo-output"
assert(os.execute("mkdir -p '" .. out_dir .. "'"))

local emulator = mock.start({ config = { task_delay = 2 } })
print("emulator: foxapi at " .. emulator.foxapi .. ", powertokens at " .. emulator.powertokens)

local function check(value, err)
  if value == nil then
    emulator:stop()
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
  return value
end

-- foxapi: the task runs for two seconds on the emulator; progress is reported
local fox = check(imgedit.client("foxapi", { api_key = "sk-test", base_url = emulator.foxapi }))
local fox_result = check(fox:edit({
  prompt = "Change the background to a tropical beach at sunset",
  images = { "https://example.com/portrait.jpg" },
  on_progress = function(task)
    print(("foxapi: task %s %s %d%%"):format(task.id, task.status, task.progress or 0))
  end,
}))
local fox_paths = check(fox_result:save_all(out_dir, "foxapi"))

-- powertokens: the foxapi result goes back in as a local file
local pt = check(imgedit.client("powertokens", { api_key = "sk-test", base_url = emulator.powertokens }))
local pt_result = check(pt:edit({
  prompt = "Replace the background with a seaside sunset",
  images = { imgedit.file(fox_paths[1]) },
  size = "1024x1024", seed = 0, watermark = false, response_format = "b64_json",
}))
local pt_paths = check(pt_result:save_all(out_dir, "powertokens"))

emulator:stop()
for _, path in ipairs(fox_paths) do print("wrote " .. path) end
for _, path in ipairs(pt_paths) do print("wrote " .. path) end
