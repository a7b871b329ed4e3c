// Failover before commit: every way the first deployment can fail sends the request to the next
// one, invisibly to the client; the access log says what happened. Plus the cases that must NOT
// fail over (an upstream 400) and the ends when nothing works (502, 504).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startLlmux, provider, post, chat, readSse, chunksText, mockText, expectError,
  closedPort, rid,
} from './lib.mjs';

const CONNECT_MS = 1000;
const RETRYABLE = [408, 409, 500, 502, 504, 401, 403, 404];
let bad, good, llmux;

// An alias whose first deployment is `first` (on provider `prov`) and second is the healthy mock.
function pair(prov, first) {
  return { deployments: [{ provider: prov, model: first }, { provider: 'good', model: 'good-model?tokens=4' }] };
}

before(async () => {
  bad = await startMock();
  good = await startMock();
  const dead = await closedPort();
  llmux = await startLlmux({
    timeouts_ms: { connect: CONNECT_MS, first_byte: 400, idle: 2000, total: 15000 },
    providers: {
      bad: provider(bad.baseUrl),
      good: provider(good.baseUrl),
      refused: provider(`http://127.0.0.1:${dead}/v1`),
      nxdomain: provider('http://no-such-host.invalid:8080/v1'),
    },
    models: {
      refused: pair('refused', 'm'),
      nxdomain: pair('nxdomain', 'm'),
      s503: pair('bad', 'm?status=503'),
      s429: pair('bad', 'm?status=429&retry_after=1'),
      'reset-head': pair('bad', 'm?reset_after=0'),
      'stall-before-content': pair('bad', 'm?stall_after=0'),
      'ttft': pair('bad', 'm?ttft=3000'),
      'delay': pair('bad', 'm?delay=3000'),
      'malformed-json': pair('bad', 'm?malformed=json'),
      'malformed-sse': pair('bad', 'm?malformed=sse'),
      s400: pair('bad', 'm?status=400'),
      ...Object.fromEntries(RETRYABLE.map((st) => [`st${st}`, pair('bad', `m?status=${st}`)])),
      allfail: { deployments: [{ provider: 'bad', model: 'm?status=503' }, { provider: 'refused', model: 'm' }] },
      deadline: {
        deployments: [{ provider: 'bad', model: 'm?delay=5000' }],
        timeouts_ms: { first_byte: 10000, total: 500 },
      },
      'slow-global': {
        deployments: [{ provider: 'bad', model: 'm?delay=900&tokens=2' }, { provider: 'good', model: 'good-model?tokens=4' }],
        timeouts_ms: { first_byte: 5000 },
      },
      'slow-override': {
        deployments: [{ provider: 'bad', model: 'm?delay=900&tokens=2' }, { provider: 'good', model: 'good-model?tokens=4' }],
        timeouts_ms: { first_byte: 200 },
      },
    },
  });
});

after(async () => {
  await llmux?.stop();
  await bad?.stop();
  await good?.stop();
});

// Sends one request for `model` and asserts it was served by the second deployment after one
// failed attempt. Returns the access-log line.
async function expectFailover(model, { stream = false, model_in_first = true } = {}) {
  const id = rid('fo');
  const res = await post(llmux.base, '/v1/chat/completions', chat(model, { stream }), { 'x-request-id': id });
  if (stream) {
    if (res.status !== 200) assert.fail(`status ${res.status}: ${await res.text()}`);
    const datas = await readSse(res);
    assert.equal(chunksText(datas), mockText(4));
    assert.equal(datas.at(-1), '[DONE]');
  } else {
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.equal(JSON.parse(text).choices[0].message.content, mockText(4));
  }
  assert.equal(res.headers.get('x-llmux-provider'), 'good');
  assert.equal(res.headers.get('x-llmux-model'), 'good-model?tokens=4');
  assert.equal(res.headers.get('x-llmux-attempts'), '2');
  const line = await llmux.logFor(id);
  assert.equal(line.status, 200);
  assert.equal(line.outcome, 'ok');
  assert.equal(line.provider, 'good');
  assert.equal(line.attempts.length, 2, JSON.stringify(line));
  const [failed, ok] = line.attempts;
  assert.equal(typeof failed.error, 'string', `failed attempt has no reason: ${JSON.stringify(failed)}`);
  assert.ok(failed.error.length > 0);
  assert.equal(ok.provider, 'good');
  assert.ok(!ok.error, `successful attempt has an error: ${JSON.stringify(ok)}`);
  if (model_in_first) assert.notEqual(failed.provider, 'good');
  return line;
}

test('connection refused', async () => {
  const line = await expectFailover('refused');
  assert.equal(line.attempts[0].provider, 'refused');
  assert.equal(line.attempts[0].status, 0);
});

test('unresolvable host name, within the connect timeout', async () => {
  const line = await expectFailover('nxdomain');
  assert.equal(line.attempts[0].provider, 'nxdomain');
  // DNS is part of connecting: it may not take longer than the connect timeout (with slack).
  assert.ok(line.attempts[0].ms <= CONNECT_MS + 1500, `DNS failure took ${line.attempts[0].ms} ms`);
});

test('upstream 503 and 429', async () => {
  const before = (await bad.stats()).requests;
  let line = await expectFailover('s503');
  assert.equal(line.attempts[0].status, 503);
  line = await expectFailover('s429', { stream: true });
  assert.equal(line.attempts[0].status, 429);
  assert.equal((await bad.stats()).requests, before + 2);
});

test('every retryable upstream status fails over (408 409 500 502 504 401 403 404)', async () => {
  for (const status of RETRYABLE) {
    const line = await expectFailover(`st${status}`);
    assert.equal(line.attempts[0].status, status);
  }
});

