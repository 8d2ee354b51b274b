/*
 * The response side of a transfer, apart from libcurl and the network: the
 * header lines and body chunks that transfer.c's curl callbacks receive go
 * through these functions, and so do the fuzzing harnesses in fuzz/.
 * Internal to imgedit.core; nothing here is exported from the .so.
 */
#ifndef IMGEDIT_RESPONSE_H
#define IMGEDIT_RESPONSE_H

#include <stddef.h>

#include <curl/curl.h>
#include <lua.h>

#include "imgedit.h"

/* Why a callback aborted the transfer; decides error.kind. */
typedef enum {
	STOP_NONE,
	STOP_TOO_LARGE, /* body over max_bytes */
	STOP_NO_MEMORY, /* body or headers could not be buffered */
	STOP_IO         /* output file could not be written (set by transfer.c) */
} StopReason;

typedef struct Buffer {
	char *data;
	size_t len;
	size_t cap;
} Buffer;

/*
 * Body extraction (req.extract = "b64_json"): the in-memory body is scanned
 * as it arrives, and the string value of every "b64_json" key is base64-
 * decoded on the fly into a blob of its own; the body keeps a placeholder,
 * "imgedit-blob:<n>" (n counts from 1), in its place, so the rest stays
 * valid, small JSON. An empty value stays as it is and makes no blob.
 *
 * A blob decodes the value exactly as core.base64_decode decodes the string
 * cjson makes of it: JSON escapes are undone first (\/ is /, 
 and 
 are
 * white space, A is A...), white space is skipped, '=' only ends it.
 * The first problem makes the blob invalid, with core.base64_decode's
 * message ("invalid base64 character at offset N", N counting bytes of the
 * unescaped value, or "truncated base64"); from then on it holds text rather
 * than bytes: the base64 digits and '=' read until the problem, then the
 * rest of the unescaped value as it is.
 */
#define RESPONSE_MAX_BLOBS 256
#define RESPONSE_BLOB_PREFIX "imgedit-blob:"

typedef struct ResponseBlob {
	Buffer data;        /* decoded bytes; the text once invalid */
	size_t offset;      /* bytes of the unescaped value read so far */
	unsigned long quad; /* the sextets of the quad in progress */
	int digits;         /* how many: 0-3 */
	int pads;           /* '=' read */
	int invalid;        /* error says why */
	unsigned surrogate; /* invalid: a \uD800-\uDBFF waiting for its pair */
	char error[64];
} ResponseBlob;

/* Where the scanner of an extracting body is; survives any chunk boundary. */
typedef struct JsonScan {
	unsigned char state;  /* SCAN_* in response.c */
	unsigned char escape; /* 0; 1 after a backslash; 2-5: hex digits of \u read + 2 */
	unsigned char keylen; /* unescaped bytes of the string, while they match "b64_json" */
	unsigned char keyok;  /* ... and they do */
	unsigned hex;         /* the \u code unit so far */
} JsonScan;

typedef struct Response {
	Buffer body;          /* in-memory body of the current response */
	Buffer headers;       /* "name\0value\0"... of the current response */
	curl_off_t max_bytes; /* -1: no limit */
	curl_off_t received;  /* body bytes of the current response */
	int status;           /* of the current response; 0 before any */
	int nobody;           /* HEAD: no body expected */
	int has_output;       /* a 2xx body goes to a file, not to body */
	int extract;          /* "b64_json" values go to blobs (see above) */
	StopReason stop;
	JsonScan scan;
	ResponseBlob *blobs;  /* owned, with their buffers, until pushed to Lua */
	size_t nblobs, blobs_cap;
} Response;

typedef enum {
	RESPONSE_HEADER_OK,
	RESPONSE_HEADER_END,   /* the blank line: call response_presize next */
	RESPONSE_HEADER_FAILED /* out of memory; r->stop is set */
} ResponseHeader;

typedef enum {
	RESPONSE_BODY_BUFFERED, /* appended to r->body */
	RESPONSE_BODY_TO_FILE,  /* counted; the caller writes it to the file */
	RESPONSE_BODY_STOP      /* refused; r->stop says why */
} ResponseBody;

/* No limit, nothing received, no buffers. */
IMGEDIT_INTERNAL void response_init(Response *r);

/* Frees the buffers (the Response can still take more data afterwards). */
IMGEDIT_INTERNAL void response_free(Response *r);

/* True when a body chunk now goes to the output file: a 2xx with an output. */
IMGEDIT_INTERNAL int response_to_file(const Response *r);

/*
 * One header line as libcurl passes it (line end included, not
 * NUL-terminated): a status line starts a new response, a blank line ends
 * the block, others are parsed into r->headers.
 */
IMGEDIT_INTERNAL ResponseHeader response_header(Response *r, const char *line, size_t n);

/* After RESPONSE_HEADER_END: reserve the announced body size (-1: none). */
IMGEDIT_INTERNAL void response_presize(Response *r, curl_off_t content_length);

/*
 * One body chunk (n > 0): checked against max_bytes before it is buffered
 * (with extraction: the bytes received, not the bytes kept).
 */
IMGEDIT_INTERNAL ResponseBody response_body(Response *r, const char *data, size_t n);

/* Pushes a table of the headers: lower-case names, repeated ones joined. */
IMGEDIT_INTERNAL void response_push_headers(lua_State *L, const Response *r);

/*
 * Sets result.body in the table on top of the stack and, if decode_json,
 * result.json or result.decode_error through the function at index decode
 * (cjson.safe.decode). The C copy of the body is freed once it is a Lua
 * string, before it is decoded.
 */
IMGEDIT_INTERNAL void response_push_body(lua_State *L, Response *r, int decode_json, int decode);

/*
 * Sets result.blobs in the table on top of the stack: an array of Blob
 * userdata (blob.c), each taking over the buffer of one ResponseBlob. A
 * memory error raised meanwhile leaves every buffer with exactly one owner.
 * Returns the bytes the blobs hold.
 */
IMGEDIT_INTERNAL size_t response_push_blobs(lua_State *L, Response *r);

/* blob.c: pushes a new Blob userdata that takes b's buffer over. */
IMGEDIT_INTERNAL void blob_push(lua_State *L, ResponseBlob *b);

#endif
