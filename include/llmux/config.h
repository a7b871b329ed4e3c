/* config: the gateway's JSON configuration, parsed and validated once, immutable afterwards.
 *
 * A loaded config is shared by reference count: running exchanges hold a reference, so a
 * reload can build a new one while old requests finish on theirs.
 * Provider keys are read from the environment variable named by `api_key_env` at load time;
 * a provider whose variable is unset is disabled (with a reason), never an error.
 */
#ifndef LLMUX_CONFIG_H
#define LLMUX_CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum provider_kind {
    PROVIDER_OPENAI = 0, /* OpenAI-compatible chat/completions/embeddings (also vLLM, Ollama...) */
    PROVIDER_AZURE,      /* Azure OpenAI: deployment in the URL, api-version, api-key header */
    PROVIDER_ANTHROPIC,  /* Anthropic Messages API */
    PROVIDER_GEMINI,     /* Google AI Studio generateContent */
};

struct timeouts {
    uint32_t connect_ms;    /* DNS + TCP + TLS for one attempt */
    uint32_t first_byte_ms; /* request sent -> first response event (time to first token) */
    uint32_t idle_ms;       /* between two events of a stream, or two reads of a body */
    uint32_t total_ms;      /* whole exchange deadline */
    uint32_t ping_ms;       /* stream with no content yet: send the head and ": ping" lines at
                               this interval so clients and load balancers keep waiting (0: off) */
};

struct provider {
    char *name;
    enum provider_kind kind;
    char *base_url;    /* as configured */
    int tls;           /* https:// */
    char *host;        /* host name or address (no brackets for IPv6) */
    uint16_t port;     /* explicit, or 443 / 80 */
    char *base_path;   /* path prefix without trailing '/', e.g. "/v1"; "" when none */
    char *api_key_env; /* NULL when the provider needs no key (local servers) */
    char *api_key;     /* value of the variable; NULL when unset. NEVER logged. */
    char *ca_file;     /* NULL: system CA bundle */
    char *api_version; /* azure: api-version query value (default 2024-10-21); anthropic:
                          anthropic-version header (default 2023-06-01); "" otherwise */
    int responses_native; /* openai, azure: POST /v1/responses passes through to the
                             provider's own ("responses": "native"); 0: translated to chat */
    uint32_t default_max_tokens; /* anthropic: max_tokens when the request has none (4096) */
    int enabled;       /* 0 when its key variable is unset */
    char *disabled_reason; /* e.g. "OPENAI_API_KEY is not set"; NULL when enabled */
};

struct deployment {
    struct provider *provider; /* borrowed from config.providers */
    char *model;               /* upstream model id */
    double price_in, price_out; /* $ per million input / output tokens; < 0: unknown */
    double price_cache_read;    /* $ per million prompt tokens read from the provider's cache;
                                   < 0: unknown (billed as input) */
    double price_cache_write;   /* $ per million prompt tokens written to it; < 0: as input */
    double price_request;       /* $ per request (0: none) */
    uint32_t context_window;    /* tokens; 0: unknown */
    uint32_t weight;            /* "balance" share, default 1 */
    uint32_t rpm, tpm;          /* the provider account's limits for it; 0: none. Deployments
                                   with the same provider and model share them */
    size_t health_id; /* index of its health record: deployments naming the same provider and
                         upstream model share one (config.n_health of them) */
    size_t route_id;  /* its index among every alias's deployments (config.n_routes) */
    char limit_name[48]; /* its slot in the limits table ("dep:" + hash of provider, model) */
};

enum strategy {
    STRATEGY_ORDERED = 0, /* the list order */
    STRATEGY_PRICE,       /* cheapest first (input + output price) */
    STRATEGY_LATENCY,     /* lowest measured time to first token first */
    STRATEGY_THROUGHPUT,  /* highest measured output tokens/s first */
    STRATEGY_BALANCE,     /* weighted random spread, aware of in-flight load */
};

#define HEDGE_AUTO UINT32_MAX /* hedge_after_ms "auto": the deployment's measured p95 TTFT */

struct model {
    char *name; /* the alias clients send */
    struct deployment *deployments;
    size_t n_deployments;
    struct timeouts timeouts; /* the global ones with this model's overrides applied */
    enum strategy strategy;
    uint32_t hedge_after_ms;  /* 0: no hedging; HEDGE_AUTO */
    int continue_on_failure;  /* on_stream_failure "continue" */
    uint32_t max_attempts;    /* attempts per request (0: one per deployment) */
    uint32_t cache_ttl_s;     /* "cache.ttl_s": answers kept this long (0: no cache) */
};

/* Circuit breaker and retry budget ("health" in the config). */
struct health_config {
    uint32_t failure_threshold;    /* consecutive failures that eject (5) */
    uint32_t error_rate_percent;   /* or this error rate over the window (50) */
    uint32_t window;               /* outcomes in the error-rate window (20) */
    uint32_t base_ejection_ms;     /* first ejection; doubles per repeated ejection (5000) */
    uint32_t max_ejection_ms;      /* cap (300000) */
    uint32_t max_ejection_percent; /* of a plan's deployments that may be ejected (50; the
                                      last healthy one is never ejected) */
    uint32_t retry_budget_percent; /* retries and hedges per recent requests (20) */
    uint32_t min_retries_per_s;    /* retries always allowed per second (10) */
};

