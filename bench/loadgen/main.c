/* llmux-bench: an HTTP load client for OpenAI-style chat completions, stream or not.
 *
 *   llmux-bench [options] http://127.0.0.1:PORT/v1/chat/completions
 *
 * Runs one load (see load.h for how it is driven and measured), then prints a table of
 * latency percentiles and, with --json, writes the same numbers as JSON for scripts
 * (bench/run.mjs). `llmux-bench --help` lists the options.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "load.h"

static void usage(FILE *f)
{
    fprintf(
        f, "usage: llmux-bench [options] http://HOST:PORT/PATH\n"
           "  -c, --conns N         concurrent keep-alive connections (default 1)\n"
           "  -r, --rate R          open loop at R requests/s (default: closed loop)\n"
           "  -n, --requests N      stop after N measured requests\n"
           "  -d, --duration S      stop after S measured seconds (default 5 without -n)\n"
           "  -w, --warmup S        seconds of load before measuring (default 0)\n"
           "  -s, --stream          ask for an SSE stream\n"
           "  -b, --body-bytes N    request body size (default 1024)\n"
           "  -m, --model NAME      model field (default \"bench\")\n"
           "  -H, --header 'K: V'   extra request header (repeatable)\n"
           "  -p, --pid PID         sample this process's CPU time and memory\n"
           "      --sample-ms MS    also sample it every MS ms; report the sample taken with the\n"
           "                        most answers in flight\n"
           "      --max-connecting N  connection attempts in progress at once (default 256)\n"
           "      --timeout S       a request still unanswered after S seconds fails (default 30)\n"
           "  -j, --json FILE       write results as JSON ('-': stdout, table on stderr)\n"
           "  -q, --quiet           no table\n");
}

static int parse_url(const char *url, struct load_opts *o)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) != 0)
        return -1;
    p += 7;
    const char *colon = strchr(p, ':');
    const char *slash = strchr(p, '/');
    if (!colon || (slash && slash < colon) || (size_t)(colon - p) >= sizeof(o->host))
        return -1;
    snprintf(o->host, sizeof(o->host), "%.*s", (int)(colon - p), p);
    o->port = atoi(colon + 1);
    snprintf(o->path, sizeof(o->path), "%s", slash ? slash : "/");
    return o->port > 0 && o->port < 65536 ? 0 : -1;
}

/* Enough descriptors for the connections: raise the soft limit, and the hard one when allowed. */
static void raise_nofile(int conns)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)conns + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
        return;
    struct rlimit want = {need, rl.rlim_max > need ? rl.rlim_max : need};
    if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
        want.rlim_cur = rl.rlim_max;
        want.rlim_max = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &want);
        fprintf(stderr, "llmux-bench: only %llu file descriptors for %d connections\n",
                (unsigned long long)rl.rlim_max, conns);
    }
}

static double us(uint64_t ns)
{
    return round((double)ns / 10.0) / 100.0;
}

static cJSON *hist_to_cjson(const struct hist *h)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", (double)h->count);
    cJSON_AddNumberToObject(o, "mean", round(hist_mean(h) / 10.0) / 100.0);
    cJSON_AddNumberToObject(o, "min", us(h->min));
    cJSON_AddNumberToObject(o, "p50", us(hist_quantile(h, 0.50)));
    cJSON_AddNumberToObject(o, "p90", us(hist_quantile(h, 0.90)));
    cJSON_AddNumberToObject(o, "p99", us(hist_quantile(h, 0.99)));
    cJSON_AddNumberToObject(o, "p999", us(hist_quantile(h, 0.999)));
    cJSON_AddNumberToObject(o, "max", us(h->max));
    return o;
}

static cJSON *sample_json(const struct proc_sample *s)
{
    if (!s->ok)
        return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rss_kb", (double)s->rss_kb);
    cJSON_AddNumberToObject(o, "hwm_kb", (double)s->hwm_kb);
    cJSON_AddNumberToObject(o, "cpu_ns", (double)s->cpu_ns);
    return o;
}

static uint64_t requests_of(const struct load_result *r)
{
    return r->ok + r->err_status + r->err_conn + r->err_incomplete + r->err_timeout;
}

