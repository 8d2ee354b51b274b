/*
 * Extraction of one key's values (src/extract.c, req.extract = "b64_json"
 * or "image") against a reference computed on the whole body, for
 * arbitrary chunkings.
 *
 * Input: byte 0 picks the mode (bit 0), the largest chunk (bits 1-4) and
 * the key (bit 5: "image", else "b64_json"), bytes 1-2 seed the chunking.
 * Then either the body itself (raw mode), or
 * the choices of a generator that writes a powertokens-like JSON body
 * (structured mode): images of random bytes whose base64 values carry
 * escaped '/' (as cjson writes them), \n, \r, \t and \u escapes, white
 * space, missing padding, bad characters; keys spelled with escapes or
 * nearly "b64_json"; values that are not strings; decoys inside strings.
 *
 * Checks:
 * - The body fed in one chunk, in chunks of one byte and in random chunks
 *   leaves the same kept body, the same blobs (bytes or text, validity,
 *   message) and the same scanner state: no chunk boundary matters.
 * - Through Lua, against cjson.safe.decode of the whole original body: if
 *   that succeeds, the kept body decodes too, to the same value except that
 *   every non-empty string of the key is a placeholder "imgedit-blob:<n>";
 *   blob n then holds exactly what core.base64_decode makes of the original
 *   string (the same bytes, or the same error message), and its Lua methods
 *   (size, bytes, base64, sniff, error, write) agree.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_lua.h"
#include "response.h"

static lua_State *L;
enum { MOD = 1, DECODE = 2, CHECK = 3, TOP = 3 };

/* Given: decode, base64_decode, base64_encode, blobs, original, kept, all_blobs_used, scratch path, key. */
static const char CHECKER[] =
	"local decode, b64decode, b64encode, blobs, original, kept, full, scratch, KEY = ...\n"
	"local o = decode(original)\n"
	"if o == nil then return end -- not JSON: nothing to compare\n"
	"local s, problem = decode(kept)\n"
	"assert(s ~= nil, 'the kept body is not JSON: ' .. tostring(problem))\n"
	"local function strip(x) return (x:gsub('[ \\t\\n\\v\\f\\r]', '')) end\n"
	"local function check_blob(value, k)\n"
	"  local blob = assert(blobs[k], 'no blob ' .. k)\n"
	"  local bytes, message = b64decode(value)\n"
	"  if bytes then\n"
	"    assert(blob:error() == nil, 'blob invalid: ' .. tostring(blob:error()))\n"
	"    assert(blob:bytes() == bytes, 'blob bytes differ')\n"
	"    assert(#blob == #bytes)\n"
	"    assert(blob:base64() == b64encode(bytes), 'base64 differs')\n"
	"    assert(blob:sniff(5) == bytes:sub(1, 5) and blob:sniff() == bytes:sub(1, 16))\n"
	"    if #bytes > 0 and #bytes < 4096 then\n"
	"      assert(blob:write(scratch) == true)\n"
	"      local f = assert(io.open(scratch, 'rb'))\n"
	"      assert(f:read('*a') == bytes, 'written file differs')\n"
	"      f:close()\n"
	"    end\n"
	"  else\n"
	"    assert(blob:error() == message, ('error %q, not %q'):format(tostring(blob:error()), message))\n"
	"    local offset = message:match('offset (%d+)$')\n"
	"    local text = offset and strip(value:sub(1, tonumber(offset))) .. value:sub(tonumber(offset) + 1)\n"
	"                 or strip(value)\n"
	"    assert(blob:base64() == text, ('text %q, not %q'):format(blob:base64(), text))\n"
	"    assert(blob:bytes() == nil and #blob == 0 and blob:sniff() == '')\n"
	"    assert(blob:write(scratch) == nil)\n"
	"  end\n"
	"end\n"
	"local function walk(a, b, key, depth)\n"
	"  assert(depth < 1100)\n"
	"  if key == KEY and type(a) == 'string' and a ~= '' then\n"
	"    local k = type(b) == 'string' and b:match('^imgedit%-blob:(%d+)$')\n"
	"    if k then return check_blob(a, tonumber(k)) end\n"
	"    assert(full and a == b, 'value not extracted')\n"
	"    return\n"
	"  end\n"
	"  assert(type(a) == type(b), 'types differ')\n"
	"  if type(a) == 'table' then\n"
	"    for k, v in pairs(a) do walk(v, b[k], k, depth + 1) end\n"
	"    for k in pairs(b) do assert(a[k] ~= nil, 'extra key') end\n"
	"  elseif a ~= a then\n"
	"    assert(b ~= b)\n"
	"  else\n"
	"    assert(a == b, 'values differ')\n"
	"  end\n"
	"end\n"
	"walk(o, s, nil, 0)\n";

