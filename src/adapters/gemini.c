/* adapters/gemini: the gemini kind, OpenAI chat completions and embeddings over Google AI
 * Studio's Gemini API (base_url e.g. https://generativelanguage.googleapis.com/v1beta), key in
 * the x-goog-api-key header. /v1/completions is LLMUX_EKIND.
 *
 * Chat: POST {base_path}/models/{model}:generateContent, or :streamGenerateContent?alt=sse
 * (a leading "models/" in the configured id is accepted). The client's body, re-encoded:
 *   - system and developer messages -> systemInstruction {parts:[{text}]};
 *   - user -> role "user", assistant -> role "model"; consecutive contents of the same role are
 *     merged; a content left without parts is dropped;
 *   - content parts: text -> {text}; image_url with a base64 data: URL -> {inlineData{mimeType,
 *     data}}, http(s) -> {fileData{fileUri}}; other parts -> LLMUX_EKIND;
 *   - assistant tool_calls -> {functionCall{name, args: the parsed arguments}}, with the call's
 *     extra_content.google.thought_signature (below) put back as the part's thoughtSignature
 *     (Gemini 3 refuses a function-calling turn whose calls lost it); a `tool` message
 *     -> a user part {functionResponse{name, response}}, the name being that of the latest
 *     earlier tool call with its tool_call_id, the response the content when it is a JSON object,
 *     else {"content": the text};
 *   - generationConfig: temperature, top_p -> topP, max_tokens/max_completion_tokens ->
 *     maxOutputTokens, stop -> stopSequences, seed, presence/frequency penalties;
 *     response_format json_object -> responseMimeType "application/json", json_schema -> also
 *     responseJsonSchema (Gemini's JSON-Schema field: OpenAI schemas carry
 *     additionalProperties, which the OpenAPI-subset responseSchema rejects); n > 1 is
 *     LLMUX_EKIND;
 *   - tools -> [{functionDeclarations:[{name, description, parametersJsonSchema}]}] (same
 *     reason); tool_choice -> toolConfig.functionCallingConfig mode AUTO, NONE, ANY, or ANY
 *     with allowedFunctionNames for a named function.
 *   - Continuation (req->prefix): with prefill (this kind's default) a trailing "model" content
 *     holding the delivered text, which Gemini continues; without, that content then a user
 *     one asking to continue.
 * Embeddings: POST {base_path}/models/{model}:batchEmbedContents, {requests:[{model:
 * "models/{model}", content:{parts:[{text}]}}...]} for a string or an array of strings
 * (dimensions -> outputDimensionality); {embeddings:[{values}]} -> OpenAI's list, as base64
 * float32 when the client asked for encoding_format "base64" (the OpenAI SDKs do by default).
 *
 * Response: candidates[0]'s text parts joined (thought parts skipped) and its functionCall
 * parts as tool_calls (id: the call's own id, else "call_<n>"; arguments: args serialized; the
 * part's thoughtSignature as extra_content.google.thought_signature, the shape of Google's own
 * OpenAI-compatible endpoint, so OpenAI clients that keep tool calls as they came send it back);
 * finishReason STOP -> "stop" ("tool_calls" when there was a call), MAX_TOKENS -> "length",
 * safety and recitation reasons -> "content_filter"; a prompt blocked without candidates ->
 * "content_filter"; usageMetadata -> usage (thoughts count as completion tokens).
 *
 * Stream (data-only SSE, each event a partial GenerateContentResponse, no end marker): the
 * first event is preceded by the role chunk (CHUNK_PREAMBLE); text parts -> content chunks; a
 * functionCall part -> one tool_calls delta with the whole arguments (and thought signature);
 * finishReason -> the finish chunk; {"error":{...}} -> CHUNK_ERROR. At the end of the body,
 * stream_finish emits the usage chunk (when asked for) and "[DONE]" if a finishReason was
 * seen; otherwise the stream was cut short.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmux/adapter.h"
#include "llmux/errors.h"

/* ---- request ---- */

