--- A small Neovim plugin on imgedit: edit the image whose path or URL is
-- under the cursor. `plugin/imgedit.lua` defines the command; this module
-- does the work.
--
--     require("imgedit_nvim").setup({          -- optional: client options per provider
--       foxapi = { api_key = os.getenv("FOXAPI_KEY") },
--       powertokens = { api_key = os.getenv("POWERTOKENS_KEY") },
--     })
--
-- then, with the cursor on `photos/cat.png` or on `https://.../cat.jpg`:
--
--     :ImgeditEdit Make the sky stormy
--
-- A URL goes to the first provider set up (registry order), a local file to
-- the first one set up that takes local files. Without `setup`, every
-- provider is set up from its environment variables. The edit runs in
-- `imgedit.async`: the editor goes on meanwhile; the progress (a task's
-- status and percent) and, when done, the saved paths are reported with
-- `vim.notify`. A local image's results are saved beside it (cat.png ->
-- cat-edited.png, cat-edited-2.png, ...); a URL's in the current directory.
-- `:checkhealth imgedit` checks the set-up, with the options given here.

-- luacheck: globals vim

local imgedit = require("imgedit")
local providers = require("imgedit.providers")

local M = {}

local clients, order = {}, {}

local function notify(message, level)
  vim.notify("imgedit: " .. message, level or vim.log.levels.INFO)
end

--- Creates the clients: `opts[provider]` goes to `imgedit.client(provider,
-- ...)`; without `opts`, every provider of the registry, from the
-- environment. The health check is told the same options.
function M.setup(opts)
  local given = opts ~= nil
  opts = opts or {}
  clients, order = {}, {}
  local used = {}
  for _, name in ipairs(providers.names()) do
    if opts[name] or not given then
      clients[name] = assert(imgedit.client(name, opts[name] or {}))
      order[#order + 1] = name
      used[name] = opts[name] or {}
    end
  end
  require("imgedit.health").setup(used)
end

local function exists(path)
  return vim.fn.filereadable(path) == 1
end

--- The image under the cursor: `{url = ...}` or `{path = ...}`, with the
-- path prefix its results go to; or nil and why not.
local function under_cursor()
  local name = vim.fn.expand("<cfile>")
  if name == "" then return nil, "no path or URL under the cursor" end
  if name:match("^https?://") then
    local base = name:match("([^/?#]+)%.%w+[?#]?[^/]*$") or "image"
    return { url = name, out = ("%s/%s-edited"):format(vim.fn.getcwd(), base) }
  end
  -- relative to the buffer's directory first, then to the current one
  local path = vim.fn.expand("%:p:h") .. "/" .. name
  if name:sub(1, 1) == "/" or not exists(path) then path = vim.fn.fnamemodify(name, ":p") end
  if not exists(path) then return nil, "no such file: " .. name end
  return { path = path, out = (path:gsub("%.%w+$", "")) .. "-edited" }
end

--- The provider set up for this image, or nil.
local function provider_for(image)
  for _, name in ipairs(order) do
    if image.url or providers.get(name).local_files then return name end
  end
  return nil
end

--- Where result `i` of `n` goes: out.png, then out-2.png, ...
local function result_path(out, i)
  return i == 1 and (out .. ".png") or ("%s-%d.png"):format(out, i)
end

--- Edits the image under the cursor with `prompt`; returns the handle of
-- the coroutine doing it (its results: the saved paths, or nil and an error).
function M.edit_under_cursor(prompt)
  if #order == 0 then M.setup() end
  local image, problem = under_cursor()
  if not image then return notify(problem, vim.log.levels.WARN) end
  local provider = provider_for(image)
  if not provider then
    return notify(("set up a provider that takes %s"):format(image.url and "URLs" or "local files"),
      vim.log.levels.WARN)
  end
  local client = clients[provider]
  notify(("editing %s with %s"):format(image.url or vim.fn.fnamemodify(image.path, ":~:."), provider))

  return imgedit.async(function()
    local request = { prompt = prompt, images = { image.url or imgedit.file(image.path) } }
    if providers.get(provider).asynchronous then
      -- a task: report how far it got
      request.on_progress = function(task)
        notify(("task %s: %s %d%%"):format(task.id, task.status, task.progress or 0))
      end
    end
    local result, err = client:edit(request)
    local saved = {}
    if result then
      for i, img in ipairs(result.images) do
        local path
        path, err = img:save(result_path(image.out, i))
        if not path then break end
        saved[#saved + 1] = vim.fn.fnamemodify(path, ":~:.")
      end
    end
    if err then
      notify(tostring(err), vim.log.levels.ERROR)
      return nil, err
    end
    notify("saved " .. table.concat(saved, ", "))
    return saved
  end)
end

return M
