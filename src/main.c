/* llmux: command line (run, -t, --healthcheck), start-up report, signal handling around one
 * worker's loop (SIGHUP reloads, SIGTERM drains), and the supervisor of "workers": N. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "llmux/api.h"
#include "llmux/buf.h"
#include "llmux/config.h"
#include "llmux/errors.h"
#include "llmux/gateway.h"
#include "llmux/generation.h"
#include "llmux/health.h"
#include "llmux/limits.h"
#include "llmux/shm.h"
#include "llmux/router.h"
#include "llmux/server.h"

static struct gateway gw;
static uv_signal_t sig_int, sig_term, sig_hup;
static uv_timer_t drain_timer;
static int stopping;
static const char *config_path;

#define DEFAULT_CONFIG "/etc/llmux/llmux.json"
#define HEALTHCHECK_MS 2000

static void usage(FILE *f)
{
    fprintf(f, "usage: llmux [-c FILE]           run the gateway (FILE: $LLMUX_CONFIG, else "
               DEFAULT_CONFIG ")\n"
               "       llmux -t [-c FILE]        check the config and exit (0: valid, 1: invalid)\n"
               "       llmux --healthcheck [URL] [-c FILE]\n"
               "                                 exit 0 when URL (default: /healthz on the config's\n"
               "                                 listen address) answers 200 within 2 s, else 1\n"
               "       llmux --version\n"
               "LLMUX_LISTEN=HOST:PORT overrides the config's \"listen\".\n");
}

/* Milliseconds left before `deadline` (a CLOCK_MONOTONIC time in ms), at least 0. */
static int ms_left(uint64_t deadline)
{
    uint64_t now = uv_hrtime() / 1000000;
    return now >= deadline ? 0 : (int)(deadline - now);
}

/* GET path on host:port and say whether it answered 200 within HEALTHCHECK_MS: for a
 * container's HEALTHCHECK, with no shell or curl in the image. Blocking: nothing else runs. */
static int healthcheck(const char *host, uint16_t port, const char *path)
{
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, service, &hints, &ai) != 0) {
        fprintf(stderr, "llmux: --healthcheck: cannot resolve %s\n", host);
        return 1;
    }
    uint64_t deadline = uv_hrtime() / 1000000 + HEALTHCHECK_MS;
    int ok = 0;
    for (struct addrinfo *a = ai; a && !ok && ms_left(deadline) > 0; a = a->ai_next) {
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t elen = sizeof(err);
        if ((connect(fd, a->ai_addr, a->ai_addrlen) == 0 || errno == EINPROGRESS) &&
            poll(&pf, 1, ms_left(deadline)) == 1 &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0) {
            char req[1024], resp[64];
            int n = snprintf(req, sizeof(req),
                             "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path,
                             host);
            size_t got = 0;
            if (n > 0 && (size_t)n < sizeof(req) && send(fd, req, (size_t)n, MSG_NOSIGNAL) == n) {
                pf.events = POLLIN;
                while (got < 12 && poll(&pf, 1, ms_left(deadline)) == 1) {
                    ssize_t r = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);
                    if (r <= 0)
                        break;
                    got += (size_t)r;
                }
            }
            resp[got] = 0;
            ok = got >= 12 && strncmp(resp, "HTTP/1.", 7) == 0 && strncmp(resp + 8, " 200", 4) == 0;
        }
        close(fd);
    }
    freeaddrinfo(ai);
    if (!ok)
        fprintf(stderr, "llmux: http://%s:%u%s did not answer 200 within %d ms\n", host, port, path,
                HEALTHCHECK_MS);
    return ok ? 0 : 1;
}

/* --healthcheck URL: an http:// URL, split as a base_url is. */
static int healthcheck_url(const char *url)
{
    struct url_parts u;
    const char *problem = url_split(url, &u);
    if (problem || u.tls) {
        fprintf(stderr, "llmux: --healthcheck URL: %s\n", problem ? problem : "must be http://");
        return 1;
    }
    char host[256], path[512];
    snprintf(host, sizeof(host), "%.*s", (int)u.host_len, u.host);
    snprintf(path, sizeof(path), "%.*s", (int)u.path_len, u.path);
    return healthcheck(host, u.port, path[0] ? path : "/");
}

