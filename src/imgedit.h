/*
 * Declarations shared by the files of imgedit.core. All of them are linked
 * into one shared object; only luaopen_imgedit_core is exported from it.
 *
 *   core.c      luaopen, the class helper, the monotonic clock, core.curl_info
 *   multi.c     Multi: one CURLM*, the transfers attached to it, its memory budget
 *   ready.c     ReadySet: curl's sockets in a kernel readiness set (epoll, or poll())
 *   session.c   Session: the options and header lines every request of a
 *               client shares, set once on each easy handle it keeps
 *   transfer.c  Transfer: one request, its libcurl callbacks, its result
 *   response.c  status, header block and body of a response (no libcurl calls)
 *   extract.c   the streaming extractor of one JSON key's string values
 *   blob.c      Blob: one extracted value, decoded, as a Lua object
 *   buffer.c    growable byte buffers
 *   codec.c     base64, and core.classify (UTF-8 length, control and space bytes)
 */
#ifndef IMGEDIT_H
#define IMGEDIT_H

#include <stddef.h>

#include <curl/curl.h>

#include "compat.h"

#define IMGEDIT_VERSION "0.1.0"

/*
 * The .so exports luaopen_imgedit_core alone, even when built with
 * -fvisibility=hidden; the functions shared between its files are hidden.
 */
#if defined(__GNUC__)
#define IMGEDIT_EXPORT __attribute__((visibility("default")))
#define IMGEDIT_INTERNAL __attribute__((visibility("hidden")))
#else
#define IMGEDIT_EXPORT
#define IMGEDIT_INTERNAL
#endif

IMGEDIT_EXPORT int luaopen_imgedit_core(lua_State *L);

#define MULTI_MT "imgedit.multi"
#define SESSION_MT "imgedit.session"
#define TRANSFER_MT "imgedit.transfer"
#define BLOB_MT "imgedit.blob"
#define RESULT_MT "imgedit.result"

/* The placeholder an extracted value leaves in the body: the prefix, then n (from 1). */
#define IMGEDIT_BLOB_PREFIX "imgedit-blob:"

typedef struct Transfer Transfer;
typedef struct Session Session;

/* --- core.c ----------------------------------------------------------------- */

/* Seconds of CLOCK_MONOTONIC: the one clock of the module (core.now, m:timer). */
IMGEDIT_INTERNAL double imgedit_now(void);

/*
 * Registers the metatable `name`: methods go to its __index table, the
 * metamethods to it; both get the nup values on top of the stack as
 * upvalues, which are popped, and the metatable itself as upvalue nup + 1.
 */
IMGEDIT_INTERNAL void imgedit_class(lua_State *L, const char *name, const luaL_Reg *methods,
		const luaL_Reg *metamethods, int nup);

/*
 * In a method or metamethod of class `name` registered with nup upvalues
 * (up = nup + 1): its first argument, a userdata of that class, or it
 * raises as luaL_checkudata does. A comparison with the metatable at hand,
 * where luaL_checkudata looks it up in the registry by name.
 */
IMGEDIT_INTERNAL void *imgedit_checkself(lua_State *L, int up, const char *name);

/* Called once by luaopen; mod is the stack index of the module table. */
IMGEDIT_INTERNAL void multi_open(lua_State *L, int mod);
IMGEDIT_INTERNAL void session_open(lua_State *L, int mod);
IMGEDIT_INTERNAL void transfer_open(lua_State *L);
IMGEDIT_INTERNAL void codec_open(lua_State *L, int mod);
IMGEDIT_INTERNAL void blob_open(lua_State *L);
IMGEDIT_INTERNAL void fs_open(lua_State *L, int mod);

/* --- fields.c --------------------------------------------------------------- */

/*
 * Tables of named fields (a request, a session's options), read into C
 * values by one description: {name, type, curl option or 0}. The Lua
 * value types are checked (a wrong one raises, as luaL_argerror does);
 * values that cannot be used (negative seconds, a NUL byte in a string
 * curl would cut at it) make fields_read push nil and a message.
 */
typedef enum {
	FIELD_STRING,        /* no NUL byte: s, len */
	FIELD_BYTES,         /* any string: s, len */
	FIELD_SECONDS,       /* >= 0: n, in milliseconds, rounded up */
	FIELD_WHOLE_SECONDS, /* >= 0: n, in seconds, rounded up */
	FIELD_COUNT,         /* an integer >= 0: count (and n, saturated to a long) */
	FIELD_BOOLEAN,       /* b */
	FIELD_LINES          /* an array of strings without NUL, CR or LF: at stack index idx */
} FieldType;

