// POST /v1/responses passed through to an openai-kind provider configured with
// "responses": "native" (mockllm serves the Responses API itself), judged by the official
// `openai` SDK (responses.create / responses.stream) and raw requests:
// - the upstream receives the client's body byte for byte except `model`, at {base}/responses,
//   with the provider's key; the answer comes back as the provider sent it (the body, and the
//   stream's events with their own sequence numbers), with only usage.cost added when priced;
// - what llmux cannot translate goes through natively: a Codex-shaped request with a freeform
//   custom tool (apply_patch), reasoning items, include, store; previous_response_id when every
//   deployment of the plan is native (else the stateless 400); a custom tool skips the plan's
//   translated deployments, and with none native it is the 400 naming the tool type;
// - failover from a native deployment answering 500 to a translated one of another kind, unseen;
// - a native stream that breaks after commit ends with llmux's response.failed, numbered after
//   the provider's last event, even with on_stream_failure "continue" (no continuation);
// - an azure-kind provider with "responses": "native" gets the same passthrough at Azure's v1
//   API, {base}/openai/v1/responses (the deployment name as the body's model, no api-version),
//   with its key in an api-key header and never an Authorization one; failover from it works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startMock, startLlmux, post, mockText, rid } from './lib.mjs';

const require = createRequire(new URL('../node/package.json', import.meta.url));
const OpenAI = require('openai').default;

const KEYS = { LLMUX_IT_NATIVE: 'sk-native-upstream', LLMUX_IT_ANTHROPIC: 'sk-ant-it-upstream',
  LLMUX_IT_AZURE: 'az-native-upstream' };
const TOOL_ARGS = { city: 'Paris', unit: 'celsius', days: 3 };
const PRICE = { input: 2, output: 8 }; // $ per million tokens
const APPLY_PATCH = { type: 'custom', name: 'apply_patch', description: 'Use the apply_patch tool to edit files',
  format: { type: 'grammar', syntax: 'lark', definition: 'start: begin_patch hunk+ end_patch' } };
let nat, ant, az, llmux, client;

before(async () => {
  [nat, ant, az] = await Promise.all([startMock(), startMock(), startMock()]);
  const dep = (provider, model, extra = {}) => ({ provider, model, ...extra });
  llmux = await startLlmux({
    timeouts_ms: { connect: 1000, first_byte: 3000, idle: 1000, total: 15000 },
    providers: {
      nat: { kind: 'openai', base_url: nat.baseUrl, api_key_env: 'LLMUX_IT_NATIVE', responses: 'native' },
      ant: { kind: 'anthropic', base_url: ant.baseUrl, api_key_env: 'LLMUX_IT_ANTHROPIC' },
      azn: { kind: 'azure', base_url: `http://127.0.0.1:${az.port}`, api_key_env: 'LLMUX_IT_AZURE',
        responses: 'native' },
    },
    models: {
      native: { deployments: [dep('nat', 'gpt-n?tokens=4')] },
      'native-tool': { deployments: [dep('nat', 'gpt-n?tool=apply_patch')] },
      priced: { deployments: [dep('nat', 'gpt-n?tokens=5', { price: PRICE })] },
      failover: { deployments: [dep('nat', 'gpt-n?status=500'), dep('ant', 'claude-x?tokens=3')] },
      mixed: { deployments: [dep('ant', 'claude-x?tokens=2'), dep('nat', 'gpt-n?tool=apply_patch')] },
      claude: { deployments: [dep('ant', 'claude-x?tokens=2')] },
      cut: { on_stream_failure: 'continue', deployments: [dep('nat', 'gpt-n?tokens=6&reset_after=3'),
        dep('ant', 'claude-x?tokens=6')] },
      'cut-failed': { deployments: [dep('nat', 'gpt-n?tokens=6&error_after=2')] },
      small: { deployments: [dep('nat', 'gpt-n?context_window=4')] },
      azure: { deployments: [dep('azn', 'my-dep?tokens=4')] },
      'azure-tool': { deployments: [dep('azn', 'my-dep?tool=apply_patch')] },
      'azure-failover': { deployments: [dep('azn', 'my-dep?status=500'), dep('nat', 'gpt-n?tokens=3')] },
      'azure-to-ant': { deployments: [dep('azn', 'my-dep?status=500'), dep('ant', 'claude-x?tokens=2')] },
      'azure-small': { deployments: [dep('azn', 'my-dep?context_window=4')] },
    },
  }, { env: KEYS });
  client = new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
});

