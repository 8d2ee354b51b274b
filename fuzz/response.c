/*
 * The response side of a transfer (src/response.c) without a network: the
 * header lines, end-of-header events and body chunks that transfer.c's
 * libcurl callbacks hand over, then the result table t:result() builds.
 *
 * Input: lines ('\n'-separated), each an operation named by its first byte:
 *   H<text>  a header line as curl passes it: <text> and its '\n' (so a
 *            status line "HTTP/1.1 200 OK\r", a field "Name: v\r", a fold
 *            " more\r", anything)
 *   E<n>     the blank line ending a header block; Content-Length n
 *            (decimal, may be huge or negative; empty: none)
 *   B<text>  a body chunk: <text> (a line without its '\n')
 *   M<n>     max_response_bytes = n (decimal; empty: no limit), at the start
 *   P<n>     max_buffered_bytes = n, with <n2> after a ',' held by other
 *            responses of the pool (decimal; empty: no budget), at the start
 *   O        an output file is set, at the start
 *   X        extract "b64_json" values (req.extract), at the start
 *   R        build the result, as t:result() does once the transfer is
 *            over: headers, blobs and body pushed to Lua, checked; the
 *            input ends there
 *   F<n>     the n-th realloc from now on fails (0: the next one; empty:
 *            none), to reach the out-of-memory paths
 * Once a callback refuses data, libcurl stops the transfer: so does this.
 *
 * A model tracks what the body and the byte count must be, and the header
 * buffer's "name\0value\0" layout is checked after every operation, and
 * the pool's count: the other responses' bytes plus this one's, never
 * past the budget, and back to the others' alone once the body is freed. With
 * X, the model holds the bytes received, and what the response kept (body,
 * blobs, scanner state) must equal what a fresh extracting Response keeps
 * from those bytes in one chunk (fuzz/extract.c checks that reference
 * against cjson); after a failed allocation, only that nothing breaks.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_lua.h"
#include "response.h"

static lua_State *L;
enum { TOP = 1 };

/*
 * This harness is linked with -Wl,--wrap=realloc: every realloc call in
 * src/ (and here) comes to __wrap_realloc. Lua's own allocations, made in
 * liblua, do not.
 */
void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);
static long fail_countdown = -1; /* realloc calls until one fails; -1: none */

void *__wrap_realloc(void *p, size_t n)
{
	if (fail_countdown >= 0 && fail_countdown-- == 0)
		return NULL;
	return __real_realloc(p, n);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	L = fuzz_lua_open();
	FUZZ_CHECK(lua_gettop(L) == TOP);
	return 0;
}

/* Saturating decimal; "" or no digits: -1. */
static curl_off_t number(const char *s, size_t len)
{
	curl_off_t n = 0, limit = CURL_OFF_T_C(0x7FFFFFFFFFFFFFFF);
	size_t i = 0;
	int negative = 0, any = 0;

	if (i < len && s[i] == '-') {
		negative = 1;
		i++;
	}
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
		any = 1;
		n = n > (limit - (s[i] - '0')) / 10 ? limit : n * 10 + (s[i] - '0');
	}
	if (!any)
		return -1;
	return negative ? -n : n;
}

/* "name\0value\0"...: an even number of NULs, the last byte one, names in lower case. */
static void check_headers(const Buffer *h)
{
	size_t i, nuls = 0, start = 0;

	FUZZ_CHECK(h->len <= h->cap);
	if (h->len == 0)
		return;
	FUZZ_CHECK(h->data[h->len - 1] == '\0');
	for (i = 0; i < h->len; i++) {
		if (h->data[i] != '\0')
			continue;
		if (nuls % 2 == 0) {
			FUZZ_CHECK(i > start); /* a name is never empty */
			while (start < i) {
				FUZZ_CHECK(h->data[start] < 'A' || h->data[start] > 'Z');
				start++;
			}
		}
		start = i + 1;
		nuls++;
	}
	FUZZ_CHECK(nuls % 2 == 0);
}

static int is_status_line(const char *line, size_t len)
{
	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
		len--;
	return len > 5 && memcmp(line, "HTTP/", 5) == 0;
}

typedef struct Model {
	unsigned char *body; /* what r.body must hold */
	size_t len, cap;
	curl_off_t received;
} Model;