/* "{base_path}/models/{model}{method}", the model as one escaped path segment. */
static int model_path(struct buf *path, const struct provider *p, const char *model, size_t len,
                      const char *method)
{
    if (len > 7 && memcmp(model, "models/", 7) == 0) {
        model += 7;
        len -= 7;
    }
    int rc = buf_printf(path, "%s/models/", p->base_path);
    if (!rc)
        rc = adapter_append_segment(path, model, len);
    if (!rc)
        rc = buf_printf(path, "%s", method);
    if (!rc)
        rc = buf_append(path, "", 1);
    return rc;
}

/* The contents being built: a new content merges into `last` when the roles match. */
struct conv {
    cJSON *contents;
    cJSON *last;
    cJSON *system; /* parts of systemInstruction, NULL until one */
};

static cJSON *text_part(const char *text)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "text", text);
    return p;
}

static void push_content(struct conv *c, const char *role, cJSON *parts)
{
    adapter_push_turn(c->contents, &c->last, role, "parts", parts);
}

/* An image part: inline base64 data of a media type, or (mime NULL) a file URI. */
static cJSON *image_part(const char *mime, const char *src)
{
    cJSON *p = cJSON_CreateObject();
    cJSON *d = cJSON_AddObjectToObject(p, mime ? "inlineData" : "fileData");
    if (mime)
        cJSON_AddStringToObject(d, "mimeType", mime);
    cJSON_AddStringToObject(d, mime ? "data" : "fileUri", src);
    return p;
}

static const struct content_makers makers = {text_part, image_part};

static int content_parts(const cJSON *content, cJSON *parts)
{
    return adapter_content_items(content, parts, &makers);
}

/* An assistant's tool_calls appended to parts as functionCall parts. */
static int call_parts(const cJSON *calls, cJSON *parts)
{
    const cJSON *tc;
    cJSON_ArrayForEach(tc, calls)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsString(name))
            return UV_EINVAL;
        cJSON *a = adapter_tool_arguments(args);
        if (!a)
            return UV_EINVAL;
        const cJSON *google = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(tc, "extra_content"), "google");
        const cJSON *sig = cJSON_GetObjectItemCaseSensitive(google, "thought_signature");
        cJSON *p = cJSON_CreateObject();
        cJSON *call = cJSON_AddObjectToObject(p, "functionCall");
        cJSON_AddStringToObject(call, "name", name->valuestring);
        cJSON_AddItemToObject(call, "args", a);
        if (cJSON_IsString(sig))
            cJSON_AddStringToObject(p, "thoughtSignature", sig->valuestring);
        cJSON_AddItemToArray(parts, p);
    }
    return 0;
}

/* The function name of the latest tool call with this id among messages before `upto`. */
static const char *call_name(const cJSON *messages, const cJSON *upto, const char *id)
{
    const char *found = NULL;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        if (m == upto)
            break;
        const cJSON *tc;
        cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(m, "tool_calls"))
        {
            const cJSON *tid = cJSON_GetObjectItemCaseSensitive(tc, "id");
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
            if (cJSON_IsString(tid) && strcmp(tid->valuestring, id) == 0 && cJSON_IsString(name))
                found = name->valuestring;
        }
    }
    return found;
}

/* A tool message as a functionResponse part. */
static int response_part(const cJSON *messages, const cJSON *m, cJSON *parts)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
    const cJSON *own = cJSON_GetObjectItemCaseSensitive(m, "name");
    const char *name = cJSON_IsString(id) ? call_name(messages, m, id->valuestring) : NULL;
    if (!name && cJSON_IsString(own))
        name = own->valuestring;
    if (!name)
        return UV_EINVAL;
    struct buf text;
    buf_init(&text, 0);
    int rc = adapter_content_text(cJSON_GetObjectItemCaseSensitive(m, "content"), &text);
    if (!rc)
        rc = buf_append(&text, "", 1);
    if (!rc) {
        cJSON *response = cJSON_Parse(text.data);
        if (!cJSON_IsObject(response)) {
            cJSON_Delete(response);
            response = cJSON_CreateObject();
            cJSON_AddStringToObject(response, "content", text.data);
        }
        cJSON *p = cJSON_CreateObject();
        cJSON *fr = cJSON_AddObjectToObject(p, "functionResponse");
        cJSON_AddStringToObject(fr, "name", name);
        cJSON_AddItemToObject(fr, "response", response);
        cJSON_AddItemToArray(parts, p);
    }
    buf_free(&text);
    return rc;
}

