/* shm: per-worker arenas of shared records. See include/llmux/shm.h. */
#include "llmux/shm.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct shm *shm_create(uint32_t n, size_t bytes)
{
    bytes = (bytes + 4095) & ~(size_t)4095;
    if (n < 1 || n > SHM_MAX_WORKERS || bytes < 2 * sizeof(struct shm_arena))
        return NULL;
    /* the table of arenas lives in the mapping too, so it is at the same place in every fork */
    size_t head = (sizeof(struct shm) + 4095) & ~(size_t)4095;
    size_t total = head + (size_t)n * bytes;
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    struct shm *s = p; /* zero-filled: every arena empty, owned by nobody */
    s->n = n;
    s->arena_bytes = bytes;
    for (uint32_t i = 0; i < n; i++) {
        s->arena[i] = (struct shm_arena *)((char *)p + head + (size_t)i * bytes);
        s->arena[i]->size = bytes - sizeof(struct shm_arena);
    }
    return s;
}

void shm_destroy(struct shm *s)
{
    if (!s)
        return;
    size_t head = (sizeof(struct shm) + 4095) & ~(size_t)4095;
    munmap(s, head + (size_t)s->n * s->arena_bytes);
}

int shm_adopt(struct shm *s, uint32_t i)
{
    struct shm_arena *a = s->arena[i];
    int taken = a->owner != 0; /* each process adopts its arena once: anyone before it is gone
                                  (even if the kernel gave it the same pid) */
    a->owner = getpid();
    return taken;
}

void *shm_alloc(struct shm_arena *a, size_t size)
{
    size = shm_rounded(size);
    if (size > a->size - a->used)
        return NULL;
    void *p = a->data + a->used; /* zero: never handed out before */
    a->used += size;
    return p;
}

char *shm_strdup(struct shm_arena *a, const char *str)
{
    size_t n = strlen(str) + 1;
    char *p = shm_alloc(a, n);
    if (p)
        memcpy(p, str, n);
    return p;
}

void shm_publish(struct shm_arena *a, enum shm_list list, struct shm_link *rec)
{
    rec->next = atomic_load_explicit(&a->lists[list], memory_order_relaxed);
    atomic_store_explicit(&a->lists[list], rec, memory_order_release);
}

struct shm_link *shm_first(const struct shm_arena *a, enum shm_list list)
{
    return atomic_load_explicit(&((struct shm_arena *)a)->lists[list], memory_order_acquire);
}
