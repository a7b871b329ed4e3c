// Fidelity check of mockllm: the official clients (@anthropic-ai/sdk, @google/genai, openai's
// OpenAI (chat and the Responses API) and AzureOpenAI) call mockllm DIRECTLY, with no llmux in between. Every scripted answer
// must parse in the SDK the way a real provider's does: text, streams, tool calls, usage, and
// errors mapped to the SDK's own error classes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startMock, mockText } from './lib.mjs';

// ESM ignores NODE_PATH: resolve the packages from test/node (run `npm ci` there after an update).
const require = createRequire(new URL('../node/package.json', import.meta.url));
const anthropicSdk = require('@anthropic-ai/sdk');
const { GoogleGenAI, ApiError } = require('@google/genai');
const openaiSdk = require('openai');
const Anthropic = anthropicSdk.default;
const { default: OpenAI, AzureOpenAI } = openaiSdk;

const TOOL_ARGS = { city: 'Paris', unit: 'celsius', days: 3 };
const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Weather forecast for a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' }, days: { type: 'integer' } } },
};

let mock, origin, anthropic, genai, openai, azure;

before(async () => {
  mock = await startMock();
  origin = `http://127.0.0.1:${mock.port}`;
  anthropic = new Anthropic({ baseURL: origin, apiKey: 'sk-ant-mock', maxRetries: 0, timeout: 20000 });
  genai = new GoogleGenAI({ apiKey: 'g-mock-key', httpOptions: { baseUrl: origin, timeout: 20000 } });
  openai = new OpenAI({ baseURL: `${origin}/v1`, apiKey: 'sk-mock', maxRetries: 0, timeout: 20000 });
  azure = new AzureOpenAI({ endpoint: origin, apiKey: 'az-mock-key', apiVersion: '2024-10-21', maxRetries: 0, timeout: 20000 });
});

after(async () => {
  await mock?.stop();
});

const user = (text = 'hello') => [{ role: 'user', content: text }];
// Per-request script for SDKs whose model id ends up in a URL path.
const xmock = (script) => ({ headers: { 'x-mock': script } });

// ---------------------------------------------------------------- Anthropic

test('anthropic: messages.create, non-stream', async () => {
  const { data: msg, response } = await anthropic.messages
    .create({ model: 'claude-mock?tokens=5', max_tokens: 100, messages: user() })
    .withResponse();
  assert.match(msg.id, /^msg_/);
  assert.equal(msg.type, 'message');
  assert.equal(msg.role, 'assistant');
  assert.equal(msg.model, 'claude-mock');
  assert.deepEqual(msg.content, [{ type: 'text', text: mockText(5) }]);
  assert.equal(msg.stop_reason, 'end_turn');
  assert.equal(msg.stop_sequence, null);
  assert.equal(msg.usage.output_tokens, 5);
  assert.ok(msg.usage.input_tokens > 0);
  assert.match(response.headers.get('request-id'), /^req_/);
  const last = await mock.last();
  assert.equal(last.url, '/v1/messages');
  assert.equal(last.headers.authorization, 'Bearer sk-ant-mock'); // SDK 1.x: the key as a bearer token
  assert.ok(last.headers['anthropic-version']);
  assert.equal(JSON.parse(last.body).max_tokens, 100);
});

test('anthropic: max_tokens caps the answer with stop_reason max_tokens', async () => {
  const msg = await anthropic.messages.create({ model: 'c?tokens=8', max_tokens: 3, messages: user() });
  assert.equal(msg.content[0].text, mockText(3));
  assert.equal(msg.stop_reason, 'max_tokens');
  assert.equal(msg.usage.output_tokens, 3);
});

test('anthropic: stream, events in Anthropic order, finalMessage usage', async () => {
  const stream = anthropic.messages.stream({ model: 'c?tokens=6', max_tokens: 100, messages: user() });
  const types = [];
  let text = '';
  stream.on('streamEvent', (e) => types.push(e.type));
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.equal(text, mockText(6));
  assert.deepEqual(types, ['message_start', 'content_block_start',
    ...Array(6).fill('content_block_delta'), 'content_block_stop', 'message_delta', 'message_stop']);
  assert.equal(final.content[0].text, mockText(6));
  assert.equal(final.stop_reason, 'end_turn');
  assert.equal(final.usage.output_tokens, 6);
  assert.ok(final.usage.input_tokens > 0);
});

