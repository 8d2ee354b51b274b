-- imgedit for Neovim: the :ImgeditEdit command. The plugin's module is
-- loaded on first use; `require("imgedit_nvim").setup{...}` (optional) gives
-- the clients' options.

-- luacheck: globals vim

if vim.g.loaded_imgedit_nvim then return end
vim.g.loaded_imgedit_nvim = true

vim.api.nvim_create_user_command("ImgeditEdit", function(command)
  require("imgedit_nvim").edit_under_cursor(command.args)
end, { nargs = "+", desc = "Edit the image whose path or URL is under the cursor" })
