/* redis: one worker's connection to the shared-state Redis ("state.redis"), on the libuv loop.
 *
 * hiredis's asynchronous API driven by its libuv adapter: never a blocking call (the host name
 * is resolved with c-ares first; hiredis then connects to the address). Commands sent in one
 * loop turn leave in one write (pipelined); replies come back in order, so the commands in
 * flight are a FIFO ring (no allocation of ours per command). A command unanswered within
 * state.timeout_ms, a refused AUTH or a lost connection drop the connection: every command in
 * flight gets its callback with no reply, and reconnection follows with exponential backoff
 * (100 ms doubling to 2 s). An outage is logged once when it starts and once when it ends.
 *
 * Scripts are given at creation: each connection loads them (SCRIPT LOAD, pipelined before any
 * other command), and redis_script() runs one by its SHA-1 (EVALSHA), so a request sends the
 * script's arguments, never its text.
 *
 * Lifecycle: redis_create() -> redis_command()/redis_script() -> redis_close() (callbacks of
 * commands in flight run with a NULL reply; the memory goes once the loop has closed the
 * handles). */
#ifndef LLMUX_REDIS_H
#define LLMUX_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "llmux/hist.h"

struct dns;
struct redis;
struct redisReply;
struct state_config;

/* A command's answer: reply is borrowed for the call (hiredis frees it after), NULL when there
 * is none (Redis down or too slow, or the connection closing). */
typedef void (*redis_cb)(void *data, struct redisReply *reply);
/* Where outage lines go (one JSON object per line, ending in '\n'). */
typedef void (*redis_log_fn)(void *ctx, const char *line, size_t n);

struct redis_stats {
    uint64_t commands; /* sent */
    uint64_t failed;   /* answered with no reply (down, timed out) or refused unsent */
    uint64_t outages;  /* connection losses (and failed first connects) */
    struct hist rtt_us; /* command round trips that got a reply, in microseconds */
};

/* Connect to st's Redis (st is copied). scripts: Lua texts (borrowed, static). Returns 0 or a
 * negative code. The first connection is made on a later loop turn. */
int redis_create(uv_loop_t *loop, struct dns *dns, const struct state_config *st,
                 const char *const *scripts, size_t n_scripts, redis_log_fn log, void *log_ctx,
                 struct redis **out);
/* Commands in flight get their callbacks (no reply); the memory goes as the loop runs. */
void redis_close(struct redis *r);
/* Whether the connection is up: a command sent now can be answered. */
int redis_up(const struct redis *r);
/* Whether r is connected to what st describes (a reload keeps the connection then). */
int redis_same(const struct redis *r, const struct state_config *st);
const struct redis_stats *redis_stats(const struct redis *r);

/* Send one command (argv[0] is its name). Returns 0 and calls cb exactly once later, or a
 * negative code (Redis down, too many in flight) and never calls it. cb may be NULL. */
int redis_command(struct redis *r, int argc, const char **argv, const size_t *lens, redis_cb cb,
                  void *data);
/* EVALSHA of script `which` with n_keys keys then the other arguments in argv. As
 * redis_command. */
int redis_script(struct redis *r, size_t which, int n_keys, int argc, const char **argv,
                 const size_t *lens, redis_cb cb, void *data);

#endif
