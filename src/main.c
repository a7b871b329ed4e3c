/* llmux: command line (run, -t, --healthcheck), start-up report and signal handling around
 * one worker's loop. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "llmux/api.h"
#include "llmux/config.h"
#include "llmux/errors.h"
#include "llmux/gateway.h"
#include "llmux/health.h"
#include "llmux/server.h"

static struct gateway gw;
static uv_signal_t sig_int, sig_term;
static uv_timer_t drain_timer;
static int stopping;

#define DRAIN_MS 10000 /* in-flight requests get this long after SIGTERM */

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

/* Every client connection is gone: close the rest so the loop ends. */
static void on_server_closed(void *data)
{
    gw.server = NULL;
    gateway_close(&gw);
    uv_close((uv_handle_t *)&drain_timer, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
}

static void on_drain_timeout(uv_timer_t *t)
{
    if (gw.server)
        server_close(gw.server); /* abort what is still running */
}

/* SIGTERM drains: no new connections, requests in flight finish (up to DRAIN_MS).
 * SIGINT, or a second signal, stops at once. */
static void on_signal(uv_signal_t *s, int signum)
{
    fprintf(stderr, "{\"msg\":\"%s\",\"signal\":%d}\n",
            signum == SIGTERM && !stopping ? "draining" : "stopping", signum);
    if (!gw.server)
        return;
    if (signum == SIGTERM && !stopping) {
        stopping = 1;
        server_shutdown(gw.server, on_server_closed, NULL);
        if (gw.server)
            uv_timer_start(&drain_timer, on_drain_timeout, DRAIN_MS, 0);
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
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    report_providers(cfg);
    if (gateway_init(&gw, loop, cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "llmux: %s\n", err);
        return 1;
    }
    if (cfg->access_log) {
        gw.access_log = fopen(cfg->access_log, "a");
        if (!gw.access_log) {
            fprintf(stderr, "llmux: cannot open access log %s\n", cfg->access_log);
            return 1;
        }
    }
    gateway_open_log(&gw, gw.access_log ? gw.access_log : stderr);
    struct server_opts so = {
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
        .cors_origins = cfg->cors_origins,
        .n_cors_origins = cfg->n_cors_origins,
    };
    int rc = server_listen(loop, cfg->listen_host, cfg->listen_port, &so, api_handle, &gw,
                           &gw.server);
    if (rc) {
        fprintf(stderr, "llmux: cannot listen on %s:%u: %s\n", cfg->listen_host, cfg->listen_port,
                llmux_strerror(rc));
        return 1;
    }
    int v6 = strchr(cfg->listen_host, ':') != NULL;
    printf("llmux listening on %s%s%s:%u\n", v6 ? "[" : "", cfg->listen_host, v6 ? "]" : "",
           server_port(gw.server));
    fflush(stdout);
    uv_timer_init(loop, &drain_timer);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_term);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
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
