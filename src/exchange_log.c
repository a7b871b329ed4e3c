/* exchange_log: the one JSON access-log line per request (see src/exchange_int.h). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "exchange_int.h"

static void log_json_str(struct buf *b, const char *s, size_t n)
{
    buf_append(b, "\"", 1);
    buf_append_json_str(b, s, n);
    buf_append(b, "\"", 1);
}

void exchange_log(struct exchange *ex)
{
    if (!ex->gw->access_log)
        return;
    static const char *const ep[] = {"chat", "completions", "embeddings"};
    uv_update_time(ex->gw->loop); /* the loop's cached time may be a whole iteration old */
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "{\"request_id\":\"%s\",\"endpoint\":\"%s\",\"model\":", ex->request_id,
               ep[ex->creq.endpoint]);
    log_json_str(&b, ex->client_model, strlen(ex->client_model));
    const struct plan_entry *e = ex->winner ? ex->winner->entry : NULL;
    if (e && ex->status < 400) {
        buf_append_str(&b, ",\"provider\":");
        log_json_str(&b, e->provider->name, strlen(e->provider->name));
        buf_append_str(&b, ",\"upstream_model\":");
        log_json_str(&b, e->model, e->model_len);
    } else {
        buf_append_str(&b, ",\"provider\":null,\"upstream_model\":null");
    }
    buf_printf(&b, ",\"stream\":%s,\"status\":%d,\"outcome\":\"%s\"",
               ex->creq.stream ? "true" : "false", ex->status,
               ex->outcome ? ex->outcome : "error");
    if (ex->end_reason[0]) {
        buf_append_str(&b, ",\"reason\":");
        log_json_str(&b, ex->end_reason, strlen(ex->end_reason));
    }
    buf_printf(&b, ",\"hedged\":%s,\"hedge_won\":%s,\"continued\":%d",
               ex->hedged ? "true" : "false", ex->hedge_won ? "true" : "false", ex->continued);
    if (ex->plan.dropped)
        buf_printf(&b, ",\"ejected_skipped\":%zu", ex->plan.dropped);
    buf_append_str(&b, ",\"attempts\":[");
    for (size_t i = 0; i < ex->n_rec; i++) {
        const struct attempt_record *r = &ex->rec[i];
        buf_append_str(&b, i ? ",{\"provider\":" : "{\"provider\":");
        log_json_str(&b, r->provider->name, strlen(r->provider->name));
        buf_append_str(&b, ",\"model\":");
        log_json_str(&b, r->model, r->model_len);
        buf_printf(&b, ",\"status\":%d", r->status);
        if (r->hedge)
            buf_append_str(&b, ",\"hedge\":true");
        if (r->continuation)
            buf_append_str(&b, ",\"continuation\":true");
        if (r->served)
            buf_append_str(&b, ",\"served\":true");
        if (r->reason[0] && !r->served) {
            buf_append_str(&b, ",\"error\":");
            log_json_str(&b, r->reason, strlen(r->reason));
        }
        buf_printf(&b, ",\"ms\":%" PRIu64 "}", r->ms);
    }
    buf_printf(&b, "],\"bytes_in\":%zu,\"bytes_out\":%" PRIu64, ex->creq.body_len, ex->bytes_out);
    if (ex->t_first_byte)
        buf_printf(&b, ",\"ttfb_ms\":%" PRIu64, ex->t_first_byte - ex->t_start);
    else
        buf_append_str(&b, ",\"ttfb_ms\":null");
    buf_printf(&b, ",\"duration_ms\":%" PRIu64 ",\"overhead_us\":%" PRIu64,
               uv_now(ex->gw->loop) - ex->t_start, ex->busy_ns / 1000);
    const struct usage *u = &ex->usage;
    if (u->known) {
        buf_printf(&b,
                   ",\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,"
                   "\"total_tokens\":%ld,\"cached_tokens\":%ld}",
                   u->prompt_tokens, u->completion_tokens, u->total_tokens, u->cached_tokens);
        const struct deployment *d = e ? e->deployment : NULL;
        if (d && d->price_in >= 0)
            buf_printf(&b, ",\"cost_usd\":%.8f",
                       ((double)u->prompt_tokens * d->price_in +
                        (double)u->completion_tokens * d->price_out) /
                           1e6);
    }
    buf_append_str(&b, "}\n");
    gateway_log(ex->gw, buf_head(&b), buf_size(&b));
    buf_free(&b);
}