test('anthropic: tool_use, non-stream and stream (input_json_delta reassembled)', async () => {
  const params = { model: 'c?tool=get_weather', max_tokens: 100, messages: user('weather?'), tools: [WEATHER_TOOL] };
  const msg = await anthropic.messages.create(params);
  assert.equal(msg.stop_reason, 'tool_use');
  assert.equal(msg.content[0].type, 'tool_use');
  assert.match(msg.content[0].id, /^toolu_/);
  assert.equal(msg.content[0].name, 'get_weather');
  assert.deepEqual(msg.content[0].input, TOOL_ARGS);

  const stream = anthropic.messages.stream(params);
  const fragments = [];
  stream.on('inputJson', (partial) => fragments.push(partial));
  const final = await stream.finalMessage();
  assert.ok(fragments.length > 1, `arguments in several deltas, got ${fragments.length}`);
  assert.equal(final.stop_reason, 'tool_use');
  assert.equal(final.content[0].type, 'tool_use');
  assert.equal(final.content[0].name, 'get_weather');
  assert.deepEqual(final.content[0].input, TOOL_ARGS);
  assert.equal(final.usage.output_tokens, fragments.length);
});

test('anthropic: error statuses map to the SDK error classes', async () => {
  const call = (model, extra = {}) => anthropic.messages.create({ model, max_tokens: 10, messages: user(), ...extra });
  await assert.rejects(call('c?status=529'), (e) => {
    assert.ok(e instanceof anthropicSdk.OverloadedError, e.constructor.name);
    assert.ok(e instanceof anthropicSdk.InternalServerError);
    assert.equal(e.status, 529);
    assert.equal(e.error.error.type, 'overloaded_error');
    assert.match(e.requestID, /^req_/);
    return true;
  });
  await assert.rejects(call('c?status=429&retry_after=2'), (e) => {
    assert.ok(e instanceof anthropicSdk.RateLimitError, e.constructor.name);
    assert.equal(e.headers.get('retry-after'), '2');
    assert.equal(e.error.error.type, 'rate_limit_error');
    return true;
  });
  await assert.rejects(call('c?status=500'), anthropicSdk.InternalServerError);
  await assert.rejects(call('c?context_window=10'), (e) => {
    assert.ok(e instanceof anthropicSdk.BadRequestError, e.constructor.name);
    assert.equal(e.error.error.type, 'invalid_request_error');
    assert.match(e.error.error.message, /^prompt is too long: \d+ tokens > 10 maximum$/);
    return true;
  });
  // max_tokens is required, as by the real API.
  await assert.rejects(anthropic.messages.create({ model: 'c', messages: user() }), anthropicSdk.BadRequestError);
});

test('anthropic: an in-stream error event throws the SDK error', async () => {
  const stream = anthropic.messages.stream({ model: 'c?tokens=6&error_after=2', max_tokens: 100, messages: user() });
  let text = '';
  stream.on('text', (t) => { text += t; });
  await assert.rejects(stream.finalMessage(), (e) => {
    assert.ok(e instanceof anthropicSdk.APIError, e.constructor.name);
    assert.equal(e.error.error.type, 'overloaded_error');
    return true;
  });
  assert.equal(text, mockText(2));
});

test('anthropic: prefill continuation, and the API rules on prefills', async () => {
  // A prefill stripped of its trailing whitespace, as the real API requires.
  const prefix = mockText(3).trimEnd();
  const msg = await anthropic.messages.create({
    model: 'c?tokens=7', max_tokens: 100,
    messages: [...user(), { role: 'assistant', content: prefix }],
  });
  assert.equal(prefix + msg.content[0].text, mockText(7));
  assert.equal(msg.usage.output_tokens, 4);
  await assert.rejects(anthropic.messages.create({
    model: 'c', max_tokens: 100, messages: [...user(), { role: 'assistant', content: mockText(3) }],
  }), (e) => e instanceof anthropicSdk.BadRequestError && /trailing whitespace/.test(e.message));
  await assert.rejects(anthropic.messages.create({
    model: 'c?prefill=0', max_tokens: 100, messages: [...user(), { role: 'assistant', content: prefix }],
  }), (e) => e instanceof anthropicSdk.BadRequestError && /prefill/.test(e.message));
});

