/*
 * Response accumulation: status, headers and in-memory body of the current
 * response of a transfer. Only C memory is touched until the push functions,
 * which run outside any libcurl callback (from t:result()).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "response.h"

#define BUFFER_MIN_CAPACITY 256
/*
 * The most memory reserved on the word of a Content-Length header, before
 * any of the body arrives; a longer body grows the buffer as it comes.
 */
#define PRESIZE_MAX ((curl_off_t)16 * 1024 * 1024)

/* --- buffers ------------------------------------------------------------ */

static int buffer_resize(Buffer *b, size_t cap)
{
	char *p = realloc(b->data, cap);

	if (p == NULL)
		return 0;
	b->data = p;
	b->cap = cap;
	return 1;
}

static int buffer_append(Buffer *b, const char *s, size_t n)
{
	size_t need, cap;

	if (n == 0)
		return 1; /* memcpy to a NULL data would be undefined even for 0 bytes */
	if (n > b->cap - b->len) {
		if (n > SIZE_MAX - b->len)
			return 0;
		need = b->len + n;
		cap = b->cap < BUFFER_MIN_CAPACITY ? BUFFER_MIN_CAPACITY : b->cap;
		while (cap < need)
			cap = cap > SIZE_MAX / 2 ? need : cap * 2;
		if (!buffer_resize(b, cap))
			return 0;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	return 1;
}

static void buffer_free(Buffer *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* --- life cycle ----------------------------------------------------------- */

void response_init(Response *r)
{
	memset(r, 0, sizeof *r);
	r->max_bytes = -1;
}

void response_free(Response *r)
{
	buffer_free(&r->body);
	buffer_free(&r->headers);
}

int response_to_file(const Response *r)
{
	return r->has_output && r->status >= 200 && r->status < 300;
}

/* --- headers -------------------------------------------------------------- */

static int parse_status(const char *line, size_t len)
{
	const char *sp = memchr(line, ' ', len);
	size_t i, digits = 0;
	int status = 0;

	if (sp == NULL)
		return 0;
	for (i = (size_t)(sp - line) + 1; i < len && digits < 3; i++, digits++) {
		if (line[i] < '0' || line[i] > '9')
			return 0;
		status = status * 10 + (line[i] - '0');
	}
	return digits == 3 ? status : 0;
}

/* A new status line (after a 1xx, or a proxy's reply) starts a new response. */
static void new_response(Response *r, const char *line, size_t len)
{
	r->status = parse_status(line, len);
	r->headers.len = 0;
	r->body.len = 0;
	r->received = 0;
}

static void trim(const char **s, size_t *len)
{
	while (*len > 0 && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
		(*len)--;
}

/*
 * obs-fold: a line starting with white space continues the previous value.
 * Like add_header, it leaves h whole even when it fails: the result table
 * of a stopped transfer still carries the headers.
 */
static int continue_header(Buffer *h, const char *text, size_t len)
{
	size_t old = h->len;

	trim(&text, &len);
	/* A NUL would end the value early and shift every later name and value. */
	if (old == 0 || len == 0 || memchr(text, '\0', len) != NULL)
		return 1;
	h->data[old - 1] = ' ';
	if (buffer_append(h, text, len) && buffer_append(h, "", 1))
		return 1;
	h->len = old;
	h->data[old - 1] = '\0';
	return 0;
}

static int add_header(Buffer *h, const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);
	const char *name = line, *value;
	size_t nlen, vlen, i, old = h->len;

	/* Not a header; a NUL would also break the "name\0value\0" layout. */
	if (colon == NULL || memchr(line, '\0', len) != NULL)
		return 1;
	nlen = (size_t)(colon - line);
	value = colon + 1;
	vlen = len - nlen - 1;
	trim(&name, &nlen);
	trim(&value, &vlen);
	if (nlen == 0)
		return 1;
	if (!buffer_append(h, name, nlen) || !buffer_append(h, "", 1) ||
			!buffer_append(h, value, vlen) || !buffer_append(h, "", 1)) {
		h->len = old;
		return 0;
	}
	for (i = old; i < old + nlen; i++)
		if (h->data[i] >= 'A' && h->data[i] <= 'Z')
			h->data[i] = (char)(h->data[i] - 'A' + 'a');
	return 1;
}

ResponseHeader response_header(Response *r, const char *line, size_t n)
{
	size_t len = n;
	int ok = 1;

	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
		len--;
	if (len > 5 && memcmp(line, "HTTP/", 5) == 0)
		new_response(r, line, len);
	else if (len == 0)
		return RESPONSE_HEADER_END;
	else if (line[0] == ' ' || line[0] == '\t')
		ok = continue_header(&r->headers, line, len);
	else
		ok = add_header(&r->headers, line, len);
	if (ok)
		return RESPONSE_HEADER_OK;
	r->stop = STOP_NO_MEMORY;
	return RESPONSE_HEADER_FAILED;
}

/* End of a header block: reserve the announced body size at once. */
void response_presize(Response *r, curl_off_t length)
{
	if (r->nobody || r->status < 200 || r->received > 0 || response_to_file(r) || length <= 0)
		return;
	if (r->max_bytes >= 0 && length > r->max_bytes)
		length = r->max_bytes; /* curl fails it with CURLE_FILESIZE_EXCEEDED */
	/* The server's claim alone must not commit gigabytes (or try to). */
	if (length > PRESIZE_MAX)
		length = PRESIZE_MAX;
	if ((size_t)length > r->body.cap)
		(void)buffer_resize(&r->body, (size_t)length); /* a hint: growing later works too */
}

/* --- body ----------------------------------------------------------------- */

ResponseBody response_body(Response *r, const char *data, size_t n)
{
	/* Checked before buffering: an oversized body never reaches memory. */
	if (r->max_bytes >= 0 && (curl_off_t)n > r->max_bytes - r->received) {
		r->stop = STOP_TOO_LARGE;
		return RESPONSE_BODY_STOP;
	}
	r->received += (curl_off_t)n;
	if (response_to_file(r))
		return RESPONSE_BODY_TO_FILE;
	if (!buffer_append(&r->body, data, n)) {
		r->stop = STOP_NO_MEMORY;
		return RESPONSE_BODY_STOP;
	}
	return RESPONSE_BODY_BUFFERED;
}

/* --- to Lua --------------------------------------------------------------- */

void response_push_headers(lua_State *L, const Response *r)
{
	/* No header seen: data is NULL, and NULL + 0 is undefined behaviour in C. */
	const char *p = r->headers.data, *end = p != NULL ? p + r->headers.len : p, *name, *value;

	lua_newtable(L);
	while (p < end) {
		name = p;
		value = name + strlen(name) + 1;
		p = value + strlen(value) + 1;
		lua_getfield(L, -1, name);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			lua_pushstring(L, value);
		} else {
			lua_pushliteral(L, ", ");
			lua_pushstring(L, value);
			lua_concat(L, 3);
		}
		lua_setfield(L, -2, name);
	}
}

/* cjson.safe.decode returns nil, message on bad input; pcall guards the rest. */
static void decode_body(lua_State *L, int decode)
{
	lua_pushvalue(L, decode);
	lua_getfield(L, -2, "body");
	if (lua_pcall(L, 1, 2, 0) != 0) {
		lua_setfield(L, -2, "decode_error");
		return;
	}
	if (lua_isnil(L, -2)) {
		lua_setfield(L, -3, "decode_error");
		lua_pop(L, 1);
	} else {
		lua_pop(L, 1);
		lua_setfield(L, -2, "json");
	}
}

void response_push_body(lua_State *L, const Response *r, int decode_json, int decode)
{
	lua_pushlstring(L, r->body.data != NULL ? r->body.data : "", r->body.len);
	lua_setfield(L, -2, "body");
	if (decode_json)
		decode_body(L, decode);
}
