/* test_redact: secrets in provider text are masked before llmux relays or logs it. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "llmux/redact.h"

static void expect(const char *in, const char *key, const char *want)
{
    char s[512];
    snprintf(s, sizeof(s), "%s", in);
    redact_str(s, key);
    CHECK_STR(s, want);
}

int main(void)
{
    const char *key = "sk-proj-Abc123def456GHI789jkl012";
    /* the provider quotes our key back */
    expect("Incorrect API key provided: sk-proj-Abc123def456GHI789jkl012.", key,
           "Incorrect API key provided: ***.");
    /* a shortened form that keeps a long piece of it */
    expect("key 23def456GHI789 is invalid", key, "key 23d*** is invalid");
    /* bearer tokens and key-shaped tokens of other providers */
    expect("got Authorization: Bearer abcdefgh12345678", NULL, "got Authorization: Bearer abc***");
    expect("invalid x-api-key sk-ant-api03-XXXXXXXX", NULL, "invalid x-api-key sk-***");
    expect("API key not valid: AIzaSyD-1234567890abcdefghijklmnopqr", NULL,
           "API key not valid: AIz***");
    /* ordinary messages are kept as they are */
    expect("model claude-3-5-sonnet-20241022 not found", key,
           "model claude-3-5-sonnet-20241022 not found");
    expect("Rate limit reached for gpt-4o-mini in organization org-abc on tokens per min", key,
           "Rate limit reached for gpt-4o-mini in organization org-abc on tokens per min");
    expect("", key, "");
    /* a key with characters outside tokens */
    expect("echo: a+b/c=d+e/f==g!", "a+b/c=d+e/f==g", "echo: ***!");
    /* length never grows and the bytes after the new end are not read as text */
    char buf[] = "Bearer 0123456789abcdef tail";
    size_t n = redact(buf, strlen(buf), NULL);
    CHECK(n == strlen("Bearer 012*** tail"));
    CHECK(memcmp(buf, "Bearer 012*** tail", n) == 0);
    return check_report();
}