typedef struct Field {
	const char *name;
	FieldType type;
	CURLoption option; /* set by fields_apply (a long, or a string), or 0 */
} Field;

typedef struct FieldValue {
	int set;          /* the field is in the table */
	const char *s;    /* FIELD_STRING: valid while the table is */
	size_t len;
	long n;
	curl_off_t count;
	int b;
	int idx;          /* FIELD_LINES: where fields_read left the table */
} FieldValue;

/*
 * Reads the table at idx (argument arg of the function) into values,
 * values[i] for fields[i]; a key that names no field raises. Returns 1, or
 * pushes nil and a message and returns 0. Leaves FIELD_LINES tables on the
 * stack.
 */
IMGEDIT_INTERNAL int fields_read(lua_State *L, int idx, int arg, const Field *fields, size_t n,
		FieldValue *values);

/*
 * Sets the options of the fields that have one: the value read or, with
 * defaults, for a field absent from the table, 0 (or NULL): curl's "none".
 * Without defaults an absent field is left alone.
 */
IMGEDIT_INTERNAL CURLcode fields_apply(CURL *easy, const Field *fields, size_t n, const FieldValue *values,
		int defaults);

/* Pushes the message of a string that curl cannot take: "<what> contains a NUL byte". */
IMGEDIT_INTERNAL int fields_refuse(lua_State *L, const char *fmt, const char *what);

/* --- multi.c ---------------------------------------------------------------- */

/* A transfer's place in its Multi's list; multi.c alone reads and writes the links. */
typedef struct MultiLink {
	struct MultiLink *prev, *next;
	Transfer *transfer; /* the transfer this link is part of */
	int attached;
} MultiLink;

/* A socket whose watch changed since Lua last asked; defined in multi.c. */
typedef struct SocketChange SocketChange;

/* --- ready.c ---------------------------------------------------------------- */

typedef struct ReadySet ReadySet;

/* The most events one ready_wait reports (and m:tick() serves). */
#define READY_MAX_EVENTS 64

/* A ready socket: what curl_multi_socket_action is told (CURL_CSELECT_*). */
typedef struct ReadyEvent {
	curl_socket_t fd;
	int mask;
} ReadyEvent;

/* An empty set, or NULL (errno says why). ready_free takes NULL too. */
IMGEDIT_INTERNAL ReadySet *ready_new(void);
IMGEDIT_INTERNAL void ready_free(ReadySet *r);

/* Watches fd for what (CURL_POLL_IN, _OUT, _INOUT), or stops (_REMOVE). 0, or -1 (errno). */
IMGEDIT_INTERNAL int ready_watch(ReadySet *r, curl_socket_t fd, int what);

/*
 * Waits at most timeout_ms (0: just asks) for watched sockets to be ready;
 * fills out[0..n) (n <= max) and returns n, or -1 (errno). An interrupted
 * wait reports nothing ready.
 */
IMGEDIT_INTERNAL int ready_wait(ReadySet *r, int timeout_ms, ReadyEvent *out, int max);

/* Sockets in the set; "epoll" or "poll". */
IMGEDIT_INTERNAL size_t ready_watched(const ReadySet *r);
IMGEDIT_INTERNAL const char *ready_backend(void);

typedef struct Multi {
	CURLM *handle;       /* owned; NULL once closed */
	MultiLink *attached; /* transfers added and not finished (not owned) */
	int count;           /* length of the attached list */

	/*
	 * Bytes of response bodies held in C memory by this multi's transfers,
	 * until t:result() turns them into Lua strings (response.c counts them):
	 * the budget of max_buffered_bytes.
	 */
	size_t buffered;

	/* Bytes of blobs handed to Lua since the last collection they caused (transfer.c). */
	size_t blob_bytes;

	/*
	 * Socket-driven modes, multi.c alone: curl's socket and timer callbacks
	 * only record, here, what must be watched. m:watch(): a host loop
	 * watches (changes); m:watch_ready(): the core does, in ready.
	 */
	int watching;          /* m:watch() */
	SocketChange *changes; /* owned; at most one entry per socket */
	size_t nchanges, changes_cap;
	ReadySet *ready;       /* owned; m:watch_ready(), else NULL */
	int timer_armed;       /* curl asked to be called back ... */
	double timer_due;      /* ... at this imgedit_now() time */
} Multi;

