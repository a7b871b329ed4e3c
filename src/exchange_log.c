/* exchange_log: the one JSON access-log line per request (see src/exchange_int.h). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "exchange_int.h"

static void log_json_str(struct buf *b, const char *s, size_t n)
{
    buf_append(b, "\"", 1);
    buf_append_json_str(b, s, n);
    buf_append(b, "\"", 1);
}

/* Numbers without printf (this line is written for every request). */
static void put_int(struct buf *b, long long v)
{
    if (v < 0)
        buf_append(b, "-", 1);
    buf_append_uint(b, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v);
}

/* `,"key":N` */
static void log_num(struct buf *b, const char *key, long long v)
{
    buf_append(b, ",\"", 2);
    buf_append_str(b, key);
    buf_append(b, "\":", 2);
    put_int(b, v);
}

static void log_bool(struct buf *b, const char *key, int v)
{
    buf_append(b, ",\"", 2);
    buf_append_str(b, key);
    buf_append_str(b, v ? "\":true" : "\":false");
}

void exchange_log(struct exchange *ex)
{
    if (!ex->gw->access_log)
        return;
    static const char *const ep[] = {"chat", "completions", "embeddings"};
    uv_update_time(ex->gw->loop); /* the loop's cached time may be a whole iteration old */
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "{\"request_id\":\"");
    buf_append_str(&b, ex->request_id); /* plain characters only (api checks client ids) */
    buf_append_str(&b, "\",\"endpoint\":\"");
    buf_append_str(&b, ex->creq.codec ? ex->creq.codec->name : ep[ex->creq.endpoint]);
    buf_append_str(&b, "\",\"model\":");
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
    log_bool(&b, "stream", ex->creq.stream);
    log_num(&b, "status", ex->status);
    buf_append_str(&b, ",\"outcome\":\"");
    buf_append_str(&b, ex->outcome ? ex->outcome : "error");
    buf_append_str(&b, "\"");
    if (ex->end_reason[0]) {
        buf_append_str(&b, ",\"reason\":");
        log_json_str(&b, ex->end_reason, strlen(ex->end_reason));
    }
    log_bool(&b, "hedged", ex->hedged);
    log_bool(&b, "hedge_won", ex->hedge_won);
    log_num(&b, "continued", ex->continued);
    if (ex->plan.dropped)
        log_num(&b, "ejected_skipped", (long long)ex->plan.dropped);
    buf_append_str(&b, ",\"attempts\":[");
    for (size_t i = 0; i < ex->n_rec; i++) {
        const struct attempt_record *r = &ex->rec[i];
        buf_append_str(&b, i ? ",{\"provider\":" : "{\"provider\":");
        log_json_str(&b, r->provider->name, strlen(r->provider->name));
        buf_append_str(&b, ",\"model\":");
        log_json_str(&b, r->model, r->model_len);
        log_num(&b, "status", r->status);
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
        log_num(&b, "ms", (long long)r->ms);
        buf_append(&b, "}", 1);
    }
    buf_append(&b, "]", 1);
    log_num(&b, "bytes_in", (long long)ex->creq.body_len);
    log_num(&b, "bytes_out", (long long)ex->bytes_out);
    if (ex->t_first_byte)
        log_num(&b, "ttfb_ms", (long long)(ex->t_first_byte - ex->t_start));
    else
        buf_append_str(&b, ",\"ttfb_ms\":null");
    log_num(&b, "duration_ms", (long long)(uv_now(ex->gw->loop) - ex->t_start));
    log_num(&b, "overhead_us", (long long)(ex->busy_ns / 1000));
    const struct usage *u = &ex->usage;
    if (u->known) {
        buf_append_str(&b, ",\"usage\":{\"prompt_tokens\":");
        put_int(&b, u->prompt_tokens);
        log_num(&b, "completion_tokens", u->completion_tokens);
        log_num(&b, "total_tokens", u->total_tokens);
        log_num(&b, "cached_tokens", u->cached_tokens);
        buf_append(&b, "}", 1);
        const struct deployment *d = e ? e->deployment : NULL;
        if (d && d->price_in >= 0) {
            uint64_t c = exchange_cost_pico(d, u);
            buf_printf(&b, ",\"cost_usd\":%" PRIu64 ".%012" PRIu64, c / 1000000000000u,
                       c % 1000000000000u);
        }
    }
    buf_append_str(&b, "}\n");
    gateway_log(ex->gw, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

/* $1e-12 for `tokens` at `per_million` $ per million tokens (prices are kept to 1e-6 $/M). */
static uint64_t pico(long tokens, double per_million)
{
    return tokens > 0 && per_million > 0 ? (uint64_t)tokens * (uint64_t)llround(per_million * 1e6)
                                         : 0;
}

/* The cost of `u` at deployment d's prices in $1e-12, 0 when it has none: cached prompt
 * tokens at cache_read (else input), the rest of the prompt at input, output (reasoning
 * included) at output, plus the per-request price. */
uint64_t exchange_cost_pico(const struct deployment *d, const struct usage *u)
{
    if (!d || d->price_in < 0 || !u->known)
        return 0;
    long cached = u->cached_tokens > 0 && u->cached_tokens <= u->prompt_tokens ? u->cached_tokens : 0;
    return pico(u->prompt_tokens - cached, d->price_in) +
           pico(cached, d->price_cache_read >= 0 ? d->price_cache_read : d->price_in) +
           pico(u->completion_tokens, d->price_out) + pico(1000000, d->price_request);
}

void exchange_metrics(struct exchange *ex)
{
    struct runtime *rt = ex->rt;
    struct met_request q = {
        .endpoint = ex->creq.codec ? ex->creq.codec->metrics_endpoint : (int)ex->creq.endpoint,
        .status = ex->status,
        .input_tokens = ex->usage.known ? ex->usage.prompt_tokens : -1,
        .output_tokens = ex->usage.known ? ex->usage.completion_tokens : -1,
        .hedge_won = ex->hedge_won,
        .continuations = ex->continued,
    };
    uint64_t now = uv_now(ex->gw->loop);
    q.seconds = ex->creq.t_recv_ns ? (double)(uv_hrtime() - ex->creq.t_recv_ns) / 1e9
                                   : (double)(now - ex->t_start) / 1e3;
    for (size_t i = 0; i < ex->n_rec; i++) {
        q.hedges += ex->rec[i].hedge != 0;
        q.fallbacks += i > 0 && !ex->rec[i].hedge && !ex->rec[i].continuation;
    }
    const struct plan_entry *e = ex->winner && ex->status < 400 ? ex->winner->entry : NULL;
    struct route_metrics *r = e && e->deployment ? rt->routes[e->deployment->route_id] : NULL;
    if (r && ex->creq.stream && ex->t_first_byte) {
        q.ttfc = (double)(ex->t_first_byte - ex->t_start) / 1e3;
        long chunks = ex->output_chunks;
        if (chunks > 1) {
            q.tpoc_count = (uint64_t)(chunks - 1);
            q.tpoc = (double)(now - ex->t_first_byte) / 1e3 / (double)(chunks - 1);
        }
    }
    if (r)
        q.cost_pico = exchange_cost_pico(e->deployment, &ex->usage);
    struct alias_metrics *a =
        ex->plan.alias ? rt->aliases[(size_t)(ex->plan.alias - rt->cfg->models)] : NULL;
    metrics_request(a, r, &q);
}
