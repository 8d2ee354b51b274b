/*
 * core.base64_decode / core.base64_encode, called as Lua calls them.
 *
 * Input: any bytes, taken as base64 text. Checks:
 *  - decode agrees with an independent reference (result, or the exact error
 *    message with its offset);
 *  - a decoded value re-encodes canonically and decodes back to itself;
 *  - encoding the raw input gives canonical base64 that decodes back to it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_lua.h"

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static lua_State *L;
enum { ENCODE = 1, DECODE = 2, TOP = 2 };

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	L = fuzz_lua_open();
	lua_getfield(L, -1, "base64_encode");
	lua_getfield(L, -2, "base64_decode");
	lua_remove(L, -3);
	FUZZ_CHECK(lua_gettop(L) == TOP);
	return 0;
}

static int value_of(unsigned char c)
{
	const char *p = c != '\0' ? strchr(alphabet, c) : NULL;

	return p != NULL ? (int)(p - alphabet) : -1;
}

static int is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * The documented grammar, checked in two passes (structure, then length):
 * white space anywhere; digits; then at most two '='. Returns 1 and the
 * bytes, or 0 and the message the module gives.
 */
static int reference_decode(const uint8_t *in, size_t len, unsigned char *out, size_t *out_len,
		char *msg, size_t msg_size)
{
	size_t i, digits = 0, pads = 0, o = 0, k;
	unsigned char group[4];

	for (i = 0; i < len; i++) {
		if (is_space(in[i]))
			continue;
		if (in[i] == '=') {
			if (pads == 2)
				goto invalid;
			pads++;
		} else if (pads > 0 || value_of(in[i]) < 0) {
			goto invalid;
		} else {
			digits++;
		}
	}
	if (digits % 4 == 1 || (digits % 4 == 0 && pads > 0) ||
			(digits % 4 == 2 && pads == 1) || (digits % 4 == 3 && pads > 1)) {
		snprintf(msg, msg_size, "truncated base64");
		return 0;
	}
	for (i = 0, k = 0; i < len; i++) {
		int v = value_of(in[i]);

		if (v < 0 || in[i] == '=')
			continue;
		group[k++] = (unsigned char)v;
		if (k == 4) {
			out[o++] = (unsigned char)(group[0] << 2 | group[1] >> 4);
			out[o++] = (unsigned char)(group[1] << 4 | group[2] >> 2);
			out[o++] = (unsigned char)(group[2] << 6 | group[3]);
			k = 0;
		}
	}
	if (k >= 2)
		out[o++] = (unsigned char)(group[0] << 2 | group[1] >> 4);
	if (k == 3)
		out[o++] = (unsigned char)(group[1] << 4 | group[2] >> 2);
	*out_len = o;
	return 1;

invalid:
	snprintf(msg, msg_size, "invalid base64 character at offset %lu", (unsigned long)i);
	return 0;
}

/* Canonical: 4 * ceil(n / 3) characters of the alphabet, '=' only at the end. */
static void check_canonical(const char *enc, size_t enc_len, size_t plain_len)
{
	size_t i, pads = (3 - plain_len % 3) % 3;

	FUZZ_CHECK(enc_len == (plain_len + 2) / 3 * 4);
	for (i = 0; i < enc_len; i++) {
		if (i >= enc_len - pads)
			FUZZ_CHECK(enc[i] == '=');
		else
			FUZZ_CHECK(value_of((unsigned char)enc[i]) >= 0);
	}
}

/* Calls f(s) for the function at index f; leaves its two results on the stack. */
static void call(int f, const char *s, size_t len)
{
	lua_pushvalue(L, f);
	lua_pushlstring(L, s, len);
	lua_call(L, 1, 2);
}

/* plain -> encode -> decode: canonical text, same bytes back. */
static void round_trip(const char *plain, size_t len)
{
	const char *enc, *dec;
	size_t enc_len, dec_len;

	call(ENCODE, plain, len);
	enc = lua_tolstring(L, -2, &enc_len);
	FUZZ_CHECK(enc != NULL);
	check_canonical(enc, enc_len, len);
	call(DECODE, enc, enc_len);
	dec = lua_tolstring(L, -2, &dec_len);
	FUZZ_CHECK(dec != NULL);
	FUZZ_CHECK(dec_len == len && memcmp(dec, plain, len) == 0);
	lua_pop(L, 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *expected = malloc(size / 4 * 3 + 3);
	char message[64];
	size_t expected_len = 0, got_len;
	const char *got;
	int ok;

	FUZZ_CHECK(expected != NULL);
	ok = reference_decode(data, size, expected, &expected_len, message, sizeof message);
	call(DECODE, (const char *)data, size);
	if (ok) {
		got = lua_tolstring(L, -2, &got_len);
		FUZZ_CHECK(got != NULL && lua_isnil(L, -1));
		FUZZ_CHECK(got_len == expected_len && memcmp(got, expected, got_len) == 0);
		round_trip(got, got_len);
	} else {
		FUZZ_CHECK(lua_isnil(L, -2));
		got = lua_tostring(L, -1);
		FUZZ_CHECK(got != NULL && strcmp(got, message) == 0);
	}
	free(expected);
	round_trip((const char *)data, size);
	lua_settop(L, TOP);
	return 0;
}
