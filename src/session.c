/*
 * Session: what every request of one client (for one purpose: API calls
 * carry the key, downloads never do) has in common, prepared once. The
 * header lines (Authorization, Accept, Content-Type, User-Agent, the
 * caller's own) are one curl_slist built at core.session{...}; the options
 * that never change (timeouts of the connection, proxy, CA file, TLS
 * checks, protocols, the callbacks) are set once on each easy handle the
 * session makes, and the handles are kept between requests, so a request
 * only sets what is its own (transfer.c).
 *
 *   core.session{headers = {"Name: value", ...}, connect_timeout = s,
 *                proxy = url, ca_file = path, insecure = bool,
 *                max_response_bytes = n, max_buffered_bytes = n,
 *                request_id_headers = {"x-request-id", ...}}
 *
 * A Transfer keeps its Session alive, so a session is only collected once
 * none of its requests can still use its header list.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgedit.h"
#include "response.h"

/* Easy handles kept between requests; more at once are made and cleaned up as needed. */
#define SESSION_SPARES 16

/* The header line that stops curl's "Expect: 100-continue" (and its wait for a 100). */
#define NO_EXPECT "Expect:"

struct Session {
	struct curl_slist *headers; /* owned: the caller's lines, "Content-Type:" when none names one */
	/*
	 * "Expect:" in front of headers, for bodies large enough for curl to
	 * send "Expect: 100-continue": a list node of the session's own (curl
	 * reads header lists, never frees or changes them).
	 */
	struct curl_slist no_expect;
	char no_expect_line[sizeof NO_EXPECT];
	curl_off_t expect_threshold;    /* compat_expect_threshold() */
	size_t header_bytes;            /* of the lines, as sent */
	long connect_timeout_ms;        /* -1: curl's default */
	char *proxy;                    /* owned, or NULL: curl's default (the environment) */
	char *ca_file;                  /* owned, or NULL: libcurl's bundle */
	int insecure;
	curl_off_t max_response_bytes;  /* -1: none */
	curl_off_t max_buffered_bytes;  /* -1: none */
	char **request_ids;             /* owned, with its strings: lower-case header names */
	size_t nrequest_ids;
	Easy *spares[SESSION_SPARES];   /* owned */
	int nspares;
	int finalized;                  /* __gc ran: everything above is freed */
};

enum {
	F_HEADERS, F_CONNECT_TIMEOUT, F_PROXY, F_CA_FILE, F_INSECURE, F_MAX_RESPONSE_BYTES,
	F_MAX_BUFFERED_BYTES, F_REQUEST_ID_HEADERS, F_COUNT
};

/* Applied by hand to each new easy handle (new_easy): no option here. */
static const Field FIELDS[F_COUNT] = {
	{"headers", FIELD_LINES, (CURLoption)0},
	{"connect_timeout", FIELD_SECONDS, (CURLoption)0},
	{"proxy", FIELD_STRING, (CURLoption)0},
	{"ca_file", FIELD_STRING, (CURLoption)0},
	{"insecure", FIELD_BOOLEAN, (CURLoption)0},
	{"max_response_bytes", FIELD_COUNT, (CURLoption)0},
	{"max_buffered_bytes", FIELD_COUNT, (CURLoption)0},
	{"request_id_headers", FIELD_LINES, (CURLoption)0},
};

/* libcurl's own limit on the header block of a request (DYN_HTTP_REQUEST). */
#define CURL_REQUEST_HEADERS_MAX (1024 * 1024)
/* What the session's lines may take of it: the request line, URL and curl's own lines need the rest. */
#define HEADER_LINES_MAX (CURL_REQUEST_HEADERS_MAX - 64 * 1024)

Session *session_check(lua_State *L, int idx)
{
	Session *s = luaL_checkudata(L, idx, SESSION_MT);

	if (s->finalized)
		luaL_error(L, "attempt to use a finalized session");
	return s;
}

static void session_free(Session *s)
{
	size_t i;

	while (s->nspares > 0) {
		Easy *e = s->spares[--s->nspares];

		curl_easy_cleanup(e->handle);
		free(e);
	}
	curl_slist_free_all(s->headers);
	s->headers = NULL;
	free(s->proxy);
	free(s->ca_file);
	s->proxy = s->ca_file = NULL;
	for (i = 0; i < s->nrequest_ids; i++)
		free(s->request_ids[i]);
	free(s->request_ids);
	s->request_ids = NULL;
	s->nrequest_ids = 0;
}

static int session_gc(lua_State *L)
{
	Session *s = luaL_checkudata(L, 1, SESSION_MT);

	if (!s->finalized) {
		session_free(s);
		s->finalized = 1;
	}
	return 0;
}

