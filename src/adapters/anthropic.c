/* adapters/anthropic: the anthropic kind, OpenAI chat completions over Anthropic's Messages
 * API (POST {base_path}/messages, headers x-api-key and anthropic-version). Only
 * /v1/chat/completions is served; the other endpoints are LLMUX_EKIND.
 *
 * Request (the client's OpenAI body, re-encoded with cJSON):
 *   - system and developer messages are lifted into `system` (joined by a blank line);
 *   - every other message becomes {role, content:[blocks]}; consecutive messages of the same
 *     role are merged (Anthropic requires user/assistant alternation); a message left without
 *     blocks (empty text) is dropped, since Anthropic rejects empty content;
 *   - content parts: text -> text block, image_url with a base64 data: URL -> image block with a
 *     base64 source, http(s) URL -> image block with a url source; other parts -> LLMUX_EKIND;
 *   - assistant tool_calls -> tool_use blocks {id, name, input: the parsed arguments};
 *     `tool` messages -> a user message of tool_result blocks {tool_use_id, content};
 *   - max_tokens (or max_completion_tokens), else the provider's default_max_tokens;
 *     temperature (clamped to Anthropic's 0..1), top_p, stop -> stop_sequences, stream,
 *     user -> metadata.user_id; n > 1 is LLMUX_EKIND (one choice only);
 *   - tools [{type:function, function{name, description, parameters}}] ->
 *     [{name, description, input_schema}]; tool_choice "auto" -> {type:auto}, "none" ->
 *     {type:none}, "required" -> {type:any}, {function{name}} -> {type:tool, name};
 *     parallel_tool_calls:false -> disable_parallel_tool_use.
 *   - response_format json_schema / json_object: Anthropic has no such field, so the answer is
 *     asked for as a forced tool call, which every Claude model honours: one more tool, named
 *     after json_schema.name (JSON_TOOL when it has none or one Anthropic would refuse), whose
 *     input_schema is the schema ({"type":"object"} for json_object: any object, no
 *     instruction added), and tool_choice {type:tool, name} (with tools of the client's own
 *     and tool_choice auto or absent: {type:any}, so the model may still call those).
 *     json_schema.strict is not sent (Anthropic's strict tools need a beta): the schema
 *     guides the model, as a forced tool input, without a guarantee. Refused (UV_EINVAL, with
 *     `why` naming response_format): a schema whose root is not an object, a tool of the
 *     client's with the same name, tool_choice required or a named function (the client wants
 *     a tool call, the answer must be the JSON), a continuation (req->prefix: JSON cannot be
 *     continued as a prefill or restarted without repeating itself), an unknown type.
 *   - Continuation (req->prefix): with prefill (this kind's default) the delivered text is
 *     sent as a trailing assistant message that Anthropic continues. Anthropic rejects a final
 *     assistant content ending in whitespace, so the trailing ASCII whitespace is stripped from
 *     what is sent, and the stream then drops the same whitespace from the start of the
 *     continuation (byte by byte, as long as it matches) since the client already has it.
 *     Without prefill: the assistant message then a user message asking to continue.
 *
 * Response: text blocks joined into message.content (null when none), tool_use blocks into
 * tool_calls (arguments = input re-serialized); stop_reason end_turn/stop_sequence -> "stop",
 * max_tokens -> "length", tool_use -> "tool_calls", refusal -> "content_filter"; usage with
 * prompt_tokens = input + cache read + cache creation tokens, cached_tokens = cache reads.
 * With response_format, the forced tool's input is the answer: its JSON text is the content
 * (not a tool call), and stop_reason tool_use is "stop" unless a tool of the client's was
 * called too. The decoders find the forced tool's name again from the request's
 * response_format member alone (json_top_key: no parse of the whole body).
 *
 * Stream (named SSE events with JSON data): message_start -> the role chunk (CHUNK_PREAMBLE);
 * text deltas -> content chunks; a tool_use block start -> a tool_calls delta {index, id, type,
 * function{name, arguments:""}} and its input_json_delta fragments -> argument deltas (tool
 * call indexes count tool_use blocks from 0; the forced response_format tool is not one: its
 * input_json_delta fragments are content deltas); message_delta -> the finish chunk; message_stop
 * -> the usage chunk (when asked for) and "[DONE]"; `error` -> CHUNK_ERROR. ping, thinking and
 * unknown events are ignored. The stream completed only if message_stop was seen.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmux/adapter.h"
#include "llmux/errors.h"
#include "llmux/json.h"

#define DEFAULT_VERSION "2023-06-01"
#define DEFAULT_MAX_TOKENS 4096
#define WS_MAX 64 /* stripped prefix whitespace remembered to drop from the continuation */
#define JSON_TOOL "json_response" /* the response_format tool when json_schema names none */
#define JSON_TOOL_MAX 65 /* tool names are [a-zA-Z0-9_-]{1,64} for OpenAI and Anthropic alike */

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Length of the prefix once its trailing whitespace is stripped. */
static size_t prefix_kept(const struct canon_request *req)
{
    size_t n = req->prefix_len;
    while (n > 0 && is_ws(req->prefix[n - 1]))
        n--;
    return n;
}

