/* config: parse and validate the gateway's JSON configuration into an immutable struct config.
 *
 * config_parse() walks the cJSON tree once, top-down, filling a calloc'd struct config. Every
 * object is first checked against its list of known keys (unknown or duplicate keys are errors:
 * typo protection), then each member is read with a typed getter. A `struct ctx` carries the
 * JSON path of the value being read, so every error is "PATH: problem", e.g.
 * "$.models.demo.deployments[1].provider: unknown provider \"nope\"". The first error stops the
 * walk and the partial config is freed.
 *
 * Paths write object members as ".name" when the name is made of [A-Za-z0-9_-] and as
 * ["name"] otherwise (so "$.models[\"llama-3.3-70b\"]" is unambiguous), array items as "[i]".
 *
 * Lifecycle: config_parse() returns one reference; config_ref()/config_unref() count them and the
 * last unref frees everything. Nothing in a config changes after parse, so any thread or exchange
 * holding a reference may read it.
 *
 * Secrets: the values of api_key_env variables and of "keys" are never copied into an error
 * message; messages only quote kinds, provider names and key names.
 */
#include "llmux/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <ctype.h>
#include <mbedtls/sha256.h>
#include <uv.h>

#include "llmux/buf.h"
#include "llmux/errors.h"

#define CONFIG_MAX_FILE_BYTES (16u << 20) /* config_load_file refuses anything larger */
#define CONFIG_MAX_U32 4294967295.0

/* Provider kinds: adding a kind is one line here plus its enum value. */
static const struct {
    const char *name;
    enum provider_kind kind;
} provider_kinds[] = {
    {"openai", PROVIDER_OPENAI},
    {"azure", PROVIDER_AZURE},
    {"anthropic", PROVIDER_ANTHROPIC},
    {"gemini", PROVIDER_GEMINI},
};
#define N_PROVIDER_KINDS (sizeof(provider_kinds) / sizeof(provider_kinds[0]))

/* A numeric member of an object: where it lands (offset into the target struct), its C type,
 * and its minimum (1: positive, 0: non-negative). The maximum is UINT32_MAX for all. */
struct num_field {
    const char *key;
    size_t off;
    int is_size; /* size_t target; otherwise uint32_t */
    unsigned min;
};

static const struct num_field timeout_fields[] = {
    {"connect", offsetof(struct timeouts, connect_ms), 0, 1},
    {"first_byte", offsetof(struct timeouts, first_byte_ms), 0, 1},
    {"idle", offsetof(struct timeouts, idle_ms), 0, 1},
    {"total", offsetof(struct timeouts, total_ms), 0, 1},
    {"ping", offsetof(struct timeouts, ping_ms), 0, 0},
    {NULL, 0, 0, 0},
};

static const struct num_field limit_fields[] = {
    {"max_body_bytes", offsetof(struct config, max_body_bytes), 1, 1},
    {"max_header_bytes", offsetof(struct config, max_header_bytes), 1, 1},
    {"max_url_bytes", offsetof(struct config, max_url_bytes), 1, 1},
    {"header_timeout_ms", offsetof(struct config, header_timeout_ms), 0, 1},
    {"body_timeout_ms", offsetof(struct config, body_timeout_ms), 0, 1},
    {"keepalive_timeout_ms", offsetof(struct config, keepalive_timeout_ms), 0, 1},
    {"send_timeout_ms", offsetof(struct config, send_timeout_ms), 0, 1},
    {"max_connections", offsetof(struct config, max_connections), 1, 1},
    {"max_body_buffer_bytes", offsetof(struct config, max_body_buffer_bytes), 1, 1},
    {NULL, 0, 0, 0},
};

/* max_idle_per_origin may be 0: the pool then never keeps a connection. */
static const struct num_field pool_fields[] = {
    {"max_idle_per_origin", offsetof(struct config, pool_max_idle), 1, 0},
    {"idle_timeout_ms", offsetof(struct config, pool_idle_timeout_ms), 0, 1},
    {NULL, 0, 0, 0},
};

static const struct num_field generations_fields[] = {
    {"keep", offsetof(struct config, generations_keep), 1, 0},
    {NULL, 0, 0, 0},
};

static const struct num_field cache_fields[] = {
    {"max_bytes", offsetof(struct config, cache_max_bytes), 1, 1},
    {NULL, 0, 0, 0},
};

static const struct num_field model_cache_fields[] = {
    {"ttl_s", offsetof(struct model, cache_ttl_s), 0, 1},
    {NULL, 0, 0, 0},
};

static const struct num_field shutdown_fields[] = {
    {"drain_ms", offsetof(struct config, drain_ms), 0, 0},
    {"unready_ms", offsetof(struct config, unready_ms), 0, 0},
    {NULL, 0, 0, 0},
};

static const struct num_field health_fields[] = {
    {"failure_threshold", offsetof(struct health_config, failure_threshold), 0, 1},
    {"error_rate_percent", offsetof(struct health_config, error_rate_percent), 0, 1},
    {"window", offsetof(struct health_config, window), 0, 1},
    {"base_ejection_ms", offsetof(struct health_config, base_ejection_ms), 0, 1},
    {"max_ejection_ms", offsetof(struct health_config, max_ejection_ms), 0, 1},
    {"max_ejection_percent", offsetof(struct health_config, max_ejection_percent), 0, 0},
    {"retry_budget_percent", offsetof(struct health_config, retry_budget_percent), 0, 0},
    {"min_retries_per_s", offsetof(struct health_config, min_retries_per_s), 0, 0},
    {NULL, 0, 0, 0},
};

static const struct num_field provider_fields[] = {
    {"default_max_tokens", offsetof(struct provider, default_max_tokens), 0, 1},
    {NULL, 0, 0, 0},
};

/* Parse state: the JSON path of the value being read, and where errors go. */
struct ctx {
    char path[512]; /* NUL-terminated; long names are truncated (the message still says why) */
    size_t len;
    char *err;
    size_t errlen;
};

/* ---- paths and errors ---- */

