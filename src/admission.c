/* admission: the exchange's first step (EX_ADMITTING), between the router's plan and the
 * first attempt: a gateway key's budget and rate limits. It may answer by itself (429) and it
 * may wait (Redis), so it is a state of the exchange: a client that leaves while it waits is
 * cancelled like any other wait, and the reply that comes later finds the exchange ended and
 * gives back what it took.
 *
 * Without state.redis the counters are the shared-memory GCRA table of src/limits.c, exact
 * across the workers of one instance, and the deployments' own rpm/tpm are taken when an
 * attempt starts (exchange.c, deployment_admit). With it they live in Redis, exact across
 * instances: one EVALSHA per admission (ADMIT below: the key's budget, rpm and tpm, and the
 * plan's deployments with limits, decided atomically on Redis's clock: the first deployment
 * that fits is charged, the others are reported as fitting or limited) and one
 * fire-and-forget EVALSHA at the end (SETTLE: the token estimate corrected, the spend added).
 * A later attempt (failover, hedge) on a deployment that fitted at admission charges it
 * fire-and-forget too. Requests whose key and deployments have no limits never ask Redis. The shared-memory slot then mirrors the spend Redis last
 * reported, for /v1/status and /metrics. When Redis cannot answer, state.on_error decides:
 * "open" admits (the outage is logged once by src/redis.c), "closed" answers 503.
 *
 * Redis keys: PREFIXkey:NAME:req and :tok (the GCRA theoretical arrival times, in Redis-time
 * microseconds, expiring when they fall back to now), PREFIXkey:NAME:spend:PERIOD (the
 * period's spend in $1e-12, expiring after the period for day and month budgets) and
 * PREFIXdep:HASH:req and :tok for a deployment (HASH: of its provider name and upstream model,
 * so instances with the same config share them). One script touches several of them: one
 * Redis (or a primary with replicas), not a Redis Cluster. */
#include <hiredis/hiredis.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "exchange_int.h"
#include "llmux/exchange.h"
#include "llmux/gateway.h"
#include "llmux/redis.h"

/* KEYS: the key's req, tok, spend, then each deployment's req and tok. ARGV: the key's rpm,
 * tpm, the estimated tokens, the budget ($1e-12, -1: none), the number of deployments, then
 * each one's rpm and tpm (0: no such limit). Returns {code, remaining_req, reset_req_us,
 * remaining_tok, reset_tok_us, retry_us, spent, pick, then per deployment 0 (fits) or the
 * microseconds until it would}: code 0 admitted (the key's limits and the deployment `pick`,
 * 0-based, -1 for none, taken), 1 over rpm, 2 over tpm, 4 over budget (nothing taken). */
static const char admit_lua[] =
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local W = 60000000\n"
    "local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local est, budget = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local spent = tonumber(redis.call('GET', KEYS[3]) or '0')\n"
    "if budget >= 0 and spent >= budget then return {4, 0, 0, 0, 0, 0, spent, -1} end\n"
    "local function try(key, per, cost)\n"
    "  if per == 0 then return true, 0, 0, 0, nil end\n"
    "  local T = W / per\n"
    "  local base = math.max(tonumber(redis.call('GET', key) or '0'), now)\n"
    "  local nxt = base + cost * T\n"
    "  if nxt - now > W then\n"
    "    return false, math.floor((W - (base - now)) / T), base - now, nxt - now - W, nil\n"
    "  end\n"
    "  return true, math.floor((W - (nxt - now)) / T), nxt - now, 0, nxt\n"
    "end\n"
    "local function put(key, nxt)\n"
    "  if nxt then redis.call('SET', key, nxt, 'PX', math.floor((nxt - now) / 1000) + 1) end\n"
    "end\n"
    "local okr, remr, resr, retr, nr = try(KEYS[1], rpm, 1)\n"
    "if not okr then return {1, remr, resr, 0, 0, retr, spent, -1} end\n"
    "local okt, remt, rest, rett, nt = try(KEYS[2], tpm, est)\n"
    "if not okt then return {2, remr, resr, remt, rest, rett, spent, -1} end\n"
    "put(KEYS[1], nr)\n"
    "put(KEYS[2], nt)\n"
    "local out = {0, remr, resr, remt, rest, 0, spent, -1}\n"
    "for i = 1, tonumber(ARGV[5]) do\n"
    "  local kr, kt = KEYS[2 + 2 * i], KEYS[3 + 2 * i]\n"
    "  local ok1, _, _, ret1, n1 = try(kr, tonumber(ARGV[4 + 2 * i]), 1)\n"
    "  local ok2, _, _, ret2, n2 = try(kt, tonumber(ARGV[5 + 2 * i]), est)\n"
    "  if ok1 and ok2 then\n"
    "    out[8 + i] = 0\n"
    "    if out[8] < 0 then out[8] = i - 1; put(kr, n1); put(kt, n2) end\n"
    "  else out[8 + i] = math.max(ret1, ret2, 1) end\n"
    "end\n"
    "return out\n";

