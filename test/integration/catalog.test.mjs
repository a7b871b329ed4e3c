// The model catalogue: /v1/models with OpenRouter's fields (name, context_length, pricing in $
// per token as strings, deployments), /v1/models/{id} through the official OpenAI client's
// models.retrieve (ids with '/' too), and /v1/models/{id}/endpoints with per-deployment state,
// uptime and TTFT / throughput percentiles measured from real traffic.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startLlmux, provider, post, chat, readSse, expectError } from './lib.mjs';
const { default: OpenAI } = await import(new URL('../node/node_modules/openai/index.mjs', import.meta.url).href);

let good, flaky, llmux, client;

before(async () => {
  good = await startMock();
  flaky = await startMock({ script: 'fail_every=2&status=500' });
  llmux = await startLlmux({
    providers: { good: provider(good.baseUrl), flaky: provider(flaky.baseUrl), off: provider('http://127.0.0.1:1/v1', { api_key_env: 'LLMUX_TEST_UNSET_KEY' }) },
    // never eject: the uptime of a deployment that fails half its attempts is what is measured
    health: { failure_threshold: 1000, error_rate_percent: 100 },
    models: {
      priced: {
        deployments: [
          { provider: 'good', model: 'g?ttft=150&tokens=20&tps=200', price: { input: 0.15, output: 0.6, cache_read: 0.075, request: 0.001 }, context_window: 128000 },
          { provider: 'flaky', model: 'f', price: { input: 2.5, output: 10 }, context_window: 200000 },
          { provider: 'off', model: 'o' },
        ],
      },
      cheap: {
        strategy: 'price',
        deployments: [
          { provider: 'flaky', model: 'f', price: { input: 2.5, output: 10 } },
          { provider: 'good', model: 'g', price: { input: 0.1, output: 0.4 } },
        ],
      },
      'vendor/slashed': { deployments: [{ provider: 'good', model: 'g' }] },
      flaky: { deployments: [{ provider: 'flaky', model: 'f' }] },
      unpriced: { deployments: [{ provider: 'good', model: 'g' }] },
    },
  });
  client = new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  await llmux?.stop();
  await good?.stop();
  await flaky?.stop();
});

test('/v1/models: OpenAI fields plus name, context_length, pricing per token, deployments', async () => {
  const list = await client.models.list();
  const byId = Object.fromEntries(list.data.map((m) => [m.id, m]));
  const p = byId.priced;
  assert.equal(p.object, 'model');
  assert.equal(p.owned_by, 'llmux');
  assert.equal(typeof p.created, 'number');
  assert.equal(p.name, 'priced');
  assert.equal(p.context_length, 200000, 'the largest context of its enabled deployments');
  assert.deepEqual(p.pricing, { prompt: '0.00000015', completion: '0.0000006', input_cache_read: '0.000000075', input_cache_write: '0.00000015', request: '0.001' });
  assert.equal(p.deployments, 2, 'the disabled deployment is not counted');
  assert.equal(byId.cheap.pricing.prompt, '0.0000001', 'price strategy: the cheapest deployment');
  assert.equal(byId.unpriced.pricing, null);
  assert.equal(byId.unpriced.context_length, null);
});

test('models.retrieve returns one model, ids with "/" included; unknown: 404', async () => {
  const m = await client.models.retrieve('priced');
  assert.equal(m.id, 'priced');
  assert.equal(m.pricing.completion, '0.0000006');
  const s = await client.models.retrieve('vendor/slashed'); // the SDK sends vendor%2Fslashed
  assert.equal(s.id, 'vendor/slashed');
  const raw = await fetch(`${llmux.base}/v1/models/vendor/slashed`);
  assert.equal((await raw.json()).id, 'vendor/slashed');
  await assert.rejects(client.models.retrieve('nope'), (e) => e.status === 404 && e.error?.code === 'model_not_found');
  await expectError(await fetch(`${llmux.base}/v1/models/a%0Ab`), 404, 'model_not_found');
});

test('/v1/models/{id}/endpoints: state, uptime and latency from real traffic', async () => {
  let res = await fetch(`${llmux.base}/v1/models/priced/endpoints`);
  assert.equal(res.status, 200);
  let body = await res.json();
  assert.equal(body.data.id, 'priced');
  const [g0, f0, o0] = body.data.endpoints;
  assert.equal(g0.provider_name, 'good');
  assert.equal(g0.model, 'g?ttft=150&tokens=20&tps=200');
  assert.equal(g0.context_length, 128000);
  assert.equal(g0.pricing.prompt, '0.00000015');
  assert.equal(g0.status, 'healthy');
  assert.equal(g0.uptime_last_30m, null, 'no traffic yet');
  assert.equal(g0.latency_last_30m, null);
  assert.equal(f0.provider_name, 'flaky');
  assert.equal(o0.status, 'disabled');

  // 8 streams through the priced alias (served by good); 8 requests to the flaky alias, half fail.
  for (let i = 0; i < 8; i++) {
    const r = await post(llmux.base, '/v1/chat/completions', chat('priced', { stream: true, stream_options: { include_usage: true } }));
    assert.equal(r.status, 200);
    await readSse(r);
  }
  let failed = 0;
  for (let i = 0; i < 8; i++) {
    const r = await post(llmux.base, '/v1/chat/completions', chat('flaky'));
    if (r.status !== 200) failed++;
    await r.text();
  }
  assert.equal(failed, 4);
  body = await (await fetch(`${llmux.base}/v1/models/priced/endpoints`)).json();
  const [g, f] = body.data.endpoints;
  assert.equal(g.uptime_last_5m, 100);
  assert.equal(g.uptime_last_30m, 100);
  assert.equal(g.uptime_last_1d, 100);
  // mockllm waits 150 ms before the first token: TTFT percentiles say so (loopback adds little)
  for (const q of ['p50', 'p75', 'p90', 'p99']) {
    assert.ok(g.latency_last_30m[q] >= 150 && g.latency_last_30m[q] < 1500, `${q} ${g.latency_last_30m[q]}`);
  }
  // 20 tokens at 200/s: ~200 tokens/s once the first one came
  assert.ok(g.throughput_last_30m.p50 > 50 && g.throughput_last_30m.p50 < 400, `tps ${g.throughput_last_30m.p50}`);
  assert.equal(f.uptime_last_30m, 50, 'failed half its attempts');
  assert.equal(f.uptime_last_5m, 50);
  assert.equal(f.latency_last_30m.p50 >= 0, true);
  const ids = await (await fetch(`${llmux.base}/v1/models/vendor%2Fslashed/endpoints`)).json();
  assert.equal(ids.data.endpoints.length, 1);
  await expectError(await fetch(`${llmux.base}/v1/models/nope/endpoints`), 404, 'model_not_found');
});
