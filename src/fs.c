/*
 * imgedit.core.fs: the file operations the Lua layer cannot do with the io
 * library, for saving images and reading local ones safely.
 *
 * - fs.kind tells what a path names (a regular file, a symbolic link, a
 *   FIFO, a device...), so that saving never renames over something that is
 *   not a regular file.
 * - fs.read reads a regular file only (checked on the open descriptor,
 *   before any byte is read) and stops past a size limit while reading:
 *   io.open on a FIFO blocks until a writer comes, and /dev/zero never ends.
 * - fs.write and fs.copy open without blocking: a FIFO that no process reads
 *   is an error at once (ENXIO), not a wait forever; every write error
 *   (ENOSPC from a full device, EPIPE from a reader gone) is returned.
 * - fs.link publishes a file under a name only if the name is free.
 * - fs.mkdir makes a directory and the missing ones above it (mkdir -p),
 *   without a shell.
 *
 * Failures return nil, the system's message and a short code: the errno
 * name for the errors the Lua layer tells apart ("ENOENT", "EEXIST",
 * "ENXIO", ...), else "EOTHER". A path with a NUL byte, which C would cut
 * short, is refused with the code "ENUL".
 */

/* realpath is an X/Open (XSI) function of POSIX. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgedit.h"

#define FD_MT "imgedit.fs.fd"
/* Read and copy in pieces of this size. */
#define CHUNK (64 * 1024)

static const struct {
	int code;
	const char *name;
} ERRNO_NAMES[] = {
	{ENOENT, "ENOENT"}, {ENOTDIR, "ENOTDIR"}, {EEXIST, "EEXIST"}, {ENXIO, "ENXIO"},
	{EPERM, "EPERM"}, {EOPNOTSUPP, "EOPNOTSUPP"}, {EXDEV, "EXDEV"}, {ENOSPC, "ENOSPC"},
	{EPIPE, "EPIPE"}, {EISDIR, "EISDIR"}, {ELOOP, "ELOOP"}, {EACCES, "EACCES"},
	{EMLINK, "EMLINK"}, {ENOSYS, "ENOSYS"},
};

static const char *errno_name(int code)
{
	size_t i;

	for (i = 0; i < sizeof ERRNO_NAMES / sizeof ERRNO_NAMES[0]; i++)
		if (ERRNO_NAMES[i].code == code)
			return ERRNO_NAMES[i].name;
	return "EOTHER";
}

/* nil, strerror(code), the code's name: 3 results. */
static int push_errno(lua_State *L, int code)
{
	lua_pushnil(L);
	lua_pushstring(L, strerror(code));
	lua_pushstring(L, errno_name(code));
	return 3;
}

/* The path argument at idx, or NULL when it holds a NUL byte. */
static const char *check_path(lua_State *L, int idx)
{
	size_t len;
	const char *path = luaL_checklstring(L, idx, &len);

	return strlen(path) == len ? path : NULL;
}

static int push_nul(lua_State *L)
{
	lua_pushnil(L);
	lua_pushliteral(L, "the path contains a NUL byte");
	lua_pushliteral(L, "ENUL");
	return 3;
}

static const char *kind_of(mode_t mode)
{
	if (S_ISREG(mode))
		return "file";
	if (S_ISDIR(mode))
		return "directory";
	if (S_ISLNK(mode))
		return "link";
	if (S_ISFIFO(mode))
		return "fifo";
	if (S_ISCHR(mode))
		return "character device";
	if (S_ISBLK(mode))
		return "block device";
	if (S_ISSOCK(mode))
		return "socket";
	return "special file";
}

/*
 * Writes to a FIFO whose reader went away raise SIGPIPE, whose default
 * action ends the process (a Neovim, an nginx worker): while fs.c writes,
 * the signal is ignored, so that the write fails with EPIPE instead, as
 * libcurl does around its own writes.
 */
typedef struct SigpipeGuard {
	struct sigaction old;
	int saved;
} SigpipeGuard;

static void sigpipe_ignore(SigpipeGuard *g)
{
	struct sigaction ignore;

	memset(&ignore, 0, sizeof ignore);
	ignore.sa_handler = SIG_IGN;
	sigemptyset(&ignore.sa_mask);
	g->saved = sigaction(SIGPIPE, &ignore, &g->old) == 0;
}

static void sigpipe_restore(const SigpipeGuard *g)
{
	if (g->saved)
		(void)sigaction(SIGPIPE, &g->old, NULL);
}