/* Whether s is a tool name both OpenAI and Anthropic accept. */
static int valid_tool_name(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return n > 0 && n < JSON_TOOL_MAX;
}

/* What a response_format asks for: 1 JSON (the forced tool's name in name[JSON_TOOL_MAX]), 0
 * nothing (absent, null, type "text"), -1 a shape that cannot be translated. */
static int json_tool_name(const cJSON *rf, char *name)
{
    snprintf(name, JSON_TOOL_MAX, "%s", JSON_TOOL);
    if (!rf || cJSON_IsNull(rf))
        return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    if (strcmp(t, "text") == 0)
        return 0;
    if (strcmp(t, "json_object") == 0)
        return 1;
    if (strcmp(t, "json_schema") != 0)
        return -1;
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(js, "name");
    if (cJSON_IsString(n) && valid_tool_name(n->valuestring))
        snprintf(name, JSON_TOOL_MAX, "%s", n->valuestring);
    return 1;
}

/* The decoders' view of the same: whether req asked for JSON, and the forced tool's name. Only
 * the response_format member is parsed (encode rejected what json_tool_name refuses). */
static int json_tool(const struct canon_request *req, char *name)
{
    size_t vs, ve;
    name[0] = 0;
    if (!req || req->endpoint != API_CHAT ||
        json_top_key(req->body, req->body_len, "response_format", &vs, &ve) != 0)
        return 0;
    cJSON *rf = cJSON_ParseWithLength(req->body + vs, ve - vs);
    int json = json_tool_name(rf, name) > 0;
    cJSON_Delete(rf);
    if (!json)
        name[0] = 0;
    return json;
}

/* ---- request ---- */

/* The messages being built: each new message merges into `last` when the roles match. */
struct conv {
    cJSON *messages;
    cJSON *last;
    struct buf system;
};

static cJSON *text_block(const char *text)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "text");
    cJSON_AddStringToObject(b, "text", text);
    return b;
}

static void push_message(struct conv *c, const char *role, cJSON *blocks)
{
    adapter_push_turn(c->messages, &c->last, role, "content", blocks);
}

/* An image block: base64 data of a media type, or (mime NULL) a URL. */
static cJSON *image_block(const char *mime, const char *src)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "image");
    cJSON *source = cJSON_AddObjectToObject(b, "source");
    cJSON_AddStringToObject(source, "type", mime ? "base64" : "url");
    if (mime)
        cJSON_AddStringToObject(source, "media_type", mime);
    cJSON_AddStringToObject(source, mime ? "data" : "url", src);
    return b;
}

static const struct content_makers makers = {text_block, image_block};

static int content_blocks(const cJSON *content, cJSON *blocks)
{
    return adapter_content_items(content, blocks, &makers);
}

/* An assistant's tool_calls appended to blocks as tool_use blocks. */
static int tool_use_blocks(const cJSON *calls, cJSON *blocks)
{
    const cJSON *tc;
    cJSON_ArrayForEach(tc, calls)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(tc, "id");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsString(id) || !cJSON_IsString(name))
            return UV_EINVAL;
        cJSON *input = adapter_tool_arguments(args);
        if (!input)
            return UV_EINVAL;
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "tool_use");
        cJSON_AddStringToObject(b, "id", id->valuestring);
        cJSON_AddStringToObject(b, "name", name->valuestring);
        cJSON_AddItemToObject(b, "input", input);
        cJSON_AddItemToArray(blocks, b);
    }
    return 0;
}

