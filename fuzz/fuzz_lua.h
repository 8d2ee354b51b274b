/*
 * Shared by the harnesses that need Lua: one lua_State for the whole run,
 * with imgedit.core opened exactly as `require("imgedit.core")` would (its
 * objects are linked into the fuzzer; cjson.safe comes from package.cpath,
 * i.e. Debian's lua-cjson, as in production).
 */
#ifndef IMGEDIT_FUZZ_LUA_H
#define IMGEDIT_FUZZ_LUA_H

#include <stdio.h>
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

int luaopen_imgedit_core(lua_State *L);

#define FUZZ_CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

/* A state with the standard libraries and the core; the module table on top. */
static inline lua_State *fuzz_lua_open(void)
{
	lua_State *L = luaL_newstate();

	FUZZ_CHECK(L != NULL);
	luaL_openlibs(L);
	lua_pushcfunction(L, luaopen_imgedit_core);
	lua_pushliteral(L, "imgedit.core");
	if (lua_pcall(L, 1, 1, 0) != 0) {
		fprintf(stderr, "cannot open imgedit.core: %s\n", lua_tostring(L, -1));
		abort();
	}
	FUZZ_CHECK(lua_istable(L, -1));
	return L;
}

/* cjson.safe's function `name`, pushed (the module caches the same table). */
static inline void fuzz_push_cjson(lua_State *L, const char *name)
{
	lua_getglobal(L, "require");
	lua_pushliteral(L, "cjson.safe");
	lua_call(L, 1, 1);
	lua_getfield(L, -1, name);
	lua_remove(L, -2);
	FUZZ_CHECK(lua_isfunction(L, -1));
}

#endif
