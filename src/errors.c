/* errors: text for llmux's own error codes, falling back to libuv's. */
#include "llmux/errors.h"

#include <uv.h>

const char *llmux_strerror(int code)
{
    switch (code) {
    case LLMUX_ETLS:
        return "TLS failure";
    case LLMUX_ETLSVERIFY:
        return "TLS certificate verification failed";
    case LLMUX_EHTTP:
        return "malformed HTTP";
    case LLMUX_ESSE:
        return "malformed SSE";
    case LLMUX_ECONFIG:
        return "invalid configuration";
    case LLMUX_EDNS:
        return "name did not resolve";
    case LLMUX_ETOOBIG:
        return "size limit exceeded";
    case LLMUX_EPROTO:
        return "unexpected response shape";
    case LLMUX_EKIND:
        return "this provider kind does not serve the endpoint";
    default:
        return uv_strerror(code);
    }
}
