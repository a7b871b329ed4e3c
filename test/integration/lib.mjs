// Shared harness for llmux integration tests: real llmux and mockllm processes on loopback.
// Every process listens on port 0 and reports its real port on stdout, so tests run in parallel.
//
// Rules the tests follow: no fixed sleeps to "let things happen" (poll a condition with a
// deadline: waitFor), no assertions about speed beyond generous sanity bounds, and every
// process started is stopped in `after` (stop() fails the test on a sanitizer report, a crash,
// or a non-zero exit on SIGTERM).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

export const LLMUX_BIN = process.env.LLMUX_BIN;
export const MOCKLLM_BIN = process.env.MOCKLLM_BIN;
export const CERTS = process.env.LLMUX_TEST_CERTS;

// ctest sets these; a bare `node --test` run needs them too.
function needEnv() {
  for (const v of ['LLMUX_BIN', 'MOCKLLM_BIN', 'LLMUX_TEST_CERTS'])
    if (!process.env[v]) throw new Error(`${v} is not set: run through ctest (ctest -R it_) or export it`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls fn (sync or async) every `every` ms until it returns a truthy value, which is returned.
// Throws with `what` and the last value seen when `timeout` ms pass first.
export async function waitFor(fn, { timeout = 5000, every = 20, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await sleep(every);
  }
}

// Resolves with the first stdout line matching re (the process's "listening on" line).
function waitForLine(proc, re, what, stderrOf) {
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d) => {
      out += d.toString();
      const m = out.match(re);
      if (m) {
        proc.stdout.off('data', onData);
        proc.off('exit', onExit);
        resolve(m);
      }
    };
    const onExit = (code, sig) => reject(new Error(
      `${what} exited (${code ?? sig}) before listening: ${out}\n${stderrOf().slice(-3000)}`));
    proc.stdout.on('data', onData);
    proc.once('exit', onExit);
  });
}

// A sanitizer report or a crash in a child is a failed test, whatever the HTTP results were.
function checkStderr(name, text) {
  assert.ok(!/AddressSanitizer|LeakSanitizer|runtime error:|Segmentation fault/.test(text),
    `${name} reported a memory error:\n${text.slice(-4000)}`);
}

function exited(proc) {
  return proc.exitCode !== null || proc.signalCode !== null;
}

// SIGTERM, then wait for the exit; a process that does not exit within `ms` is killed and the
// test fails (a gateway that hangs on shutdown is a bug a user would notice).
async function terminate(proc, name, ms = 10000) {
  if (exited(proc)) return;
  const done = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  let timer;
  const hung = await Promise.race([
    done.then(() => false),
    new Promise((r) => { timer = setTimeout(() => r(true), ms); }),
  ]);
  clearTimeout(timer);
  if (hung) {
    proc.kill('SIGKILL');
    await done;
    assert.fail(`${name} did not exit within ${ms} ms of SIGTERM`);
  }
}

