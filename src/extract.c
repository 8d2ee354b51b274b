/*
 * The streaming extractor (see extract.h): a byte-at-a-time JSON scanner
 * that only tracks strings, keys and the values of the extracted key. Only
 * C memory is touched until extract_push_blobs, which runs outside any
 * libcurl callback (from t:result()).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "extract.h"

int extract_key_valid(const char *key, size_t len)
{
	size_t i;

	if (len == 0 || len > EXTRACT_MAX_KEY)
		return 0;
	for (i = 0; i < len; i++)
		if (key[i] < 0x20 || key[i] > 0x7E || key[i] == '"' || key[i] == '\\')
			return 0;
	return 1;
}

void extract_init(Extractor *x)
{
	memset(x, 0, sizeof *x);
}

void extract_set_key(Extractor *x, const char *key, size_t len)
{
	memcpy(x->key, key, len);
	x->key[len] = '\0';
	x->keylen = len;
}

void extract_reset(Extractor *x)
{
	size_t i;

	for (i = 0; i < x->nblobs; i++)
		buffer_free(&x->blobs[i].data);
	x->nblobs = 0;
	memset(&x->scan, 0, sizeof x->scan);
}

void extract_free(Extractor *x)
{
	extract_reset(x);
	free(x->blobs);
	x->blobs = NULL;
	x->blobs_cap = 0;
}

enum {
	SCAN_OUT,         /* outside any string */
	SCAN_STRING,      /* in a string that is not extracted (a key, maybe the key) */
	SCAN_AFTER_KEY,   /* after a string that spells the key: white space, then ':'? */
	SCAN_AFTER_COLON, /* after the key and ':': white space, then '"'? */
	SCAN_BLOB         /* in an extracted value: its bytes go to the last blob */
};

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
static void key_byte(const Extractor *x, JsonScan *s, unsigned c)
{
	if (s->keyok && s->keylen < x->keylen && c == (unsigned char)x->key[s->keylen])
		s->keylen++;
	else
		s->keyok = 0;
}

/*
 * A string that is not extracted: only whether it spells the key (escapes
 * undone, as cjson reads keys) matters. Returns where it stopped: after the
 * closing quote, with s->state set for what follows, or at end.
 */
static const unsigned char *scan_string(const Extractor *x, JsonScan *s, const unsigned char *p,
		const unsigned char *end)
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
				s->state = s->keyok && s->keylen == x->keylen ? SCAN_AFTER_KEY : SCAN_OUT;
				return p;
			}
			if (c == '\\')
				s->escape = 1;
			else
				key_byte(x, s, c);
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
				key_byte(x, s, s->hex < 0x80 ? s->hex : 0);
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
static int blob_fail(ExtractBlob *b, const char *message)
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
static int blob_fail_here(ExtractBlob *b)
{
	char message[sizeof b->error];

	snprintf(message, sizeof message, "invalid base64 character at offset %lu", (unsigned long)b->offset);
	return blob_fail(b, message);
}

/* One byte of the unescaped value. */
static int blob_byte(ExtractBlob *b, unsigned c)
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
static int blob_code_unit(ExtractBlob *b, unsigned cp)
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
static int blob_not_json(ExtractBlob *b, const char *what)
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
static const unsigned char *blob_quads(ExtractBlob *b, const unsigned char *p, const unsigned char *end)
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
static const unsigned char *blob_scan(ExtractBlob *b, JsonScan *s, const unsigned char *p, const unsigned char *end)
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
	int len = snprintf(out, size, IMGEDIT_BLOB_PREFIX "%lu", (unsigned long)n);

	return len > 0 ? (size_t)len : 0;
}

/* The opening quote of a value of the key was just copied to the body. */
static int blob_start(Extractor *x, Buffer *body)
{
	char text[40];
	size_t len;

	if (x->nblobs == x->blobs_cap) {
		size_t cap = x->blobs_cap == 0 ? 8 : 2 * x->blobs_cap;
		ExtractBlob *grown = realloc(x->blobs, cap * sizeof *grown);

		if (grown == NULL)
			return 0;
		x->blobs = grown;
		x->blobs_cap = cap;
	}
	len = placeholder(text, sizeof text, x->nblobs + 1);
	if (!buffer_append(body, text, len))
		return 0;
	memset(&x->blobs[x->nblobs], 0, sizeof x->blobs[x->nblobs]);
	x->nblobs++;
	return 1;
}

/* Its closing quote: the end of the base64, or an empty value put back. */
static int blob_end(Extractor *x, Buffer *body)
{
	ExtractBlob *b = &x->blobs[x->nblobs - 1];
	unsigned char *out;
	char text[40];

	if (b->offset == 0 && !b->invalid) {
		/* Nothing in it: "" stays, and nothing was appended since the placeholder. */
		body->len -= placeholder(text, sizeof text, x->nblobs);
		buffer_free(&b->data);
		x->nblobs--;
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

int extract_chunk(Extractor *x, Buffer *body, const unsigned char *p, size_t n)
{
	JsonScan *s = &x->scan;
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
			p = scan_string(x, s, p, end);
			break;
		case SCAN_AFTER_KEY:
		case SCAN_AFTER_COLON:
			c = *p;
			if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
				p++;
			} else if (c == ':' && s->state == SCAN_AFTER_KEY) {
				p++;
				s->state = SCAN_AFTER_COLON;
			} else if (c == '"' && s->state == SCAN_AFTER_COLON && x->nblobs < EXTRACT_MAX_BLOBS) {
				p++;
				if (!buffer_append(body, (const char *)run, (size_t)(p - run)) || !blob_start(x, body))
					return 0;
				run = NULL;
				s->state = SCAN_BLOB;
				s->escape = 0;
			} else {
				s->state = SCAN_OUT; /* c is read again, outside any string */
			}
			break;
		default: /* SCAN_BLOB */
			p = blob_scan(&x->blobs[x->nblobs - 1], s, p, end);
			if (p == NULL)
				return 0;
			if (p < end) {
				if (!blob_end(x, body))
					return 0;
				run = p; /* the closing quote is the body's again */
				p++;
				s->state = SCAN_OUT;
			}
			break;
		}
	}
	return run == NULL || buffer_append(body, (const char *)run, (size_t)(end - run));
}

size_t extract_push_blobs(lua_State *L, Extractor *x)
{
	size_t i, bytes = 0;

	/* A body that ended inside a value: cjson refuses it, and so does the blob. */
	if (x->scan.state == SCAN_BLOB) {
		ExtractBlob *b = &x->blobs[x->nblobs - 1];

		if (!b->invalid) {
			b->invalid = 1;
			buffer_free(&b->data);
		}
		snprintf(b->error, sizeof b->error, "the JSON string ends early, at offset %lu",
				(unsigned long)b->offset);
		x->scan.state = SCAN_OUT;
	}
	lua_createtable(L, (int)x->nblobs, 0);
	for (i = 0; i < x->nblobs; i++) {
		bytes += x->blobs[i].data.len;
		blob_push(L, &x->blobs[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	return bytes;
}
