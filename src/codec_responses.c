/* codec_responses: the OpenAI Responses API on the client's side (POST /v1/responses), for
 * Codex, `client.responses.create` and the Vercel AI SDK's default OpenAI provider. See
 * include/llmux/codec.h. Every provider kind is reached by translating to canonical chat.
 *
 * Request (codec_responses_request), the Responses body as a chat body:
 *   - `instructions` -> a system message first; `input` a string -> one user message;
 *   - `input` items: messages (with or without "type":"message") of role user, assistant,
 *     system or developer (-> system), content a string or parts: input_text / output_text /
 *     refusal -> text, input_image with an image_url -> an image_url part; function_call ->
 *     a tool call of the assistant message before it (or a new one); function_call_output ->
 *     a `tool` message (its text); reasoning items are dropped (only OpenAI can read them
 *     back); item_reference needs stored responses (400), other item types (local_shell_call,
 *     custom_tool_call, web_search_call...) only OpenAI's service runs (LLMUX_EKIND);
 *   - function tools (flat: name, description, parameters, strict) -> chat's nested function
 *     tools; hosted tool types -> LLMUX_EKIND naming the type; tool_choice (strings, a
 *     function); parallel_tool_calls (with tools only, as chat wants);
 *   - max_output_tokens -> max_tokens, temperature, top_p, user, reasoning.effort ->
 *     reasoning_effort (openai and azure forward it; the kinds that re-encode drop it),
 *     text.format json_schema / json_object -> response_format; stream (with
 *     stream_options.include_usage, so response.completed carries the provider's usage);
 *   - store, include, prompt_cache_key, safety_identifier, service_tier, truncation,
 *     metadata, text.verbosity and other steering of OpenAI's own service are dropped;
 *     previous_response_id and conversation get a 400: llmux keeps no responses.
 *
 * Answer: a chat.completion -> a Response object (id resp_..., status completed, or
 * incomplete with incomplete_details.reason max_output_tokens / content_filter; output: a
 * message item with one output_text part, then function_call items; usage with input and
 * output token details). A stream of chat chunks -> the Responses event lifecycle, each event
 * `event: TYPE` + data with `type` and `sequence_number` (0, 1, 2...): response.created and
 * response.in_progress (at the first content, so a preamble never commits), per message item
 * output_item.added / content_part.added / output_text.delta... / output_text.done /
 * content_part.done / output_item.done, per function call output_item.added /
 * function_call_arguments.delta... / .done / output_item.done, and at [DONE]
 * response.completed (or response.incomplete) with the whole output and the usage. A stream
 * that breaks after commit ends with response.failed (status failed, error {code, message}),
 * never a response.completed. Keep-alive before commit: SSE comments.
 */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmux/codec.h"
#include "llmux/errors.h"
#include "llmux/json.h"

#define MAX_OUTPUT (8u << 20) /* the output kept for response.completed */

/* ---- request ---- */

static const char *str_of(const cJSON *o, const char *key)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static int is(const char *s, const char *want)
{
    return s && strcmp(s, want) == 0;
}

/* A content part of a message item into the chat parts. */
static int add_part(const cJSON *p, cJSON *parts, char *why, size_t size)
{
    const char *type = str_of(p, "type");
    const char *text = str_of(p, is(type, "refusal") ? "refusal" : "text");
    if (is(type, "input_text") || is(type, "output_text") || is(type, "refusal")) {
        if (!text)
            return codec_fail(why, size, UV_EINVAL, "input: a %s part needs its text", type);
        cJSON *part = cJSON_CreateObject();
        cJSON_AddStringToObject(part, "type", "text");
        cJSON_AddStringToObject(part, "text", text);
        cJSON_AddItemToArray(parts, part);
        return 0;
    }
    if (is(type, "input_image")) {
        const char *url = str_of(p, "image_url"), *detail = str_of(p, "detail");
        if (!url)
            return codec_fail(why, size, UV_EINVAL,
                        "input: an input_image needs an image_url (a file_id needs OpenAI's "
                        "file storage)%s", "");
        cJSON *part = cJSON_CreateObject();
        cJSON_AddStringToObject(part, "type", "image_url");
        cJSON *iu = cJSON_AddObjectToObject(part, "image_url");
        cJSON_AddStringToObject(iu, "url", url);
        if (detail && !is(detail, "auto"))
            cJSON_AddStringToObject(iu, "detail", detail);
        cJSON_AddItemToArray(parts, part);
        return 0;
    }
    if (!type)
        return codec_fail(why, size, UV_EINVAL, "input: every content part needs a type%s", "");
    return codec_fail(why, size, LLMUX_EKIND, "input: content parts of type \"%.40s\" cannot be "
                                        "translated for this provider", type);
}

