/* codec_messages: the Anthropic Messages API on the client's side (POST /v1/messages). See
 * include/llmux/codec.h.
 *
 * Request (codec_messages_request): a Messages body as the canonical chat body, for the kinds
 * that translate (openai, azure, gemini, and anthropic for a continuation):
 *   - `system` (a string or text blocks) -> a system message;
 *   - user/assistant messages; text blocks -> text (a string when the content is text only),
 *     image blocks (base64 or url source) -> image_url parts (a data: URL for base64);
 *     assistant tool_use blocks -> tool_calls (arguments = input serialized); user tool_result
 *     blocks -> `tool` messages before the rest of that user turn (their content's text);
 *     thinking / redacted_thinking blocks are dropped (only Anthropic can take them back);
 *     other block types (document, search_result, server tool results...) -> LLMUX_EKIND;
 *   - tools {name, description, input_schema} -> function tools; server tools (a `type` other
 *     than "custom") -> LLMUX_EKIND; tool_choice auto/any/tool/none -> auto/required/{function}/
 *     none, disable_parallel_tool_use -> parallel_tool_calls false;
 *   - max_tokens, temperature, top_p, stop_sequences -> stop, metadata.user_id -> user, stream
 *     (with stream_options.include_usage, so the usage the client gets is the provider's);
 *     top_k, thinking, service_tier and the other Anthropic-only steering are dropped.
 *
 * Answer: a chat.completion -> a Message (content text and tool_use blocks, stop_reason
 * end_turn / max_tokens / tool_use / refusal, usage with input_tokens excluding cache reads);
 * a stream of chat chunks -> message_start (at the first content, so a preamble never commits),
 * content_block_start / content_block_delta (text_delta, input_json_delta) /
 * content_block_stop per text or tool_use block, then at [DONE] message_delta (stop_reason and
 * the usage) and message_stop. A broken stream ends with `event: error` (never a fake
 * message_stop); errors are {"type":"error","error":{"type","message"}} with Anthropic's types.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/codec.h"
#include "llmux/errors.h"
#include "llmux/json.h"

/* ---- request ---- */

/* The text of a string or of an array's text blocks, appended (sep between blocks). */
static int blocks_text(const cJSON *content, const char *sep, struct buf *out)
{
    if (cJSON_IsString(content))
        return buf_append_str(out, content->valuestring);
    if (!cJSON_IsArray(content))
        return content && !cJSON_IsNull(content) ? UV_EINVAL : 0;
    const cJSON *b;
    int first = 1, rc = 0;
    cJSON_ArrayForEach(b, content)
    {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(b, "text");
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(b, "type"));
        if (!type || strcmp(type, "text") != 0 || !cJSON_IsString(text))
            continue;
        if (!first)
            rc = buf_append_str(out, sep);
        if (!rc)
            rc = buf_append_str(out, text->valuestring);
        first = 0;
        if (rc)
            return rc;
    }
    return 0;
}

/* An image block as an image_url part. */
static cJSON *image_part(const cJSON *block)
{
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(block, "source");
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(src, "type"));
    const char *media = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(src, "media_type"));
    const char *data = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(src, "data"));
    const char *url = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(src, "url"));
    struct buf u;
    buf_init(&u, 0);
    if (type && strcmp(type, "base64") == 0 && media && data)
        buf_printf(&u, "data:%s;base64,%s", media, data);
    else if (type && strcmp(type, "url") == 0 && url)
        buf_append_str(&u, url);
    if (!buf_size(&u) || buf_append(&u, "", 1) != 0) {
        buf_free(&u);
        return NULL;
    }
    cJSON *part = cJSON_CreateObject();
    cJSON_AddStringToObject(part, "type", "image_url");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(part, "image_url"), "url", u.data);
    buf_free(&u);
    return part;
}

static cJSON *text_part(const char *text)
{
    cJSON *part = cJSON_CreateObject();
    cJSON_AddStringToObject(part, "type", "text");
    cJSON_AddStringToObject(part, "text", text);
    return part;
}