static char scratch[64];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	L = fuzz_lua_open();
	fuzz_push_cjson(L, "decode");
	FUZZ_CHECK(luaL_loadbuffer(L, CHECKER, sizeof CHECKER - 1, "checker") == 0);
	FUZZ_CHECK(lua_gettop(L) == TOP);
	snprintf(scratch, sizeof scratch, "/tmp/imgedit-fuzz-extract-%ld", (long)getpid());
	return 0;
}

/* --- a growable byte string ----------------------------------------------- */

typedef struct Out {
	char *data;
	size_t len, cap;
} Out;

static void put(Out *o, const char *s, size_t n)
{
	if (n > o->cap - o->len) {
		o->cap = (o->len + n) * 2 + 64;
		o->data = realloc(o->data, o->cap);
		FUZZ_CHECK(o->data != NULL);
	}
	if (n > 0)
		memcpy(o->data + o->len, s, n);
	o->len += n;
}

static void puts_(Out *o, const char *s)
{
	put(o, s, strlen(s));
}

/* --- the structured generator ------------------------------------------- */

typedef struct Gen {
	const uint8_t *p, *end;
	uint32_t rng;
	Out out;
} Gen;

static unsigned pick(Gen *g, unsigned n)
{
	return g->p < g->end ? *g->p++ % n : 0;
}

