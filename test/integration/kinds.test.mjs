// Provider kinds end to end: the official openai client talks to llmux, which talks to mockllm
// speaking Anthropic's Messages API, Gemini's generateContent and Azure OpenAI: text and tool
// calls, stream and not, embeddings, cross-kind failover and continuation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startLlmux, provider, post, chat, readSse, chunksText, mockText, rid } from './lib.mjs';

const { default: OpenAI } = await import(
  new URL('../node/node_modules/openai/index.mjs', import.meta.url).href);

const ARGS = { city: 'Paris', unit: 'celsius', days: 3 };
const KEYS = { LLMUX_IT_ANTHROPIC: 'sk-ant-it-secret', LLMUX_IT_GEMINI: 'gm-it-secret', LLMUX_IT_AZURE: 'az-it-secret' };
const TOOLS = [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: {
  type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
let ant, gem, az, llmux, client;

before(async () => {
  ant = await startMock();
  gem = await startMock();
  az = await startMock();
  llmux = await startLlmux({
    timeouts_ms: { connect: 1000, first_byte: 3000, idle: 400, total: 15000 },
    providers: {
      ant: { kind: 'anthropic', base_url: ant.baseUrl, api_key_env: 'LLMUX_IT_ANTHROPIC' },
      gem: { kind: 'gemini', base_url: `http://127.0.0.1:${gem.port}/v1beta`, api_key_env: 'LLMUX_IT_GEMINI' },
      az: { kind: 'azure', base_url: `http://127.0.0.1:${az.port}`, api_key_env: 'LLMUX_IT_AZURE' },
    },
    models: {
      claude: { deployments: [{ provider: 'ant', model: 'claude-x?tokens=5' }] },
      'claude-tool': { deployments: [{ provider: 'ant', model: 'claude-x?tool=get_weather' }] },
      gemini: { deployments: [{ provider: 'gem', model: 'gemini-x?tokens=5' }] },
      'gemini-tool': { deployments: [{ provider: 'gem', model: 'gemini-x?tool=get_weather' }] },
      'gemini-embed': { deployments: [{ provider: 'gem', model: 'embed-x' }] },
      azure: { deployments: [{ provider: 'az', model: 'my-gpt?tokens=4' }] },
      'cross': { deployments: [
        { provider: 'ant', model: 'claude-x?status=529' }, { provider: 'gem', model: 'gemini-x?tokens=5' }] },
      'cross-inband': { deployments: [
        { provider: 'ant', model: 'claude-x?error_after=0' }, { provider: 'gem', model: 'gemini-x?tokens=5' }] },
      'cross-inband-openai': { deployments: [
        { provider: 'ant', model: 'claude-x?error_after=0' }, { provider: 'az', model: 'my-gpt?tokens=3' }] },
      'cross-continue': { on_stream_failure: 'continue', deployments: [
        { provider: 'ant', model: 'claude-x?tokens=12&stall_after=5' }, { provider: 'gem', model: 'gemini-x?tokens=12' }] },
      'continue-to-claude': { on_stream_failure: 'continue', deployments: [
        { provider: 'gem', model: 'gemini-x?tokens=12&stall_after=5' }, { provider: 'ant', model: 'claude-x?tokens=12' }] },
    },
  }, { env: KEYS });
  client = new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
});

after(async () => {
  await llmux?.stop();
  for (const m of [ant, gem, az]) await m?.stop();
});

const ask = (model, extra = {}) => client.chat.completions.create({
  model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }], ...extra,
});

async function collect(stream) {
  let text = '';
  let finish = null;
  const usages = [];
  const calls = {};
  for await (const c of stream) {
    if (c.usage) usages.push(c.usage);
    const ch = c.choices[0];
    if (ch?.delta?.content) text += ch.delta.content;
    for (const tc of ch?.delta?.tool_calls ?? []) {
      calls[tc.index] ??= { id: '', name: '', args: '' };
      if (tc.id) calls[tc.index].id += tc.id;
      if (tc.function?.name) calls[tc.index].name += tc.function.name;
      if (tc.function?.arguments) calls[tc.index].args += tc.function.arguments;
    }
    if (ch?.finish_reason) finish = ch.finish_reason;
  }
  return { text, finish, usages, calls };
}

test('anthropic: non-stream text, the request translated, the key only in x-api-key', async () => {
  const r = await ask('claude');
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.content, mockText(5));
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.completion_tokens, 5);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 5);
  const last = await ant.last();
  assert.equal(last.url, '/v1/messages');
  assert.equal(last.headers['x-api-key'], KEYS.LLMUX_IT_ANTHROPIC);
  assert.equal(last.headers['anthropic-version'], '2023-06-01');
  assert.equal(last.headers.authorization, undefined);
  const sent = JSON.parse(last.body);
  assert.equal(sent.model, 'claude-x?tokens=5');
  assert.equal(sent.system, 'Be brief.');
  assert.deepEqual(sent.messages.map((m) => m.role), ['user']);
  assert.ok(sent.max_tokens > 0);
});

test('anthropic: stream with usage', async () => {
  const s = await collect(await ask('claude', { stream: true, stream_options: { include_usage: true } }));
  assert.equal(s.text, mockText(5));
  assert.equal(s.finish, 'stop');
  assert.equal(s.usages.length, 1);
  assert.equal(s.usages[0].completion_tokens, 5);
});

test('anthropic: a streamed tool call', async () => {
  const s = await collect(await ask('claude-tool', { stream: true, tools: TOOLS }));
  assert.deepEqual(Object.keys(s.calls), ['0']);
  assert.equal(s.calls[0].name, 'get_weather');
  assert.match(s.calls[0].id, /^toolu_/);
  assert.deepEqual(JSON.parse(s.calls[0].args), ARGS);
  assert.equal(s.finish, 'tool_calls');
  const sent = JSON.parse((await ant.last()).body);
  assert.equal(sent.tools[0].name, 'get_weather');
  assert.deepEqual(sent.tools[0].input_schema.required, ['city']);
});

