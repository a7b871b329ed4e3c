/* llmux's own error codes. Functions return 0 or a negative code: libuv's UV_E* codes, or
 * one of these, in their own range so they never collide with errno values. */
#ifndef LLMUX_ERRORS_H
#define LLMUX_ERRORS_H

enum {
    LLMUX_ETLS = -30001,        /* TLS handshake or record-layer failure */
    LLMUX_ETLSVERIFY = -30002,  /* peer certificate not trusted or host name mismatch */
    LLMUX_EHTTP = -30003,       /* malformed HTTP from a peer */
    LLMUX_ESSE = -30004,        /* malformed or oversized SSE from a peer */
    LLMUX_ECONFIG = -30005,     /* invalid configuration */
    LLMUX_EDNS = -30006,        /* name did not resolve */
    LLMUX_ETOOBIG = -30007,     /* a peer exceeded a size limit */
    LLMUX_EPROTO = -30008,      /* a provider's response does not have its documented shape */
    LLMUX_EKIND = -30009,       /* the provider kind cannot serve this endpoint */
};

/* Human-readable text for an llmux or libuv error code. Never NULL; static storage. */
const char *llmux_strerror(int code);

#endif