static int add_message(struct conv *c, const cJSON *messages, const cJSON *m)
{
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!cJSON_IsString(role))
        return UV_EINVAL;
    const char *r = role->valuestring;
    cJSON *parts = cJSON_CreateArray();
    int rc = 0;
    if (strcmp(r, "system") == 0 || strcmp(r, "developer") == 0) {
        struct buf text;
        buf_init(&text, 0);
        rc = adapter_content_text(content, &text);
        if (!rc && buf_size(&text) > 0 && buf_append(&text, "", 1) == 0) {
            if (!c->system)
                c->system = cJSON_CreateArray();
            cJSON_AddItemToArray(c->system, text_part(text.data));
        }
        buf_free(&text);
        cJSON_Delete(parts);
        return rc;
    }
    if (strcmp(r, "user") == 0) {
        rc = content_parts(content, parts);
    } else if (strcmp(r, "assistant") == 0) {
        rc = content_parts(content, parts);
        if (!rc)
            rc = call_parts(cJSON_GetObjectItemCaseSensitive(m, "tool_calls"), parts);
        r = "model";
    } else if (strcmp(r, "tool") == 0) {
        rc = response_part(messages, m, parts);
        r = "user";
    } else {
        rc = LLMUX_EKIND; /* the legacy "function" role */
    }
    if (rc) {
        cJSON_Delete(parts);
        return rc;
    }
    push_content(c, r, parts);
    return 0;
}

static void add_prefix(struct conv *c, const struct canon_request *req)
{
    char *text = strndup(req->prefix, req->prefix_len);
    cJSON *parts = cJSON_CreateArray();
    if (text && text[0])
        cJSON_AddItemToArray(parts, text_part(text));
    free(text);
    push_content(c, "model", parts);
    if (!req->prefill) {
        parts = cJSON_CreateArray();
        cJSON_AddItemToArray(parts, text_part(ADAPTER_CONTINUE_INSTRUCTION));
        push_content(c, "user", parts);
    }
}

/* Copy in.from (a number) to out.to. */
static void copy_number(cJSON *out, const char *to, const cJSON *in, const char *from)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, from);
    if (cJSON_IsNumber(v))
        cJSON_AddNumberToObject(out, to, v->valuedouble);
}

static void add_generation_config(cJSON *root, const cJSON *in)
{
    cJSON *g = cJSON_CreateObject();
    copy_number(g, "temperature", in, "temperature");
    copy_number(g, "topP", in, "top_p");
    copy_number(g, "maxOutputTokens", in,
                cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(in, "max_tokens"))
                    ? "max_tokens"
                    : "max_completion_tokens");
    copy_number(g, "seed", in, "seed");
    copy_number(g, "presencePenalty", in, "presence_penalty");
    copy_number(g, "frequencyPenalty", in, "frequency_penalty");
    cJSON *stop = adapter_stop_list(in);
    if (stop)
        cJSON_AddItemToObject(g, "stopSequences", stop);
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(in, "response_format");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
    if (cJSON_IsString(type) && (strcmp(type->valuestring, "json_object") == 0 ||
                                 strcmp(type->valuestring, "json_schema") == 0)) {
        cJSON_AddStringToObject(g, "responseMimeType", "application/json");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
        if (cJSON_IsObject(schema))
            cJSON_AddItemToObject(g, "responseJsonSchema", cJSON_Duplicate(schema, 1));
    }
    if (g->child)
        cJSON_AddItemToObject(root, "generationConfig", g);
    else
        cJSON_Delete(g);
}