static uint32_t next_rng(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

static void gen_space(Gen *g)
{
	static const char *const spaces[] = {"", "", "", " ", "\n\t ", "\r\n", "  "};

	puts_(&g->out, spaces[pick(g, sizeof spaces / sizeof spaces[0])]);
}

/* Inserts s at pos of v. */
static void insert(Out *v, size_t pos, const char *s)
{
	size_t n = strlen(s);

	put(v, s, n); /* grows; the bytes are moved into place below */
	memmove(v->data + pos + n, v->data + pos, v->len - n - pos);
	memcpy(v->data + pos, s, n);
}

/* The JSON text of a base64 value (without its quotes), mutated. */
static void gen_b64(Gen *g)
{
	static const char *const inserts[] = {
		"\\n", "\\r\\n", " ", "\\t", "\\u0041", "!", "=", "\\\"", "\\\\", "\\u00e9",
		"\\ud83d\\ude00", "\x01", "\\/", "\\f", "\\b", "==", "\\u003d", "\r\n", "\xc3\xa9",
		"\\x", "\\u12", "\\ud83d",
	};
	unsigned kind = pick(g, 5), mutations, i;
	size_t len, j, pos;
	unsigned char *bytes;
	Out v = {NULL, 0, 0};

	switch (kind) {
	case 0:
		len = pick(g, 8);
		break;
	case 1:
		len = pick(g, 80);
		break;
	case 2:
		len = 100 + pick(g, 256) * 11;
		break;
	default:
		len = 1000 + pick(g, 256) * (kind == 3 ? 47 : 290);
		break;
	}
	bytes = malloc(len + 1);
	FUZZ_CHECK(bytes != NULL);
	g->rng = g->rng * 31 + pick(g, 256) + 1;
	for (j = 0; j < len; j++)
		bytes[j] = (unsigned char)next_rng(&g->rng);
	if (len >= 8 && pick(g, 2))
		memcpy(bytes, "\x89PNG\r\n\x1a\n", 8);
	v.cap = (len + 2) / 3 * 4 + 64;
	v.data = malloc(v.cap);
	FUZZ_CHECK(v.data != NULL);
	base64_encode_to(v.data, bytes, len);
	v.len = (len + 2) / 3 * 4;
	free(bytes);

	/* Escaped slashes, as cjson writes them; padding left out. */
	if (pick(g, 2)) {
		for (j = 0; j < v.len; j++)
			if (v.data[j] == '/') {
				insert(&v, j, "\\");
				j++;
			}
	}
	if (pick(g, 4) == 0)
		while (v.len > 0 && v.data[v.len - 1] == '=')
			v.len--;
	mutations = pick(g, 4) == 0 ? pick(g, 6) : 0;
	for (i = 0; i < mutations; i++) {
		unsigned op = pick(g, sizeof inserts / sizeof inserts[0] + 2);

		pos = v.len == 0 ? 0 : ((size_t)pick(g, 256) << 8 | pick(g, 256)) % (v.len + 1);
		/* Never inside an escape: back up to a character that starts one. */
		while (pos > 0 && pos < v.len && (v.data[pos - 1] == '\\' ||
				(pos >= 2 && v.data[pos - 2] == '\\' && v.data[pos - 1] == 'u') ||
				(pos >= 3 && v.data[pos - 3] == '\\' && v.data[pos - 2] == 'u') ||
				(pos >= 4 && v.data[pos - 4] == '\\' && v.data[pos - 3] == 'u') ||
				(pos >= 5 && v.data[pos - 5] == '\\' && v.data[pos - 4] == 'u')))
			pos--;
		if (op == sizeof inserts / sizeof inserts[0]) {
			if (v.len > 0)
				v.len--; /* truncated */
		} else if (op == sizeof inserts / sizeof inserts[0] + 1) {
			/* a character as a \u escape of itself */
			if (pos < v.len && v.data[pos] != '\\' && (unsigned char)v.data[pos] >= 0x20 &&
					(unsigned char)v.data[pos] < 0x80) {
				char esc[8];

				snprintf(esc, sizeof esc, "\\u%04X", (unsigned char)v.data[pos]);
				memmove(v.data + pos, v.data + pos + 1, v.len - pos - 1);
				v.len--;
				insert(&v, pos, esc);
			}
		} else {
			insert(&v, pos, inserts[op]);
		}
	}
	put(&g->out, v.data, v.len);
	free(v.data);
}

static void gen_key(Gen *g)
{
	static const char *const keys[] = {
		"b64_json", "b64_json", "b64_json", "b64_json", "b64\\u005fjson", "\\u0062\\u0036\\u0034_json",
		"b64_jsonx", "b64_jso", "B64_json", "url", "b64\\/json", "b64_json\\u0000", "image", "imag\\u0065",
	};

	puts_(&g->out, "\"");
	puts_(&g->out, keys[pick(g, sizeof keys / sizeof keys[0])]);
	puts_(&g->out, "\"");
}

static void gen_item(Gen *g, int depth)
{
	unsigned value = pick(g, 10);

	puts_(&g->out, "{");
	gen_space(g);
	gen_key(g);
	gen_space(g);
	puts_(&g->out, ":");
	gen_space(g);
	switch (value) {
	case 0:
		puts_(&g->out, "\"\"");
		break;
	case 1:
		puts_(&g->out, pick(g, 2) ? "null" : "-12.5e3");
		break;
	case 2:
		puts_(&g->out, "[\"QUJD\", \"b64_json\"]");
		break;
	case 3:
		if (depth < 3) {
			gen_item(g, depth + 1);
			break;
		}
		/* fall through */
	default:
		puts_(&g->out, "\"");
		gen_b64(g);
		puts_(&g->out, "\"");
		break;
	}
	gen_space(g);
	switch (pick(g, 4)) {
	case 0:
		puts_(&g->out, ",\"revised_prompt\":\"a \\\"b64_json\\\":\\\"QUFB\\\" decoy \\\\\"");
		break;
	case 1:
		puts_(&g->out, ", \"b64_json\" : \"QUJDRA==\"");
		break;
	default:
		puts_(&g->out, ",\"revised_prompt\":\"p\"");
		break;
	}
	puts_(&g->out, "}");
}

static void generate(Gen *g)
{
	unsigned n = 1 + pick(g, 5), i;

	puts_(&g->out, "{\"created\":1795265323,");
	gen_space(g);
	if (pick(g, 3) == 0)
		puts_(&g->out, "\"note\":\"b64_json\",\"b64_json\":\"\",");
	puts_(&g->out, "\"data\":[");
	for (i = 0; i < n; i++) {
		if (i > 0)
			puts_(&g->out, ",");
		gen_space(g);
		gen_item(g, 0);
	}
	puts_(&g->out, "],\"metadata\":{}}");
	if (pick(g, 8) == 0 && g->out.len > 0)
		g->out.len -= 1 + pick(g, 255) % g->out.len; /* cut short */
}

/* --- runs ------------------------------------------------------------------- */

/* Feeds body to a fresh Response extracting key, in chunks of at most max (0: one chunk). */
static void run(Response *r, const char *key, const char *body, size_t len, size_t max, uint32_t seed)
{
	size_t at = 0, n;

	response_init(r);
	extract_set_key(&r->x, key, strlen(key));
	FUZZ_CHECK(response_header(r, "HTTP/1.1 200 OK\r\n", 17) == RESPONSE_HEADER_OK);
	FUZZ_CHECK(response_header(r, "\r\n", 2) == RESPONSE_HEADER_END);
	response_presize(r, (curl_off_t)len);
	while (at < len) {
		n = len - at;
		if (max > 0) {
			size_t limit = max == 1 ? 1 : 1 + next_rng(&seed) % max;

			if (n > limit)
				n = limit;
		}
		FUZZ_CHECK(response_body(r, body + at, n) == RESPONSE_BODY_BUFFERED);
		at += n;
	}
	FUZZ_CHECK(r->received == (curl_off_t)len);
	FUZZ_CHECK(r->stop == STOP_NONE);
}

static void same(const Response *a, const Response *b)
{
	size_t i;

	FUZZ_CHECK(a->body.len == b->body.len);
	FUZZ_CHECK(a->body.len == 0 || memcmp(a->body.data, b->body.data, a->body.len) == 0);
	FUZZ_CHECK(a->x.scan.state == b->x.scan.state && a->x.scan.escape == b->x.scan.escape);
	FUZZ_CHECK(a->x.scan.keylen == b->x.scan.keylen && a->x.scan.keyok == b->x.scan.keyok);
	FUZZ_CHECK(a->x.nblobs == b->x.nblobs);
	FUZZ_CHECK(a->x.nblobs <= EXTRACT_MAX_BLOBS);
	for (i = 0; i < a->x.nblobs; i++) {
		const ExtractBlob *x = &a->x.blobs[i], *y = &b->x.blobs[i];

		FUZZ_CHECK(x->invalid == y->invalid);
		FUZZ_CHECK(strcmp(x->error, y->error) == 0);
		FUZZ_CHECK(x->offset == y->offset && x->digits == y->digits && x->pads == y->pads);
		FUZZ_CHECK(x->quad == y->quad && x->surrogate == y->surrogate);
		FUZZ_CHECK(x->data.len == y->data.len && x->data.len <= x->data.cap);
		FUZZ_CHECK(x->data.len == 0 || memcmp(x->data.data, y->data.data, x->data.len) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Gen g;
	Response whole, bytes, chunks;
	const char *body, *key;
	size_t len, max;
	uint32_t seed;

	if (size < 3)
		return 0;
	key = data[0] & 0x20 ? "image" : "b64_json";
	max = (size_t)1 << (data[0] >> 1 & 15);
	seed = (uint32_t)data[1] << 8 | data[2] | 0x10000;
	memset(&g, 0, sizeof g);
	if (data[0] & 1) {
		g.p = data + 3;
		g.end = data + size;
		g.rng = seed;
		generate(&g);
		body = g.out.data != NULL ? g.out.data : "";
		len = g.out.len;
	} else {
		body = (const char *)data + 3;
		len = size - 3;
	}

	run(&whole, key, body, len, 0, seed);
	run(&bytes, key, body, len, 1, seed);
	run(&chunks, key, body, len, max, seed);
	same(&whole, &bytes);
	same(&whole, &chunks);
	response_free(&bytes);
	response_free(&chunks);

	/* The reference, through Lua: what t:result() hands over. */
	lua_pushvalue(L, CHECK);
	lua_pushvalue(L, DECODE);
	lua_getfield(L, MOD, "base64_decode");
	lua_getfield(L, MOD, "base64_encode");
	{
		int full = whole.x.nblobs == EXTRACT_MAX_BLOBS;

		extract_push_blobs(L, &whole.x);
		lua_pushlstring(L, body, len);
		lua_pushlstring(L, whole.body.data != NULL ? whole.body.data : "", whole.body.len);
		lua_pushboolean(L, full);
	}
	lua_pushstring(L, scratch);
	lua_pushstring(L, key);
	if (lua_pcall(L, 9, 0, 0) != 0) {
		fprintf(stderr, "check failed: %s\n", lua_tostring(L, -1));
		abort();
	}
	lua_settop(L, TOP);
	lua_gc(L, LUA_GCCOLLECT, 0); /* the blobs' finalizers free their buffers */
	response_free(&whole);
	free(g.out.data);
	unlink(scratch);
	return 0;
}
