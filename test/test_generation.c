/* The generations ring in shared memory: what one worker adds, any worker finds (by id, and
 * newest first across workers); old records leave as the ring wraps; and a reader racing a
 * writer in another process only ever gets whole records. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "llmux/generation.h"
#include "llmux/shm.h"

/* Records of the race test are this large: four fill the smallest ring, so the writer is
 * always writing over the oldest of the four newest a reader copies. */
static size_t pad;

/* A record whose strings all derive from n, so a torn one shows: alias "alias-N" and `pad`
 * bytes of (N % 26 + 'a'), one attempt per n % 3 + 1 with model "model-N-I", the last attempt
 * failed when n is odd. */
static struct gen_rec *make(unsigned long n, size_t *size)
{
    static _Alignas(16) char space[32768];
    size_t attempts = n % 3 + 1;
    struct gen_rec *r = (struct gen_rec *)space;
    memset(space, 0, sizeof(space));
    char *tail = space + sizeof(*r) + attempts * sizeof(r->attempts[0]);
    snprintf(r->id, sizeof(r->id), "gen-%lu", n);
    r->alias = (uint32_t)(tail - space);
    tail += sprintf(tail, "alias-%lu", n);
    memset(tail, (int)('a' + n % 26), pad);
    tail += pad;
    *tail++ = 0;
    r->endpoint = (uint32_t)(tail - space);
    tail += sprintf(tail, "chat") + 1;
    r->n_attempts = attempts;
    r->status = 200;
    r->duration_ms = (long)n;
    for (size_t i = 0; i < attempts; i++) {
        r->attempts[i].provider = (uint32_t)(tail - space);
        tail += sprintf(tail, "p") + 1;
        r->attempts[i].model = (uint32_t)(tail - space);
        tail += sprintf(tail, "model-%lu-%zu", n, i) + 1;
        r->attempts[i].served = !(i == attempts - 1 && n % 2);
        r->attempts[i].status = r->attempts[i].served ? 200 : 502;
    }
    r->size = (size_t)(tail - space);
    *size = r->size;
    return r;
}

/* Whether r is exactly what make(n) built, for the n in its id. */
static int whole(const struct gen_rec *r)
{
    unsigned long n;
    char want[64];
    if (sscanf(r->id, "gen-%lu", &n) != 1 || r->n_attempts != n % 3 + 1 || r->duration_ms != (long)n)
        return 0;
    snprintf(want, sizeof(want), "alias-%lu", n);
    size_t k = strlen(want);
    const char *alias = gen_str(r, r->alias), *endpoint = gen_str(r, r->endpoint);
    if (!alias || strncmp(alias, want, k) != 0 || strlen(alias) != k + pad || !endpoint ||
        strcmp(endpoint, "chat"))
        return 0;
    for (size_t i = 0; i < pad; i++)
        if (alias[k + i] != (char)('a' + n % 26))
            return 0;
    for (size_t i = 0; i < r->n_attempts; i++) {
        snprintf(want, sizeof(want), "model-%lu-%zu", n, i);
        const char *model = gen_str(r, r->attempts[i].model);
        if (!model || strcmp(model, want) != 0)
            return 0;
    }
    return r->provider == 0 && r->finish == 0;
}

static void add(struct gen_ring *g, unsigned long n, uint64_t t)
{
    size_t size;
    generations_add(g, make(n, &size), t);
}

