/*
 * baseline: the C programs imgedit's benchmarks compare against -- plain
 * libcurl, as a competent user would write them, with libcurl's defaults.
 *
 *   baseline w1 URL KEY N     N sequential POSTs of one JSON body on one easy
 *                             handle (connection reused), each response
 *                             buffered in memory
 *   baseline w1multi URL KEY N  diagnostic: the same POSTs the way imgedit.core
 *                             makes them -- a new easy handle per request with
 *                             imgedit's options and headers, driven by a multi
 *                             handle (perform, poll) -- to tell libcurl's share
 *                             of imgedit's per-request cost from the binding's
 *   baseline w3 URL KEY DIR   one POST asking for b64_json images: the whole
 *                             response buffered (realloc-growing), every
 *                             "b64_json" string value found by a plain scan,
 *                             base64-decoded in memory, fwrite'd to DIR/base-N.png
 *   baseline w4 URL PATH      one GET, the body fwrite'd to PATH from the write
 *                             callback (default buffer size)
 *
 * Prints one JSON line: {"mode", "wall", "cpu", "user", "sys", "maxrss_kib",
 * "bytes", "status", "files"}; wall from CLOCK_MONOTONIC and CPU from
 * getrusage(RUSAGE_SELF), both over the transfers (and the decoding and
 * writing) only; maxrss_kib is the process's peak RSS (ru_maxrss).
 * Exits 1 on any failure.
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

struct buffer {
	char *data;
	size_t len, cap;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void cpu(double *user, double *sys, long *maxrss)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	*user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
	*sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	*maxrss = ru.ru_maxrss;
}

static size_t to_buffer(char *data, size_t size, size_t nmemb, void *ud)
{
	struct buffer *b = ud;
	size_t n = size * nmemb;

	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 16384;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->data, cap);
		if (p == NULL)
			return 0;
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

static size_t to_file(char *data, size_t size, size_t nmemb, void *ud)
{
	return fwrite(data, size, nmemb, ud);
}

static struct curl_slist *json_headers(const char *key)
{
	char auth[512];
	struct curl_slist *h = NULL;

	snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
	h = curl_slist_append(h, auth);
	return curl_slist_append(h, "Content-Type: application/json");
}

static int check(CURLcode rc, CURL *easy, const char *what)
{
	long status = 0;

	if (rc != CURLE_OK) {
		fprintf(stderr, "baseline: %s: %s\n", what, curl_easy_strerror(rc));
		return 0;
	}
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		fprintf(stderr, "baseline: %s: HTTP %ld\n", what, status);
		return 0;
	}
	return 1;
}

/* --- base64 ---------------------------------------------------------------- */

static unsigned char b64[256];

static void b64_init(void)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	int i;

	memset(b64, 255, sizeof b64);
	for (i = 0; i < 64; i++)
		b64[(unsigned char)alphabet[i]] = (unsigned char)i;
}

/* Decodes s[0..n) (JSON escapes such as "\/" are skipped); returns the length. */
static size_t b64_decode(const char *s, size_t n, unsigned char *out)
{
	size_t i, o = 0;
	unsigned long v = 0;
	int digits = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = b64[(unsigned char)s[i]];

		if (s[i] == '=')
			break;
		if (c == 255)
			continue;
		v = v << 6 | c;
		if (++digits == 4) {
			out[o++] = (unsigned char)(v >> 16);
			out[o++] = (unsigned char)(v >> 8);
			out[o++] = (unsigned char)v;
			v = 0;
			digits = 0;
		}
	}
	if (digits == 2) {
		out[o++] = (unsigned char)(v >> 4);
	} else if (digits == 3) {
		out[o++] = (unsigned char)(v >> 10);
		out[o++] = (unsigned char)(v >> 2);
	}
	return o;
}

/* --- workloads ------------------------------------------------------------- */

static const char W1_BODY[] =
	"{\"model\":\"phota-image-edit\",\"prompt\":\"a cat in a hat\","
	"\"image_urls\":[\"https://example.com/p.jpg\"],\"num_outputs\":1,\"resolution\":\"1K\"}";

static const char W3_BODY[] =
	"{\"model\":\"qwen-image-2.0-pro\",\"response_format\":\"b64_json\",\"n\":4,"
	"\"input\":{\"messages\":[{\"role\":\"user\",\"content\":["
	"{\"image\":\"https://example.com/p.jpg\"},{\"text\":\"a cat in a hat\"}]}]}}";

static int w1(CURL *easy, const char *url, const char *key, long n, size_t *bytes)
{
	struct curl_slist *h = json_headers(key);
	struct buffer body = {NULL, 0, 0};
	long i;
	int ok = 1;

	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, W1_BODY);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, to_buffer);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &body);
	for (i = 0; i < n && ok; i++) {
		body.len = 0;
		ok = check(curl_easy_perform(easy), easy, "POST");
		*bytes += body.len;
	}
	free(body.data);
	curl_slist_free_all(h);
	return ok;
}

static size_t skip_header(char *data, size_t size, size_t nmemb, void *ud)
{
	(void)data;
	(void)ud;
	return size * nmemb;
}

