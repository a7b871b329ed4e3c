/* api: the inbound OpenAI-compatible API. Routes by path and method, authenticates gateway
 * keys, parses the JSON body once into a canonical request, asks the router for a plan and
 * hands the request to an exchange. Every refusal is an OpenAI-shaped error. */
#ifndef LLMUX_API_H
#define LLMUX_API_H

#include "llmux/gateway.h"
#include "llmux/server.h"

/* The server handler; data is the struct gateway. */
void api_handle(void *data, struct server_req *req);
/* The server's on_head hook: refuses a request without a valid gateway key from its head,
 * before its body is read. */
void api_on_head(void *data, struct server_req *req);
/* The server's request_id hook: a fresh request id. */
void api_request_id(void *data, char out[33]);
/* The server's error_body hook: its own refusals (413, 431, 414, 400...) of a /v1/messages
 * request in Anthropic's error shape; other URLs get OpenAI's. */
int api_error_body(void *data, const char *url, size_t url_len, int status, const char *message,
                   struct buf *out);

#endif