/* One OpenAI message into the conversation. */
static int add_message(struct conv *c, const cJSON *m)
{
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!cJSON_IsString(role))
        return UV_EINVAL;
    const char *r = role->valuestring;
    if (strcmp(r, "system") == 0 || strcmp(r, "developer") == 0) {
        size_t had = buf_size(&c->system);
        int rc = had ? buf_append_str(&c->system, "\n\n") : 0;
        if (!rc)
            rc = adapter_content_text(content, &c->system);
        if (!rc && had && buf_size(&c->system) == had + 2)
            c->system.len -= 2; /* an empty system message: no separator */
        return rc;
    }
    cJSON *blocks = cJSON_CreateArray();
    int rc = 0;
    if (strcmp(r, "user") == 0) {
        rc = content_blocks(content, blocks);
    } else if (strcmp(r, "assistant") == 0) {
        rc = content_blocks(content, blocks);
        if (!rc)
            rc = tool_use_blocks(cJSON_GetObjectItemCaseSensitive(m, "tool_calls"), blocks);
    } else if (strcmp(r, "tool") == 0) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
        struct buf text;
        buf_init(&text, 0);
        rc = cJSON_IsString(id) ? adapter_content_text(content, &text) : UV_EINVAL;
        if (!rc)
            rc = buf_append(&text, "", 1);
        if (!rc) {
            cJSON *b = cJSON_CreateObject();
            cJSON_AddStringToObject(b, "type", "tool_result");
            cJSON_AddStringToObject(b, "tool_use_id", id->valuestring);
            cJSON_AddStringToObject(b, "content", text.data);
            cJSON_AddItemToArray(blocks, b);
        }
        buf_free(&text);
        r = "user";
    } else {
        rc = LLMUX_EKIND; /* the legacy "function" role */
    }
    if (rc) {
        cJSON_Delete(blocks);
        return rc;
    }
    push_message(c, r, blocks);
    return 0;
}

/* The delivered text of a continuation, as Anthropic can take it. */
static void add_prefix(struct conv *c, const struct canon_request *req)
{
    size_t n = req->prefill ? prefix_kept(req) : req->prefix_len;
    char *text = strndup(req->prefix, n);
    cJSON *blocks = cJSON_CreateArray();
    if (text && text[0])
        cJSON_AddItemToArray(blocks, text_block(text));
    free(text);
    push_message(c, "assistant", blocks);
    if (!req->prefill) {
        blocks = cJSON_CreateArray();
        cJSON_AddItemToArray(blocks, text_block(ADAPTER_CONTINUE_INSTRUCTION));
        push_message(c, "user", blocks);
    }
}

static cJSON *tool_choice(const cJSON *choice, const cJSON *parallel)
{
    cJSON *tc = cJSON_CreateObject();
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(choice, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    if (cJSON_IsString(name)) {
        cJSON_AddStringToObject(tc, "type", "tool");
        cJSON_AddStringToObject(tc, "name", name->valuestring);
    } else if (cJSON_IsString(choice) && strcmp(choice->valuestring, "none") == 0) {
        cJSON_AddStringToObject(tc, "type", "none");
    } else if (cJSON_IsString(choice) && strcmp(choice->valuestring, "required") == 0) {
        cJSON_AddStringToObject(tc, "type", "any");
    } else {
        cJSON_AddStringToObject(tc, "type", "auto");
    }
    if (cJSON_IsFalse(parallel))
        cJSON_AddBoolToObject(tc, "disable_parallel_tool_use", 1);
    return tc;
}

static int add_tools(cJSON *root, const cJSON *in)
{
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(in, "tools");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(in, "tool_choice");
    const cJSON *parallel = cJSON_GetObjectItemCaseSensitive(in, "parallel_tool_calls");
    if (!cJSON_IsArray(tools) || cJSON_GetArraySize(tools) == 0)
        return 0;
    cJSON *out = cJSON_AddArrayToObject(root, "tools");
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(fn, "description");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        if (!cJSON_IsString(name))
            return LLMUX_EKIND; /* not a function tool */
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name->valuestring);
        if (cJSON_IsString(desc))
            cJSON_AddStringToObject(o, "description", desc->valuestring);
        cJSON *schema = cJSON_IsObject(params) ? cJSON_Duplicate(params, 1) : NULL;
        if (!schema) { /* Anthropic requires one: a function without parameters */
            schema = cJSON_CreateObject();
            cJSON_AddStringToObject(schema, "type", "object");
            cJSON_AddObjectToObject(schema, "properties");
        }
        cJSON_AddItemToObject(o, "input_schema", schema);
        cJSON_AddItemToArray(out, o);
    }
    if (choice || cJSON_IsFalse(parallel))
        cJSON_AddItemToObject(root, "tool_choice", tool_choice(choice, parallel));
    return 0;
}

/* Refuse the request: UV_EINVAL, with the reason in why (for the client's 400). */
static int refuse(char *why, const char *reason)
{
    snprintf(why, sizeof(((struct upstream_request *)0)->why), "response_format: %s", reason);
    return UV_EINVAL;
}