static int add_tools(cJSON *root, const cJSON *in)
{
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(in, "tools");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(in, "tool_choice");
    if (!cJSON_IsArray(tools) || cJSON_GetArraySize(tools) == 0)
        return 0;
    cJSON *tool = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "tools"), tool);
    cJSON *decls = cJSON_AddArrayToObject(tool, "functionDeclarations");
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(fn, "description");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        if (!cJSON_IsString(name))
            return LLMUX_EKIND; /* not a function tool */
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "name", name->valuestring);
        if (cJSON_IsString(desc))
            cJSON_AddStringToObject(d, "description", desc->valuestring);
        if (cJSON_IsObject(params))
            cJSON_AddItemToObject(d, "parametersJsonSchema", cJSON_Duplicate(params, 1));
        cJSON_AddItemToArray(decls, d);
    }
    if (!choice)
        return 0;
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(choice, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    const char *mode = "AUTO";
    if (cJSON_IsString(name) ||
        (cJSON_IsString(choice) && strcmp(choice->valuestring, "required") == 0))
        mode = "ANY";
    else if (cJSON_IsString(choice) && strcmp(choice->valuestring, "none") == 0)
        mode = "NONE";
    cJSON *fcc = cJSON_AddObjectToObject(cJSON_AddObjectToObject(root, "toolConfig"),
                                         "functionCallingConfig");
    cJSON_AddStringToObject(fcc, "mode", mode);
    if (cJSON_IsString(name))
        cJSON_AddItemToArray(cJSON_AddArrayToObject(fcc, "allowedFunctionNames"),
                             cJSON_CreateString(name->valuestring));
    return 0;
}

static int build_chat(const struct canon_request *req, const cJSON *in, cJSON *root)
{
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(in, "messages");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(in, "n");
    if (!cJSON_IsArray(messages))
        return UV_EINVAL;
    if (cJSON_IsNumber(n) && n->valuedouble > 1)
        return LLMUX_EKIND;
    struct conv c = {cJSON_CreateArray(), NULL, NULL};
    cJSON_AddItemToObject(root, "contents", c.contents);
    int rc = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        rc = add_message(&c, messages, m);
        if (rc)
            break;
    }
    if (c.system)
        cJSON_AddItemToObject(cJSON_AddObjectToObject(root, "systemInstruction"), "parts",
                              c.system);
    if (rc)
        return rc;
    if (req->prefix)
        add_prefix(&c, req);
    add_generation_config(root, in);
    return add_tools(root, in);
}

static int build_embeddings(const char *model, size_t model_len, const cJSON *in, cJSON *root)
{
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(in, "input");
    const cJSON *dims = cJSON_GetObjectItemCaseSensitive(in, "dimensions");
    if (!cJSON_IsString(input) && !(cJSON_IsArray(input) && cJSON_GetArraySize(input) > 0))
        return UV_EINVAL;
    if (model_len > 7 && memcmp(model, "models/", 7) == 0) {
        model += 7;
        model_len -= 7;
    }
    struct buf name;
    buf_init(&name, 0);
    int rc = buf_printf(&name, "models/%.*s", (int)model_len, model);
    cJSON *reqs = cJSON_AddArrayToObject(root, "requests");
    const cJSON *item = cJSON_IsString(input) ? input : input->child;
    for (; !rc && item; item = cJSON_IsString(input) ? NULL : item->next) {
        if (!cJSON_IsString(item)) {
            rc = LLMUX_EKIND; /* token arrays: Gemini takes text only */
            break;
        }
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "model", name.data);
        cJSON_AddItemToArray(cJSON_AddArrayToObject(cJSON_AddObjectToObject(r, "content"), "parts"),
                             text_part(item->valuestring));
        if (cJSON_IsNumber(dims))
            cJSON_AddNumberToObject(r, "outputDimensionality", dims->valuedouble);
        cJSON_AddItemToArray(reqs, r);
    }
    buf_free(&name);
    return rc;
}