static int w1multi(const char *url, const char *key, long n, size_t *bytes)
{
	char auth[512];
	struct curl_slist *h = NULL;
	struct buffer body = {NULL, 0, 0};
	CURLM *multi = curl_multi_init();
	long i;
	int ok = 1;

	snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
	h = curl_slist_append(h, auth);
	h = curl_slist_append(h, "Accept: application/json");
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Expect:");
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, 64L);
	for (i = 0; i < n && ok; i++) {
		CURL *e = curl_easy_init();
		char errbuf[CURL_ERROR_SIZE];
		int running = 1, left, numfds;
		CURLMsg *msg;

		body.len = 0;
		curl_easy_setopt(e, CURLOPT_URL, url);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(W1_BODY));
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, W1_BODY);
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 60000L);
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
		curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)256 * 1024 * 1024);
		curl_easy_setopt(e, CURLOPT_USERAGENT, "imgedit/bench");
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
#if LIBCURL_VERSION_NUM >= 0x075500
		curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
		curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "identity");
		curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
		curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
		curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, skip_header);
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, to_buffer);
		curl_easy_setopt(e, CURLOPT_WRITEDATA, &body);
		curl_multi_add_handle(multi, e);
		while (running) {
			curl_multi_perform(multi, &running);
			if (running)
				curl_multi_poll(multi, NULL, 0, 1000, &numfds);
		}
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
			if (msg->msg == CURLMSG_DONE && !check(msg->data.result, e, "POST"))
				ok = 0;
		curl_multi_remove_handle(multi, e);
		curl_easy_cleanup(e);
		*bytes += body.len;
	}
	free(body.data);
	curl_slist_free_all(h);
	curl_multi_cleanup(multi);
	return ok;
}

static int w3(CURL *easy, const char *url, const char *key, const char *dir, size_t *bytes, int *files)
{
	struct curl_slist *h = json_headers(key);
	struct buffer body = {NULL, 0, 0};
	static const char mark[] = "\"b64_json\"";
	char *p, *end, path[4096];
	int ok;

	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, W3_BODY);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, to_buffer);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &body);
	ok = check(curl_easy_perform(easy), easy, "POST");
	*bytes = body.len;
	p = body.data;
	while (ok && p != NULL && (p = strstr(p, mark)) != NULL) {
		unsigned char *image;
		size_t len;
		FILE *f;

		p += sizeof mark - 1;
		while (*p == ' ' || *p == ':' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (*p != '"')
			continue;
		end = strchr(++p, '"');
		if (end == NULL)
			break;
		image = malloc((size_t)(end - p) / 4 * 3 + 3);
		if (image == NULL)
			return 0;
		len = b64_decode(p, (size_t)(end - p), image);
		snprintf(path, sizeof path, "%s/base-%d.png", dir, ++*files);
		f = fopen(path, "wb");
		ok = f != NULL && fwrite(image, 1, len, f) == len;
		if (f != NULL && fclose(f) != 0)
			ok = 0;
		free(image);
		p = end + 1;
	}
	free(body.data);
	curl_slist_free_all(h);
	return ok && *files > 0;
}

static int w4(CURL *easy, const char *url, const char *path, size_t *bytes)
{
	FILE *f = fopen(path, "wb");
	curl_off_t got = 0;
	int ok;

	if (f == NULL)
		return 0;
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, to_file);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, f);
	ok = check(curl_easy_perform(easy), easy, "GET");
	if (fclose(f) != 0)
		ok = 0;
	curl_easy_getinfo(easy, CURLINFO_SIZE_DOWNLOAD_T, &got);
	*bytes = (size_t)got;
	return ok;
}

int main(int argc, char **argv)
{
	double t0, u0, s0, t1, u1, s1;
	long rss;
	size_t bytes = 0;
	int ok = 0, files = 0;
	CURL *easy;

	if (argc < 4) {
		fprintf(stderr, "usage: baseline w1|w1multi URL KEY N | w3 URL KEY DIR | w4 URL PATH\n");
		return 2;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (easy = curl_easy_init()) == NULL)
		return 1;
	b64_init();
	t0 = now();
	cpu(&u0, &s0, &rss);
	if (strcmp(argv[1], "w1") == 0 && argc >= 5)
		ok = w1(easy, argv[2], argv[3], atol(argv[4]), &bytes);
	else if (strcmp(argv[1], "w1multi") == 0 && argc >= 5)
		ok = w1multi(argv[2], argv[3], atol(argv[4]), &bytes);
	else if (strcmp(argv[1], "w3") == 0 && argc >= 5)
		ok = w3(easy, argv[2], argv[3], argv[4], &bytes, &files);
	else if (strcmp(argv[1], "w4") == 0)
		ok = w4(easy, argv[2], argv[3], &bytes);
	cpu(&u1, &s1, &rss);
	t1 = now();
	curl_easy_cleanup(easy);
	curl_global_cleanup();
	if (!ok)
		return 1;
	printf("{\"mode\":\"%s\",\"wall\":%.6f,\"cpu\":%.6f,\"user\":%.6f,\"sys\":%.6f,"
			"\"maxrss_kib\":%ld,\"bytes\":%zu,\"files\":%d}\n",
			argv[1], t1 - t0, (u1 - u0) + (s1 - s0), u1 - u0, s1 - s0, rss, bytes, files);
	return 0;
}
