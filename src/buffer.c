/* Growable byte buffers (see buffer.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"

#define BUFFER_MIN_CAPACITY 256

int buffer_resize(Buffer *b, size_t cap)
{
	char *p = realloc(b->data, cap);

	if (p == NULL)
		return 0;
	b->data = p;
	b->cap = cap;
	return 1;
}

int buffer_reserve(Buffer *b, size_t n)
{
	size_t need, cap;

	if (n <= b->cap - b->len)
		return 1;
	if (n > SIZE_MAX - b->len)
		return 0;
	need = b->len + n;
	cap = b->cap < BUFFER_MIN_CAPACITY ? BUFFER_MIN_CAPACITY : b->cap;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	return buffer_resize(b, cap);
}

int buffer_append(Buffer *b, const char *s, size_t n)
{
	if (n == 0)
		return 1; /* memcpy to a NULL data would be undefined even for 0 bytes */
	if (!buffer_reserve(b, n))
		return 0;
	memcpy(b->data + b->len, s, n);
	b->len += n;
	return 1;
}

void buffer_free(Buffer *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
