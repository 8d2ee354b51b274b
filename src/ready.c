/*
 * ReadySet: the sockets curl wants watched, kept in a kernel readiness set,
 * so that asking "which are ready?" costs one system call and O(ready
 * sockets), however many transfers are in flight. epoll on Linux; poll()
 * elsewhere, or when built with -DIMGEDIT_POLL (the fallback then costs
 * O(sockets) in the kernel per question, still one call).
 *
 * Plain C: no Lua, no curl multi calls. multi.c calls ready_watch from
 * curl's socket callback and ready_wait from m:tick().
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "imgedit.h"

#if defined(__linux__) && !defined(IMGEDIT_POLL)
#define READY_EPOLL 1
#include <sys/epoll.h>
#else
#define READY_EPOLL 0
#include <poll.h>
#endif

struct ReadySet {
	size_t watched; /* sockets in the set */
#if READY_EPOLL
	int epfd; /* owned */
#else
	struct pollfd *fds; /* owned; watched entries */
	size_t cap;
	size_t next; /* where the next scan starts: a socket that is always
	                ready must not starve those after it */
#endif
};

const char *ready_backend(void)
{
	return READY_EPOLL ? "epoll" : "poll";
}

size_t ready_watched(const ReadySet *r)
{
	return r->watched;
}

#if READY_EPOLL

ReadySet *ready_new(void)
{
	ReadySet *r = malloc(sizeof *r);

	if (r == NULL)
		return NULL;
	r->watched = 0;
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (r->epfd < 0) {
		int saved = errno;

		free(r);
		errno = saved;
		return NULL;
	}
	return r;
}

void ready_free(ReadySet *r)
{
	if (r == NULL)
		return;
	close(r->epfd);
	free(r);
}

int ready_watch(ReadySet *r, curl_socket_t fd, int what)
{
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE) {
		/*
		 * ENOENT / EBADF: the socket was never added, or is closed already
		 * (a closed socket leaves the set by itself).
		 */
		if (epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL) == 0)
			r->watched--;
		return 0;
	}
	ev.events = 0;
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		ev.events |= EPOLLIN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		ev.events |= EPOLLOUT;
	ev.data.u64 = 0;
	ev.data.fd = fd;
	if (epoll_ctl(r->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
		return 0;
	if (errno != ENOENT)
		return -1;
	if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
		return -1;
	r->watched++;
	return 0;
}

/* At most this many events per call: the caller's array is no larger. */
int ready_wait(ReadySet *r, int timeout_ms, ReadyEvent *out, int max)
{
	struct epoll_event evs[READY_MAX_EVENTS];
	int n, i;

	if (max > READY_MAX_EVENTS)
		max = READY_MAX_EVENTS;
	n = epoll_wait(r->epfd, evs, max, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -1;
	for (i = 0; i < n; i++) {
		uint32_t e = evs[i].events;

		out[i].fd = evs[i].data.fd;
		out[i].mask = 0;
		/* a hang-up is read by curl as the end of the stream */
		if (e & (EPOLLIN | EPOLLHUP))
			out[i].mask |= CURL_CSELECT_IN;
		if (e & EPOLLOUT)
			out[i].mask |= CURL_CSELECT_OUT;
		if (e & EPOLLERR)
			out[i].mask |= CURL_CSELECT_ERR;
	}
	return n;
}

#else /* poll() */

ReadySet *ready_new(void)
{
	ReadySet *r = malloc(sizeof *r);

	if (r == NULL)
		return NULL;
	r->watched = 0;
	r->fds = NULL;
	r->cap = 0;
	r->next = 0;
	return r;
}

void ready_free(ReadySet *r)
{
	if (r == NULL)
		return;
	free(r->fds);
	free(r);
}

/* A linear search: the set holds one entry per socket curl has open. */
int ready_watch(ReadySet *r, curl_socket_t fd, int what)
{
	short events = 0;
	size_t i;

	for (i = 0; i < r->watched; i++)
		if (r->fds[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE) {
		if (i < r->watched)
			r->fds[i] = r->fds[--r->watched];
		return 0;
	}
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		events |= POLLIN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		events |= POLLOUT;
	if (i == r->watched) {
		if (r->watched == r->cap) {
			size_t cap = r->cap == 0 ? 16 : 2 * r->cap;
			struct pollfd *grown = realloc(r->fds, cap * sizeof *grown);

			if (grown == NULL)
				return -1;
			r->fds = grown;
			r->cap = cap;
		}
		r->fds[i].fd = fd;
		r->watched++;
	}
	r->fds[i].events = events;
	r->fds[i].revents = 0;
	return 0;
}

int ready_wait(ReadySet *r, int timeout_ms, ReadyEvent *out, int max)
{
	size_t i, k, n = r->watched;
	int got = 0, ready;

	ready = poll(r->fds, (nfds_t)n, timeout_ms);
	if (ready < 0)
		return errno == EINTR ? 0 : -1;
	if (r->next >= n)
		r->next = 0;
	for (k = 0; k < n && got < max && ready > 0; k++) {
		const struct pollfd *p;

		i = (r->next + k) % n;
		p = &r->fds[i];
		if (p->revents == 0)
			continue;
		ready--;
		out[got].fd = p->fd;
		out[got].mask = 0;
		if (p->revents & (POLLIN | POLLHUP))
			out[got].mask |= CURL_CSELECT_IN;
		if (p->revents & POLLOUT)
			out[got].mask |= CURL_CSELECT_OUT;
		if (p->revents & (POLLERR | POLLNVAL))
			out[got].mask |= CURL_CSELECT_ERR;
		got++;
	}
	r->next = n == 0 ? 0 : (r->next + k) % n;
	return got;
}

#endif
