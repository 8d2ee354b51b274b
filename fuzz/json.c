/*
 * JSON-to-table decoding of a response body, through the module's own path:
 * the body arrives as chunks (response_body, as from libcurl's write
 * callback), then response_push_body with decode = "json" calls
 * cjson.safe.decode exactly as t:result() does, and the harness walks what
 * came back: result.json (any Lua value) or result.decode_error (a string).
 * The decoded value is then handed to cjson.safe.encode, the function the
 * module uses for request bodies (req.json).
 *
 * Input: the body. Its first byte, if any, also picks where it is split
 * into chunks (it is part of the body as well).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_lua.h"
#include "response.h"

static lua_State *L;
enum { DECODE = 1, ENCODE = 2, TOP = 2 };

/* Deeper than cjson.safe's default decode_max_depth (1000) never happens. */
#define MAX_DEPTH 1100

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	L = fuzz_lua_open();
	lua_pop(L, 1);
	fuzz_push_cjson(L, "decode");
	fuzz_push_cjson(L, "encode");
	FUZZ_CHECK(lua_gettop(L) == TOP);
	return 0;
}

/* Every value JSON can give: nil-free tables of strings, numbers, booleans, cjson.null. */
static void walk(int depth)
{
	size_t len;

	FUZZ_CHECK(depth <= MAX_DEPTH);
	switch (lua_type(L, -1)) {
	case LUA_TSTRING:
		FUZZ_CHECK(lua_tolstring(L, -1, &len) != NULL);
		break;
	case LUA_TNUMBER:
	case LUA_TBOOLEAN:
		break;
	case LUA_TLIGHTUSERDATA: /* cjson.null */
		FUZZ_CHECK(lua_touserdata(L, -1) == NULL);
		break;
	case LUA_TTABLE:
		luaL_checkstack(L, 3, "walk");
		lua_pushnil(L);
		while (lua_next(L, -2) != 0) {
			FUZZ_CHECK(lua_type(L, -2) == LUA_TSTRING || lua_type(L, -2) == LUA_TNUMBER);
			walk(depth + 1);
			lua_pop(L, 1);
		}
		(void)lua_rawlen(L, -1);
		break;
	default:
		FUZZ_CHECK(!"a type JSON cannot produce");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data;
	size_t split = size > 0 ? data[0] % (size + 1) : 0, len;
	Response r;
	const char *got;

	response_init(&r);
	if (split > 0)
		FUZZ_CHECK(response_body(&r, body, split) == RESPONSE_BODY_BUFFERED);
	if (size > split)
		FUZZ_CHECK(response_body(&r, body + split, size - split) == RESPONSE_BODY_BUFFERED);

	lua_createtable(L, 0, 4);
	response_push_body(L, &r, 1, DECODE);
	response_free(&r);

	lua_getfield(L, -1, "body");
	got = lua_tolstring(L, -1, &len);
	FUZZ_CHECK(got != NULL && len == size && (size == 0 || memcmp(got, data, size) == 0));
	lua_pop(L, 1);

	lua_getfield(L, -1, "decode_error");
	lua_getfield(L, -2, "json");
	if (lua_isnil(L, -1)) {
		FUZZ_CHECK(lua_type(L, -2) == LUA_TSTRING);
	} else {
		FUZZ_CHECK(lua_isnil(L, -2));
		walk(0);
		/* As m:add{json = value} would: encodes, or nil and a message. */
		lua_pushvalue(L, ENCODE);
		lua_pushvalue(L, -2);
		if (lua_pcall(L, 1, 2, 0) == 0)
			FUZZ_CHECK(lua_type(L, -2) == LUA_TSTRING || lua_type(L, -1) == LUA_TSTRING);
	}
	lua_settop(L, TOP);
	return 0;
}
