/* llmux-translate-bench: the per-event cost of turning a provider's stream event into the
 * OpenAI chunk the client gets (adapter->stream_event plus the emit), for each provider kind,
 * and into the events of a client API with a codec (Messages, Responses: the emit then also
 * runs the codec's stream_chunk, as the exchange does).
 *
 *   build/bench/llmux-translate-bench [events [KIND [CLIENT]]]   (default 200000 per kind)
 *
 * KIND (openai, anthropic, gemini) and CLIENT (chat, messages, responses) run one pair only:
 * under callgrind, the instructions of N2 events minus those of N1 events, over N2 - N1, are
 * the exact instructions per event (bench/results/2026-12-02-adapter-scan.md).
 *
 * Each kind gets a realistic event: a ~5-token text delta in the provider's own JSON (OpenAI's
 * chunk is classified and forwarded as it is; Anthropic's content_block_delta and Gemini's
 * candidate are translated). The stream is opened once per 1000 events, as a long answer
 * would be. Reports the median and p99 of batches of 100 events, in ns per event; the target
 * (issues 4 and 10) is a median under 5 us. The passthrough rows ("(native)") are a client API
 * spoken by the provider itself (Messages to anthropic, Responses to an openai kind configured
 * native): the event is classified and re-framed, and the codec only observes it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "llmux/adapter.h"
#include "llmux/codec.h"

/* Anthropic's text delta and its stream's opening event (the translated and native rows). */
#define ANTHROPIC_EVENTS                                                                           \
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","          \
    "\"text\":\" the quick brown fox\"}}",                                                          \
        "message_start",                                                                           \
        "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\","         \
        "\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,"       \
        "\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}"

#define BATCH 100

struct kind {
    const char *name;
    const struct adapter *ad;
    const char *event;
    const char *data;
    const char *preamble_event, *preamble; /* fed once per stream */
};

/* Where the chunks go: counted, and through the client's codec when there is one. */
struct client {
    const struct client_codec *codec; /* NULL: chat */
    int native;                       /* a passthrough: the codec observes the relayed bytes */
    struct codec_stream cs;
    struct buf out;
    size_t bytes;
};

static int sink(void *ctx, const char *data, size_t len, const struct chunk_info *ci)
{
    struct client *c = ctx;
    c->bytes += len + (size_t)ci->kind;
    if (c->native) {
        c->codec->observe(&c->cs, data, len);
        return 0;
    }
    if (!c->codec || ci->kind == CHUNK_PREAMBLE) /* a codec never sees a preamble */
        return 0;
    buf_reset(&c->out);
    int rc = c->codec->stream_chunk(&c->cs, data, len, ci, NULL, &c->out);
    c->bytes += buf_size(&c->out);
    return rc;
}

