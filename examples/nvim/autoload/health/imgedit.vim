" :checkhealth imgedit, where imgedit's own lua/imgedit/health.lua is on
" package.path (a LuaRocks tree, a checkout) rather than on 'runtimepath'.
function! health#imgedit#check() abort
  lua require("imgedit.health").check()
endfunction
