/* catalog: the model catalogue, OpenAI-compatible with OpenRouter's fields: the aliases of a
 * runtime with their price and context (GET /v1/models, /v1/models/{id}) and, per alias, one
 * endpoint per deployment with its state, uptime, latency and throughput measured from real
 * traffic (GET /v1/models/{id}/endpoints). Read from the config and the health records only
 * (every worker's). */
#ifndef LLMUX_CATALOG_H
#define LLMUX_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "llmux/buf.h"

struct runtime;
struct shm;

/* {"object":"list","data":[model, ...]}: the aliases with an enabled deployment. */
int catalog_list(const struct runtime *rt, struct buf *out);
/* One model object. Returns 0, or -1 when `id` (len bytes) is no alias with an enabled
 * deployment. */
int catalog_model(const struct runtime *rt, const char *id, size_t len, struct buf *out);
/* {"data":{"id","name","endpoints":[...]}}: uptime, latency, throughput and attempts summed
 * over every worker of shm; the status is this worker's circuit. now_ms: the loop's clock
 * (health state); now_s: unix time (the windows). Returns 0, -1 for an unknown alias, or
 * UV_ENOMEM. */
int catalog_endpoints(const struct runtime *rt, const struct shm *shm, const char *id, size_t len,
                      uint64_t now_ms, int64_t now_s, struct buf *out);

#endif
