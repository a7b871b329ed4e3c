/* adapter_common: what every adapter shares (request head, usage, the kind table) and the
 * helpers of the translating kinds (re-encoded bodies, OpenAI chunks built from scratch).
 * See include/llmux/adapter.h. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmux/adapter.h"
#include "llmux/errors.h"
#include "llmux/json.h"
#include "llmux/server.h"

const struct adapter *adapter_for(enum provider_kind kind)
{
    switch (kind) {
    case PROVIDER_OPENAI:
        return &adapter_openai;
    case PROVIDER_AZURE:
        return &adapter_azure;
    case PROVIDER_ANTHROPIC:
        return &adapter_anthropic;
    case PROVIDER_GEMINI:
        return &adapter_gemini;
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
    r->why[0] = 0;
}

int adapter_write_head(struct buf *head, const struct provider *p, const char *path,
                       const struct canon_request *req, const char *extra, size_t body_len)
{
    /* built without printf: this runs for every attempt */
    int default_port = p->port == (p->tls ? 443 : 80);
    int v6 = strchr(p->host, ':') != NULL;
    int rc = buf_append(head, "POST ", 5);
    if (!rc)
        rc = buf_append_str(head, path);
    if (!rc)
        rc = buf_append_str(head, v6 ? " HTTP/1.1\r\nhost: [" : " HTTP/1.1\r\nhost: ");
    if (!rc)
        rc = buf_append_str(head, p->host);
    if (!rc && v6)
        rc = buf_append(head, "]", 1);
    if (!rc && !default_port)
        rc = buf_append(head, ":", 1);
    if (!rc && !default_port)
        rc = buf_append_uint(head, p->port);
    if (!rc)
        rc = buf_append_str(head, req->stream ? "\r\ncontent-type: application/json\r\n"
                                                "accept: text/event-stream\r\n"
                                              : "\r\ncontent-type: application/json\r\n"
                                                "accept: application/json\r\n");
    if (!rc)
        rc = buf_append_str(head, "user-agent: llmux/" LLMUX_VERSION "\r\nx-request-id: ");
    if (!rc)
        rc = buf_append_str(head, req->request_id);
    if (!rc)
        rc = buf_append(head, "\r\n", 2);
    if (!rc)
        rc = buf_append_str(head, extra);
    if (!rc)
        rc = buf_append_str(head, "content-length: ");
    if (!rc)
        rc = buf_append_uint(head, body_len);
    if (!rc)
        rc = buf_append(head, "\r\n\r\n", 4);
    return rc;
}

void adapter_iov_body(struct upstream_request *out)
{
    out->iov[0] = uv_buf_init(out->head.data, (unsigned)out->head.len);
    out->iov[1] = uv_buf_init((char *)buf_head(&out->body), (unsigned)buf_size(&out->body));
    out->n = 2;
}

long adapter_json_long(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    /* a provider's number may be anything (1e300, NaN): converting it out of range is
     * undefined behaviour, so such a value counts as absent */
    if (!cJSON_IsNumber(v) || !(v->valuedouble > -1e15 && v->valuedouble < 1e15))
        return 0;
    return (long)v->valuedouble;
}

long adapter_span_long(struct json_span v)
{
    double d;
    if (json_number(v, &d) != 0 || !(d > -1e15 && d < 1e15)) /* as adapter_json_long */
        return 0;
    return (long)d;
}

void adapter_span_str(char *dst, size_t size, struct json_span v)
{
    size_t len;
    json_string_copy(v, dst, size, &len); /* dst untouched when v is not a string */
}

int adapter_span_text(struct buf *scratch, struct json_span v, const char **p, size_t *len)
{
    int rc = json_string_raw(v, p, len);
    if (rc <= 0)
        return rc < 0 ? LLMUX_EPROTO : 0;
    buf_reset(scratch);
    if (buf_append(scratch, v.s, v.n) != 0) /* room for the decoded text and its NUL */
        return UV_ENOMEM;
    json_string_copy(v, scratch->data, v.n, len);
    *p = scratch->data;
    *len = strnlen(scratch->data, *len);
    return 0;
}

