/*
 * imgedit.core: HTTP transfers on the libcurl multi interface, base64, a
 * monotonic clock and file operations (fs), for the Lua layer in
 * lua/imgedit/. JSON is not the core's business: the Lua layer encodes
 * request bodies and decodes responses (imgedit.json).
 */
#include <string.h>
#include <time.h>

#include "imgedit.h"

/*
 * The only mutable static in the module. curl_global_init must run before
 * any other libcurl call; Lua calls luaopen from require, so within one
 * state this runs once. Two states loading the module concurrently from two
 * threads could both call curl_global_init: that is harmless, as libcurl
 * counts the calls and is thread-safe there (CURL_VERSION_THREADSAFE, 7.84+).
 * curl_global_cleanup is never called, since another library in the process
 * may share libcurl's global state.
 */
static int curl_initialized;

double imgedit_now(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail on the systems libcurl supports with it */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void imgedit_class(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *metamethods,
		int nup)
{
	int i, first = lua_gettop(L) - nup + 1, mt;

	luaL_newmetatable(L, name);
	mt = lua_gettop(L);
	lua_newtable(L);
	for (i = 0; i < nup; i++)
		lua_pushvalue(L, first + i);
	lua_pushvalue(L, mt);
	compat_setfuncs(L, methods, nup + 1);
	lua_setfield(L, mt, "__index");
	for (i = 0; i < nup; i++)
		lua_pushvalue(L, first + i);
	lua_pushvalue(L, mt);
	compat_setfuncs(L, metamethods, nup + 1);
	lua_settop(L, first - 1);
}

void *imgedit_checkself(lua_State *L, int up, const char *name)
{
	void *p = lua_touserdata(L, 1);

	if (p != NULL && lua_getmetatable(L, 1)) {
		int same = lua_rawequal(L, -1, lua_upvalueindex(up));

		lua_pop(L, 1);
		if (same)
			return p;
	}
	return luaL_checkudata(L, 1, name); /* raises, with luaL_checkudata's own message */
}

/* core.now(): seconds of a monotonic clock (a number; only differences mean something). */
static int core_now(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)imgedit_now());
	return 1;
}

/*
 * Like curl_version(), less the protocols imgedit never uses: curl_version()
 * asks OpenLDAP for its version, which makes libsasl2 allocate global state
 * that is never freed.
 */
static void push_curl_version(lua_State *L, const curl_version_info_data *info)
{
	int n = lua_gettop(L);

	lua_pushfstring(L, "libcurl/%s", info->version);
	if (info->ssl_version != NULL)
		lua_pushfstring(L, " %s", info->ssl_version);
	if (info->libz_version != NULL)
		lua_pushfstring(L, " zlib/%s", info->libz_version);
	if (info->nghttp2_version != NULL)
		lua_pushfstring(L, " nghttp2/%s", info->nghttp2_version);
	lua_concat(L, lua_gettop(L) - n);
}

static void set_string(lua_State *L, const char *name, const char *value)
{
	if (value == NULL)
		return;
	lua_pushstring(L, value);
	lua_setfield(L, -2, name);
}

/* The CA bundle and directory a new easy handle would use (nil before 7.84). */
static void set_ca_defaults(lua_State *L)
{
#if COMPAT_HAVE_CA_INFO
	CURL *easy = curl_easy_init();
	char *path = NULL;

	if (easy == NULL)
		return;
	if (curl_easy_getinfo(easy, CURLINFO_CAINFO, &path) == CURLE_OK)
		set_string(L, "ca_file", path);
	path = NULL;
	if (curl_easy_getinfo(easy, CURLINFO_CAPATH, &path) == CURLE_OK)
		set_string(L, "ca_path", path);
	curl_easy_cleanup(easy);
#else
	(void)L;
#endif
}

/*
 * core.curl_info(): what the libcurl in use is and can do, as plain data
 * (for `imgedit doctor`):
 *   {version, version_num, minimum, core, tls = {backend, version} | nil,
 *    zlib, nghttp2, resolver = "c-ares" | "threaded" | "blocking",
 *    features = {http2 =, http3 =, ipv6 =, ...}, ca_file =, ca_path =}
 */
