// POST /v1/responses (OpenAI's Responses API in), judged by the official `openai` SDK
// (responses.create / responses.stream), the Vercel AI SDK's default OpenAI provider and a
// request shaped as Codex sends it, through llmux to openai, anthropic and gemini kinds
// (always translated through canonical chat):
// - text, instructions, usage, max_output_tokens -> status incomplete, text.format json_schema;
// - a function-call round trip (function_call + function_call_output back in `input`);
// - the stream: exactly the documented events, each with `type` and a sequence_number that
//   grows by one from 0, `event:` equal to the type, response.completed with the whole output;
// - failover, a failure after commit ending with response.failed (never response.completed),
//   a continuation on another kind in the same output item;
// - errors in OpenAI's shape: bad JSON, unknown model, gateway key, previous_response_id (llmux
//   is stateless), a hosted tool no provider can run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startMock, startLlmux, post, mockText, rid } from './lib.mjs';

const require = createRequire(new URL('../node/package.json', import.meta.url));
const OpenAI = require('openai').default;
const { generateText, streamText, tool, jsonSchema, stepCountIs } = require('ai');
const { createOpenAI } = require('@ai-sdk/openai');

const KEYS = { LLMUX_IT_ANTHROPIC: 'sk-ant-it-upstream', LLMUX_IT_GEMINI: 'gm-it-upstream' };
const TOOL_ARGS = { city: 'Paris', unit: 'celsius', days: 3 };
const WEATHER_TOOL = {
  type: 'function', name: 'get_weather', description: 'Weather forecast for a city', strict: false,
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};
// Every event type a translated stream may carry (the documented Responses lifecycle).
const DOCUMENTED = new Set(['response.created', 'response.in_progress', 'response.output_item.added',
  'response.content_part.added', 'response.output_text.delta', 'response.output_text.done',
  'response.content_part.done', 'response.output_item.done', 'response.function_call_arguments.delta',
  'response.function_call_arguments.done', 'response.completed', 'response.incomplete', 'response.failed']);
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
      gpt: one('oai', 'gpt-x?tokens=5'),
      'gpt-tool': one('oai', 'gpt-x?tool=get_weather'),
      'gpt-cut': one('oai', 'gpt-x?tokens=6&error_after=2'),
      claude: one('ant', 'claude-x?tokens=4'),
      'claude-tool': one('ant', 'claude-x?tool=get_weather'),
      gem: one('gem', 'gem-x?tokens=4'),
      failover: { deployments: [{ provider: 'oai', model: 'gpt-x?status=500' },
        { provider: 'ant', model: 'claude-x?tokens=3' }] },
      cont: { on_stream_failure: 'continue', deployments: [
        { provider: 'oai', model: 'gpt-x?tokens=6&reset_after=3' },
        { provider: 'ant', model: 'claude-x?tokens=6' }] },
    },
  }, { env: KEYS });
  keyed = await startLlmux({ providers, keys: ['gw-secret'], models: { gpt: one('oai', 'gpt-x?tokens=2') } },
    { env: KEYS });
  client = new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
});

after(async () => {
  await llmux?.stop();
  await keyed?.stop();
  for (const m of [ant, oai, gem]) await m?.stop();
});

// The SSE body's events as [{event, data}], checked as a strict client checks them: every event
// has an `event:` line equal to its data's documented `type`, and sequence numbers 0, 1, 2...
function events(text) {
  const out = text.split('\n\n').filter((b) => b && !b.startsWith(':')).map((b) => {
    const m = b.match(/^event: (\S+)\ndata: (.*)$/s);
    assert.ok(m, `not an event: ${JSON.stringify(b)}`);
    const data = JSON.parse(m[2]);
    assert.equal(data.type, m[1]);
    assert.ok(DOCUMENTED.has(data.type), data.type);
    return data;
  });
  out.forEach((e, i) => assert.equal(e.sequence_number, i, `${e.type} at ${i}`));
  return out;
}

const TEXT_EVENTS = (n) => ['response.created', 'response.in_progress', 'response.output_item.added',
  'response.content_part.added', ...Array(n).fill('response.output_text.delta'), 'response.output_text.done',
  'response.content_part.done', 'response.output_item.done', 'response.completed'];