cJSON *adapter_span_tree(struct json_span v)
{
    return v.s ? cJSON_ParseWithLength(v.s, v.n) : NULL;
}

int adapter_openai_usage_span(struct json_span usage, struct usage *u)
{
    static const char *const keys[] = {"prompt_tokens", "completion_tokens", "total_tokens",
                                       "prompt_tokens_details"};
    struct json_span m[4];
    if (json_members(usage, keys, 4, m) != 0)
        return 0;
    u->prompt_tokens = adapter_span_long(m[0]);
    u->completion_tokens = adapter_span_long(m[1]);
    u->total_tokens = adapter_span_long(m[2]);
    if (!u->total_tokens)
        u->total_tokens = u->prompt_tokens + u->completion_tokens;
    u->cached_tokens = adapter_span_long(json_get(m[3], "cached_tokens"));
    u->known = 1;
    return 1;
}

int adapter_openai_usage(const void *root_cjson, struct usage *u)
{
    const cJSON *us = cJSON_GetObjectItemCaseSensitive((const cJSON *)root_cjson, "usage");
    if (!cJSON_IsObject(us))
        return 0;
    u->prompt_tokens = adapter_json_long(us, "prompt_tokens");
    u->completion_tokens = adapter_json_long(us, "completion_tokens");
    u->total_tokens = adapter_json_long(us, "total_tokens");
    if (!u->total_tokens)
        u->total_tokens = u->prompt_tokens + u->completion_tokens;
    const cJSON *details = cJSON_GetObjectItemCaseSensitive(us, "prompt_tokens_details");
    u->cached_tokens = adapter_json_long(details, "cached_tokens");
    u->known = 1;
    return 1;
}

void adapter_explain_refusal(const struct canon_request *req, const cJSON *in, const char *kind,
                             char *why, size_t size)
{
    if (why[0])
        return; /* the adapter said it already */
    static const char *const endpoints[] = {"/v1/chat/completions", "/v1/completions",
                                            "/v1/embeddings"};
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(in, "n");
    if (!in) {
        snprintf(why, size, "%s: %s providers do not serve this endpoint",
                 endpoints[req->endpoint], kind);
        return;
    }
    if (cJSON_IsNumber(n) && n->valuedouble > 1) {
        snprintf(why, size, "n: %s providers return one choice per request (n must be 1)", kind);
        return;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(in, "messages"))
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (cJSON_IsString(role) && strcmp(role->valuestring, "function") == 0) {
            snprintf(why, size, "messages: the legacy \"function\" role cannot be sent to %s "
                                "providers (use tools and the \"tool\" role)", kind);
            return;
        }
        const cJSON *part;
        cJSON_ArrayForEach(part, cJSON_GetObjectItemCaseSensitive(m, "content"))
        {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "type");
            if (cJSON_IsString(t) && strcmp(t->valuestring, "text") != 0 &&
                strcmp(t->valuestring, "refusal") != 0 && strcmp(t->valuestring, "image_url")) {
                snprintf(why, size, "messages: content parts of type \"%.40s\" cannot be sent "
                                    "to %s providers", t->valuestring, kind);
                return;
            }
        }
    }
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(in, "tools"))
    {
        if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(t, "function"))) {
            snprintf(why, size, "tools: only function tools can be sent to %s providers", kind);
            return;
        }
    }
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(in, "input");
    if (input && !cJSON_IsString(input) && !cJSON_IsString(input->child)) {
        snprintf(why, size, "input: %s providers embed text only (no token arrays)", kind);
        return;
    }
    snprintf(why, size, "the request has a member %s providers cannot take", kind);
}

void adapter_encode_init(struct upstream_request *out)
{
    memset(out, 0, sizeof(*out));
    buf_init(&out->head, 0);
    buf_init(&out->body, 0);
    buf_init(&out->model, 0);
}