/* Chat content of a message item's content (a string or parts): a string when it is text
 * only (any server takes that), else the parts. NULL with the reason in why. */
static cJSON *item_content(const cJSON *content, int *rc, char *why, size_t size)
{
    if (cJSON_IsString(content))
        return cJSON_CreateString(content->valuestring);
    if (!cJSON_IsArray(content)) {
        *rc = codec_fail(why, size, UV_EINVAL, "input: a message's content must be a string or an "
                                         "array of parts%s", "");
        return NULL;
    }
    cJSON *parts = cJSON_CreateArray();
    const cJSON *p;
    struct buf text;
    buf_init(&text, 0);
    int only_text = 1;
    cJSON_ArrayForEach(p, content)
    {
        if ((*rc = add_part(p, parts, why, size)) != 0)
            break;
    }
    cJSON_ArrayForEach(p, parts)
    {
        const char *t = str_of(p, "text");
        only_text &= t != NULL;
        if (t && buf_size(&text))
            buf_append(&text, "\n", 1);
        if (t)
            buf_append_str(&text, t);
    }
    cJSON *out = parts;
    if (*rc) {
        cJSON_Delete(parts);
        out = NULL;
    } else if (only_text) {
        buf_append(&text, "", 1);
        out = cJSON_CreateString(buf_head(&text));
        cJSON_Delete(parts);
    }
    buf_free(&text);
    return out;
}

/* The text of a function_call_output's output (a string or input_text parts). */
static int tool_output(const cJSON *output, struct buf *text, char *why, size_t size)
{
    if (cJSON_IsString(output))
        return buf_append_str(text, output->valuestring);
    if (!cJSON_IsArray(output))
        return codec_fail(why, size, UV_EINVAL, "input: a function_call_output needs an output%s", "");
    const cJSON *p;
    cJSON_ArrayForEach(p, output)
    {
        const char *type = str_of(p, "type"), *t = str_of(p, "text");
        if (!is(type, "input_text") || !t)
            return codec_fail(why, size, LLMUX_EKIND, "input: function_call_output parts of type "
                                                "\"%.40s\" cannot be translated for this "
                                                "provider", type ? type : "?");
        if (buf_size(text))
            buf_append(text, "\n", 1);
        buf_append_str(text, t);
    }
    return 0;
}

static cJSON *chat_message(const char *role)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    return m;
}

/* A function_call item as a tool call of the assistant message that precedes it. */
static int add_call(const cJSON *item, cJSON *messages, char *why, size_t size)
{
    const char *call_id = str_of(item, "call_id"), *name = str_of(item, "name");
    const char *args = str_of(item, "arguments");
    if (!call_id || !name || !args)
        return codec_fail(why, size, UV_EINVAL, "input: a function_call needs a call_id, a name and "
                                          "arguments%s", "");
    cJSON *last = cJSON_GetArrayItem(messages, cJSON_GetArraySize(messages) - 1);
    if (!is(str_of(last, "role"), "assistant")) {
        last = chat_message("assistant");
        cJSON_AddNullToObject(last, "content");
        cJSON_AddItemToArray(messages, last);
    }
    cJSON *calls = cJSON_GetObjectItemCaseSensitive(last, "tool_calls");
    if (!calls)
        calls = cJSON_AddArrayToObject(last, "tool_calls");
    cJSON_AddItemToArray(calls, adapter_tool_call(-1, call_id, name, args));
    return 0;
}

