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

typedef struct Transfer Transfer;

/* A socket whose watch changed since Lua last asked; defined in multi.c. */
typedef struct SocketChange SocketChange;

typedef struct Multi {
	CURLM *handle;      /* NULL once closed */
	Transfer *attached; /* added and not finished; linked by transfer.c */
	int count;          /* length of the attached list */

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

/*
 * m:add(req) for the Multi at index 1 and the request table at index 2.
 * Pushes the new Transfer userdata and returns it, or pushes nil and a
 * message and returns NULL. Raises for arguments of the wrong Lua type.
 */
IMGEDIT_INTERNAL Transfer *transfer_create(lua_State *L, Multi *m, int encode);

/* curl reported the transfer done: detach it from its multi, close its file. */
IMGEDIT_INTERNAL void transfer_complete(Transfer *t, CURLcode code);

/* False once t:close() (or its finalizer) has run. */
IMGEDIT_INTERNAL int transfer_is_open(const Transfer *t);

/* t:cancel(), or its multi closing: detach it and mark it done, cancelled. */
IMGEDIT_INTERNAL void transfer_abort(Transfer *t);

#endif