static size_t path_push(struct ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append to the path; returns the previous length for path_pop(). */
static size_t path_push(struct ctx *x, const char *fmt, ...)
{
    size_t old = x->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(x->path + x->len, sizeof(x->path) - x->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        x->len += (size_t)n < sizeof(x->path) - x->len ? (size_t)n : sizeof(x->path) - 1 - x->len;
    return old;
}

static void path_pop(struct ctx *x, size_t old)
{
    x->len = old;
    x->path[old] = '\0';
}

/* Push an object member: ".name" for plain names, ["name"] otherwise. */
static size_t path_key(struct ctx *x, const char *name)
{
    int plain = name[0] != '\0';
    for (const char *s = name; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-'))
            plain = 0;
    }
    if (plain)
        return path_push(x, ".%s", name);
    size_t old = path_push(x, "[\"");
    for (const char *s = name; *s; s++)
        path_push(x, (*s == '"' || *s == '\\') ? "\\%c" : "%c", *s);
    path_push(x, "\"]");
    return old;
}

static size_t path_index(struct ctx *x, int i)
{
    return path_push(x, "[%d]", i);
}

static int fail(struct ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Write "PATH: problem" to err and return LLMUX_ECONFIG. Control characters (from names in
 * the file) become '?' so a message is always one printable line. */
static int fail(struct ctx *x, const char *fmt, ...)
{
    if (x->errlen == 0)
        return LLMUX_ECONFIG;
    int n = snprintf(x->err, x->errlen, "%s: ", x->path);
    if (n >= 0 && (size_t)n < x->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err + n, x->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    for (char *s = x->err; *s; s++) {
        if ((unsigned char)*s < 0x20)
            *s = '?';
    }
    return LLMUX_ECONFIG;
}

static int oom(struct ctx *x)
{
    snprintf(x->err, x->errlen, "out of memory");
    return UV_ENOMEM;
}

/* ---- generic checks ---- */

/* Every member of obj must be one of `names` (n <= 32), each at most once. */
static int check_keys(struct ctx *x, const cJSON *obj, const char *const *names, size_t n)
{
    uint32_t seen = 0;
    for (const cJSON *it = obj->child; it; it = it->next) {
        size_t i = 0;
        while (i < n && strcmp(it->string, names[i]) != 0)
            i++;
        if (i == n || (seen & (1u << i))) {
            path_key(x, it->string);
            return fail(x, i == n ? "unknown key" : "duplicate key");
        }
        seen |= 1u << i;
    }
    return 0;
}

static int cmp_member_names(const void *a, const void *b)
{
    const cJSON *ma = *(const cJSON *const *)a, *mb = *(const cJSON *const *)b;
    return strcmp(ma->string, mb->string);
}

/* Members of a name -> object map (providers, models): names non-empty and unique. Sorting
 * keeps this O(n log n) on large inputs. */
static int check_names(struct ctx *x, const cJSON *obj, size_t n)
{
    const cJSON **v = malloc((n ? n : 1) * sizeof(*v));
    if (!v)
        return oom(x);
    size_t i = 0;
    for (const cJSON *it = obj->child; it; it = it->next)
        v[i++] = it;
    qsort(v, n, sizeof(*v), cmp_member_names);
    const char *dup = NULL;
    for (i = 1; i < n && !dup; i++) {
        if (strcmp(v[i - 1]->string, v[i]->string) == 0)
            dup = v[i]->string;
    }
    int empty = n > 0 && v[0]->string[0] == '\0'; /* "" sorts first */
    free(v);
    if (empty) {
        path_key(x, "");
        return fail(x, "name must not be empty");
    }
    if (dup) {
        path_key(x, dup);
        return fail(x, "duplicate name");
    }
    return 0;
}

/* Read obj.key as a string into *out (borrowed from the tree). Absent: *out stays NULL, and it
 * is an error when `required`. Empty strings are rejected. */
static int get_string(struct ctx *x, const cJSON *obj, const char *key, int required,
                      const char **out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!it && !required)
        return 0;
    size_t old = path_key(x, key);
    if (!it)
        return fail(x, "is required");
    if (!cJSON_IsString(it) || it->valuestring[0] == '\0')
        return fail(x, "must be a non-empty string");
    path_pop(x, old);
    *out = it->valuestring;
    return 0;
}

static int dup_string(struct ctx *x, const char *s, char **out)
{
    *out = strdup(s);
    return *out ? 0 : oom(x);
}

/* obj.key must be an object when present; *out is NULL when absent. */
static int get_object(struct ctx *x, const cJSON *obj, const char *key, const cJSON **out)
{
    *out = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (*out && !cJSON_IsObject(*out)) {
        path_key(x, key);
        return fail(x, "must be an object");
    }
    return 0;
}

/* Read the object `obj` (may be NULL: nothing to do) whose members are all numbers listed in
 * `fields`, storing each present one into `base` + field offset. */
/* Read the numeric members of obj named in fields (others are left to the caller). */
static int read_numbers(struct ctx *x, const cJSON *obj, const struct num_field *fields, void *base)
{
    for (const struct num_field *f = fields; f->key; f++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, f->key);
        if (!it)
            continue;
        double d = it->valuedouble;
        size_t old = path_key(x, f->key);
        if (!cJSON_IsNumber(it) || !(d >= f->min) || (d <= CONFIG_MAX_U32 && d != (uint32_t)d))
            return fail(x, "must be a %s integer", f->min ? "positive" : "non-negative");
        if (d > CONFIG_MAX_U32)
            return fail(x, "must be at most %.0f", CONFIG_MAX_U32);
        path_pop(x, old);
        if (f->is_size)
            *(size_t *)((char *)base + f->off) = (size_t)d;
        else
            *(uint32_t *)((char *)base + f->off) = (uint32_t)d;
    }
    return 0;
}

/* A numbers-only object: every member must be one of fields. */
static int get_numbers(struct ctx *x, const cJSON *obj, const struct num_field *fields, void *base)
{
    const char *names[16];
    size_t n = 0;
    while (fields[n].key) {
        names[n] = fields[n].key;
        n++;
    }
    int rc = check_keys(x, obj, names, n);
    return rc ? rc : read_numbers(x, obj, fields, base);
}

/* ---- host:port and URLs ---- */

static int is_hostname_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-' || c == '_';
}

static int is_ipv6_char(char c)
{
    return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9') ||
           c == ':' || c == '.';
}

/* Split s[0..n) as "host", "host:port", "[v6]" or "[v6]:port". The host is returned without
 * brackets; *port is -1 when absent. Returns NULL, or what is wrong. */
static const char *split_host_port(const char *s, size_t n, const char **host, size_t *host_len,
                                   long *port)
{
    const char *end = s + n, *rest;
    *port = -1;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return "unterminated IPv6 address";
        *host = s + 1;
        *host_len = (size_t)(close - s - 1);
        for (size_t i = 0; i < *host_len; i++) {
            if (!is_ipv6_char((*host)[i]))
                return "invalid IPv6 address";
        }
        if (*host_len == 0 || !memchr(*host, ':', *host_len))
            return "invalid IPv6 address";
        rest = close + 1;
    } else {
        const char *colon = memchr(s, ':', n);
        rest = colon ? colon : end;
        *host = s;
        *host_len = (size_t)(rest - s);
        for (size_t i = 0; i < *host_len; i++) {
            if (!is_hostname_char(s[i]))
                return "invalid host name";
        }
    }
    if (*host_len == 0)
        return "missing host";
    if (rest == end)
        return NULL;
    if (*rest != ':' || end - rest < 2 || end - rest > 6)
        return "invalid port";
    long v = 0;
    for (const char *p = rest + 1; p < end; p++) {
        if (*p < '0' || *p > '9')
            return "invalid port";
        v = v * 10 + (*p - '0');
    }
    if (v > 65535)
        return "invalid port";
    *port = v;
    return NULL;
}

