// usage.cost for the Messages and Responses client APIs, judged by the official
// @anthropic-ai/sdk and openai SDKs: exact (prompt at input, cached prompt at cache_read,
// output at output, per million, plus the request price) in the non-stream body's usage, in the
// Messages stream's message_delta usage (translated from an openai kind and passed through from
// an anthropic kind) and in the Responses stream's response.completed / response.incomplete
// usage; absent when the serving deployment is unpriced.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startMock, startLlmux } from './lib.mjs';

const require = createRequire(new URL('../node/package.json', import.meta.url));
const Anthropic = require('@anthropic-ai/sdk').default;
const OpenAI = require('openai').default;

// $ per million: input 2, output 8, cache_read 0.5; $0.001 per request
const PRICE = { input: 2, output: 8, cache_read: 0.5, request: 0.001 };
const pico = (x) => Math.round(x * 1e12); // compare in 1e-12 $
const cost = (uncached, cached, output) => (uncached * 2 + cached * 0.5 + output * 8) / 1e6 + 0.001;
// Messages usage: input_tokens excludes cache reads
const messagesCost = (u) => cost(u.input_tokens, u.cache_read_input_tokens ?? 0, u.output_tokens);
// Responses usage: input_tokens includes them
const responsesCost = (u) => {
  const cached = u.input_tokens_details?.cached_tokens ?? 0;
  return cost(u.input_tokens - cached, cached, u.output_tokens);
};

let ant, oai, llmux, anthropic, openai;

before(async () => {
  [ant, oai] = await Promise.all([startMock(), startMock()]);
  const priced = (provider, model) => ({ deployments: [{ provider, model, price: PRICE }] });
  llmux = await startLlmux({
    providers: {
      ant: { kind: 'anthropic', base_url: ant.baseUrl, api_key_env: 'LLMUX_IT_ANTHROPIC' },
      oai: { kind: 'openai', base_url: oai.baseUrl },
    },
    models: {
      gpt: priced('oai', 'gpt-x?tokens=7&cached=3'),
      claude: priced('ant', 'claude-x?tokens=5'),
      free: { deployments: [{ provider: 'oai', model: 'gpt-x?tokens=7' }] },
    },
  }, { env: { LLMUX_IT_ANTHROPIC: 'sk-ant-it-upstream' } });
  anthropic = new Anthropic({ baseURL: llmux.base, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
  openai = new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
});

after(async () => {
  await llmux?.stop();
  await Promise.all([ant?.stop(), oai?.stop()]);
});

const ask = (model, extra = {}) =>
  ({ model, max_tokens: 64, messages: [{ role: 'user', content: 'hello there' }], ...extra });

function assertCost(u, want, what) {
  assert.equal(typeof u.cost, 'number', `${what}: no usage.cost in ${JSON.stringify(u)}`);
  assert.equal(pico(u.cost), pico(want), what);
  assert.equal(pico(u.cost_details.upstream_inference_cost), pico(want), what);
  assert.equal(u.cost_details.failed_attempts_cost, 0, what);
}

test('Messages: the body and the stream\'s message_delta carry usage.cost, both kinds', async () => {
  for (const model of ['gpt', 'claude']) {
    const msg = await anthropic.messages.create(ask(model));
    assert.equal(msg.usage.output_tokens, model === 'gpt' ? 7 : 5);
    if (model === 'gpt')
      assert.equal(msg.usage.cache_read_input_tokens, 3);
    assertCost(msg.usage, messagesCost(msg.usage), `${model} body`);

    let start, delta;
    for await (const ev of await anthropic.messages.create(ask(model, { stream: true }))) {
      if (ev.type === 'message_start') start = ev.message.usage;
      if (ev.type === 'message_delta') delta = ev.usage;
    }
    assert.ok(delta, `${model}: no message_delta`);
    // the delta's usage is the whole request's (translated) or the output part (passthrough):
    // the cost is the request's either way
    const u = { ...start, ...Object.fromEntries(Object.entries(delta).filter(([, v]) => v != null)) };
    assert.equal(u.output_tokens, model === 'gpt' ? 7 : 5);
    assertCost(delta, messagesCost(u), `${model} stream`);
  }
});

test('Responses: the body and response.completed carry usage.cost', async () => {
  const res = await openai.responses.create({ model: 'gpt', input: 'hello there' });
  assert.equal(res.usage.input_tokens_details.cached_tokens, 3);
  assertCost(res.usage, responsesCost(res.usage), 'body');

  let done;
  for await (const ev of await openai.responses.create({ model: 'gpt', input: 'hello there', stream: true })) {
    if (ev.type === 'response.completed') done = ev.response;
  }
  assert.ok(done, 'no response.completed');
  assert.equal(done.usage.output_tokens, 7);
  assertCost(done.usage, responsesCost(done.usage), 'stream');
});

test('Responses: an incomplete stream (max_output_tokens) is costed too', async () => {
  let last;
  const stream = await openai.responses.create(
    { model: 'gpt', input: 'hello there', max_output_tokens: 3, stream: true });
  for await (const ev of stream) last = ev;
  assert.equal(last.type, 'response.incomplete');
  assertCost(last.response.usage, responsesCost(last.response.usage), 'incomplete');
});

test('unpriced: no cost field in any of them', async () => {
  const msg = await anthropic.messages.create(ask('free'));
  assert.equal(msg.usage.cost, undefined);
  let delta;
  for await (const ev of await anthropic.messages.create(ask('free', { stream: true })))
    if (ev.type === 'message_delta') delta = ev.usage;
  assert.equal(delta.output_tokens, 7);
  assert.equal(delta.cost, undefined);
  assert.equal(delta.cost_details, undefined);
  let done;
  for await (const ev of await openai.responses.create({ model: 'free', input: 'hi', stream: true }))
    if (ev.type === 'response.completed') done = ev.response;
  assert.equal(done.usage.output_tokens, 7);
  assert.equal(done.usage.cost, undefined);
  const res = await openai.responses.create({ model: 'free', input: 'hi' });
  assert.equal(res.usage.cost, undefined);
});