static int gemini_encode(const struct provider *p, const char *model, size_t model_len,
                         const struct canon_request *req, struct upstream_request *out)
{
    adapter_encode_init(out);
    if (req->endpoint == API_COMPLETIONS) {
        adapter_explain_refusal(req, NULL, "gemini", out->why, sizeof(out->why));
        return LLMUX_EKIND;
    }
    cJSON *in = cJSON_ParseWithLength(req->body, req->body_len);
    cJSON *root = cJSON_CreateObject();
    int rc = !cJSON_IsObject(in) ? UV_EINVAL : !root ? UV_ENOMEM : 0;
    const char *method = req->endpoint == API_EMBEDDINGS ? ":batchEmbedContents"
                         : req->stream                   ? ":streamGenerateContent?alt=sse"
                                                         : ":generateContent";
    if (!rc && req->endpoint == API_EMBEDDINGS)
        rc = build_embeddings(model, model_len, in, root);
    else if (!rc)
        rc = build_chat(req, in, root);
    if (rc == LLMUX_EKIND)
        adapter_explain_refusal(req, in, "gemini", out->why, sizeof(out->why));
    cJSON_Delete(in);
    struct buf path;
    buf_init(&path, 0);
    if (!rc)
        rc = model_path(&path, p, model, model_len, method);
    if (!rc)
        rc = adapter_encode_json(out, p, path.data, req, root, "x-goog-api-key", "");
    buf_free(&path);
    cJSON_Delete(root);
    return rc;
}

/* ---- responses ---- */

static const char *finish_reason(const char *r, int called)
{
    static const char *const filtered[] = {
        "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"};
    if (strcmp(r, "MAX_TOKENS") == 0)
        return "length";
    for (size_t i = 0; i < sizeof(filtered) / sizeof(filtered[0]); i++) {
        if (strcmp(r, filtered[i]) == 0)
            return "content_filter";
    }
    return called ? "tool_calls" : "stop"; /* STOP, OTHER, MALFORMED_FUNCTION_CALL... */
}

/* usageMetadata's counts, in this order. */
static const char *const usage_keys[] = {"promptTokenCount", "candidatesTokenCount",
                                         "thoughtsTokenCount", "totalTokenCount",
                                         "cachedContentTokenCount"};

static void set_usage(struct usage *u, const long n[5])
{
    u->prompt_tokens = n[0];
    u->completion_tokens = n[1] + n[2];
    u->total_tokens = n[3] ? n[3] : u->prompt_tokens + u->completion_tokens;
    u->cached_tokens = n[4];
    u->known = 1;
}

/* usageMetadata into u; returns whether there was one. */
static int read_usage(const cJSON *root, struct usage *u)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "usageMetadata");
    if (!cJSON_IsObject(m))
        return 0;
    long n[5];
    for (size_t i = 0; i < 5; i++)
        n[i] = adapter_json_long(m, usage_keys[i]);
    set_usage(u, n);
    return 1;
}

/* The same from the span of usageMetadata. */
static void usage_span(struct json_span um, struct usage *u)
{
    struct json_span m[5];
    if (json_members(um, usage_keys, 5, m) != 0) /* absent or not an object */
        return;
    long n[5];
    for (size_t i = 0; i < 5; i++)
        n[i] = adapter_span_long(m[i]);
    set_usage(u, n);
}

/* A functionCall part as an OpenAI tool call (index n when with_index); NULL without a name. */
static cJSON *tool_call(const cJSON *part, int n, int with_index)
{
    const cJSON *call = cJSON_GetObjectItemCaseSensitive(part, "functionCall");
    const cJSON *sig = cJSON_GetObjectItemCaseSensitive(part, "thoughtSignature");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(call, "name");
    const cJSON *gid = cJSON_GetObjectItemCaseSensitive(call, "id");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(call, "args");
    char *text = args ? cJSON_PrintUnformatted(args) : NULL;
    char id[96];
    if (cJSON_IsString(gid) && gid->valuestring[0])
        snprintf(id, sizeof(id), "%s", gid->valuestring);
    else
        snprintf(id, sizeof(id), "call_%d", n);
    cJSON *tc = cJSON_IsString(name) ? adapter_tool_call(with_index ? n : -1, id, name->valuestring,
                                                         text ? text : "{}")
                                     : NULL;
    free(text);
    if (tc && cJSON_IsString(sig))
        cJSON_AddStringToObject(
            cJSON_AddObjectToObject(cJSON_AddObjectToObject(tc, "extra_content"), "google"),
            "thought_signature", sig->valuestring);
    return tc;
}

