// POST /v1/messages (Anthropic's Messages API in), judged by the official @anthropic-ai/sdk
// pointed at llmux:
// - to an anthropic-kind deployment the request and the answer pass through: the upstream gets
//   the client's body byte for byte except `model`, the client's anthropic-version and
//   anthropic-beta; a thinking block comes back with its signature, stream events as the
//   provider sent them;
// - to openai and gemini kinds they are translated: text, tool_use (input_json_delta), stop
//   reasons, usage, a tool_result round trip;
// - errors in Anthropic's shape and types; failover from a 529 to another kind; an in-stream
//   failure after commit ends with `event: error`, never a message_stop; a continuation on
//   another kind is one message; count_tokens; a request shaped as Claude Code sends it;
// - the Vercel AI SDK's Anthropic provider (createAnthropic): generateText and streamText with a
//   tool, to an openai kind (translated) and an anthropic kind (passthrough).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startMock, startLlmux, post, mockText, rid } from './lib.mjs';

const require = createRequire(new URL('../node/package.json', import.meta.url));
const anthropicSdk = require('@anthropic-ai/sdk');
const Anthropic = anthropicSdk.default;
const { generateText, streamText, tool, jsonSchema, stepCountIs } = require('ai');
const { createAnthropic } = require('@ai-sdk/anthropic');

const KEYS = { LLMUX_IT_ANTHROPIC: 'sk-ant-it-upstream', LLMUX_IT_GEMINI: 'gm-it-upstream' };
const TOOL_ARGS = { city: 'Paris', unit: 'celsius', days: 3 };
const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Weather forecast for a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};
let ant, oai, gem, llmux, keyed, client;