int adapter_encode_json(struct upstream_request *out, const struct provider *p, const char *path,
                        const struct canon_request *req, const cJSON *root, const char *key_header,
                        const char *extra)
{
    struct buf headers;
    buf_init(&headers, 0);
    char *text = cJSON_PrintUnformatted(root);
    int rc = text ? buf_append_str(&out->body, text) : UV_ENOMEM;
    free(text);
    if (!rc && key_header && p->api_key)
        rc = buf_printf(&headers, "%s: %s\r\n", key_header, p->api_key);
    if (!rc)
        rc = buf_printf(&headers, "%s", extra);
    if (!rc)
        rc = adapter_write_head(&out->head, p, path, req, buf_head(&headers), buf_size(&out->body));
    if (headers.data)
        explicit_bzero(headers.data, headers.cap); /* the key */
    buf_free(&headers);
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

int adapter_emit_text(const struct chunk_ident *who, int include_usage, const char *text,
                      size_t len, struct chunk_info *ci, adapter_emit_fn emit, void *ctx)
{
    if (who->created < 0 || who->created >= INT_MAX) { /* cJSON would print it otherwise */
        cJSON *delta = cJSON_CreateObject();
        cJSON_AddItemToObject(delta, "content", cJSON_CreateString(text));
        return adapter_emit_delta(who, include_usage, delta, NULL, ci, emit, ctx);
    }
    /* the bytes cJSON_PrintUnformatted gives for adapter_emit_delta's tree, written directly */
    struct buf b;
    buf_init(&b, 0);
    int rc = buf_append_str(&b, "{\"id\":\"");
    if (!rc)
        rc = buf_append_json_str(&b, who->id, strlen(who->id));
    if (!rc)
        rc = buf_append_str(&b, "\",\"object\":\"chat.completion.chunk\",\"created\":");
    if (!rc)
        rc = buf_append_uint(&b, (unsigned long long)who->created);
    if (!rc)
        rc = buf_append_str(&b, ",\"model\":\"");
    if (!rc)
        rc = buf_append_json_str(&b, who->model, strlen(who->model));
    if (!rc)
        rc = buf_append_str(&b, "\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"");
    if (!rc)
        rc = buf_append_json_str(&b, text, len);
    if (!rc)
        rc = buf_append_str(&b, include_usage ? "\"},\"finish_reason\":null}],\"usage\":null}"
                                              : "\"},\"finish_reason\":null}]}");
    if (!rc) {
        snprintf(ci->id, sizeof(ci->id), "%s", who->id);
        snprintf(ci->model, sizeof(ci->model), "%s", who->model);
        ci->created = who->created;
        rc = emit(ctx, buf_head(&b), buf_size(&b), ci);
    }
    buf_free(&b);
    return rc;
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

void adapter_push_turn(cJSON *turns, cJSON **last, const char *role, const char *key, cJSON *items)
{
    if (cJSON_GetArraySize(items) == 0) {
        cJSON_Delete(items);
        return;
    }
    const cJSON *last_role = cJSON_GetObjectItemCaseSensitive(*last, "role");
    if (cJSON_IsString(last_role) && strcmp(last_role->valuestring, role) == 0) {
        cJSON *dst = cJSON_GetObjectItemCaseSensitive(*last, key);
        cJSON *item;
        while ((item = cJSON_DetachItemFromArray(items, 0)) != NULL)
            cJSON_AddItemToArray(dst, item);
        cJSON_Delete(items);
        return;
    }
    cJSON *turn = cJSON_CreateObject();
    cJSON_AddStringToObject(turn, "role", role);
    cJSON_AddItemToObject(turn, key, items);
    cJSON_AddItemToArray(turns, turn);
    *last = turn;
}

cJSON *adapter_tool_arguments(const cJSON *arguments)
{
    if (!arguments || cJSON_IsNull(arguments) ||
        (cJSON_IsString(arguments) && !arguments->valuestring[0]))
        return cJSON_CreateObject();
    if (!cJSON_IsString(arguments))
        return NULL;
    cJSON *o = cJSON_Parse(arguments->valuestring);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *adapter_tool_call(int index, const char *id, const char *name, const char *args)
{
    cJSON *tc = cJSON_CreateObject();
    if (index >= 0)
        cJSON_AddNumberToObject(tc, "index", index);
    if (id) {
        cJSON_AddStringToObject(tc, "id", id);
        cJSON_AddStringToObject(tc, "type", "function");
    }
    cJSON *fn = cJSON_AddObjectToObject(tc, "function");
    if (name)
        cJSON_AddStringToObject(fn, "name", name);
    cJSON_AddStringToObject(fn, "arguments", args);
    return tc;
}

int adapter_write_completion(struct buf *out, const char *id, const char *model,
                             const char *content, cJSON *tool_calls, const char *finish,
                             const struct usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", "chat.completion");
    cJSON_AddNumberToObject(o, "created", (double)time(NULL));
    cJSON_AddStringToObject(o, "model", model);
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(choice, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    if (content)
        cJSON_AddStringToObject(msg, "content", content);
    else
        cJSON_AddNullToObject(msg, "content");
    if (cJSON_GetArraySize(tool_calls) > 0)
        cJSON_AddItemToObject(msg, "tool_calls", tool_calls);
    else
        cJSON_Delete(tool_calls);
    cJSON_AddStringToObject(choice, "finish_reason", finish);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), choice);
    cJSON_AddItemToObject(o, "usage", adapter_usage_json(u));
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    int rc = text ? buf_append_str(out, text) : UV_ENOMEM;
    free(text);
    return rc;
}

int adapter_emit_role(const struct chunk_ident *who, int include_usage, adapter_emit_fn emit,
                      void *ctx)
{
    cJSON *delta = cJSON_CreateObject();
    cJSON_AddStringToObject(delta, "role", "assistant");
    cJSON_AddStringToObject(delta, "content", "");
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_PREAMBLE;
    return adapter_emit_delta(who, include_usage, delta, NULL, &ci, emit, ctx);
}

int adapter_emit_error(const char *message, const char *type, const char *code, int retryable,
                       adapter_emit_fn emit, void *ctx)
{
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_ERROR;
    ci.retryable = retryable;
    if (!message || !message[0])
        message = "the provider reported an error";
    snprintf(ci.error, sizeof(ci.error), "%s", message);
    struct buf b;
    buf_init(&b, 0);
    int rc = server_format_error(&b, type, code, message);
    if (!rc)
        rc = emit(ctx, buf_head(&b), buf_size(&b), &ci);
    buf_free(&b);
    return rc;
}

enum verdict adapter_status_verdict(int status)
{
    if (status == 429)
        return VERDICT_RATE_LIMIT;
    if (status >= 500 || status == 401 || status == 403 || status == 404 || status == 408 ||
        status == 409)
        return VERDICT_RETRY;
    return VERDICT_CLIENT;
}

void adapter_error_out(int status, const char *text, const char *type, const char *code,
                       struct buf *out, char *message, size_t message_size)
{
    char fallback[96];
    if (!type)
        type = status == 401   ? "authentication_error"
               : status == 403 ? "permission_error"
               : status == 404 ? "not_found_error"
               : status == 429 ? "rate_limit_error"
               : status >= 500 ? "server_error"
                               : "invalid_request_error";
    if (text) {
        snprintf(message, message_size, "status %d: %.150s", status, text);
    } else {
        snprintf(message, message_size, "status %d", status);
        snprintf(fallback, sizeof(fallback), "the provider refused the request with status %d",
                 status);
        text = fallback;
    }
    server_format_error(out, type, code, text);
}

/* An image_url part through make->image. */
static cJSON *image_item(const cJSON *part, const struct content_makers *make)
{
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(part, "image_url");
    const cJSON *url = cJSON_IsObject(iu) ? cJSON_GetObjectItemCaseSensitive(iu, "url") : iu;
    if (!cJSON_IsString(url))
        return NULL;
    char mime[64];
    const char *data;
    if (adapter_data_url(url->valuestring, mime, sizeof(mime), &data) == 0)
        return make->image(mime, data);
    if (strncmp(url->valuestring, "https://", 8) == 0 ||
        strncmp(url->valuestring, "http://", 7) == 0)
        return make->image(NULL, url->valuestring);
    return NULL;
}

int adapter_content_items(const cJSON *content, cJSON *items, const struct content_makers *make)
{
    if (!content || cJSON_IsNull(content))
        return 0;
    if (cJSON_IsString(content)) {
        if (content->valuestring[0])
            cJSON_AddItemToArray(items, make->text(content->valuestring));
        return 0;
    }
    if (!cJSON_IsArray(content))
        return UV_EINVAL;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const char *t = cJSON_IsString(type) ? type->valuestring : "";
        int refusal = strcmp(t, "refusal") == 0;
        if (refusal || strcmp(t, "text") == 0) {
            const cJSON *text =
                cJSON_GetObjectItemCaseSensitive(part, refusal ? "refusal" : "text");
            if (!cJSON_IsString(text))
                return UV_EINVAL;
            if (text->valuestring[0])
                cJSON_AddItemToArray(items, make->text(text->valuestring));
        } else if (strcmp(t, "image_url") == 0) {
            cJSON *img = image_item(part, make);
            if (!img)
                return UV_EINVAL;
            cJSON_AddItemToArray(items, img);
        } else {
            return LLMUX_EKIND;
        }
    }
    return 0;
}

int adapter_append_base64(struct buf *b, const void *p, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = p;
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i += 3) {
        unsigned long v = (unsigned long)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned long)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        char q[4] = {t[v >> 18 & 63], t[v >> 12 & 63], i + 1 < n ? t[v >> 6 & 63] : '=',
                     i + 2 < n ? t[v & 63] : '='};
        rc = buf_append(b, q, 4);
    }
    return rc;
}