/* A part that is the model's thinking, not its answer. */
static int is_thought(const cJSON *part)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(part, "thought"));
}

static const cJSON *first_candidate(const cJSON *root)
{
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "candidates"), 0);
}

static int prompt_blocked(const cJSON *root)
{
    const cJSON *fb = cJSON_GetObjectItemCaseSensitive(root, "promptFeedback");
    return cJSON_IsString(cJSON_GetObjectItemCaseSensitive(fb, "blockReason"));
}

static int decode_chat(const char *model, const cJSON *root, struct buf *out, struct usage *u)
{
    const cJSON *cand = first_candidate(root);
    if (!cJSON_IsObject(cand) && !prompt_blocked(root))
        return LLMUX_EPROTO;
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cand, "content"), "parts");
    struct buf text;
    buf_init(&text, 0);
    cJSON *calls = cJSON_CreateArray();
    int n = 0, rc = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, parts)
    {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
        const cJSON *call = cJSON_GetObjectItemCaseSensitive(p, "functionCall");
        cJSON *tc = cJSON_IsObject(call) ? tool_call(p, n++, 0) : NULL;
        if (cJSON_IsString(t) && !is_thought(p))
            buf_append_str(&text, t->valuestring);
        else if (cJSON_IsObject(call) && !tc)
            rc = LLMUX_EPROTO;
        cJSON_AddItemToArray(calls, tc);
    }
    read_usage(root, u);
    char id[96] = "";
    adapter_copy_str(id, sizeof(id), cJSON_GetObjectItemCaseSensitive(root, "responseId"));
    if (!id[0])
        adapter_new_id(id, sizeof(id), "chatcmpl-");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "modelVersion");
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(cand, "finishReason");
    const char *finish =
        !cand ? "content_filter" : finish_reason(cJSON_IsString(fr) ? fr->valuestring : "", n);
    if (!rc && buf_size(&text) > 0)
        rc = buf_append(&text, "", 1);
    if (!rc)
        rc = adapter_write_completion(out, id,
                                      cJSON_IsString(version) ? version->valuestring : model,
                                      buf_size(&text) ? text.data : NULL, calls, finish, u);
    else
        cJSON_Delete(calls);
    buf_free(&text);
    return rc;
}

static int gemini_decode_body(const struct canon_request *req, const char *model, const char *body,
                              size_t len, struct buf *out, struct usage *u)
{
    memset(u, 0, sizeof(*u));
    cJSON *root = cJSON_ParseWithLength(body, len);
    int rc = LLMUX_EPROTO;
    if (cJSON_IsObject(root) && req->endpoint == API_EMBEDDINGS) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "embeddings");
        if (cJSON_IsArray(list))
            rc = adapter_write_embeddings(out, req, model, list, "values");
    } else if (cJSON_IsObject(root)) {
        rc = decode_chat(model, root, out, u);
    }
    cJSON_Delete(root);
    if (rc)
        memset(u, 0, sizeof(*u));
    return rc;
}

/* ---- streams ---- */

struct gemini_stream {
    struct chunk_ident who;
    struct usage usage;
    int started;  /* the role chunk went out */
    int calls;    /* tool calls emitted: the next index */
    int finished; /* a finishReason was seen */
    struct buf text; /* a text with escapes, decoded (allocated with the first one) */
};

static int gemini_stream_open(struct adapter_stream *s)
{
    struct gemini_stream *st = calloc(1, sizeof(*st));
    if (!st)
        return UV_ENOMEM;
    buf_init(&st->text, 0);
    adapter_new_id(st->who.id, sizeof(st->who.id), "chatcmpl-");
    snprintf(st->who.model, sizeof(st->who.model), "%s", s->model ? s->model : "");
    st->who.created = (long long)time(NULL);
    s->state = st;
    return 0;
}

