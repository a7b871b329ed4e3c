/* headers: collects the header names and values llhttp hands over in fragments, for both the
 * request parser (server) and the response parser (upstream). Names and values are appended to
 * a caller's buf, each NUL-terminated, and remembered by offset (the buf may move as it grows);
 * headers_view() turns them into struct http_header pointers once the head is complete. */
#ifndef LLMUX_HEADERS_H
#define LLMUX_HEADERS_H

#include <stddef.h>
#include <stdint.h>

#include "llmux/buf.h"
#include "llmux/server.h"

#define HEADERS_MAX 64

struct headers {
    struct buf *store;
    uint32_t off[HEADERS_MAX][4]; /* name offset, name length, value offset, value length */
    size_t n;
};

/* Start a new head whose strings go to store (not reset here). */
void headers_reset(struct headers *h, struct buf *store);
/* The four llhttp callbacks. Return 0, HEADERS_EFULL when HEADERS_MAX headers are already
 * kept (the caller refuses or ignores the rest), or a buf error. */
#define HEADERS_EFULL 1
int headers_field(struct headers *h, const char *at, size_t len);
int headers_field_complete(struct headers *h);
int headers_value(struct headers *h, const char *at, size_t len);
int headers_value_complete(struct headers *h);
/* Fill out[0..n) (out has room for HEADERS_MAX); pointers borrowed from the store. */
size_t headers_view(const struct headers *h, struct http_header *out);

#endif