// ---------------------------------------------------------------- Gemini

test('gemini: generateContent', async () => {
  const r = await genai.models.generateContent({
    model: 'gemini-mock', contents: 'hello', config: { httpOptions: xmock('tokens=4') },
  });
  assert.equal(r.text, mockText(4));
  assert.equal(r.candidates[0].finishReason, 'STOP');
  assert.equal(r.candidates[0].content.role, 'model');
  assert.equal(r.usageMetadata.candidatesTokenCount, 4);
  assert.equal(r.usageMetadata.totalTokenCount, r.usageMetadata.promptTokenCount + 4);
  assert.equal(r.modelVersion, 'gemini-mock');
  assert.ok(r.responseId);
  const last = await mock.last();
  assert.equal(last.url, '/v1beta/models/gemini-mock:generateContent');
  assert.equal(last.headers['x-goog-api-key'], 'g-mock-key');
});

test('gemini: maxOutputTokens caps with finishReason MAX_TOKENS', async () => {
  const r = await genai.models.generateContent({
    model: 'gemini-mock', contents: 'hello', config: { maxOutputTokens: 2, httpOptions: xmock('tokens=6') },
  });
  assert.equal(r.text, mockText(2));
  assert.equal(r.candidates[0].finishReason, 'MAX_TOKENS');
});

test('gemini: generateContentStream, text and functionCall', async () => {
  let text = '';
  let lastChunk;
  let n = 0;
  for await (const chunk of await genai.models.generateContentStream({
    model: 'gemini-mock', contents: 'hello', config: { httpOptions: xmock('tokens=5') },
  })) {
    text += chunk.text ?? '';
    lastChunk = chunk;
    n++;
  }
  assert.equal(text, mockText(5));
  assert.equal(n, 5);
  assert.equal(lastChunk.candidates[0].finishReason, 'STOP');
  assert.equal(lastChunk.usageMetadata.candidatesTokenCount, 5);
  assert.match((await mock.last()).url, /:streamGenerateContent\?alt=sse$/);

  const calls = [];
  for await (const chunk of await genai.models.generateContentStream({
    model: 'gemini-mock', contents: 'weather?',
    config: {
      httpOptions: xmock('tool=get_weather'),
      tools: [{ functionDeclarations: [{ name: 'get_weather', parametersJsonSchema: WEATHER_TOOL.input_schema }] }],
    },
  })) {
    calls.push(...(chunk.functionCalls ?? []));
    lastChunk = chunk;
  }
  assert.equal(calls.length, 1);
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(calls[0].args, TOOL_ARGS);
  assert.equal(lastChunk.candidates[0].finishReason, 'STOP');
});

test('gemini: embedContent (batchEmbedContents)', async () => {
  const r = await genai.models.embedContent({ model: 'text-embedding-mock', contents: ['one', 'two', 'three'] });
  assert.equal(r.embeddings.length, 3);
  for (const e of r.embeddings) assert.equal(e.values.length, 8);
  assert.equal((await mock.last()).url, '/v1beta/models/text-embedding-mock:batchEmbedContents');
});

test('gemini: errors are ApiError with the status', async () => {
  const call = (script) => genai.models.generateContent({ model: 'g', contents: 'hello', config: { httpOptions: xmock(script) } });
  await assert.rejects(call('status=429'), (e) => {
    assert.ok(e instanceof ApiError, e.constructor.name);
    assert.equal(e.status, 429);
    assert.match(e.message, /RESOURCE_EXHAUSTED/);
    return true;
  });
  await assert.rejects(call('status=503'), (e) => e instanceof ApiError && e.status === 503);
  await assert.rejects(call('context_window=5'), (e) => {
    assert.ok(e instanceof ApiError);
    assert.equal(e.status, 400);
    assert.match(e.message, /The input token count \(\d+\) exceeds the maximum number of tokens allowed \(5\)/);
    return true;
  });
  // An error in the stream after two chunks.
  let text = '';
  await assert.rejects((async () => {
    for await (const chunk of await genai.models.generateContentStream({
      model: 'g', contents: 'hello', config: { httpOptions: xmock('tokens=5&error_after=2') },
    })) text += chunk.text ?? '';
  })(), /UNAVAILABLE|503/);
  assert.equal(text, mockText(2));
});