after(async () => {
  await llmux?.stop();
  await Promise.all([nat?.stop(), ant?.stop(), az?.stop()]);
});

// mockllm's per-request ids and times made equal, to compare a relayed stream with a direct one.
const normalize = (text) => text.replace(/(resp|msg|fc|ctc|call)_mock\d+/g, '$1_mockN')
  .replace(/"created_at":\d+/g, '"created_at":0');

// The events of an SSE body as [{event, data}], every `event:` equal to its data's type.
function events(text) {
  return text.split('\n\n').filter((b) => b && !b.startsWith(':')).map((b) => {
    const m = b.match(/^event: (\S+)\ndata: (.*)$/s);
    assert.ok(m, `not an event: ${JSON.stringify(b)}`);
    const data = JSON.parse(m[2]);
    assert.equal(data.type, m[1]);
    return data;
  });
}

// The same request straight to a mock (at `path`, with the upstream model) and through llmux
// (with `headers`): the two answers are equal but for per-request ids and times. Returns llmux's
// response and its text.
async function relayedAsDirect(mock, path, body, model, headers) {
  const direct = await (await post(`http://127.0.0.1:${mock.port}`, path, { ...body, model })).text();
  const res = await post(llmux.base, '/v1/responses', body, headers);
  const text = await res.text();
  assert.equal(res.status, 200);
  assert.equal(normalize(text), normalize(direct));
  return { res, text };
}

// The SDK's responses.stream of `model` (4 tokens): its deltas and final Response.
async function sdkStream(model) {
  const stream = client.responses.stream({ model, input: 'hello' });
  let deltas = '';
  stream.on('response.output_text.delta', (e) => { deltas += e.delta; });
  const final = await stream.finalResponse();
  assert.equal(deltas, mockText(4));
  assert.equal(final.status, 'completed');
  assert.match(final.id, /^resp_mock\d+$/);
  assert.equal(final.output_text, mockText(4));
  assert.equal(final.usage.output_tokens, 4);
}

test('create: the upstream gets the client body byte for byte but the model; the Response comes back as sent', async () => {
  const params = { model: 'native', instructions: 'Be brief.', input: [{ role: 'user', content: 'hi' }],
    store: true, include: ['reasoning.encrypted_content'], metadata: { k: 'v' }, service_tier: 'flex',
    text: { format: { type: 'text' }, verbosity: 'low' }, truncation: 'auto' };
  const { data: r, response } = await client.responses.create(params).withResponse();
  assert.equal(response.headers.get('x-llmux-provider'), 'nat');
  assert.match(r.id, /^resp_mock\d+$/); // the provider's own id, not one llmux made
  assert.equal(r.model, 'gpt-n');
  assert.equal(r.output_text, mockText(4));
  assert.equal(r.usage.output_tokens, 4);
  assert.equal(r.usage.cost, undefined); // unpriced: nothing added
  const last = await nat.last();
  assert.equal(last.url, '/v1/responses');
  assert.equal(last.body, JSON.stringify(params).replace('"native"', '"gpt-n?tokens=4"'));
  assert.equal(last.headers.authorization, `Bearer ${KEYS.LLMUX_IT_NATIVE}`); // the provider's key
  await relayedAsDirect(nat, '/v1/responses', params, 'gpt-n?tokens=4');
});

test('stream: the events come back byte for byte, with the provider\'s sequence numbers', async () => {
  const body = { model: 'native', input: 'hello', stream: true };
  const { res, text } = await relayedAsDirect(nat, '/v1/responses', body, 'gpt-n?tokens=4');
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const evs = events(text);
  assert.deepEqual(evs.map((e) => e.sequence_number), evs.map((_, i) => i));
  assert.equal(JSON.parse((await nat.last()).body).stream, true);
  assert.equal((await nat.last()).body, JSON.stringify(body).replace('"native"', '"gpt-n?tokens=4"'));
  await sdkStream('native');
});

