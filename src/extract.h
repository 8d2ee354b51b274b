/*
 * The streaming extractor: the string values of one JSON key (the
 * request's `extract`, e.g. "b64_json") are base64-decoded as the body
 * arrives, each into a blob of its own, and the body keeps a placeholder,
 * IMGEDIT_BLOB_PREFIX "<n>" (n counts from 1), in their place, so the rest
 * stays valid, small JSON. An empty value stays as it is and makes no
 * blob. Internal to imgedit.core and the fuzzing harnesses in fuzz/.
 *
 * A key matches as cjson reads keys: its escapes are undone first. A blob
 * decodes the value exactly as core.base64_decode decodes the string
 * cjson makes of it: JSON escapes are undone first (\/ is /, \n and \r
 * are white space, \u0041 is A...), white space is skipped, '=' only ends
 * it. The first problem makes the blob invalid, with core.base64_decode's
 * message ("invalid base64 character at offset N", N counting bytes of the
 * unescaped value, or "truncated base64"); from then on it holds text
 * rather than bytes: the base64 digits and '=' read until the problem,
 * then the rest of the unescaped value as it is.
 */
#ifndef IMGEDIT_EXTRACT_H
#define IMGEDIT_EXTRACT_H

#include <stddef.h>

#include <lua.h>

#include "buffer.h"

#define EXTRACT_MAX_BLOBS 256
/* Keys are 1 to this many printable ASCII characters, without '"' and '\'. */
#define EXTRACT_MAX_KEY 64

typedef struct ExtractBlob {
	Buffer data;        /* decoded bytes; the text once invalid */
	size_t offset;      /* bytes of the unescaped value read so far */
	unsigned long quad; /* the sextets of the quad in progress */
	int digits;         /* how many: 0-3 */
	int pads;           /* '=' read */
	int invalid;        /* error says why */
	unsigned surrogate; /* invalid: a \uD800-\uDBFF waiting for its pair */
	char error[64];
} ExtractBlob;

/* Where the scanner is; survives any chunk boundary. */
typedef struct JsonScan {
	unsigned char state;  /* SCAN_* in extract.c */
	unsigned char escape; /* 0; 1 after a backslash; 2-5: hex digits of \u read + 2 */
	unsigned char keylen; /* unescaped bytes of the string, while they match the key */
	unsigned char keyok;  /* ... and they do */
	unsigned hex;         /* the \u code unit so far */
} JsonScan;

typedef struct Extractor {
	char key[EXTRACT_MAX_KEY + 1];
	size_t keylen;       /* 0: nothing is extracted */
	JsonScan scan;
	ExtractBlob *blobs;  /* owned, with their buffers, until pushed to Lua */
	size_t nblobs, blobs_cap;
} Extractor;

/* Whether key[0..len) can be extracted (see EXTRACT_MAX_KEY). */
IMGEDIT_INTERNAL int extract_key_valid(const char *key, size_t len);

/* Nothing extracted (keylen 0), no buffers; then extract_set_key for a key. */
IMGEDIT_INTERNAL void extract_init(Extractor *x);
IMGEDIT_INTERNAL void extract_set_key(Extractor *x, const char *key, size_t len);

/* Forgets the blobs of the body so far (a new response); the array is kept. */
IMGEDIT_INTERNAL void extract_reset(Extractor *x);

/* Frees everything; the key stays. */
IMGEDIT_INTERNAL void extract_free(Extractor *x);

/*
 * A chunk of the body: appended to body, except the contents of the key's
 * string values, which go to blobs. Returns 0 when out of memory.
 */
IMGEDIT_INTERNAL int extract_chunk(Extractor *x, Buffer *body, const unsigned char *p, size_t n);

/*
 * Pushes an array of Blob userdata (blob.c), each taking over the buffer
 * of one ExtractBlob; a body that ended inside a value makes that blob
 * invalid first. A memory error raised meanwhile leaves every buffer with
 * exactly one owner. Returns the bytes the blobs hold.
 */
IMGEDIT_INTERNAL size_t extract_push_blobs(lua_State *L, Extractor *x);

/* blob.c: pushes a new Blob userdata that takes b's buffer over. */
IMGEDIT_INTERNAL void blob_push(lua_State *L, ExtractBlob *b);

#endif
