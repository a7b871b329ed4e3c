// Shared state through a real redis-server: one key's rate limit and budget, one deployment's
// rpm and a provider's Retry-After cooldown shared by two llmux instances, Redis outages (on_error open admits, closed answers 503, recovery when it returns),
// a client that leaves while its admission waits for Redis, and requests without limits that
// never touch Redis.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startLlmux, startRedis, provider, post, chat, expectError, waitFor } from './lib.mjs';

let mock, redis, a, b;
const auth = (k) => ({ authorization: `Bearer ${k}` });
const models = {
  m: { deployments: [{ provider: 'p', model: 'x' }] },
  priced: { deployments: [{ provider: 'p', model: 'x', price: { input: 1000, output: 1000 } }] },
  long: { deployments: [{ provider: 'p', model: 'x?tokens=120' }] },
  cached: { cache: { ttl_s: 60 }, deployments: [{ provider: 'p', model: 'x?tokens=12' }] },
  cool: { deployments: [{ provider: 'p', model: 'busy?status=429&retry_after=30' }, { provider: 'p', model: 'calm' }] },
  spill: { deployments: [{ provider: 'p', model: 'first', rpm: 2 }, { provider: 'p', model: 'second' }] },
};
const keys = [
  'sk-free',
  { name: 'shared', key: 'sk-shared', rpm: 4 },
  { name: 'budget', key: 'sk-budget', budget_usd: 0.01 },
  { name: 'tokens', key: 'sk-tokens', tpm: 400 },
  { name: 'cancel', key: 'sk-cancel', rpm: 2 },
  { name: 'spill', key: 'sk-spill', rpm: 3 },
];
const config = (extra = {}) => ({
  providers: { p: provider(mock.baseUrl) }, models, keys,
  state: { redis: redis.url, prefix: `t${process.pid}:`, ...extra },
});
const evalshas = () => Number((redis.cli('INFO', 'commandstats').match(/cmdstat_evalsha:calls=(\d+)/) ?? [0, 0])[1]);

before(async () => {
  mock = await startMock();
  redis = await startRedis();
  a = await startLlmux(config());
  b = await startLlmux(config());
  await waitFor(() => a.stderr().includes('"redis_up"') && b.stderr().includes('"redis_up"'),
    { what: 'both instances connected to Redis' });
});

after(async () => {
  await a?.stop();
  await b?.stop();
  await redis?.stop();
  await mock?.stop();
});

test('two instances share one rpm limit exactly, with OpenAI headers counting across both', async () => {
  const seen = [];
  for (let i = 0; i < 6; i++) {
    const r = await post((i % 2 ? b : a).base, '/v1/chat/completions', chat('m'), auth('sk-shared'));
    seen.push([r.status, r.headers.get('x-ratelimit-remaining-requests')]);
    await r.text();
  }
  assert.deepEqual(seen, [[200, '3'], [200, '2'], [200, '1'], [200, '0'], [429, '0'], [429, '0']]);
  const r = await post(a.base, '/v1/chat/completions', chat('m'), auth('sk-shared'));
  await expectError(r, 429, 'rate_limit_exceeded');
  assert.ok(Number(r.headers.get('retry-after')) >= 1);
  assert.ok(!a.stderr().includes('sk-shared') && !a.stderr().includes(redis.url + '/'), 'secrets in the log');
});

test('a deployment rpm is one limit across instances: the third request moves on, with no 429 seen', async () => {
  const served = [];
  for (let i = 0; i < 5; i++) {
    const r = await post((i % 2 ? b : a).base, '/v1/chat/completions', chat('spill'), auth('sk-free'));
    assert.equal(r.status, 200);
    await r.text();
    served.push(r.headers.get('x-llmux-model'));
  }
  assert.deepEqual(served, ['first', 'first', 'second', 'second', 'second']);
  assert.match(redis.cli('KEYS', `t${process.pid}:dep:*:req`), /^t\d+:dep:[0-9a-f]{32}:req$/, 'the counter lives in Redis');
  // a key at its own limit is refused first, whatever the deployments would say
  const st = [];
  for (let i = 0; i < 4; i++) {
    const r = await post((i % 2 ? b : a).base, '/v1/chat/completions', chat('spill'), auth('sk-spill'));
    await r.text();
    st.push(r.status);
  }
  assert.deepEqual(st, [200, 200, 200, 429]);
});