test('gemini: a final model turn is continued', async () => {
  const r = await genai.models.generateContent({
    model: 'g',
    contents: [{ role: 'user', parts: [{ text: 'hello' }] }, { role: 'model', parts: [{ text: mockText(2) }] }],
    config: { httpOptions: xmock('tokens=5') },
  });
  assert.equal(mockText(2) + r.text, mockText(5));
});

// ---------------------------------------------------------------- OpenAI and Azure OpenAI

test('azure: AzureOpenAI chat (stream and not), completions, embeddings on deployment paths', async () => {
  const r = await azure.chat.completions.create({ model: 'gpt-dep', messages: user() }, xmock('tokens=3'));
  assert.equal(r.choices[0].message.content, mockText(3));
  assert.equal(r.model, 'gpt-dep');
  const last = await mock.last();
  assert.equal(last.url, '/openai/deployments/gpt-dep/chat/completions?api-version=2024-10-21');
  assert.equal(last.headers['api-key'], 'az-mock-key');

  let text = '';
  const stream = await azure.chat.completions.create(
    { model: 'gpt-dep', messages: user(), stream: true, stream_options: { include_usage: true } }, xmock('tokens=4'));
  let usage;
  for await (const c of stream) {
    text += c.choices[0]?.delta?.content ?? '';
    usage = c.usage ?? usage;
  }
  assert.equal(text, mockText(4));
  assert.equal(usage.completion_tokens, 4);

  const c = await azure.completions.create({ model: 'gpt-dep', prompt: 'Say' }, xmock('tokens=2'));
  assert.equal(c.choices[0].text, mockText(2));
  const e = await azure.embeddings.create({ model: 'emb-dep', input: ['a', 'b'] });
  assert.equal(e.data.length, 2);
  assert.equal(e.model, 'emb-dep');
  assert.equal((await mock.last()).url, '/openai/deployments/emb-dep/embeddings?api-version=2024-10-21');
});

test('openai: tool call, non-stream and streamed arguments', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: WEATHER_TOOL.input_schema } }];
  const r = await openai.chat.completions.create({ model: 'm?tool=get_weather', messages: user(), tools });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  const call = r.choices[0].message.tool_calls[0];
  assert.match(call.id, /^call_/);
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), TOOL_ARGS);

  const stream = openai.chat.completions.stream({ model: 'm?tool=get_weather', messages: user(), tools });
  let argChunks = 0;
  stream.on('chunk', (c) => { if (c.choices[0]?.delta?.tool_calls?.[0]?.function?.arguments) argChunks++; });
  const final = await stream.finalChatCompletion();
  assert.ok(argChunks > 1, `arguments in several chunks, got ${argChunks}`);
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  const streamed = final.choices[0].message.tool_calls[0];
  assert.equal(streamed.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(streamed.function.arguments), TOOL_ARGS);
});

test('openai: context length error is a BadRequestError with its code; max_tokens gives length', async () => {
  await assert.rejects(openai.chat.completions.create({ model: 'm?context_window=4', messages: user() }), (e) => {
    assert.ok(e instanceof openaiSdk.BadRequestError, e.constructor.name);
    assert.equal(e.code, 'context_length_exceeded');
    assert.equal(e.param, 'messages');
    assert.match(e.message, /maximum context length is 4 tokens/);
    return true;
  });
  const r = await openai.chat.completions.create({ model: 'm?tokens=6', messages: user(), max_tokens: 2 });
  assert.equal(r.choices[0].message.content, mockText(2));
  assert.equal(r.choices[0].finish_reason, 'length');
});

// ---------------------------------------------------------------- OpenAI Responses API

