/* adapter_openai: the openai kind (OpenAI and every OpenAI-compatible server) and the azure
 * kind (the same shapes behind a deployment URL, an api-version and an api-key header).
 *
 * Requests are spliced, not re-encoded: the body goes out as the client sent it, with the
 * `model` value replaced (an iovec per piece). Only a
 * continuation re-encodes, since it adds messages. Stream events are forwarded byte for byte
 * after being classified. See include/llmux/adapter.h.
 */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/adapter.h"
#include "llmux/errors.h"
#include "llmux/json.h"

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

/* The body pieces: the client's body with the model value replaced by out->model. Appends
 * to out->iov from index out->n; returns the body length. */
static size_t splice_body(const struct canon_request *req, struct upstream_request *out)
{
    out->iov[out->n++] = uv_buf_init((char *)req->body, (unsigned)req->model_start);
    out->iov[out->n++] = uv_buf_init(out->model.data, (unsigned)out->model.len);
    out->iov[out->n++] = uv_buf_init((char *)req->body + req->model_end,
                                     (unsigned)(req->body_len - req->model_end));
    return req->body_len - (req->model_end - req->model_start) + out->model.len;
}

/* A continuation: the spliced body re-encoded with the delivered text appended. */
static int encode_continuation(const struct canon_request *req, struct upstream_request *out)
{
    struct buf flat;
    buf_init(&flat, 0);
    unsigned first = out->n;
    splice_body(req, out);
    for (unsigned i = first; i < out->n; i++)
        buf_append(&flat, out->iov[i].base, out->iov[i].len);
    out->n = first;
    cJSON *root = cJSON_ParseWithLength(buf_head(&flat), buf_size(&flat));
    buf_free(&flat);
    if (!root)
        return UV_ENOMEM;
    int rc = 0;
    char *prefix = strndup(req->prefix, req->prefix_len);
    cJSON *messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
    cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!prefix) {
        rc = UV_ENOMEM;
    } else if (req->endpoint == API_CHAT && cJSON_IsArray(messages)) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", prefix);
        cJSON_AddItemToArray(messages, m);
        if (!req->prefill) {
            m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "user");
            cJSON_AddStringToObject(m, "content", ADAPTER_CONTINUE_INSTRUCTION);
            cJSON_AddItemToArray(messages, m);
        }
    } else if (req->endpoint == API_COMPLETIONS && cJSON_IsString(prompt)) {
        size_t n = strlen(prompt->valuestring);
        char *joined = malloc(n + req->prefix_len + 1);
        if (joined) {
            memcpy(joined, prompt->valuestring, n);
            memcpy(joined + n, prefix, req->prefix_len + 1);
            cJSON_SetValuestring(prompt, joined);
            free(joined);
        } else {
            rc = UV_ENOMEM;
        }
    } else {
        rc = LLMUX_EKIND;
    }
    free(prefix);
    char *text = rc ? NULL : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!rc && !text)
        rc = UV_ENOMEM;
    if (!rc)
        rc = buf_append_str(&out->body, text);
    free(text);
    if (!rc) {
        out->iov[out->n++] =
            uv_buf_init((char *)buf_head(&out->body), (unsigned)buf_size(&out->body));
    }
    return rc;
}

int adapter_encode_spliced(const struct provider *p, const char *path, const char *auth_fmt,
                           const char *extra_lines, const char *model, size_t model_len,
                           const struct canon_request *req, struct upstream_request *out)
{
    memset(out, 0, sizeof(*out));
    buf_init(&out->head, 0);
    buf_init(&out->body, 0);
    buf_init(&out->model, 0);
    int rc = buf_append(&out->model, "\"", 1);
    if (!rc)
        rc = buf_append_json_str(&out->model, model, model_len);
    if (!rc)
        rc = buf_append(&out->model, "\"", 1);
    out->n = 1; /* iov[0] is the head, filled last */
    size_t body_len = 0;
    if (!rc && req->prefix) {
        rc = encode_continuation(req, out);
        body_len = buf_size(&out->body);
    } else if (!rc) {
        body_len = splice_body(req, out);
    }
    struct buf extra; /* the key's header, sized from the key */
    buf_init(&extra, 0);
    if (!rc && p->api_key)
        rc = buf_printf(&extra, auth_fmt, p->api_key);
    if (!rc) /* with its NUL: the header lines are one string */
        rc = buf_append(&extra, extra_lines, strlen(extra_lines) + 1);
    if (!rc)
        rc = adapter_write_head(&out->head, p, path, req, buf_head(&extra), body_len);
    if (extra.data)
        explicit_bzero(extra.data, extra.cap); /* the key */
    buf_free(&extra);
    if (rc) {
        upstream_request_free(out);
        return rc;
    }
    out->iov[0] = uv_buf_init(out->head.data, (unsigned)out->head.len);
    return 0;
}

static int openai_encode(const struct provider *p, const char *model, size_t model_len,
                         const struct canon_request *req, struct upstream_request *out)
{
    char path[512];
    snprintf(path, sizeof(path), "%s%s", p->base_path, endpoint_path(req->endpoint));
    return adapter_encode_spliced(p, path, "authorization: Bearer %s\r\n", "", model, model_len,
                                  req, out);
}

