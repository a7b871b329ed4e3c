// Gateway keys with names, model allowlists, rate limits (GCRA, OpenAI's x-ratelimit-* headers
// and retry-after, which the official SDK honours) and budgets; one limit across two workers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { startMock, startLlmux, provider, post, chat, expectError } from './lib.mjs';
const { default: OpenAI } = await import(new URL('../node/node_modules/openai/index.mjs', import.meta.url).href);

let mock, llmux;
const auth = (k) => ({ authorization: `Bearer ${k}` });
const sha = (k) => createHash('sha256').update(k).digest('hex');

before(async () => {
  mock = await startMock();
  llmux = await startLlmux({
    providers: { m: provider(mock.baseUrl), m2: provider(mock.baseUrl) },
    models: {
      a: { deployments: [{ provider: 'm', model: 'x' }] },
      b: { deployments: [{ provider: 'm', model: 'y' }] },
      priced: { deployments: [{ provider: 'm', model: 'p', price: { input: 1000, output: 1000 } }] },
      spill: { deployments: [{ provider: 'm', model: 'first', rpm: 2 }, { provider: 'm2', model: 'second' }] },
      single: { deployments: [{ provider: 'm', model: 'only', rpm: 1 }] },
      hedged: { hedge_after_ms: 50, deployments: [{ provider: 'm', model: 'slow?delay=400' }, { provider: 'm2', model: 'h', rpm: 1 }] },
    },
    keys: [
      'sk-plain',
      { name: 'team-a', key: 'sk-team-a', models: ['a'] },
      { name: 'rpm3', key_sha256: sha('sk-rpm3'), rpm: 3 },
      { name: 'tpm', key: 'sk-tpm', tpm: 200 },
      { name: 'sdk', key: 'sk-sdk', rpm: 6 },
      { name: 'budget', key: 'sk-budget', budget_usd: 0.01, budget_period: 'day' },
    ],
  });
});

after(async () => {
  await llmux?.stop();
  await mock?.stop();
});

test('a key outside its models gets 403 model_not_allowed; the log names the key, never the key', async () => {
  const ok = await post(llmux.base, '/v1/chat/completions', chat('a'), { ...auth('sk-team-a'), 'x-request-id': 'k-ok' });
  assert.equal(ok.status, 200);
  await ok.json();
  const no = await post(llmux.base, '/v1/chat/completions', chat('b'), auth('sk-team-a'));
  const e = await expectError(no, 403, 'model_not_allowed');
  assert.match(e.message, /team-a.*'b'/);
  const fallback = await post(llmux.base, '/v1/chat/completions', chat('a', { models: ['b'] }), auth('sk-team-a'));
  await expectError(fallback, 403, 'model_not_allowed');
  const line = await llmux.logFor('k-ok');
  assert.equal(line.key, 'team-a');
  assert.ok(!llmux.stderr().includes('sk-team-a'), 'a key is in the log');
  const plain = await post(llmux.base, '/v1/chat/completions', chat('b'), auth('sk-plain'));
  assert.equal(plain.status, 200, 'a plain key may use every model');
  await plain.json();
  await expectError(await post(llmux.base, '/v1/chat/completions', chat('a'), auth('sk-wrong')), 401);
});

test('rpm: exactly the limit passes, then 429 with OpenAI headers and no upstream call', async () => {
  const before0 = (await mock.stats()).requests;
  for (let i = 0; i < 3; i++) {
    const r = await post(llmux.base, '/v1/chat/completions', chat('a'), auth('sk-rpm3'));
    assert.equal(r.status, 200);
    await r.json();
    assert.equal(r.headers.get('x-ratelimit-limit-requests'), '3');
    assert.equal(r.headers.get('x-ratelimit-remaining-requests'), String(2 - i));
    assert.match(r.headers.get('x-ratelimit-reset-requests'), /^(\d+ms|\d+(\.\d+)?s|\d+m\d+s)$/);
  }
  const r = await post(llmux.base, '/v1/chat/completions', chat('a'), auth('sk-rpm3'));
  const e = await expectError(r, 429, 'rate_limit_exceeded');
  assert.equal(e.type, 'requests');
  assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '0');
  assert.ok(Number(r.headers.get('retry-after')) >= 1 && Number(r.headers.get('retry-after')) <= 20);
  assert.equal(r.headers.get('x-should-retry'), null, 'the SDKs retry a rate limit');
  assert.equal((await mock.stats()).requests, before0 + 3);
});

test('tpm: the prompt estimate is charged; over it, 429 of type tokens', async () => {
  const big = chat('a', { messages: [{ role: 'user', content: 'x'.repeat(480) }] }); // ~135 tokens
  const r1 = await post(llmux.base, '/v1/chat/completions', big, auth('sk-tpm'));
  assert.equal(r1.status, 200);
  await r1.json();
  assert.equal(r1.headers.get('x-ratelimit-limit-tokens'), '200');
  const left = Number(r1.headers.get('x-ratelimit-remaining-tokens'));
  assert.ok(left > 0 && left < 200 - 120, `remaining ${left}`);
  const r2 = await post(llmux.base, '/v1/chat/completions', big, auth('sk-tpm'));
  assert.equal(r2.status, 429);
  assert.equal((await r2.json()).error.type, 'tokens');
  const huge = chat('a', { messages: [{ role: 'user', content: 'x'.repeat(2000) }] });
  const r3 = await post(llmux.base, '/v1/chat/completions', huge, auth('sk-tpm'));
  assert.equal(r3.status, 429);
  assert.match((await r3.json()).error.message, /too large/);
});