/* KEYS: req, tok, spend. ARGV: rpm, request delta, tpm, token delta, spend ($1e-12), the
 * spend key's lifetime in seconds (0: none), the period. Returns {spent, period}. */
static const char settle_lua[] =
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local W = 60000000\n"
    "local function adjust(key, per, delta)\n"
    "  if per == 0 or delta == 0 then return end\n"
    "  local T = W / per\n"
    "  local tat = tonumber(redis.call('GET', key) or '0')\n"
    "  local base = math.max(tat, now)\n"
    "  local moved = delta * T\n"
    "  local nxt = base + moved\n"
    "  if moved < 0 and -moved > base - now then nxt = math.min(tat, now) end\n"
    "  if nxt <= now then redis.call('DEL', key)\n"
    "  else redis.call('SET', key, nxt, 'PX', math.floor((nxt - now) / 1000) + 1) end\n"
    "end\n"
    "adjust(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))\n"
    "adjust(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))\n"
    "local spent\n"
    "if ARGV[5] ~= '0' then\n"
    "  spent = redis.call('INCRBY', KEYS[3], ARGV[5])\n"
    "  if ARGV[6] ~= '0' then redis.call('EXPIRE', KEYS[3], ARGV[6]) end\n"
    "else spent = tonumber(redis.call('GET', KEYS[3]) or '0') end\n"
    "return {spent, tonumber(ARGV[7])}\n";

const char *const exchange_redis_scripts[EXCHANGE_REDIS_SCRIPTS] = {admit_lua, settle_lua};

enum { SCRIPT_ADMIT, SCRIPT_SETTLE };

/* The Redis keys of one admission: the gateway key's three, each deployment's two. */
struct redis_keys {
    char req[160], tok[160], spend[180];
    char dep[DEPS_MAX][2][136];
};

static void redis_keys(const struct exchange *ex, struct redis_keys *k)
{
    const char *prefix = ex->rt->cfg->state.prefix;
    const char *name = ex->adm.key_name ? ex->adm.key_name : "";
    snprintf(k->req, sizeof(k->req), "%.80skey:%.64s:req", prefix, name);
    snprintf(k->tok, sizeof(k->tok), "%.80skey:%.64s:tok", prefix, name);
    snprintf(k->spend, sizeof(k->spend), "%.80skey:%.64s:spend:%llu", prefix, name,
             (unsigned long long)ex->adm.period);
}

static void dep_keys(const struct exchange *ex, const struct deployment *d, char out[2][136])
{
    const char *prefix = ex->rt->cfg->state.prefix;
    snprintf(out[0], 136, "%.80s%s:req", prefix, d->limit_name);
    snprintf(out[1], 136, "%.80s%s:tok", prefix, d->limit_name);
}

static int dep_limited(const struct plan_entry *e)
{
    return e->deployment && (e->deployment->rpm || e->deployment->tpm);
}

static const struct gateway_key *adm_key(const struct exchange *ex)
{
    return &ex->rt->cfg->keys[ex->key];
}

