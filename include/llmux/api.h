/* api: the inbound OpenAI-compatible API. Routes by path and method, authenticates gateway
 * keys, parses the JSON body once into a canonical request, asks the router for a plan and
 * hands the request to an exchange. Every refusal is an OpenAI-shaped error. */
#ifndef LLMUX_API_H
#define LLMUX_API_H

#include "llmux/gateway.h"
#include "llmux/server.h"

/* The server handler; data is the struct gateway. */
void api_handle(void *data, struct server_req *req);

#endif
