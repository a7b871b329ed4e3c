/* adapter_common: what every adapter shares (request head, usage, the kind table).
 * See include/llmux/adapter.h. */
#include <cjson/cJSON.h>
#include <string.h>

#include "llmux/adapter.h"

const struct adapter *adapter_for(enum provider_kind kind)
{
    switch (kind) {
    case PROVIDER_OPENAI:
        return &adapter_openai;
    case PROVIDER_AZURE:
        return &adapter_azure;
    default:
        return NULL;
    }
}

void upstream_request_free(struct upstream_request *r)
{
    buf_free(&r->head);
    buf_free(&r->body);
    buf_free(&r->model);
    r->n = 0;
}

int adapter_write_head(struct buf *head, const struct provider *p, const char *path,
                       const struct canon_request *req, const char *extra, size_t body_len)
{
    int default_port = p->port == (p->tls ? 443 : 80);
    int v6 = strchr(p->host, ':') != NULL;
    int rc = buf_printf(head, "POST %s HTTP/1.1\r\nhost: %s%s%s", path, v6 ? "[" : "", p->host,
                        v6 ? "]" : "");
    if (!rc && !default_port)
        rc = buf_printf(head, ":%u", p->port);
    if (!rc)
        rc = buf_printf(head,
                        "\r\ncontent-type: application/json\r\naccept: %s\r\n"
                        "user-agent: llmux/" LLMUX_VERSION "\r\nx-request-id: %s\r\n%s"
                        "content-length: %zu\r\n\r\n",
                        req->stream ? "text/event-stream" : "application/json", req->request_id,
                        extra, body_len);
    return rc;
}

void adapter_iov_body(struct upstream_request *out)
{
    out->iov[0] = uv_buf_init(out->head.data, (unsigned)out->head.len);
    out->iov[1] = uv_buf_init((char *)buf_head(&out->body), (unsigned)buf_size(&out->body));
    out->n = 2;
}

static long json_long(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
}

int adapter_openai_usage(const void *root_cjson, struct usage *u)
{
    const cJSON *us = cJSON_GetObjectItemCaseSensitive((const cJSON *)root_cjson, "usage");
    if (!cJSON_IsObject(us))
        return 0;
    u->prompt_tokens = json_long(us, "prompt_tokens");
    u->completion_tokens = json_long(us, "completion_tokens");
    u->total_tokens = json_long(us, "total_tokens");
    if (!u->total_tokens)
        u->total_tokens = u->prompt_tokens + u->completion_tokens;
    const cJSON *details = cJSON_GetObjectItemCaseSensitive(us, "prompt_tokens_details");
    u->cached_tokens = json_long(details, "cached_tokens");
    u->known = 1;
    return 1;
}