test('a provider\'s Retry-After seen by one instance cools the deployment down on the others too', async () => {
  const r1 = await post(a.base, '/v1/chat/completions', chat('cool'), auth('sk-free'));
  assert.equal(r1.status, 200);
  await r1.text();
  assert.equal(r1.headers.get('x-llmux-attempts'), '2', 'a met the 429 and failed over');
  const state = async (inst) => {
    const s = await (await fetch(`${inst.base}/v1/status`, { headers: auth('sk-free') })).json();
    return s.health.deployments.find((d) => d.model.startsWith('busy')).state;
  };
  assert.equal(await state(a), 'cooldown');
  await waitFor(async () => (await state(b)) === 'cooldown', { what: 'b cooled down through Redis' });
  const before0 = (await mock.stats()).requests;
  const r2 = await post(b.base, '/v1/chat/completions', chat('cool'), auth('sk-free'));
  await r2.text();
  assert.equal(r2.headers.get('x-llmux-attempts'), '1', 'b never asked the cooling deployment');
  assert.equal(r2.headers.get('x-llmux-model'), 'calm');
  assert.equal((await mock.stats()).requests, before0 + 1);
  await waitFor(() => b.stderr().includes('Retry-After of another llmux instance'), { what: 'the cooldown logged' });
});

test('the response cache lives in Redis: an answer stored by one instance is a hit on the other', async () => {
  const body = chat('cached', { messages: [{ role: 'user', content: `shared ${process.pid}` }] });
  const before0 = (await mock.stats()).requests;
  const r1 = await post(a.base, '/v1/chat/completions', body, auth('sk-free'));
  assert.equal(r1.headers.get('x-llmux-cache'), 'miss');
  const first = await r1.json();
  await waitFor(() => redis.cli('KEYS', `t${process.pid}:cache:*`).length > 0, { what: 'the entry in Redis' });
  const r2 = await post(b.base, '/v1/chat/completions', body, auth('sk-free'));
  assert.equal(r2.headers.get('x-llmux-cache'), 'hit');
  assert.equal((await r2.json()).choices[0].message.content, first.choices[0].message.content);
  // the same entry replayed as a stream by the other instance
  const r3 = await post(b.base, '/v1/chat/completions', { ...body, stream: true }, auth('sk-free'));
  assert.equal(r3.headers.get('x-llmux-cache'), 'hit');
  const text = (await r3.text()).split('\n').filter((l) => l.startsWith('data: {'))
    .map((l) => JSON.parse(l.slice(6)).choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, first.choices[0].message.content);
  assert.equal((await mock.stats()).requests, before0 + 1, 'one provider call for three answers');
  assert.match(redis.cli('KEYS', `t${process.pid}:cache:*`), /^t\d+:cache:[0-9a-f]{64}$/);
  assert.ok(Number(redis.cli('PTTL', redis.cli('KEYS', `t${process.pid}:cache:*`))) > 50000, 'stored with its ttl');
});

test('a budget spent through one instance is refused by the other, and both report the spend', async () => {
  const r1 = await post(a.base, '/v1/chat/completions', chat('priced'), auth('sk-budget'));
  assert.equal(r1.status, 200);
  const cost = (await r1.json()).usage.cost;
  assert.ok(cost > 0.01);
  const before0 = (await mock.stats()).requests;
  // the spend is settled after the answer: wait until Redis has it
  await waitFor(() => Number(redis.cli('GET', `t${process.pid}:key:budget:spend:0`)) > 0, { what: 'spend in Redis' });
  const r2 = await post(b.base, '/v1/chat/completions', chat('priced'), auth('sk-budget'));
  await expectError(r2, 429, 'insufficient_quota');
  assert.equal((await mock.stats()).requests, before0, 'no upstream call');
  const s = await (await fetch(`${b.base}/v1/status`, { headers: auth('sk-free') })).json();
  const k = s.keys.find((x) => x.name === 'budget');
  assert.ok(Math.abs(k.spent_usd - cost) < 1e-9, `instance b reports ${k.spent_usd}, cost ${cost}`);
  assert.equal(s.redis.up, true);
  assert.ok(s.redis.rtt_us.count >= 1 && s.redis.commands >= s.redis.rtt_us.count);
  const m = await (await fetch(`${b.base}/metrics`, { headers: auth('sk-free') })).text();
  const line = m.split('\n').find((l) => l.startsWith('llmux_key_spend_usd{key="budget",period="total"}'));
  assert.ok(line && Math.abs(Number(line.split(' ')[1]) - cost) < 1e-9, line);
  assert.match(m, /^llmux_redis_up 1$/m);
});

