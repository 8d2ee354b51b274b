/*
 * base64 (RFC 4648, standard alphabet) and a monotonic clock.
 *
 * Scratch space for the output comes from lua_newuserdata: if pushing the
 * result string raises a memory error, nothing is leaked.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "imgedit.h"

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* decode_table[c]: 0-63 for an alphabet character, else one of these. */
enum { B64_INVALID = 64, B64_SPACE, B64_PAD };

static int codec_now(lua_State *L)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return luaL_error(L, "clock_gettime(CLOCK_MONOTONIC) failed");
	lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
	return 1;
}

static int codec_base64_encode(lua_State *L)
{
	size_t len, i, o = 0;
	const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 1, &len);
	char *out;
	unsigned long v;

	if (len > SIZE_MAX / 4 * 3 - 2)
		return luaL_error(L, "string too large to encode");
	out = lua_newuserdata(L, (len + 2) / 3 * 4);
	for (i = 0; i + 2 < len; i += 3) {
		v = (unsigned long)in[i] << 16 | (unsigned long)in[i + 1] << 8 | in[i + 2];
		out[o++] = alphabet[v >> 18 & 63];
		out[o++] = alphabet[v >> 12 & 63];
		out[o++] = alphabet[v >> 6 & 63];
		out[o++] = alphabet[v & 63];
	}
	if (i < len) {
		v = (unsigned long)in[i] << 16;
		if (i + 1 < len)
			v |= (unsigned long)in[i + 1] << 8;
		out[o++] = alphabet[v >> 18 & 63];
		out[o++] = alphabet[v >> 12 & 63];
		out[o++] = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
		out[o++] = '=';
	}
	lua_pushlstring(L, out, o);
	return 1;
}

static void init_decode_table(unsigned char table[256])
{
	int i;

	memset(table, B64_INVALID, 256);
	for (i = 0; i < 64; i++)
		table[(unsigned char)alphabet[i]] = (unsigned char)i;
	table[' '] = table['\t'] = table['\n'] = table['\r'] = table['\f'] = table['\v'] = B64_SPACE;
	table['='] = B64_PAD;
}

static int invalid_at(lua_State *L, size_t offset)
{
	char msg[64];

	lua_pushnil(L);
	/* lua_pushfstring has no size_t conversion on every supported version. */
	snprintf(msg, sizeof msg, "invalid base64 character at offset %lu", (unsigned long)offset);
	lua_pushstring(L, msg);
	return 2;
}

/*
 * White space is skipped anywhere; '=' may only end the input, and may be
 * left out. The offset in an error message counts bytes from 0.
 */
static int codec_base64_decode(lua_State *L)
{
	size_t len, i, o = 0, digits = 0, pads = 0;
	const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 1, &len);
	unsigned char table[256];
	unsigned char *out;
	unsigned long v = 0;

	init_decode_table(table);
	out = lua_newuserdata(L, len / 4 * 3 + 3);
	for (i = 0; i < len; i++) {
		unsigned char c = table[in[i]];

		if (c == B64_SPACE)
			continue;
		if (c == B64_PAD && pads < 2) {
			pads++;
			continue;
		}
		if (c >= B64_INVALID || pads > 0)
			return invalid_at(L, i);
		v = v << 6 | c;
		if (++digits % 4 == 0) {
			out[o++] = (unsigned char)(v >> 16);
			out[o++] = (unsigned char)(v >> 8);
			out[o++] = (unsigned char)v;
			v = 0;
		}
	}
	switch (digits % 4) {
	case 0:
		if (pads != 0)
			goto truncated;
		break;
	case 2:
		if (pads != 0 && pads != 2)
			goto truncated;
		out[o++] = (unsigned char)(v >> 4);
		break;
	case 3:
		if (pads > 1)
			goto truncated;
		out[o++] = (unsigned char)(v >> 10);
		out[o++] = (unsigned char)(v >> 2);
		break;
	default:
		goto truncated;
	}
	lua_pushlstring(L, (const char *)out, o);
	return 1;

truncated:
	lua_pushnil(L);
	lua_pushliteral(L, "truncated base64");
	return 2;
}

void codec_open(lua_State *L, int mod)
{
	static const luaL_Reg functions[] = {
		{"now", codec_now},
		{"base64_encode", codec_base64_encode},
		{"base64_decode", codec_base64_decode},
		{NULL, NULL}
	};

	lua_pushvalue(L, mod);
	compat_setfuncs(L, functions, 0);
	lua_pop(L, 1);
}
