/*
 * Transfer: one HTTP request of a Session on a Multi.
 *
 *   m:add(session, {url =, method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
 *                   body =, output =, extract =, timeout =,
 *                   low_speed_limit =, low_speed_time =})
 *
 * The userdata owns the response buffers (a Response, parsed and filled by
 * response.c, with the values extract.c takes out until t:result() hands
 * them to Lua), the output path and FILE*, and, while open, one of its
 * session's easy handles: every option a request sets is set again by the
 * next one, so nothing of a request reaches the next (method, body,
 * headers, timeouts, low-speed limits, buffer size).
 *
 * libcurl callbacks (transfer_on_header, transfer_on_body) only touch C
 * memory and the FILE*; when they must stop a transfer they record why in
 * t->resp.stop and return a short count, and the Lua-visible result is
 * built later, from t:result().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgedit.h"
#include "response.h"

/* Fewer, larger writes when the body goes to disk or is decoded on the fly. */
#define LARGE_BUFFER_SIZE (512L * 1024L)
/* libcurl's default receive buffer, set back explicitly for other requests. */
#define DEFAULT_BUFFER_SIZE ((long)CURL_MAX_WRITE_SIZE)

/* The Lua values a Transfer holds (compat_getslot / compat_setslot). */
enum {
	UV_MULTI = 1, /* keeps the Multi alive as long as the Transfer */
	UV_SESSION,   /* keeps the Session (header list, easy handles) alive */
	UV_BODY,      /* the request body string handed to CURLOPT_POSTFIELDS */
	UV_RESULT,    /* t:result(), built once */
	UV_COUNT = UV_RESULT
};

/* Upvalues of the methods and of the result's __index. */
enum { UP_RESULT_MT = 1, UP_DETAILS, UP_TRANSFER_MT };

struct Transfer {
	Easy *easy;          /* one of the session's; NULL once closed (given back) */
	Session *session;    /* kept alive by UV_SESSION */
	Multi *multi;        /* kept alive by UV_MULTI */
	MultiLink link;      /* in multi->attached while curl runs it (multi.c) */
	char *output;        /* owned: where a 2xx body goes, or NULL */
	FILE *file;          /* owned while open */
	Response resp;       /* status, headers, body, limits, stop reason */
	int done;
	int cancelled;       /* its multi was closed first */
	int io_errno;
	CURLcode code;
	CURLMcode multi_code; /* the multi handle failed: this is why the transfer ended */
};

/*
 * What a result keeps of its transfer for the fields built when first read
 * (headers, time, connect_time, primary_ip, http_version): a userdata that
 * a weak table maps each result to, with the header block in it. Lua's
 * memory holds it all: no finalizer, no allocation of its own.
 */
typedef struct Details {
	size_t len;          /* of the header block */
	double time, connect_time;
	long http_version;
	char primary_ip[64]; /* "" when unknown */
	char headers[];      /* the header block ("name\0value\0"...) */
} Details;

/* --- libcurl callbacks: C memory and FILE* only --------------------------- */

static int open_output(Transfer *t)
{
	t->file = fopen(t->output, "wb");
	if (t->file != NULL)
		return 1;
	t->resp.stop = STOP_IO;
	t->io_errno = errno;
	return 0;
}

size_t transfer_on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	Transfer *t = ((Easy *)ud)->transfer;
	size_t n = size * nmemb; /* size is always 1 */

	if (n == 0)
		return 0;
	switch (response_body(&t->resp, data, n)) {
	case RESPONSE_BODY_BUFFERED:
		return n;
	case RESPONSE_BODY_TO_FILE:
		if (t->file == NULL && !open_output(t))
			return 0;
		if (fwrite(data, 1, n, t->file) != n) {
			t->resp.stop = STOP_IO;
			t->io_errno = errno;
			return 0;
		}
		return n;
	default:
		return 0;
	}
}

size_t transfer_on_header(char *line, size_t size, size_t nitems, void *ud)
{
	Easy *e = ud;
	Transfer *t = e->transfer;
	size_t n = size * nitems;
	curl_off_t length = -1;

	switch (response_header(&t->resp, line, n)) {
	case RESPONSE_HEADER_OK:
		return n;
	case RESPONSE_HEADER_END:
		if (curl_easy_getinfo(e->handle, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) != CURLE_OK)
			length = -1;
		response_presize(&t->resp, length);
		return n;
	default:
		return 0;
	}
}

/* --- life cycle ----------------------------------------------------------- */

