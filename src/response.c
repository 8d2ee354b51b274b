/*
 * Response accumulation: status, headers and in-memory body of the current
 * response of a transfer, and the blobs extracted from that body (see
 * response.h). Only C memory is touched until the push functions, which run
 * outside any libcurl callback (from t:result()).
 */
#include <stdint.h>
#include <stdio.h>
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

/* Room for n more bytes, growing geometrically. */
static int buffer_reserve(Buffer *b, size_t n)
{
	size_t need, cap;

	if (n <= b->cap - b->len)
		return 1;
	if (n > SIZE_MAX - b->len)
		return 0;
	need = b->len + n;
	cap = b->cap < BUFFER_MIN_CAPACITY ? BUFFER_MIN_CAPACITY : b->cap;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	return buffer_resize(b, cap);
}

static int buffer_append(Buffer *b, const char *s, size_t n)
{
	if (n == 0)
		return 1; /* memcpy to a NULL data would be undefined even for 0 bytes */
	if (!buffer_reserve(b, n))
		return 0;
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

/* Forgets the blobs of the body so far; the array itself is kept. */
static void drop_blobs(Response *r)
{
	size_t i;

	for (i = 0; i < r->nblobs; i++)
		buffer_free(&r->blobs[i].data);
	r->nblobs = 0;
	memset(&r->scan, 0, sizeof r->scan);
}

void response_free(Response *r)
{
	buffer_free(&r->body);
	buffer_free(&r->headers);
	drop_blobs(r);
	free(r->blobs);
	r->blobs = NULL;
	r->blobs_cap = 0;
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
	drop_blobs(r);
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
	/* An extracting body keeps little of what it receives. */
	if (r->nobody || r->status < 200 || r->received > 0 || response_to_file(r) || length <= 0 || r->extract)
		return;
	if (r->max_bytes >= 0 && length > r->max_bytes)
		length = r->max_bytes; /* curl fails it with CURLE_FILESIZE_EXCEEDED */
	/* The server's claim alone must not commit gigabytes (or try to). */
	if (length > PRESIZE_MAX)
		length = PRESIZE_MAX;
	if ((size_t)length > r->body.cap)
		(void)buffer_resize(&r->body, (size_t)length); /* a hint: growing later works too */
}

/* --- extraction of "b64_json" values (see response.h) ------------------------ */

enum {
	SCAN_OUT,         /* outside any string */
	SCAN_STRING,      /* in a string that is not extracted (a key, maybe "b64_json") */
	SCAN_AFTER_KEY,   /* after the string "b64_json": white space, then ':'? */
	SCAN_AFTER_COLON, /* after "b64_json" and ':': white space, then '"'? */
	SCAN_BLOB         /* in an extracted value: its bytes go to the last blob */
};

static const char KEY[] = "b64_json";
#define KEY_LEN (sizeof KEY - 1)

static int hex_value(unsigned c)
{
	if (c >= '0' && c <= '9')
		return (int)(c - '0');
	if (c >= 'a' && c <= 'f')
		return (int)(c - 'a' + 10);
	if (c >= 'A' && c <= 'F')
		return (int)(c - 'A' + 10);
	return -1;
}

/* One unescaped byte of a string that may be a key; 0 stands for non-ASCII. */
static void key_byte(JsonScan *s, unsigned c)
{
	if (s->keyok && s->keylen < KEY_LEN && c == (unsigned char)KEY[s->keylen])
		s->keylen++;
	else
		s->keyok = 0;
}

/*
 * A string that is not extracted: only whether it spells "b64_json" (escapes
 * undone, as cjson reads keys) matters. Returns where it stopped: after the
 * closing quote, with s->state set for what follows, or at end.
 */
static const unsigned char *scan_string(JsonScan *s, const unsigned char *p, const unsigned char *end)
{
	while (p < end) {
		unsigned c = *p;
		int v;

		if (s->escape == 0) {
			if (!s->keyok) {
				/* Not the key: only the end of the string and escapes matter. */
				while (p < end && *p != '"' && *p != '\\')
					p++;
				if (p == end)
					break;
				c = *p;
			}
			p++;
			if (c == '"') {
				s->state = s->keyok && s->keylen == KEY_LEN ? SCAN_AFTER_KEY : SCAN_OUT;
				return p;
			}
			if (c == '\\')
				s->escape = 1;
			else
				key_byte(s, c);
		} else if (s->escape == 1) {
			p++;
			s->escape = 0;
			if (c == 'u') {
				s->escape = 2;
				s->hex = 0;
			} else {
				s->keyok = 0; /* no other escape stands for a letter of the key */
			}
		} else {
			v = hex_value(c);
			if (v < 0) {
				/* Not JSON: c is read again, as a character of the string. */
				s->escape = 0;
				s->keyok = 0;
				continue;
			}
			p++;
			s->hex = s->hex << 4 | (unsigned)v;
			if (++s->escape == 6) {
				s->escape = 0;
				key_byte(s, s->hex < 0x80 ? s->hex : 0);
			}
		}
	}
	return p;
}

/*
 * The blob's first problem. Its decoded bytes (a multiple of 3: bytes are
 * only written by whole quads until the end) become the text of the digits
 * read so far, then the digits of the quad in progress and the '=' read.
 */
static int blob_fail(ResponseBlob *b, const char *message)
{
	Buffer text = {NULL, 0, 0};
	size_t n = b->data.len / 3 * 4;
	int i;

	if (!buffer_reserve(&text, n + (size_t)b->digits + (size_t)b->pads + 16))
		return 0;
	base64_encode_to(text.data, (const unsigned char *)b->data.data, b->data.len);
	for (i = b->digits - 1; i >= 0; i--)
		text.data[n++] = base64_alphabet[b->quad >> (6 * i) & 63];
	for (i = 0; i < b->pads; i++)
		text.data[n++] = '=';
	text.len = n;
	buffer_free(&b->data);
	b->data = text;
	b->invalid = 1;
	b->digits = b->pads = 0;
	b->quad = 0;
	snprintf(b->error, sizeof b->error, "%s", message);
	return 1;
}

/* core.base64_decode's message, for the byte at b->offset. */
static int blob_fail_here(ResponseBlob *b)
{
	char message[sizeof b->error];

	snprintf(message, sizeof message, "invalid base64 character at offset %lu", (unsigned long)b->offset);
	return blob_fail(b, message);
}

/* One byte of the unescaped value. */
static int blob_byte(ResponseBlob *b, unsigned c)
{
	unsigned v;
	unsigned char *out;

	if (b->invalid) {
		if (!buffer_reserve(&b->data, 1))
			return 0;
		b->data.data[b->data.len++] = (char)c;
		b->surrogate = 0;
		b->offset++;
		return 1;
	}
	v = base64_table[c];
	if (v == B64_SPACE || (v == B64_PAD && b->pads < 2)) {
		b->pads += v == B64_PAD;
		b->offset++;
		return 1;
	}
	if (v >= B64_INVALID || b->pads > 0)
		return blob_fail_here(b) && blob_byte(b, c);
	b->quad = b->quad << 6 | v;
	b->offset++;
	if (++b->digits < 4)
		return 1;
	if (!buffer_reserve(&b->data, 3))
		return 0;
	out = (unsigned char *)b->data.data + b->data.len;
	out[0] = (unsigned char)(b->quad >> 16);
	out[1] = (unsigned char)(b->quad >> 8);
	out[2] = (unsigned char)b->quad;
	b->data.len += 3;
	b->digits = 0;
	b->quad = 0;
	return 1;
}

/* A \u escape: ASCII is a byte like any other; the rest is never base64. */
static int blob_code_unit(ResponseBlob *b, unsigned cp)
{
	unsigned char utf8[4];
	size_t n, i;

	if (cp < 0x80)
		return blob_byte(b, cp);
	if (!b->invalid && !blob_fail_here(b))
		return 0;
	/* The text: UTF-8, a surrogate pair joined as cjson joins it. */
	if (cp >= 0xD800 && cp <= 0xDBFF) {
		b->surrogate = cp;
		b->offset++;
		return 1;
	}
	if (cp >= 0xDC00 && cp <= 0xDFFF && b->surrogate != 0)
		cp = 0x10000 + ((b->surrogate - 0xD800) << 10) + (cp - 0xDC00);
	b->surrogate = 0;
	if (cp < 0x800) {
		utf8[0] = (unsigned char)(0xC0 | cp >> 6);
		n = 1;
	} else if (cp < 0x10000) {
		utf8[0] = (unsigned char)(0xE0 | cp >> 12);
		utf8[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
		n = 2;
	} else {
		utf8[0] = (unsigned char)(0xF0 | cp >> 18);
		utf8[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
		utf8[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
		n = 3;
	}
	utf8[n++] = (unsigned char)(0x80 | (cp & 0x3F));
	if (!buffer_reserve(&b->data, n))
		return 0;
	for (i = 0; i < n; i++)
		b->data.data[b->data.len++] = (char)utf8[i];
	b->offset++;
	return 1;
}

/* Not JSON (cjson refuses the body): the blob is invalid, with a message. */
static int blob_not_json(ResponseBlob *b, const char *what)
{
	char message[sizeof b->error];

	if (b->invalid)
		return 1;
	snprintf(message, sizeof message, "%s in the JSON string at offset %lu", what, (unsigned long)b->offset);
	return blob_fail(b, message);
}

/*
 * The fast path of a valid blob: whole quads of digits, no escape nor white
 * space. Returns where it stopped, or NULL when out of memory.
 */
static const unsigned char *blob_quads(ResponseBlob *b, const unsigned char *p, const unsigned char *end)
{
	const unsigned char *t = base64_table, *start = p;
	size_t quads = (size_t)(end - p) / 4;
	unsigned char *out;
	unsigned long v;

	if (quads == 0)
		return p;
	if (!buffer_reserve(&b->data, quads * 3))
		return NULL;
	out = (unsigned char *)b->data.data + b->data.len;
	for (; quads > 0; quads--, p += 4, out += 3) {
		unsigned c0 = t[p[0]], c1 = t[p[1]], c2 = t[p[2]], c3 = t[p[3]];

		if ((c0 | c1 | c2 | c3) >= 64)
			break;
		v = (unsigned long)c0 << 18 | (unsigned long)c1 << 12 | (unsigned long)c2 << 6 | c3;
		out[0] = (unsigned char)(v >> 16);
		out[1] = (unsigned char)(v >> 8);
		out[2] = (unsigned char)v;
	}
	b->data.len = (size_t)(out - (unsigned char *)b->data.data);
	b->offset += (size_t)(p - start);
	return p;
}

/*
 * Bytes of an extracted value from p: up to end, or to its closing quote
 * (returned, not consumed). NULL when out of memory.
 */
static const unsigned char *blob_scan(ResponseBlob *b, JsonScan *s, const unsigned char *p, const unsigned char *end)
{
	while (p < end) {
		unsigned c = *p;
		int v, ok;

		if (s->escape == 1) {
			s->escape = 0;
			switch (c) {
			case '"':
			case '\\':
			case '/':
				ok = blob_byte(b, c);
				break;
			case 'b':
				ok = blob_byte(b, '\b');
				break;
			case 'f':
				ok = blob_byte(b, '\f');
				break;
			case 'n':
				ok = blob_byte(b, '\n');
				break;
			case 'r':
				ok = blob_byte(b, '\r');
				break;
			case 't':
				ok = blob_byte(b, '\t');
				break;
			case 'u':
				s->escape = 2;
				s->hex = 0;
				ok = 1;
				break;
			default:
				ok = blob_not_json(b, "an invalid escape") && blob_byte(b, c);
				break;
			}
			p++;
		} else if (s->escape > 1) {
			v = hex_value(c);
			if (v < 0) {
				/* Not JSON: c is read again, as a character of the string. */
				s->escape = 0;
				ok = blob_not_json(b, "an invalid \\u escape");
			} else {
				p++;
				s->hex = s->hex << 4 | (unsigned)v;
				ok = 1;
				if (++s->escape == 6) {
					s->escape = 0;
					ok = blob_code_unit(b, s->hex);
				}
			}
		} else if (c == '"') {
			return p;
		} else if (c == '\\') {
			s->escape = 1;
			p++;
			ok = 1;
		} else if (!b->invalid && b->digits == 0 && b->pads == 0 && base64_table[c] < 64) {
			p = blob_quads(b, p, end);
			if (p == NULL)
				return NULL;
			/* Fewer than 4 bytes left, or something else than a digit ahead. */
			ok = 1;
			if (p < end && base64_table[*p] < 64) {
				ok = blob_byte(b, *p);
				p++;
			}
		} else {
			ok = blob_byte(b, c);
			p++;
		}
		if (!ok)
			return NULL;
	}
	return p;
}

static size_t placeholder(char *out, size_t size, size_t n)
{
	int len = snprintf(out, size, RESPONSE_BLOB_PREFIX "%lu", (unsigned long)n);

	return len > 0 ? (size_t)len : 0;
}

/* The opening quote of a "b64_json" value was just copied to the body. */
static int blob_start(Response *r)
{
	char text[40];
	size_t len;

	if (r->nblobs == r->blobs_cap) {
		size_t cap = r->blobs_cap == 0 ? 8 : 2 * r->blobs_cap;
		ResponseBlob *grown = realloc(r->blobs, cap * sizeof *grown);

		if (grown == NULL)
			return 0;
		r->blobs = grown;
		r->blobs_cap = cap;
	}
	len = placeholder(text, sizeof text, r->nblobs + 1);
	if (!buffer_append(&r->body, text, len))
		return 0;
	memset(&r->blobs[r->nblobs], 0, sizeof r->blobs[r->nblobs]);
	r->nblobs++;
	return 1;
}

/* Its closing quote: the end of the base64, or an empty value put back. */
static int blob_end(Response *r)
{
	ResponseBlob *b = &r->blobs[r->nblobs - 1];
	unsigned char *out;
	char text[40];

	if (b->offset == 0 && !b->invalid) {
		/* Nothing in it: "" stays, and nothing was appended since the placeholder. */
		r->body.len -= placeholder(text, sizeof text, r->nblobs);
		buffer_free(&b->data);
		r->nblobs--;
		return 1;
	}
	if (!b->invalid) {
		/* As core.base64_decode: '=' may be left out, but not be wrong. */
		if (b->digits == 1 || (b->digits == 0 && b->pads > 0) || (b->digits == 2 && b->pads == 1) ||
				(b->digits == 3 && b->pads > 1))
			return blob_fail(b, "truncated base64");
		if (b->digits > 1) {
			if (!buffer_reserve(&b->data, 2))
				return 0;
			out = (unsigned char *)b->data.data + b->data.len;
			if (b->digits == 2) {
				out[0] = (unsigned char)(b->quad >> 4);
			} else {
				out[0] = (unsigned char)(b->quad >> 10);
				out[1] = (unsigned char)(b->quad >> 2);
			}
			b->data.len += (size_t)b->digits - 1;
			b->digits = 0;
			b->quad = 0;
		}
	}
	/* Give back what doubling reserved beyond the end (a realloc in place). */
	if (b->data.len == 0)
		buffer_free(&b->data);
	else if (b->data.cap - b->data.len > 4096)
		(void)buffer_resize(&b->data, b->data.len);
	return 1;
}

/*
 * A chunk of an extracting body: copied to r->body, except the contents of
 * "b64_json" string values, which go to blobs. Returns 0 when out of memory.
 */
static int extract(Response *r, const unsigned char *p, size_t n)
{
	JsonScan *s = &r->scan;
	const unsigned char *end = p + n;
	const unsigned char *run = s->state == SCAN_BLOB ? NULL : p; /* to copy from here */
	unsigned c;

	while (p < end) {
		switch (s->state) {
		case SCAN_OUT:
			p = memchr(p, '"', (size_t)(end - p));
			if (p == NULL) {
				p = end;
				break;
			}
			p++;
			s->state = SCAN_STRING;
			s->escape = 0;
			s->keylen = 0;
			s->keyok = 1;
			break;
		case SCAN_STRING:
			p = scan_string(s, p, end);
			break;
		case SCAN_AFTER_KEY:
		case SCAN_AFTER_COLON:
			c = *p;
			if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
				p++;
			} else if (c == ':' && s->state == SCAN_AFTER_KEY) {
				p++;
				s->state = SCAN_AFTER_COLON;
			} else if (c == '"' && s->state == SCAN_AFTER_COLON && r->nblobs < RESPONSE_MAX_BLOBS) {
				p++;
				if (!buffer_append(&r->body, (const char *)run, (size_t)(p - run)) || !blob_start(r))
					return 0;
				run = NULL;
				s->state = SCAN_BLOB;
				s->escape = 0;
			} else {
				s->state = SCAN_OUT; /* c is read again, outside any string */
			}
			break;
		default: /* SCAN_BLOB */
			p = blob_scan(&r->blobs[r->nblobs - 1], s, p, end);
			if (p == NULL)
				return 0;
			if (p < end) {
				if (!blob_end(r))
					return 0;
				run = p; /* the closing quote is the body's again */
				p++;
				s->state = SCAN_OUT;
			}
			break;
		}
	}
	return run == NULL || buffer_append(&r->body, (const char *)run, (size_t)(end - run));
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
	if (r->extract ? !extract(r, (const unsigned char *)data, n) : !buffer_append(&r->body, data, n)) {
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
	size_t nlen, vlen;
	int n = 0;

	/* One NUL ends each name and each value: sized once, never rehashed. */
	for (; p < end; p++)
		n += *p == '\0';
	lua_createtable(L, 0, n / 2);
	for (p = r->headers.data; p < end; p = value + vlen + 1) {
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

void response_push_body(lua_State *L, Response *r, int decode_json, int decode)
{
	lua_pushlstring(L, r->body.data != NULL ? r->body.data : "", r->body.len);
	buffer_free(&r->body);
	lua_setfield(L, -2, "body");
	if (decode_json)
		decode_body(L, decode);
}

size_t response_push_blobs(lua_State *L, Response *r)
{
	size_t i, bytes = 0;

	/* A body that ended inside a value: cjson refuses it, and so does the blob. */
	if (r->scan.state == SCAN_BLOB) {
		ResponseBlob *b = &r->blobs[r->nblobs - 1];

		if (!b->invalid) {
			b->invalid = 1;
			buffer_free(&b->data);
		}
		snprintf(b->error, sizeof b->error, "the JSON string ends early, at offset %lu",
				(unsigned long)b->offset);
		r->scan.state = SCAN_OUT;
	}
	lua_createtable(L, (int)r->nblobs, 0);
	for (i = 0; i < r->nblobs; i++) {
		bytes += r->blobs[i].data.len;
		blob_push(L, &r->blobs[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "blobs");
	return bytes;
}
