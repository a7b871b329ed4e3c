// Resilience: the circuit breaker, Retry-After cooldowns, routing strategies, OpenRouter-style
// request preferences, the retry budget, retries with backoff and hedged requests, each
// driven by mockllm processes that count what reached them.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startLlmux, provider, post, chat, readSse, chunksText, mockText, expectError,
  closedPort, rid, waitFor,
} from './lib.mjs';

const served = (res) => res.headers.get('x-llmux-provider');
const getJson = async (base, path) => (await fetch(base + path)).json();
const deployment = (status, prov, model) =>
  status.health.deployments.find((d) => d.provider === prov && d.model === model);
const events = (llmux, kind) => llmux.stderr().split('\n').filter((l) => l.startsWith('{"event"'))
  .map((l) => JSON.parse(l)).filter((e) => e.event === kind);

// Runs n requests with `width` in flight; returns their statuses.
async function many(n, width, make) {
  const statuses = [];
  let next = 0;
  async function worker() {
    while (next < n) {
      next++;
      const res = await make();
      await res.arrayBuffer();
      statuses.push(res.status);
    }
  }
  await Promise.all(Array.from({ length: width }, worker));
  return statuses;
}

describe('circuit breaker', () => {
  let dead, ok1, ok2, llmux;
  before(async () => {
    dead = await startMock({ script: 'status=503' });
    ok1 = await startMock({ script: 'tokens=2' });
    ok2 = await startMock({ script: 'tokens=2' });
    llmux = await startLlmux({
      timeouts_ms: { connect: 1000, first_byte: 2000, idle: 2000, total: 10000 },
      health: { failure_threshold: 5, base_ejection_ms: 600000, max_ejection_ms: 900000 },
      providers: { dead: provider(dead.baseUrl), ok1: provider(ok1.baseUrl), ok2: provider(ok2.baseUrl) },
      models: {
        three: { deployments: [{ provider: 'dead', model: 'm' }, { provider: 'ok1', model: 'm' }, { provider: 'ok2', model: 'm' }] },
        solo: { deployments: [{ provider: 'dead', model: 'solo' }] },
      },
    });
  });
  after(async () => { await llmux?.stop(); await dead?.stop(); await ok1?.stop(); await ok2?.stop(); });

  test('1,000 requests with one dead deployment: no client error, the dead one ejected', async () => {
    const width = 8;
    const statuses = await many(1000, width, () => post(llmux.base, '/v1/chat/completions', chat('three')));
    assert.equal(statuses.length, 1000);
    assert.deepEqual([...new Set(statuses)], [200]);
    const hits = (await dead.stats()).requests;
    assert.ok(hits >= 5 && hits <= 5 + width, `the dead deployment got ${hits} requests`);
    await many(100, 4, () => post(llmux.base, '/v1/chat/completions', chat('three')));
    assert.equal((await dead.stats()).requests, hits, 'an ejected deployment gets no more requests');
    const st = await getJson(llmux.base, '/v1/status');
    const d = deployment(st, 'dead', 'm');
    assert.equal(d.state, 'ejected');
    assert.equal(d.ejections, 1);
    assert.ok(d.ejected_for_ms > 500000);
    assert.match(d.last_error, /503/);
    assert.equal(deployment(st, 'ok1', 'm').state, 'healthy');
    assert.equal(deployment(st, 'ok1', 'm').requests + deployment(st, 'ok2', 'm').requests, 1100);
    const ej = await waitFor(() => {
      const e = events(llmux, 'ejected').filter((x) => x.provider === 'dead' && x.model === 'm');
      return e.length ? e : false;
    }, { what: 'the ejection event' });
    assert.equal(ej.length, 1);
    assert.equal(ej[0].for_ms, 600000);
  });

  test('the last deployment of a plan is never left out, however sick', async () => {
    const before = (await dead.stats()).requests;
    for (let i = 0; i < 8; i++) {
      const res = await post(llmux.base, '/v1/chat/completions', chat('solo'));
      await expectError(res, 502, 'all_deployments_failed');
    }
    assert.equal((await dead.stats()).requests, before + 8);
    assert.equal(deployment(await getJson(llmux.base, '/v1/status'), 'dead', 'solo').state, 'ejected');
  });
});