/* One input item into the chat messages. */
static int add_item(const cJSON *item, cJSON *messages, char *why, size_t size)
{
    const char *type = str_of(item, "type"), *role = str_of(item, "role");
    if (!cJSON_IsObject(item))
        return codec_fail(why, size, UV_EINVAL, "input: must be a string or an array of items%s", "");
    if (!type || is(type, "message")) {
        int assistant = is(role, "assistant");
        if (!assistant && !is(role, "user") && !is(role, "system") && !is(role, "developer"))
            return codec_fail(why, size, UV_EINVAL, "input: a message's role must be user, assistant, "
                                              "system or developer%s", "");
        int rc = 0;
        cJSON *content = item_content(cJSON_GetObjectItemCaseSensitive(item, "content"), &rc,
                                      why, size);
        if (!content)
            return rc;
        cJSON *m = chat_message(is(role, "developer") ? "system" : role);
        cJSON_AddItemToObject(m, "content", content);
        cJSON_AddItemToArray(messages, m);
        return 0;
    }
    if (is(type, "function_call"))
        return add_call(item, messages, why, size);
    if (is(type, "function_call_output")) {
        const char *call_id = str_of(item, "call_id");
        if (!call_id)
            return codec_fail(why, size, UV_EINVAL, "input: a function_call_output needs a call_id%s",
                        "");
        struct buf text;
        buf_init(&text, 0);
        int rc = tool_output(cJSON_GetObjectItemCaseSensitive(item, "output"), &text, why, size);
        if (!rc && !(rc = buf_append(&text, "", 1))) {
            cJSON *m = chat_message("tool");
            cJSON_AddStringToObject(m, "tool_call_id", call_id);
            cJSON_AddStringToObject(m, "content", buf_head(&text));
            cJSON_AddItemToArray(messages, m);
        }
        buf_free(&text);
        return rc;
    }
    if (is(type, "reasoning"))
        return 0; /* only OpenAI can read its reasoning (encrypted or not) back */
    if (is(type, "item_reference"))
        return codec_fail(why, size, UV_EINVAL,
                    "input: item_reference needs stored responses, and llmux is stateless: "
                    "send every item in full (Vercel AI SDK: providerOptions.openai.store = "
                    "false)%s", "");
    return codec_fail(why, size, LLMUX_EKIND, "input: items of type \"%.40s\" cannot be translated "
                                        "for this provider", type);
}

static int add_tools(const cJSON *in, cJSON *o, char *why, size_t size)
{
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(in, "tools"), *t;
    if (tools && !cJSON_IsArray(tools) && !cJSON_IsNull(tools))
        return codec_fail(why, size, UV_EINVAL, "tools: must be an array%s", "");
    int n = cJSON_GetArraySize(tools);
    cJSON *out = n > 0 ? cJSON_AddArrayToObject(o, "tools") : NULL;
    cJSON_ArrayForEach(t, tools)
    {
        const char *type = str_of(t, "type"), *name = str_of(t, "name");
        if (!is(type, "function"))
            return codec_fail(why, size, LLMUX_EKIND,
                        "tools: tools of type \"%.40s\" run in OpenAI's service and cannot be "
                        "translated (function tools can)", type ? type : "?");
        if (!name)
            return codec_fail(why, size, UV_EINVAL, "tools: a function tool needs a name%s", "");
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "type", "function");
        cJSON *fn = cJSON_AddObjectToObject(f, "function");
        cJSON_AddStringToObject(fn, "name", name);
        static const char *const copied[] = {"description", "parameters", "strict"};
        for (size_t i = 0; i < 3; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, copied[i]);
            if (v && !cJSON_IsNull(v))
                cJSON_AddItemToObject(fn, copied[i], cJSON_Duplicate(v, 1));
        }
        cJSON_AddItemToArray(out, f);
    }
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(in, "tool_choice");
    const char *ct = str_of(choice, "type");
    if (cJSON_IsString(choice)) {
        cJSON_AddStringToObject(o, "tool_choice", choice->valuestring);
    } else if (is(ct, "function") && str_of(choice, "name")) {
        cJSON *c = cJSON_AddObjectToObject(o, "tool_choice");
        cJSON_AddStringToObject(c, "type", "function");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(c, "function"), "name",
                                str_of(choice, "name"));
    } else if (ct) {
        return codec_fail(why, size, LLMUX_EKIND, "tool_choice: a choice of type \"%.40s\" cannot be "
                                            "translated for this provider", ct);
    }
    const cJSON *parallel = cJSON_GetObjectItemCaseSensitive(in, "parallel_tool_calls");
    if (out && cJSON_IsBool(parallel))
        cJSON_AddBoolToObject(o, "parallel_tool_calls", cJSON_IsTrue(parallel));
    return 0;
}

/* text.format -> response_format. */
static int add_format(const cJSON *in, cJSON *o, char *why, size_t size)
{
    const cJSON *format =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(in, "text"), "format");
    const char *type = str_of(format, "type");
    if (!format || cJSON_IsNull(format) || is(type, "text"))
        return 0;
    cJSON *rf = cJSON_CreateObject();
    if (is(type, "json_object")) {
        cJSON_AddStringToObject(rf, "type", "json_object");
    } else if (is(type, "json_schema") && str_of(format, "name")) {
        cJSON_AddStringToObject(rf, "type", "json_schema");
        cJSON *js = cJSON_AddObjectToObject(rf, "json_schema");
        static const char *const copied[] = {"name", "description", "schema", "strict"};
        for (size_t i = 0; i < 4; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(format, copied[i]);
            if (v && !cJSON_IsNull(v))
                cJSON_AddItemToObject(js, copied[i], cJSON_Duplicate(v, 1));
        }
    } else {
        cJSON_Delete(rf);
        return codec_fail(why, size, UV_EINVAL, "text.format: the type must be text, json_object or "
                                          "json_schema (with a name)%s", "");
    }
    cJSON_AddItemToObject(o, "response_format", rf);
    return 0;
}

