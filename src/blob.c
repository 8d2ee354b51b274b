/*
 * Blob: one extracted value of a response, decoded as it arrived (see
 * extract.h), as a Lua userdata that owns the C buffer. Nothing copies the
 * bytes into Lua unless asked to (b:bytes(), b:base64()); b:write(path)
 * writes them straight from the buffer.
 *
 * The Lua collector sees only the small userdata, not the buffer: close a
 * blob (or let its result go) when its bytes are no longer needed;
 * transfer.c makes up for it with a full collection now and then.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgedit.h"
#include "extract.h"

typedef struct Blob {
	char *data;  /* owned; the decoded bytes, or the text when invalid */
	size_t len;
	int invalid; /* error says why */
	int closed;
	char error[sizeof ((ExtractBlob *)0)->error];
} Blob;

void blob_push(lua_State *L, ExtractBlob *rb)
{
	Blob *b = lua_newuserdata(L, sizeof *b);

	memset(b, 0, sizeof *b);
	compat_setmetatable(L, BLOB_MT);
	/* Nothing below can raise: the buffer changes owner at once. */
	b->data = rb->data.data;
	b->len = rb->data.len;
	b->invalid = rb->invalid;
	memcpy(b->error, rb->error, sizeof b->error);
	b->error[sizeof b->error - 1] = '\0';
	rb->data.data = NULL;
	rb->data.len = rb->data.cap = 0;
}

static Blob *check_blob(lua_State *L)
{
	return imgedit_checkself(L, 1, BLOB_MT);
}

/* The blob at index 1, which must not be closed. */
static Blob *check_open(lua_State *L)
{
	Blob *b = check_blob(L);

	if (b->closed)
		luaL_error(L, "attempt to use a closed blob");
	return b;
}

/* nil and the reason the blob holds no bytes. */
static int push_invalid(lua_State *L, const Blob *b)
{
	lua_pushnil(L);
	lua_pushstring(L, b->error);
	return 2;
}

/* #b: the number of decoded bytes (0 when invalid or closed). */
static int blob_len(lua_State *L)
{
	Blob *b = check_blob(L);

	lua_pushinteger(L, b->closed || b->invalid ? 0 : (lua_Integer)b->len);
	return 1;
}

/* b:error(): nil, or why the value is not valid base64. */
static int blob_error(lua_State *L)
{
	Blob *b = check_blob(L);

	if (b->invalid)
		lua_pushstring(L, b->error);
	else
		lua_pushnil(L);
	return 1;
}

/* b:bytes(): the decoded bytes as a string, or nil and the error. */
static int blob_bytes(lua_State *L)
{
	Blob *b = check_open(L);

	if (b->invalid)
		return push_invalid(L, b);
	lua_pushlstring(L, b->data != NULL ? b->data : "", b->len);
	return 1;
}

/* b:sniff([n]): the first n (default 16) decoded bytes; "" when invalid. */
static int blob_sniff(lua_State *L)
{
	Blob *b = check_open(L);
	lua_Integer n = luaL_optinteger(L, 2, 16);

	luaL_argcheck(L, n >= 0, 2, "must not be negative");
	if (b->invalid || b->data == NULL)
		n = 0;
	else if ((size_t)n > b->len)
		n = (lua_Integer)b->len;
	lua_pushlstring(L, b->data != NULL ? b->data : "", (size_t)n);
	return 1;
}

/*
 * b:base64(): the bytes encoded again (standard alphabet, padded, one
 * line). For an invalid blob, its text: the value as received, escapes
 * undone, less the white space before the first problem.
 */
static int blob_base64(lua_State *L)
{
	Blob *b = check_open(L);
	size_t size;
	char *out;

	if (b->invalid || b->len == 0) {
		lua_pushlstring(L, b->data != NULL ? b->data : "", b->len);
		return 1;
	}
	if (b->len > ((size_t)-1) / 4 * 3 - 2)
		return luaL_error(L, "blob too large to encode");
	size = (b->len + 2) / 3 * 4;
	/* Scratch from Lua: a memory error while pushing the string leaks nothing. */
	out = lua_newuserdata(L, size);
	base64_encode_to(out, (const unsigned char *)b->data, b->len);
	lua_pushlstring(L, out, size);
	return 1;
}

/*
 * b:write(path): the decoded bytes to path (fs_write_file: a file, or a
 * device or FIFO written directly); true, or nil and a message.
 */
static int blob_write(lua_State *L)
{
	Blob *b = check_open(L);
	size_t len;
	const char *path = luaL_checklstring(L, 2, &len);
	int err;

	if (b->invalid)
		return push_invalid(L, b);
	if (strlen(path) != len) {
		lua_pushnil(L);
		lua_pushliteral(L, "the path contains a NUL byte");
		return 2;
	}
	err = fs_write_file(path, b->data != NULL ? b->data : "", b->len);
	if (err != 0) {
		lua_pushnil(L);
		lua_pushfstring(L, "cannot write %s: %s", path, strerror(err));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* b:close(), and the finalizer: frees the buffer; again does nothing. */
static int blob_close(lua_State *L)
{
	Blob *b = check_blob(L);

	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->closed = 1;
	return 0;
}

static int blob_tostring(lua_State *L)
{
	Blob *b = check_blob(L);
	char text[sizeof b->error + 48];

	if (b->closed)
		snprintf(text, sizeof text, "imgedit.blob (closed)");
	else if (b->invalid)
		snprintf(text, sizeof text, "imgedit.blob (invalid: %s)", b->error);
	else
		snprintf(text, sizeof text, "imgedit.blob (%lu bytes)", (unsigned long)b->len);
	lua_pushstring(L, text);
	return 1;
}

void blob_open(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"error", blob_error},
		{"bytes", blob_bytes},
		{"sniff", blob_sniff},
		{"base64", blob_base64},
		{"write", blob_write},
		{"close", blob_close},
		{NULL, NULL}
	};
	static const luaL_Reg metamethods[] = {
		{"__len", blob_len},
		{"__gc", blob_close},
		{"__close", blob_close},
		{"__tostring", blob_tostring},
		{NULL, NULL}
	};

	imgedit_class(L, BLOB_MT, methods, metamethods, 0);
}