/* One JSON line on stderr in one write (workers share it): {"msg":MSG<extra>}; extra (len
 * bytes) is further members, already JSON, starting with ','. */
static void say(const char *msg, const char *extra, size_t len)
{
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "{\"msg\":\"%s\"", msg);
    buf_append(&b, extra, len);
    buf_append_str(&b, "}\n");
    if (write(2, buf_head(&b), buf_size(&b)) < 0) {
        /* nowhere else to say it */
    }
    buf_free(&b);
}

/* ,"error":"<err as a JSON string>" */
static void error_member(struct buf *b, const char *err)
{
    buf_append_str(b, ",\"error\":\"");
    buf_append_json_str(b, err, strlen(err));
    buf_append_str(b, "\"");
}

static void server_opts_of(const struct config *cfg, int reuse_port, struct server_opts *so)
{
    *so = (struct server_opts){
        .max_url_bytes = cfg->max_url_bytes,
        .max_header_bytes = cfg->max_header_bytes,
        .max_body_bytes = cfg->max_body_bytes,
        .header_timeout_ms = cfg->header_timeout_ms,
        .body_timeout_ms = cfg->body_timeout_ms,
        .keepalive_timeout_ms = cfg->keepalive_timeout_ms,
        .send_timeout_ms = cfg->send_timeout_ms,
        .max_connections = cfg->max_connections,
        .max_body_buffer_bytes = cfg->max_body_buffer_bytes,
        .on_head = api_on_head,
        .request_id = api_request_id,
        .error_body = api_error_body,
        .cors_origins = cfg->cors_origins,
        .n_cors_origins = cfg->n_cors_origins,
        .reuse_port = reuse_port,
    };
}

static int same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* ,"restart_needed_for":[...] naming what changed that only a restart applies, or nothing. */
static void restart_only(const struct config *a, const struct config *b, struct buf *out)
{
    const char *names[5];
    int n = 0;
    if (!same_str(a->listen_host, b->listen_host) || a->listen_port != b->listen_port)
        names[n++] = "listen";
    if (a->workers != b->workers)
        names[n++] = "workers";
    if (!same_str(a->access_log, b->access_log))
        names[n++] = "access_log";
    if (a->pool_max_idle != b->pool_max_idle || a->pool_idle_timeout_ms != b->pool_idle_timeout_ms)
        names[n++] = "pool";
    if (a->generations_keep != b->generations_keep)
        names[n++] = "generations";
    for (int i = 0; i < n; i++)
        buf_printf(out, "%s\"%s\"%s", i ? "," : ",\"restart_needed_for\":[", names[i],
                   i == n - 1 ? "]" : "");
}

/* SIGHUP: read and check the config again. Valid: new requests use it at once, requests in
 * flight finish on theirs. Invalid: the running config stays and the log says why. */
static void reload(void)
{
    struct config *cfg;
    char err[512];
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, ",\"worker\":%d", gw.worker);
    int rc = config_load_file(config_path, &cfg, err, sizeof(err));
    if (rc == 0) {
        struct config *old = config_ref(gw.rt->cfg);
        rc = gateway_load(&gw, cfg, err, sizeof(err));
        config_unref(cfg);
        if (rc == 0) {
            buf_printf(&b, ",\"generation\":%llu", (unsigned long long)gw.rt->generation);
            restart_only(old, gw.rt->cfg, &b);
        }
        config_unref(old);
    }
    if (rc == 0) {
        struct server_opts so;
        server_opts_of(gw.rt->cfg, gw.rt->cfg->workers > 1, &so);
        if (gw.server)
            server_set_opts(gw.server, &so);
        say("config reloaded", buf_head(&b), buf_size(&b));
    } else {
        error_member(&b, err);
        say("reload failed", buf_head(&b), buf_size(&b));
    }
    buf_free(&b);
}