/* content parts -> a string when they are all text (any server takes that), else the parts */
static cJSON *chat_content(cJSON *parts)
{
    struct buf text;
    buf_init(&text, 0);
    const cJSON *p;
    cJSON_ArrayForEach(p, parts)
    {
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "text"));
        if (!t) {
            buf_free(&text);
            return parts;
        }
        buf_append_str(&text, t);
    }
    buf_append(&text, "", 1);
    cJSON *s = cJSON_CreateString(text.data ? text.data : "");
    buf_free(&text);
    cJSON_Delete(parts);
    return s;
}

/* A tool_result block as a `tool` message. */
static int tool_message(const cJSON *block, cJSON *messages, char *why, size_t size)
{
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(block, "tool_use_id"));
    if (!id)
        return codec_fail(why, size, UV_EINVAL, "messages: a tool_result block needs a tool_use_id%s",
                    "");
    struct buf text;
    buf_init(&text, 0);
    int rc = blocks_text(cJSON_GetObjectItemCaseSensitive(block, "content"), "\n", &text);
    if (!rc)
        rc = buf_append(&text, "", 1);
    if (rc) {
        buf_free(&text);
        return codec_fail(why, size, UV_EINVAL, "messages: a tool_result's content must be a string "
                                          "or blocks%s", "");
    }
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "tool");
    cJSON_AddStringToObject(m, "tool_call_id", id);
    cJSON_AddStringToObject(m, "content", text.data);
    cJSON_AddItemToArray(messages, m);
    buf_free(&text);
    return 0;
}

/* A tool_use block as a tool call. */
static int tool_call(const cJSON *block, cJSON *calls, char *why, size_t size)
{
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(block, "id"));
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(block, "name"));
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(block, "input");
    if (!id || !name)
        return codec_fail(why, size, UV_EINVAL, "messages: a tool_use block needs an id and a name%s",
                    "");
    char *args = input ? cJSON_PrintUnformatted(input) : strdup("{}");
    if (!args)
        return UV_ENOMEM;
    cJSON_AddItemToArray(calls, adapter_tool_call(-1, id, name, args));
    free(args);
    return 0;
}

/* One Messages message into the chat messages. */
static int add_message(const cJSON *m, cJSON *messages, char *why, size_t size)
{
    const char *role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"));
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    int user = role && strcmp(role, "user") == 0;
    if (!user && !(role && strcmp(role, "assistant") == 0))
        return codec_fail(why, size, UV_EINVAL, "messages: role must be \"user\" or \"assistant\"%s",
                    "");
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "role", role);
    if (cJSON_IsString(content)) {
        cJSON_AddStringToObject(out, "content", content->valuestring);
        cJSON_AddItemToArray(messages, out);
        return 0;
    }
    if (!cJSON_IsArray(content)) {
        cJSON_Delete(out);
        return codec_fail(why, size, UV_EINVAL, "messages: content must be a string or an array of "
                                          "content blocks%s", "");
    }
    cJSON *parts = cJSON_CreateArray();
    cJSON *calls = cJSON_CreateArray();
    int rc = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(b, "type"));
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(b, "text");
        if (!type) {
            rc = codec_fail(why, size, UV_EINVAL, "messages: every content block needs a type%s", "");
        } else if (strcmp(type, "text") == 0 && cJSON_IsString(text)) {
            if (text->valuestring[0])
                cJSON_AddItemToArray(parts, text_part(text->valuestring));
        } else if (strcmp(type, "image") == 0) {
            cJSON *img = image_part(b);
            if (img)
                cJSON_AddItemToArray(parts, img);
            else
                rc = codec_fail(why, size, UV_EINVAL, "messages: an image block needs a base64 or "
                                                "url source%s", "");
        } else if (strcmp(type, "tool_use") == 0 && !user) {
            rc = tool_call(b, calls, why, size);
        } else if (strcmp(type, "tool_result") == 0 && user) {
            rc = tool_message(b, messages, why, size);
        } else if (strcmp(type, "thinking") == 0 || strcmp(type, "redacted_thinking") == 0) {
            continue; /* only Anthropic can take a thinking block back */
        } else {
            rc = codec_fail(why, size, LLMUX_EKIND,
                      "messages: content blocks of type \"%.40s\" can only be sent to "
                      "anthropic providers", type);
        }
        if (rc)
            break;
    }
    int has_parts = cJSON_GetArraySize(parts) > 0, has_calls = cJSON_GetArraySize(calls) > 0;
    if (!rc && (has_parts || has_calls)) {
        if (has_parts)
            cJSON_AddItemToObject(out, "content", chat_content(parts));
        else
            cJSON_AddNullToObject(out, "content");
        if (has_calls)
            cJSON_AddItemToObject(out, "tool_calls", calls);
        cJSON_AddItemToArray(messages, out);
    } else {
        cJSON_Delete(out);
    }
    if (!has_parts || rc)
        cJSON_Delete(parts);
    if (!has_calls || rc)
        cJSON_Delete(calls);
    return rc;
}