static cJSON *result_json(const struct load_opts *o, const struct load_result *r)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "conns", o->conns);
    cJSON_AddNumberToObject(j, "rate", o->rate);
    cJSON_AddBoolToObject(j, "stream", o->stream);
    cJSON_AddNumberToObject(j, "body_bytes", (double)o->body_bytes);
    cJSON_AddNumberToObject(j, "requests", (double)requests_of(r));
    cJSON_AddNumberToObject(j, "ok", (double)r->ok);
    cJSON *e = cJSON_AddObjectToObject(j, "errors");
    cJSON_AddNumberToObject(e, "status", (double)r->err_status);
    cJSON_AddNumberToObject(e, "conn", (double)r->err_conn);
    cJSON_AddNumberToObject(e, "incomplete", (double)r->err_incomplete);
    cJSON_AddNumberToObject(e, "timeout", (double)r->err_timeout);
    cJSON_AddNumberToObject(e, "last_status", r->last_status);
    cJSON_AddStringToObject(e, "last_error", r->last_error);
    cJSON_AddNumberToObject(j, "elapsed_s", r->elapsed_s);
    cJSON_AddNumberToObject(j, "throughput_rps",
                            r->elapsed_s > 0 ? round((double)r->ok / r->elapsed_s) : 0);
    cJSON_AddItemToObject(j, "latency_us", hist_to_cjson(&r->total));
    cJSON_AddItemToObject(j, "ttfb_us", hist_to_cjson(&r->ttfb));
    cJSON_AddItemToObject(j, "first_event_us", hist_to_cjson(&r->first_event));
    cJSON_AddItemToObject(j, "gap_us", hist_to_cjson(&r->gap));
    cJSON_AddItemToObject(j, "max_gap_us", hist_to_cjson(&r->max_gap));
    cJSON_AddItemToObject(j, "transit_us", hist_to_cjson(&r->transit));
    cJSON_AddItemToObject(j, "server_overhead_us", hist_to_cjson(&r->server_overhead));
    /* the latency distribution, for CDF plots: [quantile, us] */
    cJSON *q = cJSON_AddArrayToObject(j, "quantiles_us");
    static const double tail[] = {0.995, 0.999, 0.9995, 0.9999, 1.0};
    for (int i = 1; i < 100 + 5; i++) {
        double qq = i < 100 ? i / 100.0 : tail[i - 100];
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateNumber(qq));
        cJSON_AddItemToArray(pair, cJSON_CreateNumber(us(hist_quantile(&r->total, qq))));
        cJSON_AddItemToArray(q, pair);
    }
    if (o->pid) {
        cJSON *p = cJSON_AddObjectToObject(j, "process");
        cJSON_AddNumberToObject(p, "pid", o->pid);
        cJSON_AddItemToObject(p, "before", sample_json(&r->p_before));
        cJSON_AddItemToObject(p, "start", sample_json(&r->p_start));
        cJSON_AddItemToObject(p, "peak", sample_json(&r->p_peak));
        cJSON_AddItemToObject(p, "end", sample_json(&r->p_end));
        cJSON_AddNumberToObject(p, "peak_inflight", (double)r->peak_inflight);
        cJSON_AddNumberToObject(p, "peak_at_s", r->peak_at_s);
        uint64_t n = requests_of(r);
        if (r->p_start.ok && r->p_end.ok && n)
            cJSON_AddNumberToObject(
                p, "cpu_us_per_req",
                round((double)(r->p_end.cpu_ns - r->p_start.cpu_ns) / (double)n / 10.0) / 100.0);
    }
    return j;
}

static void table_row(FILE *f, const char *name, const struct hist *h)
{
    if (!h->count)
        return;
    fprintf(f, "  %-12s %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %8llu\n", name,
            us(hist_quantile(h, 0.5)), us(hist_quantile(h, 0.9)), us(hist_quantile(h, 0.99)),
            us(hist_quantile(h, 0.999)), us(h->max), hist_mean(h) / 1000.0,
            (unsigned long long)h->count);
}

static void print_table(FILE *f, const struct load_opts *o, const struct load_result *r)
{
    uint64_t errors = requests_of(r) - r->ok;
    fprintf(f, "%s:%d%s  %s, %d conn%s, %s, %zu B body\n", o->host, o->port, o->path,
            o->rate > 0 ? "open loop" : "closed loop", o->conns, o->conns == 1 ? "" : "s",
            o->stream ? "stream" : "non-stream", o->body_bytes);
    if (o->rate > 0)
        fprintf(f, "  target rate %.0f req/s\n", o->rate);
    fprintf(f, "  %llu ok, %llu errors in %.2f s: %.0f req/s\n", (unsigned long long)r->ok,
            (unsigned long long)errors, r->elapsed_s,
            r->elapsed_s > 0 ? (double)r->ok / r->elapsed_s : 0.0);
    if (errors)
        fprintf(f,
                "  errors: %llu status (last %d), %llu connection (last: %s), %llu incomplete, "
                "%llu timeout\n",
                (unsigned long long)r->err_status, r->last_status, (unsigned long long)r->err_conn,
                r->last_error[0] ? r->last_error : "-", (unsigned long long)r->err_incomplete,
                (unsigned long long)r->err_timeout);
    fprintf(f, "  %-12s %9s %9s %9s %9s %9s %9s %8s\n", "(us)", "p50", "p90", "p99", "p99.9", "max",
            "mean", "count");
    table_row(f, "latency", &r->total);
    table_row(f, "first byte", &r->ttfb);
    table_row(f, "first event", &r->first_event);
    table_row(f, "event gap", &r->gap);
    table_row(f, "max gap", &r->max_gap);
    if (r->transit.count)
        table_row(f, "transit", &r->transit);
    if (r->server_overhead.count)
        table_row(f, "server overhead", &r->server_overhead);
    if (o->pid && r->p_end.ok) {
        uint64_t n = requests_of(r);
        fprintf(f, "  process %d: ", o->pid);
        if (r->p_start.ok && n)
            fprintf(f, "%.1f us CPU/request, ",
                    (double)(r->p_end.cpu_ns - r->p_start.cpu_ns) / (double)n / 1000.0);
        fprintf(f, "RSS %ld KiB before, ", r->p_before.rss_kb);
        if (r->p_peak.ok)
            fprintf(f, "%ld KiB with %llu in flight, ", r->p_peak.rss_kb,
                    (unsigned long long)r->peak_inflight);
        fprintf(f, "%ld KiB after; peak %ld KiB\n", r->p_end.rss_kb, r->p_end.hwm_kb);
    }
}