/*
 * Adds easy to m and links the transfer in; or returns why curl refused
 * (nothing linked). multi_detach undoes it; it does nothing to a link
 * that is not attached.
 */
IMGEDIT_INTERNAL CURLMcode multi_attach(Multi *m, CURL *easy, MultiLink *link);
IMGEDIT_INTERNAL void multi_detach(Multi *m, CURL *easy, MultiLink *link);

/*
 * Writes len bytes to path (fs.c): created or truncated, a FIFO without a
 * reader refused at once, SIGPIPE turned into EPIPE. 0, or an errno value.
 */
IMGEDIT_INTERNAL int fs_write_file(const char *path, const char *data, size_t len);

/* --- session.c -------------------------------------------------------------- */

/*
 * An easy handle of a session, with what the callbacks need that lives as
 * long as the handle: the transfer it serves and curl's error buffer.
 */
typedef struct Easy {
	CURL *handle;       /* owned */
	Transfer *transfer; /* the transfer using it, or NULL while it is a spare */
	long buffer_size;   /* CURLOPT_BUFFERSIZE as last set, 0 before */
	char errbuf[CURL_ERROR_SIZE];
} Easy;

IMGEDIT_INTERNAL Session *session_check(lua_State *L, int idx);

/*
 * An easy handle with the session's constant options set: a spare, or a
 * new one (NULL when curl cannot make one). session_release takes it back:
 * it becomes a spare, or is cleaned up.
 */
IMGEDIT_INTERNAL Easy *session_take(Session *s);
IMGEDIT_INTERNAL void session_release(Session *s, Easy *e);

/* The header list for a request with a body of body_len bytes (-1: none). */
IMGEDIT_INTERNAL struct curl_slist *session_headers(Session *s, curl_off_t body_len);

/* Bytes of the session's header lines. */
IMGEDIT_INTERNAL size_t session_header_bytes(const Session *s);

/* The session's limits: -1 when there is none. */
IMGEDIT_INTERNAL curl_off_t session_max_response_bytes(const Session *s);
IMGEDIT_INTERNAL curl_off_t session_max_buffered_bytes(const Session *s);

/*
 * The value of the first of the session's request_id_headers in a header
 * block ("name\0value\0"...), or NULL.
 */
IMGEDIT_INTERNAL const char *session_request_id(const Session *s, const char *block, size_t len,
		size_t *vlen);

/* --- codec.c ---------------------------------------------------------------- */

/* base64, also used by extract.c and blob.c */
enum { B64_INVALID = 64, B64_SPACE, B64_PAD };
/* 0-63 for a digit of the standard alphabet, else one of the values above. */
IMGEDIT_INTERNAL extern const unsigned char base64_table[256];
IMGEDIT_INTERNAL extern const char base64_alphabet[65];
/* Writes the padded encoding of in[0..len) to out ((len + 2) / 3 * 4 bytes). */
IMGEDIT_INTERNAL void base64_encode_to(char *out, const unsigned char *in, size_t len);

/* --- transfer.c ------------------------------------------------------------- */

/*
 * m:add(session, request): the Multi at index 1, the Session at 2, the
 * request table at 3. Pushes the new Transfer userdata and returns it, or
 * pushes nil and a message and returns NULL. Raises for arguments of the
 * wrong Lua type.
 */
IMGEDIT_INTERNAL Transfer *transfer_create(lua_State *L, Multi *m);

/* The transfer an easy handle of a finished curl message serves. */
IMGEDIT_INTERNAL Transfer *transfer_of(CURL *easy);

/*
 * The libcurl callbacks of every easy handle (their data: its Easy): they
 * only touch C memory and the output file; when they must stop a transfer
 * they record why and return a short count.
 */
IMGEDIT_INTERNAL size_t transfer_on_header(char *line, size_t size, size_t nitems, void *easy);
IMGEDIT_INTERNAL size_t transfer_on_body(char *data, size_t size, size_t nmemb, void *easy);

/* curl reported the transfer done: detach it from its multi, close its file. */
IMGEDIT_INTERNAL void transfer_complete(Transfer *t, CURLcode code);

/* The multi handle failed (code): the transfer ends, with that error. */
IMGEDIT_INTERNAL void transfer_fail(Transfer *t, CURLMcode code);

/* Its multi is closing: detach it and mark it done, cancelled. */
IMGEDIT_INTERNAL void transfer_abort(Transfer *t);

/* False once t:close() (or its finalizer) has run. */
IMGEDIT_INTERNAL int transfer_is_open(const Transfer *t);

#endif