const char *url_split(const char *url, struct url_parts *u)
{
    const char *rest;
    if (strncasecmp(url, "https://", 8) == 0) {
        u->tls = 1;
        rest = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        u->tls = 0;
        rest = url + 7;
    } else {
        return "must start with http:// or https://";
    }
    for (const char *p = rest; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return "must not contain spaces, control or non-ASCII characters";
    }
    if (strpbrk(rest, "?#"))
        return "must not have a query or fragment";
    size_t auth_len = strcspn(rest, "/");
    if (memchr(rest, '@', auth_len))
        return "must not contain user info";
    long port;
    const char *problem = split_host_port(rest, auth_len, &u->host, &u->host_len, &port);
    if (problem)
        return problem;
    if (port == 0)
        return "invalid port";
    u->port = port > 0 ? (uint16_t)port : (u->tls ? 443 : 80);
    u->path = rest + auth_len;
    u->path_len = strlen(u->path);
    while (u->path_len > 0 && u->path[u->path_len - 1] == '/')
        u->path_len--;
    return NULL;
}

/* ---- sections ---- */

static int parse_listen(struct ctx *x, const cJSON *root, struct config *c)
{
    const char *s;
    int rc = get_string(x, root, "listen", 0, &s);
    if (rc)
        return rc;
    if (!s)
        s = "127.0.0.1:8080";
    const char *env = getenv("LLMUX_LISTEN"); /* a container sets its own address */
    if (env && env[0])
        s = env;
    const char *host;
    size_t host_len;
    long port;
    if (split_host_port(s, strlen(s), &host, &host_len, &port) || port < 0) {
        path_key(x, "listen");
        return fail(x, "expected \"host:port\"%s", env && env[0] ? " (from LLMUX_LISTEN)" : "");
    }
    c->listen_host = strndup(host, host_len);
    if (!c->listen_host)
        return oom(x);
    c->listen_port = (uint16_t)port;
    return 0;
}

/* "workers": a count, or "auto" for one per online core. */
static int parse_workers(struct ctx *x, const cJSON *root, struct config *c)
{
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "workers");
    if (!w)
        return 0;
    size_t old = path_key(x, "workers");
    if (cJSON_IsString(w) && strcmp(w->valuestring, "auto") == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n < 1 ? 1 : n > CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS : (uint32_t)n;
    } else if (cJSON_IsNumber(w) && w->valuedouble >= 1 && w->valuedouble <= CONFIG_MAX_WORKERS &&
               w->valuedouble == (double)(int)w->valuedouble) {
        c->workers = (uint32_t)w->valuedouble;
    } else {
        return fail(x, "expected a whole number from 1 to %d, or \"auto\"", CONFIG_MAX_WORKERS);
    }
    path_pop(x, old);
    return 0;
}

static int valid_env_name(const char *s)
{
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return 0;
    for (s++; *s; s++) {
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return 0;
    }
    return 1;
}

/* One provider: the path already names it. */
static int parse_provider(struct ctx *x, const cJSON *obj, struct provider *p)
{
    static const char *const keys[] = {"kind",        "base_url",    "api_key_env",       "ca_file",
                                       "api_version", "responses",   "default_max_tokens"};
    if (!cJSON_IsObject(obj))
        return fail(x, "must be an object");
    if (strchr(obj->string, '/'))
        return fail(x, "provider name must not contain '/'");
    int rc = check_keys(x, obj, keys, 7);
    if (rc)
        return rc;
    rc = dup_string(x, obj->string, &p->name);
    if (rc)
        return rc;

    const char *kind, *url, *env, *ca;
    rc = get_string(x, obj, "kind", 1, &kind);
    if (rc)
        return rc;
    size_t k = 0;
    while (k < N_PROVIDER_KINDS && strcmp(kind, provider_kinds[k].name) != 0)
        k++;
    if (k == N_PROVIDER_KINDS) {
        char names[256] = "";
        for (size_t i = 0; i < N_PROVIDER_KINDS; i++)
            snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ", " : "",
                     provider_kinds[i].name);
        path_key(x, "kind");
        return fail(x, "unknown kind \"%.64s\" (expected one of: %s)", kind, names);
    }
    p->kind = provider_kinds[k].kind;

    rc = get_string(x, obj, "base_url", 1, &url);
    if (rc)
        return rc;
    struct url_parts u;
    const char *problem = url_split(url, &u);
    if (problem) {
        path_key(x, "base_url");
        return fail(x, "%s", problem);
    }
    p->tls = u.tls;
    p->port = u.port;
    p->base_url = strdup(url);
    p->host = strndup(u.host, u.host_len);
    p->base_path = strndup(u.path, u.path_len);
    if (!p->base_url || !p->host || !p->base_path)
        return oom(x);

    rc = get_string(x, obj, "ca_file", 0, &ca);
    if (rc == 0 && ca)
        rc = dup_string(x, ca, &p->ca_file);
    const char *version = NULL;
    if (rc == 0)
        rc = get_string(x, obj, "api_version", 0, &version);
    if (rc == 0)
        rc = dup_string(x,
                        version                        ? version
                        : p->kind == PROVIDER_AZURE     ? "2024-10-21"
                        : p->kind == PROVIDER_ANTHROPIC ? "2023-06-01"
                                                        : "",
                        &p->api_version);
    const char *responses = NULL; /* how POST /v1/responses reaches it: translated or native */
    if (rc == 0)
        rc = get_string(x, obj, "responses", 0, &responses);
    if (rc == 0 && responses) {
        p->responses_native = strcmp(responses, "native") == 0;
        if (!p->responses_native && strcmp(responses, "translate") != 0) {
            path_key(x, "responses");
            return fail(x, "must be \"native\" (the provider serves POST /responses itself) or "
                           "\"translate\"");
        }
        if (p->responses_native && p->kind != PROVIDER_OPENAI && p->kind != PROVIDER_AZURE) {
            path_key(x, "responses");
            return fail(x, "\"native\" is for openai- and azure-kind providers (the Responses "
                           "API is OpenAI's); other kinds are always translated");
        }
    }
    p->default_max_tokens = 4096;
    if (rc == 0)
        rc = read_numbers(x, obj, provider_fields, p);
    if (rc == 0)
        rc = get_string(x, obj, "api_key_env", 0, &env);
    if (rc)
        return rc;
    p->enabled = 1;
    if (!env)
        return 0;
    if (!valid_env_name(env)) {
        path_key(x, "api_key_env");
        return fail(x, "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
    }
    rc = dup_string(x, env, &p->api_key_env);
    if (rc)
        return rc;
    const char *value = getenv(env);
    if (value && value[0]) {
        /* the key goes into a request head: one line of visible characters (never quoted) */
        for (const char *c = value; *c; c++) {
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                path_key(x, "api_key_env");
                return fail(x, "the value of %s contains a control character (CR, LF, tab...): "
                               "a key must be one line of visible characters", env);
            }
        }
        if (strlen(value) > 16384) {
            path_key(x, "api_key_env");
            return fail(x, "the value of %s is longer than 16384 bytes", env);
        }
        return dup_string(x, value, &p->api_key);
    }
    p->enabled = 0;
    size_t n = strlen(env) + sizeof(" is not set");
    p->disabled_reason = malloc(n);
    if (!p->disabled_reason)
        return oom(x);
    snprintf(p->disabled_reason, n, "%s is not set", env);
    return 0;
}