// One HTTP(S) GET/POST to a mock's admin endpoints on a fresh connection (agent: false), so the
// test's own admin traffic never sits in a pool that would skew the mock's connection counts.
// TLS 1.2 at most (all the mock speaks): a TLS 1.3 client would offer a random session ID
// (middlebox compatibility) that the mock would count as a session offered (tls_offered).
function adminRequest(port, tls, method, path, host = '127.0.0.1') {
  const mod = tls ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request({
      host: tls ? 'localhost' : host, port, method, path, agent: false,
      headers: { connection: 'close' },
      ...(tls ? { ca: readFileSync(join(CERTS, 'ca.pem')), servername: 'localhost', maxVersion: 'TLSv1.2' } : {}),
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

// host: the address to listen on ('127.0.0.1', or '::1' for IPv6).
export async function startMock({ tls = false, script, args = [], host = '127.0.0.1' } = {}) {
  needEnv();
  const a = ['--listen', `${host}:0`, '--quiet', ...args];
  if (tls) a.push('--tls-cert', join(CERTS, 'localhost.pem'), '--tls-key', join(CERTS, 'localhost.key'));
  if (script) a.push('--script', script);
  const proc = spawn(MOCKLLM_BIN, a, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d.toString(); });
  const m = await waitForLine(proc, /listening on [^\s]*:(\d+)/, 'mockllm', () => stderr);
  const port = Number(m[1]);
  const getJson = async (path) => JSON.parse((await adminRequest(port, tls, 'GET', path, host)).body);
  const hostInUrl = host.includes(':') ? `[${host}]` : host;
  const self = {
    port,
    proc,
    pid: proc.pid,
    tls,
    baseUrl: `${tls ? 'https' : 'http'}://${tls ? 'localhost' : hostInUrl}:${port}/v1`,
    stats: () => getJson('/mock/stats'),
    last: () => getJson('/mock/last'),
    reset: async () => { await adminRequest(port, tls, 'POST', '/mock/reset', host); },
    // Waits until pred(stats) holds; returns those stats.
    waitStats: (pred, what = 'mock stats', timeout = 5000) =>
      waitFor(async () => { const s = await self.stats(); return pred(s) ? s : false; }, { timeout, what }),
    stderr: () => stderr,
    async stop() {
      await terminate(proc, 'mockllm');
      checkStderr('mockllm', stderr);
    },
  };
  return self;
}

export function writeConfig(config) {
  const dir = mkdtempSync(join(tmpdir(), 'llmux-it-'));
  const path = join(dir, 'llmux.json');
  writeFileSync(path, typeof config === 'string' ? config : JSON.stringify(config, null, 2));
  return path;
}

// Runs llmux to completion (for -t and --version): { status, stdout, stderr }.
export function runLlmux(args, { env = {} } = {}) {
  needEnv();
  const r = spawnSync(LLMUX_BIN, args, { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 20000 });
  checkStderr('llmux', r.stderr ?? '');
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

// Starts llmux with a config object; it listens on port 0 of `listen` (127.0.0.1 unless told).
// nofile: run it with that limit on open descriptors (prlimit execs llmux: same pid).
export async function startLlmux(config, { env = {}, listen = '127.0.0.1', nofile } = {}) {
  needEnv();
  const v6 = listen.includes(':');
  const path = writeConfig({ ...config, listen: v6 ? `[${listen}]:0` : `${listen}:0` });
  const [cmd, args] = nofile
    ? ['prlimit', [`--nofile=${nofile}:${nofile}`, LLMUX_BIN, '-c', path]]
    : [LLMUX_BIN, ['-c', path]];
  const proc = spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d.toString(); });
  const m = await waitForLine(proc, /llmux listening on [^\s]*:(\d+)/, 'llmux', () => stderr);
  const port = Number(m[1]);
  const self = {
    port,
    proc,
    pid: proc.pid,
    configPath: path,
    base: `http://${v6 ? `[${listen}]` : listen}:${port}`,
    stderr: () => stderr,
    // Access-log lines (one JSON object per request).
    accessLog: () => stderr.split('\n').filter((l) => l.startsWith('{"request_id"')).map((l) => JSON.parse(l)),
    // Waits until n access-log lines exist (the log is written when an exchange ends).
    async waitLog(n, ms = 5000) {
      await waitFor(() => self.accessLog().length >= n, { timeout: ms, what: `${n} access-log lines` });
      return self.accessLog();
    },
    // Waits for the access-log line of one request id and returns it.
    logFor: (id, ms = 5000) => waitFor(() => self.accessLog().find((l) => l.request_id === id),
      { timeout: ms, what: `access-log line of ${id}` }),
    async stop() {
      await terminate(proc, 'llmux');
      checkStderr('llmux', stderr);
      assert.equal(proc.exitCode, 0, `llmux exit ${proc.exitCode ?? proc.signalCode}\n${stderr.slice(-2000)}`);
    },
  };
  return self;
}

export function provider(baseUrl, extra = {}) {
  return { kind: 'openai', base_url: baseUrl, ...extra };
}

let idCounter = 0;
// A request id unique within this test process, to find a request's access-log line.
export function rid(prefix = 'it') {
  return `${prefix}-${process.pid}-${++idCounter}`;
}

export async function post(base, path, body, headers = {}) {
  return fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(30000),
  });
}

export function chat(model, extra = {}) {
  return { model, messages: [{ role: 'user', content: 'hello there' }], ...extra };
}

// The text mockllm generates for n tokens: "w0 w1 ... w<n-1> ".
export function mockText(n) {
  let s = '';
  for (let i = 0; i < n; i++) s += `w${i} `;
  return s;
}

// Splits SSE text into the data payloads of its complete events, in order.
export function sseData(text) {
  return text.split(/\r?\n\r?\n/).filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
}

// Reads a whole SSE response into its data payloads (strings), in order.
export async function readSse(res) {
  return sseData(await res.text());
}

// Parsed JSON chunks of SSE payloads ([DONE] left out).
export function chunks(datas) {
  return datas.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));
}

// The content text of parsed chat chunks.
export function chunksText(datas) {
  return chunks(datas)
    .map((c) => (c.choices?.[0]?.delta?.content ?? c.choices?.[0]?.text ?? '')).join('');
}