int adapter_append_segment(struct buf *b, const char *s, size_t n)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~')
            rc = buf_append(b, &s[i], 1);
        else
            rc = buf_printf(b, "%%%02X", c);
    }
    return rc;
}

/* One vector as OpenAI's `embedding`: numbers, or base64 of little-endian float32. */
static cJSON *embedding_json(const cJSON *values, int base64)
{
    if (!base64)
        return cJSON_Duplicate(values, 1);
    struct buf raw, text;
    buf_init(&raw, 0);
    buf_init(&text, 0);
    const cJSON *v;
    cJSON_ArrayForEach(v, values)
    {
        float f = (float)v->valuedouble;
        uint32_t bits;
        memcpy(&bits, &f, 4);
        unsigned char le[4] = {bits & 255, bits >> 8 & 255, bits >> 16 & 255, bits >> 24};
        buf_append(&raw, le, 4);
    }
    int rc = adapter_append_base64(&text, buf_head(&raw), buf_size(&raw));
    if (!rc)
        rc = buf_append(&text, "", 1);
    cJSON *s = rc ? NULL : cJSON_CreateString(text.data);
    buf_free(&raw);
    buf_free(&text);
    return s;
}

int adapter_write_embeddings(struct buf *out, const struct canon_request *req, const char *model,
                             const cJSON *list, const char *key)
{
    cJSON *in = cJSON_ParseWithLength(req->body, req->body_len);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(in, "encoding_format");
    int base64 = cJSON_IsString(fmt) && strcmp(fmt->valuestring, "base64") == 0;
    cJSON_Delete(in);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    int i = 0, rc = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        const cJSON *values = key ? cJSON_GetObjectItemCaseSensitive(item, key) : item;
        const cJSON *v;
        rc = cJSON_IsArray(values) ? 0 : LLMUX_EPROTO;
        cJSON_ArrayForEach(v, values)
        {
            if (!cJSON_IsNumber(v))
                rc = LLMUX_EPROTO;
        }
        if (rc)
            break;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "object", "embedding");
        cJSON_AddNumberToObject(d, "index", i++);
        cJSON_AddItemToObject(d, "embedding", embedding_json(values, base64));
        cJSON_AddItemToArray(data, d);
    }
    cJSON_AddStringToObject(o, "model", model);
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", 0);
    cJSON_AddNumberToObject(u, "total_tokens", 0);
    char *text = rc ? NULL : cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!rc)
        rc = text ? buf_append_str(out, text) : UV_ENOMEM;
    free(text);
    return rc;
}

