/* gemini.c: mockllm's Google Gemini (AI Studio) wire format: /v1beta/models/{model}:
 * generateContent, :streamGenerateContent?alt=sse, :batchEmbedContents and :embedContent.
 *
 * Every answer, and every stream chunk, is a GenerateContentResponse: candidates[0] with
 * content {role "model", parts}, index, and finishReason on the last one, plus usageMetadata,
 * modelVersion and responseId. Streams are `data:` events framed with CRLF as Google sends
 * them, with no end marker: the stream ends at EOF. A tool call is one functionCall part, sent
 * whole. Errors are {"error":{"code","message","status"}} with Google's status names.
 *
 * Script thought_signature=1 is Gemini 3's function calling: the functionCall part carries a
 * thoughtSignature ("mocksig<n>", n the request's number), and a request is refused (400, the
 * message Gemini 3 gives) when a model content of its current turn (after the last user
 * content with text) has a first functionCall part without one.
 */
#include <string.h>

#include "mockllm.h"

static void json_str(struct buf *b, const char *s, size_t n)
{
    buf_append(b, "\"", 1);
    buf_append_json_str(b, s, n);
    buf_append(b, "\"", 1);
}

/* Gemini 3's check: the first functionCall part of every model content in the current turn
 * (after the last user content with a text part) has its thoughtSignature. Returns 0, or fills
 * e and returns -1. */
static int check_signatures(const cJSON *contents, struct mock_error *e)
{
    int i = 0, from = 0;
    const cJSON *c, *p;
    cJSON_ArrayForEach(c, contents)
    {
        const char *role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "role"));
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(c, "parts"))
        {
            if (role && strcmp(role, "user") == 0 && cJSON_GetObjectItemCaseSensitive(p, "text"))
                from = i + 1;
        }
        i++;
    }
    i = 0;
    cJSON_ArrayForEach(c, contents)
    {
        const char *role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "role"));
        if (i++ < from || !role || strcmp(role, "model") != 0)
            continue;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(c, "parts"))
        {
            const cJSON *call = cJSON_GetObjectItemCaseSensitive(p, "functionCall");
            if (!call)
                continue;
            const char *sig =
                cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "thoughtSignature"));
            if (sig && sig[0])
                break;
            const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(call, "name"));
            e->status = 400;
            snprintf(e->message, sizeof(e->message),
                     "Function call is missing a thought_signature in functionCall parts. This is "
                     "required for tools to work correctly. Additional data, function call "
                     "`default_api:%.40s` , position %d.",
                     name ? name : "", i);
            return -1;
        }
    }
    return 0;
}

static int gemini_read(struct reply *r, const cJSON *body, struct mock_error *e)
{
    snprintf(r->id, sizeof(r->id), "mockresp%llu", r->seq);
    if (r->api == API_EMBEDDINGS) {
        const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(body, "requests");
        r->inputs = r->embed_single ? 1 : cJSON_GetArraySize(reqs);
        return 0;
    }
    const cJSON *contents = cJSON_GetObjectItemCaseSensitive(body, "contents");
    if (!cJSON_IsArray(contents)) {
        e->status = 400;
        snprintf(e->message, sizeof(e->message),
                 "* GenerateContentRequest.contents: contents is not specified");
        return -1;
    }
    if (r->s.thought_signature && check_signatures(contents, e))
        return -1;
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(body, "generationConfig");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(config, "maxOutputTokens");
    if (cJSON_IsNumber(mt))
        r->max_tokens = mt->valueint > 0 ? mt->valueint : 0;
    struct buf text;
    buf_init(&text, 0);
    int how = mock_find_continuation(contents, "model", &text);
    if (how == 2 || (how == 1 && r->s.prefill))
        mock_continue_from(r, buf_head(&text), buf_size(&text));
    buf_free(&text);
    return 0;
}

static const char *status_name(int status)
{
    switch (status) {
    case 400: return "INVALID_ARGUMENT";
    case 401: return "UNAUTHENTICATED";
    case 403: return "PERMISSION_DENIED";
    case 404: return "NOT_FOUND";
    case 409: return "ABORTED";
    case 429: return "RESOURCE_EXHAUSTED";
    case 499: return "CANCELLED";
    case 503: return "UNAVAILABLE";
    case 504: return "DEADLINE_EXCEEDED";
    default: return status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION";
    }
}

