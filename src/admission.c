/* admission: the exchange's first step (EX_ADMITTING), between the router's plan and the
 * first attempt: a gateway key's budget and rate limits. It may answer by itself (429) and it
 * may wait (Redis), so it is a state of the exchange: a client that leaves while it waits is
 * cancelled like any other wait, and the reply that comes later finds the exchange ended and
 * gives back what it took.
 *
 * Without state.redis the counters are the shared-memory GCRA table of src/limits.c, exact
 * across the workers of one instance. With it they live in Redis, exact across instances: one
 * EVALSHA per admission (ADMIT below: budget, rpm and tpm decided and taken atomically on
 * Redis's clock) and one fire-and-forget EVALSHA at the end (SETTLE: the token estimate
 * corrected, the spend added). The shared-memory slot then mirrors the spend Redis last
 * reported, for /v1/status and /metrics. When Redis cannot answer, state.on_error decides:
 * "open" admits (the outage is logged once by src/redis.c), "closed" answers 503.
 *
 * Redis keys: PREFIX{k:NAME}:req and :tok (the GCRA theoretical arrival times, in Redis-time
 * microseconds, expiring when they fall back to now) and PREFIX{k:NAME}:spend:PERIOD (the
 * period's spend in $1e-12, expiring after the period for day and month budgets). The braces
 * keep a key's three in one Redis Cluster slot. */
#include <hiredis/hiredis.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "exchange_int.h"
#include "llmux/exchange.h"
#include "llmux/gateway.h"
#include "llmux/redis.h"

/* KEYS: req, tok, spend. ARGV: rpm, tpm, estimated tokens, budget ($1e-12, -1: none).
 * Returns {code, remaining_req, reset_req_us, remaining_tok, reset_tok_us, retry_us, spent}:
 * code 0 admitted (both taken), 1 over rpm, 2 over tpm, 4 over budget (nothing taken). */
static const char admit_lua[] =
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local W = 60000000\n"
    "local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local est, budget = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local spent = tonumber(redis.call('GET', KEYS[3]) or '0')\n"
    "if budget >= 0 and spent >= budget then return {4, 0, 0, 0, 0, 0, spent} end\n"
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
    "local okr, remr, resr, retr, nr = try(KEYS[1], rpm, 1)\n"
    "if not okr then return {1, remr, resr, 0, 0, retr, spent} end\n"
    "local okt, remt, rest, rett, nt = try(KEYS[2], tpm, est)\n"
    "if not okt then return {2, remr, resr, remt, rest, rett, spent} end\n"
    "if nr then redis.call('SET', KEYS[1], nr, 'PX', math.floor((nr - now) / 1000) + 1) end\n"
    "if nt then redis.call('SET', KEYS[2], nt, 'PX', math.floor((nt - now) / 1000) + 1) end\n"
    "return {0, remr, resr, remt, rest, 0, spent}\n";

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

/* The key's three Redis keys. */
struct redis_keys {
    char req[200], tok[200], spend[220];
};