/* Google's error object: verdict-like retryability from its code and status. */
static int retryable(int code, const char *status)
{
    return code == 429 || code >= 500 || strcmp(status, "RESOURCE_EXHAUSTED") == 0 ||
           strcmp(status, "UNAVAILABLE") == 0 || strcmp(status, "INTERNAL") == 0;
}

static int emit_error(const cJSON *err, adapter_emit_fn emit, void *ctx)
{
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(err, "status");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const char *st = cJSON_IsString(status) ? status->valuestring : "";
    int retry = retryable(cJSON_IsNumber(code) ? code->valueint : 0, st);
    const char *text = cJSON_IsString(msg) ? msg->valuestring : "the provider reported an error";
    return adapter_emit_error(text, retry ? "server_error" : "invalid_request_error",
                              st[0] ? st : NULL, retry, emit, ctx);
}

/* The chunks of one part: text (not thoughts), read in place, or a whole function call (from
 * a tree of the part). */
static int emit_part(struct adapter_stream *s, struct gemini_stream *st, struct json_span part,
                     adapter_emit_fn emit, void *ctx)
{
    static const char *const keys[] = {"text", "functionCall", "thought"};
    struct json_span m[3];
    json_members(part, keys, 3, m); /* not an object: nothing found */
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_CONTENT;
    if (json_type(m[0]) == JSON_STRING && json_type(m[2]) != JSON_TRUE) {
        int rc = adapter_span_text(&st->text, m[0], &ci.text, &ci.text_len);
        if (rc)
            return rc;
        if (ci.text_len > 0)
            return adapter_emit_text(&st->who, s->req->include_usage, ci.text, ci.text_len, &ci,
                                     emit, ctx);
    }
    if (json_type(m[1]) != JSON_OBJECT)
        return 0;
    cJSON *p = adapter_span_tree(part);
    cJSON *tc = tool_call(p, st->calls++, 1);
    cJSON_Delete(p);
    if (!tc)
        return LLMUX_EPROTO;
    cJSON *delta = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(delta, "tool_calls"), tc);
    ci.tool_call = 1;
    return adapter_emit_delta(&st->who, s->req->include_usage, delta, NULL, &ci, emit, ctx);
}

/* A response chunk's members, in the order of the spans below. */
enum { R_ERROR, R_ID, R_VERSION, R_USAGE, R_CANDIDATES, R_FEEDBACK, R_COUNT };
static const char *const response_keys[R_COUNT] = {
    "error", "responseId", "modelVersion", "usageMetadata", "candidates", "promptFeedback"};

static int on_response(struct adapter_stream *s, struct gemini_stream *st,
                       const struct json_span *r, adapter_emit_fn emit, void *ctx)
{
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    int rc = 0;
    if (!st->started) {
        st->started = 1;
        adapter_span_str(st->who.id, sizeof(st->who.id), r[R_ID]);
        adapter_span_str(st->who.model, sizeof(st->who.model), r[R_VERSION]);
        rc = adapter_emit_role(&st->who, s->req->include_usage, emit, ctx);
    }
    usage_span(r[R_USAGE], &st->usage);
    size_t pos = 0;
    struct json_span cand = {0}, p;
    int has_cand = json_next(r[R_CANDIDATES], &pos, &cand) == 0; /* the first */
    struct json_span parts = has_cand ? json_get(cand, "content.parts") : cand;
    for (pos = 0; json_next(parts, &pos, &p) == 0;) {
        if (rc)
            return rc;
        rc = emit_part(s, st, p, emit, ctx);
    }
    struct json_span fr = has_cand ? json_get(cand, "finishReason") : cand;
    int blocked =
        !has_cand && json_type(json_get(r[R_FEEDBACK], "blockReason")) == JSON_STRING;
    if (rc || st->finished || (json_type(fr) != JSON_STRING && !blocked))
        return rc;
    st->finished = 1;
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_CONTENT;
    ci.finish = 1;
    char reason[32] = ""; /* longer reasons are none of ours, and stay so when cut */
    adapter_span_str(reason, sizeof(reason), fr);
    return adapter_emit_delta(&st->who, s->req->include_usage, NULL,
                              blocked ? "content_filter" : finish_reason(reason, st->calls), &ci,
                              emit, ctx);
}

