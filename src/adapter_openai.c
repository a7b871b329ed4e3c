/* adapter_openai: the openai kind (OpenAI and every OpenAI-compatible server).
 * See include/llmux/adapter.h. */
#include <cjson/cJSON.h>
#include <string.h>

#include "llmux/adapter.h"

static const char *endpoint_path(enum api_endpoint e)
{
    switch (e) {
    case API_COMPLETIONS:
        return "/completions";
    case API_EMBEDDINGS:
        return "/embeddings";
    default:
        return "/chat/completions";
    }
}

int adapter_encode(const struct provider *p, const char *model, size_t model_len,
                   const struct canon_request *req, struct upstream_request *out)
{
    buf_init(&out->head, 0);
    buf_init(&out->model, 0);
    int rc = buf_append(&out->model, "\"", 1);
    if (!rc)
        rc = buf_append_json_str(&out->model, model, model_len);
    if (!rc)
        rc = buf_append(&out->model, "\"", 1);
    size_t body_len = req->body_len - (req->model_end - req->model_start) + buf_size(&out->model);
    int default_port = p->port == (p->tls ? 443 : 80);
    int v6 = strchr(p->host, ':') != NULL;
    if (!rc)
        rc = buf_printf(&out->head,
                        "POST %s%s HTTP/1.1\r\nhost: %s%s%s",
                        p->base_path, endpoint_path(req->endpoint), v6 ? "[" : "", p->host,
                        v6 ? "]" : "");
    if (!rc && !default_port)
        rc = buf_printf(&out->head, ":%u", p->port);
    if (!rc)
        rc = buf_printf(&out->head,
                        "\r\ncontent-type: application/json\r\naccept: %s\r\n"
                        "user-agent: llmux/" LLMUX_VERSION "\r\nx-request-id: %s\r\n",
                        req->stream ? "text/event-stream" : "application/json", req->request_id);
    if (!rc && p->api_key)
        rc = buf_printf(&out->head, "authorization: Bearer %s\r\n", p->api_key);
    if (!rc)
        rc = buf_printf(&out->head, "content-length: %zu\r\n\r\n", body_len);
    if (rc) {
        upstream_request_free(out);
        return rc;
    }
    out->iov[0] = uv_buf_init(out->head.data, (unsigned)out->head.len);
    out->iov[1] = uv_buf_init((char *)req->body, (unsigned)req->model_start);
    out->iov[2] = uv_buf_init(out->model.data, (unsigned)out->model.len);
    out->iov[3] = uv_buf_init((char *)req->body + req->model_end,
                              (unsigned)(req->body_len - req->model_end));
    out->n = 4;
    return 0;
}

void upstream_request_free(struct upstream_request *r)
{
    buf_free(&r->head);
    buf_free(&r->model);
    r->n = 0;
}

static long json_long(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
}

static int read_usage(const cJSON *root, struct usage *u)
{
    const cJSON *us = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (!cJSON_IsObject(us))
        return 0;
    u->prompt_tokens = json_long(us, "prompt_tokens");
    u->completion_tokens = json_long(us, "completion_tokens");
    u->total_tokens = json_long(us, "total_tokens");
    if (!u->total_tokens)
        u->total_tokens = u->prompt_tokens + u->completion_tokens;
    u->known = 1;
    return 1;
}

static void copy_str(char *dst, size_t size, const cJSON *v)
{
    if (cJSON_IsString(v)) {
        size_t n = strlen(v->valuestring);
        if (n >= size)
            n = size - 1;
        memcpy(dst, v->valuestring, n);
        dst[n] = 0;
    }
}

/* Whether a choice carries anything a client would see. */
static int choice_has_content(const cJSON *choice)
{
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");
    if (fr && !cJSON_IsNull(fr))
        return 1;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(choice, "text");
    if (cJSON_IsString(text) && text->valuestring[0])
        return 1;
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
    if (!cJSON_IsObject(delta))
        return 0;
    static const char *fields[] = {"content", "refusal", "reasoning", "reasoning_content"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(delta, fields[i]);
        if (cJSON_IsString(v) && v->valuestring[0])
            return 1;
    }
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(delta, "tool_calls");
    const cJSON *fc = cJSON_GetObjectItemCaseSensitive(delta, "function_call");
    return (cJSON_IsArray(tc) && cJSON_GetArraySize(tc) > 0) || cJSON_IsObject(fc);
}

void adapter_chunk_info(const char *data, size_t len, struct chunk_info *ci)
{
    memset(ci, 0, sizeof(*ci));
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        ci->kind = CHUNK_DONE;
        return;
    }
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        ci->kind = CHUNK_INVALID;
        return;
    }
    copy_str(ci->id, sizeof(ci->id), cJSON_GetObjectItemCaseSensitive(root, "id"));
    copy_str(ci->model, sizeof(ci->model), cJSON_GetObjectItemCaseSensitive(root, "model"));
    ci->created = (long long)json_long(root, "created");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (err && !cJSON_IsNull(err)) {
        ci->kind = CHUNK_ERROR;
        copy_str(ci->error, sizeof(ci->error), cJSON_GetObjectItemCaseSensitive(err, "message"));
        if (!ci->error[0])
            strcpy(ci->error, "the provider reported an error in the stream");
        cJSON_Delete(root);
        return;
    }
    ci->kind = read_usage(root, &ci->usage) ? CHUNK_CONTENT : CHUNK_PREAMBLE;
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    const cJSON *c;
    cJSON_ArrayForEach(c, choices)
    {
        if (choice_has_content(c))
            ci->kind = CHUNK_CONTENT;
    }
    cJSON_Delete(root);
}

int adapter_response_usage(const char *body, size_t len, struct usage *u)
{
    memset(u, 0, sizeof(*u));
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return -1;
    }
    read_usage(root, u);
    cJSON_Delete(root);
    return 0;
}

int adapter_status_retryable(int status)
{
    /* 401/403/404 from a provider mean this deployment's key or model is wrong, not the
     * client's request: another deployment may well serve it. */
    return status == 401 || status == 403 || status == 404 || status == 408 || status == 409 ||
           status == 429 || status >= 500;
}
