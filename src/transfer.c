/*
 * Transfer: one HTTP request on a Multi. The userdata owns the CURL easy
 * handle, its header list, the response buffers (a Response, parsed and
 * filled by response.c, with the blobs it extracts until t:result() hands
 * them to Lua) and the output FILE*.
 *
 * libcurl callbacks (on_header, on_body) only touch C memory and the FILE*;
 * when they must stop a transfer they record why in t->resp.stop and return a
 * short count, and the Lua-visible result is built later, from t:result().
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgedit.h"
#include "response.h"

/* Fewer, larger writes when the body goes to disk. */
#define OUTPUT_BUFFER_SIZE (512L * 1024L)
/* curl_off_t is a signed 64-bit type on every platform libcurl supports. */
#define OFF_T_LIMIT CURL_OFF_T_C(0x7FFFFFFFFFFFFFFF)

/* The Lua values a Transfer holds (compat_getslot / compat_setslot). */
enum {
	UV_MULTI = 1, /* keeps the Multi alive as long as the Transfer */
	UV_BODY,      /* the request body string handed to CURLOPT_POSTFIELDS */
	UV_RESULT,    /* t:result(), built once */
	UV_COUNT = UV_RESULT
};

struct Transfer {
	CURL *easy;                 /* NULL once closed; then back to owner's spares */
	Multi *owner;               /* the Multi that made it (kept alive by UV_MULTI) */
	Multi *multi;               /* set while attached to a Multi */
	Transfer *prev, *next;      /* links in multi->attached */
	struct curl_slist *request_headers;
	char *output;               /* where a 2xx body goes, or NULL */
	FILE *file;
	Response resp;              /* status, headers, body, limit, stop reason */
	int decode_json;
	int done;
	int cancelled;
	int io_errno;
	CURLcode code;
	char errbuf[CURL_ERROR_SIZE];
};

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

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	Transfer *t = ud;
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

static size_t on_header(char *line, size_t size, size_t nitems, void *ud)
{
	Transfer *t = ud;
	size_t n = size * nitems;
	curl_off_t length = -1;

	switch (response_header(&t->resp, line, n)) {
	case RESPONSE_HEADER_OK:
		return n;
	case RESPONSE_HEADER_END:
		if (curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) != CURLE_OK)
			length = -1;
		response_presize(&t->resp, length);
		return n;
	default:
		return 0;
	}
}

/* --- life cycle ----------------------------------------------------------- */

static void attach(Transfer *t, Multi *m)
{
	t->multi = m;
	t->prev = NULL;
	t->next = m->attached;
	if (m->attached != NULL)
		m->attached->prev = t;
	m->attached = t;
	m->count++;
}

static void detach(Transfer *t)
{
	Multi *m = t->multi;

	if (m == NULL)
		return;
	curl_multi_remove_handle(m->handle, t->easy);
	if (t->prev != NULL)
		t->prev->next = t->next;
	else
		m->attached = t->next;
	if (t->next != NULL)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
	t->multi = NULL;
	m->count--;
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
	detach(t);
	finish(t, code);
}

void transfer_abort(Transfer *t)
{
	if (t->done)
		return;
	detach(t);
	t->cancelled = 1;
	finish(t, CURLE_ABORTED_BY_CALLBACK);
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
	multi_release_easy(t->owner, t->easy);
	t->easy = NULL;
	curl_slist_free_all(t->request_headers);
	t->request_headers = NULL;
	free(t->output);
	t->output = NULL;
	response_free(&t->resp);
}

static Transfer *check_transfer(lua_State *L)
{
	return luaL_checkudata(L, 1, TRANSFER_MT);
}

/* --- building a request --------------------------------------------------- */

/* Pushes req[name] and returns 1, or returns 0 if it is nil; raises if of another type. */
static int field(lua_State *L, const char *name, int type)
{
	lua_getfield(L, 2, name);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	if (lua_type(L, -1) != type)
		return luaL_argerror(L, 2, lua_pushfstring(L, "field '%s' must be a %s, got %s",
				name, lua_typename(L, type), luaL_typename(L, -1)));
	return 1;
}

static int refuse(lua_State *L, const char *fmt, const char *what)
{
	lua_pushnil(L);
	lua_pushfstring(L, fmt, what);
	return 0;
}

