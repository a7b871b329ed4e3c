/* shm: the records every worker can read. One shared anonymous mapping, made before the
 * workers are forked, holds an arena per worker; fork keeps the mapping at the same address in
 * every worker (and in a worker the supervisor starts again), so a pointer into it means the
 * same thing in all of them. A worker makes the records others may read (its metrics and its
 * deployments' health) in its own arena and never frees them: a reload finds a record again by
 * identity, and a worker started again in the place of a dead one adopts its predecessor's
 * records, so counters never go back. Only the owner writes an arena; other workers read it
 * (GET /metrics and /v1/models/{id}/endpoints sum the workers' records). A record is published
 * complete, on a list the owner prepends to; its counters are read while they move, which a
 * monitoring read can afford (a histogram may be one observation ahead in one of its fields).
 *
 * Without workers there is one arena, the same code. */
#ifndef LLMUX_SHM_H
#define LLMUX_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SHM_ARENA_BYTES ((size_t)32 << 20) /* address space per worker for metrics and health
                                              records (plus the generations ring); pages are
                                              used as they are touched */
#define SHM_MAX_WORKERS 64

enum shm_list { SHM_ALIASES, SHM_ROUTES, SHM_HEALTH, SHM_WORKER, SHM_GENERATIONS, SHM_LISTS };

/* A record on a list starts with this. */
struct shm_link {
    struct shm_link *next;
};

struct shm_arena {
    size_t size;                             /* bytes of data[] */
    size_t used;                             /* bytes of data[] handed out */
    pid_t owner;                             /* the process that writes it (0: none yet) */
    _Atomic(struct shm_link *) lists[SHM_LISTS]; /* newest first */
    _Alignas(64) unsigned char data[];
};

struct shm {
    uint32_t n;         /* workers */
    size_t arena_bytes; /* each (header included) */
    struct shm_arena *arena[SHM_MAX_WORKERS];
};

/* n arenas (1..SHM_MAX_WORKERS) of `bytes` each (address space, not memory) in one mapping;
 * NULL when it cannot be made. Free with shm_destroy. */
struct shm *shm_create(uint32_t n, size_t bytes);
void shm_destroy(struct shm *s);

/* Arena i for the calling process, once per process: returns 1 when it belonged to another
 * (dead) process whose records this one now takes over (the caller resets what was that
 * process's own), else 0. */
int shm_adopt(struct shm *s, uint32_t i);

/* The arena bytes an allocation of n takes. */
static inline size_t shm_rounded(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

/* size zeroed bytes (aligned for any record) from a, or NULL when the arena is full. */
void *shm_alloc(struct shm_arena *a, size_t size);
/* A copy of str in a, or NULL when full. */
char *shm_strdup(struct shm_arena *a, const char *str);
/* Put rec (complete) at the head of a's list: readers in other workers see it from now on. */
void shm_publish(struct shm_arena *a, enum shm_list list, struct shm_link *rec);
/* The newest record of a's list (walk on with ->next). */
struct shm_link *shm_first(const struct shm_arena *a, enum shm_list list);

#endif
