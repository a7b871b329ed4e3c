// The official `openai` npm client (installed in test/node) as a real caller of llmux.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startLlmux, provider, mockText } from './lib.mjs';

// ESM ignores NODE_PATH: load the package from test/node explicitly.
const { default: OpenAI, NotFoundError, APIError, BadRequestError } = await import(
  new URL('../node/node_modules/openai/index.mjs', import.meta.url).href);

let good, flaky, llmux, client;

before(async () => {
  good = await startMock();
  flaky = await startMock();
  llmux = await startLlmux({
    timeouts_ms: { connect: 2000, first_byte: 5000, idle: 5000, total: 20000 },
    providers: { good: provider(good.baseUrl), flaky: provider(flaky.baseUrl) },
    models: {
      demo: { deployments: [{ provider: 'good', model: 'up-demo?tokens=9' }] },
      resilient: { deployments: [{ provider: 'flaky', model: 'm?status=503' }, { provider: 'good', model: 'up?tokens=5' }] },
      broken: { deployments: [{ provider: 'flaky', model: 'm?status=503' }] },
    },
    keys: ['sdk-test-key'],
  });
  client = new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'sdk-test-key', maxRetries: 0, timeout: 20000 });
});

after(async () => {
  await llmux?.stop();
  await good?.stop();
  await flaky?.stop();
});

test('non-stream chat.completions.create', async () => {
  const r = await client.chat.completions.create({
    model: 'demo',
    messages: [{ role: 'user', content: 'hi' }],
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.content, mockText(9));
  assert.equal(r.usage.completion_tokens, 9);
});

test('withResponse exposes llmux headers', async () => {
  const { data, response } = await client.chat.completions.create({
    model: 'resilient',
    messages: [{ role: 'user', content: 'hi' }],
  }).withResponse();
  assert.equal(data.choices[0].message.content, mockText(5));
  assert.equal(response.headers.get('x-llmux-provider'), 'good');
  assert.equal(response.headers.get('x-llmux-attempts'), '2');
  assert.ok(response.headers.get('x-request-id'));
});

test('streaming chat.completions.create', async () => {
  const stream = await client.chat.completions.create({
    model: 'demo',
    messages: [{ role: 'user', content: 'hi' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let n = 0;
  for await (const chunk of stream) {
    n++;
    text += chunk.choices[0]?.delta?.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(n >= 9);
  assert.equal(text, mockText(9));
  assert.equal(usage?.completion_tokens, 9);
});

test('streaming through failover', async () => {
  const stream = await client.chat.completions.create({
    model: 'resilient', messages: [{ role: 'user', content: 'hi' }], stream: true,
  });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, mockText(5));
});

test('completions and embeddings', async () => {
  const c = await client.completions.create({ model: 'demo', prompt: 'Say' });
  assert.equal(c.choices[0].text, mockText(9));
  const e = await client.embeddings.create({ model: 'demo', input: 'hello' });
  assert.ok(e.data[0].embedding.length > 0);
});

test('models.list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), ['broken', 'demo', 'resilient']);
});

test('an unknown model is the SDK\'s NotFoundError', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
    (e) => {
      assert.ok(e instanceof NotFoundError, `got ${e?.constructor?.name}: ${e?.message}`);
      assert.equal(e.status, 404);
      assert.equal(e.code, 'model_not_found');
      return true;
    });
});

test('a bad request is the SDK\'s BadRequestError', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'demo' }),
    (e) => {
      assert.ok(e instanceof BadRequestError, `got ${e?.constructor?.name}: ${e?.message}`);
      assert.equal(e.status, 400);
      return true;
    });
});

test('all deployments failing is an APIError 502 that the SDK does not retry', async () => {
  const before = (await flaky.stats()).requests;
  // Even with the SDK's default retries, x-should-retry: false stops them.
  const retrying = new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'sdk-test-key', maxRetries: 2 });
  await assert.rejects(
    retrying.chat.completions.create({ model: 'broken', messages: [{ role: 'user', content: 'hi' }] }),
    (e) => {
      assert.ok(e instanceof APIError, `got ${e?.constructor?.name}`);
      assert.equal(e.status, 502);
      assert.equal(e.code, 'all_deployments_failed');
      return true;
    });
  assert.equal((await flaky.stats()).requests, before + 1, 'the SDK retried despite x-should-retry: false');
});

test('a wrong gateway key is the SDK\'s AuthenticationError', async () => {
  const { AuthenticationError } = await import(new URL('../node/node_modules/openai/index.mjs', import.meta.url).href);
  const bad = new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => {
    assert.ok(e instanceof AuthenticationError, `got ${e?.constructor?.name}`);
    assert.equal(e.status, 401);
    return true;
  });
});