int main(int argc, char **argv)
{
    struct load_opts o = {
        .conns = 1, .body_bytes = 1024, .model = "bench", .max_connecting = 256, .timeout_s = 30};
    const char *json = NULL;
    int quiet = 0;
    static const struct option longs[] = {{"conns", required_argument, NULL, 'c'},
                                          {"rate", required_argument, NULL, 'r'},
                                          {"requests", required_argument, NULL, 'n'},
                                          {"duration", required_argument, NULL, 'd'},
                                          {"warmup", required_argument, NULL, 'w'},
                                          {"stream", no_argument, NULL, 's'},
                                          {"body-bytes", required_argument, NULL, 'b'},
                                          {"model", required_argument, NULL, 'm'},
                                          {"header", required_argument, NULL, 'H'},
                                          {"pid", required_argument, NULL, 'p'},
                                          {"max-connecting", required_argument, NULL, 'C'},
                                          {"timeout", required_argument, NULL, 'T'},
                                          {"sample-ms", required_argument, NULL, 'S'},
                                          {"json", required_argument, NULL, 'j'},
                                          {"quiet", no_argument, NULL, 'q'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:r:n:d:w:sb:m:H:p:j:qh", longs, NULL)) != -1) {
        switch (ch) {
        case 'c':
            o.conns = atoi(optarg);
            break;
        case 'r':
            o.rate = atof(optarg);
            break;
        case 'n':
            o.requests = strtoull(optarg, NULL, 10);
            break;
        case 'd':
            o.duration_s = atof(optarg);
            break;
        case 'w':
            o.warmup_s = atof(optarg);
            break;
        case 's':
            o.stream = 1;
            break;
        case 'b':
            o.body_bytes = strtoul(optarg, NULL, 10);
            break;
        case 'm':
            o.model = optarg;
            break;
        case 'H':
            if (o.n_headers == LOAD_MAX_HEADERS) {
                fprintf(stderr, "llmux-bench: at most %d headers\n", LOAD_MAX_HEADERS);
                return 2;
            }
            o.headers[o.n_headers++] = optarg;
            break;
        case 'p':
            o.pid = atoi(optarg);
            break;
        case 'C':
            o.max_connecting = atoi(optarg);
            break;
        case 'T':
            o.timeout_s = atof(optarg);
            break;
        case 'S':
            o.sample_ms = atoi(optarg);
            break;
        case 'j':
            json = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1 || parse_url(argv[optind], &o) != 0 || o.conns < 1 ||
        o.max_connecting < 1 || o.rate < 0) {
        usage(stderr);
        return 2;
    }
    if (!o.requests && o.duration_s <= 0)
        o.duration_s = 5;
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(o.conns);

    struct load_result *r = malloc(sizeof(*r));
    if (!r)
        return 1;
    int rc = load_run(&o, r);
    if (rc) {
        fprintf(stderr, "llmux-bench: %s\n", uv_strerror(rc));
        free(r);
        return 1;
    }
    int to_stdout = json && strcmp(json, "-") == 0;
    if (!quiet)
        print_table(to_stdout ? stderr : stdout, &o, r);
    if (json) {
        cJSON *j = result_json(&o, r);
        char *text = cJSON_PrintUnformatted(j);
        FILE *f = to_stdout ? stdout : fopen(json, "w");
        if (f) {
            fprintf(f, "%s\n", text);
            if (!to_stdout)
                fclose(f);
        } else {
            fprintf(stderr, "llmux-bench: cannot write %s\n", json);
        }
        free(text);
        cJSON_Delete(j);
    }
    free(r);
    return 0;
}