test('create to openai: a Response object with text and usage; instructions and max_output_tokens translated', async () => {
  const { data: r, response } = await client.responses.create({
    model: 'gpt', instructions: 'Be brief.', input: 'hello', max_output_tokens: 100, temperature: 0.5,
    store: false, metadata: { k: 'v' }, include: ['reasoning.encrypted_content'],
  }).withResponse();
  assert.equal(response.headers.get('x-llmux-provider'), 'oai');
  assert.match(r.id, /^resp_/);
  assert.equal(r.object, 'response');
  assert.equal(r.status, 'completed');
  assert.equal(r.model, 'gpt-x');
  assert.ok(r.created_at > 1.6e9);
  assert.equal(r.output_text, mockText(5));
  assert.equal(r.output.length, 1);
  assert.equal(r.output[0].type, 'message');
  assert.equal(r.output[0].role, 'assistant');
  assert.match(r.output[0].id, /^msg_/);
  assert.deepEqual(r.output[0].content, [{ type: 'output_text', annotations: [], logprobs: [], text: mockText(5) }]);
  assert.equal(r.usage.output_tokens, 5);
  assert.ok(r.usage.input_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + 5);
  assert.equal(r.usage.input_tokens_details.cached_tokens, 0);
  assert.equal(r.usage.output_tokens_details.reasoning_tokens, 0);
  const sent = JSON.parse((await oai.last()).body);
  assert.deepEqual(sent, { model: 'gpt-x?tokens=5',
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hello' }],
    max_tokens: 100, temperature: 0.5 });

  const capped = await client.responses.create({ model: 'gpt', input: 'hello', max_output_tokens: 2 });
  assert.equal(capped.status, 'incomplete');
  assert.deepEqual(capped.incomplete_details, { reason: 'max_output_tokens' });
  assert.equal(capped.output_text, mockText(2));
});

test('stream to openai: exactly the documented events in order, numbered, with the usage at the end', async () => {
  const res = await post(llmux.base, '/v1/responses', { model: 'gpt', input: 'hello', stream: true });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const evs = events(await res.text());
  assert.deepEqual(evs.map((e) => e.type), TEXT_EVENTS(5));
  const [created, progress, added, part] = evs;
  assert.equal(created.response.status, 'in_progress');
  assert.deepEqual(created.response.output, []);
  assert.equal(progress.response.id, created.response.id);
  assert.deepEqual(added.item, { id: added.item.id, type: 'message', status: 'in_progress', content: [], role: 'assistant' });
  assert.deepEqual(part, { type: 'response.content_part.added', sequence_number: 3, item_id: added.item.id,
    output_index: 0, content_index: 0, part: { type: 'output_text', annotations: [], logprobs: [], text: '' } });
  assert.equal(evs.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join(''), mockText(5));
  const done = evs.at(-1).response;
  assert.equal(done.status, 'completed');
  assert.equal(done.id, created.response.id);
  assert.deepEqual(done.output, [evs.at(-2).item]);
  assert.equal(done.output[0].content[0].text, mockText(5));
  assert.equal(done.usage.output_tokens, 5);
  assert.ok(done.usage.input_tokens > 0);
  assert.deepEqual(JSON.parse((await oai.last()).body).stream_options, { include_usage: true });

  // the SDK's own stream helper accumulates the same answer
  const stream = client.responses.stream({ model: 'gpt', input: 'hello' });
  let text = '';
  stream.on('response.output_text.delta', (e) => { text += e.delta; });
  const final = await stream.finalResponse();
  assert.equal(text, mockText(5));
  assert.equal(final.output_text, mockText(5));
  assert.equal(final.usage.output_tokens, 5);
});

test('anthropic and gemini kinds: create and stream', async () => {
  for (const [model, n] of [['claude', 4], ['gem', 4]]) {
    const r = await client.responses.create({ model, instructions: 'Be brief.', input: [
      { role: 'user', content: [{ type: 'input_text', text: 'hello' }] }] });
    assert.equal(r.output_text, mockText(n), model);
    assert.equal(r.usage.output_tokens, n, model);
    const stream = client.responses.stream({ model, input: 'hello' });
    const types = [];
    stream.on('event', (e) => types.push(e.type));
    const final = await stream.finalResponse();
    assert.deepEqual(types, TEXT_EVENTS(n), model);
    assert.equal(final.output_text, mockText(n), model);
    assert.equal(final.usage.output_tokens, n, model);
  }
  const sent = JSON.parse((await ant.last()).body);
  assert.equal(sent.model, 'claude-x?tokens=4');
});

