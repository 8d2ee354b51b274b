/*
 * Declarations shared by the files of imgedit.core. All of them are linked
 * into one shared object; only luaopen_imgedit_core is exported from it.
 */
#ifndef IMGEDIT_H
#define IMGEDIT_H

#include <curl/curl.h>

#include "compat.h"

#define IMGEDIT_VERSION "0.1.0"

/* curl_multi_wakeup is the newest call the module cannot do without. */
#if LIBCURL_VERSION_NUM < 0x074400
#error "imgedit needs libcurl 7.68.0 or newer"
#endif

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
#define TRANSFER_MT "imgedit.transfer"
#define BLOB_MT "imgedit.blob"

typedef struct Transfer Transfer;

/* A socket whose watch changed since Lua last asked; defined in multi.c. */
typedef struct SocketChange SocketChange;

/* Easy handles a Multi keeps, reset, for its next transfers (multi.c). */
#define MULTI_SPARE_HANDLES 8

typedef struct Multi {
	CURLM *handle;      /* NULL once closed */
	Transfer *attached; /* added and not finished; linked by transfer.c */
	int count;          /* length of the attached list */

	/*
	 * Easy handles of closed transfers, reset (curl_easy_reset) and owned
	 * here until transfer_create takes one: creating a handle costs more
	 * than resetting one. Cleaned up when the Multi closes.
	 */
	CURL *spares[MULTI_SPARE_HANDLES];
	int nspares;

	/* Bytes of blobs handed to Lua since the last collection they caused (transfer.c). */
	size_t blob_bytes;

	/*
	 * Socket-driven mode (m:watch()), multi.c alone: curl's socket and
	 * timer callbacks only record here what the host loop must watch.
	 */
	int watching;
	SocketChange *changes; /* owned; at most one entry per socket */
	size_t nchanges, changes_cap;
	int timer_armed;       /* curl asked to be called back ... */
	double timer_due;      /* ... at this CLOCK_MONOTONIC time, in seconds */
} Multi;

/*
 * Called once by luaopen: mod is the stack index of the module table,
 * encode/decode those of cjson.safe's functions, which become upvalues of
 * the methods that need them.
 */
IMGEDIT_INTERNAL void multi_open(lua_State *L, int mod, int encode);
IMGEDIT_INTERNAL void transfer_open(lua_State *L, int decode);
IMGEDIT_INTERNAL void codec_open(lua_State *L, int mod);
IMGEDIT_INTERNAL void blob_open(lua_State *L);
IMGEDIT_INTERNAL void fs_open(lua_State *L, int mod);

/*
 * Writes len bytes to path (fs.c): created or truncated, a FIFO without a
 * reader refused at once, SIGPIPE turned into EPIPE. 0, or an errno value.
 */
IMGEDIT_INTERNAL int fs_write_file(const char *path, const char *data, size_t len);

/* base64 (codec.c), also used by response.c and blob.c. */
enum { B64_INVALID = 64, B64_SPACE, B64_PAD };
/* 0-63 for a digit of the standard alphabet, else one of the values above. */
IMGEDIT_INTERNAL extern const unsigned char base64_table[256];
IMGEDIT_INTERNAL extern const char base64_alphabet[65];
/* Writes the padded encoding of in[0..len) to out ((len + 2) / 3 * 4 bytes). */
IMGEDIT_INTERNAL void base64_encode_to(char *out, const unsigned char *in, size_t len);

/*
 * m:add(req) for the Multi at index 1 and the request table at index 2.
 * Pushes the new Transfer userdata and returns it, or pushes nil and a
 * message and returns NULL. Raises for arguments of the wrong Lua type.
 */
IMGEDIT_INTERNAL Transfer *transfer_create(lua_State *L, Multi *m, int encode);

/* curl reported the transfer done: detach it from its multi, close its file. */
IMGEDIT_INTERNAL void transfer_complete(Transfer *t, CURLcode code);

/*
 * An easy handle for a new transfer of m: a spare one, or a new one (NULL
 * when curl cannot make one). multi_release_easy takes one back when its
 * transfer is closed: it becomes a spare, reset, or is cleaned up (always,
 * once m is closed).
 */
IMGEDIT_INTERNAL CURL *multi_take_easy(Multi *m);
IMGEDIT_INTERNAL void multi_release_easy(Multi *m, CURL *easy);

/* False once t:close() (or its finalizer) has run. */
IMGEDIT_INTERNAL int transfer_is_open(const Transfer *t);

/* t:cancel(), or its multi closing: detach it and mark it done, cancelled. */
IMGEDIT_INTERNAL void transfer_abort(Transfer *t);

#endif
