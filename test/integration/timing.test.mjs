// Server-Timing on every answer, for latency harnesses: overhead (llmux's own time), ttfb
// (request received -> the serving attempt's first byte) and, for whole answers, upstream
// (request written -> last byte), in ms to the microsecond.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startLlmux, provider, post, chat, readSse } from './lib.mjs';

let mock, llmux;
before(async () => {
  mock = await startMock();
  llmux = await startLlmux({
    providers: { m: provider(mock.baseUrl) },
    models: { slow: { deployments: [{ provider: 'm', model: 'x?delay=60&tokens=3' }] } },
  });
});
after(async () => {
  await llmux?.stop();
  await mock?.stop();
});

function parse(h) {
  assert.ok(h, 'no server-timing header');
  return Object.fromEntries(h.split(',').map((m) => {
    const [name, dur] = m.trim().split(';dur=');
    assert.match(dur, /^\d+\.\d{3}$/, `${m}: ms with microseconds`);
    return [name, Number(dur)];
  }));
}

test('a whole answer: overhead, ttfb and upstream', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('slow'));
  assert.equal(res.status, 200);
  await res.json();
  const t = parse(res.headers.get('server-timing'));
  assert.deepEqual(Object.keys(t).sort(), ['overhead', 'ttfb', 'upstream']);
  assert.ok(t.ttfb >= 55, `ttfb ${t.ttfb}: the mock waits 60 ms (whole-ms timers) before its head`);
  assert.ok(t.upstream >= 55, `upstream ${t.upstream}`);
  assert.ok(t.overhead > 0 && t.overhead < t.ttfb, `overhead ${t.overhead}`);
});

test('a stream head: what is known at commit (ttfb, overhead so far)', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('slow', { stream: true }));
  assert.equal(res.status, 200);
  const t = parse(res.headers.get('server-timing'));
  await readSse(res);
  assert.deepEqual(Object.keys(t).sort(), ['overhead', 'ttfb']);
  assert.ok(t.ttfb >= 55, `ttfb ${t.ttfb}`);
});

test('an error answer carries overhead', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('m/x?status=400'));
  assert.equal(res.status, 400);
  await res.text();
  assert.ok('overhead' in parse(res.headers.get('server-timing')));
});