test('openai responses: create (text, usage, max_output_tokens -> incomplete) and errors', async () => {
  const r = await openai.responses.create({ model: 'm?tokens=5', input: 'hello', instructions: 'Be brief.' });
  assert.match(r.id, /^resp_/);
  assert.equal(r.object, 'response');
  assert.equal(r.status, 'completed');
  assert.equal(r.model, 'm');
  assert.equal(r.output_text, mockText(5)); // the SDK's own reading of output[].content[]
  assert.equal(r.output[0].type, 'message');
  assert.equal(r.output[0].role, 'assistant');
  assert.equal(r.usage.output_tokens, 5);
  assert.ok(r.usage.input_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + 5);
  assert.equal((await mock.last()).url, '/v1/responses');

  const cut = await openai.responses.create({ model: 'm?tokens=6', input: 'hello', max_output_tokens: 2 });
  assert.equal(cut.status, 'incomplete');
  assert.equal(cut.incomplete_details.reason, 'max_output_tokens');
  assert.equal(cut.output_text, mockText(2));

  await assert.rejects(openai.responses.create({ model: 'm?status=429', input: 'x' }),
    (e) => e instanceof openaiSdk.RateLimitError);
  await assert.rejects(openai.responses.create({ model: 'm?context_window=2', input: 'x' }), (e) => {
    assert.ok(e instanceof openaiSdk.BadRequestError, e.constructor.name);
    assert.equal(e.code, 'context_length_exceeded');
    assert.equal(e.param, 'input');
    return true;
  });
});

test('openai responses: stream, the documented lifecycle with sequence numbers, finalResponse', async () => {
  const stream = openai.responses.stream({ model: 'm?tokens=4', input: 'hello' });
  const events = [];
  stream.on('event', (e) => events.push(e));
  const deltas = [];
  stream.on('response.output_text.delta', (e) => deltas.push(e.delta));
  const final = await stream.finalResponse();
  assert.deepEqual(events.map((e) => e.type), ['response.created', 'response.in_progress',
    'response.output_item.added', 'response.content_part.added',
    ...Array(4).fill('response.output_text.delta'), 'response.output_text.done',
    'response.content_part.done', 'response.output_item.done', 'response.completed']);
  assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
  assert.equal(deltas.join(''), mockText(4));
  assert.equal(final.status, 'completed');
  assert.equal(final.output_text, mockText(4));
  assert.equal(final.usage.output_tokens, 4);
});

test('openai responses: function and custom tool calls, non-stream and streamed', async () => {
  const tools = [{ type: 'function', name: 'get_weather', parameters: WEATHER_TOOL.input_schema, strict: false }];
  const r = await openai.responses.create({ model: 'm?tool=get_weather', input: 'weather?', tools });
  const call = r.output[0];
  assert.equal(call.type, 'function_call');
  assert.match(call.call_id, /^call_/);
  assert.equal(call.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.arguments), TOOL_ARGS);

  const stream = openai.responses.stream({ model: 'm?tool=get_weather', input: 'weather?', tools });
  let argEvents = 0;
  stream.on('response.function_call_arguments.delta', () => argEvents++);
  const final = await stream.finalResponse();
  assert.ok(argEvents > 1, `arguments in several events, got ${argEvents}`);
  assert.deepEqual(JSON.parse(final.output[0].arguments), TOOL_ARGS);

  // a freeform custom tool (Codex's apply_patch): a custom_tool_call with a string input
  const custom = [{ type: 'custom', name: 'apply_patch', description: 'Apply a patch' }];
  const types = [];
  const cs = openai.responses.stream({ model: 'm?tool=apply_patch', input: 'patch it', tools: custom });
  cs.on('event', (e) => types.push(e.type));
  const cf = await cs.finalResponse();
  assert.equal(cf.output[0].type, 'custom_tool_call');
  assert.equal(cf.output[0].name, 'apply_patch');
  assert.equal(cf.output[0].input, JSON.stringify(TOOL_ARGS));
  assert.ok(types.includes('response.custom_tool_call_input.delta'), types.join());
  assert.ok(types.includes('response.custom_tool_call_input.done'), types.join());
});

test('openai responses: an in-stream failure ends with response.failed, the final response failed', async () => {
  const stream = openai.responses.stream({ model: 'm?tokens=5&error_after=2', input: 'hello' });
  const types = [];
  stream.on('event', (e) => types.push(e.type));
  const final = await stream.finalResponse();
  assert.equal(final.status, 'failed');
  assert.equal(final.error.code, 'server_error');
  assert.equal(types.at(-1), 'response.failed');
  assert.equal(types.filter((t) => t === 'response.output_text.delta').length, 2);
});
