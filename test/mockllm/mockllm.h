/* mockllm.h: what mockllm's core (mockllm.c: routing, scripts, pacing) shares with its wire
 * formats (openai.c, responses.c, anthropic.c, gemini.c).
 *
 * The core turns every API request into one struct reply and decides WHAT to answer: an error,
 * a reset, a stall, or an answer of `pieces` pieces (content tokens "w<i> ", or fragments of a
 * tool call's JSON arguments) paced by a timer. A struct wire decides HOW it looks on the wire
 * for one provider: it reads the request body and writes bodies, stream events and errors.
 * Wire functions never free the reply or end the response; the core does.
 */
#ifndef MOCKLLM_H
#define MOCKLLM_H

#include <cjson/cJSON.h>
#include <uv.h>

#include "llmux/buf.h"
#include "llmux/server.h"

/* The arguments of every scripted tool call, and the size of the pieces they stream in. */
#define MOCK_TOOL_ARGS "{\"city\":\"Paris\",\"unit\":\"celsius\",\"days\":3}"
#define MOCK_TOOL_FRAGMENT 8
/* A user message starting with this asks to continue the assistant message before it. */
#define MOCK_CONTINUE_PREFIX "Continue your previous message exactly where it stopped"

enum api { API_CHAT, API_COMPLETIONS, API_EMBEDDINGS };

/* A parsed script (README.md, "Scripts"); -1 means "off" for reset_after, stall_after,
 * error_after, prefill's default is 1. */
struct script {
    int delay, ttft, tokens, tps, status, retry_after, fail_every, reset_after, stall_after;
    int chunk_bytes, context_window, error_after, prefill;
    int stamp; /* OpenAI stream chunks carry "mock_ts": their send time (uv_hrtime ns) */
    int thought_signature; /* Gemini 3: functionCall parts carry a thoughtSignature, and the
                              current turn's calls must come back with theirs */
    int echo_key;   /* a scripted error's message quotes the API key it received */
    int thinking;   /* Anthropic: the answer opens with a thinking block and its signature */
    int cached;     /* OpenAI: usage.prompt_tokens_details.cached_tokens (of prompt_tokens) */
    char malformed[8];
    char tool[64];
    char error_type[48];
    char after_done[8]; /* "reset" or "stall": what follows the end marker (no chunked end) */
};

/* An error answer before any byte of the response: the wire renders it in its provider's shape.
 * type NULL: the provider's type for the status. */
struct mock_error {
    int status;
    const char *type;
    const char *code;  /* OpenAI's error.code (NULL: null) */
    const char *param; /* OpenAI's error.param (NULL: null) */
    char message[256];
};

struct wire;

/* One API request being answered. Owned by the core; freed in the timer's close callback. */
struct reply {
    uv_timer_t timer;
    struct server_req *req; /* NULL once the response ended or the client went away */
    const struct wire *wire;
    struct script s;
    enum api api;
    int stream, include_usage;
    int max_tokens;          /* the request's cap on answer tokens; -1: none */
    int first;               /* index of the first token: > 0 continues an assistant text */
    int lead;                /* the text to continue ends inside token first-1: finish it first */
    int pieces;              /* pieces in the answer (tokens, or tool argument fragments) */
    int capped;              /* max_tokens cut the answer short */
    int sent;                /* pieces sent so far */
    int phase;               /* 0: before the head, 1: streaming */
    int prompt_tokens;       /* body bytes / 4 + 1 */
    int inputs;              /* embeddings: number of inputs */
    int embed_single;        /* Gemini :embedContent (one embedding, not a list) */
    struct mock_error error; /* status != 0: the answer is this error, after `delay` */
    char model[128];         /* the model reported (without its script) */
    char id[48];             /* response id, in the provider's style */
    char tool_id[48];        /* tool call id, in the provider's style */
    char request_id[32];     /* Anthropic's request-id header */
    unsigned long long seq;  /* the request's number, for ids */
    long events;             /* Responses: the next stream event's sequence_number */
    int custom;              /* Responses: the scripted tool is a custom (freeform) tool */
    long long created;
};

struct wire {
    /* Reads the request: stream, max_tokens, the text to continue (mock_find_continuation),
     * inputs, and the provider's own checks. Returns 0, or fills e and returns -1. */
    int (*read)(struct reply *r, const cJSON *body, struct mock_error *e);
    /* The provider's error body for e. */
    void (*error_body)(const struct reply *r, const struct mock_error *e, struct buf *out);
    /* The provider's "prompt too long" error: m prompt tokens, n the window. */
    void (*context_error)(const struct reply *r, int m, int n, struct mock_error *e);
    /* The whole non-stream answer body. */
    void (*full)(const struct reply *r, struct buf *out);
    /* Stream events after the head and before the first piece (may be none). */
    void (*stream_head)(struct reply *r);
    /* The stream event(s) carrying piece i. */
    void (*stream_piece)(struct reply *r, int i);
    /* The events that end a complete stream. */
    void (*stream_end)(struct reply *r);
    /* An in-stream error event (error_after). */
    void (*stream_error)(struct reply *r, const struct mock_error *e);
    int stream_error_status;   /* the status whose error stream_error sends */
    const char *garbage_body;  /* malformed=json, non-stream: truncated JSON */
    const char *garbage_event; /* malformed=json, stream: a truncated event, SSE-framed */
    const char *sse_eol;       /* "\n", or "\r\n" for Google's framing */
    int tool_in_one_piece;     /* a tool call streams whole (Gemini), not in fragments */
    int request_id;            /* every response carries a request-id header (Anthropic) */
};

extern const struct wire wire_openai, wire_anthropic, wire_gemini, wire_responses;

/* openai.c's pieces the Responses wire (responses.c) shares: a JSON string of s; the text of
 * piece i (i < 0: the whole answer) as the inside of a JSON string; OpenAI's error body and
 * context-length error. */
void mock_json_str(struct buf *b, const char *s);
void mock_text_json(const struct reply *r, int i, struct buf *out);
void mock_openai_error_body(const struct reply *r, const struct mock_error *e, struct buf *out);
void mock_openai_context_error(const struct reply *r, int m, int n, struct mock_error *e);

/* Whether the answer is a tool call (script `tool` on a chat request). */
int mock_is_tool(const struct reply *r);
/* Appends the raw text of piece i (a token, or a fragment of MOCK_TOOL_ARGS). */
void mock_piece_text(const struct reply *r, int i, struct buf *out);
/* Appends the raw text of the whole answer. */
void mock_answer_text(const struct reply *r, struct buf *out);
/* Appends the 8 numbers of embedding i, comma-separated. */
void mock_embedding(int i, struct buf *out);
/* Writes one SSE event: `event: NAME` when name is not NULL, then `data: DATA`. */
void mock_sse(struct reply *r, const char *name, const char *data, size_t len);
/* The text of a message of any provider ("content" string or parts, "parts"), appended. */
void mock_message_text(const cJSON *msg, struct buf *out);
/* Looks at the end of a conversation (OpenAI/Anthropic "messages", Gemini "contents").
 * Returns 1 when it ends with an assistant message (prefill), 2 when it ends with an assistant
 * message and a user message asking to continue it, else 0; for 1 and 2 the assistant text is
 * appended to text. */
int mock_find_continuation(const cJSON *msgs, const char *assistant_role, struct buf *text);
/* Sets r->first and r->lead from the assistant text to continue. */
void mock_continue_from(struct reply *r, const char *text, size_t len);

#endif
