/* cooldown: deployments' Retry-After cooldowns shared between instances through Redis (see
 * src/cooldown.c). Without state.redis these do nothing. */
#ifndef LLMUX_COOLDOWN_H
#define LLMUX_COOLDOWN_H

#include <stdint.h>

#include "llmux/gateway.h"

/* A provider asked to wait `ms` before the next request to deployment d: tell the others. */
void cooldown_share(struct gateway *gw, const struct deployment *d, uint64_t ms);
/* The poll timer: made once with the gateway, closed with it; started while there is a
 * Redis connection (a reload may drop or replace it), stopped otherwise. */
void cooldown_init(struct gateway *gw);
void cooldown_start(struct gateway *gw);
void cooldown_stop(struct gateway *gw);
void cooldown_close(struct gateway *gw);

#endif
