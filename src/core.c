/*
 * imgedit.core: HTTP transfers on the libcurl multi interface, base64, a
 * monotonic clock and file operations (fs), for the Lua layer in lua/imgedit/.
 */
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

/*
 * Like curl_version(), less the protocols imgedit never uses: curl_version()
 * asks OpenLDAP for its version, which makes libsasl2 allocate global state
 * that is never freed.
 */
static void push_curl_version(lua_State *L)
{
	const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
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

int luaopen_imgedit_core(lua_State *L)
{
	CURLcode rc;
	int encode, decode, mod;

	if (!curl_initialized) {
		rc = curl_global_init(CURL_GLOBAL_DEFAULT);
		if (rc != CURLE_OK)
			return luaL_error(L, "cannot initialise libcurl: %s", curl_easy_strerror(rc));
		curl_initialized = 1;
	}

	lua_getglobal(L, "require");
	lua_pushliteral(L, "cjson.safe");
	lua_call(L, 1, 1);
	lua_getfield(L, -1, "encode");
	encode = lua_gettop(L);
	lua_getfield(L, -2, "decode");
	decode = lua_gettop(L);
	if (!lua_isfunction(L, encode) || !lua_isfunction(L, decode))
		return luaL_error(L, "cjson.safe has no encode/decode functions");

	lua_newtable(L);
	mod = lua_gettop(L);
	lua_pushliteral(L, IMGEDIT_VERSION);
	lua_setfield(L, mod, "version");
	push_curl_version(L);
	lua_setfield(L, mod, "curl_version");
	multi_open(L, mod, encode);
	transfer_open(L, decode);
	codec_open(L, mod);
	blob_open(L);
	fs_open(L, mod);
	return 1;
}