static void copy_member(const cJSON *in, const char *from, cJSON *o, const char *to)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, from);
    if (v && !cJSON_IsNull(v))
        cJSON_AddItemToObject(o, to, cJSON_Duplicate(v, 1));
}

static int build(const cJSON *in, cJSON *o, char *why, size_t size)
{
    static const char *const stateful[] = {"previous_response_id", "conversation", "prompt"};
    for (size_t i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, stateful[i]);
        if (v && !cJSON_IsNull(v))
            return codec_fail(why, size, UV_EINVAL,
                        "%s: llmux keeps no responses, conversations or prompts (it is "
                        "stateless): send the whole conversation in `input` (with store: false)",
                        stateful[i]);
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(in, "background")))
        return codec_fail(why, size, UV_EINVAL, "background: llmux answers in the foreground only "
                                          "(it keeps no responses to poll)%s", "");
    const char *model = str_of(in, "model");
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(in, "input");
    if (!model || !(cJSON_IsString(input) || cJSON_IsArray(input)))
        return codec_fail(why, size, UV_EINVAL, "input: must be a string or an array of items%s", "");
    cJSON_AddStringToObject(o, "model", model);
    cJSON *messages = cJSON_AddArrayToObject(o, "messages");
    const cJSON *instructions = cJSON_GetObjectItemCaseSensitive(in, "instructions");
    if (cJSON_IsString(instructions) && instructions->valuestring[0]) {
        cJSON *m = chat_message("system");
        cJSON_AddStringToObject(m, "content", instructions->valuestring);
        cJSON_AddItemToArray(messages, m);
    } else if (instructions && !cJSON_IsString(instructions) && !cJSON_IsArray(instructions) &&
               !cJSON_IsNull(instructions)) {
        return codec_fail(why, size, UV_EINVAL,
                          "instructions: must be a string or an array of input items%s", "");
    }
    /* instructions as items (e.g. developer messages) go first, then the input's */
    const cJSON *lists[2] = {cJSON_IsArray(instructions) ? instructions : NULL,
                             cJSON_IsArray(input) ? input : NULL};
    const cJSON *item;
    int rc = 0;
    for (int l = 0; l < 2; l++) {
        cJSON_ArrayForEach(item, lists[l])
        {
            if ((rc = add_item(item, messages, why, size)) != 0)
                return rc;
        }
    }
    if (cJSON_IsString(input)) {
        cJSON *m = chat_message("user");
        cJSON_AddStringToObject(m, "content", input->valuestring);
        cJSON_AddItemToArray(messages, m);
    }
    if ((rc = add_tools(in, o, why, size)) != 0 || (rc = add_format(in, o, why, size)) != 0)
        return rc;
    copy_member(in, "max_output_tokens", o, "max_tokens");
    copy_member(in, "temperature", o, "temperature");
    copy_member(in, "top_p", o, "top_p");
    copy_member(in, "user", o, "user");
    copy_member(cJSON_GetObjectItemCaseSensitive(in, "reasoning"), "effort", o,
                "reasoning_effort");
    return 0;
}

int codec_responses_request(const char *body, size_t len, struct buf *out, char *why,
                            size_t why_size)
{
    return codec_translate(body, len, build, out, why, why_size);
}

/* ---- answers: the pieces shared by the body and the stream ---- */

static void json_str(struct buf *out, const char *s, size_t n)
{
    buf_append(out, "\"", 1);
    buf_append_json_str(out, s, n);
    buf_append(out, "\"", 1);
}

/* `"status":"incomplete","incomplete_details":{"reason":...}` for a chat finish_reason. */
static const char *incomplete_reason(const char *finish)
{
    if (is(finish, "length"))
        return "max_output_tokens";
    if (is(finish, "content_filter"))
        return "content_filter";
    return NULL;
}

