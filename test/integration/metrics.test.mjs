// GET /metrics: Prometheus text format that promtool accepts, whose counters move by exactly
// the traffic sent (requests by status, attempts by outcome, fallbacks, cost, token and
// duration histograms), with no key or request id in any label, behind the gateway key.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startLlmux, provider, post, chat, readSse, sample, promtool } from './lib.mjs';

let good, bad, llmux;
const KEY = 'sk-llmux-metrics-test-key';

before(async () => {
  good = await startMock();
  bad = await startMock({ script: 'status=500' });
  llmux = await startLlmux({
    keys: [KEY],
    health: { failure_threshold: 1000, error_rate_percent: 100 },
    providers: { good: provider(good.baseUrl), bad: provider(bad.baseUrl) },
    models: {
      // mockllm counts 15 prompt tokens for chat('...') and answers `tokens` output tokens
      priced: { deployments: [{ provider: 'good', model: 'g?tokens=10', price: { input: 2, output: 8, request: 0.001 } }] },
      failover: { deployments: [{ provider: 'bad', model: 'b' }, { provider: 'good', model: 'g?tokens=4' }] },
      broken: { deployments: [{ provider: 'bad', model: 'b2' }] },
    },
  });
});

after(async () => {
  await llmux?.stop();
  await good?.stop();
  await bad?.stop();
});

const auth = { authorization: `Bearer ${KEY}` };

async function scrape() {
  const res = await fetch(`${llmux.base}/metrics`, { headers: auth });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  return res.text();
}

test('/metrics needs the gateway key when keys are set', async () => {
  const res = await fetch(`${llmux.base}/metrics`);
  assert.equal(res.status, 401);
  await res.text();
});

test('promtool accepts /metrics, counters move by exactly the traffic, no secret in a label', async () => {
  const first = await scrape();
  promtool(first);
  assert.equal(sample(first, 'llmux_build_info'), 1);
  assert.equal(sample(first, 'llmux_fallbacks_total', { model: 'failover' }), 0);

  // 3 plain and 2 streamed requests to the priced alias; 2 that fail over; 1 unknown model.
  let prompt = 0, completion = 0;
  for (let i = 0; i < 3; i++) {
    const res = await post(llmux.base, '/v1/chat/completions', chat('priced'), { ...auth, 'x-request-id': `secret-rid-${i}` });
    const body = await res.json();
    prompt += body.usage.prompt_tokens;
    completion += body.usage.completion_tokens;
  }
  for (let i = 0; i < 2; i++) {
    const res = await post(llmux.base, '/v1/chat/completions',
      chat('priced', { stream: true, stream_options: { include_usage: true } }), auth);
    const datas = await readSse(res);
    const usage = JSON.parse(datas.at(-2)).usage;
    prompt += usage.prompt_tokens;
    completion += usage.completion_tokens;
  }
  for (let i = 0; i < 2; i++) {
    const res = await post(llmux.base, '/v1/chat/completions', chat('failover'), auth);
    assert.equal(res.status, 200);
    await res.json();
  }
  const br = await post(llmux.base, '/v1/chat/completions', chat('broken'), auth);
  assert.equal(br.status, 502);
  await br.text();
  const nf = await post(llmux.base, '/v1/chat/completions', chat('nope'), auth);
  assert.equal(nf.status, 404);
  await nf.text();

  const text = await scrape();
  promtool(text);
  assert.ok(!text.includes(KEY), 'the gateway key is in /metrics');
  assert.ok(!text.includes('secret-rid'), 'a request id is in /metrics');
  assert.equal(sample(text, 'llmux_requests_total', { endpoint: 'chat', model: 'priced', status: '200' }), 5);
  assert.equal(sample(text, 'llmux_requests_total', { endpoint: 'chat', model: 'failover', status: '200' }), 2);
  assert.equal(sample(text, 'llmux_fallbacks_total', { model: 'failover' }), 2);
  assert.equal(sample(text, 'llmux_fallbacks_total', { model: 'priced' }), 0);
  assert.equal(sample(text, 'llmux_attempts_total', { provider: 'bad', model: 'b', outcome: 'failure' }), 2);
  assert.equal(sample(text, 'llmux_attempts_total', { provider: 'good', model: 'g?tokens=4', outcome: 'success' }), 2);
  assert.equal(sample(text, 'llmux_deployment_up', { provider: 'good', model: 'g?tokens=10' }), 1);
  // cost: exact to the 1e-12 $ (input $2/M, output $8/M, $0.001 per request)
  const cost = sample(text, 'llmux_cost_usd_total', { model: 'priced', provider: 'good' });
  const want = (prompt * 2 + completion * 8) / 1e6 + 5 * 0.001;
  assert.ok(Math.abs(cost - want) < 1e-12, `cost ${cost}, expected ${want}`);
  assert.equal(sample(text, 'llmux_cost_usd_total', { model: 'failover', provider: 'good' }), 0, 'unpriced');
  const g = { gen_ai_request_model: 'priced', gen_ai_provider_name: 'good', gen_ai_operation_name: 'chat' };
  assert.equal(sample(text, 'gen_ai_client_token_usage_count', { ...g, gen_ai_token_type: 'input' }), 5);
  assert.equal(sample(text, 'gen_ai_client_token_usage_sum', { ...g, gen_ai_token_type: 'input' }), prompt);
  assert.equal(sample(text, 'gen_ai_client_token_usage_sum', { ...g, gen_ai_token_type: 'output' }), completion);
  assert.equal(sample(text, 'gen_ai_client_operation_duration_seconds_count', g), 5);
  assert.equal(sample(text, 'gen_ai_client_operation_duration_seconds_bucket', { ...g, le: '+Inf' }), 5);
  assert.equal(sample(text, 'gen_ai_client_operation_time_to_first_chunk_seconds_count', g), 2, 'the two streams');
  assert.equal(sample(text, 'gen_ai_client_operation_time_per_output_chunk_seconds_count', g), 2 * (10 - 1));
  assert.equal(sample(text, 'gen_ai_client_operation_duration_seconds_count',
    { gen_ai_request_model: 'broken', error_type: '502' }), 1, 'a failure is a duration with its error_type');
  assert.equal(sample(text, 'llmux_requests_total', { model: 'broken', status: '502' }), 1);
  assert.ok(sample(text, 'llmux_overhead_seconds_count') >= 7);
  assert.ok(sample(text, 'process_resident_memory_bytes') > 1e6);
  assert.ok(sample(text, 'process_open_fds') > 3);
  assert.ok(sample(text, 'llmux_upstream_connections', { state: 'open' }) >= 1);
});
