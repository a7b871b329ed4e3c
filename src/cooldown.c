/* cooldown: a deployment's Retry-After cooldown, shared between llmux instances through Redis
 * (state.redis). The instance that receives a provider's 429/503 with Retry-After writes
 * PREFIXdep:HASH:cool with that lifetime (fire and forget); every worker reads the remaining
 * lifetimes (PTTL, pipelined) once a second and cools its own health records down until then,
 * so the other instances stop sending to the provider within a second instead of each
 * learning it from a 429 of its own. A poll round is one small allocation, freed when its
 * last reply (or the connection's failure) comes back; a reload in between drops the round's
 * answers, which the next round repeats. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>

#include "llmux/cooldown.h"
#include "llmux/health.h"
#include "llmux/redis.h"

#define POLL_MS 1000

struct poll_item {
    struct poll_round *round;
    size_t id; /* health id in the runtime of `generation` */
};

struct poll_round {
    struct gateway *gw;
    uint64_t generation;
    size_t pending;
    struct poll_item item[];
};

static void cool_key(const struct gateway *gw, const struct deployment *d, char *out, size_t n)
{
    snprintf(out, n, "%.80s%s:cool", gw->rt->cfg->state.prefix, d->limit_name);
}

void cooldown_share(struct gateway *gw, const struct deployment *d, uint64_t ms)
{
    if (!gw->redis || !ms)
        return;
    char key[136], px[24];
    cool_key(gw, d, key, sizeof(key));
    snprintf(px, sizeof(px), "%llu", (unsigned long long)ms);
    const char *argv[] = {"SET", key, "1", "PX", px};
    redis_command(gw->redis, 5, argv, NULL, NULL, NULL);
}

static void on_pttl(void *data, redisReply *reply)
{
    struct poll_item *it = data;
    struct poll_round *r = it->round;
    struct gateway *gw = r->gw;
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0 &&
        gw->rt->generation == r->generation && it->id < gw->rt->health->n)
        health_cooldown(gw->rt->health, it->id, uv_now(gw->loop), (uint64_t)reply->integer, NULL);
    if (--r->pending == 0)
        free(r);
}

static void on_poll(uv_timer_t *t)
{
    struct gateway *gw = t->data;
    const struct health *h = gw->rt->health;
    if (!redis_up(gw->redis) || h->n == 0)
        return;
    struct poll_round *r = malloc(sizeof(*r) + h->n * sizeof(r->item[0]));
    if (!r)
        return;
    r->gw = gw;
    r->generation = gw->rt->generation;
    r->pending = 1; /* held while sending */
    for (size_t i = 0; i < h->n; i++) {
        char key[136];
        cool_key(gw, h->dep[i], key, sizeof(key));
        const char *argv[] = {"PTTL", key};
        r->item[i] = (struct poll_item){r, i};
        r->pending++;
        if (redis_command(gw->redis, 2, argv, NULL, on_pttl, &r->item[i]) != 0)
            r->pending--;
    }
    if (--r->pending == 0)
        free(r);
}

void cooldown_init(struct gateway *gw)
{
    uv_timer_init(gw->loop, &gw->cooldown_timer);
    uv_unref((uv_handle_t *)&gw->cooldown_timer); /* never keeps the loop alive */
    gw->cooldown_timer.data = gw;
    gw->cooldown_on = 1;
}

void cooldown_start(struct gateway *gw)
{
    if (gw->cooldown_on && !uv_is_active((uv_handle_t *)&gw->cooldown_timer))
        uv_timer_start(&gw->cooldown_timer, on_poll, POLL_MS, POLL_MS);
}

void cooldown_stop(struct gateway *gw)
{
    if (gw->cooldown_on)
        uv_timer_stop(&gw->cooldown_timer);
}

void cooldown_close(struct gateway *gw)
{
    if (!gw->cooldown_on)
        return;
    gw->cooldown_on = 0;
    uv_close((uv_handle_t *)&gw->cooldown_timer, NULL); /* embedded: freed with the gateway */
}