static void test_workers_and_wrap(void)
{
    struct shm *s = shm_create(2, SHM_ARENA_BYTES + generations_bytes(8));
    struct gen_ring *g[2];
    CHECK_INT(generations_attach(s->arena[0], 8, &g[0]), 0);
    CHECK_INT(generations_attach(s->arena[1], 8, &g[1]), 0);
    /* worker 0 ends requests 0, 2, 4; worker 1 ends 1, 3, 5: time order 0..5 */
    for (unsigned long n = 0; n < 6; n++)
        add(g[n % 2], n, 1000 + n);
    struct gen_rec *r = generations_find(s, "gen-3");
    CHECK(r && whole(r) && strcmp(r->id, "gen-3") == 0);
    free(r);
    CHECK(generations_find(s, "gen-9") == NULL);

    struct gen_rec *out[10];
    size_t n = generations_newest(s, 10, 0, out);
    CHECK_INT(n, 6);
    for (size_t i = 0; i < n; i++) { /* newest first across the two rings */
        char id[16];
        snprintf(id, sizeof(id), "gen-%zu", 5 - i);
        CHECK_STR(out[i]->id, id);
        CHECK(whole(out[i]));
        free(out[i]);
    }
    n = generations_newest(s, 10, 1, out); /* failed: the odd ones */
    CHECK_INT(n, 3);
    for (size_t i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof(id), "gen-%zu", 5 - 2 * i);
        CHECK_STR(out[i]->id, id);
        free(out[i]);
    }
    CHECK_INT(generations_newest(s, 2, 0, out), 2);
    free(out[0]);
    free(out[1]);

    /* a worker started again in the same arena carries on with the same ring */
    struct gen_ring *again;
    CHECK_INT(generations_attach(s->arena[0], 8, &again), 0);
    CHECK(again == g[0]);
    /* ... also when its predecessor died between publishing a record's slot and counting it:
       the record counts, and the next one goes to the next slot */
    add(g[0], 6, 1006);
    atomic_fetch_sub(&g[0]->count, 1);
    CHECK_INT(generations_attach(s->arena[0], 8, &again), 0);
    CHECK_INT(atomic_load(&g[0]->count), 4);
    add(g[0], 8, 1008);
    for (unsigned long k = 6; k <= 8; k += 2) {
        char id[16];
        snprintf(id, sizeof(id), "gen-%lu", k);
        r = generations_find(s, id);
        CHECK(r && whole(r));
        free(r);
    }
    CHECK_INT(generations_newest(s, 10, 0, out), 8);
    for (size_t i = 0; i < 8; i++)
        free(out[i]);

    /* 20 more on worker 0: it keeps its last 8 */
    for (unsigned long k = 100; k < 120; k++)
        add(g[0], k, 2000 + k);
    CHECK(generations_find(s, "gen-111") == NULL);
    r = generations_find(s, "gen-112");
    CHECK(r && whole(r));
    free(r);
    r = generations_find(s, "gen-1"); /* worker 1's are still there */
    CHECK(r && whole(r));
    free(r);
    shm_destroy(s);
}

/* Another process writes as fast as it can (the ring wraps every few records) while this one
 * reads: every record a reader gets is whole, and reads do get records. */
static void test_reader_races_writer(void)
{
    struct shm *s = shm_create(1, SHM_ARENA_BYTES + generations_bytes(4));
    struct gen_ring *g;
    CHECK_INT(generations_attach(s->arena[0], 4, &g), 0);
    pad = g->bytes / 4 - 400; /* just under the largest record kept */
    pid_t pid = fork();
    if (pid == 0) {
        for (unsigned long n = 0;; n++)
            add(g, n, n);
    }
    unsigned long got = 0, torn = 0, newest = 0;
    while (got < 20000) {
        struct gen_rec *out[4];
        size_t n = generations_newest(s, 4, 0, out);
        for (size_t i = 0; i < n; i++) {
            got++;
            torn += !whole(out[i]);
            free(out[i]);
        }
        char id[32];
        snprintf(id, sizeof(id), "gen-%lu", newest++);
        struct gen_rec *r = generations_find(s, id);
        if (r) {
            torn += !whole(r);
            free(r);
        }
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    CHECK_INT(torn, 0);
    CHECK(got >= 20000);
    pad = 0;
    shm_destroy(s);
}

int main(void)
{
    test_workers_and_wrap();
    test_reader_races_writer();
    return check_report();
}
