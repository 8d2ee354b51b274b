--- A small Neovim plugin on imgedit: edit the image whose path or URL is
-- under the cursor.
--
--     require("imgedit_nvim").setup({
--       foxapi = { api_key = os.getenv("FOXAPI_KEY") },           -- for http(s) URLs
--       powertokens = { api_key = os.getenv("POWERTOKENS_KEY") }, -- for local files
--     })
--
-- then, with the cursor on `photos/cat.png` or on `https://.../cat.jpg`:
--
--     :ImgeditEdit Make the sky stormy
--
-- The edit runs in `imgedit.async`: the editor goes on meanwhile, and the
-- progress is reported with `vim.notify`. A local image's result is saved
-- beside it (cat.png -> cat-edited.png); a URL's in the current directory.
-- See README.md in this directory to try it against the local emulator.

-- luacheck: globals vim

local imgedit = require("imgedit")

local M = {}

local clients = {}

local function notify(message, level)
  vim.notify("imgedit: " .. message, level or vim.log.levels.INFO)
end

--- Creates the clients (each table goes to `imgedit.client`) and the
-- :ImgeditEdit command.
function M.setup(opts)
  opts = opts or {}
  for _, provider in ipairs({ "foxapi", "powertokens" }) do
    if opts[provider] then
      clients[provider] = assert(imgedit.client(provider, opts[provider]))
    end
  end
  vim.api.nvim_create_user_command("ImgeditEdit", function(command)
    M.edit_under_cursor(command.args)
  end, { nargs = "+", desc = "Edit the image whose path or URL is under the cursor" })
end

local function exists(path)
  return vim.fn.filereadable(path) == 1
end

--- The image under the cursor: `{url = ...}` or `{path = ...}`, with the
-- path its result goes to; or nil and why not.
local function under_cursor()
  local name = vim.fn.expand("<cfile>")
  if name == "" then return nil, "no path or URL under the cursor" end
  if name:match("^https?://") then
    local base = name:match("([^/?#]+)%.%w+[?#]?[^/]*$") or "image"
    return { url = name, out = ("%s/%s-edited.png"):format(vim.fn.getcwd(), base) }
  end
  -- relative to the buffer's directory first, then to the current one
  local path = vim.fn.expand("%:p:h") .. "/" .. name
  if name:sub(1, 1) == "/" or not exists(path) then path = vim.fn.fnamemodify(name, ":p") end
  if not exists(path) then return nil, "no such file: " .. name end
  return { path = path, out = (path:gsub("%.%w+$", "")) .. "-edited.png" }
end

--- Edits the image under the cursor with `prompt`; returns the handle of
-- the coroutine doing it (its results: the saved path, or nil and an error).
function M.edit_under_cursor(prompt)
  local image, problem = under_cursor()
  if not image then return notify(problem, vim.log.levels.WARN) end
  local provider = image.url and "foxapi" or "powertokens"
  local client = clients[provider]
  if not client then
    return notify(("set up %s to edit %s"):format(provider, image.url and "URLs" or "local files"),
      vim.log.levels.WARN)
  end
  notify(("editing %s with %s"):format(image.url or vim.fn.fnamemodify(image.path, ":~:."), provider))

  return imgedit.async(function()
    local request = { prompt = prompt, images = { image.url or imgedit.file(image.path) } }
    if provider == "foxapi" then
      -- foxapi runs the edit as a task and reports how far it got
      request.on_progress = function(task)
        notify(("task %s: %s %d%%"):format(task.id, task.status, task.progress or 0))
      end
    end
    local result, err = client:edit(request)
    if result then result, err = result.images[1]:save(image.out) end
    if not result then
      notify(tostring(err), vim.log.levels.ERROR)
      return nil, err
    end
    notify("saved " .. vim.fn.fnamemodify(image.out, ":~:."))
    return image.out
  end)
end

return M
