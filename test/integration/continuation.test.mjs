// Mid-stream continuation (on_stream_failure "continue"): a committed stream that stalls or is
// reset goes on at the next deployment, which gets the delivered text as an assistant prefix
// (or an explicit continue instruction), and the client sees one coherent completion.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startLlmux, provider, post, chat, readSse, chunks, chunksText, mockText, rid,
} from './lib.mjs';

const { default: OpenAI } = await import(
  new URL('../node/node_modules/openai/index.mjs', import.meta.url).href);

const ARGS = { city: 'Paris', unit: 'celsius', days: 3 };
let first, second, llmux, client;

before(async () => {
  first = await startMock();
  second = await startMock();
  const cont = (a, b) => ({ on_stream_failure: 'continue', deployments: [
    { provider: 'first', model: a }, { provider: 'second', model: b }] });
  llmux = await startLlmux({
    timeouts_ms: { connect: 1000, first_byte: 3000, idle: 300, total: 15000 },
    providers: { first: provider(first.baseUrl), second: provider(second.baseUrl) },
    models: {
      stall: cont('m?tokens=12&stall_after=5', 'm?tokens=12'),
      reset: cont('m?tokens=12&reset_after=4', 'm?tokens=12'),
      tool: cont('m?tool=get_weather&stall_after=3', 'm?tool=get_weather'),
      'no-spare': { on_stream_failure: 'continue', deployments: [{ provider: 'first', model: 'm?tokens=12&stall_after=5' }] },
      'error-mode': { deployments: [
        { provider: 'first', model: 'm?tokens=12&stall_after=5' }, { provider: 'second', model: 'm?tokens=12' }] },
    },
  });
  client = new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 20000 });
});

after(async () => {
  await llmux?.stop();
  await first?.stop();
  await second?.stop();
});

test('a stream that stalls after 5 events: the openai client gets one coherent completion', async () => {
  const stream = await client.chat.completions.create({
    model: 'stall', messages: [{ role: 'user', content: 'count' }], stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  const ids = new Set();
  const usages = [];
  let finish = null;
  let continued = 0;
  for await (const c of stream) {
    ids.add(c.id);
    if (c.usage) usages.push(c.usage);
    if (c.llmux?.continued) continued++;
    const ch = c.choices[0];
    if (ch?.delta?.content) text += ch.delta.content;
    if (ch?.finish_reason) finish = ch.finish_reason;
  }
  assert.equal(text, mockText(12), 'the text before the stall plus the continuation, nothing twice');
  assert.equal(finish, 'stop');
  assert.equal(ids.size, 1, 'one response id for the whole stream');
  assert.ok(continued > 0, 'continued chunks say so');
  assert.equal(usages.length, 1, 'one usage chunk');
  const u = usages[0];
  assert.equal(u.completion_tokens, 12, 'both attempts\' output tokens');
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
  // what the second deployment was asked: the delivered text as an assistant message, then the
  // instruction to continue (the openai kind has no prefill)
  const sent = JSON.parse((await second.last()).body);
  const msgs = sent.messages;
  assert.deepEqual(msgs[0], { role: 'user', content: 'count' });
  assert.deepEqual(msgs[1], { role: 'assistant', content: mockText(5) });
  assert.equal(msgs[2].role, 'user');
  assert.match(msgs[2].content, /^Continue your previous message exactly where it stopped/);
});

test('a reset mid-stream is continued too, and the log tells the story', async () => {
  const id = rid('cont');
  const res = await post(llmux.base, '/v1/chat/completions', chat('reset', { stream: true }), { 'x-request-id': id });
  assert.equal(res.status, 200);
  const datas = await readSse(res);
  assert.equal(chunksText(datas), mockText(12));
  assert.equal(datas.at(-1), '[DONE]');
  assert.equal(datas.filter((d) => d === '[DONE]').length, 1);
  const line = await llmux.logFor(id);
  assert.equal(line.outcome, 'ok');
  assert.equal(line.continued, 1);
  assert.equal(line.attempts.length, 2);
  assert.equal(line.attempts[0].served, undefined);
  assert.ok(line.attempts[0].error, 'the broken attempt says why');
  assert.equal(line.attempts[1].continuation, true);
  assert.equal(line.attempts[1].served, true);
  assert.equal(line.provider, 'second');
});

test('a tool call broken mid-arguments is restarted whole, never continued mid-JSON', async () => {
  const id = rid('tool');
  const stream = await client.chat.completions.create({
    model: 'tool', messages: [{ role: 'user', content: 'weather?' }], stream: true,
  }, { headers: { 'x-request-id': id } });
  const calls = {};
  let finish = null;
  for await (const c of stream) {
    for (const tc of c.choices[0]?.delta?.tool_calls ?? []) {
      calls[tc.index] ??= { id: '', name: '', args: '' };
      if (tc.id) calls[tc.index].id += tc.id;
      if (tc.function?.name) calls[tc.index].name += tc.function.name;
      if (tc.function?.arguments) calls[tc.index].args += tc.function.arguments;
    }
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.deepEqual(Object.keys(calls), ['0'], 'exactly one tool call');
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(JSON.parse(calls[0].args), ARGS);
  assert.equal(finish, 'tool_calls');
  const line = await llmux.logFor(id);
  assert.equal(line.continued, 1, 'the first attempt really broke mid-call');
  assert.match(line.attempts[0].error, /idle timeout/);
});

test('nothing to continue on: the honest error end', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('no-spare', { stream: true }));
  const datas = await readSse(res);
  assert.notEqual(datas.at(-1), '[DONE]');
  const last = chunks(datas).at(-1);
  assert.equal(last.choices[0].finish_reason, 'error');
  assert.equal(chunksText(datas), mockText(5));
});

test('on_stream_failure "error" (the default) does not continue', async () => {
  const before = (await second.stats()).requests;
  const res = await post(llmux.base, '/v1/chat/completions', chat('error-mode', { stream: true }));
  const datas = await readSse(res);
  assert.equal(chunks(datas).at(-1).choices[0].finish_reason, 'error');
  assert.equal((await second.stats()).requests, before);
});