static int add_tools(const cJSON *in, cJSON *o, char *why, size_t size)
{
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(in, "tools");
    const cJSON *t;
    if (tools && !cJSON_IsArray(tools))
        return codec_fail(why, size, UV_EINVAL, "tools: must be an array%s", "");
    cJSON *out = cJSON_GetArraySize(tools) > 0 ? cJSON_AddArrayToObject(o, "tools") : NULL;
    cJSON_ArrayForEach(t, tools)
    {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "type"));
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "name"));
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(t, "input_schema");
        if (type && strcmp(type, "custom") != 0)
            return codec_fail(why, size, LLMUX_EKIND,
                        "tools: server tools (type \"%.40s\") can only be served by anthropic "
                        "providers", type);
        if (!name || !cJSON_IsObject(schema))
            return codec_fail(why, size, UV_EINVAL, "tools: a tool needs a name and an "
                                              "input_schema%s", "");
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(f, "function");
        cJSON_AddStringToObject(fn, "name", name);
        const char *desc = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "description"));
        if (desc)
            cJSON_AddStringToObject(fn, "description", desc);
        cJSON_AddItemToObject(fn, "parameters", cJSON_Duplicate(schema, 1));
        cJSON_AddItemToArray(out, f);
    }
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(in, "tool_choice");
    const char *ct = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(choice, "type"));
    const char *cname = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(choice, "name"));
    if (ct && strcmp(ct, "tool") == 0 && cname) {
        cJSON *c = cJSON_AddObjectToObject(o, "tool_choice");
        cJSON_AddStringToObject(c, "type", "function");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(c, "function"), "name", cname);
    } else if (ct) {
        cJSON_AddStringToObject(o, "tool_choice", strcmp(ct, "any") == 0    ? "required"
                                                  : strcmp(ct, "none") == 0 ? "none"
                                                                            : "auto");
    }
    if (out && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(choice, "disable_parallel_tool_use")))
        cJSON_AddFalseToObject(o, "parallel_tool_calls");
    return 0;
}

static void copy_number(const cJSON *in, const char *from, cJSON *o, const char *to)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, from);
    if (cJSON_IsNumber(v))
        cJSON_AddNumberToObject(o, to, v->valuedouble);
}

static int build(const cJSON *in, cJSON *o, char *why, size_t size)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(in, "model");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(in, "messages");
    if (!cJSON_IsString(model) || !cJSON_IsArray(msgs))
        return codec_fail(why, size, UV_EINVAL, "model and messages are required%s", "");
    cJSON_AddStringToObject(o, "model", model->valuestring);
    cJSON *messages = cJSON_AddArrayToObject(o, "messages");
    const cJSON *system = cJSON_GetObjectItemCaseSensitive(in, "system");
    struct buf sys;
    buf_init(&sys, 0);
    int rc = blocks_text(system, "\n\n", &sys);
    if (!rc && buf_size(&sys) && !(rc = buf_append(&sys, "", 1))) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", sys.data);
        cJSON_AddItemToArray(messages, m);
    }
    buf_free(&sys);
    if (rc)
        return codec_fail(why, size, UV_EINVAL, "system: must be a string or an array of text "
                                          "blocks%s", "");
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        if ((rc = add_message(m, messages, why, size)) != 0)
            return rc;
    }
    if ((rc = add_tools(in, o, why, size)) != 0)
        return rc;
    copy_number(in, "max_tokens", o, "max_tokens");
    copy_number(in, "temperature", o, "temperature");
    copy_number(in, "top_p", o, "top_p");
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(in, "stop_sequences");
    if (cJSON_IsArray(stop) && cJSON_GetArraySize(stop) > 0)
        cJSON_AddItemToObject(o, "stop", cJSON_Duplicate(stop, 1));
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(in, "metadata");
    const char *user = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "user_id"));
    if (user)
        cJSON_AddStringToObject(o, "user", user);
    return 0;
}