/* response_format as a forced tool (the file comment says why); after add_tools. */
static int add_response_format(cJSON *root, const cJSON *in, const struct canon_request *req,
                               char *why)
{
    char name[JSON_TOOL_MAX];
    int json = json_tool_name(cJSON_GetObjectItemCaseSensitive(in, "response_format"), name);
    if (json < 0)
        return refuse(why, "only type text, json_object and json_schema can be translated");
    if (!json)
        return 0;
    if (req->prefix)
        return refuse(why, "a JSON answer cannot be continued on another deployment");
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(in, "response_format");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
    const cJSON *stype = cJSON_GetObjectItemCaseSensitive(schema, "type");
    if (schema && !(cJSON_IsString(stype) && strcmp(stype->valuestring, "object") == 0))
        return refuse(why, "the schema's root must be {\"type\":\"object\"} (a tool input)");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(in, "tool_choice");
    if (cJSON_IsObject(choice) ||
        (cJSON_IsString(choice) && strcmp(choice->valuestring, "required") == 0))
        return refuse(why, "cannot be combined with a tool_choice that requires a tool call");
    cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "name")), name) == 0)
            return refuse(why, "a tool has the name of the json_schema");
    }
    /* the client's tools may still be called unless tool_choice is "none" */
    int others = tools && !(cJSON_IsString(choice) && strcmp(choice->valuestring, "none") == 0);
    if (!tools)
        tools = cJSON_AddArrayToObject(root, "tools");
    cJSON *tool = cJSON_CreateObject();
    cJSON_AddStringToObject(tool, "name", name);
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(js, "description");
    cJSON_AddStringToObject(tool, "description",
                            cJSON_IsString(desc) ? desc->valuestring
                                                 : "Give the answer as this tool's input.");
    cJSON *input = schema ? cJSON_Duplicate(schema, 1) : cJSON_CreateObject();
    if (!schema)
        cJSON_AddStringToObject(input, "type", "object");
    cJSON_AddItemToObject(tool, "input_schema", input);
    cJSON_AddItemToArray(tools, tool);
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddStringToObject(tc, "type", others ? "any" : "tool");
    if (!others)
        cJSON_AddStringToObject(tc, "name", name);
    if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(in, "parallel_tool_calls")))
        cJSON_AddBoolToObject(tc, "disable_parallel_tool_use", 1);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "tool_choice");
    cJSON_AddItemToObject(root, "tool_choice", tc);
    return 0;
}

/* The Messages request for the client's chat body. */
static int build_request(const struct provider *p, const char *model, size_t model_len,
                         const struct canon_request *req, const cJSON *in, cJSON *root, char *why)
{
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(in, "messages");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(in, "n");
    if (!cJSON_IsArray(messages))
        return UV_EINVAL;
    if (cJSON_IsNumber(n) && n->valuedouble > 1)
        return LLMUX_EKIND;
    char *m = strndup(model, model_len);
    if (!m)
        return UV_ENOMEM;
    cJSON_AddStringToObject(root, "model", m);
    free(m);

    struct conv c = {cJSON_CreateArray(), NULL, {0}};
    buf_init(&c.system, 0);
    int rc = 0;
    const cJSON *msg;
    cJSON_ArrayForEach(msg, messages)
    {
        rc = add_message(&c, msg);
        if (rc)
            break;
    }
    if (!rc && req->prefix)
        add_prefix(&c, req);
    if (!rc && buf_size(&c.system) > 0) {
        buf_append(&c.system, "", 1);
        cJSON_AddStringToObject(root, "system", c.system.data);
    }
    buf_free(&c.system);
    cJSON_AddItemToObject(root, "messages", c.messages);
    if (rc)
        return rc;

    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(in, "max_tokens");
    if (!cJSON_IsNumber(mt))
        mt = cJSON_GetObjectItemCaseSensitive(in, "max_completion_tokens");
    double max_tokens = p->default_max_tokens ? p->default_max_tokens : DEFAULT_MAX_TOKENS;
    cJSON_AddNumberToObject(root, "max_tokens", cJSON_IsNumber(mt) ? mt->valuedouble : max_tokens);
    const cJSON *temp = cJSON_GetObjectItemCaseSensitive(in, "temperature");
    if (cJSON_IsNumber(temp))
        cJSON_AddNumberToObject(root, "temperature", temp->valuedouble > 1 ? 1 : temp->valuedouble);
    const cJSON *top_p = cJSON_GetObjectItemCaseSensitive(in, "top_p");
    if (cJSON_IsNumber(top_p))
        cJSON_AddNumberToObject(root, "top_p", top_p->valuedouble);
    cJSON *stop = adapter_stop_list(in);
    if (stop)
        cJSON_AddItemToObject(root, "stop_sequences", stop);
    if (req->stream)
        cJSON_AddBoolToObject(root, "stream", 1);
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(in, "user");
    if (cJSON_IsString(user))
        cJSON_AddStringToObject(cJSON_AddObjectToObject(root, "metadata"), "user_id",
                                user->valuestring);
    rc = add_tools(root, in);
    return rc ? rc : add_response_format(root, in, req, why);
}