test('tpm through Redis: the estimate is corrected to the real usage at the end', async () => {
  const r1 = await post(a.base, '/v1/chat/completions', chat('long'), auth('sk-tokens'));
  assert.equal(r1.status, 200);
  const used = (await r1.json()).usage.total_tokens;
  const estimated = 400 - Number(r1.headers.get('x-ratelimit-remaining-tokens'));
  assert.ok(used > estimated + 50, `the answer (${used} tokens) is much longer than the estimate (${estimated})`);
  // tokens charged now = (TAT - now) / (60 s / 400), read on Redis's own clock
  const charged = () => Number(redis.cli('EVAL', "local t = redis.call('TIME') " +
    "local now = t[1] * 1000000 + t[2] return math.floor(((tonumber(redis.call('GET', KEYS[1])) or 0) - now) / 150000)",
    '1', `t${process.pid}:key:tokens:tok`));
  // settled after the answer: the charge becomes the real usage (less what refilled since)
  const c = await waitFor(() => { const v = charged(); return v > used - 20 ? v : false; }, { what: 'tokens corrected' });
  assert.ok(c <= used, `charged ${c}, used ${used}`);
});

test('requests of keys without limits never touch Redis', async () => {
  const n0 = evalshas();
  for (let i = 0; i < 5; i++) { // priced too: a key without limits keeps its spend locally
    const r = await post(a.base, '/v1/chat/completions', chat(i % 2 ? 'm' : 'priced'), auth('sk-free'));
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-ratelimit-limit-requests'), null);
    await r.text();
  }
  assert.equal(evalshas(), n0);
});

test('a client that leaves while admission waits for Redis is cancelled; its request unit comes back', async () => {
  const c = await startLlmux(config({ timeout_ms: 5000 }));
  try {
    await waitFor(() => c.stderr().includes('"redis_up"'), { what: 'connected' });
    // Redis holds every client's commands for 1.5 s: the admission waits
    assert.equal(redis.cli('CLIENT', 'PAUSE', '1500', 'ALL'), 'OK');
    const ctl = new AbortController();
    const pending = fetch(`${c.base}/v1/chat/completions`, {
      method: 'POST', signal: ctl.signal, body: JSON.stringify(chat('m')),
      headers: { ...auth('sk-cancel'), 'content-type': 'application/json', 'x-request-id': 'cancel-1' },
    }).catch((e) => e);
    // the request is waiting in admission: cancel it
    await waitFor(async () => (await (await fetch(`${c.base}/v1/status`, { headers: auth('sk-free') })).json()).requests >= 1,
      { what: 'request received' });
    ctl.abort();
    await pending;
    const line = await c.logFor('cancel-1');
    assert.equal(line.outcome, 'client_closed', 'ended while Redis was still paused');
    // Redis answers after the client left (PING waits out the pause): the unit it took is
    // given back, which leaves the key's counter empty (no burst used)
    assert.equal(redis.cli('PING'), 'PONG');
    await waitFor(() => redis.cli('EXISTS', `t${process.pid}:key:cancel:req`) === '0', { what: 'the unit given back' });
    const r = await post(c.base, '/v1/chat/completions', chat('m'), auth('sk-cancel'));
    await r.text();
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '1');
  } finally {
    await c.stop();
  }
});

