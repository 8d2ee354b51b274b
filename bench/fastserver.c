/*
 * fastserver: a minimal HTTP/1.1 keep-alive server for the W1 benchmark.
 *
 * It answers every request with the same small JSON body (a foxapi submit
 * response), so that the per-request cost measured in W1 is the client's and
 * not the server's: the Lua emulator spends about as much CPU per request as
 * the client under test does.
 *
 *   fastserver [seconds]     listens on 127.0.0.1, port chosen by the kernel
 *
 * It prints one line, {"port": N, "pid": P}, when ready, and exits when standard input
 * reaches end of file, or after `seconds` (default 600) whatever happens.
 * One thread, poll(), at most MAX_CONNS connections. Loopback only.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1000
#define BUF_SIZE 65536

static const char BODY[] =
	"{\"created\":1757165031,\"id\":\"task-unified-1757165031-uyujaw3d\","
	"\"model\":\"phota-image-edit\",\"object\":\"image.generation.task\","
	"\"progress\":0,\"status\":\"pending\","
	"\"task_info\":{\"can_cancel\":true,\"estimated_time\":45},\"type\":\"image\"}";

struct conn {
	int fd;
	size_t len;
	char buf[BUF_SIZE];
};

static struct conn *conns[MAX_CONNS];
static struct pollfd fds[MAX_CONNS + 2];
static char response[1024];
static size_t response_len;
static unsigned long request_id;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void close_conn(int i)
{
	close(conns[i]->fd);
	free(conns[i]);
	conns[i] = NULL;
}

/* Content-Length of a request head (0 when absent), or -1 if malformed. */
static long content_length(const char *head, size_t head_len)
{
	const char *p = head, *end = head + head_len, *eol;
	static const char name[] = "content-length:";

	while (p < end) {
		eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			eol = end;
		if ((size_t)(eol - p) > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0)
			return strtol(p + sizeof name - 1, NULL, 10);
		p = eol + 1;
	}
	return 0;
}

static int send_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				struct pollfd p = {fd, POLLOUT, 0};

				if (poll(&p, 1, 5000) <= 0)
					return 0;
				continue;
			}
			return 0;
		}
		s += w;
		n -= (size_t)w;
	}
	return 1;
}

/* Answers every complete request in the buffer; returns 0 to close. */
static int serve(struct conn *c)
{
	for (;;) {
		char *end = NULL;
		size_t i, head_len, total;
		long body;

		for (i = 3; i < c->len; i++) {
			if (c->buf[i - 3] == '\r' && c->buf[i - 2] == '\n' &&
					c->buf[i - 1] == '\r' && c->buf[i] == '\n') {
				end = c->buf + i + 1;
				break;
			}
		}
		if (end == NULL)
			return c->len < BUF_SIZE;
		head_len = (size_t)(end - c->buf);
		body = content_length(c->buf, head_len);
		if (body < 0 || (size_t)body > BUF_SIZE - head_len)
			return 0;
		total = head_len + (size_t)body;
		if (c->len < total)
			return 1;
		request_id++;
		response_len = (size_t)snprintf(response, sizeof response,
				"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
				"X-Request-Id: req-%lu\r\nContent-Length: %zu\r\n"
				"Connection: keep-alive\r\n\r\n%s",
				request_id, sizeof BODY - 1, BODY);
		if (!send_all(c->fd, response, response_len))
			return 0;
		memmove(c->buf, c->buf + total, c->len - total);
		c->len -= total;
	}
}

int main(int argc, char **argv)
{
	double limit = argc > 1 ? atof(argv[1]) : 600;
	double deadline = now() + (limit > 0 ? limit : 600);
	struct sockaddr_in addr;
	socklen_t alen = sizeof addr;
	int one = 1, lfd, i;

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0)
		return perror("socket"), 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = 0;
	if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 1024) != 0)
		return perror("bind/listen"), 1;
	getsockname(lfd, (struct sockaddr *)&addr, &alen);
	printf("{\"port\": %d, \"pid\": %ld}\n", ntohs(addr.sin_port), (long)getpid());
	fflush(stdout);

	while (now() < deadline) {
		int n = 0, k = 0, ready;
		int idx[MAX_CONNS];

		fds[n].fd = 0;
		fds[n++].events = POLLIN;
		fds[n].fd = lfd;
		fds[n++].events = POLLIN;
		for (i = 0; i < MAX_CONNS; i++) {
			if (conns[i] != NULL) {
				fds[n].fd = conns[i]->fd;
				fds[n++].events = POLLIN;
				idx[k++] = i;
			}
		}
		ready = poll(fds, (nfds_t)n, 1000);
		if (ready < 0 && errno != EINTR)
			return perror("poll"), 1;
		if (ready <= 0)
			continue;
		if (fds[0].revents) {
			char c;

			if (read(0, &c, 1) <= 0)
				break;
		}
		for (i = 2; i < n; i++) {
			struct conn *c = conns[idx[i - 2]];
			ssize_t r;

			if (!fds[i].revents)
				continue;
			r = read(c->fd, c->buf + c->len, BUF_SIZE - c->len);
			if (r <= 0) {
				if (r < 0 && (errno == EINTR || errno == EAGAIN))
					continue;
				close_conn(idx[i - 2]);
				continue;
			}
			c->len += (size_t)r;
			if (!serve(c))
				close_conn(idx[i - 2]);
		}
		if (fds[1].revents) {
			int fd = accept(lfd, NULL, NULL);

			if (fd < 0)
				continue;
			for (i = 0; i < MAX_CONNS && conns[i] != NULL; i++)
				;
			if (i == MAX_CONNS || (conns[i] = calloc(1, sizeof **conns)) == NULL) {
				close(fd);
				continue;
			}
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			conns[i]->fd = fd;
		}
	}
	for (i = 0; i < MAX_CONNS; i++)
		if (conns[i] != NULL)
			close_conn(i);
	close(lfd);
	return 0;
}