static int anthropic_encode(const struct provider *p, const char *model, size_t model_len,
                            const struct canon_request *req, struct upstream_request *out)
{
    adapter_encode_init(out);
    if (req->endpoint != API_CHAT) {
        adapter_explain_refusal(req, NULL, "anthropic", out->why, sizeof(out->why));
        return LLMUX_EKIND;
    }
    cJSON *in = cJSON_ParseWithLength(req->body, req->body_len);
    cJSON *root = cJSON_CreateObject();
    int rc = !cJSON_IsObject(in) ? UV_EINVAL : !root ? UV_ENOMEM : 0;
    if (!rc)
        rc = build_request(p, model, model_len, req, in, root, out->why);
    if (rc == LLMUX_EKIND)
        adapter_explain_refusal(req, in, "anthropic", out->why, sizeof(out->why));
    cJSON_Delete(in);
    char path[512], version[128];
    snprintf(path, sizeof(path), "%s/messages", p->base_path);
    snprintf(version, sizeof(version), "anthropic-version: %s\r\n",
             p->api_version && p->api_version[0] ? p->api_version : DEFAULT_VERSION);
    if (!rc)
        rc = adapter_encode_json(out, p, path, req, root, "x-api-key", version);
    cJSON_Delete(root);
    return rc;
}

/* ---- responses ---- */

static const char *finish_of(const char *s)
{
    if (strcmp(s, "max_tokens") == 0)
        return "length";
    if (strcmp(s, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(s, "refusal") == 0)
        return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn */
}

static const char *finish_reason(const cJSON *stop_reason)
{
    return finish_of(cJSON_IsString(stop_reason) ? stop_reason->valuestring : "");
}

/* adapter_anthropic_usage over the span of the usage member. */
static void usage_span(struct json_span us, struct usage *u)
{
    static const char *const keys[] = {"input_tokens", "cache_read_input_tokens",
                                       "cache_creation_input_tokens", "output_tokens"};
    struct json_span m[4];
    if (json_members(us, keys, 4, m) != 0) /* absent or not an object */
        return;
    if (m[0].s) {
        long read = adapter_span_long(m[1]);
        u->prompt_tokens = adapter_span_long(m[0]) + read + adapter_span_long(m[2]);
        u->cached_tokens = read;
    }
    if (m[3].s)
        u->completion_tokens = adapter_span_long(m[3]);
    u->total_tokens = u->prompt_tokens + u->completion_tokens;
    u->known = 1;
}

void adapter_anthropic_usage(const cJSON *us, struct usage *u)
{
    if (!cJSON_IsObject(us))
        return;
    if (cJSON_GetObjectItemCaseSensitive(us, "input_tokens")) {
        long read = adapter_json_long(us, "cache_read_input_tokens");
        u->prompt_tokens = adapter_json_long(us, "input_tokens") + read +
                           adapter_json_long(us, "cache_creation_input_tokens");
        u->cached_tokens = read;
    }
    if (cJSON_GetObjectItemCaseSensitive(us, "output_tokens"))
        u->completion_tokens = adapter_json_long(us, "output_tokens");
    u->total_tokens = u->prompt_tokens + u->completion_tokens;
    u->known = 1;
}

static int anthropic_decode_body(const struct canon_request *req, const char *model,
                                 const char *body, size_t len, struct buf *out, struct usage *u)
{
    memset(u, 0, sizeof(*u));
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(root, "content");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(content)) {
        cJSON_Delete(root);
        return LLMUX_EPROTO;
    }
    char json_name[JSON_TOOL_MAX];
    int json = json_tool(req, json_name);
    struct buf text;
    buf_init(&text, 0);
    cJSON *calls = cJSON_CreateArray();
    int rc = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(b, "type");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(b, "text");
        if (cJSON_IsString(type) && strcmp(type->valuestring, "text") == 0 && cJSON_IsString(t)) {
            buf_append_str(&text, t->valuestring);
        } else if (cJSON_IsString(type) && strcmp(type->valuestring, "tool_use") == 0) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(b, "id");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(b, "name");
            char *args = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(b, "input"));
            if (!cJSON_IsString(id) || !cJSON_IsString(name) || !args)
                rc = LLMUX_EPROTO;
            else if (json && strcmp(name->valuestring, json_name) == 0)
                buf_append_str(&text, args); /* the response_format answer */
            else
                cJSON_AddItemToArray(
                    calls, adapter_tool_call(-1, id->valuestring, name->valuestring, args));
            free(args);
        }
    }
    adapter_anthropic_usage(cJSON_GetObjectItemCaseSensitive(root, "usage"), u);
    char id[96] = "";
    adapter_copy_str(id, sizeof(id), cJSON_GetObjectItemCaseSensitive(root, "id"));
    if (!id[0])
        adapter_new_id(id, sizeof(id), "chatcmpl-");
    const cJSON *rmodel = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *stop = finish_reason(cJSON_GetObjectItemCaseSensitive(root, "stop_reason"));
    if (json && strcmp(stop, "tool_calls") == 0 && cJSON_GetArraySize(calls) == 0)
        stop = "stop"; /* only the forced tool was called: a plain answer */
    if (!rc && buf_size(&text) > 0)
        rc = buf_append(&text, "", 1);
    if (!rc)
        rc = adapter_write_completion(out, id, cJSON_IsString(rmodel) ? rmodel->valuestring : model,
                                      buf_size(&text) ? text.data : NULL, calls, stop, u);
    else
        cJSON_Delete(calls);
    buf_free(&text);
    cJSON_Delete(root);
    if (rc)
        memset(u, 0, sizeof(*u));
    return rc;
}

