/*
 * Multi: owns one CURLM*. Transfers hold a strong reference to their Multi;
 * the Multi only knows them through the C list m->attached (so an abandoned
 * in-flight Transfer can still be collected) and through a weak table that
 * maps each Transfer* back to its userdata for m:done(). Transfers join
 * and leave the list through multi_attach and multi_detach alone.
 *
 * Three ways to drive it: m:perform() and m:poll() (curl waits on its own
 * sockets); after m:watch(), a host event loop that watches curl's sockets
 * and timer itself (m:socket_changes(), m:timer()) and calls
 * m:socket_action() when one of them fires; or, after m:watch_ready(), the
 * core's own readiness set (ready.c), which m:tick() asks and serves: a
 * tick costs O(ready sockets), not O(transfers). A failure of the multi handle
 * itself (out of memory, a callback that gave up) ends every transfer on it
 * with that error and is returned as nil and a message: the waiting code
 * sees failed transfers, never a raised error.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "imgedit.h"

/* Idle connections kept for reuse, across all hosts. */
#define MAX_CACHED_CONNECTIONS 64L

/* Slots of the table held as the Multi's user value. */
enum {
	UV_TRANSFERS = 1, /* lightuserdata Transfer* -> Transfer userdata, weak values */
	UV_DONE           /* array of Transfers finished since the last m:done() */
};

static Multi *check_multi(lua_State *L)
{
	return imgedit_checkself(L, 1, MULTI_MT);
}

static Multi *check_open(lua_State *L)
{
	Multi *m = check_multi(L);

	if (m->handle == NULL)
		luaL_error(L, "attempt to use a closed multi handle");
	return m;
}