static void gemini_error_body(const struct reply *r, const struct mock_error *e, struct buf *out)
{
    const char *status = e->type ? e->type : status_name(e->status);
    buf_printf(out, "{\"error\":{\"code\":%d,\"message\":", e->status);
    json_str(out, e->message, strlen(e->message));
    buf_append_str(out, ",\"status\":");
    json_str(out, status, strlen(status));
    if (e->status == 429 && r->s.retry_after > 0)
        buf_printf(out,
                   ",\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
                   "\"retryDelay\":\"%ds\"}]",
                   r->s.retry_after);
    buf_append_str(out, "}}");
}

static void gemini_context_error(const struct reply *r, int m, int n, struct mock_error *e)
{
    e->status = 400;
    snprintf(e->message, sizeof(e->message),
             "The input token count (%d) exceeds the maximum number of tokens allowed (%d).", m, n);
}

/* A GenerateContentResponse whose one part carries `text` (a tool call: the arguments);
 * `last`: with finishReason; `done` tokens generated so far. */
static void response(const struct reply *r, const char *text, size_t len, int last, int done,
                     struct buf *b)
{
    buf_append_str(b, "{\"candidates\":[{\"content\":{\"parts\":[");
    if (mock_is_tool(r)) {
        buf_append_str(b, "{\"functionCall\":{\"name\":");
        json_str(b, r->s.tool, strlen(r->s.tool));
        buf_printf(b, ",\"args\":%.*s}", (int)len, text);
        if (r->s.thought_signature) /* a sibling of functionCall, as Gemini sends it */
            buf_printf(b, ",\"thoughtSignature\":\"mocksig%llu\"", r->seq);
        buf_append_str(b, "}");
    } else {
        buf_append_str(b, "{\"text\":");
        json_str(b, text, len);
        buf_append_str(b, "}");
    }
    buf_append_str(b, "],\"role\":\"model\"}");
    if (last)
        buf_printf(b, ",\"finishReason\":\"%s\"", r->capped ? "MAX_TOKENS" : "STOP");
    buf_printf(b,
               ",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":%d,"
               "\"candidatesTokenCount\":%d,\"totalTokenCount\":%d,"
               "\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":%d}]},"
               "\"modelVersion\":",
               r->prompt_tokens, done, r->prompt_tokens + done, r->prompt_tokens);
    json_str(b, r->model, strlen(r->model));
    buf_printf(b, ",\"responseId\":\"%s\"}", r->id);
}

static void gemini_full(const struct reply *r, struct buf *b)
{
    if (r->api == API_EMBEDDINGS) {
        buf_append_str(b, r->embed_single ? "{\"embedding\":" : "{\"embeddings\":[");
        for (int i = 0; i < r->inputs; i++) {
            buf_append_str(b, i ? ",{\"values\":[" : "{\"values\":[");
            mock_embedding(i, b);
            buf_append_str(b, "]}");
        }
        buf_append_str(b, r->embed_single ? "}" : "]}");
        return;
    }
    struct buf t;
    buf_init(&t, 0);
    mock_answer_text(r, &t);
    response(r, buf_head(&t), buf_size(&t), 1, r->pieces, b);
    buf_free(&t);
}

static void gemini_stream_head(struct reply *r)
{
    /* Gemini sends nothing before the first content */
}

static void gemini_stream_piece(struct reply *r, int i)
{
    struct buf t, b;
    buf_init(&t, 0);
    buf_init(&b, 0);
    mock_piece_text(r, i, &t);
    response(r, buf_head(&t), buf_size(&t), i == r->pieces - 1, i + 1, &b);
    mock_sse(r, NULL, buf_head(&b), buf_size(&b));
    buf_free(&t);
    buf_free(&b);
}

static void gemini_stream_end(struct reply *r)
{
    if (r->pieces > 0)
        return; /* the last piece carried finishReason; EOF ends the stream */
    struct buf b;
    buf_init(&b, 0);
    response(r, "", 0, 1, 0, &b);
    mock_sse(r, NULL, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

static void gemini_stream_error(struct reply *r, const struct mock_error *e)
{
    struct buf b;
    buf_init(&b, 0);
    gemini_error_body(r, e, &b);
    mock_sse(r, NULL, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

const struct wire wire_gemini = {
    .read = gemini_read,
    .error_body = gemini_error_body,
    .context_error = gemini_context_error,
    .full = gemini_full,
    .stream_head = gemini_stream_head,
    .stream_piece = gemini_stream_piece,
    .stream_end = gemini_stream_end,
    .stream_error = gemini_stream_error,
    .stream_error_status = 503,
    .garbage_body = "{\"candidates\":[{\"content\":",
    .garbage_event = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\r\n\r\n",
    .sse_eol = "\r\n",
    .tool_in_one_piece = 1,
};