/* An output_text part. */
static void text_part(struct buf *out, const char *text, size_t len)
{
    buf_append_str(out, "{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":");
    json_str(out, text, len);
    buf_append_str(out, "}");
}

/* A message item; with_text 0: its content is [] (output_item.added). */
static void message_item(struct buf *out, const char *id, const char *status, int with_text,
                         const char *text, size_t len)
{
    buf_append_str(out, "{\"id\":\"");
    buf_append_str(out, id);
    buf_append_str(out, "\",\"type\":\"message\",\"status\":\"");
    buf_append_str(out, status);
    buf_append_str(out, "\",\"content\":[");
    if (with_text)
        text_part(out, text, len);
    buf_append_str(out, "],\"role\":\"assistant\"}");
}

static void call_item(struct buf *out, const char *id, const char *status, const char *args,
                      size_t len, const char *call_id, const char *name)
{
    buf_append_str(out, "{\"id\":\"");
    buf_append_str(out, id);
    buf_append_str(out, "\",\"type\":\"function_call\",\"status\":\"");
    buf_append_str(out, status);
    buf_append_str(out, "\",\"arguments\":");
    json_str(out, args, len);
    buf_append_str(out, ",\"call_id\":");
    json_str(out, call_id, strlen(call_id));
    buf_append_str(out, ",\"name\":");
    json_str(out, name, strlen(name));
    buf_append_str(out, "}");
}

/* The usage object, with the exchange's cost members (codec_stream.cost) when there are. */
static void usage_object(struct buf *out, const struct usage *u, long reasoning, const char *cost)
{
    buf_printf(out,
               "{\"input_tokens\":%ld,\"input_tokens_details\":{\"cached_tokens\":%ld},"
               "\"output_tokens\":%ld,\"output_tokens_details\":{\"reasoning_tokens\":%ld},"
               "\"total_tokens\":%ld",
               u->prompt_tokens, u->cached_tokens, u->completion_tokens, reasoning,
               u->total_tokens ? u->total_tokens : u->prompt_tokens + u->completion_tokens);
    if (cost && cost[0]) {
        buf_append_str(out, ",");
        buf_append_str(out, cost);
    }
    buf_append_str(out, "}");
}

/* The Response object: `output` is the items' JSON (joined by ','), `u` NULL is null. */
static void response_object(struct buf *out, const char *id, long long created,
                            const char *model, const char *status, const char *incomplete,
                            const char *error_code, const char *error_message,
                            const char *output, size_t output_len, const struct usage *u,
                            long reasoning, const char *cost)
{
    buf_append_str(out, "{\"id\":");
    json_str(out, id, strlen(id));
    buf_append_str(out, ",\"object\":\"response\",\"created_at\":");
    buf_append_uint(out, (unsigned long long)(created > 0 ? created : 0));
    buf_append_str(out, ",\"status\":\"");
    buf_append_str(out, status);
    buf_append_str(out, "\",\"error\":");
    if (error_message) {
        buf_append_str(out, "{\"code\":\"");
        buf_append_str(out, error_code);
        buf_append_str(out, "\",\"message\":");
        json_str(out, error_message, strlen(error_message));
        buf_append_str(out, "}");
    } else {
        buf_append_str(out, "null");
    }
    buf_append_str(out, ",\"incomplete_details\":");
    if (incomplete) {
        buf_append_str(out, "{\"reason\":\"");
        buf_append_str(out, incomplete);
        buf_append_str(out, "\"}");
    } else {
        buf_append_str(out, "null");
    }
    buf_append_str(out, ",\"model\":");
    json_str(out, model, strlen(model));
    buf_append_str(out, ",\"output\":[");
    buf_append(out, output, output_len);
    buf_append_str(out, "],\"usage\":");
    if (u && u->known)
        usage_object(out, u, reasoning, cost);
    else
        buf_append_str(out, "null");
    buf_append_str(out, "}");
}

static long reasoning_tokens(const cJSON *root)
{
    const cJSON *us = cJSON_GetObjectItemCaseSensitive(root, "usage");
    return adapter_json_long(cJSON_GetObjectItemCaseSensitive(us, "completion_tokens_details"),
                             "reasoning_tokens");
}

/* ---- answers: a body ---- */

static int responses_body(const char *body, size_t len, struct buf *out)
{
    cJSON *root;
    const cJSON *choice, *msg;
    if (codec_parse_completion(body, len, &root, &choice, &msg) != 0)
        return LLMUX_EPROTO;
    const char *incomplete = incomplete_reason(str_of(choice, "finish_reason"));
    const char *status = incomplete ? "incomplete" : "completed";
    struct buf items;
    buf_init(&items, 0);
    char id[40];
    const char *text = str_of(msg, "content");
    if (text && text[0]) {
        adapter_new_id(id, sizeof(id), "msg_");
        message_item(&items, id, status, 1, text, strlen(text));
    }
    const cJSON *tc;
    cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(msg, "tool_calls"))
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const char *args = str_of(fn, "arguments"), *call_id = str_of(tc, "id");
        const char *name = str_of(fn, "name");
        if (buf_size(&items))
            buf_append(&items, ",", 1);
        adapter_new_id(id, sizeof(id), "fc_");
        call_item(&items, id, "completed", args ? args : "", args ? strlen(args) : 0,
                  call_id ? call_id : id, name ? name : "");
    }
    struct usage u;
    memset(&u, 0, sizeof(u));
    adapter_openai_usage(root, &u);
    const char *model = str_of(root, "model");
    adapter_new_id(id, sizeof(id), "resp_");
    response_object(out, id, (long long)adapter_json_long(root, "created"), model ? model : "",
                    status, incomplete, NULL, NULL, buf_head(&items), buf_size(&items), &u,
                    reasoning_tokens(root), NULL);
    buf_free(&items);
    cJSON_Delete(root);
    return 0;
}