static int multi_new(lua_State *L)
{
	Multi *m = lua_newuserdata(L, sizeof *m);

	m->handle = NULL;
	m->attached = NULL;
	m->count = 0;
	m->watching = 0;
	m->changes = NULL;
	m->nchanges = 0;
	m->changes_cap = 0;
	m->ready = NULL;
	m->timer_armed = 0;
	m->timer_due = 0;
	m->buffered = 0;
	m->blob_bytes = 0;
	compat_setmetatable(L, MULTI_MT);

	lua_createtable(L, 2, 0);
	lua_newtable(L);
	lua_createtable(L, 0, 1);
	lua_pushliteral(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_rawseti(L, -2, UV_TRANSFERS);
	lua_newtable(L);
	lua_rawseti(L, -2, UV_DONE);
	compat_setuservalue(L, -2);

	m->handle = curl_multi_init();
	if (m->handle == NULL)
		return luaL_error(L, "cannot create a curl multi handle");
	/* HTTP/2 requests to one host share a connection instead of opening more. */
	(void)curl_multi_setopt(m->handle, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	(void)curl_multi_setopt(m->handle, CURLMOPT_MAXCONNECTS, MAX_CACHED_CONNECTIONS);
	return 1;
}

CURLMcode multi_attach(Multi *m, CURL *easy, MultiLink *link)
{
	CURLMcode rc = curl_multi_add_handle(m->handle, easy);

	if (rc != CURLM_OK)
		return rc;
	link->prev = NULL;
	link->next = m->attached;
	if (m->attached != NULL)
		m->attached->prev = link;
	m->attached = link;
	link->attached = 1;
	m->count++;
	return CURLM_OK;
}

/*
 * A Transfer keeps its Multi alive (its user value refers to it), so m is
 * valid memory here even from the Transfer's finalizer; it may be closed,
 * and then nothing is attached any more.
 */
void multi_detach(Multi *m, CURL *easy, MultiLink *link)
{
	if (!link->attached)
		return;
	(void)curl_multi_remove_handle(m->handle, easy);
	if (link->prev != NULL)
		link->prev->next = link->next;
	else
		m->attached = link->next;
	if (link->next != NULL)
		link->next->prev = link->prev;
	link->prev = link->next = NULL;
	link->attached = 0;
	m->count--;
}

static int multi_add(lua_State *L)
{
	Multi *m = check_open(L);
	Transfer *t = transfer_create(L, m);

	if (t == NULL)
		return 2;
	compat_getuservalue(L, 1);
	lua_rawgeti(L, -1, UV_TRANSFERS);
	lua_pushlightuserdata(L, t);
	lua_pushvalue(L, -4);
	lua_rawset(L, -3);
	lua_pop(L, 2);
	return 1;
}

/* Appends the Transfer t to the done list at index 4 (the transfers table at 3), if it is still reachable. */
static void push_done(lua_State *L, Transfer *t)
{
	lua_pushlightuserdata(L, t);
	lua_rawget(L, 3);
	if (lua_isnil(L, -1))
		lua_pop(L, 1); /* unreachable already: nobody can ask for it */
	else
		lua_rawseti(L, 4, (int)compat_rawlen(L, 4) + 1);
}

/*
 * Moves the transfers curl reports finished to the done list, for m:done().
 * The Multi is at index 1; whatever is above it on the stack is dropped.
 */
static void reap(lua_State *L, Multi *m)
{
	int left;
	CURLMsg *msg;

	lua_settop(L, 1);
	compat_getuservalue(L, 1);
	lua_rawgeti(L, 2, UV_TRANSFERS);
	lua_rawgeti(L, 2, UV_DONE);
	while ((msg = curl_multi_info_read(m->handle, &left)) != NULL) {
		CURL *easy = msg->easy_handle;
		CURLcode code = msg->data.result;
		Transfer *t;

		if (msg->msg != CURLMSG_DONE)
			continue;
		t = transfer_of(easy);
		/*
		 * Finish in C before touching Lua: any Lua allocation below may run
		 * finalizers, including the one of this very Transfer if it is garbage.
		 */
		transfer_complete(t, code);
		push_done(L, t);
	}
	lua_settop(L, 1);
}

/*
 * The multi handle failed: every transfer on it ends with that error and
 * goes to the done list, and the caller gets nil and a message. (Each is
 * finished in C before the Lua calls that may run finalizers, as in reap.)
 */
static int fail(lua_State *L, Multi *m, const char *call, CURLMcode rc)
{
	lua_settop(L, 1);
	compat_getuservalue(L, 1);
	lua_rawgeti(L, 2, UV_TRANSFERS);
	lua_rawgeti(L, 2, UV_DONE);
	while (m->attached != NULL) {
		Transfer *t = m->attached->transfer;

		transfer_fail(t, rc);
		push_done(L, t);
	}
	lua_settop(L, 1);
	lua_pushnil(L);
	lua_pushfstring(L, "%s failed: %s", call, curl_multi_strerror(rc));
	return 2;
}

static int multi_perform(lua_State *L)
{
	Multi *m = check_open(L);
	int running = 0;
	CURLMcode rc;

	rc = curl_multi_perform(m->handle, &running);
	if (rc != CURLM_OK)
		return fail(L, m, "curl_multi_perform", rc);
	reap(L, m);
	lua_pushinteger(L, running);
	return 1;
}

static int multi_poll(lua_State *L)
{
	Multi *m = check_open(L);
	lua_Number seconds = luaL_optnumber(L, 2, 0);
	int ms = 0, numfds = 0;
	CURLMcode rc;

	if (seconds * 1000 >= (lua_Number)INT_MAX)
		ms = INT_MAX;
	else if (seconds > 0)
		ms = (int)(seconds * 1000 + 0.5);
	rc = curl_multi_poll(m->handle, NULL, 0, ms, &numfds);
	if (rc != CURLM_OK)
		return fail(L, m, "curl_multi_poll", rc);
	lua_pushinteger(L, numfds);
	return 1;
}

static int multi_timeout(lua_State *L)
{
	Multi *m = check_open(L);
	long ms = -1;
	CURLMcode rc = curl_multi_timeout(m->handle, &ms);

	if (rc != CURLM_OK)
		return fail(L, m, "curl_multi_timeout", rc);
	lua_pushnumber(L, ms < 0 ? -1 : (lua_Number)ms / 1000);
	return 1;
}

/*
 * Socket-driven mode ------------------------------------------------------
 *
 * curl calls on_socket and on_timer from inside curl_multi_* calls, where no
 * Lua may run: they only record, in memory the Multi owns, what the host
 * loop must watch. Lua collects that after each call (m:socket_changes(),
 * m:timer()) and reports readiness back with m:socket_action().
 */

struct SocketChange {
	curl_socket_t fd;
	int what;  /* latest interest: CURL_POLL_IN, _OUT, _INOUT or _REMOVE */
	int reset; /* curl let go of the socket meanwhile (maybe closed it, maybe
	              reused its number): drop the host's watch first */
};

static const char *poll_name(int what)
{
	switch (what) {
	case CURL_POLL_IN:
		return "in";
	case CURL_POLL_OUT:
		return "out";
	case CURL_POLL_INOUT:
		return "inout";
	default:
		return "remove";
	}
}

/*
 * Keeps at most one entry per socket, so the list stays as short as the set
 * of sockets even if nobody reads it (m:perform() on a watched multi).
 */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	Multi *m = userp;
	SocketChange *c;
	size_t i;

	(void)easy;
	(void)socketp;
	if (what != CURL_POLL_IN && what != CURL_POLL_OUT && what != CURL_POLL_INOUT)
		what = CURL_POLL_REMOVE;
	for (i = 0; i < m->nchanges; i++) {
		c = &m->changes[i];
		if (c->fd == fd) {
			c->what = what;
			if (what == CURL_POLL_REMOVE)
				c->reset = 1;
			return 0;
		}
	}
	if (m->nchanges == m->changes_cap) {
		size_t cap = m->changes_cap == 0 ? 8 : 2 * m->changes_cap;
		SocketChange *grown = realloc(m->changes, cap * sizeof *grown);

		if (grown == NULL)
			return -1; /* curl gives the multi up; its next call says so */
		m->changes = grown;
		m->changes_cap = cap;
	}
	c = &m->changes[m->nchanges++];
	c->fd = fd;
	c->what = what;
	c->reset = what == CURL_POLL_REMOVE;
	return 0;
}

static int on_timer(CURLM *handle, long timeout_ms, void *userp)
{
	Multi *m = userp;

	(void)handle;
	m->timer_armed = timeout_ms >= 0;
	if (m->timer_armed)
		m->timer_due = imgedit_now() + (double)timeout_ms / 1000;
	return 0;
}

static Multi *check_watching(lua_State *L)
{
	Multi *m = check_open(L);

	if (!m->watching && m->ready == NULL)
		luaL_error(L, "this multi handle is not socket-driven: call m:watch() first");
	return m;
}

/* Readiness-set mode: curl's socket callback keeps the kernel's set up to date. */
static int on_ready_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	Multi *m = userp;

	(void)easy;
	(void)socketp;
	if (what != CURL_POLL_IN && what != CURL_POLL_OUT && what != CURL_POLL_INOUT)
		what = CURL_POLL_REMOVE;
	/* a failure gives the multi up: its next call says so */
	return ready_watch(m->ready, fd, what) == 0 ? 0 : -1;
}