describe('half-open probe and recovery', () => {
  let ok, revived, llmux, port;
  before(async () => {
    ok = await startMock({ script: 'tokens=2' });
    port = await closedPort();
    llmux = await startLlmux({
      timeouts_ms: { connect: 1000, first_byte: 2000, idle: 2000, total: 10000 },
      health: { failure_threshold: 3, base_ejection_ms: 300, max_ejection_ms: 10000 },
      providers: { flap: provider(`http://127.0.0.1:${port}/v1`), ok: provider(ok.baseUrl) },
      models: { flap: { deployments: [{ provider: 'flap', model: 'm' }, { provider: 'ok', model: 'm' }] } },
    });
  });
  after(async () => { await llmux?.stop(); await ok?.stop(); await revived?.stop(); });

  test('a failed probe ejects for twice as long; a good one brings the deployment back', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await post(llmux.base, '/v1/chat/completions', chat('flap'));
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    await waitFor(() => events(llmux, 'ejected').length === 1, { what: 'first ejection' });
    assert.equal(events(llmux, 'ejected')[0].for_ms, 300);
    const halfOpen = async () => deployment(await getJson(llmux.base, '/v1/status'), 'flap', 'm').state === 'half_open';
    await waitFor(halfOpen, { what: 'half_open', timeout: 3000 });
    // the probe fails (still refused): ejected again, for 600 ms
    let res = await post(llmux.base, '/v1/chat/completions', chat('flap'));
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    await waitFor(() => events(llmux, 'ejected').length === 2, { what: 'second ejection' });
    assert.equal(events(llmux, 'ejected')[1].for_ms, 600);
    revived = await startMock({ script: 'tokens=2', args: ['--listen', `127.0.0.1:${port}`] });
    await waitFor(halfOpen, { what: 'half_open again', timeout: 3000 });
    res = await post(llmux.base, '/v1/chat/completions', chat('flap'));
    assert.equal(served(res), 'flap', 'the probe is served by the recovered deployment');
    await res.arrayBuffer();
    await waitFor(() => events(llmux, 'recovered').length === 1, { what: 'recovery event' });
    assert.equal(deployment(await getJson(llmux.base, '/v1/status'), 'flap', 'm').state, 'healthy');
    res = await post(llmux.base, '/v1/chat/completions', chat('flap'));
    assert.equal(served(res), 'flap');
    await res.arrayBuffer();
  });
});

