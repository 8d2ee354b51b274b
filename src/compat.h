/*
 * The few Lua C API calls whose spelling differs between Lua 5.1 / LuaJIT
 * and Lua 5.2-5.4. The rest of the module calls only these compat_ names,
 * so version checks live in this file alone. LuaJIT 2.1 already ships some
 * 5.2 functions (luaL_setfuncs, luaL_setmetatable) but not all of them;
 * prefixed names avoid clashing with whichever ones a given 5.1 flavour has.
 */
#ifndef IMGEDIT_COMPAT_H
#define IMGEDIT_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM == 501

static inline int compat_absindex(lua_State *L, int idx)
{
	return (idx > 0 || idx <= LUA_REGISTRYINDEX) ? idx : lua_gettop(L) + idx + 1;
}

static inline void compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
	int i;

	luaL_checkstack(L, nup + 1, "too many upvalues");
	for (; l->name != NULL; l++) {
		for (i = 0; i < nup; i++)
			lua_pushvalue(L, -nup);
		lua_pushcclosure(L, l->func, nup);
		lua_setfield(L, -(nup + 2), l->name);
	}
	lua_pop(L, nup);
}

static inline size_t compat_rawlen(lua_State *L, int idx)
{
	return lua_objlen(L, idx);
}

/* 5.1 has no user values; a userdata's environment table serves instead. */
static inline void compat_getuservalue(lua_State *L, int idx)
{
	lua_getfenv(L, idx);
}

static inline void compat_setuservalue(lua_State *L, int idx)
{
	lua_setfenv(L, idx);
}

#else

static inline int compat_absindex(lua_State *L, int idx)
{
	return lua_absindex(L, idx);
}

static inline void compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
	luaL_setfuncs(L, l, nup);
}

static inline size_t compat_rawlen(lua_State *L, int idx)
{
	return (size_t)lua_rawlen(L, idx);
}

/* On 5.4 these address user value 1, which lua_newuserdata always reserves. */
static inline void compat_getuservalue(lua_State *L, int idx)
{
	(void)lua_getuservalue(L, idx);
}

static inline void compat_setuservalue(lua_State *L, int idx)
{
	(void)lua_setuservalue(L, idx);
}

#endif

/*
 * A userdata with nslots Lua values attached, read and written by number
 * (from 1): on 5.4 its own user values, elsewhere a table as its user value
 * (one more allocation). compat_setslot pops the value it stores.
 */
#if LUA_VERSION_NUM >= 504

static inline void *compat_newuserdata_slots(lua_State *L, size_t size, int nslots)
{
	return lua_newuserdatauv(L, size, nslots);
}

static inline void compat_getslot(lua_State *L, int idx, int n)
{
	(void)lua_getiuservalue(L, idx, n);
}

static inline void compat_setslot(lua_State *L, int idx, int n)
{
	(void)lua_setiuservalue(L, idx, n);
}

#else

static inline void *compat_newuserdata_slots(lua_State *L, size_t size, int nslots)
{
	void *p = lua_newuserdata(L, size);

	lua_createtable(L, nslots, 0);
	compat_setuservalue(L, -2);
	return p;
}

static inline void compat_getslot(lua_State *L, int idx, int n)
{
	compat_getuservalue(L, idx);
	lua_rawgeti(L, -1, n);
	lua_remove(L, -2);
}

static inline void compat_setslot(lua_State *L, int idx, int n)
{
	idx = compat_absindex(L, idx);
	compat_getuservalue(L, idx);
	lua_insert(L, -2);
	lua_rawseti(L, -2, n);
	lua_pop(L, 1);
}

#endif

static inline void compat_setmetatable(lua_State *L, const char *tname)
{
	luaL_getmetatable(L, tname);
	lua_setmetatable(L, -2);
}

#endif