static int parse_providers(struct ctx *x, const cJSON *root, struct config *c)
{
    const cJSON *obj;
    int rc = get_object(x, root, "providers", &obj);
    if (rc)
        return rc;
    size_t old = path_key(x, "providers");
    int n = obj ? cJSON_GetArraySize(obj) : 0;
    if (n == 0)
        return fail(x, "at least one provider is required");
    rc = check_names(x, obj, (size_t)n);
    if (rc)
        return rc;
    c->providers = calloc((size_t)n, sizeof(*c->providers));
    if (!c->providers)
        return oom(x);
    c->n_providers = (size_t)n;
    size_t i = 0;
    for (const cJSON *it = obj->child; it; it = it->next, i++) {
        size_t item = path_key(x, it->string);
        rc = parse_provider(x, it, &c->providers[i]);
        if (rc)
            return rc;
        path_pop(x, item);
    }
    path_pop(x, old);
    return 0;
}

/* A non-negative number member (absent: *out unchanged). */
static int get_price(struct ctx *x, const cJSON *obj, const char *key, double *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it)
        return 0;
    size_t old = path_key(x, key);
    if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0) || it->valuedouble > 1e9)
        return fail(x, "must be a non-negative number (%s)",
                    strcmp(key, "request") == 0 ? "$ per request" : "$ per million tokens");
    path_pop(x, old);
    *out = it->valuedouble;
    return 0;
}

static const struct num_field deployment_fields[] = {
    {"context_window", offsetof(struct deployment, context_window), 0, 1},
    {"weight", offsetof(struct deployment, weight), 0, 1},
    {"rpm", offsetof(struct deployment, rpm), 0, 1},
    {"tpm", offsetof(struct deployment, tpm), 0, 1},
    {NULL, 0, 0, 0},
};

/* One deployment of a model: {"provider": NAME, "model": ID, "price": {"input", "output",
 * "cache_read", "cache_write", "request"},
 * "context_window", "weight"}; the path names it. */
static int parse_deployment(struct ctx *x, const cJSON *obj, struct config *c,
                            struct deployment *d)
{
    static const char *const keys[] = {"provider", "model",  "price", "context_window",
                                       "weight",   "rpm",    "tpm"};
    static const char *const price_keys[] = {"input", "output", "cache_read", "cache_write",
                                             "request"};
    if (!cJSON_IsObject(obj))
        return fail(x, "must be an object");
    const char *prov, *model;
    const cJSON *price;
    d->price_in = d->price_out = d->price_cache_read = d->price_cache_write = -1;
    d->price_request = 0;
    d->weight = 1;
    int rc = check_keys(x, obj, keys, sizeof(keys) / sizeof(keys[0]));
    if (rc == 0)
        rc = get_string(x, obj, "provider", 1, &prov);
    if (rc == 0)
        rc = get_string(x, obj, "model", 1, &model);
    if (rc == 0)
        rc = read_numbers(x, obj, deployment_fields, d);
    if (rc == 0)
        rc = get_object(x, obj, "price", &price);
    if (rc == 0 && price) {
        size_t old = path_key(x, "price");
        rc = check_keys(x, price, price_keys, 5);
        if (rc == 0 && !cJSON_GetObjectItemCaseSensitive(price, "input"))
            rc = fail(x, "needs \"input\" and \"output\" ($ per million tokens)");
        if (rc == 0 && !cJSON_GetObjectItemCaseSensitive(price, "output"))
            rc = fail(x, "needs \"input\" and \"output\" ($ per million tokens)");
        if (rc == 0)
            rc = get_price(x, price, "input", &d->price_in);
        if (rc == 0)
            rc = get_price(x, price, "output", &d->price_out);
        if (rc == 0)
            rc = get_price(x, price, "cache_read", &d->price_cache_read);
        if (rc == 0)
            rc = get_price(x, price, "cache_write", &d->price_cache_write);
        if (rc == 0)
            rc = get_price(x, price, "request", &d->price_request);
        if (rc == 0)
            path_pop(x, old);
    }
    if (rc)
        return rc;
    d->provider = (struct provider *)config_find_provider(c, prov, strlen(prov));
    if (!d->provider) {
        path_key(x, "provider");
        return fail(x, "unknown provider \"%.64s\"", prov);
    }
    return dup_string(x, model, &d->model);
}

/* A member that must be one of `names`; *out gets its index (absent: unchanged). */
static int get_enum(struct ctx *x, const cJSON *obj, const char *key, const char *const *names,
                    size_t n, int *out)
{
    const char *v;
    int rc = get_string(x, obj, key, 0, &v);
    if (rc || !v)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v, names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    char all[160] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s%s", i ? ", " : "", names[i]);
    path_key(x, key);
    return fail(x, "unknown value \"%.64s\" (expected one of: %s)", v, all);
}

