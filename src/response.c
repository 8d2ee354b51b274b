/*
 * Response accumulation: status, headers and in-memory body of the current
 * response of a transfer (the extracted values go through extract.c). Only
 * C memory is touched until the push functions, which run outside any
 * libcurl callback (from t:result() and the result's lazy fields).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "response.h"

/*
 * The most memory reserved on the word of a Content-Length header, before
 * any of the body arrives; a longer body grows the buffer as it comes.
 */
#define PRESIZE_MAX ((curl_off_t)16 * 1024 * 1024)

/* --- life cycle ----------------------------------------------------------- */

void response_init(Response *r)
{
	memset(r, 0, sizeof *r);
	r->max_bytes = -1;
	r->pool_limit = -1;
	extract_init(&r->x);
}

/* Gives the body bytes this response counted back to the pool. */
static void unpool(Response *r)
{
	if (r->pool != NULL)
		*r->pool -= r->pooled;
	r->pooled = 0;
}

void response_free(Response *r)
{
	unpool(r);
	buffer_free(&r->body);
	buffer_free(&r->headers);
	extract_free(&r->x);
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
	r->in_headers = 1;
	r->headers.len = 0;
	r->body.len = 0;
	r->received = 0;
	unpool(r);
	extract_reset(&r->x);
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
	/* nlen + vlen < len: the line's own length, so the sum cannot wrap */
	if (!buffer_reserve(h, nlen + vlen + 2))
		return 0;
	for (i = 0; i < nlen; i++) {
		char c = name[i];

		h->data[old + i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
	}
	h->data[old + nlen] = '\0';
	if (vlen > 0)
		memcpy(h->data + old + nlen + 1, value, vlen);
	h->data[old + nlen + 1 + vlen] = '\0';
	h->len = old + nlen + vlen + 2;
	return 1;
}

ResponseHeader response_header(Response *r, const char *line, size_t n)
{
	size_t len = n;
	int ok = 1;

	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
		len--;
	if (len > 5 && memcmp(line, "HTTP/", 5) == 0) {
		new_response(r, line, len);
	} else if (len == 0) {
		r->in_headers = 0;
		return RESPONSE_HEADER_END;
	} else if (line[0] == ' ' || line[0] == '\t') {
		ok = continue_header(&r->headers, line, len);
	} else {
		ok = add_header(&r->headers, line, len);
	}
	if (ok)
		return RESPONSE_HEADER_OK;
	r->stop = STOP_NO_MEMORY;
	return RESPONSE_HEADER_FAILED;
}

/* End of a header block: reserve the announced body size at once. */
void response_presize(Response *r, curl_off_t length)
{
	/* An extracting body keeps little of what it receives. */
	if (r->status < 200 || r->received > 0 || response_to_file(r) || length <= 0 || r->x.keylen > 0)
		return;
	if (r->max_bytes >= 0 && length > r->max_bytes)
		length = r->max_bytes; /* curl fails it with CURLE_FILESIZE_EXCEEDED */
	/* Nor beyond what the budget leaves. */
	if (r->pool != NULL && r->pool_limit >= 0) {
		curl_off_t left = r->pool_limit - (curl_off_t)*r->pool;

		if (length > left)
			length = left;
	}
	/* The server's claim alone must not commit gigabytes (or try to). */
	if (length > PRESIZE_MAX)
		length = PRESIZE_MAX;
	if (length > 0 && (size_t)length > r->body.cap)
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
	if (response_to_file(r)) {
		r->received += (curl_off_t)n;
		return RESPONSE_BODY_TO_FILE;
	}
	if (r->pool != NULL && r->pool_limit >= 0 && (curl_off_t)n > r->pool_limit - (curl_off_t)*r->pool) {
		r->stop = STOP_BUDGET;
		return RESPONSE_BODY_STOP;
	}
	r->received += (curl_off_t)n;
	if (r->x.keylen > 0 ? !extract_chunk(&r->x, &r->body, (const unsigned char *)data, n)
			: !buffer_append(&r->body, data, n)) {
		r->stop = STOP_NO_MEMORY;
		return RESPONSE_BODY_STOP;
	}
	if (r->pool != NULL) {
		*r->pool += n;
		r->pooled += n;
	}
	return RESPONSE_BODY_BUFFERED;
}

/* --- to Lua --------------------------------------------------------------- */

void response_push_body(lua_State *L, Response *r)
{
	lua_pushlstring(L, r->body.data != NULL ? r->body.data : "", r->body.len);
	unpool(r);
	buffer_free(&r->body);
}

const char *headers_find(const char *block, size_t len, const char *name, size_t *vlen)
{
	/* No header seen: block is NULL, and NULL + 0 is undefined behaviour in C. */
	const char *p = block, *end = p != NULL ? p + len : p, *value;
	size_t nlen;

	while (p < end) {
		nlen = strlen(p);
		value = p + nlen + 1;
		*vlen = strlen(value);
		if (strcmp(p, name) == 0)
			return value;
		p = value + *vlen + 1;
	}
	return NULL;
}

void headers_push(lua_State *L, const char *block, size_t len)
{
	const char *p = block, *end = p != NULL ? p + len : p, *name, *value;
	size_t nlen, vlen;
	int n = 0;

	/* One NUL ends each name and each value: sized once, never rehashed. */
	for (; p < end; p++)
		n += *p == '\0';
	lua_createtable(L, 0, n / 2);
	for (p = block; p < end; p = value + vlen + 1) {
		name = p;
		nlen = strlen(name);
		value = name + nlen + 1;
		vlen = strlen(value);
		lua_pushlstring(L, name, nlen);
		lua_pushvalue(L, -1);
		lua_rawget(L, -3);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			lua_pushlstring(L, value, vlen);
		} else {
			lua_pushliteral(L, ", ");
			lua_pushlstring(L, value, vlen);
			lua_concat(L, 3);
		}
		lua_rawset(L, -3);
	}
}
