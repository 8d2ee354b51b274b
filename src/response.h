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

typedef struct Response {
	Buffer body;          /* in-memory body of the current response */
	Buffer headers;       /* "name\0value\0"... of the current response */
	curl_off_t max_bytes; /* -1: no limit */
	curl_off_t received;  /* body bytes of the current response */
	int status;           /* of the current response; 0 before any */
	int nobody;           /* HEAD: no body expected */
	int has_output;       /* a 2xx body goes to a file, not to body */
	StopReason stop;
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

/* One body chunk (n > 0): checked against max_bytes before it is buffered. */
IMGEDIT_INTERNAL ResponseBody response_body(Response *r, const char *data, size_t n);

/* Pushes a table of the headers: lower-case names, repeated ones joined. */
IMGEDIT_INTERNAL void response_push_headers(lua_State *L, const Response *r);

/*
 * Sets result.body in the table on top of the stack and, if decode_json,
 * result.json or result.decode_error through the function at index decode
 * (cjson.safe.decode).
 */
IMGEDIT_INTERNAL void response_push_body(lua_State *L, const Response *r, int decode_json, int decode);

#endif