test('a Codex-shaped request with a custom tool (apply_patch) passes natively', async () => {
  const body = {
    model: 'native-tool',
    instructions: 'You are Codex, based on GPT-5. You are running as a coding agent in the Codex CLI.',
    input: [
      { type: 'message', role: 'developer', content: [{ type: 'input_text', text: '<permissions instructions>' }] },
      { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'fix the typo' }] },
      { type: 'reasoning', id: 'rs_1', summary: [], encrypted_content: 'gAAAAB-opaque' },
      { type: 'custom_tool_call', id: 'ctc_0', call_id: 'call_0', name: 'apply_patch', input: '*** Begin Patch\n*** End Patch' },
      { type: 'custom_tool_call_output', call_id: 'call_0', output: 'Done!' },
      { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'again' }] },
    ],
    tools: [APPLY_PATCH, { type: 'web_search' }, { type: 'function', name: 'shell', strict: false,
      parameters: { type: 'object', properties: { command: { type: 'array', items: { type: 'string' } } } } }],
    tool_choice: 'auto', parallel_tool_calls: false, reasoning: { effort: 'medium', summary: 'auto' },
    store: false, stream: true, include: ['reasoning.encrypted_content'],
    prompt_cache_key: '0199a213-81c0-7800-8aa1-bbab2a035a53',
  };
  const res = await post(llmux.base, '/v1/responses', body,
    { authorization: 'Bearer sk-codex', originator: 'codex_cli_rs', 'openai-beta': 'responses=experimental' });
  assert.equal(res.status, 200, await res.clone().text());
  const evs = events(await res.text());
  const types = evs.map((e) => e.type);
  assert.ok(types.includes('response.custom_tool_call_input.delta'), types.join());
  assert.deepEqual(types.slice(-3), ['response.custom_tool_call_input.done', 'response.output_item.done',
    'response.completed']);
  const item = evs.at(-1).response.output[0];
  assert.equal(item.type, 'custom_tool_call');
  assert.equal(item.name, 'apply_patch');
  assert.deepEqual(JSON.parse(item.input), TOOL_ARGS);
  evs.forEach((e, i) => assert.equal(e.sequence_number, i));
  const last = await nat.last();
  assert.equal(last.body, JSON.stringify(body).replace('"native-tool"', '"gpt-n?tool=apply_patch"'));
  assert.equal(last.headers.authorization, `Bearer ${KEYS.LLMUX_IT_NATIVE}`);
  assert.equal(last.headers['openai-beta'], 'responses=experimental', 'Codex\'s OpenAI-Beta is forwarded');
  assert.equal(last.headers.originator, undefined, 'only the headers the passthrough names');

  // the SDK reads the same custom tool call
  const final = await client.responses.stream({ ...body, stream: undefined }).finalResponse();
  assert.equal(final.output[0].type, 'custom_tool_call');
  assert.equal(final.output[0].input, JSON.stringify(TOOL_ARGS));
});

test('a custom tool skips the plan\'s translated deployments; with none native it is a 400 naming the type', async () => {
  const before = (await ant.stats()).requests;
  const { data: r, response } = await client.responses.create({ model: 'mixed', input: 'patch it',
    tools: [APPLY_PATCH] }).withResponse();
  assert.equal(response.headers.get('x-llmux-provider'), 'nat');
  assert.equal(r.output[0].type, 'custom_tool_call');
  assert.equal((await ant.stats()).requests, before); // never asked: it cannot carry the tool
  // the same plan without the custom tool: the translated deployment first serves it
  const plain = await client.responses.create({ model: 'mixed', input: 'hi' });
  assert.equal(plain.output_text, mockText(2));
  assert.equal((await ant.stats()).requests, before + 1);

  await assert.rejects(client.responses.create({ model: 'claude', input: 'patch it', tools: [APPLY_PATCH] }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
    assert.match(e.message, /tools of type "custom"/);
    return true;
  });
});

test('previous_response_id passes when every deployment is native, else the stateless 400', async () => {
  const r = await client.responses.create({ model: 'native', input: 'and then?', previous_response_id: 'resp_abc',
    store: true });
  assert.equal(r.output_text, mockText(4));
  assert.equal(JSON.parse((await nat.last()).body).previous_response_id, 'resp_abc');
  await assert.rejects(client.responses.create({ model: 'mixed', input: 'and then?', previous_response_id: 'resp_abc' }),
    (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
      assert.match(e.message, /previous_response_id: llmux keeps no responses/);
      return true;
    });
});

