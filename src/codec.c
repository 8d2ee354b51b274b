/*
 * base64 (RFC 4648, standard alphabet), and core.classify: what the Lua
 * layer's checks of text and URLs need to know of a string, in one pass.
 *
 * Scratch space for base64 output comes from lua_newuserdata: if pushing
 * the result string raises a memory error, nothing is leaked.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "imgedit.h"

const char base64_alphabet[65] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* White space: space, \t, \n, \v, \f, \r; '=' is B64_PAD. */
const unsigned char base64_table[256] = {
	64, 64, 64, 64, 64, 64, 64, 64, 64, 65, 65, 65, 65, 65, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	65, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 62, 64, 64, 64, 63,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 64, 64, 64, 66, 64, 64,
	64,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 64, 64, 64, 64, 64,
	64, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
	64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
};

void base64_encode_to(char *out, const unsigned char *in, size_t len)
{
	const char *alphabet = base64_alphabet;
	size_t i;
	unsigned long v;

	for (i = 0; i + 2 < len; i += 3) {
		v = (unsigned long)in[i] << 16 | (unsigned long)in[i + 1] << 8 | in[i + 2];
		*out++ = alphabet[v >> 18 & 63];
		*out++ = alphabet[v >> 12 & 63];
		*out++ = alphabet[v >> 6 & 63];
		*out++ = alphabet[v & 63];
	}
	if (i < len) {
		v = (unsigned long)in[i] << 16;
		if (i + 1 < len)
			v |= (unsigned long)in[i + 1] << 8;
		*out++ = alphabet[v >> 18 & 63];
		*out++ = alphabet[v >> 12 & 63];
		*out++ = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
		*out = '=';
	}
}

static int codec_base64_encode(lua_State *L)
{
	size_t len;
	const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 1, &len);
	char *out;

	if (len > SIZE_MAX / 4 * 3 - 2)
		return luaL_error(L, "string too large to encode");
	out = lua_newuserdata(L, (len + 2) / 3 * 4);
	base64_encode_to(out, in, len);
	lua_pushlstring(L, out, (len + 2) / 3 * 4);
	return 1;
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
	const unsigned char *table = base64_table;
	unsigned char *out;
	unsigned long v = 0;

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

/*
 * The length in characters of the UTF-8 text at s (n bytes), or -1 when it
 * is not valid UTF-8: no overlong forms, no surrogates, nothing above
 * U+10FFFF (RFC 3629).
 */
static long utf8_chars(const unsigned char *s, size_t n)
{
	size_t i = 0;
	long count = 0;

	while (i < n) {
		unsigned char c = s[i];
		unsigned char low = 0x80, high = 0xBF;
		size_t extra, k;

		if (c < 0x80) {
			i++;
			count++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			extra = 1;
		else if (c == 0xE0)
			extra = 2, low = 0xA0;
		else if (c == 0xED)
			extra = 2, high = 0x9F; /* no surrogates */
		else if (c >= 0xE1 && c <= 0xEF)
			extra = 2;
		else if (c == 0xF0)
			extra = 3, low = 0x90;
		else if (c >= 0xF1 && c <= 0xF3)
			extra = 3;
		else if (c == 0xF4)
			extra = 3, high = 0x8F; /* nothing above U+10FFFF */
		else
			return -1;
		if (extra >= n - i)
			return -1;
		for (k = 1; k <= extra; k++) {
			if (s[i + k] < low || s[i + k] > high)
				return -1;
			low = 0x80;
			high = 0xBF;
		}
		i += extra + 1;
		count++;
	}
	return count;
}

/*
 * core.classify(s) --> chars, control, space: the length of s in UTF-8
 * characters (nil when s is not valid UTF-8), whether it holds a control
 * byte (0-31 or 127) and whether it holds a space (32). The same on every
 * interpreter and in every C locale, unlike the character classes of Lua
 * patterns; and one pass, where each pattern is a pass of its own.
 */
static int codec_classify(lua_State *L)
{
	size_t n, i;
	const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
	int control = 0, space = 0, high = 0;
	long chars;

	for (i = 0; i < n; i++) {
		unsigned char c = s[i];

		if (c < 32 || c == 127)
			control = 1;
		else if (c == 32)
			space = 1;
		else if (c >= 128)
			high = 1;
	}
	chars = high ? utf8_chars(s, n) : (long)n;
	if (chars < 0)
		lua_pushnil(L);
	else
		lua_pushinteger(L, (lua_Integer)chars);
	lua_pushboolean(L, control);
	lua_pushboolean(L, space);
	return 3;
}

void codec_open(lua_State *L, int mod)
{
	static const luaL_Reg functions[] = {
		{"base64_encode", codec_base64_encode},
		{"base64_decode", codec_base64_decode},
		{"classify", codec_classify},
		{NULL, NULL}
	};

	lua_pushvalue(L, mod);
	compat_setfuncs(L, functions, 0);
	lua_pop(L, 1);
}
