// usage.cost in every answer: exact for a priced deployment (cached prompt tokens at the
// cache_read price, not counted twice), in the body and in the stream's usage chunk (asked with
// stream_options or OpenRouter's usage.include), absent when unpriced, and a continued stream
// costed across both attempts (cost_details.failed_attempts_cost).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startLlmux, provider, post, chat, readSse, chunks, mockText } from './lib.mjs';

let mock, llmux;
// $ per million: input 2, output 8, cache_read 0.5; $0.001 per request
const PRICE = { input: 2, output: 8, cache_read: 0.5, request: 0.001 };
const micro = (x) => Math.round(x * 1e12); // compare in 1e-12 $

function expected(u) {
  const cached = u.prompt_tokens_details?.cached_tokens ?? 0;
  return ((u.prompt_tokens - cached) * 2 + cached * 0.5 + u.completion_tokens * 8) / 1e6 + 0.001;
}

before(async () => {
  mock = await startMock();
  llmux = await startLlmux({
    providers: { m: provider(mock.baseUrl), m2: provider(mock.baseUrl) },
    models: {
      priced: { deployments: [{ provider: 'm', model: 'x?tokens=7&cached=3', price: PRICE }] },
      unpriced: { deployments: [{ provider: 'm', model: 'x?tokens=7' }] },
      emb: { deployments: [{ provider: 'm', model: 'e', price: { input: 0.02, output: 0 } }] },
      // the first deployment breaks after 4 tokens; the second continues the stream
      continued: {
        on_stream_failure: 'continue',
        deployments: [
          { provider: 'm', model: 'x?tokens=10&reset_after=4', price: { input: 1, output: 4 } },
          { provider: 'm2', model: 'x?tokens=10', price: PRICE },
        ],
      },
    },
  });
});

after(async () => {
  await llmux?.stop();
  await mock?.stop();
});

test('a non-stream answer carries usage.cost, exact, cached tokens at cache_read', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('priced'));
  assert.equal(res.status, 200);
  const { usage } = await res.json();
  assert.equal(usage.prompt_tokens_details.cached_tokens, 3);
  assert.equal(micro(usage.cost), micro(expected(usage)));
  assert.equal(micro(usage.cost_details.upstream_inference_cost), micro(expected(usage)));
  assert.equal(usage.cost_details.failed_attempts_cost, 0);
  const log = await llmux.logFor((await llmux.waitLog(1)).at(-1).request_id);
  assert.equal(micro(log.cost_usd), micro(usage.cost), 'the access log says the same');
});

test('the stream usage chunk carries it, asked by stream_options or usage.include', async () => {
  for (const extra of [{ stream_options: { include_usage: true } }, { usage: { include: true } }]) {
    const res = await post(llmux.base, '/v1/chat/completions', chat('priced', { stream: true, ...extra }));
    assert.equal(res.status, 200);
    const cs = chunks(await readSse(res));
    const last = cs.at(-1);
    assert.ok(last.usage, `no usage chunk with ${JSON.stringify(extra)}`);
    assert.equal(micro(last.usage.cost), micro(expected(last.usage)));
  }
  // llmux's own member is not sent upstream: the mock got stream_options instead
  const sent = JSON.parse((await mock.last()).body);
  assert.equal(sent.usage, undefined);
  assert.deepEqual(sent.stream_options, { include_usage: true });
});

test('unpriced: no cost field rather than a wrong zero; embeddings are costed', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('unpriced'));
  const { usage } = await res.json();
  assert.equal(usage.cost, undefined);
  assert.equal(usage.cost_details, undefined);
  const e = await post(llmux.base, '/v1/embeddings', { model: 'emb', input: ['a', 'b'] });
  const body = await e.json();
  assert.equal(micro(body.usage.cost), micro(body.usage.prompt_tokens * 0.02 / 1e6));
});

test('a continued stream is costed across both attempts', async () => {
  const res = await post(llmux.base, '/v1/chat/completions',
    chat('continued', { stream: true, stream_options: { include_usage: true } }));
  assert.equal(res.status, 200);
  const cs = chunks(await readSse(res));
  const text = cs.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
  assert.equal(text, mockText(10), 'the stream was continued');
  const u = cs.at(-1).usage;
  assert.ok(u.cost_details.failed_attempts_cost > 0, JSON.stringify(u));
  // the broken attempt reported nothing: its 4 delivered tokens at its output price ($4/M)
  assert.equal(micro(u.cost_details.failed_attempts_cost), micro(4 * 4 / 1e6));
  assert.equal(micro(u.cost), micro(u.cost_details.upstream_inference_cost + u.cost_details.failed_attempts_cost));
});