/* Every client connection is gone: close the rest so the loop ends. */
static void on_server_closed(void *data)
{
    gw.server = NULL;
    gateway_close(&gw);
    uv_close((uv_handle_t *)&drain_timer, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
}

static void on_drain_timeout(uv_timer_t *t)
{
    if (gw.server)
        server_close(gw.server); /* abort what is still running */
}

/* Stop listening; requests in flight get shutdown.drain_ms. */
static void drain(void)
{
    server_shutdown(gw.server, on_server_closed, NULL);
    if (gw.server)
        uv_timer_start(&drain_timer, on_drain_timeout, gw.rt->cfg->drain_ms, 0);
}

static void on_unready_over(uv_timer_t *t)
{
    if (gw.server)
        drain();
}

/* SIGTERM drains: /healthz answers 503 at once; after shutdown.unready_ms (still serving,
 * so a load balancer can notice) no new connections, requests in flight finish (up to
 * shutdown.drain_ms). SIGINT, or a second signal, stops at once. SIGHUP reloads. */
static void on_signal(uv_signal_t *s, int signum)
{
    if (signum == SIGHUP) {
        reload();
        return;
    }
    char extra[64];
    snprintf(extra, sizeof(extra), ",\"signal\":%d,\"worker\":%d", signum, gw.worker);
    say(signum == SIGTERM && !stopping ? "draining" : "stopping", extra, strlen(extra));
    if (!gw.server)
        return;
    gw.draining = 1;
    if (signum == SIGTERM && !stopping) {
        stopping = 1;
        if (gw.rt->cfg->unready_ms)
            uv_timer_start(&drain_timer, on_unready_over, gw.rt->cfg->unready_ms, 0);
        else
            drain();
        return;
    }
    stopping = 1;
    server_shutdown(gw.server, on_server_closed, NULL);
    if (gw.server)
        server_close(gw.server);
}

/* Say which providers serve and which do not, and why (never a key). */
static void report_providers(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_providers; i++) {
        const struct provider *p = &cfg->providers[i];
        if (p->enabled)
            fprintf(stderr, "{\"msg\":\"provider enabled\",\"provider\":\"%s\",\"base_url\":\"%s\"}\n",
                    p->name, p->base_url);
        else
            fprintf(stderr,
                    "{\"msg\":\"provider disabled\",\"provider\":\"%s\",\"reason\":\"%s\"}\n",
                    p->name, p->disabled_reason ? p->disabled_reason : "disabled");
    }
}

static void print_listening(const char *host, uint16_t port)
{
    int v6 = strchr(host, ':') != NULL;
    printf("llmux listening on %s%s%s:%u\n", v6 ? "[" : "", host, v6 ? "]" : "", port);
    fflush(stdout);
}

/* One worker: the gateway on its own loop until it has drained. worker < 0: the only process
 * (prints the listening line); else a supervisor's worker, which shares the port
 * (SO_REUSEPORT), writes one byte to ready_fd (when >= 0) once it listens, and sets the
 * signal mask to *mask once its handlers are in place. Takes cfg. */