describe('routing', () => {
  let a, b, limited, again, llmux;
  before(async () => {
    a = await startMock();
    b = await startMock();
    limited = await startMock({ script: 'status=429&retry_after=30' });
    again = await startMock({ script: 'fail_every=2&status=503&tokens=2' });
    const dead = await closedPort();
    const price = (input, output) => ({ input, output });
    llmux = await startLlmux({
      timeouts_ms: { connect: 1000, first_byte: 3000, idle: 3000, total: 15000 },
      providers: {
        a: provider(a.baseUrl), b: provider(b.baseUrl), limited: provider(limited.baseUrl),
        again: provider(again.baseUrl), dead: provider(`http://127.0.0.1:${dead}/v1`),
      },
      models: {
        both: { deployments: [{ provider: 'a', model: 'm?tokens=2' }, { provider: 'b', model: 'm?tokens=2' }] },
        priced: { deployments: [
          { provider: 'a', model: 'p?tokens=2', price: price(10, 30) },
          { provider: 'b', model: 'p?tokens=2', price: price(0.1, 0.3) }] },
        cheap: { strategy: 'price', deployments: [
          { provider: 'a', model: 'c?tokens=2', price: price(10, 30) },
          { provider: 'b', model: 'c?tokens=2', price: price(0.1, 0.3) }] },
        fast: { strategy: 'latency', deployments: [
          { provider: 'a', model: 'f?delay=600&tokens=2' }, { provider: 'b', model: 'f?tokens=2' }] },
        tput: { strategy: 'throughput', deployments: [
          { provider: 'a', model: 't?tokens=10&tps=20' }, { provider: 'b', model: 't?tokens=40&tps=400' }] },
        bal: { strategy: 'balance', deployments: [
          { provider: 'a', model: 'bal?tokens=1', weight: 3 }, { provider: 'b', model: 'bal?tokens=1', weight: 1 }] },
        cool: { deployments: [{ provider: 'limited', model: 'm' }, { provider: 'a', model: 'cool?tokens=2' }] },
        broken: { deployments: [{ provider: 'dead', model: 'm' }] },
        fallback: { deployments: [{ provider: 'b', model: 'fb?tokens=2' }] },
        again: { max_attempts: 2, deployments: [{ provider: 'again', model: 'm' }] },
        ctx: { deployments: [
          { provider: 'a', model: 'ctx?context_window=10', context_window: 4096 },
          { provider: 'a', model: 'ctx-same', context_window: 4096 },
          { provider: 'b', model: 'ctx?tokens=2', context_window: 128000 }] },
        'ctx-nowhere': { deployments: [
          { provider: 'a', model: 'ctx?context_window=10', context_window: 4096 },
          { provider: 'b', model: 'ctx?context_window=10', context_window: 4096 }] },
        inflight: { deployments: [{ provider: 'b', model: 'if?tokens=20&tps=10' }] },
        ratelimited: { deployments: [
          { provider: 'a', model: 'rl?status=429&retry_after=7' }, { provider: 'b', model: 'rl?status=429&retry_after=3' }] },
      },
    });
  });
  after(async () => {
    await llmux?.stop();
    for (const m of [a, b, limited, again]) await m?.stop();
  });
  const ask = (model, extra) => post(llmux.base, '/v1/chat/completions', chat(model, extra));

  test('strategy price: the cheapest deployment first', async () => {
    const res = await ask('cheap');
    assert.equal(res.status, 200);
    assert.equal(served(res), 'b');
    assert.equal(res.headers.get('x-llmux-model'), 'c?tokens=2');
    await res.arrayBuffer();
  });

  test('strategy latency: unmeasured deployments are tried, then the fastest wins', async () => {
    const first = [];
    for (let i = 0; i < 2; i++) {
      const res = await ask('fast');
      first.push(served(res));
      await res.arrayBuffer();
    }
    assert.deepEqual(first.sort(), ['a', 'b'], 'each deployment measured once');
    for (let i = 0; i < 5; i++) {
      const res = await ask('fast');
      assert.equal(served(res), 'b');
      await res.arrayBuffer();
    }
  });

  test('strategy throughput (and the :nitro suffix): the most tokens/s first once measured', async () => {
    const body = { stream: true, stream_options: { include_usage: true } };
    for (let i = 0; i < 2; i++) await readSse(await ask('tput', body));
    for (let i = 0; i < 3; i++) {
      const res = await ask('tput', body);
      assert.equal(served(res), 'b');
      await readSse(res);
    }
    const st = await getJson(llmux.base, '/v1/status');
    const tb = deployment(st, 'b', 't?tokens=40&tps=400').tokens_per_s;
    const ta = deployment(st, 'a', 't?tokens=10&tps=20').tokens_per_s;
    assert.ok(ta > 0 && tb > ta, `measured ${tb} vs ${ta} tokens/s`);
    const res = await ask('priced:nitro');
    assert.equal(res.status, 200);
    await res.arrayBuffer();
  });

  test('strategy balance: a weighted spread', async () => {
    const counts = { a: 0, b: 0 };
    await many(400, 4, async () => {
      const res = await ask('bal');
      counts[served(res)]++;
      return res;
    });
    const share = counts.a / 400;
    assert.ok(share > 0.6 && share < 0.9, `weight 3:1 gave ${counts.a}:${counts.b}`);
  });

  test('429 with Retry-After cools the deployment down until then', async () => {
    for (let i = 0; i < 4; i++) {
      const res = await ask('cool');
      assert.equal(res.status, 200);
      assert.equal(served(res), 'a');
      await res.arrayBuffer();
    }
    assert.equal((await limited.stats()).requests, 1);
    const d = deployment(await getJson(llmux.base, '/v1/status'), 'limited', 'm');
    assert.equal(d.state, 'cooldown');
    const cool = await waitFor(() => events(llmux, 'cooldown').find((e) => e.provider === 'limited'),
      { what: 'the cooldown event' });
    assert.equal(cool.for_ms, 30000);
  });

  test('rate limited everywhere: 429 with the soonest Retry-After', async () => {
    const res = await ask('ratelimited');
    assert.equal(res.status, 429);
    assert.equal(res.headers.get('retry-after'), '3');
    assert.equal(res.headers.get('x-should-retry'), 'false');
    const body = await res.json();
    assert.equal(body.error.code, 'rate_limit_exceeded');
  });

  test('context length exceeded: straight to a deployment with a larger window', async () => {
    const id = rid('ctx');
    const res = await post(llmux.base, '/v1/chat/completions', chat('ctx'), { 'x-request-id': id });
    assert.equal(res.status, 200);
    assert.equal(served(res), 'b');
    await res.arrayBuffer();
    const line = await llmux.logFor(id);
    assert.deepEqual(line.attempts.map((t) => t.model), ['ctx?context_window=10', 'ctx?tokens=2']);
    assert.match(line.attempts[0].error, /maximum context length/);
  });

  test('context length exceeded with no larger window: the provider\'s 400, not retried', async () => {
    const id = rid('ctx');
    const res = await post(llmux.base, '/v1/chat/completions', chat('ctx-nowhere'), { 'x-request-id': id });
    const err = await expectError(res, 400, 'context_length_exceeded');
    assert.match(err.message, /maximum context length/);
    assert.equal((await llmux.logFor(id)).attempts.length, 1);
  });

  test('max_attempts retries the same deployment after a backoff', async () => {
    let res = await ask('again');
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    const id = rid('again');
    res = await post(llmux.base, '/v1/chat/completions', chat('again'), { 'x-request-id': id });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-llmux-attempts'), '2');
    assert.match(res.headers.get('x-llmux-tried'), /^again\/m: status 503[^;]*; again\/m: ok$/);
    await res.arrayBuffer();
    const line = await llmux.logFor(id);
    assert.equal(line.attempts.length, 2);
    assert.match(line.attempts[0].error, /503/);
    assert.equal((await again.stats()).requests, 3);
  });

  test('models: a fallback list after the requested model; llmux fields never go upstream', async () => {
    const res = await ask('broken', { models: ['fallback'], provider: { sort: 'price' } });
    assert.equal(res.status, 200);
    assert.equal(served(res), 'b');
    await res.arrayBuffer();
    const last = await b.last();
    const sent = JSON.parse(last.body);
    assert.equal(sent.model, 'fb?tokens=2');
    assert.equal(sent.models, undefined);
    assert.equal(sent.provider, undefined);
    assert.deepEqual(sent.messages, chat('x').messages);
  });

  test('provider.order, only, ignore', async () => {
    let res = await ask('both', { provider: { order: ['b'] } });
    assert.equal(served(res), 'b');
    await res.arrayBuffer();
    res = await ask('both', { provider: { only: ['b'] } });
    assert.equal(served(res), 'b');
    await res.arrayBuffer();
    res = await ask('both', { provider: { ignore: ['a'] } });
    assert.equal(served(res), 'b');
    await res.arrayBuffer();
    res = await ask('both', { provider: { order: ['a'] } });
    assert.equal(served(res), 'a');
    await res.arrayBuffer();
  });

  test('provider.allow_fallbacks false: only the ordered providers are tried', async () => {
    const res = await post(llmux.base, '/v1/chat/completions',
      chat('broken', { models: ['both'], provider: { order: ['dead'], allow_fallbacks: false } }));
    await expectError(res, 502, 'all_deployments_failed');
  });

  test('provider.sort price and the :floor suffix', async () => {
    let res = await ask('priced', { provider: { sort: 'price' } });
    assert.equal(served(res), 'b');
    await res.arrayBuffer();
    res = await ask('priced:floor');
    assert.equal(served(res), 'b');
    await res.arrayBuffer();
    res = await ask('priced');
    assert.equal(served(res), 'a', 'without a preference the list order holds');
    await res.arrayBuffer();
  });

  test('GET /v1/status reports llmux\'s own overhead; each log line has its share', async () => {
    const id = rid('overhead');
    const res = await post(llmux.base, '/v1/chat/completions', chat('both'), { 'x-request-id': id });
    await res.arrayBuffer();
    const line = await llmux.logFor(id);
    assert.equal(typeof line.overhead_us, 'number');
    assert.ok(line.overhead_us <= line.duration_ms * 1000 + 1000, 'overhead within the request time');
    const st = await getJson(llmux.base, '/v1/status');
    const o = st.overhead_us;
    assert.ok(o.count >= 1);
    assert.ok(o.p50 <= o.p99 && o.p99 <= o.max && o.max > 0);
    assert.equal(typeof st.requests, 'number');
    assert.ok(st.upstream_reuses > 0, 'keep-alive reuse is visible');
  });

  test('repeated names in models and provider.order cannot overflow the plan', async () => {
    const res = await ask('both', { models: Array(8).fill('both'), provider: { order: Array(8).fill('a') } });
    assert.equal(res.status, 200);
    assert.equal(served(res), 'a');
    await res.arrayBuffer();
  });

  test('in-flight counts stay true while requests overlap', async () => {
    // one deployment: two slow streams (20 tokens at 10/s) and a quick answer (max_tokens 1)
    const slow = [1, 2].map(() => post(llmux.base, '/v1/chat/completions',
      chat('inflight', { stream: true })));
    const inflight = async () => deployment(await getJson(llmux.base, '/v1/status'), 'b', 'if?tokens=20&tps=10').inflight;
    await waitFor(async () => (await inflight()) === 2, { what: 'two streams in flight' });
    const quick = await ask('inflight', { max_tokens: 1 });
    assert.equal(quick.status, 200);
    await quick.arrayBuffer();
    assert.equal(await inflight(), 2, 'the quick request did not take the others\' counts with it');
    for (const r of await Promise.all(slow)) await r.arrayBuffer();
    await waitFor(async () => (await inflight()) === 0, { what: 'nothing in flight' });
  });

  test('preferences that leave nothing: 400 that says why', async () => {
    let res = await ask('priced', { provider: { max_price: { prompt: 0.05 } } });
    let err = await expectError(res, 400, 'no_deployment_matches');
    assert.match(err.message, /max_price/);
    assert.match(err.message, /\ba\b.*\bb\b|\bb\b.*\ba\b/);
    res = await ask('both', { provider: { only: ['nobody'] } });
    err = await expectError(res, 400, 'no_deployment_matches');
    assert.match(err.message, /provider\.only/);
    res = await ask('both', { provider: { order: ['nobody'], allow_fallbacks: false } });
    await expectError(res, 400, 'no_deployment_matches');
    res = await ask('both', { models: ['no-such-model'] });
    err = await expectError(res, 404, 'model_not_found');
    assert.match(err.message, /models\[0\]/);
    res = await ask('both', { provider: { sort: 'cheapest' } });
    await expectError(res, 400, null);
    res = await ask('both', { provider: 'a' });
    await expectError(res, 400, null);
    res = await ask('both', { models: 'a' });
    await expectError(res, 400, null);
  });
});