test('function calling: a call in the output, its arguments streamed, and the round trip back', async () => {
  for (const [model, upstream] of [['gpt-tool', oai], ['claude-tool', ant]]) {
    const params = { model, input: 'weather in Paris?', tools: [WEATHER_TOOL], tool_choice: 'auto' };
    const r = await client.responses.create(params);
    assert.equal(r.status, 'completed');
    const call = r.output.find((o) => o.type === 'function_call');
    assert.equal(call.name, 'get_weather', model);
    assert.equal(call.status, 'completed');
    assert.match(call.id, /^fc_/);
    assert.ok(call.call_id, model);
    assert.deepEqual(JSON.parse(call.arguments), TOOL_ARGS);

    const stream = client.responses.stream(params);
    const evs = [];
    stream.on('event', (e) => evs.push(e));
    const final = await stream.finalResponse();
    const types = evs.map((e) => e.type);
    const deltas = evs.filter((e) => e.type === 'response.function_call_arguments.delta');
    assert.ok(deltas.length > 1, `${model}: arguments in pieces, got ${types.join()}`);
    assert.equal(types[2], 'response.output_item.added');
    assert.equal(evs[2].item.type, 'function_call');
    assert.equal(evs[2].item.arguments, '');
    assert.deepEqual(types.slice(-3), ['response.function_call_arguments.done', 'response.output_item.done',
      'response.completed']);
    assert.deepEqual(JSON.parse(evs.at(-3).arguments), TOOL_ARGS);
    assert.deepEqual(JSON.parse(final.output[0].arguments), TOOL_ARGS);
    evs.forEach((e, i) => assert.equal(e.sequence_number, i));

    // the result goes back as function_call + function_call_output
    const next = await client.responses.create({ model: 'gpt', tools: [WEATHER_TOOL], input: [
      { role: 'user', content: 'weather in Paris?' },
      { type: 'function_call', call_id: call.call_id, name: call.name, arguments: call.arguments },
      { type: 'function_call_output', call_id: call.call_id, output: 'sunny' },
      { role: 'user', content: [{ type: 'input_text', text: 'and tomorrow?' }] }] });
    assert.equal(next.output_text, mockText(5));
    const round = JSON.parse((await oai.last()).body);
    assert.equal(round.messages[1].role, 'assistant');
    assert.equal(round.messages[1].content, null);
    assert.equal(round.messages[1].tool_calls[0].id, call.call_id);
    assert.deepEqual(JSON.parse(round.messages[1].tool_calls[0].function.arguments), TOOL_ARGS);
    assert.deepEqual(round.messages[2], { role: 'tool', tool_call_id: call.call_id, content: 'sunny' });
    assert.deepEqual(round.messages[3], { role: 'user', content: 'and tomorrow?' });
    assert.deepEqual(round.tools[0], { type: 'function', function: { name: 'get_weather',
      description: WEATHER_TOOL.description, parameters: WEATHER_TOOL.parameters, strict: false } });
    assert.ok(upstream);
  }
});

test('text.format json_schema becomes response_format', async () => {
  const schema = { type: 'object', properties: { answer: { type: 'string' } }, required: ['answer'],
    additionalProperties: false };
  await client.responses.create({ model: 'gpt', input: 'hi',
    text: { format: { type: 'json_schema', name: 'reply', schema, strict: true } } });
  const sent = JSON.parse((await oai.last()).body);
  assert.deepEqual(sent.response_format, { type: 'json_schema', json_schema: { name: 'reply', schema, strict: true } });
});

test('failover from an openai deployment answering 500 to an anthropic one, unseen', async () => {
  const { data: r, response } = await client.responses.create({ model: 'failover', input: 'hi' }).withResponse();
  assert.equal(r.output_text, mockText(3));
  assert.equal(response.headers.get('x-llmux-attempts'), '2');
  assert.equal(response.headers.get('x-llmux-provider'), 'ant');
  const final = await client.responses.stream({ model: 'failover', input: 'hi' }).finalResponse();
  assert.equal(final.output_text, mockText(3));
  assert.equal(final.status, 'completed');
});