Transfer *transfer_of(CURL *easy)
{
	char *e = NULL;

	(void)curl_easy_getinfo(easy, CURLINFO_PRIVATE, &e);
	return e != NULL ? ((Easy *)(void *)e)->transfer : NULL;
}

/* Runs once per transfer, outside any curl callback. */
static void finish(Transfer *t, CURLcode code)
{
	t->done = 1;
	t->code = code;
	/* A 2xx with an empty body still produces its (empty) file. */
	if (code == CURLE_OK && response_to_file(&t->resp) && t->file == NULL)
		(void)open_output(t);
	if (t->file != NULL) {
		int failed = ferror(t->file);

		if (fclose(t->file) != 0)
			failed = 1;
		t->file = NULL;
		/* Data lost on the way to disk; a failed transfer keeps its own error. */
		if (failed && code == CURLE_OK && t->resp.stop == STOP_NONE) {
			t->resp.stop = STOP_IO;
			t->io_errno = errno;
		}
	}
}

void transfer_complete(Transfer *t, CURLcode code)
{
	multi_detach(t->multi, t->easy->handle, &t->link);
	finish(t, code);
}

void transfer_fail(Transfer *t, CURLMcode code)
{
	if (t->done)
		return;
	t->multi_code = code;
	transfer_complete(t, CURLE_ABORTED_BY_CALLBACK);
}

void transfer_abort(Transfer *t)
{
	if (t->done)
		return;
	t->cancelled = 1;
	transfer_complete(t, CURLE_ABORTED_BY_CALLBACK);
}

int transfer_is_open(const Transfer *t)
{
	return t->easy != NULL;
}

/* Frees everything but the userdata block itself; a partial output file stays. */
static void release(Transfer *t)
{
	if (t->easy == NULL)
		return;
	transfer_abort(t);
	session_release(t->session, t->easy);
	t->easy = NULL;
	free(t->output);
	t->output = NULL;
	response_free(&t->resp);
}

static Transfer *check_transfer(lua_State *L)
{
	return imgedit_checkself(L, UP_TRANSFER_MT, TRANSFER_MT);
}

/* --- building a request --------------------------------------------------- */

enum { R_URL, R_METHOD, R_BODY, R_OUTPUT, R_EXTRACT, R_TIMEOUT, R_LOW_SPEED_LIMIT, R_LOW_SPEED_TIME, R_COUNT };

/* The request fields; those with an option are set on every request, to 0 when absent. */
static const Field REQUEST[R_COUNT] = {
	{"url", FIELD_STRING, CURLOPT_URL},
	{"method", FIELD_STRING, (CURLoption)0},
	{"body", FIELD_BYTES, (CURLoption)0},
	{"output", FIELD_STRING, (CURLoption)0},
	{"extract", FIELD_STRING, (CURLoption)0},
	{"timeout", FIELD_SECONDS, CURLOPT_TIMEOUT_MS},
	{"low_speed_limit", FIELD_COUNT, CURLOPT_LOW_SPEED_LIMIT},
	{"low_speed_time", FIELD_WHOLE_SECONDS, CURLOPT_LOW_SPEED_TIME},
};

/* The methods a request may use; HEAD, CONNECT and the like need more than a method name. */
static const char *const METHODS[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};

static const char *method_of(const FieldValue *v)
{
	size_t i;

	if (!v->set)
		return "GET";
	for (i = 0; i < sizeof METHODS / sizeof METHODS[0]; i++)
		if (strcmp(v->s, METHODS[i]) == 0)
			return METHODS[i];
	return NULL;
}

static int starts_with_nocase(const char *s, const char *prefix)
{
	for (; *prefix != '\0'; s++, prefix++) {
		char c = *s;

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (c != *prefix)
			return 0;
	}
	return 1;
}

/*
 * The receive buffer: a hint, set when it changes. libcurl refuses a new
 * size while the handle still holds the buffer of a transfer (7.88 frees
 * it in most ways a transfer ends, not all); the size it has then serves.
 */
static void set_buffer_size(Easy *e, long size)
{
	if (e->buffer_size != size && curl_easy_setopt(e->handle, CURLOPT_BUFFERSIZE, size) == CURLE_OK)
		e->buffer_size = size;
}

#define SETOPT(option, value) \
	do { \
		if ((rc = curl_easy_setopt(easy, option, value)) != CURLE_OK) \
			goto refused; \
	} while (0)