test('the cost goes into the usage of the body and of response.completed, nothing else changes', async () => {
  const want = (u) => (u.input_tokens * 2 + u.output_tokens * 8) / 1e6;
  const r = await client.responses.create({ model: 'priced', input: 'hello' });
  assert.equal(Math.round(r.usage.cost * 1e12), Math.round(want(r.usage) * 1e12));
  const body = { model: 'priced', input: 'hello', stream: true };
  const direct = await (await post(`http://127.0.0.1:${nat.port}`, '/v1/responses',
    { ...body, model: 'gpt-n?tokens=5' })).text();
  const relayed = await (await post(llmux.base, '/v1/responses', body)).text();
  const evs = events(relayed);
  const u = evs.at(-1).response.usage;
  assert.equal(Math.round(u.cost * 1e12), Math.round(want(u) * 1e12));
  assert.equal(u.cost_details.failed_attempts_cost, 0);
  // every event but the last is the provider's byte for byte; the last only gains the cost
  const cut = (t) => normalize(t).split('\n\n');
  assert.deepEqual(cut(relayed).slice(0, -2), cut(direct).slice(0, -2));
  const stripped = JSON.parse(JSON.stringify(evs.at(-1)));
  delete stripped.response.usage.cost;
  delete stripped.response.usage.cost_details;
  assert.deepEqual(JSON.parse(normalize(JSON.stringify(stripped))),
    JSON.parse(normalize(cut(direct).at(-2).split('data: ')[1])));
});

test('failover from a native deployment answering 500 to an anthropic one, unseen', async () => {
  const { data: r, response } = await client.responses.create({ model: 'failover', input: 'hi' }).withResponse();
  assert.equal(r.output_text, mockText(3));
  assert.equal(response.headers.get('x-llmux-attempts'), '2');
  assert.equal(response.headers.get('x-llmux-provider'), 'ant');
  const stream = client.responses.stream({ model: 'failover', input: 'hi' });
  const types = [];
  stream.on('event', (e) => types.push(e.type));
  const final = await stream.finalResponse();
  assert.equal(final.status, 'completed');
  assert.equal(final.output_text, mockText(3));
  assert.equal(types.filter((t) => t === 'response.created').length, 1);
  assert.equal(types.at(-1), 'response.completed');
});

test('a native stream that breaks after commit ends with response.failed, never continued', async () => {
  for (const [model, reason] of [['cut', /reset|ended/], ['cut-failed', /scripted stream error/]]) {
    const id = rid('native-cut');
    const antBefore = (await ant.stats()).requests;
    const res = await post(llmux.base, '/v1/responses', { model, input: 'hi', stream: true }, { 'x-request-id': id });
    assert.equal(res.status, 200);
    const evs = events(await res.text());
    const types = evs.map((e) => e.type);
    assert.ok(types.includes('response.output_text.delta'), types.join());
    assert.ok(!types.includes('response.completed'), types.join());
    const last = evs.at(-1);
    assert.equal(last.type, 'response.failed', model);
    assert.equal(last.response.status, 'failed');
    assert.equal(last.response.id, evs[0].response.id); // the provider's response, ended
    assert.match(last.response.error.message, reason);
    evs.forEach((e, i) => assert.equal(e.sequence_number, i, `${model}: ${e.type}`));
    assert.equal((await ant.stats()).requests, antBefore, `${model}: no continuation`);
    const log = await llmux.logFor(id);
    assert.equal(log.outcome, 'truncated');
    assert.equal(log.endpoint, 'responses');
  }
  const final = await client.responses.stream({ model: 'cut', input: 'hi' }).finalResponse();
  assert.equal(final.status, 'failed');
});

test('the generation record says how a native answer ended: completed, or why incomplete', async () => {
  for (const stream of [false, true]) {
    for (const [extra, finish] of [[{}, 'completed'], [{ max_output_tokens: 2 }, 'max_output_tokens']]) {
      const id = rid('native-finish');
      const res = await post(llmux.base, '/v1/responses', { model: 'native', input: 'hi', stream, ...extra }, { 'x-request-id': id });
      assert.equal(res.status, 200);
      await res.text();
      await llmux.logFor(id); // the request has ended
      const g = (await (await fetch(`${llmux.base}/v1/generation?id=${id}`)).json()).data;
      assert.equal(g.finish_reason, finish, `stream ${stream}`);
    }
  }
});