static const struct num_field model_fields[] = {
    {"max_attempts", offsetof(struct model, max_attempts), 0, 1},
    {NULL, 0, 0, 0},
};

static int parse_section(struct ctx *x, const cJSON *root, const char *key,
                         const struct num_field *fields, void *base);

static int parse_model(struct ctx *x, const cJSON *obj, struct config *c, struct model *m)
{
    static const char *const keys[] = {"deployments",       "timeouts_ms",  "strategy",
                                       "hedge_after_ms",    "on_stream_failure",
                                       "max_attempts",      "cache"};
    static const char *const strategies[] = {"ordered", "price", "latency", "throughput",
                                             "balance"};
    static const char *const on_failure[] = {"error", "continue"};
    if (!cJSON_IsObject(obj))
        return fail(x, "must be an object");
    int rc = check_keys(x, obj, keys, sizeof(keys) / sizeof(keys[0]));
    if (rc == 0)
        rc = dup_string(x, obj->string, &m->name);
    if (rc == 0)
        rc = parse_section(x, obj, "cache", model_cache_fields, m);
    if (rc == 0 && cJSON_GetObjectItemCaseSensitive(obj, "cache") && !m->cache_ttl_s) {
        path_key(x, "cache");
        path_key(x, "ttl_s");
        rc = fail(x, "is required (seconds an answer is kept)");
    }
    int strategy = STRATEGY_ORDERED;
    if (rc == 0)
        rc = get_enum(x, obj, "strategy", strategies, 5, &strategy);
    m->strategy = (enum strategy)strategy;
    if (rc == 0)
        rc = get_enum(x, obj, "on_stream_failure", on_failure, 2, &m->continue_on_failure);
    if (rc == 0)
        rc = read_numbers(x, obj, model_fields, m);
    const cJSON *hedge = cJSON_GetObjectItemCaseSensitive(obj, "hedge_after_ms");
    if (rc == 0 && cJSON_IsString(hedge) && strcmp(hedge->valuestring, "auto") == 0) {
        m->hedge_after_ms = HEDGE_AUTO;
    } else if (rc == 0 && hedge) {
        size_t old = path_key(x, "hedge_after_ms");
        if (!cJSON_IsNumber(hedge) || hedge->valuedouble < 1 || hedge->valuedouble > 3600000 ||
            hedge->valuedouble != (uint32_t)hedge->valuedouble)
            return fail(x, "must be a positive integer (ms) or \"auto\"");
        m->hedge_after_ms = (uint32_t)hedge->valuedouble;
        path_pop(x, old);
    }
    if (rc)
        return rc;

    const cJSON *deps = cJSON_GetObjectItemCaseSensitive(obj, "deployments");
    size_t old = path_key(x, "deployments");
    int n = cJSON_IsArray(deps) ? cJSON_GetArraySize(deps) : 0;
    if (n == 0)
        return fail(x, "must be a non-empty array");
    if (n > 16)
        return fail(x, "at most 16 deployments");
    m->deployments = calloc((size_t)n, sizeof(*m->deployments));
    if (!m->deployments)
        return oom(x);
    m->n_deployments = (size_t)n;
    int i = 0;
    for (const cJSON *it = deps->child; it; it = it->next, i++) {
        size_t item = path_index(x, i);
        rc = parse_deployment(x, it, c, &m->deployments[i]);
        if (rc)
            return rc;
        path_pop(x, item);
    }
    path_pop(x, old);

    const cJSON *t;
    m->timeouts = c->timeouts;
    rc = get_object(x, obj, "timeouts_ms", &t);
    if (rc || !t)
        return rc;
    old = path_key(x, "timeouts_ms");
    rc = get_numbers(x, t, timeout_fields, &m->timeouts);
    if (rc)
        return rc;
    path_pop(x, old);
    return 0;
}

/* Deployments naming the same provider and upstream model share a health record. */
static void assign_health_ids(struct config *c)
{
    c->n_health = 0;
    c->n_routes = 0;
    for (size_t i = 0; i < c->n_models; i++) {
        for (size_t j = 0; j < c->models[i].n_deployments; j++) {
            struct deployment *d = &c->models[i].deployments[j];
            d->route_id = c->n_routes++;
            unsigned char h[32];
            mbedtls_sha256_context sc;
            mbedtls_sha256_init(&sc);
            mbedtls_sha256_starts_ret(&sc, 0);
            mbedtls_sha256_update_ret(&sc, (const unsigned char *)d->provider->name,
                                      strlen(d->provider->name) + 1);
            mbedtls_sha256_update_ret(&sc, (const unsigned char *)d->model, strlen(d->model));
            mbedtls_sha256_finish_ret(&sc, h);
            mbedtls_sha256_free(&sc);
            memcpy(d->limit_name, "dep:", 4);
            for (int k = 0; k < 16; k++)
                snprintf(d->limit_name + 4 + 2 * k, 3, "%02x", h[k]);
            d->health_id = c->n_health;
            for (size_t k = 0; k <= i && d->health_id == c->n_health; k++) {
                for (size_t l = 0; l < c->models[k].n_deployments; l++) {
                    const struct deployment *e = &c->models[k].deployments[l];
                    if (e == d)
                        break;
                    if (e->provider == d->provider && strcmp(e->model, d->model) == 0) {
                        d->health_id = e->health_id;
                        break;
                    }
                }
            }
            if (d->health_id == c->n_health)
                c->n_health++;
        }
    }
}

static int parse_models(struct ctx *x, const cJSON *root, struct config *c)
{
    const cJSON *obj;
    int rc = get_object(x, root, "models", &obj);
    if (rc || !obj)
        return rc;
    size_t old = path_key(x, "models");
    int n = cJSON_GetArraySize(obj);
    rc = check_names(x, obj, (size_t)n);
    if (rc)
        return rc;
    c->models = calloc(n ? (size_t)n : 1, sizeof(*c->models));
    if (!c->models)
        return oom(x);
    c->n_models = (size_t)n;
    size_t i = 0;
    for (const cJSON *it = obj->child; it; it = it->next, i++) {
        size_t item = path_key(x, it->string);
        rc = parse_model(x, it, c, &c->models[i]);
        if (rc)
            return rc;
        path_pop(x, item);
    }
    path_pop(x, old);
    return 0;
}