/*
 * Reads the request table at index 3 into t (userdata at index 4) and its
 * easy handle. Returns 1, or pushes nil and a message and returns 0.
 */
static int configure(lua_State *L, Transfer *t)
{
	FieldValue v[R_COUNT];
	CURL *easy = t->easy->handle;
	CURLcode rc;
	const char *method;
	curl_off_t body_len = -1;

	if (!fields_read(L, 3, 3, REQUEST, R_COUNT, v))
		return 0;
	if (!v[R_URL].set)
		return luaL_argerror(L, 3, "field 'url' must be a string");
	method = method_of(&v[R_METHOD]);
	if (method == NULL)
		return fields_refuse(L, "method %s is not one of GET, POST, PUT, PATCH and DELETE", v[R_METHOD].s);
	if (v[R_EXTRACT].set) {
		if (!extract_key_valid(v[R_EXTRACT].s, v[R_EXTRACT].len))
			return fields_refuse(L, "extract must name a JSON key of 1 to 64 printable ASCII characters"
					" other than '\"' and '\\', got \"%s\"", v[R_EXTRACT].s);
		extract_set_key(&t->resp.x, v[R_EXTRACT].s, v[R_EXTRACT].len);
	}
	if (v[R_OUTPUT].set) {
		t->output = malloc(v[R_OUTPUT].len + 1);
		if (t->output == NULL)
			return fields_refuse(L, "%s", "out of memory");
		memcpy(t->output, v[R_OUTPUT].s, v[R_OUTPUT].len + 1);
		t->resp.has_output = 1;
	}
	t->resp.max_bytes = session_max_response_bytes(t->session);
	t->resp.pool = &t->multi->buffered;
	t->resp.pool_limit = session_max_buffered_bytes(t->session);
	t->easy->errbuf[0] = '\0';

	if ((rc = fields_apply(easy, REQUEST, R_COUNT, v, 1)) != CURLE_OK)
		goto refused;
	if (v[R_BODY].set) {
		body_len = (curl_off_t)v[R_BODY].len;
		/* the string must outlive the transfer: curl reads it while sending */
		lua_getfield(L, 3, "body");
		compat_setslot(L, 4, UV_BODY);
		SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, body_len);
		SETOPT(CURLOPT_POSTFIELDS, v[R_BODY].s);
		SETOPT(CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") != 0 ? method : (const char *)NULL);
	} else if (strcmp(method, "POST") == 0) {
		SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
		SETOPT(CURLOPT_POSTFIELDS, "");
		SETOPT(CURLOPT_CUSTOMREQUEST, (const char *)NULL);
	} else {
		/* no body of an earlier request stays pointed at */
		SETOPT(CURLOPT_POSTFIELDS, (const char *)NULL);
		SETOPT(CURLOPT_HTTPGET, 1L);
		SETOPT(CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") != 0 ? method : (const char *)NULL);
	}
	SETOPT(CURLOPT_HTTPHEADER, session_headers(t->session, body_len));
	set_buffer_size(t->easy, t->output != NULL || t->resp.x.keylen > 0 ? LARGE_BUFFER_SIZE : DEFAULT_BUFFER_SIZE);
	/*
	 * Rather than open another connection, wait for one being set up to
	 * tell (by ALPN) whether it multiplexes. Over plain http curl learns
	 * that only from the first response, so waiting there would run
	 * concurrent requests one after another.
	 */
	SETOPT(CURLOPT_PIPEWAIT, starts_with_nocase(v[R_URL].s, "https://") ? 1L : 0L);
	return 1;

refused:
	lua_pushnil(L);
	lua_pushfstring(L, "curl refused the request: %s",
			t->easy->errbuf[0] ? t->easy->errbuf : curl_easy_strerror(rc));
	return 0;
}

#undef SETOPT

Transfer *transfer_create(lua_State *L, Multi *m)
{
	Session *s = session_check(L, 2);
	Transfer *t;
	CURLMcode mrc;

	luaL_checktype(L, 3, LUA_TTABLE);
	lua_settop(L, 3);
	t = compat_newuserdata_slots(L, sizeof *t, UV_COUNT);
	memset(t, 0, sizeof *t);
	response_init(&t->resp);
	t->link.transfer = t;
	t->multi = m;
	t->session = s;
	compat_setmetatable(L, TRANSFER_MT);
	lua_pushvalue(L, 1);
	compat_setslot(L, 4, UV_MULTI);
	lua_pushvalue(L, 2);
	compat_setslot(L, 4, UV_SESSION);

	t->easy = session_take(s);
	if (t->easy == NULL) {
		fields_refuse(L, "%s", "cannot create a curl easy handle");
		return NULL; /* the userdata has nothing to free yet */
	}
	t->easy->transfer = t;
	if (configure(L, t)) {
		mrc = multi_attach(m, t->easy->handle, &t->link);
		if (mrc == CURLM_OK) {
			lua_settop(L, 4);
			return t;
		}
		fields_refuse(L, "curl refused the transfer: %s", curl_multi_strerror(mrc));
	}
	/* nil and the message are on top; give the handle back now rather than at GC. */
	t->done = 1; /* never attached: nothing to abort */
	release(t);
	return NULL;
}

/* --- the result table ----------------------------------------------------- */

static void set_string(lua_State *L, const char *name, const char *value)
{
	lua_pushstring(L, value);
	lua_setfield(L, -2, name);
}

static void set_integer(lua_State *L, const char *name, lua_Integer value)
{
	lua_pushinteger(L, value);
	lua_setfield(L, -2, name);
}

/*
 * Did any byte of the request leave? CURLINFO_REQUEST_SIZE counts the
 * bytes of the request written to the connection (libcurl 7.88 counts
 * the header block's first write, later ones count everything), the
 * upload counter the body bytes sent after it. Connect-stage failures (DNS,
 * TCP, TLS, a proxy's tunnel) write none; whatever fails after a byte of
 * the request left may have reached the server, whatever curl's code says
 * (a garbled or HTTP/0.9 answer, a reset, a timeout).
 */
static int request_sent(CURL *easy)
{
	long request_size = 0;
	curl_off_t uploaded = 0;

	(void)curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &request_size);
	(void)curl_easy_getinfo(easy, CURLINFO_SIZE_UPLOAD_T, &uploaded);
	return request_size > 0 || uploaded > 0;
}