static void model_add(Model *m, const char *s, size_t n)
{
	if (m->len + n > m->cap) {
		m->cap = (m->len + n) * 2;
		m->body = __real_realloc(m->body, m->cap);
		FUZZ_CHECK(m->body != NULL);
	}
	memcpy(m->body + m->len, s, n);
	m->len += n;
}

/* An extracting body: what r kept must be what one chunk of m's bytes leaves. */
static void check_extracted(const Response *r, const Model *m)
{
	long countdown = fail_countdown;
	Response ref;
	size_t i;

	fail_countdown = -1; /* the reference's own allocations do not fail */
	response_init(&ref);
	extract_set_key(&ref.x, "b64_json", 8);
	if (m->len > 0)
		FUZZ_CHECK(response_body(&ref, (const char *)m->body, m->len) == RESPONSE_BODY_BUFFERED);
	FUZZ_CHECK(r->body.len == ref.body.len);
	FUZZ_CHECK(r->body.len == 0 || memcmp(r->body.data, ref.body.data, r->body.len) == 0);
	FUZZ_CHECK(r->x.scan.state == ref.x.scan.state && r->x.scan.escape == ref.x.scan.escape);
	FUZZ_CHECK(r->x.scan.keyok == ref.x.scan.keyok && r->x.scan.keylen == ref.x.scan.keylen);
	FUZZ_CHECK(r->x.nblobs == ref.x.nblobs);
	for (i = 0; i < r->x.nblobs; i++) {
		const ExtractBlob *a = &r->x.blobs[i], *b = &ref.x.blobs[i];

		FUZZ_CHECK(a->invalid == b->invalid && strcmp(a->error, b->error) == 0);
		FUZZ_CHECK(a->offset == b->offset && a->digits == b->digits && a->pads == b->pads);
		FUZZ_CHECK(a->data.len == b->data.len && a->data.len <= a->data.cap);
		FUZZ_CHECK(a->data.len == 0 || memcmp(a->data.data, b->data.data, a->data.len) == 0);
	}
	response_free(&ref);
	fail_countdown = countdown;
}

/* The other responses' bytes in the pool (P). */
static size_t others;

static void check_state(const Response *r, const Model *m)
{
	check_headers(&r->headers);
	FUZZ_CHECK(r->body.len <= r->body.cap);
	FUZZ_CHECK(r->received == m->received);
	FUZZ_CHECK(r->max_bytes < 0 || r->received <= r->max_bytes);
	FUZZ_CHECK(r->x.nblobs <= r->x.blobs_cap && r->x.nblobs <= EXTRACT_MAX_BLOBS);
	if (r->pool != NULL) {
		FUZZ_CHECK(*r->pool == others + r->pooled);
		FUZZ_CHECK(r->pooled <= (size_t)r->received);
		FUZZ_CHECK(r->pool_limit < 0 || r->pooled == 0 || *r->pool <= (size_t)r->pool_limit);
	}
	if (r->x.keylen > 0 && !response_to_file(r)) {
		if (r->stop != STOP_NO_MEMORY)
			check_extracted(r, m);
		return;
	}
	FUZZ_CHECK(r->body.len == m->len);
	FUZZ_CHECK(m->len == 0 || memcmp(r->body.data, m->body, m->len) == 0);
}

