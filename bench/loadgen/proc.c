/* proc: memory and CPU time of another process from /proc (see proc.h). */
#include "proc.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long status_kb(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

int proc_sample(int pid, struct proc_sample *s)
{
    memset(s, 0, sizeof(*s));
    char path[64], text[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = 0;
    s->rss_kb = status_kb(text, "VmRSS:");
    s->hwm_kb = status_kb(text, "VmHWM:");

    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char sp[128];
        snprintf(sp, sizeof(sp), "/proc/%d/task/%.16s/schedstat", pid, e->d_name);
        FILE *t = fopen(sp, "r");
        if (!t)
            continue; /* the thread ended meanwhile */
        unsigned long long run = 0;
        if (fscanf(t, "%llu", &run) == 1)
            s->cpu_ns += run;
        fclose(t);
    }
    closedir(d);
    s->ok = 1;
    return 0;
}