/* obj[key], an array of non-empty strings, copied into *out (*n of them). Absent: none. */
static int get_string_array(struct ctx *x, const cJSON *obj, const char *key, char ***out,
                            size_t *n_out)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!arr)
        return 0;
    size_t old = path_key(x, key);
    if (!cJSON_IsArray(arr))
        return fail(x, "must be an array of strings");
    int n = cJSON_GetArraySize(arr);
    *out = calloc(n ? (size_t)n : 1, sizeof(**out));
    if (!*out)
        return oom(x);
    *n_out = (size_t)n;
    int i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
            path_index(x, i);
            return fail(x, "must be a non-empty string");
        }
        int rc = dup_string(x, it->valuestring, &(*out)[i]);
        if (rc)
            return rc;
    }
    path_pop(x, old);
    return 0;
}

static const struct num_field key_fields[] = {
    {"rpm", offsetof(struct gateway_key, rpm), 0, 1},
    {"tpm", offsetof(struct gateway_key, tpm), 0, 1},
    {NULL, 0, 0, 0},
};

static int hex_digest(const char *s, unsigned char out[32])
{
    if (strlen(s) != 64)
        return -1;
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (!isxdigit((unsigned char)s[2 * i]) || !isxdigit((unsigned char)s[2 * i + 1]) ||
            sscanf(s + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* One "keys" entry: a key string, or {"name", exactly one of "key" / "key_sha256" /
 * "key_env", "models", "rpm", "tpm", "budget_usd", "budget_period"}. Messages name the path,
 * never a key. */
static int parse_key(struct ctx *x, const cJSON *it, int index, struct gateway_key *k)
{
    static const char *const keys[] = {"name", "key",        "key_sha256",   "key_env", "models",
                                       "rpm",  "tpm",        "budget_usd",   "budget_period"};
    k->budget_usd = -1;
    k->enabled = 1;
    char name[32];
    snprintf(name, sizeof(name), "keys[%d]", index);
    if (cJSON_IsString(it)) {
        if (!it->valuestring[0])
            return fail(x, "must be a non-empty string or an object");
        mbedtls_sha256_ret((const unsigned char *)it->valuestring, strlen(it->valuestring),
                           k->sha256, 0);
        return dup_string(x, name, &k->name);
    }
    if (!cJSON_IsObject(it))
        return fail(x, "must be a non-empty string or an object");
    int rc = check_keys(x, it, keys, sizeof(keys) / sizeof(keys[0]));
    const char *nm = NULL, *key = NULL, *hash = NULL, *env = NULL, *period = NULL;
    if (rc == 0)
        rc = get_string(x, it, "name", 0, &nm);
    if (rc == 0)
        rc = dup_string(x, nm ? nm : name, &k->name);
    if (rc == 0)
        rc = get_string(x, it, "key", 0, &key);
    if (rc == 0)
        rc = get_string(x, it, "key_sha256", 0, &hash);
    if (rc == 0)
        rc = get_string(x, it, "key_env", 0, &env);
    if (rc == 0)
        rc = get_string(x, it, "budget_period", 0, &period);
    if (rc == 0)
        rc = read_numbers(x, it, key_fields, k);
    if (rc == 0)
        rc = get_string_array(x, it, "models", &k->models, &k->n_models);
    if (rc)
        return rc;
    if ((key != NULL) + (hash != NULL) + (env != NULL) != 1)
        return fail(x, "needs exactly one of \"key\", \"key_sha256\" and \"key_env\"");
    if (key && !key[0]) {
        path_key(x, "key");
        return fail(x, "must be a non-empty string");
    }
    if (hash && hex_digest(hash, k->sha256) != 0) {
        path_key(x, "key_sha256");
        return fail(x, "must be 64 hex digits (the SHA-256 of the key)");
    }
    if (env) {
        const char *v = getenv(env);
        k->enabled = v && v[0];
        key = k->enabled ? v : NULL;
    }
    if (key)
        mbedtls_sha256_ret((const unsigned char *)key, strlen(key), k->sha256, 0);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(it, "budget_usd");
    if (b) {
        if (!cJSON_IsNumber(b) || !(b->valuedouble >= 0)) {
            path_key(x, "budget_usd");
            return fail(x, "must be a non-negative number (USD)");
        }
        k->budget_usd = b->valuedouble;
    }
    if (period) {
        static const char *const periods[] = {"total", "day", "month"};
        int found = -1;
        for (int i = 0; i < 3; i++)
            if (strcmp(period, periods[i]) == 0)
                found = i;
        if (found < 0) {
            path_key(x, "budget_period");
            return fail(x, "unknown value \"%.32s\" (expected one of: total, day, month)", period);
        }
        k->budget_period = (enum budget_period)found;
    }
    return 0;
}

/* "keys": gateway keys (strings or objects); names must be unique. */
static int parse_keys(struct ctx *x, const cJSON *root, struct config *c)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "keys");
    if (!arr)
        return 0;
    size_t old = path_key(x, "keys");
    if (!cJSON_IsArray(arr))
        return fail(x, "must be an array of keys (strings or objects)");
    int n = cJSON_GetArraySize(arr);
    c->keys = calloc(n ? (size_t)n : 1, sizeof(*c->keys));
    if (!c->keys)
        return oom(x);
    c->n_keys = (size_t)n;
    int i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        size_t at = path_index(x, i);
        int rc = parse_key(x, it, i, &c->keys[i]);
        if (rc)
            return rc;
        for (int j = 0; j < i; j++)
            if (strcmp(c->keys[j].name, c->keys[i].name) == 0)
                return fail(x, "the name \"%.64s\" is used twice", c->keys[i].name);
        path_pop(x, at);
    }
    path_pop(x, old);
    return 0;
}

/* "cors": {"origins": ["https://app.example", ...]} ("*": any origin). */
static int parse_cors(struct ctx *x, const cJSON *root, struct config *c)
{
    const cJSON *obj;
    int rc = get_object(x, root, "cors", &obj);
    if (rc || !obj)
        return rc;
    size_t old = path_key(x, "cors");
    static const char *const keys[] = {"origins"};
    rc = check_keys(x, obj, keys, 1);
    if (rc == 0)
        rc = get_string_array(x, obj, "origins", &c->cors_origins, &c->n_cors_origins);
    for (size_t i = 0; rc == 0 && i < c->n_cors_origins; i++) {
        for (const char *ch = c->cors_origins[i]; *ch; ch++) {
            if ((unsigned char)*ch <= 0x20 || *ch == 0x7f || *ch == ',') {
                path_key(x, "origins");
                path_index(x, (int)i);
                return fail(x, "must be one origin such as \"https://app.example\" or \"*\"");
            }
        }
    }
    if (rc == 0)
        path_pop(x, old);
    return rc;
}