cJSON *adapter_stop_list(const cJSON *request)
{
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(request, "stop");
    if (cJSON_IsString(stop)) {
        cJSON *list = cJSON_CreateArray();
        cJSON_AddItemToArray(list, cJSON_CreateString(stop->valuestring));
        return list;
    }
    return cJSON_IsArray(stop) && cJSON_GetArraySize(stop) > 0 ? cJSON_Duplicate(stop, 1) : NULL;
}

int adapter_native_relay(struct adapter_stream *s, const char *event, size_t event_len,
                         const char *data, size_t len, const struct chunk_info *ci,
                         adapter_emit_fn emit, void *ctx)
{
    struct buf *frame = &((struct adapter_native *)s->state)->frame;
    buf_reset(frame);
    int rc = event_len ? buf_append_str(frame, "event: ") : 0;
    if (!rc && event_len)
        rc = buf_append(frame, event, event_len);
    if (!rc && event_len)
        rc = buf_append(frame, "\n", 1);
    for (size_t at = 0; !rc && at <= len;) { /* one data line per line of the data */
        const char *nl = memchr(data + at, '\n', len - at);
        size_t n = nl ? (size_t)(nl - (data + at)) : len - at;
        rc = buf_append(frame, "data: ", 6);
        if (!rc)
            rc = buf_append(frame, data + at, n);
        if (!rc)
            rc = buf_append(frame, "\n", 1);
        at += n + 1;
    }
    if (!rc)
        rc = buf_append(frame, "\n", 1);
    return rc ? rc : emit(ctx, buf_head(frame), buf_size(frame), ci);
}

