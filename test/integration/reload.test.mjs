// SIGHUP reloads the config: new requests use the new one at once, requests in flight finish on
// theirs, an invalid file leaves the running config serving (and the log names the JSON path),
// deployment health carries over, and many reloads under load lose nothing and leak nothing.
// SIGTERM: /healthz answers 503 while the listener is still open (shutdown.unready_ms).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startMock, startLlmux, provider, post, chat, sseData, chunksText, mockText, waitFor, fdCount, rssBytes,
} from './lib.mjs';

const reloads = (llmux) => llmux.stderr().split('\n').filter((l) => l.startsWith('{"msg":"config reloaded"')).length;
const failures = (llmux) => llmux.stderr().split('\n').filter((l) => l.startsWith('{"msg":"reload failed"'));

// Rewrites the config file (keeping llmux's listen address) and sends SIGHUP; resolves when the
// reload (or its failure) is logged.
async function reload(llmux, config, { expectFail = false } = {}) {
  const before = expectFail ? failures(llmux).length : reloads(llmux);
  writeFileSync(llmux.configPath, typeof config === 'string' ? config
    : JSON.stringify({ ...config, listen: '127.0.0.1:0' }));
  llmux.proc.kill('SIGHUP');
  await waitFor(() => (expectFail ? failures(llmux).length : reloads(llmux)) > before,
    { what: expectFail ? 'a "reload failed" line' : 'a "config reloaded" line' });
}

const status = async (llmux) => (await fetch(llmux.base + '/v1/status')).json();

function config(mock, models) {
  return { providers: { m: provider(mock.baseUrl) }, models };
}

test('an alias added by SIGHUP is served at once; status counts generations', async () => {
  const mock = await startMock();
  const llmux = await startLlmux(config(mock, { a: { deployments: [{ provider: 'm', model: 'x-a' }] } }));
  try {
    let s = await status(llmux);
    assert.equal(s.config_generation, 1);
    assert.ok(Math.abs(s.config_loaded_at - Date.now() / 1000) < 120, `loaded_at ${s.config_loaded_at}`);
    let res = await post(llmux.base, '/v1/chat/completions', chat('b'));
    assert.equal(res.status, 404, 'b is not an alias yet');
    await res.text();

    await reload(llmux, config(mock, {
      a: { deployments: [{ provider: 'm', model: 'x-a' }] },
      b: { deployments: [{ provider: 'm', model: 'x-b' }] },
    }));
    res = await post(llmux.base, '/v1/chat/completions', chat('b'));
    assert.equal(res.status, 200);
    await res.json();
    assert.equal(JSON.parse((await mock.last()).body).model, 'x-b', 'the new deployment got the request');
    s = await status(llmux);
    assert.equal(s.config_generation, 2);
    assert.equal(s.worker, 0);
    assert.equal(s.worker_pid, llmux.pid);
  } finally {
    await llmux.stop();
    await mock.stop();
  }
});

test('a stream started before a reload completes on its config with every event', async () => {
  const mock = await startMock();
  const llmux = await startLlmux(config(mock, { slow: { deployments: [{ provider: 'm', model: 'x?tokens=12&tps=15' }] } }));
  try {
    const res = await post(llmux.base, '/v1/chat/completions', chat('slow', { stream: true }));
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let text = dec.decode((await reader.read()).value);
    // The alias goes away and the provider moves: the stream in flight must not notice.
    const other = await startMock();
    try {
      await reload(llmux, config(other, { fresh: { deployments: [{ provider: 'm', model: 'y' }] } }));
      const gone = await post(llmux.base, '/v1/chat/completions', chat('slow'));
      assert.equal(gone.status, 404, 'new requests use the new config');
      await gone.text();
      for (;;) {
        const r = await reader.read();
        if (r.done) break;
        text += dec.decode(r.value);
      }
      const datas = text.split(/\r?\n\r?\n/).filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
      assert.equal(chunksText(datas), mockText(12));
      assert.equal(datas.at(-1), '[DONE]');
      const fresh = await post(llmux.base, '/v1/chat/completions', chat('fresh'));
      assert.equal(fresh.status, 200);
      await fresh.json();
      assert.equal((await other.stats()).requests, 1, 'the new provider address is used');
    } finally {
      await other.stop();
    }
  } finally {
    await llmux.stop();
    await mock.stop();
  }
});

test('an invalid config on SIGHUP keeps the running one and the log names the JSON path', async () => {
  const mock = await startMock();
  const llmux = await startLlmux(config(mock, { a: { deployments: [{ provider: 'm', model: 'x' }] } }));
  try {
    await reload(llmux, { providers: { m: provider(mock.baseUrl) }, models: { a: { deployments: [{ provider: 'nope', model: 'x' }] } } },
      { expectFail: true });
    const line = JSON.parse(failures(llmux).at(-1));
    assert.match(line.error, /\$\.models\.a\.deployments\[0\]\.provider/, line.error);
    await reload(llmux, '{ "providers": ', { expectFail: true });
    assert.ok(failures(llmux).at(-1).includes('"error":'), 'a parse error is reported too');
    const res = await post(llmux.base, '/v1/chat/completions', chat('a'));
    assert.equal(res.status, 200, 'the old config still serves');
    await res.json();
    const s = await status(llmux);
    assert.equal(s.config_generation, 1);
    assert.equal(s.configs_in_use, 1);
  } finally {
    await llmux.stop();
    await mock.stop();
  }
});