/* Read by scanning the chunk in place (src/json.c): no tree but for errors and function calls.
 * An error may come as [{"error":...}]. */
static int gemini_stream_event(struct adapter_stream *s, const char *event, size_t event_len,
                               const char *data, size_t len, adapter_emit_fn emit, void *ctx)
{
    struct gemini_stream *st = s->state;
    struct json_span root = json_text(data, len), first;
    size_t i = 0, pos = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
        i++;
    if (i < len && data[i] == '[') {
        if (!json_valid(data, len) || json_next(root, &pos, &first) != 0 ||
            json_type(first) != JSON_OBJECT)
            return LLMUX_EPROTO;
        root = first;
    }
    struct json_span r[R_COUNT];
    if (json_members(root, response_keys, R_COUNT, r) != 0)
        return LLMUX_EPROTO;
    if (json_type(r[R_ERROR]) != JSON_OBJECT)
        return on_response(s, st, r, emit, ctx);
    cJSON *err = adapter_span_tree(r[R_ERROR]);
    int rc = emit_error(err, emit, ctx);
    cJSON_Delete(err);
    return rc;
}

static int gemini_stream_finish(struct adapter_stream *s, adapter_emit_fn emit, void *ctx)
{
    struct gemini_stream *st = s->state;
    if (!st->finished)
        return 0;
    int rc = 0;
    if (s->req->include_usage && st->usage.known)
        rc = adapter_emit_usage(&st->who, &st->usage, emit, ctx);
    if (!rc)
        rc = adapter_emit_done(&st->usage, emit, ctx);
    s->done = 1;
    return 1;
}

static void gemini_stream_close(struct adapter_stream *s)
{
    struct gemini_stream *st = s->state;
    if (st)
        buf_free(&st->text);
    free(st);
    s->state = NULL;
}

/* ---- errors ---- */

static enum verdict gemini_decode_error(int status, const char *body, size_t len, struct buf *out,
                                        char *message, size_t message_size)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *top = cJSON_IsArray(root) ? root->child : root; /* [{"error":...}] too */
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(top, "error");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(err, "status");
    const char *text = cJSON_IsString(msg) ? msg->valuestring : NULL;
    const char *gstatus = cJSON_IsString(st) ? st->valuestring : "";
    /* an invalid key is a 400 INVALID_ARGUMENT here: this deployment's problem */
    int bad_key = text && strstr(text, "API key not valid") != NULL;
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(err, "details"))
    {
        const cJSON *reason = cJSON_GetObjectItemCaseSensitive(d, "reason");
        bad_key |= cJSON_IsString(reason) && strcmp(reason->valuestring, "API_KEY_INVALID") == 0;
    }
    enum verdict v = adapter_status_verdict(status);
    if (strcmp(gstatus, "RESOURCE_EXHAUSTED") == 0)
        v = VERDICT_RATE_LIMIT;
    else if (strcmp(gstatus, "UNAVAILABLE") == 0 || bad_key)
        v = VERDICT_RETRY;
    else if (status == 400 && text && strcasestr(text, "input token count") &&
             strcasestr(text, "exceeds the maximum"))
        v = VERDICT_CONTEXT_LENGTH;
    const char *code = v == VERDICT_CONTEXT_LENGTH ? "context_length_exceeded"
                       : gstatus[0]                ? gstatus
                                                   : NULL;
    adapter_error_out(status, text, NULL, code, out, message, message_size);
    cJSON_Delete(root);
    return v;
}

const struct adapter adapter_gemini = {
    .kind = "gemini",
    .prefill = 1,
    .encode = gemini_encode,
    .stream_open = gemini_stream_open,
    .stream_event = gemini_stream_event,
    .stream_finish = gemini_stream_finish,
    .stream_close = gemini_stream_close,
    .decode_body = gemini_decode_body,
    .decode_error = gemini_decode_error,
};