static int core_curl_info(lua_State *L)
{
	static const struct {
		const char *name;
		int bit;
	} FEATURES[] = {
		{"ssl", CURL_VERSION_SSL},
		{"http2", CURL_VERSION_HTTP2},
		{"http3", CURL_VERSION_HTTP3},
		{"https_proxy", CURL_VERSION_HTTPS_PROXY},
		{"ipv6", CURL_VERSION_IPV6},
		{"async_dns", CURL_VERSION_ASYNCHDNS},
		{"largefile", CURL_VERSION_LARGEFILE},
		{"libz", CURL_VERSION_LIBZ},
		{"brotli", CURL_VERSION_BROTLI},
		{"zstd", COMPAT_VERSION_ZSTD},
		{"threadsafe", COMPAT_VERSION_THREADSAFE},
	};
	const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
	size_t i;

	lua_createtable(L, 0, 12);
	set_string(L, "version", info->version);
	lua_pushinteger(L, (lua_Integer)info->version_num);
	lua_setfield(L, -2, "version_num");
	set_string(L, "minimum", COMPAT_CURL_MINIMUM);
	set_string(L, "core", IMGEDIT_VERSION);
	if (info->ssl_version != NULL) {
		/* "OpenSSL/3.0.11": the backend, then its version */
		const char *slash = strchr(info->ssl_version, '/');

		lua_createtable(L, 0, 2);
		if (slash != NULL) {
			lua_pushlstring(L, info->ssl_version, (size_t)(slash - info->ssl_version));
			lua_setfield(L, -2, "backend");
			set_string(L, "version", slash + 1);
		} else {
			set_string(L, "backend", info->ssl_version);
		}
		lua_setfield(L, -2, "tls");
	}
	set_string(L, "zlib", info->libz_version);
	set_string(L, "nghttp2", info->nghttp2_version);
	if (info->ares != NULL)
		set_string(L, "resolver", "c-ares");
	else
		set_string(L, "resolver", info->features & CURL_VERSION_ASYNCHDNS ? "threaded" : "blocking");
	lua_createtable(L, 0, (int)(sizeof FEATURES / sizeof FEATURES[0]));
	for (i = 0; i < sizeof FEATURES / sizeof FEATURES[0]; i++) {
		if (FEATURES[i].bit == 0)
			continue; /* unknown to the libcurl built against */
		lua_pushboolean(L, (info->features & FEATURES[i].bit) != 0);
		lua_setfield(L, -2, FEATURES[i].name);
	}
	lua_setfield(L, -2, "features");
	set_ca_defaults(L);
	return 1;
}

/* core.yieldable() --> whether the running code may yield (see compat.h) */
static int core_yieldable(lua_State *L)
{
	lua_pushboolean(L, compat_isyieldable(L));
	return 1;
}

int luaopen_imgedit_core(lua_State *L)
{
	static const luaL_Reg functions[] = {
		{"now", core_now},
		{"yieldable", core_yieldable},
		{"curl_info", core_curl_info},
		{NULL, NULL}
	};
	CURLcode rc;
	int mod;

	if (!curl_initialized) {
		rc = curl_global_init(CURL_GLOBAL_DEFAULT);
		if (rc != CURLE_OK)
			return luaL_error(L, "cannot initialise libcurl: %s", curl_easy_strerror(rc));
		curl_initialized = 1;
	}

	lua_newtable(L);
	mod = lua_gettop(L);
	compat_setfuncs(L, functions, 0);
	lua_pushliteral(L, IMGEDIT_VERSION);
	lua_setfield(L, mod, "version");
	push_curl_version(L, curl_version_info(CURLVERSION_NOW));
	lua_setfield(L, mod, "curl_version");
	lua_pushliteral(L, IMGEDIT_BLOB_PREFIX);
	lua_setfield(L, mod, "BLOB_PREFIX");
	multi_open(L, mod);
	session_open(L, mod);
	transfer_open(L);
	codec_open(L, mod);
	blob_open(L);
	fs_open(L, mod);
	lua_settop(L, mod);
	return 1;
}
