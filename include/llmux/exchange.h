/* exchange: one client request from first byte to last, driven through an explicit state
 * machine (see src/exchange.c for the states, the failure classes and the retry rule). */
#ifndef LLMUX_EXCHANGE_H
#define LLMUX_EXCHANGE_H

#include "llmux/adapter.h"
#include "llmux/gateway.h"
#include "llmux/router.h"
#include "llmux/server.h"

/* Serve req with the given plan, for gateway key `key` (its index in the current runtime's
 * config, -1: none), whose budget and limits are admitted first. Copies creq and plan
 * (creq->body stays borrowed from req, which outlives every attempt; creq->owned is taken over
 * when 0 is returned). The exchange answers req itself in every case, including refusals and
 * failures, and frees itself at the end. Returns 0, or a negative code if it could not even
 * start (nothing was answered then). */
int exchange_start(struct gateway *gw, struct server_req *req, const struct canon_request *creq,
                   const char *client_model, const struct plan *plan, int key);

/* The Lua scripts admission runs in Redis (state.redis): each connection loads them. */
#define EXCHANGE_REDIS_SCRIPTS 2
extern const char *const exchange_redis_scripts[EXCHANGE_REDIS_SCRIPTS];

#endif