/* Seconds (a Lua number) to whole milliseconds, rounded up so 0.0001 is not "no limit". */
static int seconds_field(lua_State *L, const char *name, long *ms)
{
	lua_Number s;

	*ms = -1;
	if (!field(L, name, LUA_TNUMBER))
		return 1;
	s = lua_tonumber(L, -1);
	lua_pop(L, 1);
	if (!(s >= 0))
		return refuse(L, "field '%s' must be a non-negative number of seconds", name);
	*ms = s * 1000 >= (lua_Number)LONG_MAX ? LONG_MAX : (long)ceil(s * 1000);
	return 1;
}

static int count_field(lua_State *L, const char *name, curl_off_t *out)
{
	lua_Number n;

	*out = -1;
	if (!field(L, name, LUA_TNUMBER))
		return 1;
	n = lua_tonumber(L, -1);
	lua_pop(L, 1);
	if (!(n >= 0) || n != floor(n))
		return refuse(L, "field '%s' must be a non-negative integer", name);
	*out = n >= (lua_Number)OFF_T_LIMIT ? OFF_T_LIMIT : (curl_off_t)n;
	return 1;
}

static int long_field(lua_State *L, const char *name, long *out)
{
	curl_off_t n;

	if (!count_field(L, name, &n))
		return 0;
	*out = n > LONG_MAX ? LONG_MAX : (long)n;
	return 1;
}

static int bool_field(lua_State *L, const char *name, int dflt)
{
	int b = dflt;

	if (field(L, name, LUA_TBOOLEAN)) {
		b = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	return b;
}

static int is_token(const char *s)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
				(*s >= '0' && *s <= '9') || strchr(extra, *s) != NULL))
			return 0;
	return 1;
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

static int append_header(Transfer *t, const char *line)
{
	struct curl_slist *list = curl_slist_append(t->request_headers, line);

	if (list == NULL)
		return 0;
	t->request_headers = list;
	return 1;
}