/*
 * curl_multi_socket_all is deprecated in favour of socket_action, yet it is
 * the one call that reports the sockets of transfers already under way.
 */
static CURLMcode socket_all(CURLM *handle, int *running)
{
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
	return curl_multi_socket_all(handle, running);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
}

/*
 * m:watch(): from now on curl's sockets and timer are reported for a host
 * loop to watch. There is no way back; m:perform() and m:poll() still work
 * but leave the reported list as it was.
 */
static int multi_watch(lua_State *L)
{
	Multi *m = check_open(L);
	int running = 0;
	CURLMcode rc;

	if (m->watching) {
		lua_pushboolean(L, 1);
		return 1;
	}
	if (m->ready != NULL)
		return luaL_error(L, "this multi handle watches its sockets itself (m:watch_ready())");
	(void)curl_multi_setopt(m->handle, CURLMOPT_SOCKETFUNCTION, on_socket);
	(void)curl_multi_setopt(m->handle, CURLMOPT_SOCKETDATA, (void *)m);
	(void)curl_multi_setopt(m->handle, CURLMOPT_TIMERFUNCTION, on_timer);
	(void)curl_multi_setopt(m->handle, CURLMOPT_TIMERDATA, (void *)m);
	m->watching = 1;
	if (m->count > 0) {
		rc = socket_all(m->handle, &running);
		if (rc != CURLM_OK)
			return fail(L, m, "curl_multi_socket_all", rc);
		reap(L, m);
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* Sets t[k] = {fd, name of what} in the table on top of the stack. */
static void push_change(lua_State *L, curl_socket_t fd, int what, int k)
{
	lua_createtable(L, 2, 0);
	lua_pushinteger(L, (lua_Integer)fd);
	lua_rawseti(L, -2, 1);
	lua_pushstring(L, poll_name(what));
	lua_rawseti(L, -2, 2);
	lua_rawseti(L, -2, k);
}

/*
 * m:socket_changes() --> {{fd, "in" | "out" | "inout" | "remove"}, ...}:
 * how the watch of each socket changed since the last call, in order. After
 * "remove" curl no longer needs the socket and may already have closed it.
 */
static int multi_socket_changes(lua_State *L)
{
	Multi *m = check_open(L);
	size_t i;
	int k = 0;

	lua_createtable(L, (int)m->nchanges, 0);
	/*
	 * Nothing below reaches curl, so the list cannot change meanwhile; a
	 * memory error leaves it whole for the next call.
	 */
	for (i = 0; i < m->nchanges; i++) {
		const SocketChange *c = &m->changes[i];

		if (c->reset)
			push_change(L, c->fd, CURL_POLL_REMOVE, ++k);
		if (c->what != CURL_POLL_REMOVE)
			push_change(L, c->fd, c->what, ++k);
	}
	m->nchanges = 0;
	return 1;
}

/* m:timer() --> seconds until curl wants m:socket_action() (0 when due), or nil. */
static int multi_timer(lua_State *L)
{
	Multi *m = check_open(L);
	double left;

	if ((!m->watching && m->ready == NULL) || !m->timer_armed)
		return 0;
	left = m->timer_due - imgedit_now();
	lua_pushnumber(L, left > 0 ? (lua_Number)left : 0);
	return 1;
}

/* "in", "out", "err" in any order and combination ("inout"); "" lets curl look. */
static int parse_events(lua_State *L, int arg)
{
	const char *s = luaL_optstring(L, arg, "");
	int mask = 0;

	while (*s != '\0') {
		if (strncmp(s, "in", 2) == 0) {
			mask |= CURL_CSELECT_IN;
			s += 2;
		} else if (strncmp(s, "out", 3) == 0) {
			mask |= CURL_CSELECT_OUT;
			s += 3;
		} else if (strncmp(s, "err", 3) == 0) {
			mask |= CURL_CSELECT_ERR;
			s += 3;
		} else {
			return luaL_argerror(L, arg, "events must be made of \"in\", \"out\" and \"err\"");
		}
	}
	return mask;
}

/*
 * m:socket_action(fd, events): the socket is ready; m:socket_action(): curl's
 * timer is due. Either way, finished transfers go to m:done() as with
 * m:perform(). Returns the number of transfers still running.
 */
static int multi_socket_action(lua_State *L)
{
	Multi *m = check_watching(L);
	curl_socket_t fd = CURL_SOCKET_TIMEOUT;
	int mask = 0, running = 0;
	CURLMcode rc;

	if (!lua_isnoneornil(L, 2)) {
		lua_Integer n = luaL_checkinteger(L, 2);

		luaL_argcheck(L, n >= 0 && n <= INT_MAX, 2, "not a file descriptor");
		fd = (curl_socket_t)n;
		mask = parse_events(L, 3);
	} else {
		/*
		 * curl calls the timer back after a timeout action only when another
		 * timeout is left, so the one just served is forgotten here.
		 */
		m->timer_armed = 0;
	}
	rc = curl_multi_socket_action(m->handle, fd, mask, &running);
	if (rc != CURLM_OK)
		return fail(L, m, "curl_multi_socket_action", rc);
	reap(L, m);
	lua_pushinteger(L, running);
	return 1;
}

/*
 * m:watch_ready() --> backend ("epoll" or "poll"): from now on the core
 * keeps curl's sockets in its readiness set, for m:tick(). There is no way
 * back, and no m:watch() after it.
 */
static int multi_watch_ready(lua_State *L)
{
	Multi *m = check_open(L);
	int running = 0;
	CURLMcode rc;

	if (m->watching)
		return luaL_error(L, "this multi handle is watched by a host loop (m:watch())");
	if (m->ready == NULL) {
		m->ready = ready_new();
		if (m->ready == NULL) {
			lua_pushnil(L);
			lua_pushfstring(L, "cannot make a readiness set: %s", strerror(errno));
			return 2;
		}
		(void)curl_multi_setopt(m->handle, CURLMOPT_SOCKETFUNCTION, on_ready_socket);
		(void)curl_multi_setopt(m->handle, CURLMOPT_SOCKETDATA, (void *)m);
		(void)curl_multi_setopt(m->handle, CURLMOPT_TIMERFUNCTION, on_timer);
		(void)curl_multi_setopt(m->handle, CURLMOPT_TIMERDATA, (void *)m);
		if (m->count > 0) {
			rc = socket_all(m->handle, &running);
			if (rc != CURLM_OK)
				return fail(L, m, "curl_multi_socket_all", rc);
			reap(L, m);
		}
	}
	lua_pushstring(L, ready_backend());
	return 1;
}

/*
 * m:tick([seconds]) --> served, transfers: waits at most `seconds` (default
 * 0: only asks; never past curl's timer) for sockets of the readiness set,
 * serves up to READY_MAX_EVENTS ready ones and curl's timer when due, and
 * moves finished transfers to m:done(). Returns how many sockets and timer
 * expiries were served and how many transfers are still in flight.
 */
static int multi_tick(lua_State *L)
{
	Multi *m = check_open(L);
	lua_Number seconds = luaL_optnumber(L, 2, 0);
	ReadyEvent events[READY_MAX_EVENTS];
	int ms = 0, n, i, running = 0, served = 0;
	CURLMcode rc;

	if (m->ready == NULL)
		return luaL_error(L, "this multi handle has no readiness set: call m:watch_ready() first");
	if (seconds * 1000 >= (lua_Number)INT_MAX)
		ms = INT_MAX;
	else if (seconds > 0)
		ms = (int)(seconds * 1000 + 0.5);
	if (m->timer_armed && ms > 0) {
		double left = m->timer_due - imgedit_now();
		int timer_ms = left <= 0 ? 0 : (int)(left * 1000 + 0.999);

		if (timer_ms < ms)
			ms = timer_ms;
	}
	n = ready_wait(m->ready, ms, events, READY_MAX_EVENTS);
	if (n < 0) {
		lua_pushnil(L);
		lua_pushfstring(L, "waiting for sockets failed: %s", strerror(errno));
		return 2;
	}
	for (i = 0; i < n; i++) {
		rc = curl_multi_socket_action(m->handle, events[i].fd, events[i].mask, &running);
		if (rc != CURLM_OK)
			return fail(L, m, "curl_multi_socket_action", rc);
		served++;
	}
	if (m->timer_armed && m->timer_due <= imgedit_now()) {
		/* as in m:socket_action(): curl re-arms only if a timeout is left */
		m->timer_armed = 0;
		rc = curl_multi_socket_action(m->handle, CURL_SOCKET_TIMEOUT, 0, &running);
		if (rc != CURLM_OK)
			return fail(L, m, "curl_multi_socket_action", rc);
		served++;
	}
	if (served > 0)
		reap(L, m);
	lua_pushinteger(L, served);
	lua_pushinteger(L, m->count);
	return 2;
}

/* #m: the transfers in flight (added, not finished). */
static int multi_len(lua_State *L)
{
	lua_pushinteger(L, check_multi(L)->count);
	return 1;
}

/*
 * Transfers closed since they finished are left out: they have no result.
 * The done list itself is returned, compacted, and a new one takes its
 * place; an empty list stays, and a new empty table is returned.
 */
static int multi_done(lua_State *L)
{
	size_t i, n;
	int k = 0;

	check_multi(L);
	lua_settop(L, 1);
	compat_getuservalue(L, 1);
	lua_rawgeti(L, 2, UV_DONE);
	n = compat_rawlen(L, 3);
	if (n == 0) {
		lua_newtable(L);
		return 1;
	}
	lua_newtable(L);
	lua_rawseti(L, 2, UV_DONE);
	for (i = 1; i <= n; i++) {
		lua_rawgeti(L, 3, (int)i);
		if (transfer_is_open(lua_touserdata(L, -1))) {
			lua_rawseti(L, 3, ++k);
		} else {
			lua_pop(L, 1);
		}
	}
	for (i = (size_t)k + 1; i <= n; i++) {
		lua_pushnil(L);
		lua_rawseti(L, 3, (int)i);
	}
	lua_settop(L, 3);
	return 1;
}

static int multi_close(lua_State *L)
{
	Multi *m = check_multi(L);

	if (m->handle == NULL)
		return 0;
	while (m->attached != NULL)
		transfer_abort(m->attached->transfer);
	curl_multi_cleanup(m->handle);
	m->handle = NULL;
	/* after the cleanup: curl may still report sockets while it closes them */
	free(m->changes);
	m->changes = NULL;
	m->nchanges = m->changes_cap = 0;
	ready_free(m->ready);
	m->ready = NULL;
	m->watching = m->timer_armed = 0;
	return 0;
}

static int multi_tostring(lua_State *L)
{
	Multi *m = check_multi(L);

	if (m->handle == NULL)
		lua_pushliteral(L, "imgedit.multi (closed)");
	else
		lua_pushfstring(L, "imgedit.multi (%d transfers)", m->count);
	return 1;
}

void multi_open(lua_State *L, int mod)
{
	static const luaL_Reg methods[] = {
		{"add", multi_add},
		{"perform", multi_perform},
		{"poll", multi_poll},
		{"timeout", multi_timeout},
		{"done", multi_done},
		{"watch", multi_watch},
		{"socket_changes", multi_socket_changes},
		{"timer", multi_timer},
		{"socket_action", multi_socket_action},
		{"watch_ready", multi_watch_ready},
		{"tick", multi_tick},
		{"close", multi_close},
		{NULL, NULL}
	};
	static const luaL_Reg metamethods[] = {
		{"__gc", multi_close},
		{"__close", multi_close},
		{"__tostring", multi_tostring},
		{"__len", multi_len},
		{NULL, NULL}
	};

	mod = compat_absindex(L, mod);
	imgedit_class(L, MULTI_MT, methods, metamethods, 0);
	lua_pushcfunction(L, multi_new);
	lua_setfield(L, mod, "multi");
}