/*
 * Opens path for writing, created if missing (0666 less the umask),
 * truncated if a regular file. O_NONBLOCK makes a FIFO without a reader
 * fail at once (ENXIO) instead of blocking in open; it is cleared at once,
 * so writes wait for a slow reader as usual. Returns the descriptor, or -1
 * with errno set.
 */
static int open_for_writing(const char *path)
{
	int fd, flags, saved;

	do
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, 0666);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return -1;
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		saved = errno;
		(void)close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* Writes all of data; 0, or an errno value. */
static int write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Closes fd; first (an earlier error, or 0) unless close itself failed. */
static int close_keeping(int fd, int first)
{
	if (close(fd) != 0 && first == 0)
		return errno;
	return first;
}

int fs_write_file(const char *path, const char *data, size_t len)
{
	SigpipeGuard guard;
	int fd, err;

	sigpipe_ignore(&guard);
	fd = open_for_writing(path);
	if (fd < 0) {
		err = errno;
	} else {
		err = write_all(fd, data, len);
		err = close_keeping(fd, err);
	}
	sigpipe_restore(&guard);
	return err;
}

/*
 * fs.kind(path [, follow]): "file", "directory", "link", "fifo",
 * "character device", "block device", "socket" or "special file"; a link
 * is reported as such unless follow is true. nil, message, code when the
 * path names nothing (code "ENOENT" or "ENOTDIR") or cannot be examined.
 */
static int fs_kind(lua_State *L)
{
	const char *path = check_path(L, 1);
	int follow = lua_toboolean(L, 2);
	struct stat st;

	if (path == NULL)
		return push_nul(L);
	if ((follow ? stat(path, &st) : lstat(path, &st)) != 0)
		return push_errno(L, errno);
	lua_pushstring(L, kind_of(st.st_mode));
	return 1;
}

/*
 * fs.mkdir(path): makes the directory and any missing parent (mode 0777
 * less the umask); true when it exists as a directory afterwards, or nil,
 * message, code.
 */
static int fs_mkdir(lua_State *L)
{
	const char *path = check_path(L, 1);
	size_t len, i;
	char *copy;
	struct stat st;
	int err = 0;

	if (path == NULL)
		return push_nul(L);
	len = strlen(path);
	copy = malloc(len + 1);
	if (copy == NULL)
		return push_errno(L, ENOMEM);
	memcpy(copy, path, len + 1);
	/* each parent in turn, then the path itself: a name that exists is fine if it is a directory */
	for (i = 1; i <= len && err == 0; i++) {
		if (copy[i] != '/' && copy[i] != '\0')
			continue;
		copy[i] = '\0';
		if (mkdir(copy, 0777) != 0 && errno != EEXIST)
			err = errno;
		else if (stat(copy, &st) != 0)
			err = errno;
		else if (!S_ISDIR(st.st_mode))
			err = ENOTDIR;
		if (i < len)
			copy[i] = '/';
	}
	free(copy);
	if (err != 0)
		return push_errno(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

/* fs.realpath(path): the absolute path with every link resolved, or nil, message, code. */
static int fs_realpath(lua_State *L)
{
	const char *path = check_path(L, 1);
	char *resolved;

	if (path == NULL)
		return push_nul(L);
	resolved = realpath(path, NULL);
	if (resolved == NULL)
		return push_errno(L, errno);
	/* Copied before freeing: a memory error while pushing would leak it. */
	lua_pushstring(L, resolved);
	free(resolved);
	return 1;
}

/* A descriptor owned by a userdata, so that a memory error while reading closes it. */
static int *new_fd(lua_State *L)
{
	int *fd = lua_newuserdata(L, sizeof *fd);

	*fd = -1;
	compat_setmetatable(L, FD_MT);
	return fd;
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		(void)close(*fd);
		*fd = -1;
	}
}

static int fd_gc(lua_State *L)
{
	close_fd(luaL_checkudata(L, 1, FD_MT));
	return 0;
}

/*
 * fs.read(path, limit): the content of the regular file at path (links
 * followed), or nil, message, code: the kind of thing path names when it
 * is not a regular file (code "EKIND"), "too_large" past limit bytes (code
 * "ETOOBIG", checked while reading: the size a file reports is not
 * trusted), else the system's error.
 */
static int fs_read(lua_State *L)
{
	const char *path = check_path(L, 1);
	lua_Integer limit = luaL_checkinteger(L, 2);
	char piece[CHUNK / 4];
	luaL_Buffer b;
	struct stat st;
	size_t total = 0;
	int *fd, flags, err;

	luaL_argcheck(L, limit >= 0, 2, "must not be negative");
	if (path == NULL)
		return push_nul(L);
	fd = new_fd(L);
	/* O_NONBLOCK: opening a FIFO must not wait for a writer. */
	do
		*fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	while (*fd < 0 && errno == EINTR);
	if (*fd < 0)
		return push_errno(L, errno);
	if (fstat(*fd, &st) != 0) {
		err = errno;
		close_fd(fd);
		return push_errno(L, err);
	}
	if (!S_ISREG(st.st_mode)) {
		close_fd(fd);
		lua_pushnil(L);
		lua_pushstring(L, kind_of(st.st_mode));
		lua_pushliteral(L, "EKIND");
		return 3;
	}
	flags = fcntl(*fd, F_GETFL);
	if (flags >= 0)
		(void)fcntl(*fd, F_SETFL, flags & ~O_NONBLOCK);
	luaL_buffinit(L, &b);
	for (;;) {
		ssize_t n = read(*fd, piece, sizeof piece);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = errno;
			close_fd(fd);
			return push_errno(L, err);
		}
		if (n == 0)
			break;
		total += (size_t)n;
		if (total > (size_t)limit) {
			close_fd(fd);
			lua_pushnil(L);
			lua_pushliteral(L, "too_large");
			lua_pushliteral(L, "ETOOBIG");
			return 3;
		}
		luaL_addlstring(&b, piece, (size_t)n);
	}
	close_fd(fd);
	luaL_pushresult(&b);
	return 1;
}