/* ---- answers: a stream ---- */

/* `event: TYPE\ndata: {"type":"TYPE","sequence_number":N` ... closed by codec_event_close. */
static void event_open(struct codec_stream *s, struct buf *out, const char *type)
{
    codec_event_open(out, type);
    buf_append_str(out, ",\"sequence_number\":");
    buf_append_uint(out, (unsigned long long)s->seq++);
}

/* `,"item_id":"..","output_index":N` (and `,"content_index":0` for a message's part). */
static void item_ref(struct codec_stream *s, struct buf *out, int part)
{
    buf_append_str(out, ",\"item_id\":\"");
    buf_append_str(out, s->item);
    buf_append_str(out, "\",\"output_index\":");
    buf_append_uint(out, (unsigned long long)s->block);
    if (part)
        buf_append_str(out, ",\"content_index\":0");
}

static void lifecycle(struct codec_stream *s, struct buf *out, const char *type,
                      const char *status, const char *incomplete, const char *code,
                      const char *message, const struct usage *u)
{
    event_open(s, out, type);
    buf_append_str(out, ",\"response\":");
    response_object(out, s->id, s->created, s->model, status, incomplete, code, message,
                    buf_head(&s->items), buf_size(&s->items), u, s->reasoning_tokens, s->cost);
    codec_event_close(out);
}

static void stream_start(struct codec_stream *s, const struct codec_chunk *c, struct buf *out)
{
    s->started = 1;
    s->block = -1;
    buf_init(&s->text, MAX_OUTPUT);
    buf_init(&s->items, MAX_OUTPUT);
    adapter_new_id(s->id, sizeof(s->id), "resp_");
    if (c)
        adapter_span_str(s->model, sizeof(s->model), c->model);
    s->created = c ? adapter_span_long(c->created) : 0;
    if (!s->created)
        s->created = (long long)time(NULL);
    lifecycle(s, out, "response.created", "in_progress", NULL, NULL, NULL, NULL);
    lifecycle(s, out, "response.in_progress", "in_progress", NULL, NULL, NULL, NULL);
}

/* Close the open item: its .done events, and its JSON kept for response.completed. */
static int item_close(struct codec_stream *s, struct buf *out)
{
    if (s->block < 0)
        return 0;
    const char *text = buf_head(&s->text);
    size_t len = buf_size(&s->text);
    const char *status = s->finished && incomplete_reason(s->stop) ? "incomplete" : "completed";
    if (s->block_kind == 0) {
        event_open(s, out, "response.output_text.done");
        item_ref(s, out, 1);
        buf_append_str(out, ",\"text\":");
        json_str(out, text, len);
        buf_append_str(out, ",\"logprobs\":[]");
        codec_event_close(out);
        event_open(s, out, "response.content_part.done");
        item_ref(s, out, 1);
        buf_append_str(out, ",\"part\":");
        text_part(out, text, len);
        codec_event_close(out);
    } else {
        event_open(s, out, "response.function_call_arguments.done");
        item_ref(s, out, 0);
        buf_append_str(out, ",\"arguments\":");
        json_str(out, text, len);
        codec_event_close(out);
    }
    event_open(s, out, "response.output_item.done");
    buf_append_str(out, ",\"output_index\":");
    buf_append_uint(out, (unsigned long long)s->block);
    buf_append_str(out, ",\"item\":");
    size_t item_at = buf_size(out);
    if (s->block_kind == 0)
        message_item(out, s->item, status, 1, text, len);
    else
        call_item(out, s->item, status, text, len, s->call_id, s->name);
    int rc = buf_size(&s->items) ? buf_append(&s->items, ",", 1) : 0;
    if (!rc)
        rc = buf_append(&s->items, buf_head(out) + item_at, buf_size(out) - item_at);
    codec_event_close(out);
    s->block = -1;
    buf_reset(&s->text);
    return rc;
}

