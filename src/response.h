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

#include "buffer.h"
#include "extract.h"
#include "imgedit.h"

/* Why a callback aborted the transfer; decides error.kind. */
typedef enum {
	STOP_NONE,
	STOP_TOO_LARGE, /* body over max_bytes */
	STOP_BUDGET,    /* the bodies held in memory would pass pool_limit */
	STOP_NO_MEMORY, /* body or headers could not be buffered */
	STOP_IO         /* output file could not be written (set by transfer.c) */
} StopReason;

typedef struct Response {
	Buffer body;           /* in-memory body of the current response */
	Buffer headers;        /* "name\0value\0"... of the current response (names in lower case) */
	curl_off_t max_bytes;  /* -1: no limit */
	curl_off_t received;   /* body bytes of the current response */
	/*
	 * The budget shared by the responses of one multi handle: *pool counts
	 * the body bytes all of them hold in memory (pooled: this one's), and
	 * a chunk that would take it past pool_limit stops this response.
	 */
	size_t *pool;          /* not owned (the Multi's); NULL: no budget */
	curl_off_t pool_limit; /* -1: no limit */
	size_t pooled;
	int status;            /* of the current response; 0 before any */
	int in_headers;        /* its status line came, its blank line not yet */
	int has_output;        /* a 2xx body goes to a file, not to body */
	StopReason stop;
	Extractor x;           /* x.keylen > 0: values of that key go to blobs (extract.h) */
} Response;

typedef enum {
	RESPONSE_HEADER_OK,
	RESPONSE_HEADER_END,   /* the blank line: call response_presize next */
	RESPONSE_HEADER_FAILED /* out of memory; r->stop is set */
} ResponseHeader;

typedef enum {
	RESPONSE_BODY_BUFFERED, /* appended to r->body (or extracted) */
	RESPONSE_BODY_TO_FILE,  /* counted; the caller writes it to the file */
	RESPONSE_BODY_STOP      /* refused; r->stop says why */
} ResponseBody;

/* No limit, no budget, nothing extracted, nothing received, no buffers. */
IMGEDIT_INTERNAL void response_init(Response *r);

/* Frees the buffers and gives their bytes back to the pool (the Response can take more data afterwards). */
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
 * One body chunk (n > 0): checked against max_bytes and the pool before it
 * is buffered (with extraction: the bytes received, not the bytes kept).
 */
IMGEDIT_INTERNAL ResponseBody response_body(Response *r, const char *data, size_t n);

/* Pushes the in-memory body as a string, then frees the C copy. */
IMGEDIT_INTERNAL void response_push_body(lua_State *L, Response *r);

/*
 * Header blocks ("name\0value\0"..., as in Response.headers), also once a
 * result has taken one over (transfer.c):
 * headers_find gives the value of the first header called name (lower
 * case) or NULL; headers_push pushes a table of them all, lower-case names,
 * repeated ones joined with ", ".
 */
IMGEDIT_INTERNAL const char *headers_find(const char *block, size_t len, const char *name, size_t *vlen);
IMGEDIT_INTERNAL void headers_push(lua_State *L, const char *block, size_t len);

#endif
