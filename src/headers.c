/* headers: fragment collection for llhttp heads. See include/llmux/headers.h. */
#include "llmux/headers.h"

#include <string.h>

void headers_reset(struct headers *h, struct buf *store)
{
    h->store = store;
    h->n = 0;
    memset(h->off[0], 0, sizeof(h->off[0]));
}

int headers_field(struct headers *h, const char *at, size_t len)
{
    if (h->n >= HEADERS_MAX)
        return HEADERS_EFULL;
    uint32_t *o = h->off[h->n];
    if (o[1] == 0) /* first fragment of this name */
        o[0] = (uint32_t)h->store->len;
    o[1] += (uint32_t)len;
    return buf_append(h->store, at, len);
}

int headers_field_complete(struct headers *h)
{
    if (h->n >= HEADERS_MAX)
        return HEADERS_EFULL;
    h->off[h->n][2] = (uint32_t)h->store->len + 1; /* the value starts after the name's NUL */
    h->off[h->n][3] = 0;
    return buf_append(h->store, "", 1);
}

int headers_value(struct headers *h, const char *at, size_t len)
{
    if (h->n >= HEADERS_MAX)
        return HEADERS_EFULL;
    h->off[h->n][3] += (uint32_t)len;
    return buf_append(h->store, at, len);
}

int headers_value_complete(struct headers *h)
{
    if (h->n >= HEADERS_MAX)
        return HEADERS_EFULL;
    h->n++;
    if (h->n < HEADERS_MAX)
        memset(h->off[h->n], 0, sizeof(h->off[0]));
    return buf_append(h->store, "", 1);
}

size_t headers_view(const struct headers *h, struct http_header *out)
{
    const char *base = h->store->data;
    for (size_t i = 0; i < h->n; i++) {
        out[i].name = base + h->off[i][0];
        out[i].name_len = h->off[i][1];
        out[i].value = base + h->off[i][2];
        out[i].value_len = h->off[i][3];
    }
    return h->n;
}
