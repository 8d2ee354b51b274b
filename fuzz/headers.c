/*
 * Response headers after parsing: the request-id lookup of a session
 * (session_request_id, which t:result() uses for result.request_id) and
 * the headers table a result builds when first read (headers_push), both
 * against a reference computed here from the header block.
 *
 * Input: lines ('\n'-separated). The first names the session's
 * request_id_headers, comma-separated (at most 8; names curl could not
 * send make core.session refuse them, and the defaults are used); every
 * other line is a header line as curl passes it (its '\n' included): a
 * status line starts a new response, a blank line ends a block.
 *
 * Checks: the block keeps its "name\0value\0" layout; headers_find gives
 * the first value of each name; the session's lookup gives the value of
 * the first of its names (in its order) that is present, or nothing; the
 * table has exactly the block's names (lower case), each with its values
 * joined by ", " in order.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_lua.h"
#include "response.h"

static lua_State *L;
static Session *fallback; /* request_id_headers = the transport's list */
enum { MOD = 1, FALLBACK = 2, TOP = 2 };

#define MAX_NAMES 8

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	L = fuzz_lua_open();
	lua_getfield(L, MOD, "session");
	FUZZ_CHECK(luaL_dostring(L, "return {request_id_headers = {'x-request-id', 'x-oneapi-request-id',"
			" 'request-id', 'x-trace-id'}}") == 0);
	lua_call(L, 1, 1);
	fallback = luaL_checkudata(L, -1, SESSION_MT);
	FUZZ_CHECK(lua_gettop(L) == TOP);
	return 0;
}

/* The i-th (name, value) pair of a block, from 0; 0 when there is none. */
typedef struct Pair {
	const char *name, *value;
	size_t nlen, vlen;
} Pair;

static size_t pairs_of(const Buffer *h, Pair **out)
{
	size_t n = 0, cap = 8, i = 0;
	Pair *p = malloc(cap * sizeof *p);

	FUZZ_CHECK(p != NULL);
	FUZZ_CHECK(h->len == 0 || h->data[h->len - 1] == '\0');
	while (i < h->len) {
		const char *name = h->data + i, *value;
		size_t nlen = strlen(name);

		FUZZ_CHECK(nlen > 0 && i + nlen + 1 < h->len);
		value = name + nlen + 1;
		if (n == cap) {
			cap *= 2;
			p = realloc(p, cap * sizeof *p);
			FUZZ_CHECK(p != NULL);
		}
		p[n].name = name;
		p[n].nlen = nlen;
		p[n].value = value;
		p[n].vlen = strlen(value);
		i += nlen + 1 + p[n].vlen + 1;
		FUZZ_CHECK(i <= h->len);
		n++;
	}
	*out = p;
	return n;
}

static const Pair *first(const Pair *p, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(p[i].name, name) == 0)
			return &p[i];
	return NULL;
}

/* The values of name, joined by ", ", as the headers table must hold them. */
static char *joined(const Pair *p, size_t n, const char *name, size_t *len)
{
	size_t i, total = 0, at = 0, count = 0;
	char *out;

	for (i = 0; i < n; i++)
		if (strcmp(p[i].name, name) == 0)
			total += p[i].vlen + 2;
	out = malloc(total + 1);
	FUZZ_CHECK(out != NULL);
	for (i = 0; i < n; i++) {
		if (strcmp(p[i].name, name) != 0)
			continue;
		if (count++ > 0) {
			memcpy(out + at, ", ", 2);
			at += 2;
		}
		memcpy(out + at, p[i].value, p[i].vlen);
		at += p[i].vlen;
	}
	*len = at;
	return out;
}