static void client_reset(struct client *c)
{
    if (c->codec && c->codec->stream_free)
        c->codec->stream_free(&c->cs);
    memset(&c->cs, 0, sizeof(c->cs));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long events = argc > 1 ? atol(argv[1]) : 200000;
    const char *only_kind = argc > 2 ? argv[2] : NULL, *only_client = argc > 3 ? argv[3] : NULL;
    if (events < BATCH * 10)
        events = BATCH * 10;
    static const struct kind kinds[] = {
        {"openai", &adapter_openai, "",
         "{\"id\":\"chatcmpl-abc123\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
         "\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,"
         "\"delta\":{\"content\":\" the quick brown fox\"},\"logprobs\":null,"
         "\"finish_reason\":null}]}",
         NULL, NULL},
        {"anthropic", &adapter_anthropic, "content_block_delta",
         ANTHROPIC_EVENTS},
        {"gemini", &adapter_gemini, "",
         "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" the quick brown fox\"}],"
         "\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":12,"
         "\"candidatesTokenCount\":5,\"totalTokenCount\":17},\"modelVersion\":\"gemini-x\","
         "\"responseId\":\"r1\"}",
         NULL, NULL},
        {"openai (native)", &adapter_openai_responses, "response.output_text.delta",
         "{\"type\":\"response.output_text.delta\",\"sequence_number\":12,\"item_id\":"
         "\"msg_0123456789abcdef0123456789abcdef\",\"output_index\":0,\"content_index\":0,"
         "\"delta\":\" the quick brown fox\",\"logprobs\":[]}",
         "response.created",
         "{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":"
         "\"resp_0123456789abcdef\",\"object\":\"response\",\"created_at\":1700000000,"
         "\"status\":\"in_progress\",\"model\":\"gpt-5\",\"output\":[],\"usage\":null}}"},
        {"anthropic (native)", &adapter_anthropic_native, "content_block_delta",
         ANTHROPIC_EVENTS},
    };
    /* each translating kind to every client API, then each passthrough to its own */
    static const struct client_codec *const codecs[] = {NULL, &codec_messages, &codec_responses};
    struct run {
        size_t kind;
        const struct client_codec *codec;
        int native;
    } runs[11];
    size_t nruns = 0;
    for (size_t k = 0; k < 3; k++)
        for (size_t c = 0; c < 3; c++)
            runs[nruns++] = (struct run){k, codecs[c], 0};
    runs[nruns++] = (struct run){3, &codec_responses, 1};
    runs[nruns++] = (struct run){4, &codec_messages, 1};
    static const char body[] = "{\"model\":\"m\",\"stream\":true,\"messages\":[]}";
    struct canon_request req;
    memset(&req, 0, sizeof(req));
    req.endpoint = API_CHAT;
    req.body = body;
    req.body_len = sizeof(body) - 1;
    req.stream = 1;
    req.request_id = "bench";
    size_t nbatches = (size_t)(events / BATCH);
    uint64_t *per = malloc(nbatches * sizeof(*per));
    if (!per)
        return 1;
    printf("%-30s %12s %12s %12s\n", "kind -> client", "median ns", "p99 ns", "events");
    for (size_t r = 0; r < nruns; r++) {
        const struct kind *kd = &kinds[runs[r].kind];
        const char *client_name = runs[r].codec ? runs[r].codec->name : "chat";
        if ((only_kind && strcmp(only_kind, kd->name) != 0) ||
            (only_client && strcmp(only_client, client_name) != 0))
            continue;
        struct client cl;
        memset(&cl, 0, sizeof(cl));
        cl.codec = runs[r].codec;
        cl.native = runs[r].native;
        buf_init(&cl.out, 0);
        size_t elen = strlen(kd->event), dlen = strlen(kd->data);
        struct adapter_stream s;
        int open = 0;
        long done = 0;
        for (size_t b = 0; b < nbatches; b++) {
            if (!open || done % 1000 == 0) {
                if (open)
                    kd->ad->stream_close(&s);
                memset(&s, 0, sizeof(s));
                s.req = &req;
                s.model = "m";
                if (kd->ad->stream_open(&s) != 0)
                    return 1;
                open = 1;
                client_reset(&cl);
                if (kd->preamble)
                    kd->ad->stream_event(&s, kd->preamble_event, strlen(kd->preamble_event),
                                         kd->preamble, strlen(kd->preamble), sink, &cl);
            }
            uint64_t t0 = uv_hrtime();
            for (int i = 0; i < BATCH; i++) {
                if (kd->ad->stream_event(&s, kd->event, elen, kd->data, dlen, sink, &cl) != 0)
                    return 1;
            }
            per[b] = (uv_hrtime() - t0) / BATCH;
            done += BATCH;
        }
        if (open)
            kd->ad->stream_close(&s);
        client_reset(&cl);
        buf_free(&cl.out);
        qsort(per, nbatches, sizeof(*per), cmp_u64);
        char name[40];
        snprintf(name, sizeof(name), "%s -> %s", kd->name, client_name);
        printf("%-30s %12llu %12llu %12ld\n", name, (unsigned long long)per[nbatches / 2],
               (unsigned long long)per[nbatches * 99 / 100], done);
        if (cl.bytes == 0)
            return 1;
    }
    free(per);
    return 0;
}