/* The 429 of a limit: its message and OpenAI's type and code. */
static void refuse_limit(struct exchange *ex, int which, uint64_t retry_us)
{
    const struct gateway_key *k = adm_key(ex);
    char msg[200];
    if (which == 4) {
        static const char *const per[] = {"", " for this day (UTC)", " for this month (UTC)"};
        snprintf(msg, sizeof(msg), "Key '%.64s' has used its budget of $%g%s.", k->name,
                 k->budget_usd, per[k->budget_period]);
        ex->adm.rpm = ex->adm.tpm = 0; /* nothing was counted: no rate-limit headers */
        exchange_refuse(ex, 429, "insufficient_quota", "insufficient_quota", msg, 0, 0);
        return;
    }
    snprintf(msg, sizeof(msg), "Rate limit reached for key '%.64s': %u %s per minute.", k->name,
             which == 1 ? k->rpm : k->tpm, which == 1 ? "requests" : "tokens");
    exchange_refuse(ex, 429, which == 1 ? "requests" : "tokens", "rate_limit_exceeded", msg,
                    retry_us, 1);
}

/* Redis could not answer: state.on_error decides. */
static void unavailable(struct exchange *ex)
{
    ex->adm.rpm = ex->adm.tpm = 0;
    ex->adm.est_tokens = 0;
    if (ex->rt->cfg->state.fail_closed) {
        exchange_refuse(ex, 503, "service_unavailable", "state_unavailable",
                        "Shared state (Redis) is unavailable and state.on_error is \"closed\": "
                        "requests of keys with limits are refused until it is back.",
                        1000000, 1);
        return;
    }
    exchange_go(ex);
}

/* The shared-memory slot mirrors the spend Redis reported. */
static void mirror_spend(struct limit_slot *slot, const redisReply *r, size_t at, uint64_t period)
{
    if (slot && r->elements > at && r->element[at]->type == REDIS_REPLY_INTEGER)
        limits_spend_seen(slot, period, (uint64_t)r->element[at]->integer);
}

static void on_settled(void *data, redisReply *reply)
{
    struct limit_slot *slot = data; /* shared memory: lives as long as the process */
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[1]->type == REDIS_REPLY_INTEGER)
        mirror_spend(slot, reply, 0, (uint64_t)reply->element[1]->integer);
}

/* SETTLE on the limits at Redis keys req/tok (rpm, tpm: their limits) and spend: give back
 * or charge `req` requests and `tok` tokens, add `pico` to the spend. Fire and forget. */
static void settle_remote(struct exchange *ex, const char *req_key, const char *tok_key,
                          const char *spend_key, uint32_t rpm, int64_t req, uint32_t tpm,
                          int64_t tok, uint64_t pico, struct limit_slot *mirror)
{
    int bp = ex->key >= 0 ? (int)adm_key(ex)->budget_period : BUDGET_TOTAL;
    char a[7][24];
    snprintf(a[0], 24, "%u", rpm);
    snprintf(a[1], 24, "%lld", (long long)req);
    snprintf(a[2], 24, "%u", tpm);
    snprintf(a[3], 24, "%lld", (long long)tok);
    snprintf(a[4], 24, "%llu", (unsigned long long)pico);
    snprintf(a[5], 24, "%d", bp == BUDGET_DAY ? 2 * 86400 : bp == BUDGET_MONTH ? 63 * 86400 : 0);
    snprintf(a[6], 24, "%llu", (unsigned long long)ex->adm.period);
    const char *argv[] = {req_key, tok_key, spend_key, a[0], a[1], a[2], a[3], a[4], a[5], a[6]};
    redis_script(ex->gw->redis, SCRIPT_SETTLE, 3, 10, argv, NULL, mirror ? on_settled : NULL,
                 mirror);
}

/* The key's own settle: its counters and spend. */
static void settle_key(struct exchange *ex, int64_t req, int64_t tok, uint64_t pico)
{
    struct redis_keys rk;
    redis_keys(ex, &rk);
    settle_remote(ex, rk.req, rk.tok, rk.spend, ex->adm.rpm, req, ex->adm.tpm, tok, pico,
                  ex->adm.slot);
}