static int session_tostring(lua_State *L)
{
	Session *s = luaL_checkudata(L, 1, SESSION_MT);

	/* never the header lines: they carry the key */
	lua_pushfstring(L, "imgedit.session (%d spare handles)", s->nspares);
	return 1;
}

/* --- easy handles ----------------------------------------------------------- */

#define SETOPT(option, value) \
	do { \
		if (curl_easy_setopt(e->handle, option, value) != CURLE_OK) \
			goto failed; \
	} while (0)

/* A new easy handle with every option a request of s does not set itself. */
static Easy *new_easy(Session *s)
{
	Easy *e = calloc(1, sizeof *e);

	if (e == NULL)
		return NULL;
	e->handle = curl_easy_init();
	if (e->handle == NULL) {
		free(e);
		return NULL;
	}
	SETOPT(CURLOPT_PRIVATE, (void *)e);
	SETOPT(CURLOPT_ERRORBUFFER, e->errbuf);
	SETOPT(CURLOPT_HEADERFUNCTION, transfer_on_header);
	SETOPT(CURLOPT_HEADERDATA, (void *)e);
	SETOPT(CURLOPT_WRITEFUNCTION, transfer_on_body);
	SETOPT(CURLOPT_WRITEDATA, (void *)e);
	if (compat_http_only(e->handle) != CURLE_OK)
		goto failed;
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
	/* A proxy's "200 Connection established" is not the response. */
	SETOPT(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
	SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	if (s->connect_timeout_ms >= 0)
		SETOPT(CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
	if (s->proxy != NULL)
		SETOPT(CURLOPT_PROXY, s->proxy);
	if (s->ca_file != NULL)
		SETOPT(CURLOPT_CAINFO, s->ca_file);
	if (s->insecure) {
		SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
		SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
	}
	/* For curl 0 means "no limit"; response.c enforces a limit of 0 itself. */
	if (s->max_response_bytes > 0)
		SETOPT(CURLOPT_MAXFILESIZE_LARGE, s->max_response_bytes);
	return e;

failed:
	curl_easy_cleanup(e->handle);
	free(e);
	return NULL;
}

#undef SETOPT

Easy *session_take(Session *s)
{
	if (s->nspares > 0)
		return s->spares[--s->nspares];
	return new_easy(s);
}

void session_release(Session *s, Easy *e)
{
	e->transfer = NULL;
	if (!s->finalized && s->nspares < SESSION_SPARES) {
		s->spares[s->nspares++] = e;
	} else {
		curl_easy_cleanup(e->handle);
		free(e);
	}
}

struct curl_slist *session_headers(Session *s, curl_off_t body_len)
{
	return body_len > s->expect_threshold ? &s->no_expect : s->headers;
}

size_t session_header_bytes(const Session *s)
{
	return s->header_bytes;
}

curl_off_t session_max_response_bytes(const Session *s)
{
	return s->max_response_bytes;
}

curl_off_t session_max_buffered_bytes(const Session *s)
{
	return s->max_buffered_bytes;
}

const char *session_request_id(const Session *s, const char *block, size_t len, size_t *vlen)
{
	size_t i;
	const char *value;

	/* in the order the session lists the names */
	for (i = 0; i < s->nrequest_ids; i++)
		if ((value = headers_find(block, len, s->request_ids[i], vlen)) != NULL)
			return value;
	return NULL;
}

/* --- core.session{...} --------------------------------------------------------- */

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

/* Copies the string option of v into *out; 0 when out of memory. */
static int copy_string(const FieldValue *v, char **out)
{
	if (!v->set)
		return 1;
	*out = malloc(v->len + 1);
	if (*out == NULL)
		return 0;
	memcpy(*out, v->s, v->len + 1);
	return 1;
}

/* The header lines of the table at idx; 0 after pushing nil and a message. */
static int build_headers(lua_State *L, Session *s, int idx)
{
	size_t i, n = idx != 0 ? compat_rawlen(L, idx) : 0, total = 0;
	int has_type = 0;
	struct curl_slist *list;

	for (i = 1; i <= n; i++) {
		size_t len;
		const char *line;

		lua_rawgeti(L, idx, (int)i);
		line = lua_tolstring(L, -1, &len);
		total += len + 2;
		has_type = has_type || starts_with_nocase(line, "content-type:");
		list = curl_slist_append(s->headers, line);
		lua_pop(L, 1);
		if (list == NULL)
			return fields_refuse(L, "%s", "out of memory building the request headers");
		s->headers = list;
	}
	s->header_bytes = total;
	if (total > HEADER_LINES_MAX) {
		lua_pushnil(L);
		lua_pushfstring(L, "the header lines add up to %d KiB, more than libcurl sends (%d KiB in all):"
				" check the API key, user_agent and headers", (int)(total / 1024),
				CURL_REQUEST_HEADERS_MAX / 1024);
		return 0;
	}
	/* Without one, curl would label any body application/x-www-form-urlencoded. */
	if (!has_type) {
		list = curl_slist_append(s->headers, "Content-Type:");
		if (list == NULL)
			return fields_refuse(L, "%s", "out of memory building the request headers");
		s->headers = list;
	}
	memcpy(s->no_expect_line, NO_EXPECT, sizeof NO_EXPECT);
	s->no_expect.data = s->no_expect_line;
	s->no_expect.next = s->headers;
	return 1;
}

/* The lower-case names of the table at idx; 0 after pushing nil and a message. */
static int build_request_ids(lua_State *L, Session *s, int idx)
{
	size_t i, j, n = compat_rawlen(L, idx);

	s->request_ids = calloc(n > 0 ? n : 1, sizeof *s->request_ids);
	if (s->request_ids == NULL)
		return fields_refuse(L, "%s", "out of memory");
	for (i = 1; i <= n; i++) {
		size_t len;
		const char *name;
		char *copy;

		lua_rawgeti(L, idx, (int)i);
		name = lua_tolstring(L, -1, &len);
		copy = malloc(len + 1);
		if (copy != NULL) {
			for (j = 0; j <= len; j++)
				copy[j] = name[j] >= 'A' && name[j] <= 'Z' ? (char)(name[j] - 'A' + 'a') : name[j];
		}
		lua_pop(L, 1);
		if (copy == NULL)
			return fields_refuse(L, "%s", "out of memory");
		s->request_ids[s->nrequest_ids++] = copy;
	}
	return 1;
}

/* A ca_file libcurl cannot open fails every request; say so now, naming the option. */
static int check_ca_file(lua_State *L, const char *path)
{
	FILE *f = fopen(path, "rb");
	int saved = errno;

	if (f != NULL) {
		fclose(f);
		return 1;
	}
	lua_pushnil(L);
	lua_pushfstring(L, "ca_file %s cannot be read: %s", path, strerror(saved));
	return 0;
}

/*
 * core.session(options) --> Session, or nil and a message. Raises for an
 * argument or field of the wrong Lua type, and for an unknown field.
 */
static int session_new(lua_State *L)
{
	FieldValue v[F_COUNT];
	Session *s;
	Easy *first;

	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	s = lua_newuserdata(L, sizeof *s);
	memset(s, 0, sizeof *s);
	s->connect_timeout_ms = -1;
	s->max_response_bytes = s->max_buffered_bytes = -1;
	s->expect_threshold = compat_expect_threshold();
	compat_setmetatable(L, SESSION_MT);
	/* From here on a failure leaves the userdata to its finalizer. */
	if (!fields_read(L, 1, 1, FIELDS, F_COUNT, v))
		return 2;
	if (!build_headers(L, s, v[F_HEADERS].set ? v[F_HEADERS].idx : 0))
		return 2;
	if (v[F_REQUEST_ID_HEADERS].set && !build_request_ids(L, s, v[F_REQUEST_ID_HEADERS].idx))
		return 2;
	if (v[F_CONNECT_TIMEOUT].set)
		s->connect_timeout_ms = v[F_CONNECT_TIMEOUT].n;
	if (v[F_CA_FILE].set && !check_ca_file(L, v[F_CA_FILE].s))
		return 2;
	if (!copy_string(&v[F_PROXY], &s->proxy) || !copy_string(&v[F_CA_FILE], &s->ca_file)) {
		fields_refuse(L, "%s", "out of memory");
		return 2;
	}
	s->insecure = v[F_INSECURE].set && v[F_INSECURE].b;
	if (v[F_MAX_RESPONSE_BYTES].set)
		s->max_response_bytes = v[F_MAX_RESPONSE_BYTES].count;
	if (v[F_MAX_BUFFERED_BYTES].set)
		s->max_buffered_bytes = v[F_MAX_BUFFERED_BYTES].count;
	/* The first handle now: curl refuses a bad option here rather than at the first request. */
	first = new_easy(s);
	if (first == NULL) {
		fields_refuse(L, "%s", "curl cannot make an easy handle with these options");
		return 2;
	}
	session_release(s, first);
	lua_pushvalue(L, 2);
	return 1;
}

void session_open(lua_State *L, int mod)
{
	static const luaL_Reg methods[] = {
		{NULL, NULL}
	};
	static const luaL_Reg metamethods[] = {
		{"__gc", session_gc},
		{"__tostring", session_tostring},
		{NULL, NULL}
	};

	mod = compat_absindex(L, mod);
	imgedit_class(L, SESSION_MT, methods, metamethods, 0);
	lua_pushcfunction(L, session_new);
	lua_setfield(L, mod, "session");
}