#define CONFIG_MAX_WORKERS 64

enum budget_period { BUDGET_TOTAL = 0, BUDGET_DAY, BUDGET_MONTH };

/* A gateway key ("keys"): a string, or an object with a name and limits. */
struct gateway_key {
    char *name;                /* what logs and metrics say (never the key); "keys[i]" for a
                                  plain string */
    unsigned char sha256[32];  /* of the key: requests are compared by hash */
    int enabled;               /* 0: its key_env variable is unset */
    char **models;             /* aliases (or PROVIDER/MODEL ids) it may use; none: all */
    size_t n_models;
    uint32_t rpm, tpm;         /* requests / tokens per minute; 0: no limit */
    double budget_usd;         /* < 0: none */
    enum budget_period budget_period;
};

/* "state": shared state through Redis (limits, budgets, the cache) across instances. */
struct state_config {
    char *redis_host;     /* NULL: no Redis (counters in this instance's shared memory) */
    uint16_t redis_port;  /* 6379 */
    uint32_t redis_db;    /* SELECTed after connecting (0) */
    char *redis_user;     /* AUTH user (NULL: none; "default" when only a password) */
    char *redis_password; /* from the URL or password_env; NULL: no AUTH. NEVER logged. */
    char *prefix;         /* of every key llmux writes ("llmux:") */
    int fail_closed;      /* on_error "closed": answer 503 while Redis is down ("open") */
    uint32_t timeout_ms;  /* a command unanswered this long counts as Redis down (250) */
};

struct config {
    char *listen_host;
    uint16_t listen_port; /* 0: pick a free port (the chosen one is logged at start) */
    struct timeouts timeouts;
    struct provider *providers;
    size_t n_providers;
    struct model *models;
    size_t n_models;
    struct gateway_key *keys; /* gateway client keys; none: no authentication */
    size_t n_keys;
    size_t max_body_bytes;   /* "limits.max_body_bytes", default 4 MiB */
    size_t max_header_bytes; /* "limits.max_header_bytes", default 16 KiB */
    size_t max_url_bytes;    /* "limits.max_url_bytes", default 8 KiB */
    uint32_t header_timeout_ms;    /* "limits.header_timeout_ms", default 60000 */
    uint32_t body_timeout_ms;      /* "limits.body_timeout_ms", default 60000 */
    uint32_t keepalive_timeout_ms; /* "limits.keepalive_timeout_ms", default 75000 */
    uint32_t send_timeout_ms;      /* "limits.send_timeout_ms", default 60000 */
    size_t max_connections;        /* "limits.max_connections", default 10000 */
    size_t max_body_buffer_bytes;  /* "limits.max_body_buffer_bytes", default 256 MiB */
    char **cors_origins;           /* "cors.origins"; none: no CORS headers */
    size_t n_cors_origins;
    size_t pool_max_idle;       /* "pool.max_idle_per_origin", default 32 */
    uint32_t pool_idle_timeout_ms; /* "pool.idle_timeout_ms", default 60000 */
    char *access_log;           /* path, NULL: stderr */
    uint32_t workers;           /* "workers": processes (1; "auto": one per core) */
    size_t generations_keep;    /* "generations.keep": finished requests' records kept for
                                   GET /v1/generation (10000; 0: none) */
    uint32_t drain_ms;          /* "shutdown.drain_ms": requests in flight get this long
                                   after SIGTERM (10000) */
    uint32_t unready_ms;        /* "shutdown.unready_ms": after SIGTERM, keep listening and
                                   serving this long with /healthz answering 503, so a load
                                   balancer stops sending first (0) */
    size_t cache_max_bytes;     /* "cache.max_bytes": the response cache's bound (64 MiB) */
    struct health_config health;
    struct state_config state;
    size_t n_health; /* distinct deployments (provider, upstream model) */
    size_t n_routes; /* deployments of all aliases */
    int refs;
};

/* Parse and validate JSON text. Returns 0 with *out holding one reference, or LLMUX_ECONFIG
 * with a message in err naming the JSON path and the problem, e.g.
 * "$.providers.openai.kind: unknown kind \"foo\" (expected one of: openai)". */
int config_parse(const char *json, size_t len, struct config **out, char *err, size_t errlen);
/* Read a file and config_parse() it; a read failure is reported as "FILE: strerror". */
int config_load_file(const char *path, struct config **out, char *err, size_t errlen);

struct config *config_ref(struct config *c);
/* Drops a reference; frees at zero. */
void config_unref(struct config *c);

/* Lookups (borrowed pointers, valid while the config is referenced); NULL when absent. */
const struct model *config_find_model(const struct config *c, const char *name, size_t len);
const struct provider *config_find_provider(const struct config *c, const char *name, size_t len);

/* The parts of an http(s) URL, pointing into it. */
struct url_parts {
    int tls;
    const char *host; /* without the brackets of an IPv6 literal */
    size_t host_len;
    uint16_t port;    /* the scheme's default when absent */
    const char *path; /* without trailing slashes */
    size_t path_len;
};
/* Split "http[s]://host[:port][/path]" (what a base_url may be). Returns NULL, or what is
 * wrong (never quoting the URL, which could hold a secret someone pasted). */
const char *url_split(const char *url, struct url_parts *u);

/* Name of a kind ("openai"). */
const char *provider_kind_name(enum provider_kind k);

#endif
