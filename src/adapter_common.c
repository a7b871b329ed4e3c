/* adapter_common: what every adapter shares (request head, usage, the kind table) and the
 * helpers of the translating kinds (re-encoded bodies, OpenAI chunks built from scratch).
 * See include/llmux/adapter.h. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/adapter.h"

const struct adapter *adapter_for(enum provider_kind kind)
{
    switch (kind) {
    case PROVIDER_OPENAI:
        return &adapter_openai;
    case PROVIDER_AZURE:
        return &adapter_azure;
    case PROVIDER_ANTHROPIC:
        return &adapter_anthropic;
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

int adapter_encode_json(struct upstream_request *out, const struct provider *p, const char *path,
                        const struct canon_request *req, const cJSON *root, const char *extra)
{
    char *text = cJSON_PrintUnformatted(root);
    int rc = text ? buf_append_str(&out->body, text) : UV_ENOMEM;
    free(text);
    if (!rc)
        rc = adapter_write_head(&out->head, p, path, req, extra, buf_size(&out->body));
    if (rc) {
        upstream_request_free(out);
        return rc;
    }
    adapter_iov_body(out);
    return 0;
}

/* {id, object, created, model} of a chunk, in the order OpenAI sends them. */
static cJSON *chunk_object(const struct chunk_ident *who)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", who->id);
    cJSON_AddStringToObject(root, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(root, "created", (double)who->created);
    cJSON_AddStringToObject(root, "model", who->model);
    return root;
}

/* Print root (freed here) and hand it to emit with ci, which gets the stream's identity. */
static int emit_object(cJSON *root, const struct chunk_ident *who, struct chunk_info *ci,
                       adapter_emit_fn emit, void *ctx)
{
    char *text = root ? cJSON_PrintUnformatted(root) : NULL;
    int rc = UV_ENOMEM;
    if (text) {
        snprintf(ci->id, sizeof(ci->id), "%s", who->id);
        snprintf(ci->model, sizeof(ci->model), "%s", who->model);
        ci->created = who->created;
        rc = emit(ctx, text, strlen(text), ci); /* ci->text may point into root: still alive */
    }
    free(text);
    cJSON_Delete(root);
    return rc;
}

int adapter_emit_delta(const struct chunk_ident *who, int include_usage, cJSON *delta,
                       const char *finish, struct chunk_info *ci, adapter_emit_fn emit, void *ctx)
{
    cJSON *root = chunk_object(who);
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON_AddItemToObject(choice, "delta", delta ? delta : cJSON_CreateObject());
    if (finish)
        cJSON_AddStringToObject(choice, "finish_reason", finish);
    else
        cJSON_AddNullToObject(choice, "finish_reason");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"), choice);
    if (include_usage)
        cJSON_AddNullToObject(root, "usage");
    return emit_object(root, who, ci, emit, ctx);
}

int adapter_emit_usage(const struct chunk_ident *who, const struct usage *u, adapter_emit_fn emit,
                       void *ctx)
{
    cJSON *root = chunk_object(who);
    cJSON_AddArrayToObject(root, "choices");
    cJSON_AddItemToObject(root, "usage", adapter_usage_json(u));
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_CONTENT;
    ci.usage = *u;
    ci.usage.known = 1;
    return emit_object(root, who, &ci, emit, ctx);
}

int adapter_emit_done(const struct usage *u, adapter_emit_fn emit, void *ctx)
{
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_DONE;
    if (u && u->known)
        ci.usage = *u;
    return emit(ctx, "[DONE]", 6, &ci);
}

cJSON *adapter_usage_json(const struct usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)u->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)u->completion_tokens);
    cJSON_AddNumberToObject(o, "total_tokens", (double)u->total_tokens);
    cJSON *details = cJSON_AddObjectToObject(o, "prompt_tokens_details");
    cJSON_AddNumberToObject(details, "cached_tokens", (double)u->cached_tokens);
    return o;
}

void adapter_new_id(char *dst, size_t size, const char *prefix)
{
    unsigned char r[12];
    if (uv_random(NULL, NULL, r, sizeof(r), 0, NULL) != 0) {
        for (size_t i = 0; i < sizeof(r); i++)
            r[i] = (unsigned char)rand();
    }
    char hex[2 * sizeof(r) + 1];
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(hex + 2 * i, 3, "%02x", r[i]);
    snprintf(dst, size, "%s%s", prefix, hex);
}

void adapter_copy_str(char *dst, size_t size, const cJSON *v)
{
    if (cJSON_IsString(v))
        snprintf(dst, size, "%s", v->valuestring);
}

int adapter_content_text(const cJSON *content, struct buf *out)
{
    if (!content || cJSON_IsNull(content))
        return 0;
    if (cJSON_IsString(content))
        return buf_append_str(out, content->valuestring);
    if (!cJSON_IsArray(content))
        return UV_EINVAL;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (cJSON_IsString(text)) {
            int rc = buf_append_str(out, text->valuestring);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int adapter_data_url(const char *url, char *mime, size_t mime_size, const char **data)
{
    if (strncmp(url, "data:", 5) != 0)
        return -1;
    const char *comma = strchr(url, ',');
    const char *b64 = strstr(url, ";base64,");
    if (!comma || !b64 || b64 + 7 != comma)
        return -1;
    size_t n = (size_t)(b64 - (url + 5));
    const char *semi = memchr(url + 5, ';', n); /* parameters such as charset are dropped */
    if (semi)
        n = (size_t)(semi - (url + 5));
    if (n == 0 || n >= mime_size)
        return -1;
    memcpy(mime, url + 5, n);
    mime[n] = 0;
    *data = comma + 1;
    return 0;
}
