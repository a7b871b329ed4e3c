// GET /v1/generation?id=<x-request-id>: the record of a finished request with every provider
// attempt in order (failover, hedge, continuation flags, per-attempt and total cost), kept in a
// bounded ring, behind the gateway key.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startLlmux, provider, post, chat, readSse, expectError } from './lib.mjs';

const KEY = 'sk-gen-test';
const H = { authorization: `Bearer ${KEY}` };
let good, bad, llmux;

before(async () => {
  good = await startMock();
  bad = await startMock({ script: 'status=500' });
  llmux = await startLlmux({
    keys: [KEY],
    generations: { keep: 4 },
    providers: { good: provider(good.baseUrl), bad: provider(bad.baseUrl) },
    models: {
      failover: { deployments: [{ provider: 'bad', model: 'b' }, { provider: 'good', model: 'g?tokens=5', price: { input: 1, output: 2 } }] },
      hedged: { hedge_after_ms: 50, deployments: [{ provider: 'good', model: 'slow?delay=600' }, { provider: 'good', model: 'fast' }] },
      continued: { on_stream_failure: 'continue', deployments: [{ provider: 'good', model: 'x?tokens=8&reset_after=3' }, { provider: 'good', model: 'y?tokens=8' }] },
    },
  });
});

after(async () => {
  await llmux?.stop();
  await good?.stop();
  await bad?.stop();
});

const get = (id) => fetch(`${llmux.base}/v1/generation?id=${encodeURIComponent(id)}`, { headers: H });

test('a failover: both attempts, the failed one with its status and error, costs', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('failover'), { ...H, 'x-request-id': 'gen-failover' });
  assert.equal(res.status, 200);
  const body = await res.json();
  const g = await get('gen-failover');
  assert.equal(g.status, 200);
  const { data } = await g.json();
  assert.equal(data.id, 'gen-failover');
  assert.equal(data.model, 'failover');
  assert.equal(data.provider_name, 'good');
  assert.equal(data.upstream_model, 'g?tokens=5');
  assert.equal(data.streamed, false);
  assert.match(data.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.equal(data.tokens_prompt, body.usage.prompt_tokens);
  assert.equal(data.tokens_completion, 5);
  assert.equal(data.finish_reason, 'stop');
  assert.equal(data.total_cost, body.usage.cost);
  assert.equal(data.provider_responses.length, 2);
  const [first, second] = data.provider_responses;
  assert.deepEqual([first.provider_name, first.status, first.served, first.is_hedge], ['bad', 500, false, false]);
  assert.ok(first.error.length > 0);
  assert.equal(first.cost, null, 'unpriced');
  assert.deepEqual([second.provider_name, second.status, second.served, second.error], ['good', 200, true, null]);
  assert.equal(second.cost, body.usage.cost);
});

test('a hedge: the hedged attempt is flagged and served', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('hedged'), { ...H, 'x-request-id': 'gen-hedge' });
  assert.equal(res.status, 200);
  await res.json();
  const { data } = await (await get('gen-hedge')).json();
  assert.equal(data.provider_responses.length, 2);
  const [slow, fast] = data.provider_responses;
  assert.equal(slow.model, 'slow?delay=600');
  assert.equal(slow.served, false);
  assert.equal(slow.is_hedge, false);
  assert.equal(fast.is_hedge, true);
  assert.equal(fast.served, true);
  assert.equal(data.upstream_model, 'fast');
});

test('a continued stream: the continuation is flagged', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('continued', { stream: true }), { ...H, 'x-request-id': 'gen-cont' });
  await readSse(res);
  const { data } = await (await get('gen-cont')).json();
  assert.equal(data.streamed, true);
  assert.equal(data.provider_responses.length, 2);
  assert.equal(data.provider_responses[1].is_continuation, true);
  assert.equal(data.provider_responses[1].served, true);
  assert.equal(data.provider_responses[0].served, false);
  assert.ok(data.latency >= 0 && data.generation_time >= 0);
});

test('/v1/generations lists the newest records, failed=1 those with a failed attempt', async () => {
  const all = await (await fetch(`${llmux.base}/v1/generations?limit=2`, { headers: H })).json();
  assert.deepEqual(all.data.map((d) => d.id), ['gen-cont', 'gen-hedge']);
  const failed = await (await fetch(`${llmux.base}/v1/generations?failed=1`, { headers: H })).json();
  assert.deepEqual(failed.data.map((d) => d.id), ['gen-cont', 'gen-hedge', 'gen-failover']);
});

test('unknown and missing ids, the key, the ring bound', async () => {
  await expectError(await get('nope'), 404, 'generation_not_found');
  await expectError(await fetch(`${llmux.base}/v1/generation`, { headers: H }), 400);
  const nokey = await fetch(`${llmux.base}/v1/generation?id=gen-failover`);
  assert.equal(nokey.status, 401);
  await nokey.text();
  // keep: 4 -> four more requests push gen-failover out
  for (let i = 0; i < 4; i++) {
    const r = await post(llmux.base, '/v1/chat/completions', chat('good/x'), { ...H, 'x-request-id': `gen-more-${i}` });
    await r.json();
  }
  await expectError(await get('gen-failover'), 404, 'generation_not_found');
  assert.equal((await get('gen-more-3')).status, 200);
});