/* fs.write(path, bytes): true, or nil, message, code. */
static int fs_write(lua_State *L)
{
	const char *path = check_path(L, 1);
	size_t len;
	const char *data = luaL_checklstring(L, 2, &len);
	int err;

	if (path == NULL)
		return push_nul(L);
	err = fs_write_file(path, data, len);
	if (err != 0)
		return push_errno(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

/* Copies from into the descriptor out; 0, or an errno value. */
static int copy_into(const char *from, int out)
{
	char *buffer;
	int in, err = 0;

	do
		in = open(from, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	while (in < 0 && errno == EINTR);
	if (in < 0)
		return errno;
	buffer = malloc(CHUNK);
	if (buffer == NULL) {
		(void)close(in);
		return ENOMEM;
	}
	for (;;) {
		ssize_t n = read(in, buffer, CHUNK);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = errno;
			break;
		}
		if (n == 0)
			break;
		err = write_all(out, buffer, (size_t)n);
		if (err != 0)
			break;
	}
	free(buffer);
	(void)close(in);
	return err;
}

/*
 * fs.copy(from, to): streams the file at from into to (a device or FIFO as
 * well as a file), in pieces. true, or nil, message, code.
 */
static int fs_copy(lua_State *L)
{
	const char *from = check_path(L, 1);
	const char *to = check_path(L, 2);
	SigpipeGuard guard;
	int out, err;

	if (from == NULL || to == NULL)
		return push_nul(L);
	sigpipe_ignore(&guard);
	out = open_for_writing(to);
	if (out < 0) {
		err = errno;
	} else {
		err = copy_into(from, out);
		err = close_keeping(out, err);
	}
	sigpipe_restore(&guard);
	if (err != 0)
		return push_errno(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

/*
 * fs.link(from, to): a second name, to, for the file at from, only if to
 * names nothing yet (code "EEXIST" otherwise; "EPERM", "EOPNOTSUPP" or
 * "EMLINK" where the file system has no hard links). true, or nil,
 * message, code.
 */
static int fs_link(lua_State *L)
{
	const char *from = check_path(L, 1);
	const char *to = check_path(L, 2);

	if (from == NULL || to == NULL)
		return push_nul(L);
	if (link(from, to) != 0)
		return push_errno(L, errno);
	lua_pushboolean(L, 1);
	return 1;
}

void fs_open(lua_State *L, int mod)
{
	static const luaL_Reg functions[] = {
		{"kind", fs_kind},
		{"realpath", fs_realpath},
		{"read", fs_read},
		{"write", fs_write},
		{"copy", fs_copy},
		{"link", fs_link},
		{"mkdir", fs_mkdir},
		{NULL, NULL}
	};

	luaL_newmetatable(L, FD_MT);
	lua_pushcfunction(L, fd_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);

	lua_newtable(L);
	compat_setfuncs(L, functions, 0);
	lua_setfield(L, mod, "fs");
}
