// "workers": 2: a supervisor forks two workers sharing the port (SO_REUSEPORT). Both serve,
// a worker killed with SIGKILL is started again and requests keep succeeding, SIGHUP reloads
// both, SIGTERM drains both (streams in flight finish), and the access log's lines never mix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMock, startLlmux, provider, post, chat, sseData, chunksText, mockText, waitFor, sample, promtool } from './lib.mjs';

// /v1/status on a fresh connection (so the kernel picks a worker for each).
async function status(llmux) {
  const res = await fetch(llmux.base + '/v1/status', { headers: { connection: 'close' } });
  assert.equal(res.status, 200);
  return res.json();
}

// Asks until both workers have answered; returns their status documents by index.
async function bothWorkers(llmux, pred = () => true, what = 'both workers to answer') {
  const seen = new Map();
  await waitFor(async () => {
    const s = await status(llmux);
    if (pred(s)) seen.set(s.worker, s);
    return seen.size === 2;
  }, { what, timeout: 30000, every: 1 });
  return seen;
}

function config(mock, dir, models) {
  return { workers: 2, providers: { m: provider(mock.baseUrl) }, models, access_log: join(dir, 'access.log') };
}

test('two workers share the port; a killed worker is replaced; SIGHUP reloads both; SIGTERM drains both', async () => {
  const mock = await startMock();
  const dir = mkdtempSync(join(tmpdir(), 'llmux-workers-'));
  const llmux = await startLlmux(config(mock, dir, { a: { deployments: [{ provider: 'm', model: 'x?tokens=5' }] } }));
  try {
    // Both serve, each with its own pid, neither is the supervisor.
    let w = await bothWorkers(llmux);
    const pids = [w.get(0).worker_pid, w.get(1).worker_pid];
    assert.notEqual(pids[0], pids[1]);
    assert.ok(!pids.includes(llmux.pid));

    // Requests through both: every one succeeds, and each writes one whole access-log line.
    const N = 40;
    const results = await Promise.all(Array.from({ length: N }, async () => {
      const res = await post(llmux.base, '/v1/chat/completions', chat('a'), { connection: 'close' });
      return res.status === 200 && (await res.json()).choices[0].message.content === mockText(5);
    }));
    assert.equal(results.filter(Boolean).length, N);

    // The access log is buffered for up to 100 ms (README): a SIGKILL loses what waits, so the
    // lines of these N requests are on disk before the kill.
    const logPath = join(dir, 'access.log');
    const logLines = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8').split('\n').filter((l) => l) : []);
    await waitFor(() => logLines().length >= N, { what: 'the access log to be written', timeout: 15000 });

    // SIGKILL one worker: the supervisor logs it and starts another; requests keep working.
    process.kill(pids[0], 'SIGKILL');
    await waitFor(() => llmux.stderr().includes('"msg":"worker died"'), { what: 'the supervisor to notice', timeout: 15000 });
    const died = JSON.parse(llmux.stderr().split('\n').find((l) => l.includes('"msg":"worker died"')));
    assert.equal(died.pid, pids[0]);
    assert.equal(died.signal, 9);
    w = await bothWorkers(llmux, (s) => s.worker_pid !== pids[0], 'a replacement worker');
    assert.notEqual(w.get(0).worker_pid, pids[0]);
    assert.equal(w.get(1).worker_pid, pids[1], 'the other worker kept running');
    for (let i = 0; i < 10; i++) {
      const res = await post(llmux.base, '/v1/chat/completions', chat('a'), { connection: 'close' });
      assert.equal(res.status, 200);
      await res.json();
    }

    // SIGHUP: both workers load the new config (a new alias).
    writeFileSync(llmux.configPath, JSON.stringify({
      ...config(mock, dir, { a: { deployments: [{ provider: 'm', model: 'x' }] }, b: { deployments: [{ provider: 'm', model: 'y' }] } }),
      listen: '127.0.0.1:0',
    }));
    llmux.proc.kill('SIGHUP');
    await bothWorkers(llmux, (s) => s.config_generation === 2, 'both workers on generation 2');
    for (let i = 0; i < 6; i++) {
      const res = await post(llmux.base, '/v1/chat/completions', chat('b'), { connection: 'close' });
      assert.equal(res.status, 200);
      await res.json();
    }

    // Streams in flight on both workers, then SIGTERM: all finish, the supervisor exits 0.
    const streams = [];
    await waitFor(async () => {
      const res = await post(llmux.base, '/v1/chat/completions', chat('m/x?tokens=40&tps=10', { stream: true }), { connection: 'close' });
      assert.equal(res.status, 200);
      streams.push(res.text());
      const s = await bothWorkers(llmux);
      return [...s.values()].every((x) => x.active > 0);
    }, { what: 'a stream in flight on each worker', timeout: 30000 });
    llmux.proc.kill('SIGTERM');
    for (const text of await Promise.all(streams)) {
      const datas = sseData(text);
      assert.equal(chunksText(datas), mockText(40));
      assert.equal(datas.at(-1), '[DONE]');
    }
    await new Promise((r) => (llmux.proc.exitCode !== null ? r() : llmux.proc.once('exit', r)));
    assert.equal(llmux.proc.exitCode, 0);
    assert.ok(llmux.stderr().includes('"msg":"supervisor stopped"'));

    // Every line of the shared access log is one whole JSON object.
    const lines = logLines();
    assert.ok(lines.length >= N + 16, `${lines.length} access-log lines`);
    for (const l of lines) JSON.parse(l);
  } finally {
    await llmux.stop();
    await mock.stop();
  }
});