/* ---- streams ---- */

struct anthropic_stream {
    struct chunk_ident who;
    struct usage usage;
    int tools;       /* tool_use blocks seen: the next tool call index */
    int finished;    /* the finish chunk went out */
    int json;        /* the request has a response_format: json_name is its forced tool */
    int in_json;     /* the current content block is that tool's: its input is content */
    char json_name[JSON_TOOL_MAX];
    char ws[WS_MAX]; /* whitespace stripped from a prefill, still to drop from the text */
    size_t ws_len;
    struct buf text; /* a text with escapes, decoded (allocated with the first one) */
};

static int anthropic_stream_open(struct adapter_stream *s)
{
    struct anthropic_stream *st = calloc(1, sizeof(*st));
    if (!st)
        return UV_ENOMEM;
    buf_init(&st->text, 0);
    adapter_new_id(st->who.id, sizeof(st->who.id), "chatcmpl-");
    snprintf(st->who.model, sizeof(st->who.model), "%s", s->model ? s->model : "");
    st->who.created = (long long)time(NULL);
    st->json = json_tool(s->req, st->json_name);
    const struct canon_request *req = s->req;
    if (req && req->prefix && req->prefill) {
        size_t kept = prefix_kept(req);
        size_t n = req->prefix_len - kept;
        st->ws_len = n < WS_MAX ? n : WS_MAX;
        memcpy(st->ws, req->prefix + kept, st->ws_len);
    }
    s->state = st;
    return 0;
}

/* Drop from the start of a continuation's text[0..len) the whitespace the prefill lost:
 * returns how many bytes to skip. */
static size_t skip_stripped(struct anthropic_stream *st, const char *text, size_t len)
{
    size_t i = 0;
    while (st->ws_len > 0 && i < len && text[i] == st->ws[0]) {
        memmove(st->ws, st->ws + 1, --st->ws_len);
        i++;
    }
    if (i < len)
        st->ws_len = 0; /* the continuation has begun: nothing more to drop */
    return i;
}

int adapter_anthropic_error_event(const cJSON *err, adapter_emit_fn emit, void *ctx)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(err, "type");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const char *t = cJSON_IsString(type) ? type->valuestring : "api_error";
    int retry = strcmp(t, "overloaded_error") == 0 || strcmp(t, "api_error") == 0 ||
                strcmp(t, "rate_limit_error") == 0;
    const char *text = cJSON_IsString(msg) ? msg->valuestring : "the provider reported an error";
    return adapter_emit_error(text, t, NULL, retry, emit, ctx);
}

/* A text block's start or delta: its text (in place unless it has escapes) goes out. */
static int on_text(struct adapter_stream *s, struct anthropic_stream *st, struct json_span text,
                   adapter_emit_fn emit, void *ctx)
{
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_CONTENT;
    int rc = adapter_span_text(&st->text, text, &ci.text, &ci.text_len);
    if (rc)
        return rc;
    size_t skip = skip_stripped(st, ci.text, ci.text_len);
    ci.text += skip;
    ci.text_len -= skip;
    if (ci.text_len == 0)
        return 0;
    return adapter_emit_text(&st->who, s->req->include_usage, ci.text, ci.text_len, &ci, emit,
                             ctx);
}

