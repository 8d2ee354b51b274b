-- Submit a foxapi task in one process and collect it in another: the task
-- id is all that is needed (results stay on the provider for 24 hours).
--
--   lua5.4 examples/resume_task.lua submit          -> prints the task id
--   lua5.4 examples/resume_task.lua wait ID [dir]   -> waits, saves the images
local imgedit = require("imgedit")

local fox = assert(imgedit.client("foxapi"))
local command, id, out_dir = arg[1], arg[2], arg[3] or "."

if command == "submit" then
  local task, err = fox:submit({
    prompt = "Change the background to a snowy mountain",
    images = { "https://example.com/portrait.jpg" },
  })
  if not task then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
  print(task.id)
elseif command == "wait" and id then
  local result, err = assert(fox:task(id)):wait({ timeout = 600 })
  if not result then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
  for _, path in ipairs(assert(result:save_all(out_dir))) do print(path) end
else
  io.stderr:write("usage: resume_task.lua submit | resume_task.lua wait TASK_ID [dir]\n")
  os.exit(2)
end