int codec_messages_request(const char *body, size_t len, struct buf *out, char *why,
                           size_t why_size)
{
    return codec_translate(body, len, build, out, why, why_size);
}

long codec_messages_estimate_tokens(const char *body, size_t len)
{
    /* the text's characters / 4, as tokenizers average on English text and code; images and
     * the JSON around the text are not counted */
    size_t text = 0;
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        if (body[i] == '"' && (i == 0 || body[i - 1] != '\\'))
            in_string = !in_string;
        else if (in_string)
            text++;
    }
    return (long)(text / 4) + 1;
}

/* ---- answers ---- */

static const char *error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: return "overloaded_error";
    case 504: return "timeout_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static int messages_error(int status, const char *message, const char *body, size_t len,
                          struct buf *out)
{
    cJSON *root = message ? NULL : cJSON_ParseWithLength(body, len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    const char *m = message ? message
                            : cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "message"));
    int rc = buf_printf(out, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"",
                        error_type(status));
    if (!m)
        m = "the provider refused the request";
    if (!rc)
        rc = buf_append_json_str(out, m, strlen(m));
    if (!rc)
        rc = buf_append_str(out, "\"}}");
    cJSON_Delete(root);
    return rc;
}

static const char *stop_reason(const char *finish)
{
    if (strcmp(finish, "length") == 0)
        return "max_tokens";
    if (strcmp(finish, "tool_calls") == 0 || strcmp(finish, "function_call") == 0)
        return "tool_use";
    if (strcmp(finish, "content_filter") == 0)
        return "refusal";
    return "end_turn";
}

/* Anthropic's usage members (input excludes cache reads), without braces. */
static int usage_members(struct buf *out, const struct usage *u)
{
    long input = u->prompt_tokens - u->cached_tokens;
    return buf_printf(out,
                      "\"input_tokens\":%ld,\"cache_creation_input_tokens\":0,"
                      "\"cache_read_input_tokens\":%ld,\"output_tokens\":%ld",
                      input > 0 ? input : 0, u->cached_tokens, u->completion_tokens);
}

static int messages_body(const char *body, size_t len, struct buf *out)
{
    cJSON *root;
    const cJSON *choice, *msg;
    if (codec_parse_completion(body, len, &root, &choice, &msg) != 0)
        return LLMUX_EPROTO;
    cJSON *o = cJSON_CreateObject();
    char id[64];
    adapter_new_id(id, sizeof(id), "msg_");
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "type", "message");
    cJSON_AddStringToObject(o, "role", "assistant");
    const char *model = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "model"));
    cJSON_AddStringToObject(o, "model", model ? model : "");
    cJSON *content = cJSON_AddArrayToObject(o, "content");
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "content"));
    if (text && text[0]) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", text);
        cJSON_AddItemToArray(content, b);
    }
    const cJSON *tc;
    cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(msg, "tool_calls"))
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        cJSON *input = adapter_tool_arguments(cJSON_GetObjectItemCaseSensitive(fn, "arguments"));
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "tool_use");
        const char *cid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(tc, "id"));
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fn, "name"));
        cJSON_AddStringToObject(b, "id", cid ? cid : "");
        cJSON_AddStringToObject(b, "name", name ? name : "");
        cJSON_AddItemToObject(b, "input", input ? input : cJSON_CreateObject());
        cJSON_AddItemToArray(content, b);
    }
    const char *finish =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(choice, "finish_reason"));
    cJSON_AddStringToObject(o, "stop_reason", stop_reason(finish ? finish : "stop"));
    cJSON_AddNullToObject(o, "stop_sequence");
    struct usage u;
    memset(&u, 0, sizeof(u));
    adapter_openai_usage(root, &u);
    char *head = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    cJSON_Delete(root);
    if (!head)
        return UV_ENOMEM;
    /* the usage object is appended in Anthropic's member order */
    int rc = buf_append(out, head, strlen(head) - 1);
    free(head);
    if (!rc)
        rc = buf_append_str(out, ",\"usage\":{");
    if (!rc)
        rc = usage_members(out, &u);
    if (!rc)
        rc = buf_append_str(out, "}}");
    return rc;
}

/* ---- streams ---- */