static void on_admitted(void *data, redisReply *reply)
{
    struct exchange *ex = data;
    ex->adm_pending = 0;
    /* a refusal ends at the key (8 elements); an admission reports every deployment too */
    int ok = reply && reply->type == REDIS_REPLY_ARRAY &&
             (reply->elements == 8 || reply->elements == 8 + ex->n_dep_remote);
    for (size_t i = 0; ok && i < reply->elements; i++)
        ok = reply->element[i]->type == REDIS_REPLY_INTEGER;
    long long v[8] = {0};
    for (size_t i = 0; ok && i < 8; i++)
        v[i] = reply->element[i]->integer;
    if (ok && ex->adm.slot)
        mirror_spend(ex->adm.slot, reply, 6, ex->adm.period);
    if (ex->state != EX_ADMITTING) { /* the client left (or the deadline came) meanwhile */
        if (ok && v[0] == 0) {       /* what was taken goes back */
            if (ex->adm.rpm || ex->adm.tpm)
                settle_key(ex, ex->adm.rpm ? -1 : 0, -(int64_t)ex->adm.est_tokens, 0);
            if (v[7] >= 0 && (size_t)v[7] < ex->n_dep_remote) {
                const struct deployment *d = ex->plan.entries[ex->dep_entry[v[7]]].deployment;
                char k[2][136];
                dep_keys(ex, d, k);
                settle_remote(ex, k[0], k[1], k[1], d->rpm, -1, d->tpm,
                              -(int64_t)(ex->creq.body_len / 4 + 1), 0, NULL);
            }
        }
        exchange_release(ex);
        return;
    }
    busy_enter(ex);
    if (!ok) {
        unavailable(ex);
    } else if (v[0] != 0) {
        refuse_limit(ex, (int)v[0], (uint64_t)v[5]);
    } else if (reply->elements != 8 + ex->n_dep_remote) {
        unavailable(ex); /* not the script's answer */
    } else {
        ex->adm.remaining_req = (uint64_t)v[1];
        ex->adm.reset_req_us = (uint64_t)v[2];
        ex->adm.remaining_tok = (uint64_t)v[3];
        ex->adm.reset_tok_us = (uint64_t)v[4];
        ex->dep_pick = v[7] >= 0 && (size_t)v[7] < ex->n_dep_remote ? (int)ex->dep_entry[v[7]] : -1;
        for (size_t i = 0; i < ex->n_dep_remote; i++) /* microseconds -> ms, 0: it fits */
            ex->dep_retry_ms[ex->dep_entry[i]] =
                (uint32_t)((reply->element[8 + i]->integer + 999) / 1000);
        ex->dep_remote = 1;
        exchange_go(ex);
    }
    busy_leave(ex);
    exchange_release(ex);
}

void admission_charge_deployment(struct exchange *ex, const struct plan_entry *e)
{
    const struct deployment *d = e->deployment;
    char k[2][136];
    dep_keys(ex, d, k);
    settle_remote(ex, k[0], k[1], k[1], d->rpm, d->rpm ? 1 : 0, d->tpm,
                  d->tpm ? (int64_t)(ex->creq.body_len / 4 + 1) : 0, 0, NULL);
}

/* Local: the shared-memory table (exact across this instance's workers). */
static void admit_local(struct exchange *ex)
{
    const struct gateway_key *k = adm_key(ex);
    struct limit_slot *slot = ex->adm.slot;
    struct admission *adm = &ex->adm;
    if (k->budget_usd >= 0 &&
        limits_spent(slot, adm->period) >= (uint64_t)llround(k->budget_usd * 1e12)) {
        refuse_limit(ex, 4, 0);
        return;
    }
    uint64_t now = uv_hrtime(), retry = 0;
    if (k->rpm && !limits_take(&slot->tat_req, k->rpm, 1, now, &adm->remaining_req,
                               &adm->reset_req_us, &retry)) {
        refuse_limit(ex, 1, retry);
        return;
    }
    if (k->tpm && !limits_take(&slot->tat_tok, k->tpm, adm->est_tokens, now,
                               &adm->remaining_tok, &adm->reset_tok_us, &retry)) {
        if (k->rpm) /* the request was not made: its request unit goes back */
            limits_adjust(&slot->tat_req, k->rpm, -1, now);
        refuse_limit(ex, 2, retry);
        return;
    }
    exchange_go(ex);
}