// A scrape on a fresh connection (so the kernel picks a worker for each).
async function scrape(llmux) {
  const res = await fetch(llmux.base + '/metrics', { headers: { connection: 'close' } });
  assert.equal(res.status, 200);
  return res.text();
}

test('workers: any worker answers /metrics and /v1/models/{id}/endpoints for all, across a worker restart', async () => {
  const mock = await startMock();
  const dir = mkdtempSync(join(tmpdir(), 'llmux-workers-'));
  const llmux = await startLlmux(config(mock, dir, {
    a: { deployments: [{ provider: 'm', model: 'x?tokens=5' }] },
    c: { deployments: [{ provider: 'm', model: 'y?tokens=3' }], cache: { ttl_s: 60 } },
  }));
  const labels = { endpoint: 'chat', model: 'a', status: '200' };
  const attempt = { provider: 'm', model: 'x?tokens=5', outcome: 'success' };
  try {
    // Requests until both workers have served some: each worker counted its own.
    let sent = 0;
    const ids = [];
    await waitFor(async () => {
      for (let i = 0; i < 8; i++, sent++) {
        const res = await post(llmux.base, '/v1/chat/completions', chat('a'), { connection: 'close' });
        assert.equal(res.status, 200);
        ids.push(res.headers.get('x-request-id'));
        await res.json();
      }
      const s = await bothWorkers(llmux);
      return [...s.values()].every((x) => x.requests > 0);
    }, { what: 'requests served by both workers', timeout: 30000 });
    // Cache traffic on both workers: a miss then hits (each worker has its own memory store).
    let cacheRequests = 0;
    for (let i = 0; i < 6; i++, cacheRequests++) {
      const res = await post(llmux.base, '/v1/chat/completions', chat('c'), { connection: 'close' });
      assert.equal(res.status, 200);
      await res.json();
    }

    // Every scrape, whichever worker answers it, counts every request once; so does the
    // endpoints document. (The workers publish their own figures within a second.)
    const cacheTotal = (t) => ['hit', 'miss'].reduce((n, r) => n + sample(t, 'llmux_cache_requests_total', { result: r }), 0);
    const published = (t) => cacheTotal(t) === cacheRequests &&
      ['0', '1'].every((w) => sample(t, 'llmux_overhead_seconds_count', { worker: w }) > 0);
    await waitFor(async () => published(await scrape(llmux)), { what: 'the figures of both workers', timeout: 5000, every: 50 });
    for (let i = 0; i < 8; i++) {
      const text = await scrape(llmux);
      assert.equal(sample(text, 'llmux_requests_total', labels), sent, `scrape ${i}`);
      assert.equal(sample(text, 'llmux_attempts_total', attempt), sent);
      assert.equal(sample(text, 'gen_ai_client_operation_duration_seconds_count', { gen_ai_request_model: 'a' }), sent);
      assert.equal(cacheTotal(text), cacheRequests);
      assert.equal(sample(text, 'llmux_deployment_up', { provider: 'm', model: 'x?tokens=5' }), 1);
      for (const w of ['0', '1']) assert.ok(sample(text, 'llmux_overhead_seconds_count', { worker: w }) > 0, `worker ${w}'s overhead`);
      if (i === 0) promtool(text);
      const res = await fetch(llmux.base + '/v1/models/a/endpoints', { headers: { connection: 'close' } });
      const ep = (await res.json()).data.endpoints[0];
      assert.equal(ep.requests, sent);
      assert.equal(ep.uptime_last_5m, 100);
      assert.ok(ep.latency_last_30m && ep.latency_last_30m.p50 > 0);
    }
    // Every request's generation record, asked for on a fresh connection (any worker).
    for (const id of ids) {
      const res = await fetch(`${llmux.base}/v1/generation?id=${id}`, { headers: { connection: 'close' } });
      assert.equal(res.status, 200, id);
      const g = (await res.json()).data;
      assert.equal(g.id, id);
      assert.equal(g.model, 'a');
      assert.equal(g.provider_responses.length, 1);
    }
    const list = await (await fetch(`${llmux.base}/v1/generations?limit=100`, { headers: { connection: 'close' } })).json();
    assert.equal(list.data.length, Math.min(100, sent + cacheRequests), 'the trail lists both workers\' requests');
    const listed = new Set(list.data.map((g) => g.id));
    if (sent + cacheRequests <= 100) for (const id of ids) assert.ok(listed.has(id), id);
    const cpuBefore = sample(await scrape(llmux), 'process_cpu_seconds_total');

    // A worker killed and started again: its replacement carries on from its counts, so no
    // counter goes back, and new requests add to them.
    const w = await bothWorkers(llmux);
    const victim = w.get(0).worker_pid;
    process.kill(victim, 'SIGKILL');
    await waitFor(() => llmux.stderr().includes('"msg":"worker died"'), { what: 'the supervisor to notice', timeout: 15000 });
    await bothWorkers(llmux, (s) => s.worker_pid !== victim, 'a replacement worker');
    for (let i = 0; i < 4; i++, sent++) {
      const res = await post(llmux.base, '/v1/chat/completions', chat('a'), { connection: 'close' });
      assert.equal(res.status, 200);
      await res.json();
    }
    for (let i = 0; i < 6; i++) {
      const text = await scrape(llmux);
      assert.equal(sample(text, 'llmux_requests_total', labels), sent, `after the restart, scrape ${i}`);
      assert.equal(sample(text, 'llmux_attempts_total', attempt), sent);
      assert.ok(sample(text, 'process_cpu_seconds_total') >= cpuBefore, 'CPU seconds never go back');
    }
  } finally {
    await llmux.stop();
    await mock.stop();
  }
});