// Asserts an OpenAI-shaped error body and returns its error object.
export function assertErrorShape(body, status) {
  assert.equal(typeof body, 'object', `status ${status}: body is not JSON`);
  assert.ok(body.error, `status ${status}: no "error" object in ${JSON.stringify(body)}`);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0, 'error.message is empty');
  assert.equal(typeof body.error.type, 'string');
  assert.ok('code' in body.error, `status ${status}: error has no "code" member`);
  return body.error;
}

// Fetches and checks an error answer: status, OpenAI shape, optional code. Returns the error.
export async function expectError(res, status, code) {
  const text = await res.text();
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${text}`);
  let body;
  try { body = JSON.parse(text); } catch { assert.fail(`status ${status}: body is not JSON: ${text}`); }
  const err = assertErrorShape(body, status);
  if (code !== undefined) assert.equal(err.code, code, `error code for ${status}`);
  return err;
}

// Writes raw bytes to host:port and collects everything until the peer closes (or `timeout`).
// Returns { data, closed, status, headers, body } parsed from the first response head.
export function rawRequest(port, bytes, { timeout = 5000, host = '127.0.0.1' } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, host);
    const parts = [];
    let closed = false;
    const timer = setTimeout(() => { sock.destroy(); finish(); }, timeout);
    const finish = () => {
      clearTimeout(timer);
      const data = Buffer.concat(parts).toString('latin1');
      resolve({ data, closed, ...parseHead(data) });
    };
    sock.on('data', (d) => parts.push(d));
    sock.on('end', () => { closed = true; });
    sock.on('close', () => { closed = true; finish(); });
    sock.on('error', (e) => { if (e.code !== 'ECONNRESET' && e.code !== 'EPIPE') reject(e); });
    sock.write(bytes);
  });
}

export function parseHead(data) {
  const end = data.indexOf('\r\n\r\n');
  if (end < 0) return { status: 0, headers: {}, body: '' };
  const lines = data.slice(0, end).split('\r\n');
  const m = lines[0].match(/^HTTP\/1\.[01] (\d{3})/);
  const headers = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: m ? Number(m[1]) : 0, headers, body: data.slice(end + 4) };
}

// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
export function closedPort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Resident set size of a process, in bytes.
export function rssBytes(pid) {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return Number(m[1]) * 1024;
}

// Bytes a process has passed through read()/write() system calls so far (sockets included).
export function ioBytes(pid) {
  const t = readFileSync(`/proc/${pid}/io`, 'utf8');
  return { rchar: Number(t.match(/rchar:\s+(\d+)/)[1]), wchar: Number(t.match(/wchar:\s+(\d+)/)[1]) };
}

// Headers as a plain object, to search them for secrets.
export function headersText(res) {
  return [...res.headers.entries()].map(([k, v]) => `${k}: ${v}`).join('\n');
}

// Open descriptors of a process.
export function fdCount(pid) {
  return readdirSync(`/proc/${pid}/fd`).length;
}

// CPU time (user + system) a process has used so far, in seconds.
export function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // f[0] is field 3 (state)
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

// This process's soft limit on open descriptors.
export function nofileLimit() {
  const m = readFileSync('/proc/self/limits', 'utf8').match(/Max open files\s+(\d+|unlimited)/);
  return m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

// The kernel's state of the IPv4 loopback TCP socket localPort -> remotePort, seen from the
// localPort side: 'ESTABLISHED', 'CLOSE_WAIT', 'FIN_WAIT1', ... or null when no such socket exists.
export function tcpState(localPort, remotePort) {
  const names = ['', 'ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT',
    'CLOSE', 'CLOSE_WAIT', 'LAST_ACK', 'LISTEN', 'CLOSING'];
  const hex = (p) => p.toString(16).toUpperCase().padStart(4, '0');
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    if (f[1].endsWith(`:${hex(localPort)}`) && f[2].endsWith(`:${hex(remotePort)}`))
      return names[parseInt(f[3], 16)] ?? f[3];
  }
  return null;
}

// A raw client connection to 127.0.0.1:port that records what it receives and how it ended:
// { sock, closed, error, text(), write(bytes), waitClosed(ms) }. Strings are written as latin1,
// so any byte can be sent.
export function openRaw(port) {
  const sock = net.connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  const st = { sock, parts: [], bytes: 0, connected: false, closed: false, error: null };
  sock.on('connect', () => { st.connected = true; });
  sock.on('data', (d) => { st.parts.push(d); st.bytes += d.length; });
  sock.on('end', () => { st.closed = true; });
  sock.on('close', () => { st.closed = true; });
  sock.on('error', (e) => { st.error = e.code; });
  st.text = () => Buffer.concat(st.parts).toString('latin1');
  st.write = (bytes) => {
    if (!sock.destroyed) sock.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  };
  // True when the peer closed within ms, false otherwise; the socket is destroyed either way.
  st.waitClosed = async (ms) => {
    const ok = await waitFor(() => st.closed, { timeout: ms, what: 'close' }).then(() => true, () => false);
    sock.destroy();
    return ok;
  };
  return st;
}

function parseHeadLines(text) {
  const lines = text.split('\r\n');
  const m = lines[0].match(/^HTTP\/(1\.[01]) (\d{3})/);
  const headers = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  return { version: m ? m[1] : null, status: m ? Number(m[2]) : 0, headers };
}

// The HTTP responses in `data` (latin1 text), in order, framed as a client frames them.
// heads[i] true: final response i answers a HEAD (no body whatever its headers say). Interim
// (1xx) responses are included with interim: true. What cannot be framed ends the list: a
// response marked incomplete (body cut short) or one with status 0 and `garbage`.
export function parseResponses(data, heads = []) {
  const out = [];
  let pos = 0;
  let finals = 0;
  while (pos < data.length) {
    const end = data.indexOf('\r\n\r\n', pos);
    if (end < 0) { out.push({ status: 0, headers: {}, garbage: data.slice(pos) }); break; }
    const r = parseHeadLines(data.slice(pos, end));
    if (r.status === 0) { out.push({ ...r, garbage: data.slice(pos) }); break; }
    let p = end + 4;
    if (r.status < 200) {
      out.push({ ...r, interim: true });
      pos = p;
      continue;
    }
    const te = r.headers['transfer-encoding'];
    if (heads[finals] || r.status === 204 || r.status === 304) {
      r.body = '';
    } else if (te && /chunked/i.test(te)) {
      let body = '';
      for (;;) {
        const le = data.indexOf('\r\n', p);
        const size = le < 0 ? NaN : parseInt(data.slice(p, le), 16);
        if (Number.isNaN(size)) { r.incomplete = true; break; }
        if (size === 0) {
          const tend = data.slice(le, le + 4) === '\r\n\r\n' ? le : data.indexOf('\r\n\r\n', le);
          if (tend < 0) { r.incomplete = true; break; }
          p = tend + 4;
          break;
        }
        if (le + 2 + size + 2 > data.length) { r.incomplete = true; break; }
        body += data.slice(le + 2, le + 2 + size);
        p = le + 2 + size + 2;
      }
      r.body = body;
      if (r.incomplete) p = data.length;
    } else if ('content-length' in r.headers) {
      const n = Number(r.headers['content-length']);
      if (p + n > data.length) r.incomplete = true;
      r.body = data.slice(p, p + n);
      p = Math.min(p + n, data.length);
    } else {
      r.closeDelimited = true;
      r.body = data.slice(p);
      p = data.length;
    }
    out.push(r);
    finals++;
    pos = p;
  }
  return out;
}

// A free loopback TCP port (bound and released: for servers that cannot report port 0).
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// A real redis-server (Debian's) on a free loopback port, no persistence. kill() stops it
// hard (an outage); start() brings it back on the same port; cli(...args) runs redis-cli.
export async function startRedis({ args = [] } = {}) {
  const port = await freePort();
  let proc, out = '';
  const self = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async start() {
      out = '';
      proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
        '--appendonly', 'no', '--protected-mode', 'yes', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      proc.stdout.on('data', (d) => { out += d.toString(); });
      proc.stderr.on('data', (d) => { out += d.toString(); });
      await waitFor(() => /Ready to accept connections/.test(out) || exited(proc),
        { timeout: 10000, what: 'redis-server ready' });
      if (exited(proc)) throw new Error(`redis-server exited: ${out}`);
    },
    cli: (...a) => spawnSync('redis-cli', ['-p', String(port), ...a], { encoding: 'utf8' }).stdout.trim(),
    async kill() {
      if (!proc || exited(proc)) return;
      const done = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await done;
    },
    stop: () => self.kill(),
  };
  await self.start();
  return self;
}

// The value of the one Prometheus sample whose name and labels match (labels: a subset, exact
// values).
export function sample(text, name, labels = {}) {
  const hits = text.split('\n').filter((l) => {
    if (!l.startsWith(`${name}{`) && !l.startsWith(`${name} `)) return false;
    return Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`));
  });
  assert.equal(hits.length, 1, `${name} ${JSON.stringify(labels)}: ${hits.length} samples\n${hits.join('\n')}`);
  return Number(hits[0].slice(hits[0].lastIndexOf(' ') + 1));
}

// promtool (Debian's prometheus) accepts text as an exposition.
export function promtool(text) {
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(lint.status, 0, `promtool check metrics: ${lint.stdout}${lint.stderr}`);
}