/* Sets error = {kind, message, curl_code, sent, advice?} in the table on top. */
static void push_error(lua_State *L, Transfer *t)
{
	const Response *r = &t->resp;
	int sent = request_sent(t->easy->handle);
	const char *kind = "network", *advice = NULL;
	char message[CURL_ERROR_SIZE + 128];

	if (t->easy->errbuf[0] != '\0')
		snprintf(message, sizeof message, "%s", t->easy->errbuf);
	else
		snprintf(message, sizeof message, "%s", curl_easy_strerror(t->code));
	if (t->cancelled) {
		kind = "cancelled";
		snprintf(message, sizeof message, "the transfer was cancelled before it finished");
	} else if (t->multi_code != CURLM_OK) {
		snprintf(message, sizeof message, "libcurl's multi handle failed: %s", curl_multi_strerror(t->multi_code));
	} else if (r->stop == STOP_TOO_LARGE || t->code == CURLE_FILESIZE_EXCEEDED) {
		kind = "too_large";
		snprintf(message, sizeof message,
				"the response body is larger than max_response_bytes (%" CURL_FORMAT_CURL_OFF_T " bytes)",
				r->max_bytes);
	} else if (r->stop == STOP_BUDGET) {
		kind = "too_large";
		snprintf(message, sizeof message, "the response bodies held in memory at once would pass"
				" max_buffered_bytes (%" CURL_FORMAT_CURL_OFF_T " bytes; %lu held by other transfers"
				" when this one stopped at %" CURL_FORMAT_CURL_OFF_T ")", r->pool_limit,
				(unsigned long)(*r->pool - r->pooled), r->received);
		advice = "raise max_buffered_bytes, lower max_in_flight, or ask for fewer or smaller images per request";
	} else if (r->stop == STOP_NO_MEMORY) {
		kind = "too_large";
		snprintf(message, sizeof message, "out of memory while receiving the response"
				" (after %" CURL_FORMAT_CURL_OFF_T " bytes of body)", r->received);
		advice = "free memory, or lower max_in_flight or max_buffered_bytes";
	} else if (r->stop == STOP_IO) {
		kind = "io"; /* the message, naming the path, is set below */
	} else if (t->code == CURLE_OUT_OF_MEMORY || (int)t->code == COMPAT_CURLE_TOO_LARGE) {
		/* libcurl caps what it buffers and says "Out of memory" (or, since 8.6, "too large") when a cap is hit */
		kind = "too_large";
		if (!sent) {
			snprintf(message, sizeof message, "libcurl could not build the request: its header lines"
					" (%lu bytes) and URL are over libcurl's limit of 1 MiB, or memory ran out",
					(unsigned long)session_header_bytes(t->session));
			advice = "check the API key, user_agent, headers and the URL";
		} else if (r->in_headers) {
			snprintf(message, sizeof message, "the response has a header line longer than libcurl"
					" accepts (%d KiB)", CURL_MAX_HTTP_HEADER / 1024);
			advice = "the server or a proxy sent oversized headers: check base_url and the proxy";
		} else {
			snprintf(message, sizeof message, "libcurl ran out of memory while receiving the response");
			advice = "free memory, or lower max_in_flight or max_buffered_bytes";
		}
	} else if (t->code == CURLE_OPERATION_TIMEDOUT) {
		kind = "timeout";
	}
	lua_createtable(L, 0, 5);
	set_string(L, "kind", kind);
	if (r->stop == STOP_IO && !t->cancelled && t->multi_code == CURLM_OK)
		lua_pushfstring(L, "cannot write %s: %s", t->output, strerror(t->io_errno));
	else
		lua_pushstring(L, message);
	lua_setfield(L, -2, "message");
	set_integer(L, "curl_code", (lua_Integer)t->code);
	lua_pushboolean(L, sent);
	lua_setfield(L, -2, "sent");
	if (advice != NULL)
		set_string(L, "advice", advice);
	lua_setfield(L, -2, "error");
}

