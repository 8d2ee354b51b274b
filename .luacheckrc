-- luacheck configuration: the library runs on Lua 5.1 to 5.4 and LuaJIT.
std = "max"
max_line_length = 120
unused_args = true
files["spec"] = { std = "+busted" }
files["bench"] = { max_line_length = 140 }
exclude_files = { "build", ".luarocks", "lua_modules" }
-- type definitions for lua-language-server: empty stubs by design
-- (its model types are generated from the catalogs: unions of every choice)
files["lua/imgedit/meta.lua"] = { unused_args = false, unused = false, max_line_length = false }