test('a provider\'s refusal comes back in its own shape (OpenAI\'s, Azure\'s too)', async () => {
  for (const model of ['small', 'azure-small']) {
    await assert.rejects(client.responses.create({ model, input: 'x'.repeat(64) }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, `${model}: ${e.constructor.name}`);
      assert.equal(e.code, 'context_length_exceeded');
      assert.equal(e.param, 'input');
      return true;
    });
  }
  await azureLast();
});

// What the azure deployment received: at Azure's v1 Responses path, with the api-key header.
async function azureLast() {
  const last = await az.last();
  assert.equal(last.url, '/openai/v1/responses'); // no deployment in the path, no api-version
  assert.equal(last.headers['api-key'], KEYS.LLMUX_IT_AZURE);
  assert.equal(last.headers.authorization, undefined, 'never an Authorization header to Azure');
  return last;
}

test('azure native: the client body byte for byte but the model (the deployment name) at /openai/v1/responses', async () => {
  const params = { model: 'azure', instructions: 'Be brief.', input: [{ role: 'user', content: 'hi' }],
    store: true, include: ['reasoning.encrypted_content'], metadata: { k: 'v' }, truncation: 'auto' };
  const natBefore = (await nat.stats()).requests;
  const { data: r, response } = await client.responses.create(params).withResponse();
  assert.equal(response.headers.get('x-llmux-provider'), 'azn');
  assert.match(r.id, /^resp_mock\d+$/); // the provider's own Response, not a translation
  assert.equal(r.output_text, mockText(4));
  assert.equal(r.usage.output_tokens, 4);
  assert.equal((await azureLast()).body, JSON.stringify(params).replace('"azure"', '"my-dep?tokens=4"'));
  assert.equal((await nat.stats()).requests, natBefore);
  await relayedAsDirect(az, '/openai/v1/responses', params, 'my-dep?tokens=4');
});

test('azure native: a stream comes back byte for byte; the SDK\'s stream reads it', async () => {
  const body = { model: 'azure', input: 'hello', stream: true };
  const { res, text } = await relayedAsDirect(az, '/openai/v1/responses', body, 'my-dep?tokens=4',
    { authorization: 'Bearer sk-client' }); // the client's own key stays with llmux
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  events(text).forEach((e, i) => assert.equal(e.sequence_number, i));
  assert.equal((await azureLast()).body, JSON.stringify(body).replace('"azure"', '"my-dep?tokens=4"'));
  await sdkStream('azure');
  await azureLast();

  // what only a passthrough carries: a custom tool, answered as a custom_tool_call
  const tool = await client.responses.create({ model: 'azure-tool', input: 'patch it', tools: [APPLY_PATCH] });
  assert.equal(tool.output[0].type, 'custom_tool_call');
  assert.equal(tool.output[0].input, JSON.stringify(TOOL_ARGS));
  assert.deepEqual(JSON.parse((await azureLast()).body).tools, [APPLY_PATCH]);
});

test('azure native: failover from a deployment answering 500 to an openai native one and to a translated one', async () => {
  for (const [model, provider, tokens] of [['azure-failover', 'nat', 3], ['azure-to-ant', 'ant', 2]]) {
    const azBefore = (await az.stats()).requests;
    const { data: r, response } = await client.responses.create({ model, input: 'hi' }).withResponse();
    assert.equal(r.output_text, mockText(tokens));
    assert.equal(response.headers.get('x-llmux-attempts'), '2');
    assert.equal(response.headers.get('x-llmux-provider'), provider);
    assert.equal((await az.stats()).requests, azBefore + 1); // asked first, answered 500
    await azureLast();
    const stream = client.responses.stream({ model, input: 'hi' });
    const types = [];
    stream.on('event', (e) => types.push(e.type));
    const final = await stream.finalResponse();
    assert.equal(final.status, 'completed');
    assert.equal(final.output_text, mockText(tokens));
    assert.equal(types.filter((t) => t === 'response.created').length, 1);
  }
});