/*
 * Blob memory is outside Lua's accounting, so the collector would not hurry
 * to free the blobs of results already dropped. Once the blobs handed over
 * since the last such collection add up to the size of the Lua heap, run a
 * full collection: its cost, proportional to the heap, is paid once per as
 * many bytes of blobs, and blob memory never runs far ahead of the heap.
 * A collector stopped by the program is left alone (5.2+).
 */
static void account_blobs(lua_State *L, Multi *m, size_t bytes)
{
	m->blob_bytes += bytes;
	if (bytes == 0 || m->blob_bytes / 1024 < (size_t)lua_gc(L, LUA_GCCOUNT, 0))
		return;
	m->blob_bytes = 0;
#if LUA_VERSION_NUM >= 502
	if (!lua_gc(L, LUA_GCISRUNNING, 0))
		return;
#endif
	(void)lua_gc(L, LUA_GCCOLLECT, 0);
}

/* Copies the header block of t and notes the timings, for the result's lazy fields. */
static void push_details(lua_State *L, Transfer *t)
{
	CURL *easy = t->easy->handle;
	size_t len = t->resp.headers.len;
	Details *d = lua_newuserdata(L, sizeof *d + len);
	curl_off_t us = 0;
	char *ip = NULL;

	memset(d, 0, sizeof *d);
	d->len = len;
	if (len > 0)
		memcpy(d->headers, t->resp.headers.data, len);
	if (curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &us) == CURLE_OK)
		d->time = (double)us / 1e6;
	us = 0;
	if (curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME_T, &us) == CURLE_OK)
		d->connect_time = (double)us / 1e6;
	if (curl_easy_getinfo(easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip != NULL) {
		size_t n = strlen(ip);

		if (n < sizeof d->primary_ip)
			memcpy(d->primary_ip, ip, n + 1);
	}
	if (curl_easy_getinfo(easy, CURLINFO_HTTP_VERSION, &d->http_version) != CURLE_OK)
		d->http_version = 0;
}

/*
 * The result table: status, bytes, request_id, then error, or body (and
 * blobs); headers and the timings come from its metatable when first read.
 */
static void push_result(lua_State *L, Transfer *t)
{
	Response *r = &t->resp;
	int failed = t->cancelled || t->code != CURLE_OK || r->stop != STOP_NONE;
	const char *id;
	size_t len;

	lua_createtable(L, 0, 6);
	if (r->status > 0)
		set_integer(L, "status", r->status);
	set_integer(L, "bytes", (lua_Integer)r->received);
	id = session_request_id(t->session, r->headers.data, r->headers.len, &len);
	if (id != NULL) {
		lua_pushlstring(L, id, len);
		lua_setfield(L, -2, "request_id");
	}
	if (failed) {
		push_error(L, t);
	} else if (!response_to_file(r)) {
		if (r->x.keylen > 0) {
			account_blobs(L, t->multi, extract_push_blobs(L, &r->x));
			lua_setfield(L, -2, "blobs");
		}
		response_push_body(L, r);
		lua_setfield(L, -2, "body");
	}
	lua_pushvalue(L, lua_upvalueindex(UP_RESULT_MT));
	lua_setmetatable(L, -2);
	lua_pushvalue(L, -1);
	push_details(L, t);
	lua_rawset(L, lua_upvalueindex(UP_DETAILS));
}

