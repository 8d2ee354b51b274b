/*
 * Every version check of the module, of Lua and of libcurl, is in this
 * file; the rest of the module calls only these compat_ names.
 *
 * Lua: the few C API calls whose spelling differs between Lua 5.1 / LuaJIT
 * and Lua 5.2-5.4. LuaJIT 2.1 already ships some 5.2 functions
 * (luaL_setfuncs, luaL_setmetatable) but not all of them; prefixed names
 * avoid clashing with whichever ones a given 5.1 flavour has.
 *
 * libcurl: the oldest release the module builds against, and the options
 * and infos that newer releases replaced or added.
 */
#ifndef IMGEDIT_COMPAT_H
#define IMGEDIT_COMPAT_H

#include <curl/curl.h>
#include <lua.h>
#include <lauxlib.h>
#if LUA_VERSION_NUM == 501 && defined(__has_include)
#if __has_include(<luajit.h>)
#include <luajit.h>
#endif
#endif

/*
 * Whether the running coroutine may yield (not across a C call such as a
 * gsub callback): lua_isyieldable is Lua 5.3's, and LuaJIT 2.1's, where
 * OpenResty's coroutine table lacks coroutine.isyieldable. A core built
 * for LuaJIT may be loaded by PUC Lua 5.1 (same ABI), which lacks the
 * function: there it is a weak symbol, NULL when the host has none. Lua
 * 5.1 cannot tell, and says yes.
 */
#if LUA_VERSION_NUM >= 503
#define compat_isyieldable(L) lua_isyieldable(L)
#elif defined(LUAJIT_VERSION_NUM) && LUAJIT_VERSION_NUM >= 20100 && defined(__GNUC__)
#pragma weak lua_isyieldable
#define compat_isyieldable(L) (lua_isyieldable == NULL || lua_isyieldable(L))
#else
#define compat_isyieldable(L) ((void)(L), 1)
#endif

/*
 * 7.66.0 brought curl_multi_poll, the newest call the module cannot do
 * without (the CURLINFO_*_T timings are from 7.61.0, CURL_HTTP_VERSION_3
 * from 7.66.0).
 */
#define COMPAT_CURL_MINIMUM "7.66.0"
#if LIBCURL_VERSION_NUM < 0x074200
#error "imgedit needs libcurl 7.66.0 or newer"
#endif

/* Only http and https, however a URL or a redirect is spelled. */
static inline CURLcode compat_http_only(CURL *easy)
{
#if LIBCURL_VERSION_NUM >= 0x075500
	return curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	return curl_easy_setopt(easy, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
}

/*
 * The largest request body the running libcurl sends without "Expect:
 * 100-continue" over HTTP/1.1 (lib/http.h, EXPECT_100_THRESHOLD): 1 KiB
 * before 7.69.0, 1 MiB since. Asked of the library loaded, not of the
 * headers built against.
 */
static inline long compat_expect_threshold(void)
{
	return curl_version_info(CURLVERSION_NOW)->version_num >= 0x074500 ? 1024L * 1024L : 1024L;
}

/* The CA bundle and directory libcurl was built to use (CURLINFO_CAINFO, 7.84.0). */
#if LIBCURL_VERSION_NUM >= 0x075400
#define COMPAT_HAVE_CA_INFO 1
#else
#define COMPAT_HAVE_CA_INFO 0
#endif

/*
 * CURLE_TOO_LARGE (8.6.0): what newer libcurls return where older ones say
 * CURLE_OUT_OF_MEMORY when one of their own size limits is hit. Compared
 * by value: the library loaded may be newer than the headers.
 */
#define COMPAT_CURLE_TOO_LARGE 100

/* Feature bits of curl_version_info newer than the minimum (0 when unknown). */
#ifdef CURL_VERSION_THREADSAFE
#define COMPAT_VERSION_THREADSAFE CURL_VERSION_THREADSAFE
#else
#define COMPAT_VERSION_THREADSAFE 0
#endif
#ifdef CURL_VERSION_ZSTD
#define COMPAT_VERSION_ZSTD CURL_VERSION_ZSTD
#else
#define COMPAT_VERSION_ZSTD 0
#endif

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