/* The kinds on_block reads from a tree of the block: tool use (and the response_format tool's
 * input, which is the content). */
static int on_block_tree(struct adapter_stream *s, struct anthropic_stream *st, const cJSON *b,
                         const char *t, int start, adapter_emit_fn emit, void *ctx)
{
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_CONTENT;
    cJSON *delta = NULL;
    if (strcmp(t, "tool_use") == 0 && st->json) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(b, "name");
        st->in_json = cJSON_IsString(name) && strcmp(name->valuestring, st->json_name) == 0;
    }
    if (st->in_json && !start && strcmp(t, "input_json_delta") == 0) {
        /* the response_format answer: its JSON text is the content */
        const cJSON *part = cJSON_GetObjectItemCaseSensitive(b, "partial_json");
        if (!cJSON_IsString(part))
            return LLMUX_EPROTO;
        if (!part->valuestring[0])
            return 0;
        ci.text = part->valuestring;
        ci.text_len = strlen(ci.text);
        return adapter_emit_text(&st->who, s->req->include_usage, ci.text, ci.text_len, &ci,
                                 emit, ctx);
    } else if (st->in_json) {
        return 0; /* its start carries an empty input: nothing to relay yet */
    } else if (strcmp(t, "tool_use") == 0) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(b, "id");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(b, "name");
        if (!cJSON_IsString(id) || !cJSON_IsString(name))
            return LLMUX_EPROTO;
        st->ws_len = 0;
        delta = cJSON_CreateObject();
        cJSON_AddItemToArray(
            cJSON_AddArrayToObject(delta, "tool_calls"),
            adapter_tool_call(st->tools++, id->valuestring, name->valuestring, ""));
        ci.tool_call = 1;
    } else if (strcmp(t, "input_json_delta") == 0) {
        const cJSON *part = cJSON_GetObjectItemCaseSensitive(b, "partial_json");
        if (!cJSON_IsString(part) || st->tools == 0)
            return LLMUX_EPROTO;
        if (!part->valuestring[0])
            return 0;
        delta = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(delta, "tool_calls"),
                             adapter_tool_call(st->tools - 1, NULL, NULL, part->valuestring));
        ci.tool_call = 1;
    } else {
        return 0; /* thinking, signatures, citations, server tools: not relayed */
    }
    return adapter_emit_delta(&st->who, s->req->include_usage, delta, NULL, &ci, emit, ctx);
}

/* content_block_start and content_block_delta: the block (or delta) object is scanned for its
 * type, and a text read in place; the rarer kinds (tool use, the response_format tool) are
 * read from a tree of the block. */
static int on_block(struct adapter_stream *s, struct anthropic_stream *st, struct json_span block,
                    int start, adapter_emit_fn emit, void *ctx)
{
    static const char *const keys[] = {"type", "text"};
    struct json_span m[2];
    char t[32] = ""; /* longer types are none of ours, and stay so when cut to 31 bytes */
    json_members(block, keys, 2, m); /* not an object: nothing found */
    if (json_type(m[0]) != JSON_STRING)
        return LLMUX_EPROTO;
    adapter_span_str(t, sizeof(t), m[0]);
    if (start) /* blocks do not interleave: a delta belongs to the latest block started */
        st->in_json = 0;
    if (strcmp(t, "tool_use") != 0 && strcmp(t, "input_json_delta") != 0) {
        if (st->in_json || (strcmp(t, "text") != 0 && strcmp(t, "text_delta") != 0))
            return 0; /* thinking, signatures, citations, server tools: not relayed */
        if (json_type(m[1]) != JSON_STRING)
            return LLMUX_EPROTO;
        return on_text(s, st, m[1], emit, ctx);
    }
    cJSON *b = adapter_span_tree(block);
    int rc = on_block_tree(s, st, b, t, start, emit, ctx);
    cJSON_Delete(b);
    return rc;
}

/* The event's members, in the order of the spans below. */
enum { E_TYPE, E_MESSAGE, E_BLOCK, E_DELTA, E_USAGE, E_ERROR, E_COUNT };
static const char *const event_keys[E_COUNT] = {"type",  "message", "content_block",
                                                "delta", "usage",   "error"};