static int run_worker(struct config *cfg, const char *host, uint16_t port, int worker, int ready_fd,
                      const sigset_t *mask)
{
    char err[512];
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    gateway_share_worker(worker < 0 ? 0 : worker);
    if (gateway_init(&gw, loop, cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "llmux: %s\n", err);
        return 1;
    }
    router_seed(gw.id_seed);
    srand((unsigned)gw.id_seed);
    if (cfg->access_log) {
        gw.access_log = fopen(cfg->access_log, "a");
        if (!gw.access_log) {
            fprintf(stderr, "llmux: cannot open access log %s\n", cfg->access_log);
            return 1;
        }
    }
    gateway_open_log(&gw, gw.access_log ? gw.access_log : stderr);
    /* the handlers are in place before anyone learns that llmux listens */
    uv_timer_init(loop, &drain_timer);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_hup);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);
    if (mask) /* a worker: signals that came meanwhile are delivered now */
        sigprocmask(SIG_SETMASK, mask, NULL);
    struct server_opts so;
    server_opts_of(cfg, worker >= 0, &so);
    int rc = server_listen(loop, host, port, &so, api_handle, &gw, &gw.server);
    if (rc) {
        fprintf(stderr, "llmux: cannot listen on %s:%u: %s\n", host, port, llmux_strerror(rc));
        return 1;
    }
    if (worker < 0)
        print_listening(host, server_port(gw.server));
    if (ready_fd >= 0) {
        if (write(ready_fd, "1", 1) != 1) {
            /* the supervisor is gone: PDEATHSIG ends this worker */
        }
        close(ready_fd);
    }
    config_unref(cfg);

    uv_run(loop, UV_RUN_DEFAULT);
    if (gw.access_log && gw.access_log != stderr)
        fclose(gw.access_log);
    gateway_free(&gw);
    rc = uv_loop_close(loop);
    if (rc) { /* a handle leaked: a bug the shutdown tests must see */
        fprintf(stderr, "llmux: loop closed with handles still open\n");
        return 1;
    }
    return 0;
}

/* Each key name its slot in the shared limits table, claimed here (before the workers are
 * forked, or before they reload) so that two workers never claim the same name at once. */
static void claim_key_slots(struct limits *l, const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_models; i++)
        for (size_t j = 0; j < cfg->models[i].n_deployments; j++)
            if (cfg->models[i].deployments[j].rpm || cfg->models[i].deployments[j].tpm)
                limits_slot(l, cfg->models[i].deployments[j].limit_name);
    for (size_t i = 0; i < cfg->n_keys; i++) {
        if (limits_slot(l, cfg->keys[i].name))
            continue;
        struct buf b;
        buf_init(&b, 0);
        buf_append_str(&b, ",\"key\":\"");
        buf_append_json_str(&b, cfg->keys[i].name, strlen(cfg->keys[i].name));
        buf_append_str(&b, "\"");
        say("key not limited: the limits table is full", buf_head(&b), buf_size(&b));
        buf_free(&b);
    }
}

/* ---- the supervisor of "workers": N ---- */

#define RESTART_MIN_MS 100
#define RESTART_MAX_MS 10000
#define STABLE_MS 10000 /* a worker that ran this long restarts without backoff */

struct worker_slot {
    pid_t pid;          /* 0: not running */
    uint64_t started;   /* ms */
    uint32_t backoff;   /* ms before the next restart */
    uint64_t restart_at; /* ms; 0: none pending */
};

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* Fork worker i on cfg. ready: wait until it listens (start-up). Returns the pid, or -1. */
static pid_t start_worker(struct config *cfg, const char *host, uint16_t port, int i,
                          const sigset_t *old_mask, int ready)
{
    int fds[2] = {-1, -1};
    if (ready && pipe(fds) != 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* a worker never outlives its supervisor */
        if (getppid() != parent)
            _exit(1);
        if (fds[0] >= 0)
            close(fds[0]);
        exit(run_worker(config_ref(cfg), host, port, i, fds[1], old_mask));
    }
    if (fds[1] >= 0)
        close(fds[1]);
    if (pid > 0 && ready) {
        struct pollfd pf = {.fd = fds[0], .events = POLLIN};
        char c;
        if (poll(&pf, 1, 10000) != 1 || read(fds[0], &c, 1) != 1) { /* it failed to start */
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            pid = -1;
        }
    }
    if (fds[0] >= 0)
        close(fds[0]);
    return pid;
}

/* Hold host:0 bound (not listening) with SO_REUSEPORT so every worker binds the same free
 * port; returns the socket (kept for the supervisor's life) and the port, or -1. */