static int azure_encode(const struct provider *p, const char *model, size_t model_len,
                        const struct canon_request *req, struct upstream_request *out)
{
    struct buf path;
    buf_init(&path, 0);
    int rc = buf_printf(&path, "%s/openai/deployments/", p->base_path);
    for (size_t i = 0; !rc && i < model_len; i++) { /* a deployment name is a path segment */
        unsigned char c = (unsigned char)model[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.')
            rc = buf_append(&path, &model[i], 1);
        else
            rc = buf_printf(&path, "%%%02X", c);
    }
    if (!rc)
        rc = buf_printf(&path, "%s?api-version=%s", endpoint_path(req->endpoint), p->api_version);
    if (!rc)
        rc = buf_append(&path, "", 1);
    if (!rc)
        rc = adapter_encode_spliced(p, buf_head(&path), "api-key: %s\r\n", "", model, model_len,
                                    req, out);
    buf_free(&path);
    return rc;
}

/* A number as cJSON's valueint holds it: clamped to int. */
static int clamp_int(double d)
{
    return d >= INT_MAX ? INT_MAX : d <= (double)INT_MIN ? INT_MIN : (int)d;
}

/* A string member whose decoded text is not empty (cJSON's valuestring[0]: a leading \u0000
 * counts as empty). Spans here come from a validated chunk. */
static int nonempty_string(struct json_span v)
{
    return json_type(v) == JSON_STRING && v.n > 2 && !(v.n >= 8 && memcmp(v.s, "\"\\u0000", 7) == 0);
}

/* The per-stream state: where a content text with escapes is decoded (allocated with the first
 * such text, reused for every later one). */
struct openai_stream {
    struct buf text;
};

/* Point ci->text at the decoded text of the string v: in place when it has no escapes, else
 * decoded into the stream's buffer; up to a decoded NUL, as a C string would be. */
static int set_text(struct adapter_stream *s, struct json_span v, struct chunk_info *ci)
{
    if (json_string_raw(v, &ci->text, &ci->text_len) == 0)
        return 0;
    struct openai_stream *st = s->state;
    if (!st) {
        st = s->state = calloc(1, sizeof(*st));
        if (!st)
            return UV_ENOMEM;
        buf_init(&st->text, 0);
    }
    return adapter_span_text(&st->text, v, &ci->text, &ci->text_len);
}

/* A choice's members read, in the order of its spans in read_choice. */
enum { C_FINISH_REASON, C_TEXT, C_DELTA, C_COUNT };
static const char *const choice_keys[C_COUNT] = {"finish_reason", "text", "delta"};

/* Fill ci from one choice's members c; returns whether it carries anything a client would see
 * (or a negative code when out of memory). */
static int read_choice(struct adapter_stream *s, const struct json_span *c, struct chunk_info *ci,
                       int first)
{
    static const char *const delta_keys[] = {"content",           "refusal",    "reasoning",
                                             "reasoning_content", "tool_calls", "function_call"};
    struct json_span d[6];
    int seen = 0;
    json_members(c[C_DELTA], delta_keys, 6, d);
    enum json_type fr = json_type(c[C_FINISH_REASON]);
    if (fr != JSON_ABSENT && fr != JSON_NULL)
        ci->finish = seen = 1;
    if (nonempty_string(c[C_TEXT]) || nonempty_string(d[0])) {
        int rc = first ? set_text(s, nonempty_string(c[C_TEXT]) ? c[C_TEXT] : d[0], ci) : 0;
        if (rc)
            return rc;
        seen = 1;
    }
    for (size_t i = 1; i <= 3; i++) { /* refusal, reasoning, reasoning_content */
        if (nonempty_string(d[i]))
            seen = 1;
    }
    size_t pos = 0;
    struct json_span call;
    if ((json_type(d[4]) == JSON_ARRAY && json_next(d[4], &pos, &call) == 0) ||
        json_type(d[5]) == JSON_OBJECT)
        ci->tool_call = seen = 1;
    return seen;
}

static int openai_stream_open(struct adapter_stream *s)
{
    return 0;
}

/* The chunk's members the exchange reads, in the order of the spans below. */
enum { M_ID, M_MODEL, M_CREATED, M_ERROR, M_USAGE, M_CHOICES, M_COUNT };
static const char *const chunk_keys[M_COUNT] = {"id",    "model", "created",
                                                "error", "usage", "choices"};

/* Classified by scanning the chunk in place (src/json.c): no tree, no copy of its strings, no
 * allocation (unless a content text has escapes, decoded into the stream's buffer). */
static int openai_stream_event(struct adapter_stream *s, const char *event, size_t event_len,
                               const char *data, size_t len, adapter_emit_fn emit, void *ctx)
{
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        s->done = 1;
        ci.kind = CHUNK_DONE;
        return emit(ctx, data, len, &ci);
    }
    struct json_span m[M_COUNT];
    if (json_members(json_text(data, len), chunk_keys, M_COUNT, m) != 0)
        return LLMUX_EPROTO;
    adapter_span_str(ci.id, sizeof(ci.id), m[M_ID]);
    adapter_span_str(ci.model, sizeof(ci.model), m[M_MODEL]);
    ci.created = adapter_span_long(m[M_CREATED]);
    enum json_type et = json_type(m[M_ERROR]);
    if (et != JSON_ABSENT && et != JSON_NULL) {
        ci.kind = CHUNK_ERROR;
        adapter_span_str(ci.error, sizeof(ci.error), json_get(m[M_ERROR], "message"));
        if (!ci.error[0])
            strcpy(ci.error, "the provider reported an error in the stream");
        double code;
        ci.retryable = json_number(json_get(m[M_ERROR], "code"), &code) == 0
                           ? clamp_int(code) == 429 || clamp_int(code) >= 500
                           : 1;
    } else {
        ci.kind = adapter_openai_usage_span(m[M_USAGE], &ci.usage) ? CHUNK_CONTENT
                                                                   : CHUNK_PREAMBLE;
        size_t pos = 0;
        struct json_span c[C_COUNT]; /* a choice that is not an object: nothing found */
        for (int first = 1; json_next_members(m[M_CHOICES], &pos, choice_keys, C_COUNT, c) == 0;
             first = 0) {
            int seen = read_choice(s, c, &ci, first);
            if (seen < 0)
                return seen;
            if (seen)
                ci.kind = CHUNK_CONTENT;
        }
    }
    return emit(ctx, data, len, &ci);
}