/* "state": {"redis": "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]", "password_env": "VAR",
 * "prefix": "llmux:", "on_error": "open" | "closed", "timeout_ms": N}. The URL may hold a
 * password: no message quotes it. */
static int parse_state(struct ctx *x, const cJSON *root, struct config *c)
{
    const cJSON *obj;
    int rc = get_object(x, root, "state", &obj);
    if (rc || !obj)
        return rc;
    size_t old = path_key(x, "state");
    static const char *const keys[] = {"redis", "password_env", "prefix", "on_error",
                                       "timeout_ms"};
    static const char *const on_error[] = {"open", "closed"};
    struct state_config *st = &c->state;
    const char *url = NULL, *pw_env = NULL, *prefix = NULL;
    rc = check_keys(x, obj, keys, sizeof(keys) / sizeof(keys[0]));
    if (rc == 0)
        rc = get_string(x, obj, "redis", 1, &url);
    if (rc == 0)
        rc = get_string(x, obj, "password_env", 0, &pw_env);
    if (rc == 0)
        rc = get_string(x, obj, "prefix", 0, &prefix);
    if (rc == 0)
        rc = get_enum(x, obj, "on_error", on_error, 2, &st->fail_closed);
    if (rc)
        return rc;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "timeout_ms");
    if (t && (!cJSON_IsNumber(t) || t->valuedouble < 1 || t->valuedouble > 60000 ||
              t->valuedouble != (double)(uint32_t)t->valuedouble)) {
        path_key(x, "timeout_ms");
        return fail(x, "must be a whole number of milliseconds from 1 to 60000");
    }
    st->timeout_ms = t ? (uint32_t)t->valuedouble : 250;
    size_t in_state = path_key(x, "redis");
    if (strncmp(url, "redis://", 8) != 0)
        return fail(x, "must start with redis:// (redis://[[USER]:PASSWORD@]HOST[:PORT][/DB])");
    const char *rest = url + 8;
    for (const char *p = rest; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return fail(x, "must not contain spaces, control or non-ASCII characters");
    }
    size_t auth_len = strcspn(rest, "/?#");
    const char *at = memrchr(rest, '@', auth_len);
    if (at) { /* [USER]:PASSWORD@ */
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        if (!colon || colon + 1 == at)
            return fail(x, "user info must be :PASSWORD@ or USER:PASSWORD@");
        if (colon > rest && !(st->redis_user = strndup(rest, (size_t)(colon - rest))))
            return oom(x);
        if (!(st->redis_password = strndup(colon + 1, (size_t)(at - colon - 1))))
            return oom(x);
        auth_len -= (size_t)(at + 1 - rest);
        rest = at + 1;
    }
    const char *host;
    size_t host_len;
    long port;
    const char *problem = split_host_port(rest, auth_len, &host, &host_len, &port);
    if (problem)
        return fail(x, "%s", problem);
    if (port == 0)
        return fail(x, "invalid port");
    st->redis_port = port > 0 ? (uint16_t)port : 6379;
    const char *tail = rest + auth_len;
    if (*tail == '/' && tail[1]) {
        char *end;
        unsigned long db = strtoul(tail + 1, &end, 10);
        if (*end || db > 1000 || !isdigit((unsigned char)tail[1]))
            return fail(x, "the database after the '/' must be a number");
        st->redis_db = (uint32_t)db;
    } else if (*tail && strcmp(tail, "/") != 0) {
        return fail(x, "must not have a query or fragment");
    }
    if (!(st->redis_host = strndup(host, host_len)))
        return oom(x);
    path_pop(x, in_state);
    if (pw_env) {
        const char *v = getenv(pw_env);
        if (!v || !v[0]) {
            path_key(x, "password_env");
            return fail(x, "the variable %.64s is not set", pw_env);
        }
        free(st->redis_password);
        if (!(st->redis_password = strdup(v)))
            return oom(x);
    }
    if (!prefix)
        prefix = "llmux:";
    for (const char *p = prefix; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '{' || *p == '}') {
            path_key(x, "prefix");
            return fail(x, "must be printable ASCII without spaces or braces");
        }
    }
    rc = dup_string(x, prefix, &st->prefix);
    if (rc == 0)
        path_pop(x, old);
    return rc;
}

/* Read a numbers-only section ("timeouts_ms", "limits", "pool") of the root into base. */
static int parse_section(struct ctx *x, const cJSON *root, const char *key,
                         const struct num_field *fields, void *base)
{
    const cJSON *obj;
    int rc = get_object(x, root, key, &obj);
    if (rc || !obj)
        return rc;
    size_t old = path_key(x, key);
    rc = get_numbers(x, obj, fields, base);
    if (rc)
        return rc;
    path_pop(x, old);
    return 0;
}

static int parse_root(struct ctx *x, const cJSON *root, struct config *c)
{
    static const char *const keys[] = {"listen",     "timeouts_ms", "limits", "pool",
                                       "health",     "access_log",  "providers", "models",
                                       "keys",       "cors",        "workers",   "shutdown",
                                       "generations", "state",     "cache"};
    if (!cJSON_IsObject(root))
        return fail(x, "must be an object");
    int rc = check_keys(x, root, keys, sizeof(keys) / sizeof(keys[0]));
    if (rc == 0)
        rc = parse_listen(x, root, c);
    if (rc == 0)
        rc = parse_workers(x, root, c);
    if (rc == 0)
        rc = parse_section(x, root, "shutdown", shutdown_fields, c);
    if (rc == 0)
        rc = parse_section(x, root, "generations", generations_fields, c);
    if (rc == 0 && c->generations_keep > 1000000) {
        path_key(x, "generations");
        path_key(x, "keep");
        rc = fail(x, "at most 1000000");
    }
    if (rc == 0)
        rc = parse_section(x, root, "cache", cache_fields, c);
    if (rc == 0)
        rc = parse_section(x, root, "timeouts_ms", timeout_fields, &c->timeouts);
    if (rc == 0)
        rc = parse_section(x, root, "limits", limit_fields, c);
    if (rc == 0)
        rc = parse_section(x, root, "pool", pool_fields, c);
    if (rc == 0)
        rc = parse_section(x, root, "health", health_fields, &c->health);
    const char *log = NULL;
    if (rc == 0)
        rc = get_string(x, root, "access_log", 0, &log);
    if (rc == 0 && log)
        rc = dup_string(x, log, &c->access_log);
    if (rc == 0)
        rc = parse_providers(x, root, c);
    if (rc == 0)
        rc = parse_models(x, root, c);
    if (rc == 0)
        rc = parse_keys(x, root, c);
    if (rc == 0)
        rc = parse_cors(x, root, c);
    if (rc == 0)
        rc = parse_state(x, root, c);
    if (rc == 0)
        assign_health_ids(c);
    return rc;
}