test('deployment health survives a reload (keyed by provider and model, not position)', async () => {
  const bad = await startMock({ script: 'status=500' });
  const good = await startMock();
  const cfg = (extra) => ({
    providers: { bad: provider(bad.baseUrl), good: provider(good.baseUrl) },
    health: { failure_threshold: 2, base_ejection_ms: 60000 },
    models: { ...extra, m: { deployments: [{ provider: 'bad', model: 'x' }, { provider: 'good', model: 'y' }] } },
  });
  const llmux = await startLlmux(cfg({}));
  try {
    for (let i = 0; i < 2; i++) {
      const res = await post(llmux.base, '/v1/chat/completions', chat('m'));
      assert.equal(res.status, 200);
      await res.json();
    }
    const ejected = (s) => s.health.deployments.find((d) => d.provider === 'bad' && d.model === 'x');
    assert.equal(ejected(await status(llmux)).state, 'ejected');
    // A new alias first: every deployment moves in the config's arrays.
    await reload(llmux, cfg({ first: { deployments: [{ provider: 'good', model: 'z' }] } }));
    const d = ejected(await status(llmux));
    assert.equal(d.state, 'ejected', 'still ejected after the reload');
    assert.equal(d.failures, 2);
    const before = (await bad.stats()).requests;
    const res = await post(llmux.base, '/v1/chat/completions', chat('m'));
    assert.equal(res.status, 200);
    await res.json();
    assert.equal((await bad.stats()).requests, before, 'the ejected deployment is still skipped');
  } finally {
    await llmux.stop();
    await bad.stop();
    await good.stop();
  }
});

// A streamed chat request on `agent`: resolves with the status and the SSE data payloads.
function streamOn(agent, port, model) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/chat/completions', agent,
      headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, datas: sseData(text) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify(chat(model, { stream: true })));
  });
}

test('100 reloads under load lose no request and leak no descriptor', async () => {
  const mock = await startMock();
  const dir = mkdtempSync(join(tmpdir(), 'llmux-reload-'));
  const cfgN = (n) => ({
    ...config(mock, {
      a: { deployments: [{ provider: 'm', model: 'x?tokens=6&tps=60' }] },
      [`alias${n}`]: { deployments: [{ provider: 'm', model: 'y' }] },
    }),
    access_log: join(dir, 'access.log'), // stderr keeps only the reload lines
    pool: { idle_timeout_ms: 1000 },
  });
  // ASan keeps freed memory in a 256 MB quarantine by default: RSS would say nothing.
  const asan = `${process.env.ASAN_OPTIONS ? `${process.env.ASAN_OPTIONS}:` : ''}quarantine_size_mb=1`;
  const llmux = await startLlmux(cfgN(0), { env: { ASAN_OPTIONS: asan } });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 200 });
  try {
    const fds0 = fdCount(llmux.pid);
    const warm = await streamOn(agent, llmux.port, 'a');
    assert.equal(warm.status, 200);
    const rss0 = rssBytes(llmux.pid);
    let sent = 0, ok = 0;
    const failed = [];
    let loading = true;
    const clients = Array.from({ length: 200 }, async () => {
      while (loading) {
        sent++;
        try {
          const r = await streamOn(agent, llmux.port, 'a');
          if (r.status === 200 && chunksText(r.datas) === mockText(6) && r.datas.at(-1) === '[DONE]') ok++;
          else failed.push(`${r.status} ${r.datas.slice(-2).join('|')}`);
        } catch (e) {
          failed.push(String(e));
        }
      }
    });
    for (let i = 1; i <= 100; i++) await reload(llmux, cfgN(i));
    loading = false;
    await Promise.all(clients);
    assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${sent} requests failed`);
    assert.equal(ok, sent);
    assert.ok(sent >= 200, `only ${sent} requests ran during the reloads`);
    const s = await status(llmux);
    assert.equal(s.config_generation, 101);
    assert.equal(s.active, 0);
    assert.equal(s.configs_in_use, 1, 'every old config was freed when its last request ended');
    const res = await post(llmux.base, '/v1/chat/completions', chat('alias100'));
    assert.equal(res.status, 200);
    await res.json();
    agent.destroy(); // every client connection closes; idle upstream ones time out in 1 s
    await waitFor(() => fdCount(llmux.pid) <= fds0 + 1, // + the fetch above's connection
      { timeout: 10000, what: `descriptors back to ${fds0} (now ${fdCount(llmux.pid)})` });
    const grown = rssBytes(llmux.pid) - rss0;
    assert.ok(grown < 64 << 20, `RSS grew by ${grown} bytes over 100 reloads`);
  } finally {
    agent.destroy();
    await llmux.stop(); // LeakSanitizer: every runtime, health record and config was freed
    await mock.stop();
  }
});

test('SIGTERM: /healthz answers 503 while the listener is still open, requests are still served', async () => {
  const mock = await startMock();
  const llmux = await startLlmux({ ...config(mock, { a: { deployments: [{ provider: 'm', model: 'x' }] } }),
    shutdown: { unready_ms: 1500, drain_ms: 5000 } });
  try {
    assert.equal((await fetch(llmux.base + '/healthz')).status, 200);
    llmux.proc.kill('SIGTERM');
    const h = await waitFor(async () => {
      const r = await fetch(llmux.base + '/healthz', { headers: { connection: 'close' } });
      return r.status === 503 ? r : false;
    }, { what: '/healthz to answer 503' });
    assert.equal((await h.json()).status, 'draining');
    const res = await post(llmux.base, '/v1/chat/completions', chat('a'));
    assert.equal(res.status, 200, 'still serving while unready');
    await res.json();
    assert.equal((await status(llmux)).draining, true);
    await new Promise((r) => (llmux.proc.exitCode !== null ? r() : llmux.proc.once('exit', r)));
    assert.equal(llmux.proc.exitCode, 0);
  } finally {
    await llmux.stop();
    await mock.stop();
  }
});
