/*
 * Multi: owns one CURLM*. Transfers hold a strong reference to their Multi;
 * the Multi only knows them through the C list m->attached (so an abandoned
 * in-flight Transfer can still be collected) and through a weak table that
 * maps each Transfer* back to its userdata for m:done().
 */
#include <limits.h>

#include "imgedit.h"

/* Idle connections kept for reuse, across all hosts. */
#define MAX_CACHED_CONNECTIONS 64L

/* Slots of the table held as the Multi's user value. */
enum {
	UV_TRANSFERS = 1, /* lightuserdata Transfer* -> Transfer userdata, weak values */
	UV_DONE           /* array of Transfers finished since the last m:done() */
};

static Multi *check_multi(lua_State *L)
{
	return luaL_checkudata(L, 1, MULTI_MT);
}

static Multi *check_open(lua_State *L)
{
	Multi *m = check_multi(L);

	if (m->handle == NULL)
		luaL_error(L, "attempt to use a closed multi handle");
	return m;
}

static int multi_new(lua_State *L)
{
	Multi *m = lua_newuserdata(L, sizeof *m);

	m->handle = NULL;
	m->attached = NULL;
	m->count = 0;
	compat_setmetatable(L, MULTI_MT);

	lua_createtable(L, 2, 0);
	lua_newtable(L);
	lua_createtable(L, 0, 1);
	lua_pushliteral(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_rawseti(L, -2, UV_TRANSFERS);
	lua_newtable(L);
	lua_rawseti(L, -2, UV_DONE);
	compat_setuservalue(L, -2);

	m->handle = curl_multi_init();
	if (m->handle == NULL)
		return luaL_error(L, "cannot create a curl multi handle");
	/* HTTP/2 requests to one host share a connection instead of opening more. */
	(void)curl_multi_setopt(m->handle, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	(void)curl_multi_setopt(m->handle, CURLMOPT_MAXCONNECTS, MAX_CACHED_CONNECTIONS);
	return 1;
}

static int multi_add(lua_State *L)
{
	Multi *m = check_open(L);
	Transfer *t = transfer_create(L, m, lua_upvalueindex(1));

	if (t == NULL)
		return 2;
	compat_getuservalue(L, 1);
	lua_rawgeti(L, -1, UV_TRANSFERS);
	lua_pushlightuserdata(L, t);
	lua_pushvalue(L, -4);
	lua_rawset(L, -3);
	lua_pop(L, 2);
	return 1;
}

static int multi_perform(lua_State *L)
{
	Multi *m = check_open(L);
	int running = 0, left;
	CURLMcode rc;
	CURLMsg *msg;

	rc = curl_multi_perform(m->handle, &running);
	if (rc != CURLM_OK)
		return luaL_error(L, "curl_multi_perform failed: %s", curl_multi_strerror(rc));
	lua_settop(L, 1);
	compat_getuservalue(L, 1);
	lua_rawgeti(L, 2, UV_TRANSFERS);
	lua_rawgeti(L, 2, UV_DONE);
	while ((msg = curl_multi_info_read(m->handle, &left)) != NULL) {
		CURL *easy = msg->easy_handle;
		CURLcode code = msg->data.result;
		char *t = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		(void)curl_easy_getinfo(easy, CURLINFO_PRIVATE, &t);
		/*
		 * Finish in C before touching Lua: any Lua allocation below may run
		 * finalizers, including the one of this very Transfer if it is garbage.
		 */
		transfer_complete((Transfer *)(void *)t, code);
		lua_pushlightuserdata(L, t);
		lua_rawget(L, 3);
		if (lua_isnil(L, -1))
			lua_pop(L, 1); /* unreachable already: nobody can ask for it */
		else
			lua_rawseti(L, 4, (int)compat_rawlen(L, 4) + 1);
	}
	lua_pushinteger(L, running);
	return 1;
}

static int multi_poll(lua_State *L)
{
	Multi *m = check_open(L);
	lua_Number seconds = luaL_optnumber(L, 2, 0);
	int ms = 0, numfds = 0;
	CURLMcode rc;

	if (seconds * 1000 >= (lua_Number)INT_MAX)
		ms = INT_MAX;
	else if (seconds > 0)
		ms = (int)(seconds * 1000 + 0.5);
	rc = curl_multi_poll(m->handle, NULL, 0, ms, &numfds);
	if (rc != CURLM_OK)
		return luaL_error(L, "curl_multi_poll failed: %s", curl_multi_strerror(rc));
	lua_pushinteger(L, numfds);
	return 1;
}

static int multi_wakeup(lua_State *L)
{
	Multi *m = check_open(L);
	CURLMcode rc = curl_multi_wakeup(m->handle);

	if (rc != CURLM_OK)
		return luaL_error(L, "curl_multi_wakeup failed: %s", curl_multi_strerror(rc));
	return 0;
}

static int multi_timeout(lua_State *L)
{
	Multi *m = check_open(L);
	long ms = -1;
	CURLMcode rc = curl_multi_timeout(m->handle, &ms);

	if (rc != CURLM_OK)
		return luaL_error(L, "curl_multi_timeout failed: %s", curl_multi_strerror(rc));
	lua_pushnumber(L, ms < 0 ? -1 : (lua_Number)ms / 1000);
	return 1;
}

/* Transfers closed since they finished are left out: they have no result. */
static int multi_done(lua_State *L)
{
	size_t i, n;
	int k = 0;

	check_multi(L);
	lua_settop(L, 1);
	compat_getuservalue(L, 1);
	lua_rawgeti(L, 2, UV_DONE);
	lua_newtable(L);
	lua_rawseti(L, 2, UV_DONE);
	n = compat_rawlen(L, 3);
	lua_createtable(L, (int)n, 0);
	for (i = 1; i <= n; i++) {
		lua_rawgeti(L, 3, (int)i);
		if (transfer_is_open(lua_touserdata(L, -1)))
			lua_rawseti(L, 4, ++k);
		else
			lua_pop(L, 1);
	}
	return 1;
}

static int multi_close(lua_State *L)
{
	Multi *m = check_multi(L);

	if (m->handle == NULL)
		return 0;
	while (m->attached != NULL)
		transfer_abort(m->attached);
	curl_multi_cleanup(m->handle);
	m->handle = NULL;
	return 0;
}

static int multi_tostring(lua_State *L)
{
	Multi *m = check_multi(L);

	if (m->handle == NULL)
		lua_pushliteral(L, "imgedit.multi (closed)");
	else
		lua_pushfstring(L, "imgedit.multi (%d transfers)", m->count);
	return 1;
}

void multi_open(lua_State *L, int mod, int encode)
{
	static const luaL_Reg methods[] = {
		{"add", multi_add},
		{"perform", multi_perform},
		{"poll", multi_poll},
		{"wakeup", multi_wakeup},
		{"timeout", multi_timeout},
		{"done", multi_done},
		{"close", multi_close},
		{NULL, NULL}
	};
	static const luaL_Reg metamethods[] = {
		{"__gc", multi_close},
		{"__close", multi_close},
		{"__tostring", multi_tostring},
		{NULL, NULL}
	};

	mod = compat_absindex(L, mod);
	encode = compat_absindex(L, encode);
	luaL_newmetatable(L, MULTI_MT);
	lua_newtable(L);
	lua_pushvalue(L, encode);
	compat_setfuncs(L, methods, 1);
	lua_setfield(L, -2, "__index");
	compat_setfuncs(L, metamethods, 0);
	lua_pop(L, 1);

	lua_pushcfunction(L, multi_new);
	lua_setfield(L, mod, "multi");
}