static int openai_stream_finish(struct adapter_stream *s, adapter_emit_fn emit, void *ctx)
{
    return s->done;
}

static void openai_stream_close(struct adapter_stream *s)
{
    struct openai_stream *st = s->state;
    if (st)
        buf_free(&st->text);
    free(st);
    s->state = NULL;
}

int adapter_body_usage(const char *body, size_t len, cJSON **usage)
{
    size_t pos = 0;
    struct json_member m, found = {0};
    int rc;
    *usage = NULL;
    while ((rc = json_member_next(body, len, &pos, &m)) == 0) {
        if (!found.key && m.key_len == 5 && memcmp(m.key, "usage", 5) == 0)
            found = m;
    }
    if (rc != 1 || !json_object_rest_empty(body, len, pos))
        return LLMUX_EPROTO;
    if (found.key)
        *usage = cJSON_ParseWithLength(body + found.vstart, found.vend - found.vstart);
    return 0;
}

static int openai_decode_body(const struct canon_request *req, const char *model,
                              const char *body, size_t len, struct buf *out, struct usage *u)
{
    /* One pass validates the answer and finds `usage`; only that small object is parsed (the
     * body goes to the client as it came). */
    memset(u, 0, sizeof(*u));
    cJSON *value;
    if (adapter_body_usage(body, len, &value) != 0)
        return LLMUX_EPROTO;
    cJSON *root = value ? cJSON_CreateObject() : NULL;
    if (root) {
        cJSON_AddItemToObject(root, "usage", value);
        adapter_openai_usage(root, u);
    }
    cJSON_Delete(root ? root : value);
    return 0;
}

/* Whether a provider message says the prompt is over the model's context window. */
static int says_context_length(const char *code, const char *message)
{
    if (code && (strcmp(code, "context_length_exceeded") == 0 ||
                 strcmp(code, "string_above_max_length") == 0))
        return 1;
    static const char *const phrases[] = {"context length", "context window", "maximum context",
                                          "prompt is too long", "too many tokens"};
    for (size_t i = 0; message && i < sizeof(phrases) / sizeof(phrases[0]); i++) {
        if (strcasestr(message, phrases[i]))
            return 1;
    }
    return 0;
}

static enum verdict openai_decode_error(int status, const char *body, size_t len,
                                        struct buf *out, char *message, size_t message_size)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
    const char *text = cJSON_IsString(msg) ? msg->valuestring : NULL;
    enum verdict v = adapter_status_verdict(status);
    if (v == VERDICT_CLIENT && (status == 400 || status == 413 || status == 422) &&
        says_context_length(cJSON_IsString(code) ? code->valuestring : NULL, text))
        v = VERDICT_CONTEXT_LENGTH;
    if (cJSON_IsObject(err)) /* already OpenAI's shape: the body goes to the client as it is */
        snprintf(message, message_size, "status %d: %.150s", status, text ? text : "(no message)");
    else
        adapter_error_out(status, NULL, NULL, NULL, out, message, message_size);
    cJSON_Delete(root);
    return v;
}

/* Both kinds speak OpenAI's shapes; only the request URL and key header differ. */
#define OPENAI_SHAPES                                                                              \
    .prefill = 0, .stream_open = openai_stream_open, .stream_event = openai_stream_event,         \
    .stream_finish = openai_stream_finish, .stream_close = openai_stream_close,                   \
    .decode_body = openai_decode_body, .decode_error = openai_decode_error

const struct adapter adapter_openai = {.kind = "openai", .encode = openai_encode, OPENAI_SHAPES};
const struct adapter adapter_azure = {.kind = "azure", .encode = azure_encode, OPENAI_SHAPES};
