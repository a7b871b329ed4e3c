/* llmux-translate-bench: the per-event cost of turning a provider's stream event into the
 * OpenAI chunk the client gets (adapter->stream_event plus the emit), for each provider kind.
 *
 *   build/bench/llmux-translate-bench [events]     (default 200000 per kind)
 *
 * Each kind gets a realistic event: a ~5-token text delta in the provider's own JSON (OpenAI's
 * chunk is classified and forwarded as it is; Anthropic's content_block_delta and Gemini's
 * candidate are translated). The stream is opened once per 1000 events, as a long answer
 * would be. Reports the median and p99 of batches of 100 events, in ns per event; the target
 * (issue 4) is a median under 5 us.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "llmux/adapter.h"

#define BATCH 100

struct kind {
    const char *name;
    const struct adapter *ad;
    const char *event;
    const char *data;
    const char *preamble_event, *preamble; /* fed once per stream */
};

static int sink(void *ctx, const char *data, size_t len, const struct chunk_info *ci)
{
    size_t *bytes = ctx;
    *bytes += len + (size_t)ci->kind;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long events = argc > 1 ? atol(argv[1]) : 200000;
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
         "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
         "\"text\":\" the quick brown fox\"}}",
         "message_start",
         "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\","
         "\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,"
         "\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}"},
        {"gemini", &adapter_gemini, "",
         "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" the quick brown fox\"}],"
         "\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":12,"
         "\"candidatesTokenCount\":5,\"totalTokenCount\":17},\"modelVersion\":\"gemini-x\","
         "\"responseId\":\"r1\"}",
         NULL, NULL},
    };
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
    printf("%-10s %12s %12s %12s\n", "kind", "median ns", "p99 ns", "events");
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        const struct kind *kd = &kinds[k];
        size_t bytes = 0, elen = strlen(kd->event), dlen = strlen(kd->data);
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
                if (kd->preamble)
                    kd->ad->stream_event(&s, kd->preamble_event, strlen(kd->preamble_event),
                                         kd->preamble, strlen(kd->preamble), sink, &bytes);
            }
            uint64_t t0 = uv_hrtime();
            for (int i = 0; i < BATCH; i++) {
                if (kd->ad->stream_event(&s, kd->event, elen, kd->data, dlen, sink, &bytes) != 0)
                    return 1;
            }
            per[b] = (uv_hrtime() - t0) / BATCH;
            done += BATCH;
        }
        if (open)
            kd->ad->stream_close(&s);
        qsort(per, nbatches, sizeof(*per), cmp_u64);
        printf("%-10s %12llu %12llu %12ld\n", kd->name, (unsigned long long)per[nbatches / 2],
               (unsigned long long)per[nbatches * 99 / 100], done);
        if (bytes == 0)
            return 1;
    }
    free(per);
    return 0;
}
