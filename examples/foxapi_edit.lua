-- Edit an image with foxapi (PHOTA models): submit a task, follow its
-- progress, save the results.
--
--   FOXAPI_API_KEY=... lua5.4 examples/foxapi_edit.lua [output-dir]
--
-- FOXAPI_BASE_URL points it at a gateway or at the emulator (imgedit mock).
local imgedit = require("imgedit")

local out_dir = arg[1] or "."
local fox = assert(imgedit.client("foxapi"))

local result, err = fox:edit({
  prompt = "Change the background to a tropical beach at sunset",
  images = { "https://example.com/portrait.jpg" },   -- public URLs only
  resolution = "1K",
  on_progress = function(task)
    print(("task %s: %s %d%%"):format(task.id, task.status, task.progress or 0))
  end,
})
if not result then
  io.stderr:write(tostring(err), "\n")
  -- a wait that ran out leaves the task running: err.task_id resumes it
  os.exit(1)
end

local paths, save_err = result:save_all(out_dir, "beach")
if not paths then
  io.stderr:write(tostring(save_err), "\n")
  os.exit(1)
end
for _, path in ipairs(paths) do print(path) end