/* Read by scanning the event in place (src/json.c): no tree but for errors and tool use. */
static int anthropic_stream_event(struct adapter_stream *s, const char *event, size_t event_len,
                                  const char *data, size_t len, adapter_emit_fn emit, void *ctx)
{
    struct anthropic_stream *st = s->state;
    struct json_span ev[E_COUNT];
    if (json_members(json_text(data, len), event_keys, E_COUNT, ev) != 0)
        return LLMUX_EPROTO;
    char type[64] = "";
    adapter_span_str(type, sizeof(type), ev[E_TYPE]);
    if (!type[0] && event_len < sizeof(type)) {
        memcpy(type, event, event_len);
        type[event_len] = 0;
    }
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    int rc = 0;
    if (strcmp(type, "message_start") == 0) {
        static const char *const keys[] = {"id", "model", "usage"};
        struct json_span m[3];
        if (json_type(ev[E_MESSAGE]) != JSON_OBJECT ||
            json_members(ev[E_MESSAGE], keys, 3, m) != 0) {
            rc = LLMUX_EPROTO;
        } else {
            adapter_span_str(st->who.id, sizeof(st->who.id), m[0]);
            adapter_span_str(st->who.model, sizeof(st->who.model), m[1]);
            usage_span(m[2], &st->usage);
            rc = adapter_emit_role(&st->who, s->req->include_usage, emit, ctx);
        }
    } else if (strcmp(type, "content_block_start") == 0) {
        rc = on_block(s, st, ev[E_BLOCK], 1, emit, ctx);
    } else if (strcmp(type, "content_block_delta") == 0) {
        rc = on_block(s, st, ev[E_DELTA], 0, emit, ctx);
    } else if (strcmp(type, "message_delta") == 0) {
        usage_span(ev[E_USAGE], &st->usage);
        if (st->finished) /* a later message_delta only updates the usage */
            return 0;
        st->finished = 1;
        ci.kind = CHUNK_CONTENT;
        ci.finish = 1;
        char stop[16] = ""; /* longer reasons are none of ours, and stay so when cut */
        adapter_span_str(stop, sizeof(stop), json_get(ev[E_DELTA], "stop_reason"));
        const char *finish = finish_of(stop);
        if (st->json && st->tools == 0 && strcmp(finish, "tool_calls") == 0)
            finish = "stop"; /* only the forced tool was called: a plain answer */
        rc = adapter_emit_delta(&st->who, s->req->include_usage, NULL, finish, &ci, emit, ctx);
    } else if (strcmp(type, "message_stop") == 0) {
        s->done = 1;
        ci.kind = CHUNK_CONTENT;
        ci.finish = 1;
        if (!st->finished) /* no message_delta came: the client still gets a finish reason */
            rc = adapter_emit_delta(&st->who, s->req->include_usage, NULL, "stop", &ci, emit, ctx);
        st->finished = 1;
        if (!rc && s->req->include_usage && st->usage.known)
            rc = adapter_emit_usage(&st->who, &st->usage, emit, ctx);
        if (!rc)
            rc = adapter_emit_done(&st->usage, emit, ctx);
    } else if (strcmp(type, "error") == 0) {
        cJSON *err = adapter_span_tree(ev[E_ERROR]);
        rc = adapter_anthropic_error_event(err, emit, ctx);
        cJSON_Delete(err);
    }
    /* content_block_stop, ping and event types added later: nothing to relay */
    return rc;
}

static int anthropic_stream_finish(struct adapter_stream *s, adapter_emit_fn emit, void *ctx)
{
    return s->done;
}

static void anthropic_stream_close(struct adapter_stream *s)
{
    struct anthropic_stream *st = s->state;
    if (st)
        buf_free(&st->text);
    free(st);
    s->state = NULL;
}

/* ---- errors ---- */

static enum verdict anthropic_decode_error(int status, const char *body, size_t len,
                                           struct buf *out, char *message, size_t message_size)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(err, "type");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    const char *text = cJSON_IsString(msg) ? msg->valuestring : NULL;
    enum verdict v = adapter_status_verdict(status);
    if (status == 529 || strcmp(t, "overloaded_error") == 0)
        v = VERDICT_RATE_LIMIT;
    else if (status == 400 && text && strcasestr(text, "prompt is too long"))
        v = VERDICT_CONTEXT_LENGTH;
    if (!t[0])
        t = status >= 500 ? "api_error" : "invalid_request_error";
    adapter_error_out(status, text, t,
                      v == VERDICT_CONTEXT_LENGTH ? "context_length_exceeded" : NULL, out, message,
                      message_size);
    cJSON_Delete(root);
    return v;
}

const struct adapter adapter_anthropic = {
    .kind = "anthropic",
    .prefill = 1,
    .encode = anthropic_encode,
    .stream_open = anthropic_stream_open,
    .stream_event = anthropic_stream_event,
    .stream_finish = anthropic_stream_finish,
    .stream_close = anthropic_stream_close,
    .decode_body = anthropic_decode_body,
    .decode_error = anthropic_decode_error,
};