static void message_start(struct codec_stream *s, struct json_span model, struct buf *out)
{
    s->started = 1;
    s->block = -1;
    adapter_new_id(s->id, sizeof(s->id), "msg_");
    adapter_span_str(s->model, sizeof(s->model), model);
    codec_event_open(out, "message_start");
    buf_append_str(out, ",\"message\":{\"id\":\"");
    buf_append_str(out, s->id);
    buf_append_str(out, "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"");
    buf_append_json_str(out, s->model, strlen(s->model));
    buf_append_str(out, "\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
                        "\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}");
    codec_event_close(out);
}

static void block_stop(struct codec_stream *s, struct buf *out)
{
    if (s->block < 0)
        return;
    codec_event_open(out, "content_block_stop");
    buf_printf(out, ",\"index\":%d", s->block);
    codec_event_close(out);
    s->block = -1;
}

/* Open a block: `content_block` is its JSON, without braces. */
static void block_start(struct codec_stream *s, int kind, struct buf *out)
{
    block_stop(s, out);
    s->block = s->next_block++;
    s->block_kind = kind;
    codec_event_open(out, "content_block_start");
    buf_printf(out, ",\"index\":%d,\"content_block\":{", s->block);
}

static void block_delta(struct codec_stream *s, const char *type, const char *key,
                        const char *text, size_t len, struct buf *out)
{
    codec_event_open(out, "content_block_delta");
    buf_append_str(out, ",\"index\":");
    buf_append_uint(out, (unsigned long long)s->block);
    buf_append_str(out, ",\"delta\":{\"type\":\"");
    buf_append_str(out, type);
    buf_append_str(out, "\",\"");
    buf_append_str(out, key);
    buf_append_str(out, "\":\"");
    buf_append_json_str(out, text, len);
    buf_append_str(out, "\"}");
    codec_event_close(out);
}

static void on_text(struct codec_stream *s, const char *text, size_t len, struct buf *out)
{
    if (s->block < 0 || s->block_kind != 0) {
        block_start(s, 0, out);
        buf_append_str(out, "\"type\":\"text\",\"text\":\"\"}");
        codec_event_close(out);
    }
    block_delta(s, "text_delta", "text", text, len, out);
}

static void on_tool_call(struct codec_stream *s, struct json_span tc, struct buf *out)
{
    static const char *const keys[] = {"id", "index", "function"};
    static const char *const fn_keys[] = {"name", "arguments"};
    struct json_span m[3], fn[2];
    struct codec_str id, name, args;
    json_members(tc, keys, 3, m);
    json_members(m[2], fn_keys, 2, fn);
    codec_str(m[0], &id);
    codec_str(fn[0], &name);
    codec_str(fn[1], &args);
    int index = (int)adapter_span_long(m[1]);
    if (id.p || s->block < 0 || s->block_kind != 1 || index != s->tool) {
        block_start(s, 1, out);
        s->tool = index;
        buf_append_str(out, "\"type\":\"tool_use\",\"id\":\"");
        buf_append_json_str(out, id.p ? id.p : "", id.len);
        buf_append_str(out, "\",\"name\":\"");
        buf_append_json_str(out, name.p ? name.p : "", name.len);
        buf_append_str(out, "\",\"input\":{}}");
        codec_event_close(out);
    }
    if (args.len)
        block_delta(s, "input_json_delta", "partial_json", args.p, args.len, out);
    codec_str_free(&id);
    codec_str_free(&name);
    codec_str_free(&args);
}

static void message_end(struct codec_stream *s, const struct usage *total, struct buf *out)
{
    block_stop(s, out);
    const struct usage *u = total && total->known ? total : &s->usage;
    codec_event_open(out, "message_delta");
    buf_append_str(out, ",\"delta\":{\"stop_reason\":\"");
    buf_append_str(out, s->finished ? s->stop : "end_turn");
    buf_append_str(out, "\",\"stop_sequence\":null},\"usage\":{");
    usage_members(out, u);
    if (s->cost[0]) {
        buf_append_str(out, ",");
        buf_append_str(out, s->cost);
    }
    buf_append_str(out, "}");
    codec_event_close(out);
    codec_event_open(out, "message_stop");
    codec_event_close(out);
}

static int messages_stream_chunk(struct codec_stream *s, const char *data, size_t len,
                                 const struct chunk_info *ci, const struct usage *total,
                                 struct buf *out)
{
    struct codec_chunk c;
    if (codec_read_chunk(data, len, ci, &c) != 0)
        return LLMUX_EPROTO;
    if (!s->started)
        message_start(s, c.model, out);
    if (ci->kind == CHUNK_DONE) {
        message_end(s, total, out);
        return 0;
    }
    struct usage u;
    memset(&u, 0, sizeof(u));
    if (adapter_openai_usage_span(c.usage, &u))
        s->usage = u;
    struct codec_str text;
    if (codec_str(c.content, &text) && text.len)
        on_text(s, text.p, text.len, out);
    codec_str_free(&text);
    size_t pos = 0;
    struct json_span tc;
    while (json_next(c.tool_calls, &pos, &tc) == 0)
        on_tool_call(s, tc, out);
    if (json_type(c.finish) == JSON_STRING) {
        char finish[32] = "";
        adapter_span_str(finish, sizeof(finish), c.finish);
        s->finished = 1;
        snprintf(s->stop, sizeof(s->stop), "%s", stop_reason(finish));
        block_stop(s, out);
    }
    return 0;
}

/* The integer after `"index":` at top level of a passthrough event's data; -1 when none. */
static int event_index(const char *data, size_t len)
{
    size_t vs, ve;
    if (json_top_key(data, len, "index", &vs, &ve) != 0)
        return -1;
    return atoi(data + vs);
}

/* One passthrough event "event: NAME\ndata: DATA\n\n" (adapter_anthropic_native's framing). */
static void observe_event(struct codec_stream *s, const char *ev, size_t len)
{
    const char *nl = memchr(ev, '\n', len);
    if (len < 7 || memcmp(ev, "event: ", 7) != 0 || !nl || (size_t)(nl - ev) + 7 > len)
        return;
    const char *name = ev + 7;
    size_t name_len = (size_t)(nl - name);
    const char *data = nl + 7; /* after "\ndata: " */
    size_t data_len = len - (size_t)(data - ev);
#define IS(n) (name_len == sizeof(n) - 1 && memcmp(name, n, name_len) == 0)
    if (IS("message_start")) {
        s->started = 1;
        s->block = -1;
    } else if (IS("content_block_start")) {
        s->block = event_index(data, data_len);
        s->next_block = s->block + 1;
        static const char *const kinds[] = {"\"text\"", "\"tool_use\""};
        size_t vs, ve, ts, te;
        s->block_kind = 2;
        for (int k = 0; k < 2; k++) {
            if (json_top_key(data, data_len, "content_block", &vs, &ve) == 0 &&
                json_top_key(data + vs, ve - vs, "type", &ts, &te) == 0 &&
                te - ts == strlen(kinds[k]) && memcmp(data + vs + ts, kinds[k], te - ts) == 0)
                s->block_kind = k;
        }
    } else if (IS("content_block_stop")) {
        s->block = -1;
    } else if (IS("message_delta")) {
        s->finished = 1;
    }
#undef IS
}

static void messages_observe(struct codec_stream *s, const char *bytes, size_t len)
{
    codec_each_event(s, bytes, len, observe_event);
}

static int messages_stream_error(struct codec_stream *s, int status, const char *message,
                                 struct buf *out)
{
    int rc = buf_append_str(out, "event: error\ndata: ");
    if (!rc)
        rc = messages_error(status, message, NULL, 0, out);
    if (!rc)
        rc = buf_append_str(out, "\n\n");
    return rc;
}

static const char *const forwarded[] = {"anthropic-version", "anthropic-beta", NULL};

static const struct adapter *messages_native_for(const struct provider *p)
{
    return p->kind == PROVIDER_ANTHROPIC ? &adapter_anthropic_native : NULL;
}

const struct client_codec codec_messages = {
    .name = "messages",
    .metrics_endpoint = 3,
    .main_key = "messages",
    .request = codec_messages_request,
    .native_path = "/messages",
    .forward_headers = forwarded, /* anthropic-version first: the native adapter looks there */
    .native_for = messages_native_for,
    .native_continues = 1,
    .ping = "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    .stream_chunk = messages_stream_chunk,
    .observe = messages_observe,
    .stream_error = messages_stream_error,
    .body = messages_body,
    .error = messages_error,
};
