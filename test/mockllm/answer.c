/* answer.c: what mockllm says, whatever the wire format: the deterministic pieces of an answer
 * (token i is "w<i> ", padded by chunk_bytes; a tool call's arguments are MOCK_TOOL_ARGS cut in
 * MOCK_TOOL_FRAGMENT-byte pieces), embeddings, and where a continuation starts.
 *
 * Continuation: a chat request whose conversation ends with an assistant text (a prefill), or
 * with an assistant text and a user message starting with MOCK_CONTINUE_PREFIX, is answered with
 * the rest of the uninterrupted answer: the k tokens "w<i>" already in that text are skipped and
 * the answer goes on from w<k>. A text cut right after a token's digits (a prefill stripped of
 * its trailing whitespace) is finished first, so text + continuation is the whole answer.
 */
#include <ctype.h>
#include <string.h>

#include "mockllm.h"

static int pad_of(const struct reply *r)
{
    return r->s.chunk_bytes > 8 ? r->s.chunk_bytes - 8 : 0;
}

static void append_pad(struct buf *out, int n)
{
    for (int k = 0; k < n; k++)
        buf_append(out, "x", 1);
}

int mock_is_tool(const struct reply *r)
{
    return r->s.tool[0] && r->api == API_CHAT;
}

void mock_piece_text(const struct reply *r, int i, struct buf *out)
{
    if (mock_is_tool(r)) {
        size_t len = strlen(MOCK_TOOL_ARGS);
        size_t at = r->wire->tool_in_one_piece ? 0 : (size_t)i * MOCK_TOOL_FRAGMENT;
        size_t n = r->wire->tool_in_one_piece ? len : MOCK_TOOL_FRAGMENT;
        if (at < len)
            buf_append(out, MOCK_TOOL_ARGS + at, n < len - at ? n : len - at);
        return;
    }
    if (i == 0 && r->lead) { /* the rest of token first-1 */
        buf_append(out, " ", 1);
        append_pad(out, pad_of(r));
    }
    buf_printf(out, "w%d ", r->first + i);
    append_pad(out, pad_of(r));
}

void mock_answer_text(const struct reply *r, struct buf *out)
{
    for (int i = 0; i < r->pieces; i++)
        mock_piece_text(r, i, out);
}

void mock_embedding(int i, struct buf *out)
{
    for (int k = 0; k < 8; k++)
        buf_printf(out, "%s%.4f", k ? "," : "", (double)((i * 8 + k) % 10) / 10.0);
}

void mock_message_text(const cJSON *msg, struct buf *out)
{
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (cJSON_IsString(content)) {
        buf_append_str(out, content->valuestring);
        return;
    }
    const cJSON *parts =
        cJSON_IsArray(content) ? content : cJSON_GetObjectItemCaseSensitive(msg, "parts");
    const cJSON *p;
    cJSON_ArrayForEach(p, parts) {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (cJSON_IsString(text))
            buf_append_str(out, text->valuestring);
    }
}

static int has_role(const cJSON *msg, const char *role)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(msg, "role");
    return cJSON_IsString(r) && strcmp(r->valuestring, role) == 0;
}

int mock_find_continuation(const cJSON *msgs, const char *assistant_role, struct buf *text)
{
    int n = cJSON_GetArraySize(msgs);
    const cJSON *last = cJSON_GetArrayItem(msgs, n - 1);
    if (n >= 1 && has_role(last, assistant_role)) {
        mock_message_text(last, text);
        return 1;
    }
    const cJSON *before = cJSON_GetArrayItem(msgs, n - 2);
    if (n < 2 || !has_role(last, "user") || !has_role(before, assistant_role))
        return 0;
    struct buf ask;
    buf_init(&ask, 0);
    mock_message_text(last, &ask);
    int asks = strncmp(buf_head(&ask), MOCK_CONTINUE_PREFIX, strlen(MOCK_CONTINUE_PREFIX)) == 0;
    buf_free(&ask);
    if (!asks)
        return 0;
    mock_message_text(before, text);
    return 2;
}

void mock_continue_from(struct reply *r, const char *text, size_t len)
{
    int k = 0;
    r->lead = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] != 'w' || i + 1 >= len || !isdigit((unsigned char)text[i + 1]))
            continue;
        size_t j = i + 1;
        while (j < len && isdigit((unsigned char)text[j]))
            j++;
        if (j < len && text[j] == ' ') {
            k++;
        } else if (j == len) {
            k++;
            r->lead = 1;
        }
        i = j - 1;
    }
    r->first = k;
}