void admission_start(struct exchange *ex)
{
    struct admission *adm = &ex->adm;
    memset(adm, 0, sizeof(*adm));
    ex->dep_pick = -1;
    const struct gateway_key *k = ex->key >= 0 ? adm_key(ex) : NULL;
    if (k) {
        adm->key_name = k->name;
        adm->slot = ex->rt->key_slots[ex->key];
    }
    /* the table is full (more than LIMITS_SLOTS key names): the key is not limited */
    int key_limited = k && adm->slot && (k->rpm || k->tpm || k->budget_usd >= 0);
    if (ex->gw->redis) /* the plan's deployments with limits are decided in the same trip */
        for (size_t i = 0; i < ex->plan.n && ex->n_dep_remote < DEPS_MAX; i++)
            if (dep_limited(&ex->plan.entries[i]))
                ex->dep_entry[ex->n_dep_remote++] = (uint8_t)i;
    if (!key_limited && !ex->n_dep_remote) {
        exchange_go(ex);
        return;
    }
    uint64_t est = ex->creq.body_len / 4 + 1; /* prompt tokens, estimated from the body */
    if (key_limited) {
        adm->limited = 1;
        adm->period = limits_period(k->budget_period, (int64_t)time(NULL));
        adm->rpm = k->rpm;
        adm->tpm = k->tpm;
        adm->est_tokens = k->tpm ? est : 0;
    }
    if (adm->tpm && adm->est_tokens > adm->tpm) { /* could never fit: no counter to ask */
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "Request too large for key '%.64s': about %llu tokens, limit %u per minute.",
                 k->name, (unsigned long long)adm->est_tokens, k->tpm);
        adm->rpm = adm->tpm = 0;
        exchange_refuse(ex, 429, "tokens", "rate_limit_exceeded", msg, 0, 0);
        return;
    }
    if (!ex->gw->redis) {
        admit_local(ex);
        return;
    }
    struct redis_keys rk;
    redis_keys(ex, &rk);
    char a[5 + 2 * DEPS_MAX][24];
    const char *argv[8 + 4 * DEPS_MAX];
    int n = 0;
    argv[n++] = rk.req;
    argv[n++] = rk.tok;
    argv[n++] = rk.spend;
    for (size_t i = 0; i < ex->n_dep_remote; i++) {
        dep_keys(ex, ex->plan.entries[ex->dep_entry[i]].deployment, rk.dep[i]);
        argv[n++] = rk.dep[i][0];
        argv[n++] = rk.dep[i][1];
    }
    snprintf(a[0], 24, "%u", adm->rpm);
    snprintf(a[1], 24, "%u", adm->tpm);
    snprintf(a[2], 24, "%llu", (unsigned long long)est);
    snprintf(a[3], 24, "%lld",
             key_limited && k->budget_usd >= 0 ? (long long)llround(k->budget_usd * 1e12) : -1ll);
    snprintf(a[4], 24, "%zu", ex->n_dep_remote);
    for (size_t i = 0; i < ex->n_dep_remote; i++) {
        const struct deployment *d = ex->plan.entries[ex->dep_entry[i]].deployment;
        snprintf(a[5 + 2 * i], 24, "%u", d->rpm);
        snprintf(a[6 + 2 * i], 24, "%u", d->tpm);
    }
    int n_keys = n;
    for (size_t i = 0; i < 5 + 2 * ex->n_dep_remote; i++)
        argv[n++] = a[i];
    if (redis_script(ex->gw->redis, SCRIPT_ADMIT, n_keys, n, argv, NULL, on_admitted, ex) != 0) {
        ex->n_dep_remote = 0;
        unavailable(ex);
        return;
    }
    ex->adm_pending = 1;
    ex->handles++; /* the reply comes back to ex, whatever happens to it meanwhile */
}

void exchange_settle(struct exchange *ex)
{
    struct limit_slot *slot = ex->adm.slot;
    if (!slot || ex->adm_pending)
        return;
    uint64_t served = 0, spent = 0;
    int priced = exchange_cost(ex, &served, &spent);
    /* the estimate, corrected to what was used */
    int64_t tok = ex->adm.tpm && ex->usage.known
                      ? (int64_t)ex->usage.total_tokens - (int64_t)ex->adm.est_tokens
                      : 0;
    if (ex->gw->redis && ex->adm.limited) { /* also when Redis could not be asked (open) */
        if (tok || (priced && served + spent))
            settle_key(ex, 0, tok, priced ? served + spent : 0);
        return;
    }
    uint64_t now = uv_hrtime();
    if (tok)
        limits_adjust(&slot->tat_tok, ex->adm.tpm, tok, now);
    if (priced)
        limits_spend(slot, ex->adm.period, served + spent);
}