test('gemini: non-stream and stream text; the model in the path, the key in x-goog-api-key', async () => {
  const r = await ask('gemini');
  assert.equal(r.choices[0].message.content, mockText(5));
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.completion_tokens, 5);
  let last = await gem.last();
  assert.match(last.url, /^\/v1beta\/models\/gemini-x%3Ftokens%3D5:generateContent$/);
  assert.equal(last.headers['x-goog-api-key'], KEYS.LLMUX_IT_GEMINI);
  const sent = JSON.parse(last.body);
  assert.deepEqual(sent.systemInstruction.parts, [{ text: 'Be brief.' }]);
  assert.deepEqual(sent.contents.map((c) => c.role), ['user']);
  const s = await collect(await ask('gemini', { stream: true, stream_options: { include_usage: true } }));
  assert.equal(s.text, mockText(5));
  assert.equal(s.finish, 'stop');
  assert.equal(s.usages.length, 1);
  last = await gem.last();
  assert.match(last.url, /:streamGenerateContent\?alt=sse$/);
});

test('gemini: a streamed tool call, and embeddings', async () => {
  const s = await collect(await ask('gemini-tool', { stream: true, tools: TOOLS }));
  assert.deepEqual(Object.keys(s.calls), ['0']);
  assert.equal(s.calls[0].name, 'get_weather');
  assert.deepEqual(JSON.parse(s.calls[0].args), ARGS);
  assert.equal(s.finish, 'tool_calls');
  const e = await client.embeddings.create({ model: 'gemini-embed', input: ['a', 'b'] });
  assert.equal(e.data.length, 2);
  assert.equal(e.data[1].index, 1);
  assert.ok(e.data[0].embedding.length > 0);
  assert.match((await gem.last()).url, /:batchEmbedContents$/);
});

test('azure: the deployment URL, api-version and api-key', async () => {
  const r = await ask('azure');
  assert.equal(r.choices[0].message.content, mockText(4));
  const last = await az.last();
  assert.match(last.url, /^\/openai\/deployments\/my-gpt%3Ftokens%3D4\/chat\/completions\?api-version=2024-10-21$/);
  assert.equal(last.headers['api-key'], KEYS.LLMUX_IT_AZURE);
  assert.equal(last.headers.authorization, undefined);
});

test('cross-kind failover: anthropic overloaded (529), gemini serves', async () => {
  const id = rid('cross');
  const res = await post(llmux.base, '/v1/chat/completions', chat('cross', { stream: true }), { 'x-request-id': id });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-llmux-provider'), 'gem');
  const datas = await readSse(res);
  assert.equal(chunksText(datas), mockText(5));
  assert.equal(datas.at(-1), '[DONE]');
  const line = await llmux.logFor(id);
  assert.equal(line.attempts[0].status, 529);
});

test('cross-kind failover: an in-stream anthropic error before any content', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('cross-inband', { stream: true }));
  assert.equal(res.headers.get('x-llmux-provider'), 'gem');
  assert.equal(chunksText(await readSse(res)), mockText(5));
});

test('failover from an anthropic stream to another kind frees the anthropic decoder', async () => {
  // (the slot is reused by the next kind while the failed one's decoder is still on the stack;
  // LeakSanitizer at llmux's exit checks it was closed by its own adapter)
  for (let i = 0; i < 3; i++) {
    const res = await post(llmux.base, '/v1/chat/completions', chat('cross-inband-openai', { stream: true }));
    assert.equal(res.headers.get('x-llmux-provider'), 'az');
    assert.equal(chunksText(await readSse(res)), mockText(3));
  }
});

test('continuation across kinds, both ways (prefill)', async () => {
  for (const [model, to] of [['cross-continue', 'gem'], ['continue-to-claude', 'ant']]) {
    const id = rid('xc');
    const res = await post(llmux.base, '/v1/chat/completions', chat(model, { stream: true }), { 'x-request-id': id });
    const datas = await readSse(res);
    assert.equal(chunksText(datas), mockText(12), model);
    assert.equal(datas.at(-1), '[DONE]');
    const line = await llmux.logFor(id);
    assert.equal(line.continued, 1);
    assert.equal(line.provider, to);
  }
});

test('a request no deployment\'s kind can serve is a 400, not a 502', async () => {
  let res = await post(llmux.base, '/v1/completions', { model: 'claude', prompt: 'hi' });
  let body = await res.json();
  assert.equal(res.status, 400);
  assert.equal(body.error.code, 'unsupported_request');
  assert.match(body.error.message, /\/v1\/completions: anthropic providers do not serve this endpoint/);
  res = await post(llmux.base, '/v1/chat/completions', chat('claude', { n: 2 }));
  body = await res.json();
  assert.equal(res.status, 400, JSON.stringify(body));
  assert.match(body.error.message, /n: anthropic providers return one choice per request/);
  res = await post(llmux.base, '/v1/chat/completions', chat('claude', {
    messages: [{ role: 'assistant', tool_calls: [{ id: 't1', type: 'function', function: { name: 'f', arguments: '{not json' } }] }] }));
  body = await res.json();
  assert.equal(res.status, 400, JSON.stringify(body));
  assert.match(body.error.message, /cannot be translated/);
});

test('no provider key ever reaches a client or the log', async () => {
  const text = llmux.stderr();
  for (const k of Object.values(KEYS)) assert.ok(!text.includes(k), 'a key in the log');
});