before(async () => {
  [ant, oai, gem] = await Promise.all([startMock(), startMock(), startMock()]);
  const providers = {
    ant: { kind: 'anthropic', base_url: ant.baseUrl, api_key_env: 'LLMUX_IT_ANTHROPIC' },
    oai: { kind: 'openai', base_url: oai.baseUrl },
    gem: { kind: 'gemini', base_url: `http://127.0.0.1:${gem.port}/v1beta`, api_key_env: 'LLMUX_IT_GEMINI' },
  };
  const one = (provider, model, extra = {}) => ({ ...extra, deployments: [{ provider, model }] });
  llmux = await startLlmux({
    timeouts_ms: { connect: 1000, first_byte: 3000, idle: 1000, total: 15000 },
    providers,
    models: {
      claude: one('ant', 'claude-x?tokens=4'),
      'claude-think': one('ant', 'claude-x?tokens=3&thinking=1'),
      'claude-tool': one('ant', 'claude-x?tool=get_weather'),
      'claude-cut': one('ant', 'claude-x?tokens=6&error_after=2'),
      gpt: one('oai', 'gpt-x?tokens=5'),
      'gpt-tool': one('oai', 'gpt-x?tool=get_weather'),
      'gpt-cut': one('oai', 'gpt-x?tokens=6&error_after=2'),
      gem: one('gem', 'gem-x?tokens=4'),
      failover: { deployments: [{ provider: 'ant', model: 'claude-x?status=529' },
        { provider: 'oai', model: 'gpt-x?tokens=3' }] },
      cont: { on_stream_failure: 'continue', deployments: [
        { provider: 'ant', model: 'claude-x?tokens=6&reset_after=3' },
        { provider: 'oai', model: 'gpt-x?tokens=6' }] },
    },
  }, { env: KEYS });
  keyed = await startLlmux({ providers, keys: ['gw-secret'], models: { claude: one('ant', 'claude-x') } },
    { env: KEYS });
  client = new Anthropic({ baseURL: llmux.base, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
});

after(async () => {
  await llmux?.stop();
  await keyed?.stop();
  for (const m of [ant, oai, gem]) await m?.stop();
});

const user = (text = 'hello') => [{ role: 'user', content: text }];

// The text of an SSE body's events, with mockllm's per-request ids made equal.
const normalize = (text) => text.replace(/msg_mock\d+/g, 'msg_mockN');

test('passthrough: the upstream gets the client body and headers, thinking and its signature come back', async () => {
  const params = {
    model: 'claude-think', max_tokens: 100, top_k: 5, metadata: { user_id: 'u-1' },
    system: [{ type: 'text', text: 'You are terse.', cache_control: { type: 'ephemeral' } }],
    thinking: { type: 'enabled', budget_tokens: 1024 },
    messages: [{ role: 'user', content: [{ type: 'text', text: 'hi', cache_control: { type: 'ephemeral' } }] }],
  };
  const { data: msg, response } = await client.messages
    .create(params, { headers: { 'anthropic-beta': 'interleaved-thinking-2025-05-14', 'anthropic-version': '2023-01-01' } })
    .withResponse();
  assert.equal(response.headers.get('x-llmux-provider'), 'ant');
  assert.equal(msg.content[0].type, 'thinking');
  assert.equal(msg.content[0].thinking, 'Let me think about this.');
  assert.equal(msg.content[0].signature, 'mocksig-EqQBCkgIARABGAIiQL');
  assert.equal(msg.content[1].text, mockText(3));
  assert.equal(msg.stop_reason, 'end_turn');
  const last = await ant.last();
  assert.equal(last.url, '/v1/messages');
  // byte for byte what the SDK sent, with only the model value replaced
  assert.equal(last.body, JSON.stringify(params).replace('"claude-think"', '"claude-x?tokens=3&thinking=1"'));
  assert.equal(last.headers['anthropic-beta'], 'interleaved-thinking-2025-05-14');
  assert.equal(last.headers['anthropic-version'], '2023-01-01'); // the client's, not the provider's default
  assert.equal(last.headers['x-api-key'], KEYS.LLMUX_IT_ANTHROPIC); // the provider's key, not the client's
});

test('passthrough: a stream is relayed as the provider sent it', async () => {
  const body = { model: 'claude-think', max_tokens: 50, stream: true, messages: user() };
  const direct = await (await post(`http://127.0.0.1:${ant.port}`, '/v1/messages',
    { ...body, model: 'claude-x?tokens=3&thinking=1' },
    { 'x-api-key': 'k', 'anthropic-version': '2023-06-01' })).text();
  const res = await post(llmux.base, '/v1/messages', body);
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  assert.equal(normalize(await res.text()), normalize(direct));

  const stream = client.messages.stream({ ...body, stream: undefined });
  const types = [];
  stream.on('streamEvent', (e) => types.push(e.type === 'content_block_delta' ? e.delta.type : e.type));
  const final = await stream.finalMessage();
  assert.ok(types.includes('thinking_delta') && types.includes('signature_delta'), types.join());
  assert.equal(final.content[0].signature, 'mocksig-EqQBCkgIARABGAIiQL');
  assert.equal(final.content[1].text, mockText(3));
  assert.equal(final.usage.output_tokens, 3);
});

test('translation to openai: text, max_tokens stop, usage, system prompt', async () => {
  const msg = await client.messages.create({ model: 'gpt', max_tokens: 100, system: 'Be brief.', messages: user() });
  assert.match(msg.id, /^msg_/);
  assert.equal(msg.type, 'message');
  assert.equal(msg.model, 'gpt-x');
  assert.deepEqual(msg.content, [{ type: 'text', text: mockText(5) }]);
  assert.equal(msg.stop_reason, 'end_turn');
  assert.equal(msg.usage.output_tokens, 5);
  assert.ok(msg.usage.input_tokens > 0);
  const sent = JSON.parse((await oai.last()).body);
  assert.deepEqual(sent.messages, [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hello' }]);
  assert.equal(sent.max_tokens, 100);

  const capped = await client.messages.create({ model: 'gpt', max_tokens: 2, messages: user() });
  assert.equal(capped.content[0].text, mockText(2));
  assert.equal(capped.stop_reason, 'max_tokens');

  const stream = client.messages.stream({ model: 'gpt', max_tokens: 100, stop_sequences: ['END'], messages: user() });
  const types = [];
  let text = '';
  stream.on('streamEvent', (e) => types.push(e.type));
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.equal(text, mockText(5));
  assert.deepEqual(types, ['message_start', 'content_block_start', ...Array(5).fill('content_block_delta'),
    'content_block_stop', 'message_delta', 'message_stop']);
  assert.equal(final.stop_reason, 'end_turn');
  assert.equal(final.usage.output_tokens, 5); // the provider's count (llmux asked for stream usage)
  assert.ok(final.usage.input_tokens > 0);
  const streamed = JSON.parse((await oai.last()).body);
  assert.deepEqual(streamed.stop, ['END']);
  assert.deepEqual(streamed.stream_options, { include_usage: true });
});

test('translation to openai: a tool_use round trip, non-stream and stream', async () => {
  const params = { model: 'gpt-tool', max_tokens: 100, messages: user('weather in Paris?'), tools: [WEATHER_TOOL] };
  const msg = await client.messages.create(params);
  assert.equal(msg.stop_reason, 'tool_use');
  const call = msg.content.find((b) => b.type === 'tool_use');
  assert.equal(call.name, 'get_weather');
  assert.deepEqual(call.input, TOOL_ARGS);
  const sent = JSON.parse((await oai.last()).body);
  assert.equal(sent.tools[0].function.name, 'get_weather');
  assert.deepEqual(sent.tools[0].function.parameters, WEATHER_TOOL.input_schema);

  const stream = client.messages.stream(params);
  const fragments = [];
  stream.on('inputJson', (p) => fragments.push(p));
  const final = await stream.finalMessage();
  assert.ok(fragments.length > 1, `input_json_delta in pieces, got ${fragments.length}`);
  assert.equal(final.stop_reason, 'tool_use');
  assert.deepEqual(final.content[0].input, TOOL_ARGS);

  // the tool's result goes back: the assistant's tool_use and the user's tool_result
  const next = await client.messages.create({
    model: 'gpt', max_tokens: 100, tools: [WEATHER_TOOL],
    messages: [...params.messages, { role: 'assistant', content: msg.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: 'sunny' },
        { type: 'text', text: 'and tomorrow?' }] }],
  });
  assert.equal(next.content[0].text, mockText(5));
  const round = JSON.parse((await oai.last()).body).messages;
  assert.equal(round[1].role, 'assistant');
  assert.equal(round[1].tool_calls[0].id, call.id);
  assert.deepEqual(JSON.parse(round[1].tool_calls[0].function.arguments), TOOL_ARGS);
  assert.deepEqual(round[2], { role: 'tool', tool_call_id: call.id, content: 'sunny' });
  assert.deepEqual(round[3], { role: 'user', content: 'and tomorrow?' });
});

test('translation to gemini: an image and text, stream', async () => {
  const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';
  const stream = client.messages.stream({ model: 'gem', max_tokens: 100, messages: [{ role: 'user', content: [
    { type: 'image', source: { type: 'base64', media_type: 'image/png', data: png } },
    { type: 'text', text: 'what is this?' }] }] });
  const final = await stream.finalMessage();
  assert.equal(final.content[0].text, mockText(4));
  assert.equal(final.usage.output_tokens, 4);
  const sent = JSON.parse((await gem.last()).body);
  assert.deepEqual(sent.contents[0].parts[0], { inlineData: { mimeType: 'image/png', data: png } });
});

test('errors come in Anthropic\'s shape with its types', async () => {
  let res = await post(llmux.base, '/v1/messages', '{"model":');
  assert.equal(res.status, 400);
  assert.deepEqual(Object.keys(await res.json()), ['type', 'error']);
  await assert.rejects(client.messages.create({ model: 'no-such', max_tokens: 5, messages: user() }), (e) => {
    assert.ok(e instanceof anthropicSdk.NotFoundError, e.constructor.name);
    assert.equal(e.error.type, 'error');
    assert.equal(e.error.error.type, 'not_found_error');
    return true;
  });
  await assert.rejects(client.messages.create({ model: 'gpt', max_tokens: 5,
    messages: [{ role: 'system', content: 'x' }] }), (e) => {
    assert.ok(e instanceof anthropicSdk.BadRequestError, e.constructor.name);
    assert.match(e.error.error.message, /role/);
    return true;
  });
  // a server tool cannot be translated: the 400 names it
  res = await post(llmux.base, '/v1/messages', { model: 'gpt', max_tokens: 5, messages: user(),
    tools: [{ type: 'web_search_20250305', name: 'web_search' }] });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.error.type, 'invalid_request_error');
  assert.match(body.error.message, /web_search_20250305/);

  const noKey = new Anthropic({ baseURL: keyed.base, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(noKey.messages.create({ model: 'claude', max_tokens: 5, messages: user() }), (e) => {
    assert.ok(e instanceof anthropicSdk.AuthenticationError, e.constructor.name);
    assert.equal(e.error.error.type, 'authentication_error');
    return true;
  });
  for (const apiKey of ['gw-secret']) { // x-api-key (apiKey) and Authorization: Bearer (authToken)
    const ok = new Anthropic({ baseURL: keyed.base, apiKey, maxRetries: 0 });
    assert.equal((await ok.messages.create({ model: 'claude', max_tokens: 5, messages: user() })).type, 'message');
    const bearer = new Anthropic({ baseURL: keyed.base, apiKey: null, authToken: apiKey, maxRetries: 0 });
    assert.equal((await bearer.messages.create({ model: 'claude', max_tokens: 5, messages: user() })).type, 'message');
  }
});

test('failover: an anthropic deployment answering 529 is replaced by an openai one, unseen', async () => {
  const { data: msg, response } = await client.messages
    .create({ model: 'failover', max_tokens: 100, messages: user() }).withResponse();
  assert.equal(msg.content[0].text, mockText(3));
  assert.equal(response.headers.get('x-llmux-attempts'), '2');
  assert.equal(response.headers.get('x-llmux-provider'), 'oai');
  const stream = client.messages.stream({ model: 'failover', max_tokens: 100, messages: user() });
  assert.equal((await stream.finalMessage()).content[0].text, mockText(3));
});

test('a failure after commit ends the stream with event: error, never message_stop', async () => {
  for (const model of ['gpt-cut', 'claude-cut']) {
    const id = rid('msg-cut');
    const res = await post(llmux.base, '/v1/messages', { model, max_tokens: 100, stream: true, messages: user() },
      { 'x-request-id': id });
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /w0 .*w1 /s);
    assert.match(text, /event: error\ndata: \{"type":"error","error":\{"type":"api_error","message":"[^"]+"\}\}\n\n$/);
    assert.doesNotMatch(text, /message_stop/);
    assert.equal((await llmux.logFor(id)).outcome, 'truncated');
    const stream = client.messages.stream({ model, max_tokens: 100, messages: user() });
    await assert.rejects(stream.finalMessage(), anthropicSdk.APIError);
  }
});

test('continuation: a passthrough stream reset mid-answer goes on at openai in the same message', async () => {
  const stream = client.messages.stream({ model: 'cont', max_tokens: 100, messages: user() });
  const types = [];
  stream.on('streamEvent', (e) => types.push(e.type));
  const final = await stream.finalMessage();
  assert.equal(final.content.length, 1);
  assert.equal(final.content[0].text, mockText(6));
  assert.equal(types.filter((t) => t === 'message_start').length, 1);
  assert.equal(types.filter((t) => t === 'content_block_start').length, 1);
  assert.equal(types.at(-1), 'message_stop');
});

test('count_tokens: passed to an anthropic deployment, else estimated', async () => {
  const params = { model: 'claude', messages: user('count these words please') };
  const counted = await client.messages.countTokens(params);
  const last = await ant.last();
  assert.equal(last.url, '/v1/messages/count_tokens');
  assert.equal(counted.input_tokens, Math.floor(last.body.length / 4) + 1);
  const estimated = await client.messages.countTokens({ ...params, model: 'gpt' });
  assert.ok(estimated.input_tokens > 0 && estimated.input_tokens < 40, JSON.stringify(estimated));
});

test('a request shaped as Claude Code sends it is answered, passthrough and translated', async () => {
  const body = {
    model: 'claude', max_tokens: 32000, stream: true,
    system: [{ type: 'text', text: "You are Claude Code, Anthropic's official CLI for Claude.",
      cache_control: { type: 'ephemeral' } }, { type: 'text', text: 'Be helpful.' }],
    messages: [{ role: 'user', content: [{ type: 'text', text: 'list files', cache_control: { type: 'ephemeral' } }] }],
    tools: [{ name: 'Bash', description: 'Run a command', input_schema: { type: 'object',
      properties: { command: { type: 'string' } }, required: ['command'] } }],
    metadata: { user_id: 'user_abc_account__session_123' },
  };
  const headers = {
    'anthropic-version': '2023-06-01', 'anthropic-beta': 'claude-code-20250219,interleaved-thinking-2025-05-14',
    'x-api-key': 'sk-ant-client', 'x-app': 'cli', 'user-agent': 'claude-cli/2.0.0 (external, cli)',
    'x-claude-code-session-id': 'f00d', 'anthropic-dangerous-direct-browser-access': 'true',
  };
  for (const model of ['claude', 'gpt']) {
    const res = await post(llmux.base, '/v1/messages?beta=true', { ...body, model }, headers);
    assert.equal(res.status, 200, await res.clone().text());
    const text = await res.text();
    assert.match(text, /^event: message_start\n/);
    assert.match(text, /event: message_stop\ndata: \{"type":"message_stop"\}\n\n$/);
  }
  const sent = JSON.parse((await oai.last()).body);
  assert.equal(sent.messages[0].content, "You are Claude Code, Anthropic's official CLI for Claude.\n\nBe helpful.");
  assert.equal(sent.tools[0].function.name, 'Bash');
  assert.equal(sent.user, 'user_abc_account__session_123');
  const passed = await ant.last();
  assert.equal(passed.headers['anthropic-beta'], headers['anthropic-beta']);
  assert.equal(passed.headers['x-api-key'], KEYS.LLMUX_IT_ANTHROPIC);
});

test('the Vercel AI SDK (createAnthropic): generateText and streamText with a tool, both kinds', async () => {
  const anthropic = createAnthropic({ baseURL: `${llmux.base}/v1`, apiKey: 'unused' });
  const text = await generateText({ model: anthropic('gpt'), prompt: 'hello', maxRetries: 0 });
  assert.equal(text.text, mockText(5));
  assert.equal(text.usage.outputTokens, 5);
  assert.equal(text.finishReason, 'stop');
  assert.equal((await oai.last()).url, '/v1/chat/completions'); // llmux translated it

  const weather = tool({ description: WEATHER_TOOL.description, inputSchema: jsonSchema(WEATHER_TOOL.input_schema),
    execute: async ({ city }) => `sunny in ${city}` });
  for (const [model, upstream, url] of [['gpt-tool', oai, '/v1/chat/completions'], ['claude-tool', ant, '/v1/messages']]) {
    const called = await generateText({ model: anthropic(model), prompt: 'weather?', tools: { get_weather: weather },
      maxRetries: 0 });
    assert.equal(called.finishReason, 'tool-calls', model);
    assert.equal(called.toolCalls[0].toolName, 'get_weather', model);
    assert.deepEqual(called.toolCalls[0].input, TOOL_ARGS, model);
    assert.equal(called.toolResults[0].output, 'sunny in Paris', model);

    const streamed = streamText({ model: anthropic(model), prompt: 'weather?', tools: { get_weather: weather },
      maxRetries: 0, stopWhen: stepCountIs(1) });
    const parts = [];
    for await (const p of streamed.fullStream) parts.push(p.type);
    assert.ok(parts.includes('tool-input-delta'), `${model}: ${parts.join()}`);
    assert.deepEqual((await streamed.toolCalls)[0].input, TOOL_ARGS, model);
    assert.equal(await streamed.finishReason, 'tool-calls', model);
    assert.equal((await upstream.last()).url, url, model); // translated, or passed through
  }

  const plain = streamText({ model: anthropic('claude'), prompt: 'hello', maxRetries: 0 });
  assert.equal(await plain.text, mockText(4));
  assert.equal((await plain.usage).outputTokens, 4);
});
