// Slow starts kept alive: a stream whose first content is slow gets the 200 head and `: ping`
// comment lines before commit; failover stays invisible after pings, and an error once pings
// went out can only go in-band (an honest final chunk, no [DONE]). The official client parses
// such a stream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startLlmux, provider, post, chat, chunks, chunksText, mockText, rid } from './lib.mjs';

const PING_MS = 100;
let slow, bad, llmux;

before(async () => {
  slow = await startMock();
  bad = await startMock();
  llmux = await startLlmux({
    timeouts_ms: { connect: 2000, first_byte: 5000, idle: 5000, total: 20000, ping: PING_MS },
    providers: { slow: provider(slow.baseUrl), bad: provider(bad.baseUrl) },
    models: {
      // fails only after the pings started: 503 after 450 ms, then a slow but healthy one
      late_failover: { deployments: [{ provider: 'bad', model: 'b?delay=450&status=503' },
                                     { provider: 'slow', model: 's?ttft=300&tokens=4' }] },
      late_all_fail: { deployments: [{ provider: 'bad', model: 'b?delay=450&status=503' }] },
      late_refusal: { deployments: [{ provider: 'bad', model: 'b?delay=450&status=400' }] },
    },
  });
});

after(async () => {
  await llmux?.stop();
  await slow?.stop();
  await bad?.stop();
});

async function raw(model) {
  const id = rid('ping');
  const res = await post(llmux.base, '/v1/chat/completions', chat(model, { stream: true }), { 'x-request-id': id });
  return { res, text: await res.text(), id };
}

function datas(text) {
  return text.split('\n\n').filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
}

test('a slow first token gets the head and pings, then the content', async () => {
  const { res, text } = await raw('slow/s?ttft=450&tokens=3');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /text\/event-stream/);
  const pings = text.split('\n\n').filter((b) => b === ': ping').length;
  assert.ok(pings >= 2, `expected pings before the first token, got ${pings}: ${text.slice(0, 300)}`);
  assert.ok(text.indexOf(': ping') < text.indexOf('data: '), 'pings come before any event');
  const d = datas(text);
  assert.equal(chunksText(d), mockText(3));
  assert.equal(d.at(-1), '[DONE]');
});

test('a deployment failing after the pings started is replaced invisibly', async () => {
  const { res, text, id } = await raw('late_failover');
  assert.equal(res.status, 200);
  assert.ok(text.includes(': ping'));
  const d = datas(text);
  assert.equal(chunksText(d), mockText(4));
  assert.equal(d.at(-1), '[DONE]');
  const roles = chunks(d).filter((c) => c.choices?.[0]?.delta?.role);
  assert.equal(roles.length, 1, 'one role chunk only');
  const line = await llmux.logFor(id);
  assert.equal(line.attempts.length, 2);
  assert.equal(line.provider, 'slow');
});

test('all deployments failing after the pings: in-band error, no [DONE]', async () => {
  for (const [model, code] of [['late_all_fail', 502], ['late_refusal', 400]]) {
    const { res, text } = await raw(model);
    assert.equal(res.status, 200, 'the head went out with the first ping');
    const d = datas(text);
    assert.ok(!d.includes('[DONE]'));
    const last = JSON.parse(d.at(-1));
    assert.equal(last.choices[0].finish_reason, 'error');
    assert.equal(last.error.code, code, JSON.stringify(last));
    assert.equal(typeof last.error.message, 'string');
  }
});

test('the official openai client streams through pings', async () => {
  const { default: OpenAI } = await import(new URL('../node/node_modules/openai/index.mjs', import.meta.url));
  const client = new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: 'unused', maxRetries: 0 });
  const stream = await client.chat.completions.create({
    model: 'slow/s?ttft=350&tokens=5', stream: true, messages: [{ role: 'user', content: 'hi' }],
  });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, mockText(5));
});
