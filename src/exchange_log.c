/* exchange_log: the one JSON access-log line per request (see src/exchange_int.h). */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "exchange_int.h"
#include "llmux/json.h"

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
    if (ex->adm.key_name) {
        buf_append_str(&b, ",\"key\":");
        log_json_str(&b, ex->adm.key_name, strlen(ex->adm.key_name));
    }
    log_bool(&b, "stream", ex->creq.stream);
    if (ex->cache) {
        buf_append_str(&b, ",\"cache\":\"");
        buf_append_str(&b, cache_result_name(ex->cache));
        buf_append_str(&b, "\"");
    }
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
    if (ex->limited)
        log_num(&b, "limited_skipped", (long long)ex->limited);
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
        uint64_t served, spent;
        if (exchange_cost(ex, &served, &spent)) {
            buf_append_str(&b, ",\"cost_usd\":");
            buf_append_fixed(&b, served + spent, 12); /* $ */
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

int exchange_cost(const struct exchange *ex, uint64_t *served, uint64_t *spent)
{
    if (ex->cache == CACHE_HIT) { /* costs nothing; priced when the alias's first deployment is */
        const struct deployment *d = ex->plan.n ? ex->plan.entries[0].deployment : NULL;
        *served = *spent = 0;
        return d && d->price_in >= 0 && ex->served_usage.known;
    }
    const struct plan_entry *e = ex->winner ? ex->winner->entry : NULL;
    const struct deployment *d = e ? e->deployment : NULL;
    if (!d || d->price_in < 0 || !ex->served_usage.known)
        return 0;
    *served = exchange_cost_pico(d, &ex->served_usage);
    *spent = ex->spent_pico;
    return 1;
}

int exchange_cost_members(const struct exchange *ex, struct buf *out)
{
    uint64_t served, spent;
    if (!exchange_cost(ex, &served, &spent))
        return 0;
    buf_append_str(out, "\"cost\":");
    buf_append_fixed(out, served + spent, 12); /* $ */
    buf_append_str(out, ",\"cost_details\":{\"upstream_inference_cost\":");
    buf_append_fixed(out, served, 12); /* $ */
    buf_append_str(out, ",\"failed_attempts_cost\":");
    buf_append_fixed(out, spent, 12); /* $ */
    return buf_append_str(out, "}") == 0;
}

int exchange_cost_splice(const struct exchange *ex, const char *json, size_t len, struct buf *out)
{
    uint64_t served, spent;
    size_t s, e;
    if (!exchange_cost(ex, &served, &spent) || json_top_key(json, len, "usage", &s, &e) != 0 ||
        e - s < 2 || json[s] != '{' || json[e - 1] != '}')
        return 0;
    int empty = 1;
    for (size_t i = s + 1; i < e - 1 && empty; i++)
        empty = json[i] == ' ' || json[i] == '\n' || json[i] == '\r' || json[i] == '\t';
    buf_reset(out);
    buf_append(out, json, e - 1);
    if (!empty)
        buf_append_str(out, ",");
    exchange_cost_members(ex, out);
    return buf_append(out, json + e - 1, len - (e - 1)) == 0;
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
    if (r && ex->creq.stream && ex->commit_ns) {
        uint64_t end = uv_hrtime();
        q.ttfc = (double)(ex->commit_ns - (ex->creq.t_recv_ns ? ex->creq.t_recv_ns : ex->commit_ns)) / 1e9;
        q.has_ttfc = 1;
        long chunks = ex->output_chunks;
        if (chunks > 1) {
            q.tpoc_count = (uint64_t)(chunks - 1);
            q.tpoc = (double)(end - ex->commit_ns) / 1e9 / (double)(chunks - 1);
        }
    }
    uint64_t served, spent;
    if (r && exchange_cost(ex, &served, &spent))
        q.cost_pico = served + spent;
    struct alias_metrics *a =
        ex->plan.alias ? rt->aliases[(size_t)(ex->plan.alias - rt->cfg->models)] : NULL;
    metrics_request(a, r, &q);
}

void exchange_sniff_finish(struct exchange *ex, const char *json, size_t len)
{
    /* chat's and Anthropic's keys, then those of the client's API (its codec's) */
    static const char *const common[] = {"\"finish_reason\"", "\"stop_reason\""};
    const char *const *more = ex->creq.codec ? ex->creq.codec->finish_keys : NULL;
    size_t n_more = 0;
    while (more && more[n_more])
        n_more++;
    for (size_t k = 0; k < 2 + n_more && !ex->finish_reason[0]; k++) {
        const char *key = k < 2 ? common[k] : more[k - 2];
        size_t key_len = strlen(key);
        const char *p = memmem(json, len, key, key_len);
        if (!p)
            continue;
        const char *end = json + len;
        p += key_len;
        while (p < end && (*p == ' ' || *p == ':' || *p == '\n' || *p == '\r' || *p == '\t'))
            p++;
        if (p >= end || *p != '"') /* null: not yet */
            continue;
        size_t n = 0;
        for (p++; p < end && *p != '"' && *p != '\\' && n + 1 < sizeof(ex->finish_reason); p++)
            ex->finish_reason[n++] = (unsigned char)*p >= 0x20 ? *p : '?';
        ex->finish_reason[n] = 0;
    }
}

/* A string copied to the tail of record r: its offset in r. */
static uint32_t keep_str(struct gen_rec *r, char **tail, const char *s, size_t n)
{
    char *d = *tail;
    memcpy(d, s, n);
    d[n] = 0;
    *tail += n + 1;
    return (uint32_t)(d - (char *)r);
}

/* OpenRouter's generation record (GET /v1/generation?id=): one block holding the fields, the
 * attempts and their strings (built on the stack unless it is large), copied into the
 * worker's ring; formatted only when asked for. */
void exchange_generation(struct exchange *ex)
{
    struct gateway *gw = ex->gw;
    if (!gw->gens)
        return;
    static const char *const ep[] = {"chat", "completions", "embeddings"};
    const struct plan_entry *e = ex->winner && ex->status < 400 ? ex->winner->entry : NULL;
    size_t alias = strlen(ex->client_model), fin = strlen(ex->finish_reason);
    const char *endpoint = ex->creq.codec ? ex->creq.codec->name : ep[ex->creq.endpoint];
    const char *cache = ex->cache ? cache_result_name(ex->cache) : NULL;
    size_t strings = alias + 1 + (fin ? fin + 1 : 0) + strlen(endpoint) + 1 +
                     (cache ? strlen(cache) + 1 : 0) +
                     (e ? strlen(e->provider->name) + 1 + e->model_len + 1 : 0);
    for (size_t i = 0; i < ex->n_rec; i++)
        strings += strlen(ex->rec[i].provider->name) + 1 + ex->rec[i].model_len + 1 +
                   strlen(ex->rec[i].reason) + 1;
    size_t head = sizeof(struct gen_rec) + ex->n_rec * sizeof(struct gen_attempt);
    _Alignas(16) char space[2048];
    struct gen_rec *r = head + strings <= sizeof(space) ? (struct gen_rec *)space
                                                        : malloc(head + strings);
    if (!r)
        return;
    char *tail = (char *)r + head;
    uint64_t now = uv_now(gw->loop), served = 0, spent = 0;
    memcpy(r->id, ex->request_id, sizeof(r->id));
    r->alias = keep_str(r, &tail, ex->client_model, alias);
    r->endpoint = keep_str(r, &tail, endpoint, strlen(endpoint));
    r->provider = e ? keep_str(r, &tail, e->provider->name, strlen(e->provider->name)) : 0;
    r->upstream_model = e ? keep_str(r, &tail, e->model, e->model_len) : 0;
    r->finish = fin ? keep_str(r, &tail, ex->finish_reason, fin) : 0;
    r->cache = cache ? keep_str(r, &tail, cache, strlen(cache)) : 0;
    r->created = ex->created;
    r->status = ex->status;
    r->streamed = ex->creq.stream;
    r->latency_ms = e && ex->t_first_byte ? (long)(ex->t_first_byte - ex->t_start) : -1;
    r->generation_ms = e && ex->t_first_byte ? (long)(now - ex->t_first_byte) : -1;
    r->duration_ms = (long)(now - ex->t_start);
    r->usage_known = ex->usage.known;
    r->prompt = ex->usage.prompt_tokens;
    r->completion = ex->usage.completion_tokens;
    r->cached = ex->usage.cached_tokens;
    r->priced = exchange_cost(ex, &served, &spent);
    r->total_pico = served + spent;
    r->n_attempts = ex->n_rec;
    for (size_t i = 0; i < ex->n_rec; i++) {
        const struct attempt_record *a = &ex->rec[i];
        struct gen_attempt *g = &r->attempts[i];
        g->provider = keep_str(r, &tail, a->provider->name, strlen(a->provider->name));
        g->model = keep_str(r, &tail, a->model, a->model_len);
        g->error = a->served || !a->reason[0] ? 0 : keep_str(r, &tail, a->reason, strlen(a->reason));
        g->status = a->status;
        g->ms = a->ms;
        g->hedge = a->hedge;
        g->continuation = a->continuation;
        g->served = a->served;
        g->priced = a->served ? r->priced : a->cost_pico > 0;
        g->cost_pico = a->served ? served : a->cost_pico;
    }
    r->size = (size_t)(tail - (char *)r);
    generations_add(gw->gens, r, now);
    if ((char *)r != space)
        free(r);
}