static int reserve_port(const char *host, uint16_t *port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (uv_ip4_addr(host, 0, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, 0, (struct sockaddr_in6 *)&ss) != 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    socklen_t len = sizeof(ss);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss,
             ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) ||
        getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static void signal_workers(const struct worker_slot *w, uint32_t n, int signum)
{
    for (uint32_t i = 0; i < n; i++)
        if (w[i].pid > 0)
            kill(w[i].pid, signum);
}

/* Fork cfg->workers workers and keep them running: a worker that dies is started again (with
 * backoff, logged); SIGHUP checks the config and has every worker reload it; SIGTERM drains
 * them all (a second SIGTERM, or SIGINT, stops them at once). Returns the exit code once
 * every worker has exited after a stop. Takes cfg. */
static int supervise(struct config *cfg, struct limits *limits_of_workers, struct shm *shm)
{
    char host[256];
    snprintf(host, sizeof(host), "%s", cfg->listen_host);
    uint16_t port = cfg->listen_port;
    int hold = -1;
    if (port == 0 && (hold = reserve_port(host, &port)) < 0) {
        fprintf(stderr, "llmux: cannot reserve a port on %s: %s\n", host, strerror(errno));
        return 1;
    }
    uint32_t n = cfg->workers;
    struct worker_slot w[CONFIG_MAX_WORKERS];
    memset(w, 0, sizeof(w));
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, &old);
    for (uint32_t i = 0; i < n; i++) {
        w[i].pid = start_worker(cfg, host, port, (int)i, &old, 1);
        w[i].started = now_ms();
        w[i].backoff = RESTART_MIN_MS;
        if (w[i].pid < 0) {
            fprintf(stderr, "llmux: worker %u did not start\n", i);
            w[i].pid = 0;
            signal_workers(w, n, SIGKILL);
            while (waitpid(-1, NULL, 0) > 0) {
            }
            return 1;
        }
    }
    print_listening(host, port);
    char extra[128];
    snprintf(extra, sizeof(extra), ",\"workers\":%u,\"pid\":%ld", n, (long)getpid());
    say("supervisor started", extra, strlen(extra));
    int stopping_sig = 0, rc = 0;
    for (;;) {
        int alive = 0;
        uint64_t next = 0, now = now_ms();
        for (uint32_t i = 0; i < n; i++) {
            if (w[i].pid > 0) {
                alive++;
            } else if (!stopping_sig && w[i].restart_at) {
                if (w[i].restart_at <= now) {
                    w[i].restart_at = 0;
                    w[i].pid = start_worker(cfg, host, port, (int)i, &old, 0);
                    w[i].started = now;
                    if (w[i].pid < 0)
                        w[i].pid = 0, w[i].restart_at = now + w[i].backoff;
                    else
                        alive++;
                }
                if (w[i].restart_at && (!next || w[i].restart_at < next))
                    next = w[i].restart_at;
            }
        }
        if (stopping_sig && !alive)
            break;
        struct timespec ts = {1, 0};
        if (next) {
            uint64_t ms = next > now ? next - now : 0;
            ts.tv_sec = (time_t)(ms / 1000);
            ts.tv_nsec = (long)(ms % 1000) * 1000000;
        }
        int sig = sigtimedwait(&set, NULL, &ts);
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (uint32_t i = 0; i < n; i++) {
                if (w[i].pid != pid)
                    continue;
                w[i].pid = 0;
                int bad = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
                if (stopping_sig) {
                    rc |= bad;
                    break;
                }
                uint64_t t = now_ms();
                w[i].backoff = t - w[i].started >= STABLE_MS ? RESTART_MIN_MS
                               : w[i].backoff * 2 > RESTART_MAX_MS ? RESTART_MAX_MS
                                                                   : w[i].backoff * 2;
                w[i].restart_at = t + (t - w[i].started >= STABLE_MS ? 0 : w[i].backoff);
                snprintf(extra, sizeof(extra),
                         ",\"worker\":%u,\"pid\":%ld,\"%s\":%d,\"restart_in_ms\":%llu", i,
                         (long)pid, WIFSIGNALED(status) ? "signal" : "exit_code",
                         WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                         (unsigned long long)(w[i].restart_at - t));
                say("worker died", extra, strlen(extra));
            }
        }
        if (sig == SIGHUP) { /* checked here once; each worker then reloads the file itself */
            struct config *fresh;
            char err[512];
            int bad = config_load_file(config_path, &fresh, err, sizeof(err));
            for (uint32_t i = 0; !bad && i < shm->n; i++) /* every worker's arena has room */
                if (!gateway_registry_fits(shm->arena[i], fresh)) {
                    snprintf(err, sizeof(err),
                             "the shared registry (%zu MiB, sized at start for its config) has "
                             "no room for this config's new aliases and deployments: restart "
                             "llmux to size it again",
                             shm->arena_bytes >> 20);
                    config_unref(fresh);
                    bad = 1;
                }
            if (bad) { /* the workers keep their config; so do the ones started later */
                struct buf b;
                buf_init(&b, 0);
                error_member(&b, err);
                say("reload failed", buf_head(&b), buf_size(&b));
                buf_free(&b);
            } else {
                fresh->generations_keep = cfg->generations_keep; /* restart-only: a worker
                                                                    started later keeps it */
                config_unref(cfg); /* later workers start on the new one */
                cfg = fresh;
                claim_key_slots(limits_of_workers, cfg);
                signal_workers(w, n, SIGHUP);
            }
        } else if (sig == SIGTERM || sig == SIGINT) {
            int again = stopping_sig != 0;
            stopping_sig = sig;
            signal_workers(w, n, sig == SIGTERM && !again ? SIGTERM : SIGINT);
        }
    }
    if (hold >= 0)
        close(hold);
    config_unref(cfg);
    say("supervisor stopped", "", 0);
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *health_url = NULL;
    int test_only = 0, health = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "--healthcheck") == 0) {
            health = 1;
            if (i + 1 < argc && argv[i + 1][0] != '-')
                health_url = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0) {
            test_only = 1;
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
            printf("llmux %s\n", LLMUX_VERSION);
            return 0;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "llmux: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (health && health_url)
        return healthcheck_url(health_url);
    if (!path)
        path = getenv("LLMUX_CONFIG") && getenv("LLMUX_CONFIG")[0] ? getenv("LLMUX_CONFIG")
                                                                   : DEFAULT_CONFIG;
    config_path = path;
    struct config *cfg;
    char err[512];
    if (config_load_file(path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "llmux: %s\n", err);
        return 1;
    }
    if (health) { /* /healthz on the listen address; a wildcard one is this host */
        char host[256];
        snprintf(host, sizeof(host), "%s",
                 strcmp(cfg->listen_host, "0.0.0.0") == 0 ? "127.0.0.1"
                 : strcmp(cfg->listen_host, "::") == 0    ? "::1"
                                                          : cfg->listen_host);
        uint16_t port = cfg->listen_port;
        config_unref(cfg);
        return healthcheck(host, port, "/healthz");
    }
    if (test_only) {
        printf("llmux: %s: configuration is valid\n", path);
        config_unref(cfg);
        return 0;
    }
    report_providers(cfg);
    /* per-key limits and spend: one table for every worker, made before they are forked; and
     * the arenas of the workers' metrics and health records, which any of them reads */
    struct limits *limits = limits_create();
    size_t arena_bytes = gateway_registry_bytes(cfg);
    struct shm *shm = arena_bytes ? shm_create(cfg->workers > 1 ? cfg->workers : 1, arena_bytes)
                                  : NULL;
    if (!shm) {
        fprintf(stderr, "llmux: cannot map the shared registry\n");
        return 1;
    }
    gateway_share(limits, shm);
    claim_key_slots(limits, cfg);
    if (cfg->workers > 1)
        return supervise(cfg, limits, shm);
    return run_worker(cfg, cfg->listen_host, cfg->listen_port, -1, -1, NULL);
}