/* Header contents never appear in messages: they carry the API key. */
static int build_headers(lua_State *L, Transfer *t, int json)
{
	size_t i, n, len;
	int has_type = 0;
	const char *line;

	if (field(L, "headers", LUA_TTABLE)) {
		n = compat_rawlen(L, -1);
		for (i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, (int)i);
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_argerror(L, 2, "field 'headers' must be an array of strings");
			line = lua_tolstring(L, -1, &len);
			if (strlen(line) != len || strpbrk(line, "\r\n") != NULL) {
				lua_pushnil(L);
				lua_pushfstring(L, "request header %d contains a line break or NUL byte", (int)i);
				return 0;
			}
			has_type = has_type || starts_with_nocase(line, "content-type:");
			if (!append_header(t, line))
				return refuse(L, "%s", "out of memory building the request headers");
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	/* Without one, curl would label any body application/x-www-form-urlencoded. */
	if ((!has_type && !append_header(t, json ? "Content-Type: application/json" : "Content-Type:")) ||
			!append_header(t, "Expect:"))
		return refuse(L, "%s", "out of memory building the request headers");
	return 1;
}

/* Leaves the body string (or nil) on the stack; also records it in the user value. */
static int build_body(lua_State *L, int encode, int *json)
{
	int has_body = field(L, "body", LUA_TSTRING);

	lua_getfield(L, 2, "json");
	*json = !lua_isnil(L, -1);
	if (has_body && *json)
		return luaL_argerror(L, 2, "fields 'body' and 'json' are exclusive");
	if (*json) {
		lua_pushvalue(L, encode);
		lua_insert(L, -2);
		if (lua_pcall(L, 1, 2, 0) != 0 || lua_isnil(L, -2)) {
			lua_pushnil(L);
			lua_pushfstring(L, "cannot encode request body as JSON: %s",
					lua_isstring(L, -2) ? lua_tostring(L, -2) : "unknown error");
			return 0;
		}
		lua_pop(L, 1);
	} else if (has_body) {
		lua_pop(L, 1);
	}
	lua_pushvalue(L, -1);
	compat_setslot(L, 3, UV_BODY);
	return 1;
}

#define SETOPT(option, value) \
	do { \
		if ((rc = curl_easy_setopt(t->easy, option, value)) != CURLE_OK) \
			goto refused; \
	} while (0)

/*
 * Reads the request table at index 2 into the easy handle of t (userdata at
 * index 3). Returns 1, or pushes nil and a message and returns 0.
 */
static int configure(lua_State *L, Transfer *t, int encode)
{
	CURLcode rc = CURLE_OK;
	char method[32] = "GET";
	const char *body, *s;
	size_t body_len = 0, len;
	long ms, n;
	int json, https;

	if (!field(L, "url", LUA_TSTRING))
		return luaL_argerror(L, 2, "field 'url' must be a string");
	SETOPT(CURLOPT_URL, lua_tostring(L, -1));
	https = starts_with_nocase(lua_tostring(L, -1), "https://");
	lua_pop(L, 1);

	if (field(L, "method", LUA_TSTRING)) {
		s = lua_tolstring(L, -1, &len);
		if (len >= sizeof method || strlen(s) != len || !is_token(s))
			return refuse(L, "%s", "field 'method' is not a valid HTTP method");
		memcpy(method, s, len + 1);
		lua_pop(L, 1);
	}

	if (!build_body(L, encode, &json) || !build_headers(L, t, json))
		return 0;
	body = lua_tolstring(L, -1, &body_len);
	if (body != NULL) {
		SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
		SETOPT(CURLOPT_POSTFIELDS, body);
		if (strcmp(method, "POST") != 0)
			SETOPT(CURLOPT_CUSTOMREQUEST, method);
	} else if (strcmp(method, "HEAD") == 0) {
		t->resp.nobody = 1;
		SETOPT(CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "POST") == 0) {
		SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
		SETOPT(CURLOPT_POSTFIELDS, "");
	} else if (strcmp(method, "GET") != 0) {
		SETOPT(CURLOPT_CUSTOMREQUEST, method);
	}
	lua_pop(L, 1);

	if (!seconds_field(L, "timeout", &ms))
		return 0;
	if (ms >= 0)
		SETOPT(CURLOPT_TIMEOUT_MS, ms);
	if (!seconds_field(L, "connect_timeout", &ms))
		return 0;
	if (ms >= 0)
		SETOPT(CURLOPT_CONNECTTIMEOUT_MS, ms);
	if (!long_field(L, "low_speed_limit", &n))
		return 0;
	if (n >= 0)
		SETOPT(CURLOPT_LOW_SPEED_LIMIT, n);
	if (!seconds_field(L, "low_speed_time", &ms))
		return 0;
	if (ms >= 0)
		SETOPT(CURLOPT_LOW_SPEED_TIME, ms / 1000 + (ms % 1000 != 0));
	if (!count_field(L, "max_response_bytes", &t->resp.max_bytes))
		return 0;
	/* For curl 0 means "no limit"; on_body enforces a limit of 0 itself. */
	if (t->resp.max_bytes > 0)
		SETOPT(CURLOPT_MAXFILESIZE_LARGE, t->resp.max_bytes);

	if (field(L, "output", LUA_TSTRING)) {
		t->output = strdup(lua_tostring(L, -1));
		if (t->output == NULL)
			return refuse(L, "%s", "out of memory");
		t->resp.has_output = 1;
		lua_pop(L, 1);
	}
	/*
	 * extract = "b64_json": the body's "b64_json" string values are decoded
	 * as they arrive, into result.blobs (response.h); the body keeps
	 * placeholders. max_response_bytes still counts every byte received.
	 */
	if (field(L, "extract", LUA_TSTRING)) {
		if (strcmp(lua_tostring(L, -1), "b64_json") != 0)
			return refuse(L, "field 'extract' must be \"b64_json\", got \"%s\"", lua_tostring(L, -1));
		t->resp.extract = 1;
		lua_pop(L, 1);
	}
	if (!long_field(L, "buffer_size", &n))
		return 0;
	/* Bodies written to a file, or decoded on the fly, are large. */
	if (n < 0 && (t->output != NULL || t->resp.extract))
		n = OUTPUT_BUFFER_SIZE;
	if (n > 0)
		SETOPT(CURLOPT_BUFFERSIZE, n);

	if (field(L, "decode", LUA_TSTRING)) {
		if (strcmp(lua_tostring(L, -1), "json") != 0)
			return refuse(L, "field 'decode' must be \"json\", got \"%s\"", lua_tostring(L, -1));
		t->decode_json = 1;
		lua_pop(L, 1);
	}

	if (field(L, "proxy", LUA_TSTRING)) {
		SETOPT(CURLOPT_PROXY, lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	if (field(L, "ca_file", LUA_TSTRING)) {
		SETOPT(CURLOPT_CAINFO, lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	if (field(L, "user_agent", LUA_TSTRING)) {
		SETOPT(CURLOPT_USERAGENT, lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	if (bool_field(L, "insecure", 0)) {
		SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
		SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (bool_field(L, "http2", 1)) {
		SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
		/*
		 * Rather than open another connection, wait for one being set up
		 * to tell (by ALPN) whether it multiplexes. Over plain http curl
		 * learns that only from the first response, so waiting there
		 * would run concurrent requests one after another.
		 */
		if (https)
			SETOPT(CURLOPT_PIPEWAIT, 1L);
	} else {
		SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	}

	SETOPT(CURLOPT_HTTPHEADER, t->request_headers);
#if LIBCURL_VERSION_NUM >= 0x075500
	SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
	SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(CURLOPT_ACCEPT_ENCODING, "identity");
	/* A proxy's "200 Connection established" is not the response. */
	SETOPT(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
	SETOPT(CURLOPT_ERRORBUFFER, t->errbuf);
	SETOPT(CURLOPT_PRIVATE, (void *)t);
	SETOPT(CURLOPT_HEADERFUNCTION, on_header);
	SETOPT(CURLOPT_HEADERDATA, (void *)t);
	SETOPT(CURLOPT_WRITEFUNCTION, on_body);
	SETOPT(CURLOPT_WRITEDATA, (void *)t);
	return 1;

refused:
	lua_pushnil(L);
	lua_pushfstring(L, "curl refused the request: %s", t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
	return 0;
}

#undef SETOPT

Transfer *transfer_create(lua_State *L, Multi *m, int encode)
{
	Transfer *t;
	CURLMcode mrc;

	encode = compat_absindex(L, encode);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	t = compat_newuserdata_slots(L, sizeof *t, UV_COUNT);
	memset(t, 0, sizeof *t);
	response_init(&t->resp);
	compat_setmetatable(L, TRANSFER_MT);
	lua_pushvalue(L, 1);
	compat_setslot(L, 3, UV_MULTI);

	t->owner = m;
	t->easy = multi_take_easy(m);
	if (t->easy == NULL) {
		refuse(L, "%s", "cannot create a curl easy handle");
	} else if (configure(L, t, encode)) {
		mrc = curl_multi_add_handle(m->handle, t->easy);
		if (mrc == CURLM_OK) {
			attach(t, m);
			lua_settop(L, 3);
			return t;
		}
		refuse(L, "curl refused the transfer: %s", curl_multi_strerror(mrc));
	}
	/* nil and the message are on top; free the handle now rather than at GC. */
	release(t);
	return NULL;
}

/* --- the result table ----------------------------------------------------- */

static void set_string(lua_State *L, const char *name, const char *value)
{
	lua_pushstring(L, value);
	lua_setfield(L, -2, name);
}

static void set_number(lua_State *L, const char *name, lua_Number value)
{
	lua_pushnumber(L, value);
	lua_setfield(L, -2, name);
}

static void set_integer(lua_State *L, const char *name, lua_Integer value)
{
	lua_pushinteger(L, value);
	lua_setfield(L, -2, name);
}

static void set_boolean(lua_State *L, const char *name, int value)
{
	lua_pushboolean(L, value);
	lua_setfield(L, -2, name);
}

/* Nothing can have reached the server after these: DNS, TCP or TLS set-up failed. */
static int before_request(CURLcode code)
{
	switch (code) {
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
		return 1;
	default:
		return 0;
	}
}

static void push_error(lua_State *L, Transfer *t)
{
	long request_size = 0;
	char message[128];

	lua_createtable(L, 0, 4);
	set_integer(L, "curl_code", (lua_Integer)t->code);
	(void)curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &request_size);
	set_boolean(L, "sent", request_size > 0 && !before_request(t->code));
	if (t->cancelled) {
		set_string(L, "kind", "cancelled");
		set_string(L, "message", "the transfer was cancelled before it finished");
	} else if (t->resp.stop == STOP_TOO_LARGE || t->code == CURLE_FILESIZE_EXCEEDED) {
		set_string(L, "kind", "too_large");
		snprintf(message, sizeof message,
				"the response body is larger than max_response_bytes (%" CURL_FORMAT_CURL_OFF_T " bytes)",
				t->resp.max_bytes);
		set_string(L, "message", message);
	} else if (t->resp.stop == STOP_NO_MEMORY) {
		set_string(L, "kind", "too_large");
		set_string(L, "message", "out of memory while receiving the response");
	} else if (t->resp.stop == STOP_IO) {
		set_string(L, "kind", "io");
		lua_pushfstring(L, "cannot write %s: %s", t->output, strerror(t->io_errno));
		lua_setfield(L, -2, "message");
	} else {
		set_string(L, "kind", t->code == CURLE_OPERATION_TIMEDOUT ? "timeout" : "network");
		set_string(L, "message", t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->code));
	}
	lua_setfield(L, -2, "error");
}

static void push_timing(lua_State *L, CURL *easy)
{
	curl_off_t us = 0;
	long version = 0;
	char *ip = NULL;

	if (curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &us) == CURLE_OK)
		set_number(L, "time", (lua_Number)us / 1e6);
	if (curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME_T, &us) == CURLE_OK)
		set_number(L, "connect_time", (lua_Number)us / 1e6);
	if (curl_easy_getinfo(easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip != NULL && *ip != '\0')
		set_string(L, "primary_ip", ip);
	if (curl_easy_getinfo(easy, CURLINFO_HTTP_VERSION, &version) != CURLE_OK)
		return;
	switch (version) {
	case CURL_HTTP_VERSION_1_0:
		set_string(L, "http_version", "1.0");
		break;
	case CURL_HTTP_VERSION_1_1:
		set_string(L, "http_version", "1.1");
		break;
	case CURL_HTTP_VERSION_2_0:
		set_string(L, "http_version", "2");
		break;
	case CURL_HTTP_VERSION_3:
		set_string(L, "http_version", "3");
		break;
	default:
		break;
	}
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

static void push_result(lua_State *L, Transfer *t, int decode)
{
	int failed = t->cancelled || t->code != CURLE_OK || t->resp.stop != STOP_NONE;

	lua_createtable(L, 0, 12);
	if (t->resp.status > 0)
		set_integer(L, "status", t->resp.status);
	response_push_headers(L, &t->resp);
	lua_setfield(L, -2, "headers");
	set_integer(L, "bytes", (lua_Integer)t->resp.received);
	push_timing(L, t->easy);
	if (failed) {
		push_error(L, t);
	} else if (!response_to_file(&t->resp)) {
		if (t->resp.extract)
			account_blobs(L, t->owner, response_push_blobs(L, &t->resp));
		response_push_body(L, &t->resp, t->decode_json, decode);
	}
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
	push_result(L, t, lua_upvalueindex(1));
	lua_pushvalue(L, -1);
	compat_setslot(L, 1, UV_RESULT);
	/* The Lua strings now hold the response; drop the C copies early. */
	response_free(&t->resp);
	return 1;
}

static int transfer_cancel(lua_State *L)
{
	Transfer *t = check_transfer(L);

	if (t->easy != NULL)
		transfer_abort(t);
	return 0;
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

void transfer_open(lua_State *L, int decode)
{
	static const luaL_Reg methods[] = {
		{"done", transfer_done},
		{"result", transfer_result},
		{"cancel", transfer_cancel},
		{"close", transfer_close},
		{NULL, NULL}
	};
	static const luaL_Reg metamethods[] = {
		{"__gc", transfer_close},
		{"__close", transfer_close},
		{"__tostring", transfer_tostring},
		{NULL, NULL}
	};

	decode = compat_absindex(L, decode);
	luaL_newmetatable(L, TRANSFER_MT);
	lua_newtable(L);
	lua_pushvalue(L, decode);
	compat_setfuncs(L, methods, 1);
	lua_setfield(L, -2, "__index");
	compat_setfuncs(L, metamethods, 0);
	lua_pop(L, 1);
}