test('a reload whose new deployments do not fit the shared registry is refused whole; the running config and a restarted worker carry on', async () => {
  const mock = await startMock();
  const dir = mkdtempSync(join(tmpdir(), 'llmux-workers-'));
  const small = { a: { deployments: [{ provider: 'm', model: 'x?tokens=2' }] } };
  const big = { ...small };
  for (let i = 0; i < 1300; i++) big[`big${i}`] = { deployments: [{ provider: 'm', model: `y${i}` }] };
  for (const workers of [1, 2]) {
    const llmux = await startLlmux({ ...config(mock, dir, small), workers });
    try {
      writeFileSync(llmux.configPath, JSON.stringify({ ...config(mock, dir, big), workers, listen: '127.0.0.1:0' }));
      llmux.proc.kill('SIGHUP');
      await waitFor(() => llmux.stderr().includes('"msg":"reload failed"'), { what: 'the reload to be refused', timeout: 15000 });
      const line = llmux.stderr().split('\n').find((l) => l.includes('"msg":"reload failed"'));
      assert.match(line, /shared registry .* no room .* restart llmux/);
      assert.ok(!llmux.stderr().includes('"msg":"config reloaded"'), `workers ${workers}`);
      // The running config serves; the new aliases do not exist.
      let res = await post(llmux.base, '/v1/chat/completions', chat('a'), { connection: 'close' });
      assert.equal(res.status, 200);
      await res.json();
      res = await post(llmux.base, '/v1/chat/completions', chat('big7'), { connection: 'close' });
      assert.equal(res.status, 404);
      await res.text();
      if (workers === 2) { // a worker started again starts on the config the others run
        const victim = (await bothWorkers(llmux)).get(1).worker_pid;
        process.kill(victim, 'SIGKILL');
        await waitFor(() => llmux.stderr().includes('"msg":"worker died"'), { what: 'the supervisor to notice', timeout: 15000 });
        await bothWorkers(llmux, (s) => s.worker_pid !== victim, 'a replacement worker');
        assert.equal(llmux.stderr().split('\n').filter((l) => l.includes('"msg":"worker died"')).length, 1, 'the replacement stays up');
      }
      // A config that fits reloads.
      writeFileSync(llmux.configPath, JSON.stringify({ ...config(mock, dir, { ...small, b: small.a }), workers, listen: '127.0.0.1:0' }));
      llmux.proc.kill('SIGHUP');
      await waitFor(async () => {
        const r = await post(llmux.base, '/v1/chat/completions', chat('b'), { connection: 'close' });
        await r.text();
        return r.status === 200 && (workers === 1 || (await bothWorkers(llmux)).size === 2);
      }, { what: 'the fitting reload', timeout: 15000 });
    } finally {
      await llmux.stop();
    }
  }
  await mock.stop();
});

test('workers: an invalid value is refused with its JSON path', async () => {
  const { runLlmux, writeConfig } = await import('./lib.mjs');
  const r = runLlmux(['-t', '-c', writeConfig({ workers: 0, providers: { m: provider('http://127.0.0.1:1/v1') } })]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /\$\.workers: expected a whole number from 1 to 64, or "auto"/);
  const ok = runLlmux(['-t', '-c', writeConfig({ workers: 'auto', providers: { m: provider('http://127.0.0.1:1/v1') } })]);
  assert.equal(ok.status, 0, ok.stderr);
});