/* Open an item of kind 0 (message) or 1 (function_call) at the next output index. */
static int item_open(struct codec_stream *s, int kind, struct buf *out)
{
    int rc = item_close(s, out);
    s->block = s->next_block++;
    s->block_kind = kind;
    adapter_new_id(s->item, sizeof(s->item), kind == 0 ? "msg_" : "fc_");
    event_open(s, out, "response.output_item.added");
    buf_append_str(out, ",\"output_index\":");
    buf_append_uint(out, (unsigned long long)s->block);
    buf_append_str(out, ",\"item\":");
    if (kind == 0)
        message_item(out, s->item, "in_progress", 0, NULL, 0);
    else
        call_item(out, s->item, "in_progress", "", 0, s->call_id, s->name);
    codec_event_close(out);
    if (kind == 0) {
        event_open(s, out, "response.content_part.added");
        item_ref(s, out, 1);
        buf_append_str(out, ",\"part\":");
        text_part(out, "", 0);
        codec_event_close(out);
    }
    return rc;
}

static int on_text(struct codec_stream *s, const char *text, size_t len, struct buf *out)
{
    int rc = s->block < 0 || s->block_kind != 0 ? item_open(s, 0, out) : 0;
    event_open(s, out, "response.output_text.delta");
    item_ref(s, out, 1);
    buf_append_str(out, ",\"delta\":");
    json_str(out, text, len);
    buf_append_str(out, ",\"logprobs\":[]");
    codec_event_close(out);
    return rc ? rc : buf_append(&s->text, text, len);
}

static int on_tool_call(struct codec_stream *s, struct json_span tc, struct buf *out)
{
    static const char *const keys[] = {"id", "index", "function"};
    static const char *const fn_keys[] = {"name", "arguments"};
    struct json_span m[3], fn[2];
    struct codec_str id, args;
    json_members(tc, keys, 3, m);
    json_members(m[2], fn_keys, 2, fn);
    codec_str(m[0], &id);
    codec_str(fn[1], &args);
    int index = (int)adapter_span_long(m[1]), rc = 0;
    if (id.p || s->block < 0 || s->block_kind != 1 || index != s->tool) {
        rc = item_close(s, out);
        s->tool = index;
        s->name[0] = 0;
        adapter_span_str(s->name, sizeof(s->name), fn[0]);
        if (id.p)
            snprintf(s->call_id, sizeof(s->call_id), "%.*s", (int)id.len, id.p);
        else
            adapter_new_id(s->call_id, sizeof(s->call_id), "call_");
        if (!rc)
            rc = item_open(s, 1, out);
    }
    if (!rc && args.len) {
        event_open(s, out, "response.function_call_arguments.delta");
        item_ref(s, out, 0);
        buf_append_str(out, ",\"delta\":");
        json_str(out, args.p, args.len);
        codec_event_close(out);
        rc = buf_append(&s->text, args.p, args.len);
    }
    codec_str_free(&id);
    codec_str_free(&args);
    return rc;
}

static int responses_stream_chunk(struct codec_stream *s, const char *data, size_t len,
                                  const struct chunk_info *ci, const struct usage *total,
                                  struct buf *out)
{
    struct codec_chunk c;
    if (codec_read_chunk(data, len, ci, &c) != 0)
        return LLMUX_EPROTO;
    if (!s->started)
        stream_start(s, &c, out);
    int rc = 0;
    if (ci->kind == CHUNK_DONE) {
        rc = item_close(s, out);
        const char *incomplete = s->finished ? incomplete_reason(s->stop) : NULL;
        lifecycle(s, out, incomplete ? "response.incomplete" : "response.completed",
                  incomplete ? "incomplete" : "completed", incomplete, NULL, NULL,
                  total && total->known ? total : &s->usage);
        return rc;
    }
    struct usage u;
    memset(&u, 0, sizeof(u));
    if (adapter_openai_usage_span(c.usage, &u)) {
        s->usage = u;
        s->reasoning_tokens =
            adapter_span_long(json_get(c.usage, "completion_tokens_details.reasoning_tokens"));
    }
    struct codec_str text;
    if (codec_str(c.content, &text) && text.len)
        rc = on_text(s, text.p, text.len, out);
    codec_str_free(&text);
    size_t pos = 0;
    struct json_span tc;
    while (!rc && json_next(c.tool_calls, &pos, &tc) == 0)
        rc = on_tool_call(s, tc, out);
    if (json_type(c.finish) == JSON_STRING && !rc) {
        s->finished = 1;
        adapter_span_str(s->stop, sizeof(s->stop), c.finish);
        rc = item_close(s, out);
    }
    return rc;
}