describe('retry budget', () => {
  let ok, llmux;
  before(async () => {
    ok = await startMock({ script: 'tokens=2' });
    const dead = await closedPort();
    llmux = await startLlmux({
      health: { retry_budget_percent: 0, min_retries_per_s: 0 },
      providers: { dead: provider(`http://127.0.0.1:${dead}/v1`), ok: provider(ok.baseUrl) },
      models: { m: { deployments: [{ provider: 'dead', model: 'm' }, { provider: 'ok', model: 'm' }] } },
    });
  });
  after(async () => { await llmux?.stop(); await ok?.stop(); });

  test('an exhausted budget stops retries instead of multiplying load', async () => {
    const res = await post(llmux.base, '/v1/chat/completions', chat('m'));
    const err = await expectError(res, 502, 'all_deployments_failed');
    assert.match(err.message, /retry budget/);
    assert.equal((await ok.stats()).requests, 0);
    const st = await getJson(llmux.base, '/v1/status');
    assert.equal(st.health.retry_budget_refusals, 1);
  });
});

describe('hedged requests', () => {
  let slow, fast, llmux;
  const HEDGE_MS = 200;
  before(async () => {
    slow = await startMock();
    fast = await startMock();
    llmux = await startLlmux({
      timeouts_ms: { connect: 1000, first_byte: 5000, idle: 5000, total: 15000 },
      providers: { slow: provider(slow.baseUrl), fast: provider(fast.baseUrl) },
      models: {
        hedged: { hedge_after_ms: HEDGE_MS, deployments: [
          { provider: 'slow', model: 'm?ttft=2000&tokens=3' }, { provider: 'fast', model: 'm?ttft=50&tokens=3' }] },
        'hedged-ns': { hedge_after_ms: HEDGE_MS, deployments: [
          { provider: 'slow', model: 'n?delay=2000&tokens=3' }, { provider: 'fast', model: 'n?delay=50&tokens=3' }] },
        unhedged: { hedge_after_ms: HEDGE_MS, deployments: [
          { provider: 'fast', model: 'u?tokens=3' }, { provider: 'slow', model: 'u?tokens=3' }] },
      },
    });
  });
  after(async () => { await llmux?.stop(); await slow?.stop(); await fast?.stop(); });

  test('a slow first token starts a hedge; the first to answer wins, the other is closed', async () => {
    const id = rid('hedge');
    const t0 = Date.now();
    const res = await post(llmux.base, '/v1/chat/completions', chat('hedged', { stream: true }), { 'x-request-id': id });
    assert.equal(res.status, 200);
    const datas = await readSse(res);
    const elapsed = Date.now() - t0;
    assert.equal(chunksText(datas), mockText(3));
    assert.equal(datas.at(-1), '[DONE]');
    assert.equal(served(res), 'fast');
    assert.equal(res.headers.get('x-llmux-hedged'), 'won');
    assert.match(res.headers.get('x-llmux-tried'), /^slow\/m\?ttft=2000&tokens=3: cancelled[^;]*; fast\/m\?ttft=50&tokens=3 \(hedge\): ok$/);
    assert.ok(elapsed < 1500, `the hedge answered after ${elapsed} ms, not the 2 s primary`);
    await slow.waitStats((s) => s.aborted === 1, 'the primary cancelled');
    const line = await llmux.logFor(id);
    assert.equal(line.hedged, true);
    assert.equal(line.hedge_won, true);
    assert.equal(line.attempts.length, 2);
    assert.equal(line.attempts[1].hedge, true);
    assert.equal(line.attempts[1].served, true);
    assert.match(line.attempts[0].error, /cancelled/);
  });

  test('non-stream requests are hedged too', async () => {
    const before = (await slow.stats()).aborted;
    const res = await post(llmux.base, '/v1/chat/completions', chat('hedged-ns'));
    assert.equal(res.status, 200);
    assert.equal((await res.json()).choices[0].message.content, mockText(3));
    assert.equal(served(res), 'fast');
    await slow.waitStats((s) => s.aborted === before + 1, 'the primary cancelled');
  });

  test('a fast primary starts no hedge', async () => {
    const id = rid('nohedge');
    const res = await post(llmux.base, '/v1/chat/completions', chat('unhedged'), { 'x-request-id': id });
    assert.equal(served(res), 'fast');
    assert.equal(res.headers.get('x-llmux-hedged'), null);
    await res.arrayBuffer();
    assert.equal((await llmux.logFor(id)).hedged, false);
    const st = await getJson(llmux.base, '/v1/status');
    assert.equal(st.health.hedges, 2);
    assert.equal(st.health.hedges_won, 2);
  });
});
