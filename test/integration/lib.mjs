// Shared harness for llmux integration tests: real llmux and mockllm processes on loopback.
// Every process listens on port 0 and reports its real port on stdout, so tests run in parallel.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

export const LLMUX_BIN = process.env.LLMUX_BIN;
export const MOCKLLM_BIN = process.env.MOCKLLM_BIN;
export const CERTS = process.env.LLMUX_TEST_CERTS;

// Resolves with the first stdout line matching re (the process's "listening on" line).
function waitForLine(proc, re, what) {
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d) => {
      out += d.toString();
      const m = out.match(re);
      if (m) {
        proc.stdout.off('data', onData);
        resolve(m);
      }
    };
    proc.stdout.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`${what} exited (${code}) before listening: ${out}`)));
  });
}

// A sanitizer report or a crash in a child is a failed test, whatever the HTTP results were.
function checkStderr(name, text) {
  assert.ok(!/AddressSanitizer|LeakSanitizer|runtime error:|Segmentation fault/.test(text),
    `${name} reported a memory error:\n${text.slice(-4000)}`);
}

export async function startMock({ tls = false, script, args = [] } = {}) {
  const a = ['--listen', '127.0.0.1:0', '--quiet', ...args];
  if (tls) a.push('--tls-cert', join(CERTS, 'localhost.pem'), '--tls-key', join(CERTS, 'localhost.key'));
  if (script) a.push('--script', script);
  const proc = spawn(MOCKLLM_BIN, a, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d.toString(); });
  const m = await waitForLine(proc, /listening on [^\s]*:(\d+)/, 'mockllm');
  const port = Number(m[1]);
  const admin = `http://127.0.0.1:${port}`;
  // The admin endpoints are always reached over plain HTTP only when the mock is plain.
  const get = async (path) => {
    if (tls) throw new Error('admin endpoints of a TLS mock: use a plain mock for stats');
    return (await fetch(admin + path)).json();
  };
  return {
    port,
    proc,
    baseUrl: `${tls ? 'https' : 'http'}://${tls ? 'localhost' : '127.0.0.1'}:${port}/v1`,
    stats: () => get('/mock/stats'),
    last: () => get('/mock/last'),
    reset: async () => { await fetch(admin + '/mock/reset', { method: 'POST' }); },
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('exit', r));
      }
      checkStderr('mockllm', stderr);
    },
  };
}

// Starts llmux with a config object (listen is forced to 127.0.0.1:0).
export async function startLlmux(config, { env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'llmux-it-'));
  const path = join(dir, 'llmux.json');
  writeFileSync(path, JSON.stringify({ ...config, listen: '127.0.0.1:0' }, null, 2));
  const proc = spawn(LLMUX_BIN, ['-c', path], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d.toString(); });
  const m = await waitForLine(proc, /llmux listening on [^\s]*:(\d+)/, 'llmux');
  const port = Number(m[1]);
  const self = {
    port,
    proc,
    configPath: path,
    base: `http://127.0.0.1:${port}`,
    stderr: () => stderr,
    // Access-log lines (one JSON object per request).
    accessLog: () => stderr.split('\n').filter((l) => l.startsWith('{"request_id"')).map((l) => JSON.parse(l)),
    // Waits until n access-log lines exist (the log is written when an exchange ends).
    async waitLog(n, ms = 5000) {
      const end = Date.now() + ms;
      while (self.accessLog().length < n) {
        if (Date.now() > end) throw new Error(`expected ${n} access-log lines, have ${self.accessLog().length}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      return self.accessLog();
    },
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('exit', r));
      }
      checkStderr('llmux', stderr);
      assert.equal(proc.exitCode, 0, `llmux exit code ${proc.exitCode}\n${stderr.slice(-2000)}`);
    },
  };
  return self;
}

export function provider(baseUrl, extra = {}) {
  return { kind: 'openai', base_url: baseUrl, ...extra };
}

export async function post(base, path, body, headers = {}) {
  return fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

export function chat(model, extra = {}) {
  return { model, messages: [{ role: 'user', content: 'hello there' }], ...extra };
}

// Reads a whole SSE response into its data payloads (strings), in order.
export async function readSse(res) {
  const text = await res.text();
  return text.split(/\n\n/).filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
}

// The content text of parsed chat chunks.
export function chunksText(datas) {
  return datas.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d))
    .map((c) => (c.choices?.[0]?.delta?.content ?? c.choices?.[0]?.text ?? '')).join('');
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