int adapter_native_body(const char *body, size_t len, struct usage *u,
                        void (*read_usage)(const cJSON *us, struct usage *u))
{
    memset(u, 0, sizeof(*u));
    cJSON *us;
    if (adapter_body_usage(body, len, &us) != 0)
        return LLMUX_EPROTO;
    read_usage(us, u);
    cJSON_Delete(us);
    return 0;
}

int adapter_encode_native(const struct provider *p, const char *under, const char *auth_fmt,
                          const char *extra, const char *model, size_t model_len,
                          const struct canon_request *req, struct upstream_request *out)
{
    if (!req->native || req->prefix) { /* a continuation translates */
        adapter_encode_init(out);
        return LLMUX_EKIND;
    }
    struct canon_request n = *req;
    n.body = req->native;
    n.body_len = req->native_len;
    n.model_start = req->native_model_start;
    n.model_end = req->native_model_end;
    char path[512]; /* the three joined without snprintf, which costs ~100 instructions a %s */
    const char *parts[] = {p->base_path, under, req->native_path};
    size_t at = 0;
    for (size_t i = 0; i < 3; i++) {
        size_t len = strnlen(parts[i], sizeof(path) - 1 - at);
        memcpy(path + at, parts[i], len);
        at += len;
    }
    path[at] = 0;
    return adapter_encode_spliced(p, path, auth_fmt, extra, model, model_len, &n, out);
}

int adapter_native_open(struct adapter_stream *s)
{
    struct adapter_native *st = calloc(1, sizeof(*st));
    if (!st)
        return UV_ENOMEM;
    buf_init(&st->frame, 0);
    s->state = st;
    return 0;
}

int adapter_native_finish(struct adapter_stream *s, adapter_emit_fn emit, void *ctx)
{
    return s->done;
}

void adapter_native_close(struct adapter_stream *s)
{
    struct adapter_native *st = s->state;
    if (st)
        buf_free(&st->frame);
    free(st);
    s->state = NULL;
}

cJSON *adapter_member(const char *data, size_t len, const char *key)
{
    size_t vs, ve;
    return json_top_key(data, len, key, &vs, &ve) == 0 ? cJSON_ParseWithLength(data + vs, ve - vs)
                                                       : NULL;
}

int adapter_member_type(const char *data, size_t len, const char *key, const char *const *names,
                        int n)
{
    size_t vs = 0, ve = len, ts, te;
    if ((key && json_top_key(data, len, key, &vs, &ve) != 0) ||
        json_top_key(data + vs, ve - vs, "type", &ts, &te) != 0 || te - ts < 2)
        return -1;
    const char *t = data + vs + ts + 1;
    size_t tl = te - ts - 2;
    for (int i = 0; i < n; i++) {
        if (strlen(names[i]) == tl && memcmp(names[i], t, tl) == 0)
            return i;
    }
    return -1;
}