test('a failure after commit ends with response.failed, never response.completed', async () => {
  const id = rid('resp-cut');
  const res = await post(llmux.base, '/v1/responses', { model: 'gpt-cut', input: 'hi', stream: true },
    { 'x-request-id': id });
  assert.equal(res.status, 200);
  const evs = events(await res.text());
  const types = evs.map((e) => e.type);
  assert.ok(types.includes('response.output_text.delta'));
  assert.ok(!types.includes('response.completed') && !types.includes('response.output_item.done'), types.join());
  const last = evs.at(-1);
  assert.equal(last.type, 'response.failed');
  assert.equal(last.response.status, 'failed');
  assert.equal(last.response.error.code, 'server_error');
  assert.ok(last.response.error.message.length > 0);
  assert.equal(last.response.id, evs[0].response.id);
  const log = await llmux.logFor(id);
  assert.equal(log.outcome, 'truncated');
  assert.equal(log.endpoint, 'responses');
  const final = await client.responses.stream({ model: 'gpt-cut', input: 'hi' }).finalResponse();
  assert.equal(final.status, 'failed');
});

test('continuation: a stream reset mid-answer goes on at anthropic in the same output item', async () => {
  const stream = client.responses.stream({ model: 'cont', input: 'hi' });
  const types = [];
  stream.on('event', (e) => types.push(e.type));
  const final = await stream.finalResponse();
  assert.equal(final.status, 'completed');
  assert.equal(final.output.length, 1);
  assert.equal(final.output_text, mockText(6));
  assert.equal(types.filter((t) => t === 'response.output_item.added').length, 1);
  assert.equal(types.at(-1), 'response.completed');
});