test('the official SDK backs off on retry-after and succeeds', async () => {
  // 6 per minute: a burst of 6, then one every 10 s
  for (let i = 0; i < 6; i++) {
    const r = await post(llmux.base, '/v1/chat/completions', chat('a'), auth('sk-sdk'));
    assert.equal(r.status, 200);
    await r.text();
  }
  const seen = [];
  const client = new OpenAI({
    baseURL: `${llmux.base}/v1`, apiKey: 'sk-sdk', maxRetries: 2,
    fetch: async (url, init) => { const r = await fetch(url, init); seen.push(r.status); return r; },
  });
  const c = await client.chat.completions.create({ model: 'a', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(c.object, 'chat.completion');
  assert.deepEqual(seen, [429, 200], 'refused once, then served after retry-after');
});

test('budget: spent -> 429 insufficient_quota, no upstream call; /v1/status shows the spend', async () => {
  // $1000 per million tokens: a request of ~30 tokens costs ~$0.03, over the $0.01 budget
  const r1 = await post(llmux.base, '/v1/chat/completions', chat('priced'), auth('sk-budget'));
  assert.equal(r1.status, 200);
  const cost = (await r1.json()).usage.cost;
  assert.ok(cost > 0.01);
  const before0 = (await mock.stats()).requests;
  const r2 = await post(llmux.base, '/v1/chat/completions', chat('priced'), auth('sk-budget'));
  await expectError(r2, 429, 'insufficient_quota');
  assert.equal(r2.headers.get('x-should-retry'), 'false');
  assert.equal((await mock.stats()).requests, before0);
  const s = await (await fetch(`${llmux.base}/v1/status`, { headers: auth('sk-plain') })).json();
  const k = s.keys.find((x) => x.name === 'budget');
  assert.ok(Math.abs(k.spent_usd - cost) < 1e-9, `spent ${k.spent_usd}, cost ${cost}`);
  assert.equal(k.budget_usd, 0.01);
  assert.ok(!JSON.stringify(s).includes('sk-'), 'a key is in /v1/status');
});

test('a deployment at its own rpm is skipped before the provider says 429; all at theirs: 429', async () => {
  const served = [];
  for (let i = 0; i < 5; i++) {
    const r = await post(llmux.base, '/v1/chat/completions', chat('spill'), { ...auth('sk-plain'), 'x-request-id': `spill-${i}` });
    assert.equal(r.status, 200);
    await r.json();
    served.push(r.headers.get('x-llmux-model'));
  }
  assert.deepEqual(served, ['first', 'first', 'second', 'second', 'second']);
  assert.equal((await llmux.logFor('spill-4')).limited_skipped, 1);
  const r1 = await post(llmux.base, '/v1/chat/completions', chat('single'), auth('sk-plain'));
  assert.equal(r1.status, 200);
  await r1.json();
  const before0 = (await mock.stats()).requests;
  const r2 = await post(llmux.base, '/v1/chat/completions', chat('single'), auth('sk-plain'));
  await expectError(r2, 429, 'rate_limit_exceeded');
  assert.ok(Number(r2.headers.get('retry-after')) >= 1);
  assert.equal((await mock.stats()).requests, before0, 'no provider call');
});

// One request on a fresh connection that first asks /v1/status (so the worker is known): the
// same keep-alive socket then carries the POST to the same worker.
async function onOneWorker(base, body, headers) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const url = new URL(base);
  const call = (method, path, data) => new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, method, path, agent,
      headers: { ...headers, 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('error', reject);
    req.end(data);
  });
  try {
    const st = await call('GET', '/v1/status');
    const r = await call('POST', '/v1/chat/completions', JSON.stringify(body));
    return { worker: JSON.parse(st.text).worker, status: r.status };
  } finally {
    agent.destroy();
  }
}

test('a hedge respects the deployment limit too', async () => {
  const r1 = await post(llmux.base, '/v1/chat/completions', chat('hedged'), auth('sk-plain'));
  await r1.json();
  assert.equal(r1.headers.get('x-llmux-hedged'), 'won', 'the first hedge goes to the free deployment');
  const r2 = await post(llmux.base, '/v1/chat/completions', chat('hedged'), auth('sk-plain'));
  await r2.json();
  assert.equal(r2.status, 200);
  assert.equal(r2.headers.get('x-llmux-hedged'), null, 'no hedge to a deployment at its rpm');
  assert.equal(r2.headers.get('x-llmux-model'), 'slow?delay=400');
});

test('workers: 2 share one limit, not two', async () => {
  const two = await startLlmux({
    workers: 2,
    providers: { m: provider(mock.baseUrl) },
    models: { a: { deployments: [{ provider: 'm', model: 'x' }] } },
    keys: [{ name: 'w', key: 'sk-w', rpm: 4 }],
  });
  try {
    // Until both workers have taken requests (and at least 12): a limit per worker would
    // admit more than 4 (one of them took more than 4, the other at least one).
    const seen = [];
    while (seen.length < 60 && (seen.length < 12 || new Set(seen.map((x) => x.worker)).size < 2))
      seen.push(await onOneWorker(two.base, chat('a'), auth('sk-w')));
    assert.equal(new Set(seen.map((x) => x.worker)).size, 2, 'both workers answered');
    assert.deepEqual(seen.map((x) => x.status).slice(0, 4), [200, 200, 200, 200]);
    assert.equal(seen.filter((x) => x.status === 200).length, 4, JSON.stringify(seen));
  } finally {
    await two.stop();
  }
});