static int responses_stream_error(struct codec_stream *s, int status, const char *message,
                                  struct buf *out)
{
    if (!s->started)
        stream_start(s, NULL, out);
    lifecycle(s, out, "response.failed", "failed", NULL,
              status == 429 ? "rate_limit_exceeded" : "server_error", message, &s->usage);
    return 0;
}

/* One passthrough event (adapter_openai_responses' framing `event: NAME\ndata: DATA\n`): what
 * an honest end after it needs, i.e. the next sequence number, the response's id, model and
 * creation time (response.created), and the output items done so far (output_item.done). */
static void observe_event(struct codec_stream *s, const char *ev, size_t len)
{
    const char *d = memmem(ev, len, "data: ", 6);
    if (!d)
        return;
    d += 6;
    const char *nl = memchr(d, '\n', len - (size_t)(d - ev));
    size_t n = nl ? (size_t)(nl - d) : len - (size_t)(d - ev), vs, ve;
    long seq = json_top_key(d, n, "sequence_number", &vs, &ve) == 0 ? strtol(d + vs, NULL, 10) : -1;
    if (seq >= 0 && seq < LONG_MAX)
        s->seq = seq + 1;
    static const char *const types[] = {"response.created", "response.output_item.done"};
    int t = adapter_member_type(d, n, NULL, types, 2);
    if (t == 0 && !s->started && json_top_key(d, n, "response", &vs, &ve) == 0) {
        s->started = 1;
        s->block = -1;
        buf_init(&s->items, MAX_OUTPUT);
        static const char *const keys[] = {"id", "model"};
        char *dst[] = {s->id, s->model};
        size_t sizes[] = {sizeof(s->id), sizeof(s->model)};
        for (int k = 0; k < 2; k++) {
            cJSON *v = adapter_member(d + vs, ve - vs, keys[k]);
            adapter_copy_str(dst[k], sizes[k], v);
            cJSON_Delete(v);
        }
        size_t cs, ce;
        if (json_top_key(d + vs, ve - vs, "created_at", &cs, &ce) == 0)
            s->created = strtoll(d + vs + cs, NULL, 10);
    } else if (t == 1 && s->started && json_top_key(d, n, "item", &vs, &ve) == 0) {
        if (buf_size(&s->items) == 0 || buf_append(&s->items, ",", 1) == 0)
            buf_append(&s->items, d + vs, ve - vs);
    }
}

static void responses_observe(struct codec_stream *s, const char *bytes, size_t len)
{
    codec_each_event(s, bytes, len, observe_event);
}

/* A Response's end: the reason in incomplete_details, else its status ("completed"). */
static const char *const finish_keys[] = {"\"reason\"", "\"status\"", NULL};

static const struct adapter *responses_native_for(const struct provider *p)
{
    if (!p->responses_native)
        return NULL;
    return p->kind == PROVIDER_AZURE ? &adapter_azure_responses : &adapter_openai_responses;
}

static void responses_stream_free(struct codec_stream *s)
{
    buf_free(&s->text);
    buf_free(&s->items);
}

/* Codex sends OpenAI-Beta (responses=experimental); the account headers (organization,
 * project) are not the client's to choose: llmux's key is the one used. */
static const char *const forwarded[] = {"openai-beta", NULL};

const struct client_codec codec_responses = {
    .name = "responses",
    .metrics_endpoint = 4,
    .main_key = "input",
    .request = codec_responses_request,
    .native_path = "/responses",
    .forward_headers = forwarded,
    .native_for = responses_native_for,
    .finish_keys = finish_keys,
    .native_continues = 0, /* a continuation cannot go on in the provider's own items */
    .ping = ": ping\n\n",
    .stream_chunk = responses_stream_chunk,
    .observe = responses_observe,
    .stream_error = responses_stream_error,
    .body = responses_body,
    .stream_free = responses_stream_free,
};
