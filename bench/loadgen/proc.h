/* proc: what one process costs, read from /proc (the proxy under test is not our child).
 *
 * cpu_ns sums the on-CPU time of every live thread (/proc/PID/task/N/schedstat, ns), so
 * Node's helper threads count as well as nginx's or llmux's single loop.
 */
#ifndef BENCH_PROC_H
#define BENCH_PROC_H

#include <stdint.h>

struct proc_sample {
    int ok;      /* 1 when the process was there and readable */
    long rss_kb; /* VmRSS */
    long hwm_kb; /* VmHWM: peak RSS since start */
    uint64_t cpu_ns;
};

/* Sample process pid. Returns 0, or -1 (and s->ok = 0) when it cannot be read. */
int proc_sample(int pid, struct proc_sample *s);

#endif