/* ---- public ---- */

static void config_free(struct config *c)
{
    for (size_t i = 0; i < c->n_providers; i++) {
        struct provider *p = &c->providers[i];
        free(p->name);
        free(p->base_url);
        free(p->host);
        free(p->base_path);
        free(p->api_key_env);
        free(p->api_key);
        free(p->ca_file);
        free(p->api_version);
        free(p->disabled_reason);
    }
    for (size_t i = 0; i < c->n_models; i++) {
        for (size_t j = 0; j < c->models[i].n_deployments; j++)
            free(c->models[i].deployments[j].model);
        free(c->models[i].deployments);
        free(c->models[i].name);
    }
    for (size_t i = 0; i < c->n_keys; i++) {
        free(c->keys[i].name);
        for (size_t j = 0; j < c->keys[i].n_models; j++)
            free(c->keys[i].models[j]);
        free(c->keys[i].models);
    }
    for (size_t i = 0; i < c->n_cors_origins; i++)
        free(c->cors_origins[i]);
    free(c->cors_origins);
    free(c->providers);
    free(c->models);
    free(c->keys);
    free(c->listen_host);
    free(c->access_log);
    free(c->state.redis_host);
    free(c->state.redis_user);
    free(c->state.redis_password);
    free(c->state.prefix);
    free(c);
}

/* "invalid JSON near line L column C" for the byte at `at` (1-based, columns in bytes). */
static int fail_json(struct ctx *x, const char *json, const char *at)
{
    int line = 1, col = 1;
    for (const char *p = json; p < at; p++) {
        col++;
        if (*p == '\n') {
            line++;
            col = 1;
        }
    }
    return fail(x, "invalid JSON near line %d column %d", line, col);
}

int config_parse(const char *json, size_t len, struct config **out, char *err, size_t errlen)
{
    struct ctx x = {.path = "$", .len = 1, .err = err, .errlen = errlen};
    *out = NULL;
    if (errlen > 0)
        err[0] = '\0';

    /* cJSON stops at a NUL, which would silently drop the rest of the text. */
    const char *nul = memchr(json, '\0', len);
    if (nul)
        return fail_json(&x, json, nul);
    /* Parse a NUL-terminated copy and require the text to end there: no trailing garbage.
     * The error position is cJSON_GetErrorPtr()'s, taken from return_parse_end so no global
     * state is read. */
    char *text = malloc(len + 1);
    if (!text)
        return oom(&x);
    memcpy(text, json, len);
    text[len] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, &end, 1);
    if (!root) {
        int rc = fail_json(&x, text, end ? end : text + len);
        free(text);
        return rc;
    }
    free(text);

    struct config *c = calloc(1, sizeof(*c));
    if (!c) {
        cJSON_Delete(root);
        return oom(&x);
    }
    c->refs = 1;
    c->timeouts = (struct timeouts){2000, 30000, 30000, 600000, 5000};
    c->max_body_bytes = 4u << 20;
    c->max_header_bytes = 16u << 10;
    c->max_url_bytes = 8u << 10;
    c->header_timeout_ms = 60000;
    c->body_timeout_ms = 60000;
    c->keepalive_timeout_ms = 75000;
    c->send_timeout_ms = 60000;
    c->max_connections = 10000;
    c->max_body_buffer_bytes = 256u << 20;
    c->pool_max_idle = 32;
    c->pool_idle_timeout_ms = 60000;
    c->workers = 1;
    c->drain_ms = 10000;
    c->generations_keep = 10000;
    c->cache_max_bytes = 64u << 20;
    c->health = (struct health_config){
        .failure_threshold = 5,
        .error_rate_percent = 50,
        .window = 20,
        .base_ejection_ms = 5000,
        .max_ejection_ms = 300000,
        .max_ejection_percent = 50,
        .retry_budget_percent = 20,
        .min_retries_per_s = 10,
    };

    int rc = parse_root(&x, root, c);
    cJSON_Delete(root);
    if (rc) {
        config_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int config_load_file(const char *path, struct config **out, char *err, size_t errlen)
{
    *out = NULL;
    if (errlen > 0)
        err[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return uv_translate_sys_error(errno);
    }
    /* Read through a capped buffer so pipes and /dev/stdin work and size is still bounded. */
    struct buf b;
    buf_init(&b, CONFIG_MAX_FILE_BYTES);
    char chunk[65536];
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            rc = uv_translate_sys_error(errno);
            break;
        }
        if (n == 0)
            break;
        rc = buf_append(&b, chunk, (size_t)n);
        if (rc == UV_ENOBUFS) {
            snprintf(err, errlen, "%s: file too large (limit %u MiB)", path,
                     CONFIG_MAX_FILE_BYTES >> 20);
            rc = LLMUX_ECONFIG;
        }
        if (rc)
            break;
    }
    close(fd);
    if (rc == UV_ENOMEM)
        snprintf(err, errlen, "out of memory");
    if (rc == 0)
        rc = config_parse(buf_head(&b), buf_size(&b), out, err, errlen);
    buf_free(&b);
    return rc;
}

struct config *config_ref(struct config *c)
{
    c->refs++;
    return c;
}

void config_unref(struct config *c)
{
    if (c && --c->refs == 0)
        config_free(c);
}

const struct model *config_find_model(const struct config *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->n_models; i++) {
        const char *m = c->models[i].name;
        if (strlen(m) == len && memcmp(m, name, len) == 0)
            return &c->models[i];
    }
    return NULL;
}

const struct provider *config_find_provider(const struct config *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->n_providers; i++) {
        const char *p = c->providers[i].name;
        if (strlen(p) == len && memcmp(p, name, len) == 0)
            return &c->providers[i];
    }
    return NULL;
}

const char *provider_kind_name(enum provider_kind k)
{
    for (size_t i = 0; i < N_PROVIDER_KINDS; i++) {
        if (provider_kinds[i].kind == k)
            return provider_kinds[i].name;
    }
    return "unknown";
}
