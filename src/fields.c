/*
 * Request and session tables read by their description (see imgedit.h):
 * one pass over the table's entries, each matched to its field by name.
 */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "imgedit.h"

/* curl_off_t is a signed 64-bit type on every platform libcurl supports. */
#define OFF_T_LIMIT CURL_OFF_T_C(0x7FFFFFFFFFFFFFFF)

int fields_refuse(lua_State *L, const char *fmt, const char *what)
{
	lua_pushnil(L);
	lua_pushfstring(L, fmt, what);
	return 0;
}

static int type_error(lua_State *L, int arg, const char *name, const char *expected)
{
	return luaL_argerror(L, arg, lua_pushfstring(L, "field '%s' must be %s, got %s", name, expected,
			luaL_typename(L, -1)));
}

/* Seconds as milliseconds (or, whole, as seconds), rounded up so that 0.0001 is not "no limit". */
static long to_long(lua_Number x)
{
	return x >= (lua_Number)LONG_MAX ? LONG_MAX : (long)ceil(x);
}

/*
 * A line of field name that cannot be sent. The message names the line
 * by its header name (the text before ':', when it is a short token) or
 * its number, never by its value: it may be the API key.
 */
static int refuse_line(lua_State *L, const char *name, int i, const char *line, size_t len)
{
	size_t n = 0;

	while (n < len && n < 64 && line[n] > ' ' && line[n] < 0x7F && line[n] != ':')
		n++;
	if (n > 0 && n < len && line[n] == ':') {
		lua_pushlstring(L, line, n);
		lua_pushfstring(L, "%s: the value of %s contains a line break or a NUL byte", name,
				lua_tostring(L, -1));
		lua_remove(L, -2);
	} else {
		lua_pushfstring(L, "%s: line %d contains a line break or a NUL byte", name, i);
	}
	lua_pushnil(L);
	lua_insert(L, -2);
	return 0;
}

/* The value on top of the stack, for field f. Returns 0 after pushing nil and a message. */
static int read_value(lua_State *L, int arg, const Field *f, FieldValue *v)
{
	lua_Number x;
	size_t i, n, len;
	const char *s;

	switch (f->type) {
	case FIELD_STRING:
	case FIELD_BYTES:
		if (lua_type(L, -1) != LUA_TSTRING)
			return type_error(L, arg, f->name, "a string");
		v->s = lua_tolstring(L, -1, &v->len);
		if (f->type == FIELD_STRING && strlen(v->s) != v->len)
			return fields_refuse(L, "%s contains a NUL byte, where curl would cut it short", f->name);
		break;
	case FIELD_SECONDS:
	case FIELD_WHOLE_SECONDS:
		if (lua_type(L, -1) != LUA_TNUMBER)
			return type_error(L, arg, f->name, "a number");
		x = lua_tonumber(L, -1);
		if (!(x >= 0)) /* NaN too */
			return fields_refuse(L, "%s must be a non-negative number of seconds", f->name);
		v->n = to_long(f->type == FIELD_SECONDS ? x * 1000 : x);
		break;
	case FIELD_COUNT:
		if (lua_type(L, -1) != LUA_TNUMBER)
			return type_error(L, arg, f->name, "a number");
		x = lua_tonumber(L, -1);
		if (!(x >= 0) || x != floor(x))
			return fields_refuse(L, "%s must be a non-negative integer", f->name);
		v->count = x >= (lua_Number)OFF_T_LIMIT ? OFF_T_LIMIT : (curl_off_t)x;
		v->n = v->count > LONG_MAX ? LONG_MAX : (long)v->count;
		break;
	case FIELD_BOOLEAN:
		if (lua_type(L, -1) != LUA_TBOOLEAN)
			return type_error(L, arg, f->name, "a boolean");
		v->b = lua_toboolean(L, -1);
		break;
	case FIELD_LINES:
		if (lua_type(L, -1) != LUA_TTABLE)
			return type_error(L, arg, f->name, "an array of strings");
		n = compat_rawlen(L, -1);
		for (i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, (int)i);
			if (lua_type(L, -1) != LUA_TSTRING)
				return type_error(L, arg, f->name, "an array of strings");
			s = lua_tolstring(L, -1, &len);
			lua_pop(L, 1);
			/* A line break would start another header; curl would cut at a NUL. */
			if (strlen(s) != len || strpbrk(s, "\r\n") != NULL)
				return refuse_line(L, f->name, (int)i, s, len);
		}
		lua_pushvalue(L, -1); /* a copy, that fields_read keeps on the stack */
		break;
	}
	v->set = 1;
	return 1;
}

int fields_read(lua_State *L, int idx, int arg, const Field *fields, size_t n, FieldValue *values)
{
	size_t i;

	idx = compat_absindex(L, idx);
	memset(values, 0, n * sizeof *values);
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;

		for (i = 0; name != NULL && i < n; i++)
			if (strcmp(name, fields[i].name) == 0)
				break;
		if (name == NULL || i == n) {
			lua_pop(L, 1);
			return luaL_argerror(L, arg, lua_pushfstring(L, "unknown field %s%s%s",
					name ? "'" : "(a ", name ? name : luaL_typename(L, -1), name ? "'" : " key)"));
		}
		if (!read_value(L, arg, &fields[i], &values[i]))
			return 0;
		if (fields[i].type == FIELD_LINES) {
			/* the copy goes under the key and the value: it stays when they go */
			lua_insert(L, -3);
			values[i].idx = lua_gettop(L) - 2;
		}
		lua_pop(L, 1);
	}
	return 1;
}

CURLcode fields_apply(CURL *easy, const Field *fields, size_t n, const FieldValue *values, int defaults)
{
	CURLcode rc = CURLE_OK;
	size_t i;

	for (i = 0; i < n && rc == CURLE_OK; i++) {
		const Field *f = &fields[i];
		const FieldValue *v = &values[i];

		if (f->option == 0 || (!v->set && !defaults))
			continue;
		if (f->type == FIELD_STRING || f->type == FIELD_BYTES)
			rc = curl_easy_setopt(easy, f->option, v->set ? v->s : (const char *)NULL);
		else
			rc = curl_easy_setopt(easy, f->option, v->set ? v->n : 0L);
	}
	return rc;
}
