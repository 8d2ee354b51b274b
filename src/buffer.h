/*
 * Growable byte buffers of the response side (response.c, extract.c).
 * Every function leaves a buffer whole when it fails: data, len and cap
 * still describe what it held.
 */
#ifndef IMGEDIT_BUFFER_H
#define IMGEDIT_BUFFER_H

#include <stddef.h>

#include "imgedit.h"

typedef struct Buffer {
	char *data; /* owned; NULL while empty */
	size_t len;
	size_t cap;
} Buffer;

/* Makes the capacity exactly cap (>= len); 0 when out of memory. */
IMGEDIT_INTERNAL int buffer_resize(Buffer *b, size_t cap);

/* Room for n more bytes, growing geometrically; 0 when out of memory. */
IMGEDIT_INTERNAL int buffer_reserve(Buffer *b, size_t n);

/* Appends s[0..n); 0 when out of memory. */
IMGEDIT_INTERNAL int buffer_append(Buffer *b, const char *s, size_t n);

/* Frees the data; the buffer is empty and usable again. */
IMGEDIT_INTERNAL void buffer_free(Buffer *b);

#endif