static const char *http_version_name(long version)
{
	switch (version) {
	case CURL_HTTP_VERSION_1_0:
		return "1.0";
	case CURL_HTTP_VERSION_1_1:
		return "1.1";
	case CURL_HTTP_VERSION_2_0:
		return "2";
	case CURL_HTTP_VERSION_3:
		return "3";
	default:
		return NULL;
	}
}

/*
 * result.headers, .time, .connect_time, .primary_ip, .http_version: built
 * at the first read from the Details the result is mapped to, and
 * stored in the result, so this runs once per result and field.
 */
static int result_index(lua_State *L)
{
	const char *key = lua_tostring(L, 2);
	const char *version;
	Details *d;

	if (key == NULL || lua_type(L, 2) != LUA_TSTRING)
		return 0;
	lua_pushvalue(L, 1);
	lua_rawget(L, lua_upvalueindex(1));
	d = lua_touserdata(L, -1); /* the table maps results to Details alone */
	if (d == NULL)
		return 0;
	if (strcmp(key, "headers") == 0) {
		headers_push(L, d->headers, d->len);
	} else if (strcmp(key, "time") == 0 || strcmp(key, "connect_time") == 0 ||
			strcmp(key, "primary_ip") == 0 || strcmp(key, "http_version") == 0) {
		/* the four together: they are read together, by logs */
		lua_pushnumber(L, (lua_Number)d->time);
		lua_setfield(L, 1, "time");
		lua_pushnumber(L, (lua_Number)d->connect_time);
		lua_setfield(L, 1, "connect_time");
		if (d->primary_ip[0] != '\0') {
			lua_pushstring(L, d->primary_ip);
			lua_setfield(L, 1, "primary_ip");
		}
		version = http_version_name(d->http_version);
		if (version != NULL) {
			lua_pushstring(L, version);
			lua_setfield(L, 1, "http_version");
		}
		lua_pushvalue(L, 2);
		lua_rawget(L, 1);
		return 1;
	} else {
		return 0;
	}
	lua_pushvalue(L, 2);
	lua_pushvalue(L, -2);
	lua_rawset(L, 1);
	return 1;
}

/* --- methods -------------------------------------------------------------- */

static int transfer_done(lua_State *L)
{
	lua_pushboolean(L, check_transfer(L)->done);
	return 1;
}

static int transfer_result(lua_State *L)
{
	Transfer *t = check_transfer(L);

	compat_getslot(L, 1, UV_RESULT);
	if (!lua_isnil(L, -1))
		return 1;
	lua_pop(L, 1);
	if (t->easy == NULL)
		return luaL_error(L, "transfer is closed");
	if (!t->done)
		return luaL_error(L, "transfer is not finished");
	push_result(L, t);
	lua_pushvalue(L, -1);
	compat_setslot(L, 1, UV_RESULT);
	/* The Lua strings now hold the response; drop the C copies early. */
	response_free(&t->resp);
	return 1;
}

static int transfer_close(lua_State *L)
{
	release(check_transfer(L));
	return 0;
}

static int transfer_tostring(lua_State *L)
{
	Transfer *t = check_transfer(L);

	lua_pushfstring(L, "imgedit.transfer (%s)",
			t->easy == NULL ? "closed" : t->done ? "done" : "running");
	return 1;
}

void transfer_open(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"done", transfer_done},
		{"result", transfer_result},
		{"close", transfer_close},
		{NULL, NULL}
	};
	static const luaL_Reg metamethods[] = {
		{"__gc", transfer_close},
		{"__close", transfer_close},
		{"__tostring", transfer_tostring},
		{NULL, NULL}
	};

	/* results -> their Details, weak keys: a result takes its details along when it goes */
	luaL_newmetatable(L, RESULT_MT);
	lua_newtable(L);
	lua_createtable(L, 0, 1);
	lua_pushliteral(L, "k");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_pushvalue(L, -1);
	lua_pushcclosure(L, result_index, 1);
	lua_setfield(L, -3, "__index");
	/* stack: the result metatable, the details table: the methods' upvalues */
	imgedit_class(L, TRANSFER_MT, methods, metamethods, 2);
}
