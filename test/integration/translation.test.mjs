// Translations that used to be dropped without a word (issue 9, item 11), end to end with the
// official openai client through llmux to mockllm:
// - response_format to an anthropic-kind deployment: a forced tool whose input comes back as
//   the message content (JSON matching the schema), stream and not; what cannot be represented
//   is a 400.
// - Gemini's thoughtSignature on a functionCall part: out as the tool call's
//   extra_content.google.thought_signature, back as the part's thoughtSignature on the next turn
//   (mockllm's thought_signature=1 refuses a turn without it, as Gemini 3 does).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startLlmux, post, chat, mockText } from './lib.mjs';

const { default: OpenAI } = await import(
  new URL('../node/node_modules/openai/index.mjs', import.meta.url).href);

const KEYS = { LLMUX_IT_ANTHROPIC: 'sk-ant-it-secret', LLMUX_IT_GEMINI: 'gm-it-secret' };
// mockllm's tool input is {"city":"Paris","unit":"celsius","days":3}: a schema it satisfies
const SCHEMA = {
  type: 'object',
  properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
    days: { type: 'integer' } },
  required: ['city', 'unit', 'days'],
  additionalProperties: false,
};
const FORECAST = { type: 'json_schema', json_schema: { name: 'forecast', strict: true, schema: SCHEMA } };
const TOOLS = [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: {
  type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
let ant, gem, llmux, client;

before(async () => {
  ant = await startMock();
  gem = await startMock();
  llmux = await startLlmux({
    timeouts_ms: { connect: 1000, first_byte: 3000, idle: 1000, total: 15000 },
    providers: {
      ant: { kind: 'anthropic', base_url: ant.baseUrl, api_key_env: 'LLMUX_IT_ANTHROPIC' },
      gem: { kind: 'gemini', base_url: `http://127.0.0.1:${gem.port}/v1beta`, api_key_env: 'LLMUX_IT_GEMINI' },
    },
    models: {
      claude: { deployments: [{ provider: 'ant', model: 'claude-x' }] },
      'gemini3-tool': { deployments: [{ provider: 'gem', model: 'gemini-3?tool=get_weather&thought_signature=1' }] },
      gemini3: { deployments: [{ provider: 'gem', model: 'gemini-3?tokens=3&thought_signature=1' }] },
    },
  }, { env: KEYS });
  client = new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
});

after(async () => {
  await llmux?.stop();
  for (const m of [ant, gem]) await m?.stop();
});

const weather = [{ role: 'user', content: 'Weather in Paris for 3 days?' }];

// Reads a chat stream: content text, tool-call deltas put together, the last finish reason.
async function collect(stream) {
  let text = '';
  let finish = null;
  const calls = {};
  for await (const c of stream) {
    const ch = c.choices[0];
    if (ch?.delta?.content) text += ch.delta.content;
    for (const tc of ch?.delta?.tool_calls ?? []) {
      calls[tc.index] ??= { id: '', name: '', args: '', extra: undefined };
      if (tc.id) calls[tc.index].id += tc.id;
      if (tc.function?.name) calls[tc.index].name += tc.function.name;
      if (tc.function?.arguments) calls[tc.index].args += tc.function.arguments;
      if (tc.extra_content) calls[tc.index].extra = tc.extra_content;
    }
    if (ch?.finish_reason) finish = ch.finish_reason;
  }
  return { text, finish, calls };
}

test('anthropic: parse() with a json_schema response_format gets JSON content matching it', async () => {
  const r = await client.chat.completions.parse({ model: 'claude', messages: weather, response_format: FORECAST });
  const m = r.choices[0].message;
  assert.deepEqual(m.parsed, { city: 'Paris', unit: 'celsius', days: 3 });
  assert.deepEqual(JSON.parse(m.content), m.parsed);
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(!m.tool_calls?.length, 'the forced tool is not a tool call');
  const sent = JSON.parse((await ant.last()).body);
  assert.equal(sent.response_format, undefined);
  assert.deepEqual(sent.tools, [{ name: 'forecast', description: "Give the answer as this tool's input.",
    input_schema: SCHEMA }]);
  assert.deepEqual(sent.tool_choice, { type: 'tool', name: 'forecast' });
});

test('anthropic: the same streamed: content deltas, finish "stop", no tool calls', async () => {
  const s = await collect(await client.chat.completions.create({
    model: 'claude', messages: weather, response_format: FORECAST, stream: true }));
  assert.deepEqual(JSON.parse(s.text), { city: 'Paris', unit: 'celsius', days: 3 });
  assert.equal(s.finish, 'stop');
  assert.deepEqual(s.calls, {});
  // and through the SDK's stream helper, which puts the message together (it fills `parsed`
  // only for its zod formats, so the content is parsed here)
  const runner = client.chat.completions.stream({ model: 'claude', messages: weather, response_format: FORECAST });
  const final = await runner.finalChatCompletion();
  assert.deepEqual(JSON.parse(final.choices[0].message.content), { city: 'Paris', unit: 'celsius', days: 3 });
  assert.equal(final.choices[0].finish_reason, 'stop');
});

test('anthropic: json_object gets a JSON object; the client\'s own tools stay callable', async () => {
  const r = await client.chat.completions.create({
    model: 'claude', messages: weather, response_format: { type: 'json_object' } });
  assert.equal(typeof JSON.parse(r.choices[0].message.content), 'object');
  assert.equal(r.choices[0].finish_reason, 'stop');
  let sent = JSON.parse((await ant.last()).body);
  assert.deepEqual(sent.tools[0].input_schema, { type: 'object' });
  assert.deepEqual(sent.tool_choice, { type: 'tool', name: 'json_response' });

  // with tools and tool_choice auto: {type:any}; mockllm calls the first tool, the client's
  const t = await client.chat.completions.create({
    model: 'claude', messages: weather, tools: TOOLS, response_format: FORECAST });
  assert.equal(t.choices[0].finish_reason, 'tool_calls');
  assert.equal(t.choices[0].message.tool_calls[0].function.name, 'get_weather');
  sent = JSON.parse((await ant.last()).body);
  assert.deepEqual(sent.tools.map((x) => x.name), ['get_weather', 'forecast']);
  assert.deepEqual(sent.tool_choice, { type: 'any' });
});

test('anthropic: a response_format that cannot be represented is a 400, not prose', async () => {
  for (const extra of [
    { tools: TOOLS, tool_choice: 'required', response_format: FORECAST },
    { response_format: { type: 'json_schema', json_schema: { name: 'list', schema: { type: 'array' } } } },
  ]) {
    const res = await post(llmux.base, '/v1/chat/completions', chat('claude', extra));
    const body = await res.json();
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(body.error.code, 'unsupported_request');
  }
});

// llmux's error message is written by src/exchange.c from the attempt's reason; it names the
// field once the exchange takes the adapter's upstream_request.why.
test('the 400 names response_format', async () => {
  const res = await post(llmux.base, '/v1/chat/completions',
    chat('claude', { tools: TOOLS, tool_choice: 'required', response_format: FORECAST }));
  assert.match((await res.json()).error.message, /response_format/);
});

// The second turn: the assistant message as the client got it, then the tool's result.
const secondTurn = (assistant) => [...weather, assistant,
  { role: 'tool', tool_call_id: assistant.tool_calls[0].id, content: '{"temp":18}' }];

test('gemini: a tool round trip keeps the thought signature (non-stream)', async () => {
  const r = await client.chat.completions.create({ model: 'gemini3-tool', messages: weather, tools: TOOLS });
  const call = r.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, 'get_weather');
  const sig = call.extra_content?.google?.thought_signature;
  assert.match(sig ?? '', /^mocksig\d+$/, JSON.stringify(call));

  const r2 = await client.chat.completions.create({
    model: 'gemini3', messages: secondTurn(r.choices[0].message), tools: TOOLS });
  assert.equal(r2.choices[0].message.content, mockText(3));
  const sent = JSON.parse((await gem.last()).body);
  assert.deepEqual(sent.contents[1], { role: 'model', parts: [
    { functionCall: { name: 'get_weather', args: { city: 'Paris', unit: 'celsius', days: 3 } }, thoughtSignature: sig }] });
});

test('gemini: a tool round trip keeps the thought signature (stream)', async () => {
  const s = await collect(await client.chat.completions.create({
    model: 'gemini3-tool', messages: weather, tools: TOOLS, stream: true }));
  assert.equal(s.finish, 'tool_calls');
  const sig = s.calls[0].extra?.google?.thought_signature;
  assert.match(sig ?? '', /^mocksig\d+$/, JSON.stringify(s.calls));
  const assistant = { role: 'assistant', content: null, tool_calls: [{ id: s.calls[0].id, type: 'function',
    function: { name: s.calls[0].name, arguments: s.calls[0].args }, extra_content: s.calls[0].extra }] };
  const s2 = await collect(await client.chat.completions.create({
    model: 'gemini3', messages: secondTurn(assistant), tools: TOOLS, stream: true }));
  assert.equal(s2.text, mockText(3));
  const sent = JSON.parse((await gem.last()).body);
  assert.equal(sent.contents[1].parts[0].thoughtSignature, sig);

  // without it, Gemini 3 (and mockllm imitating it) refuses the turn: passed to the client
  delete assistant.tool_calls[0].extra_content;
  const res = await post(llmux.base, '/v1/chat/completions',
    { model: 'gemini3', messages: secondTurn(assistant), tools: TOOLS });
  const body = await res.json();
  assert.equal(res.status, 400, JSON.stringify(body));
  assert.match(body.error.message, /thought_signature/);
});