test('Redis down: open admits (logged once), closed answers 503; both recover when it is back', async () => {
  const open = await startLlmux(config({ timeout_ms: 200 }));
  const closed = await startLlmux(config({ timeout_ms: 200, on_error: 'closed' }));
  try {
    await waitFor(() => open.stderr().includes('"redis_up"') && closed.stderr().includes('"redis_up"'), { what: 'connected' });
    await redis.kill();
    for (let i = 0; i < 3; i++) {
      const r = await post(open.base, '/v1/chat/completions', chat('m'), auth('sk-shared'));
      assert.equal(r.status, 200, 'on_error open admits');
      assert.equal(r.headers.get('x-ratelimit-limit-requests'), null, 'no limit known');
      await r.text();
    }
    const r = await post(closed.base, '/v1/chat/completions', chat('m'), auth('sk-shared'));
    const e = await expectError(r, 503, 'state_unavailable');
    assert.match(e.message, /Redis/);
    const free = await post(closed.base, '/v1/chat/completions', chat('m'), auth('sk-free'));
    assert.equal(free.status, 200, 'a key without limits does not need Redis');
    await free.text();
    const cached = await post(closed.base, '/v1/chat/completions', chat('cached'), auth('sk-free'));
    assert.equal(cached.status, 200, 'a cache lookup that Redis cannot answer is a miss');
    assert.equal(cached.headers.get('x-llmux-cache'), 'miss');
    await cached.text();
    const st = await (await fetch(`${open.base}/v1/status`, { headers: auth('sk-free') })).json();
    assert.equal(st.redis.up, false);
    assert.ok(st.redis.outages >= 1 && st.redis.failed >= 1);
    const downs = () => open.stderr().split('\n').filter((l) => l.includes('"redis_down"')).length;
    await waitFor(() => downs() >= 1, { what: 'the outage logged' });
    await redis.start();
    assert.equal(downs(), 1, 'one log line per outage, however many reconnections failed');
    for (const inst of [open, closed]) {
      await waitFor(async () => {
        const x = await post(inst.base, '/v1/chat/completions', chat('m'), auth('sk-free'));
        await x.text();
        const y = await post(inst.base, '/v1/chat/completions', chat('m'), auth('sk-cancel'));
        await y.text();
        return y.headers.get('x-ratelimit-limit-requests') === '2';
      }, { what: 'limits through Redis again', timeout: 10000 });
    }
    await waitFor(() => open.stderr().split('\n').filter((l) => l.includes('"redis_up"')).length >= 2,
      { what: 'the recovery logged' });
  } finally {
    await open.stop();
    await closed.stop();
  }
});

test('a Redis slower than state.timeout_ms does not hold requests: the connection is dropped', async () => {
  const c = await startLlmux(config({ timeout_ms: 100 }));
  try {
    await waitFor(() => c.stderr().includes('"redis_up"'), { what: 'connected' });
    assert.equal(redis.cli('CLIENT', 'PAUSE', '1000', 'ALL'), 'OK');
    const r = await post(c.base, '/v1/chat/completions', chat('m'), auth('sk-shared'));
    assert.equal(r.status, 200, 'admitted open after the timeout');
    await r.text();
    await waitFor(() => c.stderr().includes('not answered in time'), { what: 'the timeout logged' });
  } finally {
    await c.stop();
  }
});

test('a Redis with a password: AUTH from password_env works; a wrong one is an outage, never logged', async () => {
  const locked = await startRedis({ args: ['--requirepass', 'r3dis-s3cret'] });
  const cfg = (varName) => ({
    providers: { p: provider(mock.baseUrl) }, models, keys,
    state: { redis: locked.url, password_env: varName, prefix: `pw${process.pid}:`, on_error: 'closed' },
  });
  const good = await startLlmux(cfg('LLMUX_IT_REDIS_PW'), { env: { LLMUX_IT_REDIS_PW: 'r3dis-s3cret' } });
  const bad = await startLlmux(cfg('LLMUX_IT_REDIS_PW'), { env: { LLMUX_IT_REDIS_PW: 'wrong-pw' } });
  try {
    await waitFor(() => good.stderr().includes('"redis_up"'), { what: 'authenticated' });
    const r = await post(good.base, '/v1/chat/completions', chat('m'), auth('sk-cancel'));
    await r.text();
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-ratelimit-limit-requests'), '2', 'limits through the locked Redis');
    await waitFor(() => /redis_down.*setup refused/.test(bad.stderr()), { what: 'the refused AUTH logged' });
    const e = await post(bad.base, '/v1/chat/completions', chat('m'), auth('sk-cancel'));
    await expectError(e, 503, 'state_unavailable');
    for (const inst of [good, bad])
      assert.ok(!inst.stderr().includes('r3dis-s3cret') && !inst.stderr().includes('wrong-pw'), 'a password in the log');
  } finally {
    await good.stop();
    await bad.stop();
    await locked.stop();
  }
});