static void redis_keys(const struct exchange *ex, struct redis_keys *k)
{
    const char *prefix = ex->rt->cfg->state.prefix;
    snprintf(k->req, sizeof(k->req), "%.80s{k:%.64s}:req", prefix, ex->adm.key_name);
    snprintf(k->tok, sizeof(k->tok), "%.80s{k:%.64s}:tok", prefix, ex->adm.key_name);
    snprintf(k->spend, sizeof(k->spend), "%.80s{k:%.64s}:spend:%llu", prefix, ex->adm.key_name,
             (unsigned long long)ex->adm.period);
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

/* SETTLE for ex's key: give back or charge `req` requests and `tok` tokens, add `pico`. */
static void settle_remote(struct exchange *ex, int64_t req, int64_t tok, uint64_t pico)
{
    const struct gateway_key *k = adm_key(ex);
    struct redis_keys rk;
    redis_keys(ex, &rk);
    char a[7][24];
    snprintf(a[0], 24, "%u", k->rpm);
    snprintf(a[1], 24, "%lld", (long long)req);
    snprintf(a[2], 24, "%u", k->tpm);
    snprintf(a[3], 24, "%lld", (long long)tok);
    snprintf(a[4], 24, "%llu", (unsigned long long)pico);
    snprintf(a[5], 24, "%d", k->budget_period == BUDGET_DAY     ? 2 * 86400
                             : k->budget_period == BUDGET_MONTH ? 63 * 86400
                                                                : 0);
    snprintf(a[6], 24, "%llu", (unsigned long long)ex->adm.period);
    const char *argv[] = {rk.req, rk.tok, rk.spend, a[0], a[1], a[2], a[3], a[4], a[5], a[6]};
    redis_script(ex->gw->redis, SCRIPT_SETTLE, 3, 10, argv, NULL, on_settled, ex->adm.slot);
}

static void on_admitted(void *data, redisReply *reply)
{
    struct exchange *ex = data;
    ex->adm_pending = 0;
    int ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 7;
    for (size_t i = 0; ok && i < 7; i++)
        ok = reply->element[i]->type == REDIS_REPLY_INTEGER;
    long long v[7] = {0};
    for (size_t i = 0; ok && i < 7; i++)
        v[i] = reply->element[i]->integer;
    if (ok)
        mirror_spend(ex->adm.slot, reply, 6, ex->adm.period);
    if (ex->state != EX_ADMITTING) { /* the client left (or the deadline came) meanwhile */
        if (ok && v[0] == 0)         /* what was taken goes back */
            settle_remote(ex, ex->adm.rpm ? -1 : 0, -(int64_t)ex->adm.est_tokens, 0);
        exchange_release(ex);
        return;
    }
    busy_enter(ex);
    if (!ok) {
        unavailable(ex);
    } else {
        ex->adm.remaining_req = (uint64_t)v[1];
        ex->adm.reset_req_us = (uint64_t)v[2];
        ex->adm.remaining_tok = (uint64_t)v[3];
        ex->adm.reset_tok_us = (uint64_t)v[4];
        if (v[0] == 0)
            exchange_go(ex);
        else
            refuse_limit(ex, (int)v[0], (uint64_t)v[5]);
    }
    busy_leave(ex);
    exchange_release(ex);
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
    if (ex->key < 0) {
        exchange_go(ex);
        return;
    }
    const struct gateway_key *k = adm_key(ex);
    adm->key_name = k->name;
    adm->slot = ex->rt->key_slots[ex->key];
    /* no limits, or the table is full (more than LIMITS_SLOTS key names): not limited */
    if (!adm->slot || !(k->rpm || k->tpm || k->budget_usd >= 0)) {
        exchange_go(ex);
        return;
    }
    adm->period = limits_period(k->budget_period, (int64_t)time(NULL));
    adm->rpm = k->rpm;
    adm->tpm = k->tpm;
    adm->est_tokens = k->tpm ? ex->creq.body_len / 4 + 1 : 0; /* prompt tokens, from the body */
    if (k->tpm && adm->est_tokens > k->tpm) { /* could never fit: no counter to ask */
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
    char a[4][24];
    snprintf(a[0], 24, "%u", k->rpm);
    snprintf(a[1], 24, "%u", k->tpm);
    snprintf(a[2], 24, "%llu", (unsigned long long)adm->est_tokens);
    snprintf(a[3], 24, "%lld",
             k->budget_usd >= 0 ? (long long)llround(k->budget_usd * 1e12) : -1ll);
    const char *argv[] = {rk.req, rk.tok, rk.spend, a[0], a[1], a[2], a[3]};
    if (redis_script(ex->gw->redis, SCRIPT_ADMIT, 3, 7, argv, NULL, on_admitted, ex) != 0) {
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
    if (ex->gw->redis) { /* the spend goes to Redis even when admission was not asked there */
        if (tok || (priced && served + spent))
            settle_remote(ex, 0, tok, priced ? served + spent : 0);
        return;
    }
    uint64_t now = uv_hrtime();
    if (tok)
        limits_adjust(&slot->tat_tok, ex->adm.tpm, tok, now);
    if (priced)
        limits_spend(slot, ex->adm.period, served + spent);
}