/* What t:result() does with the response: every header a string pair. */
static void check_result(Response *r)
{
	size_t len, kept = r->body.len, i, n = r->x.nblobs;

	lua_createtable(L, 0, 4);
	headers_push(L, r->headers.data, r->headers.len);
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		FUZZ_CHECK(lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING);
		FUZZ_CHECK(strlen(lua_tostring(L, -2)) > 0);
		lua_pop(L, 1);
	}
	lua_setfield(L, -2, "headers");
	if (!response_to_file(r)) {
		if (r->x.keylen > 0) {
			extract_push_blobs(L, &r->x);
			FUZZ_CHECK(compat_rawlen(L, -1) == n);
			for (i = 1; i <= n; i++) {
				lua_rawgeti(L, -1, (int)i);
				FUZZ_CHECK(luaL_testudata(L, -1, BLOB_MT) != NULL);
				lua_pop(L, 1);
			}
			for (i = 0; i < n; i++)
				FUZZ_CHECK(r->x.blobs[i].data.data == NULL); /* handed over */
			lua_pop(L, 1);
		}
		response_push_body(L, r);
		FUZZ_CHECK(lua_tolstring(L, -1, &len) != NULL && len == kept);
		FUZZ_CHECK(r->body.data == NULL); /* freed once it is a Lua string */
		FUZZ_CHECK(r->pool == NULL || *r->pool == others); /* and given back */
		lua_pop(L, 1);
	}
	lua_settop(L, TOP);
	lua_gc(L, LUA_GCCOLLECT, 0); /* the blobs' finalizers */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	Response r;
	Model m = {NULL, 0, 0, 0};
	int started = 0, stopped = 0, resulted = 0;
	size_t pool = 0;
	const char *comma;

	fail_countdown = -1;
	others = 0;
	response_init(&r);
	while (p < end && !stopped) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *line_end = nl != NULL ? nl + 1 : end; /* '\n' included */
		const char *arg = p + 1;
		size_t arg_len = (size_t)((nl != NULL ? nl : end) - arg);

		switch (*p) {
		case 'M':
			if (!started)
				r.max_bytes = number(arg, arg_len);
			break;
		case 'P':
			if (!started && r.pool == NULL) {
				comma = memchr(arg, ',', arg_len);
				r.pool_limit = number(arg, comma != NULL ? (size_t)(comma - arg) : arg_len);
				if (comma != NULL && number(comma + 1, arg_len - (size_t)(comma + 1 - arg)) > 0)
					others = (size_t)number(comma + 1, arg_len - (size_t)(comma + 1 - arg));
				pool = others;
				r.pool = &pool;
			}
			break;
		case 'O':
			if (!started)
				r.has_output = 1;
			break;
		case 'X':
			if (!started)
				extract_set_key(&r.x, "b64_json", 8);
			break;
		case 'H':
			started = 1;
			switch (response_header(&r, arg, (size_t)(line_end - arg))) {
			case RESPONSE_HEADER_END: /* a line of nothing but CR/LF */
				response_presize(&r, -1);
				break;
			case RESPONSE_HEADER_FAILED:
				FUZZ_CHECK(r.stop == STOP_NO_MEMORY);
				stopped = 1;
				break;
			default:
				break;
			}
			if (is_status_line(arg, arg_len)) {
				m.len = 0; /* a status line starts a new response */
				m.received = 0;
			}
			break;
		case 'E':
			started = 1;
			FUZZ_CHECK(response_header(&r, "\r\n", 2) == RESPONSE_HEADER_END);
			response_presize(&r, number(arg, arg_len));
			break;
		case 'B':
			started = 1;
			if (arg_len == 0)
				break; /* curl never passes an empty chunk */
			switch (response_body(&r, arg, arg_len)) {
			case RESPONSE_BODY_BUFFERED:
				FUZZ_CHECK(!response_to_file(&r));
				model_add(&m, arg, arg_len);
				m.received += (curl_off_t)arg_len;
				break;
			case RESPONSE_BODY_TO_FILE:
				FUZZ_CHECK(response_to_file(&r));
				m.received += (curl_off_t)arg_len;
				break;
			default:
				FUZZ_CHECK(r.stop == STOP_TOO_LARGE || r.stop == STOP_BUDGET || r.stop == STOP_NO_MEMORY);
				if (r.stop == STOP_TOO_LARGE)
					FUZZ_CHECK(r.max_bytes >= 0 && m.received + (curl_off_t)arg_len > r.max_bytes);
				else if (r.stop == STOP_BUDGET)
					FUZZ_CHECK(r.pool_limit >= 0 && (curl_off_t)(pool + arg_len) > r.pool_limit);
				else
					m.received += (curl_off_t)arg_len; /* received, not kept */
				stopped = 1;
				break;
			}
			break;
		case 'R':
			check_result(&r);
			resulted = stopped = 1;
			break;
		case 'F':
			fail_countdown = (long)(number(arg, arg_len) > 1000 ? 1000 : number(arg, arg_len));
			break;
		default:
			break;
		}
		if (!resulted)
			check_state(&r, &m);
		p = line_end;
	}
	fail_countdown = -1;
	if (!resulted)
		check_result(&r);
	response_free(&r);
	FUZZ_CHECK(pool == others);
	free(m.body);
	return 0;
}