/* The session of the first line's names (on the stack), or the fallback. */
static Session *session_for(const char *line, size_t len, char names[MAX_NAMES][64], size_t *nnames)
{
	size_t start = 0, i;
	Session *s;

	*nnames = 0;
	lua_getfield(L, MOD, "session");
	lua_createtable(L, 0, 1);
	lua_createtable(L, MAX_NAMES, 0);
	for (i = 0; i <= len && *nnames < MAX_NAMES; i++) {
		if (i < len && line[i] != ',')
			continue;
		if (i > start && i - start < 64) {
			memcpy(names[*nnames], line + start, i - start);
			names[*nnames][i - start] = '\0';
			lua_pushlstring(L, line + start, i - start);
			lua_rawseti(L, -2, (int)++*nnames);
		}
		start = i + 1;
	}
	lua_setfield(L, -2, "request_id_headers");
	lua_call(L, 1, 2);
	s = luaL_testudata(L, -2, SESSION_MT);
	if (s == NULL) {
		FUZZ_CHECK(lua_type(L, -1) == LUA_TSTRING); /* refused: nil and why */
		*nnames = 4;
		strcpy(names[0], "x-request-id");
		strcpy(names[1], "x-oneapi-request-id");
		strcpy(names[2], "request-id");
		strcpy(names[3], "x-trace-id");
		return fallback;
	}
	for (i = 0; i < *nnames; i++) {
		char *c;

		for (c = names[i]; *c != '\0'; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char)(*c - 'A' + 'a');
	}
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size, *nl, *value;
	char names[MAX_NAMES][64];
	size_t nnames, npairs, i, vlen, len;
	Session *s;
	Response r;
	Pair *pairs;
	const Pair *want = NULL;

	nl = memchr(p, '\n', size);
	s = session_for(p, nl != NULL ? (size_t)(nl - p) : size, names, &nnames);
	p = nl != NULL ? nl + 1 : end;
	response_init(&r);
	while (p < end) {
		const char *line_end;

		nl = memchr(p, '\n', (size_t)(end - p));
		line_end = nl != NULL ? nl + 1 : end;
		if (response_header(&r, p, (size_t)(line_end - p)) == RESPONSE_HEADER_END)
			response_presize(&r, -1);
		p = line_end;
	}
	npairs = pairs_of(&r.headers, &pairs);

	/* the request id: the first of the names, in the session's order */
	for (i = 0; i < nnames && want == NULL; i++)
		want = first(pairs, npairs, names[i]);
	value = session_request_id(s, r.headers.data, r.headers.len, &vlen);
	if (want == NULL) {
		FUZZ_CHECK(value == NULL);
	} else {
		FUZZ_CHECK(value == want->value && vlen == want->vlen);
	}

	/* every name: its first value, and all of them joined in the table */
	headers_push(L, r.headers.data, r.headers.len);
	for (i = 0; i < npairs; i++) {
		const Pair *f = first(pairs, npairs, pairs[i].name);
		char *all;
		const char *got;
		size_t got_len;

		FUZZ_CHECK(headers_find(r.headers.data, r.headers.len, pairs[i].name, &vlen) == f->value);
		FUZZ_CHECK(vlen == f->vlen);
		if (f != &pairs[i])
			continue; /* a repeated name: checked at its first */
		lua_pushlstring(L, pairs[i].name, pairs[i].nlen);
		lua_rawget(L, -2);
		got = lua_tolstring(L, -1, &got_len);
		all = joined(pairs, npairs, pairs[i].name, &len);
		FUZZ_CHECK(got != NULL && got_len == len && memcmp(got, all, len) == 0);
		free(all);
		lua_pop(L, 1);
	}
	/* and nothing else */
	lua_pushnil(L);
	len = 0;
	while (lua_next(L, -2) != 0) {
		FUZZ_CHECK(lua_type(L, -2) == LUA_TSTRING);
		FUZZ_CHECK(first(pairs, npairs, lua_tostring(L, -2)) != NULL);
		len++;
		lua_pop(L, 1);
	}
	for (i = 0, vlen = 0; i < npairs; i++)
		vlen += first(pairs, npairs, pairs[i].name) == &pairs[i];
	FUZZ_CHECK(len == vlen);
	FUZZ_CHECK(headers_find(r.headers.data, r.headers.len, "", &vlen) == NULL);

	free(pairs);
	response_free(&r);
	lua_settop(L, TOP);
	lua_gc(L, LUA_GCCOLLECT, 0); /* the input's session */
	return 0;
}