test('a one-deployment plan that fails answers 502, not the provider status', async () => {
  for (const status of [404, 500]) {
    const id = rid('st');
    const res = await post(llmux.base, '/v1/chat/completions', chat(`bad/m?status=${status}`), { 'x-request-id': id });
    const err = await expectError(res, 502, 'all_deployments_failed');
    assert.match(err.message, new RegExp(String(status)));
    assert.equal(res.headers.get('x-should-retry'), 'false');
    const line = await llmux.logFor(id);
    assert.equal(line.attempts[0].status, status);
  }
});

test('reset before the response head', async () => {
  const line = await expectFailover('reset-head');
  assert.equal(line.attempts[0].provider, 'bad');
});

test('stream reset before its head', async () => {
  const line = await expectFailover('reset-head', { stream: true });
  assert.equal(line.attempts[0].provider, 'bad');
});

test('stream that sends its preamble then nothing: replaced, the preamble is not relayed twice', async () => {
  // mockllm sends the head and the role-only first chunk, then stalls before any content:
  // llmux must hold the preamble back (no commit) and fail over on the first-byte timeout.
  const id = rid('fo');
  const res = await post(llmux.base, '/v1/chat/completions', chat('stall-before-content', { stream: true }),
    { 'x-request-id': id });
  assert.equal(res.status, 200);
  const datas = await readSse(res);
  assert.equal(chunksText(datas), mockText(4));
  const roles = datas.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d))
    .filter((c) => c.choices?.[0]?.delta?.role);
  assert.equal(roles.length, 1, 'one role chunk, from the deployment that served');
  assert.equal(res.headers.get('x-llmux-provider'), 'good');
  const line = await llmux.logFor(id);
  assert.equal(line.attempts.length, 2);
  assert.match(line.attempts[0].error, /first.byte|timeout/i);
});

test('first-byte timeout: tokens too slow to start', async () => {
  const abortedBefore = (await bad.stats()).aborted;
  const line = await expectFailover('ttft', { stream: true });
  assert.match(line.attempts[0].error, /first.byte|timeout/i);
  // The slow attempt is cancelled (its connection closed), not left generating.
  await bad.waitStats((s) => s.aborted > abortedBefore, 'the slow attempt to be cancelled');
});

test('first-byte timeout: response head too slow', async () => {
  const line = await expectFailover('delay');
  assert.match(line.attempts[0].error, /first.byte|timeout/i);
});

test('malformed upstream JSON (non-stream) and malformed SSE (stream)', async () => {
  await expectFailover('malformed-json');
  await expectFailover('malformed-sse', { stream: true });
});

test('upstream 400 is passed through and not retried', async () => {
  const goodBefore = (await good.stats()).requests;
  const id = rid('fo');
  const res = await post(llmux.base, '/v1/chat/completions', chat('s400'), { 'x-request-id': id });
  const text = await res.text();
  assert.equal(res.status, 400, text);
  const body = JSON.parse(text);
  assert.ok(body.error && typeof body.error.message === 'string', text);
  // The provider's own error body, as it sent it.
  const direct = await fetch(bad.baseUrl + '/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify(chat('m?status=400')),
  });
  assert.equal(direct.status, 400);
  assert.deepEqual(body, await direct.json());
  assert.equal((await good.stats()).requests, goodBefore, 'the second deployment was tried after a 400');
  const line = await llmux.logFor(id);
  assert.equal(line.status, 400);
  assert.equal(line.attempts.length, 1);
});

test('all deployments failed: 502 listing every attempt', async () => {
  const id = rid('fo');
  const res = await post(llmux.base, '/v1/chat/completions', chat('allfail'), { 'x-request-id': id });
  assert.equal(res.headers.get('x-should-retry'), 'false');
  assert.equal(res.headers.get('x-request-id'), id);
  const err = await expectError(res, 502, 'all_deployments_failed');
  assert.match(err.message, /bad/);
  assert.match(err.message, /503/);
  assert.match(err.message, /refused/);
  const line = await llmux.logFor(id);
  assert.equal(line.status, 502);
  assert.equal(line.outcome, 'error');
  assert.equal(line.attempts.length, 2);
  assert.ok(line.attempts.every((a) => a.error), JSON.stringify(line.attempts));

  // Streamed requests get the same 502 before anything was sent.
  const res2 = await post(llmux.base, '/v1/chat/completions', chat('allfail', { stream: true }));
  await expectError(res2, 502, 'all_deployments_failed');
});

test('total deadline: 504', async () => {
  const abortedBefore = (await bad.stats()).aborted;
  const id = rid('fo');
  const t0 = Date.now();
  const res = await post(llmux.base, '/v1/chat/completions', chat('deadline'), { 'x-request-id': id });
  await expectError(res, 504);
  assert.ok(Date.now() - t0 < 4500, 'the 500 ms deadline did not cut the 5 s upstream delay short');
  const line = await llmux.logFor(id);
  assert.equal(line.status, 504);
  // The upstream attempt is cancelled, not left running.
  await bad.waitStats((s) => s.aborted > abortedBefore, 'the timed-out upstream attempt to be cancelled');
});

test('per-model timeouts_ms override the global ones', async () => {
  // Same slow deployment: served by it under the 5 s first-byte timeout...
  const res = await post(llmux.base, '/v1/chat/completions', chat('slow-global'));
  const body = await res.json();
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-llmux-provider'), 'bad');
  assert.equal(res.headers.get('x-llmux-attempts'), '1');
  assert.equal(body.choices[0].message.content, mockText(2));
  // ...and replaced under the model's 200 ms one.
  const line = await expectFailover('slow-override');
  assert.match(line.attempts[0].error, /first.byte|timeout/i);
});