test('errors come in OpenAI\'s shape', async () => {
  let res = await post(llmux.base, '/v1/responses', '{"model":');
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.type, 'invalid_request_error');
  res = await post(llmux.base, '/v1/responses', { model: 'gpt' });
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.param, 'input');
  await assert.rejects(client.responses.create({ model: 'no-such', input: 'hi' }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, e.constructor.name);
    assert.equal(e.code, 'model_not_found');
    return true;
  });
  await assert.rejects(client.responses.create({ model: 'gpt', input: 'hi', previous_response_id: 'resp_1' }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
    assert.match(e.message, /previous_response_id: llmux keeps no responses.*stateless/);
    assert.equal(e.param, 'previous_response_id');
    return true;
  });
  await assert.rejects(client.responses.create({ model: 'gpt', input: 'hi', tools: [{ type: 'web_search' }] }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
    assert.match(e.message, /"web_search"/);
    return true;
  });
  await assert.rejects(client.responses.create({ model: 'gpt', input: [{ type: 'item_reference', id: 'msg_1' }] }),
    (e) => e instanceof OpenAI.BadRequestError && /item_reference.*stateless/.test(e.message));
  const wrong = new OpenAI({ baseURL: `${keyed.base}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(wrong.responses.create({ model: 'gpt', input: 'hi' }), OpenAI.AuthenticationError);
  const right = new OpenAI({ baseURL: `${keyed.base}/v1`, apiKey: 'gw-secret', maxRetries: 0 });
  assert.equal((await right.responses.create({ model: 'gpt', input: 'hi' })).output_text, mockText(2));
});

test('a request shaped as Codex sends it is answered', async () => {
  const body = {
    model: 'gpt-tool',
    instructions: 'You are Codex, based on GPT-5. You are running as a coding agent in the Codex CLI.',
    input: [
      { type: 'message', role: 'developer', content: [{ type: 'input_text', text: '<permissions instructions>' }] },
      { type: 'message', role: 'user', content: [{ type: 'input_text', text: '<environment_context>\n  <cwd>/w</cwd>\n</environment_context>' }] },
      { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'list the files' }] },
      { type: 'reasoning', id: 'rs_1', summary: [{ type: 'summary_text', text: 'Listing' }], encrypted_content: 'gAAAA' },
      { type: 'function_call', id: 'fc_0', name: 'shell', arguments: '{"command":["ls"]}', call_id: 'call_0' },
      { type: 'function_call_output', call_id: 'call_0', output: 'a.txt\nb.txt' },
      { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Two files.' }] },
      { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'weather?' }] },
    ],
    tools: [{ type: 'function', name: 'shell', description: 'Runs a shell command', strict: false,
      parameters: { type: 'object', properties: { command: { type: 'array', items: { type: 'string' } } },
        required: ['command'], additionalProperties: false } }],
    tool_choice: 'auto', parallel_tool_calls: false,
    reasoning: { effort: 'medium', summary: 'auto' }, store: false, stream: true,
    include: ['reasoning.encrypted_content'], prompt_cache_key: '0199a213-81c0-7800-8aa1-bbab2a035a53',
    text: { verbosity: 'medium' },
  };
  const headers = { authorization: 'Bearer sk-codex', accept: 'text/event-stream', originator: 'codex_cli_rs',
    version: '0.46.0', session_id: '0199a213-81c0-7800-8aa1-bbab2a035a53', conversation_id: '0199a213',
    'openai-beta': 'responses=experimental', 'user-agent': 'codex_cli_rs/0.46.0 (Debian 12; x86_64)' };
  const res = await post(llmux.base, '/v1/responses', body, headers);
  assert.equal(res.status, 200, await res.clone().text());
  const evs = events(await res.text());
  const done = evs.filter((e) => e.type === 'response.output_item.done');
  assert.equal(done.length, 1);
  assert.equal(done[0].item.type, 'function_call');
  assert.equal(done[0].item.name, 'get_weather');
  const completed = evs.at(-1);
  assert.equal(completed.type, 'response.completed');
  assert.match(completed.response.id, /^resp_/);
  for (const k of ['input_tokens', 'output_tokens', 'total_tokens']) assert.ok(Number.isInteger(completed.response.usage[k]), k);
  const sent = JSON.parse((await oai.last()).body);
  assert.deepEqual(sent.messages.map((m) => m.role), ['system', 'system', 'user', 'user', 'assistant', 'tool', 'assistant', 'user']);
  assert.equal(sent.messages[4].tool_calls[0].id, 'call_0');
  assert.equal(sent.messages[5].content, 'a.txt\nb.txt');
  assert.equal(sent.parallel_tool_calls, false);
  assert.equal(sent.reasoning_effort, 'medium');
  for (const k of ['store', 'include', 'prompt_cache_key', 'text', 'reasoning', 'instructions', 'input'])
    assert.ok(!(k in sent), k);
});

test('the Vercel AI SDK (createOpenAI, /responses): generateText and streamText with a tool', async () => {
  const openai = createOpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'unused' });
  const text = await generateText({ model: openai('gpt'), prompt: 'hello', maxRetries: 0 });
  assert.equal(text.text, mockText(5));
  assert.equal(text.usage.outputTokens, 5);
  assert.equal(text.finishReason, 'stop');
  assert.equal((await oai.last()).url, '/v1/chat/completions'); // llmux translated it

  const weather = tool({ description: 'Weather forecast for a city', inputSchema: jsonSchema(WEATHER_TOOL.parameters),
    execute: async ({ city }) => `sunny in ${city}` });
  const called = await generateText({ model: openai('gpt-tool'), prompt: 'weather?', tools: { get_weather: weather },
    maxRetries: 0 });
  assert.equal(called.finishReason, 'tool-calls');
  assert.deepEqual(called.toolCalls[0].input, TOOL_ARGS);
  assert.equal(called.toolResults[0].output, 'sunny in Paris');

  const streamed = streamText({ model: openai('claude-tool'), prompt: 'weather?', tools: { get_weather: weather },
    maxRetries: 0, stopWhen: stepCountIs(1) });
  const parts = [];
  for await (const p of streamed.fullStream) parts.push(p.type);
  assert.ok(parts.includes('tool-input-delta'), parts.join());
  assert.deepEqual((await streamed.toolCalls)[0].input, TOOL_ARGS);
  assert.equal(await streamed.finishReason, 'tool-calls');

  const plain = streamText({ model: openai('gem'), prompt: 'hello', maxRetries: 0 });
  assert.equal(await plain.text, mockText(4));
  assert.equal((await plain.usage).outputTokens, 4);
});
