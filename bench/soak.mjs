// bench/soak.mjs: the soak behind `make soak` (bench/README.md, "Soak").
//
// llmux in front of four mockllm upstreams (one healthy, one failing every 3rd request with a
// 503, one every 4th with a 429, one slow), with aliases that fail over, continue broken
// streams (on_stream_failure "continue") or end them honestly, driven for SOAK_SECONDS by a
// mixed load at SOAK_RATE requests/s: streams and non-streams, client aborts mid-stream and
// mid-wait, upstream 5xx and 429, resets, stalls, malformed output, requests every deployment
// refuses. Every answer is checked against the text mockllm must have produced (token i is
// "w<i> ", test/mockllm/answer.c), every access-log line is matched to its request, and llmux's
// RSS and open descriptors are sampled every second. The run fails (exit 1) on any lost, cut or
// corrupted answer, on growth of RSS or descriptors, on a crash or a sanitizer report.
//
// Environment: SOAK_SECONDS (180), SOAK_RATE (1200 req/s), SOAK_MAX_REQUESTS (500000),
// SOAK_CONCURRENCY (256 requests in flight at most), BUILD (build dir, default build) or
// LLMUX_BIN / MOCKLLM_BIN, SOAK_PIN=0 (no taskset), SOAK_REPORT (report path; default
// bench/results/soak-<date>.md, "-" for none), SOAK_RSS_MARGIN_KB (1024), SOAK_MAX_TIMEOUTS (0.001 of
// the requests may end in an honest timeout error instead of their answer), SOAK_QUIET=1.
import { spawn, spawnSync } from 'node:child_process';
import { createReadStream, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { isDeepStrictEqual } from 'node:util';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BUILD = resolve(ROOT, process.env.BUILD || 'build');
const BIN = {
  llmux: process.env.LLMUX_BIN || join(BUILD, 'llmux'),
  mock: process.env.MOCKLLM_BIN || join(BUILD, 'test', 'mockllm'),
};
const num = (v, d) => (v === undefined || v === '' ? d : Number(v));
const SECONDS = num(process.env.SOAK_SECONDS, 180);
const RATE = num(process.env.SOAK_RATE, 1200);
const MAX_REQUESTS = num(process.env.SOAK_MAX_REQUESTS, 500000);
const CONCURRENCY = num(process.env.SOAK_CONCURRENCY, 256);
const PIN = process.env.SOAK_PIN !== '0';
const RSS_MARGIN_KB = num(process.env.SOAK_RSS_MARGIN_KB, 1024);
const FD_MARGIN = num(process.env.SOAK_FD_MARGIN, 16);
// SOAK_FLATNESS=0: RSS and descriptor flatness are reported, not judged (a run of seconds on a
// busy machine has windows too short to tell growth from the number in flight)
const FLATNESS = process.env.SOAK_FLATNESS !== '0';
const MAX_TIMEOUTS = num(process.env.SOAK_MAX_TIMEOUTS, 0.001); // a fraction of the requests
const QUIET = process.env.SOAK_QUIET === '1';
const DATE = new Date().toISOString().slice(0, 10);
const REPORT = process.env.SOAK_REPORT === '-' ? null
  : resolve(process.env.SOAK_REPORT || join(ROOT, 'bench', 'results', `soak-${DATE}.md`));
const MOCK_CORE = 0; // the four mockllm processes
const PROXY_CORE = 1; // llmux; this client is not pinned (it goes where there is room)
const REQUEST_TIMEOUT_MS = 20000;
// The idle / first-byte timeout of the aliases whose first deployment stalls. It also bounds the
// healthy deployment of the same alias, so it must stay far above any scheduling hiccup of a
// shared machine, or a healthy answer would be cut for a reason that is not llmux's.
const SHORT_MS = 1000;
// Warm-up (excluded from the flatness check), then the first and the last window compared.
const WARMUP_S = Math.min(20, Math.max(2, Math.round(SECONDS * 0.12)));
const WINDOW_S = Math.max(1, Math.min(60, Math.floor((SECONDS - WARMUP_S) / 2)));

const started = Date.now();
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const loadavgStart = loadavg();
const tmp = mkdtempSync(join(tmpdir(), 'llmux-soak-'));
const children = [];
let stopping = false;

function log(...a) {
  if (!QUIET) console.log(`[${String(Math.round((Date.now() - started) / 1000)).padStart(3)} s]`, ...a);
}
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) try { c.kill('SIGKILL'); } catch { /* gone */ }
  rmSync(tmp, { recursive: true, force: true });
});
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, () => process.exit(130));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- what mockllm answers (test/mockllm/answer.c, mockllm.h) ----

const mockText = (n, from = 0) => { let s = ''; for (let i = from; i < n; i++) s += `w${i} `; return s; };
const TOOL = 'get_weather';
const TOOL_ARGS = { city: 'Paris', unit: 'celsius', days: 3 }; // MOCK_TOOL_ARGS

// ---- processes ----

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); });
  });
}

// Starts a process (pinned when asked) and resolves on its "listening on HOST:PORT" line.
function start(name, cmd, args, core, { env } = {}) {
  const argv = PIN && core !== undefined ? ['taskset', '-c', String(core), cmd, ...args] : [cmd, ...args];
  const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  children.push(p);
  p.label = name;
  p.stderrText = '';
  p.stderr.on('data', (d) => { if (p.stderrText.length < 1 << 20) p.stderrText += d; });
  return new Promise((res, rej) => {
    let out = '';
    const onExit = (code, sig) => rej(new Error(`${name} exited (${code ?? sig}) before listening:\n${out}${p.stderrText.slice(-3000)}`));
    p.once('exit', onExit);
    p.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on [^\s]*:(\d+)/);
      if (m && !p.port) {
        p.port = Number(m[1]);
        p.off('exit', onExit);
        p.on('exit', (code, sig) => { if (!stopping) crashed.push(`${name} exited during the run (${code ?? sig})`); });
        res(p);
      }
    });
  });
}
const crashed = [];

function adminGet(port, path) {
  return new Promise((res, rej) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' } }, (r) => {
      let b = '';
      r.setEncoding('utf8');
      r.on('data', (d) => { b += d; });
      r.on('end', () => { try { res(JSON.parse(b)); } catch (e) { rej(e); } });
    });
    req.on('error', rej);
    req.end();
  });
}

const sanitizerRe = /AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|Segmentation fault|Aborted|assertion/i;

// SIGTERM and wait (llmux drains; it must exit 0).
async function stopProc(p, ms = 15000) {
  if (p.exitCode !== null || p.signalCode !== null) return { code: p.exitCode, signal: p.signalCode };
  const gone = new Promise((r) => p.once('exit', (code, signal) => r({ code, signal })));
  p.kill('SIGTERM');
  const r = await Promise.race([gone, sleep(ms).then(() => null)]);
  if (r) return r;
  p.kill('SIGKILL');
  return { ...(await gone), hung: true };
}

// ---- /proc sampling ----

function sampleProc(pid) {
  try {
    const t = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k) => Number((t.match(new RegExp(`${k}:\\s+(\\d+)`)) || [])[1] || 0);
    return { rss_kb: kb('VmRSS'), hwm_kb: kb('VmHWM'), fds: readdirSync(`/proc/${pid}/fd`).length };
  } catch { return null; }
}

// ---- the mix ----
//
// Every kind names the request (alias, stream, endpoint) and the one outcome llmux owes for it:
//   full:     the whole answer of `tokens` tokens (or the tool call), finish_reason stop, [DONE]
//   trunc:    a stream of exactly the first `tokens` tokens, then the honest error chunk
//             (top-level error {code, message}, finish_reason "error"), a clean chunked end and
//             no [DONE]
//   refused:  an OpenAI error body {"error":{message,type,code}} with a 429/5xx status
//   abort:    the client goes away after `events` events (stream) or `ms` ms (non-stream);
//             what arrived before must be a prefix of the answer
const KINDS = [
  { id: 'ok', alias: 'chat', n: 16, weight: 12, stream: false, expect: 'full', what: '503 every 3rd on the first deployment, failover' },
  { id: 'ok-s', alias: 'chat', n: 16, weight: 12, stream: true, expect: 'full', what: 'same, stream' },
  { id: 'big', alias: 'chat', n: 16, weight: 2, stream: false, expect: 'full', body: 16384, what: 'same, 16 KB conversation' },
  { id: 'compl-s', alias: 'chat', n: 16, weight: 2, stream: true, expect: 'full', path: '/v1/completions', what: 'same, /v1/completions stream' },
  { id: '429', alias: 'rate-limited', n: 8, weight: 6, stream: false, expect: 'full', what: '429 every 4th on the first deployment, failover' },
  { id: '429-s', alias: 'rate-limited', n: 8, weight: 6, stream: true, expect: 'full', what: 'same, stream' },
  { id: 'reset', alias: 'reset-failover', n: 6, weight: 4, stream: false, expect: 'full', what: 'first deployment resets before the head, failover' },
  { id: 'reset-s', alias: 'reset-failover', n: 6, weight: 4, stream: true, expect: 'full', what: 'same, stream' },
  { id: 'stall', alias: 'stall-failover', n: 6, weight: 1, stream: false, expect: 'full', what: `first deployment never answers: ${SHORT_MS} ms first-byte timeout, failover` },
  { id: 'stall-s', alias: 'stall-failover', n: 6, weight: 2, stream: true, expect: 'full', what: 'first deployment stalls before its first token, failover' },
  { id: 'bad', alias: 'malformed-failover', n: 5, weight: 2, stream: false, expect: 'full', what: 'first deployment answers invalid JSON, failover' },
  { id: 'tool', alias: 'tools', tool: true, weight: 2, stream: false, expect: 'full', what: 'tool call, 503 every 3rd on the first deployment' },
  { id: 'tool-s', alias: 'tools', tool: true, weight: 3, stream: true, expect: 'full', what: 'same, stream (arguments in 8-byte fragments)' },
  { id: 'cont-reset-s', alias: 'continue-reset', n: 12, weight: 6, stream: true, expect: 'full', what: 'reset after 5 tokens, continued on the next deployment' },
  { id: 'cont-stall-s', alias: 'continue-stall', n: 12, weight: 2, stream: true, expect: 'full', what: `stall after 4 tokens (${SHORT_MS} ms idle timeout), continued` },
  { id: 'cont-error-s', alias: 'continue-error', n: 10, weight: 2, stream: true, expect: 'full', what: 'in-band server_error after 3 tokens, continued' },
  { id: 'cont', alias: 'continue-reset', n: 12, weight: 2, stream: false, expect: 'full', what: 'continue alias, non-stream (no reset: whole answer)' },
  { id: 'trunc-reset-s', alias: 'truncated-reset', n: 4, weight: 4, stream: true, expect: 'trunc', what: 'reset after 4 tokens, no spare: honest end' },
  { id: 'trunc-stall-s', alias: 'truncated-stall', n: 3, weight: 2, stream: true, expect: 'trunc', what: `stall after 3 tokens, ${SHORT_MS} ms idle timeout: honest end` },
  { id: 'trunc-error-s', alias: 'truncated-error', n: 3, weight: 2, stream: true, expect: 'trunc', what: 'in-band error after 3 tokens: honest end' },
  { id: 'trunc-bad-s', alias: 'malformed-failover', n: 1, weight: 1, stream: true, expect: 'trunc', what: 'second token event not JSON: honest end after 1 token' },
  { id: 'refused', alias: 'refused', weight: 4, stream: false, expect: 'refused', what: 'every deployment answers 503, 429 or 500' },
  { id: 'refused-s', alias: 'refused', weight: 3, stream: true, expect: 'refused', what: 'same, stream (refused before any byte)' },
  { id: 'reset-all', alias: 'reset-all', weight: 1, stream: false, expect: 'refused', what: 'every deployment resets' },
  { id: 'abort-s', alias: 'slow', n: 100, weight: 4, stream: true, expect: 'abort', events: 3, what: 'client leaves after 3 events of a 10 s stream (10 tokens/s)' },
  { id: 'abort', alias: 'slow-answer', n: 4, weight: 2, stream: false, expect: 'abort', ms: 30, what: 'client leaves 30 ms into a 10 s wait' },
];
const WEIGHTS = KINDS.reduce((a, k) => a + k.weight, 0);
const pickTable = [];
KINDS.forEach((k, i) => { for (let w = 0; w < k.weight; w++) pickTable.push(i); });

function llmuxConfig(port, mocks) {
  const dep = (provider, model) => ({ provider, model });
  const base = (p) => ({ kind: 'openai', base_url: `http://127.0.0.1:${p.port}/v1` });
  return {
    listen: `127.0.0.1:${port}`,
    access_log: join(tmp, 'access.log'),
    timeouts_ms: { connect: 5000, first_byte: 5000, idle: 5000, total: 30000 },
    pool: { max_idle_per_origin: 64, idle_timeout_ms: 1000 },
    // Ejection off (a deployment that always fails would be routed around after 5 failures, and
    // the soak would then test little but the healthy path) and no retry budget to run out of:
    // every scripted failure reaches the failover and continuation code at full rate.
    health: { failure_threshold: 1000000, error_rate_percent: 101, retry_budget_percent: 1000 },
    providers: { ok: base(mocks.ok), flaky503: base(mocks.f503), flaky429: base(mocks.f429), slow: base(mocks.slow) },
    models: {
      chat: { deployments: [dep('flaky503', 'm?tokens=16'), dep('ok', 'm?tokens=16')] },
      'rate-limited': { deployments: [dep('flaky429', 'm?tokens=8'), dep('ok', 'm?tokens=8')] },
      'reset-failover': { deployments: [dep('ok', 'm?tokens=6&reset_after=0'), dep('ok', 'm?tokens=6')] },
      'stall-failover': { deployments: [dep('ok', 'm?tokens=6&stall_after=0'), dep('ok', 'm?tokens=6')],
        timeouts_ms: { first_byte: SHORT_MS } },
      'malformed-failover': { deployments: [dep('ok', 'm?tokens=5&malformed=json'), dep('ok', 'm?tokens=5')] },
      tools: { deployments: [dep('flaky503', `m?tool=${TOOL}`), dep('ok', `m?tool=${TOOL}`)] },
      'continue-reset': { on_stream_failure: 'continue',
        deployments: [dep('ok', 'm?tokens=12&reset_after=5'), dep('ok', 'm?tokens=12')] },
      'continue-stall': { on_stream_failure: 'continue', timeouts_ms: { idle: SHORT_MS },
        deployments: [dep('ok', 'm?tokens=12&stall_after=4'), dep('ok', 'm?tokens=12')] },
      'continue-error': { on_stream_failure: 'continue',
        deployments: [dep('ok', 'm?tokens=10&error_after=3'), dep('ok', 'm?tokens=10')] },
      'truncated-reset': { deployments: [dep('ok', 'm?tokens=10&reset_after=4')] },
      'truncated-stall': { deployments: [dep('ok', 'm?tokens=10&stall_after=3')], timeouts_ms: { idle: SHORT_MS } },
      'truncated-error': { deployments: [dep('ok', 'm?tokens=10&error_after=3')] },
      refused: { deployments: [dep('ok', 'm?status=503'), dep('ok', 'm?status=429'), dep('ok', 'm?status=500')] },
      'reset-all': { deployments: [dep('ok', 'm?reset_after=0'), dep('ok', 'm?tokens=3&reset_after=0')] },
      slow: { deployments: [dep('slow', 'm?tokens=100&tps=10')] },
      'slow-answer': { deployments: [dep('slow', 'm?tokens=4&delay=10000')] },
    },
  };
}

// ---- checking one answer ----

// SSE text -> data payloads; a line that is neither data nor a comment is corruption.
function sseEvents(text) {
  const out = [];
  for (const block of text.split('\n\n')) {
    if (block === '') continue;
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;
      if (!line.startsWith('data: ')) throw new Error(`not an SSE data line: ${JSON.stringify(line.slice(0, 120))}`);
      out.push(line.slice(6));
    }
  }
  if (!text.endsWith('\n\n') && text !== '') throw new Error('the stream ends inside an event');
  return out;
}

function checkErrorBody(text, status) {
  if (![429, 500, 502, 503, 504].includes(status)) throw new Error(`status ${status}`);
  const b = JSON.parse(text);
  const e = b.error;
  if (!e || typeof e.message !== 'string' || !e.message || typeof e.type !== 'string' || !('code' in e))
    throw new Error(`not an OpenAI error body: ${text.slice(0, 200)}`);
  return `${status} ${e.code}`;
}

// Returns the outcome label for the table; throws with the reason when the answer is wrong.
function check(kind, res) {
  const { status, text, headers } = res;
  if (kind.expect === 'refused') {
    if (status === 200) throw new Error(`200 for a request every deployment refuses: ${text.slice(0, 200)}`);
    return checkErrorBody(text, status);
  }
  if (status !== 200) throw new Error(`status ${status}: ${text.slice(0, 300)}`);
  const chat = (kind.path || '/v1/chat/completions') === '/v1/chat/completions';
  if (!kind.stream) {
    const b = JSON.parse(text);
    const c = b.choices?.[0];
    if (kind.tool) {
      const tc = c?.message?.tool_calls;
      if (tc?.length !== 1 || tc[0].function.name !== TOOL || !isDeepStrictEqual(JSON.parse(tc[0].function.arguments), TOOL_ARGS))
        throw new Error(`wrong tool call: ${text.slice(0, 300)}`);
      if (c.finish_reason !== 'tool_calls') throw new Error(`finish_reason ${c.finish_reason}`);
      return 'ok';
    }
    const content = chat ? c?.message?.content : c?.text;
    if (content !== mockText(kind.n)) throw new Error(`wrong text: ${JSON.stringify(content)}`);
    if (c.finish_reason !== 'stop') throw new Error(`finish_reason ${c.finish_reason}`);
    if (b.usage?.completion_tokens !== kind.n) throw new Error(`usage ${JSON.stringify(b.usage)}`);
    return 'ok';
  }
  if (!/^text\/event-stream/.test(headers['content-type'] || '')) throw new Error(`content-type ${headers['content-type']}`);
  const datas = sseEvents(text);
  const done = datas.filter((d) => d === '[DONE]').length;
  const chunks = datas.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));
  const ids = new Set(chunks.map((c) => c.id));
  if (ids.size !== 1) throw new Error(`${ids.size} response ids in one stream`);
  let content = '';
  let args = '';
  const finishes = [];
  let errors = 0;
  for (const c of chunks) {
    if (c.error) errors++;
    const ch = c.choices?.[0];
    if (!ch) continue;
    content += (chat ? ch.delta?.content : ch.text) ?? '';
    for (const tc of ch.delta?.tool_calls ?? []) {
      if (tc.index !== 0) throw new Error(`tool call index ${tc.index}`);
      args += tc.function?.arguments ?? '';
    }
    if (ch.finish_reason) finishes.push(ch.finish_reason);
  }
  if (kind.expect === 'trunc') {
    if (done) throw new Error('[DONE] after a truncated stream');
    const last = chunks.at(-1);
    if (!last?.error || typeof last.error.message !== 'string' || !('code' in last.error))
      throw new Error(`no honest error chunk at the end: ${datas.at(-1)?.slice(0, 200)}`);
    if (errors !== 1 || finishes.length !== 1 || finishes[0] !== 'error' || last.choices?.[0]?.finish_reason !== 'error')
      throw new Error(`finish reasons ${finishes.join(',')}, ${errors} error chunks`);
    if (content !== mockText(kind.n)) throw new Error(`wrong text before the error: ${JSON.stringify(content)}`);
    return 'honest end';
  }
  if (errors) throw new Error(`error chunk in a stream that must complete: ${JSON.stringify(chunks.find((c) => c.error))}`);
  if (done !== 1 || datas.at(-1) !== '[DONE]') throw new Error(`${done} [DONE], last event ${datas.at(-1)?.slice(0, 100)}`);
  if (finishes.length !== 1) throw new Error(`finish reasons: ${finishes.join(',')}`);
  if (kind.tool) {
    if (!isDeepStrictEqual(JSON.parse(args), TOOL_ARGS)) throw new Error(`wrong tool arguments ${args}`);
    if (finishes[0] !== 'tool_calls') throw new Error(`finish_reason ${finishes[0]}`);
  } else {
    if (content !== mockText(kind.n)) throw new Error(`wrong text: ${JSON.stringify(content)}`);
    if (finishes[0] !== 'stop') throw new Error(`finish_reason ${finishes[0]}`);
  }
  return chunks.some((c) => c.llmux?.continued) ? 'ok (continued)' : 'ok';
}

// A healthy deployment that did not answer within a timeout (the machine starved its process, or
// llmux's) gets an honest, well-formed error: not the answer owed, but not a lost or corrupted one
// either. Such answers are counted apart ("timeout") and tolerated up to SOAK_MAX_TIMEOUTS of the
// requests; anything else that is not the answer owed is wrong.
function timeoutExcuse(kind, res) {
  const { status, text } = res;
  if (status !== 200) {
    const b = JSON.parse(text);
    if (![502, 504].includes(status) || !/timeout/.test(b.error?.message ?? '')) return null;
    checkErrorBody(text, status);
    return 'timeout';
  }
  if (!kind.stream) return null;
  const chat = (kind.path || '/v1/chat/completions') === '/v1/chat/completions';
  const datas = sseEvents(text);
  if (datas.includes('[DONE]')) return null;
  const chunks = datas.map((d) => JSON.parse(d));
  const last = chunks.at(-1);
  if (!last?.error || !/timeout/.test(last.error.message ?? '') || !('code' in last.error) || last.choices?.[0]?.finish_reason !== 'error') return null;
  if (chunks.filter((c) => c.error).length !== 1) return null;
  let got = '';
  for (const c of chunks) {
    const ch = c.choices?.[0];
    got += kind.tool ? (ch?.delta?.tool_calls ?? []).map((t) => t.function?.arguments ?? '').join('') : ((chat ? ch?.delta?.content : ch?.text) ?? '');
  }
  const whole = kind.tool ? JSON.stringify(TOOL_ARGS) : mockText(kind.n ?? 0);
  return whole.startsWith(got) && got.length < whole.length ? 'timeout' : null;
}

// What a client that left early saw must be the start of the answer.
function checkPartial(kind, res) {
  if (res.status === 0) return 'left before the head';
  if (res.status !== 200) throw new Error(`status ${res.status} before the abort: ${res.text.slice(0, 200)}`);
  if (!kind.stream) throw new Error(`answered within ${kind.ms} ms of a 10 s wait`);
  const complete = res.text.slice(0, res.text.lastIndexOf('\n\n') + 2);
  const chunks = sseEvents(complete).filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));
  const content = chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
  if (!mockText(kind.n).startsWith(content) || content.length === 0) throw new Error(`wrong partial text ${JSON.stringify(content)}`);
  return 'left mid-stream';
}

// ---- the load ----

// A lean HTTP/1.1 client on raw sockets (Node's http module costs several times more CPU per
// request, and the client shares its core with the four upstreams). It parses exactly what llmux
// may send: a head, then a content-length body or chunked transfer coding without trailers;
// anything else, or a connection that closes before the end, is a cut answer.
const idleSockets = [];
let openSockets = 0;

class Exchange {
  constructor(path, headers, body, onEvent, onEnd) {
    this.wire = `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1:${llmuxPort}\r\n${headers}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    this.onEvent = onEvent; // (text so far) after each chunk of a chunked body
    this.onEnd = onEnd; // (err, res)
    this.res = { status: 0, headers: {}, text: '' };
    this.buf = '';
    this.state = 'head';
    this.need = 0;
    this.over = false;
    this.sock = idleSockets.pop();
    if (!this.sock) {
      this.sock = net.connect({ host: '127.0.0.1', port: llmuxPort });
      openSockets++;
      this.sock.setNoDelay(true);
      this.sock.setEncoding('latin1'); // llmux sends ASCII (JSON escapes); 1 char = 1 byte
      this.sock.on('close', () => { openSockets--; const i = idleSockets.indexOf(this.sock); if (i >= 0) idleSockets.splice(i, 1); });
      this.sock.on('error', () => {}); // 'close' follows
    }
    this.sock.removeAllListeners('data');
    this.sock.removeAllListeners('end');
    this.sock.on('data', (d) => this.feed(d));
    this.sock.on('end', () => this.finish(new Error('response cut: the connection closed before the end')));
    this.onClose = () => this.finish(new Error('response cut: the connection closed before the end'));
    this.sock.once('close', this.onClose);
    this.sock.write(this.wire, 'latin1');
  }

  // The client leaves: the socket is closed, never reused.
  abort() {
    if (this.over) return;
    this.over = true;
    this.sock.off('close', this.onClose);
    this.sock.destroy();
  }

  finish(err) {
    if (this.over) return;
    this.over = true;
    this.sock.off('close', this.onClose);
    this.sock.removeAllListeners('data');
    this.sock.removeAllListeners('end');
    if (err) this.sock.destroy();
    else if (this.buf.length) { this.sock.destroy(); err = new Error(`${this.buf.length} bytes after the end of the response`); }
    else if (/close/i.test(this.res.headers.connection || '')) this.sock.end();
    else idleSockets.push(this.sock);
    this.onEnd(err, this.res);
  }

  feed(d) {
    if (this.over) return;
    this.buf += d;
    for (;;) {
      if (this.state === 'head') {
        const i = this.buf.indexOf('\r\n\r\n');
        if (i < 0) {
          if (this.buf.length > 65536) return this.finish(new Error('response head over 64 KiB'));
          return;
        }
        const lines = this.buf.slice(0, i).split('\r\n');
        this.buf = this.buf.slice(i + 4);
        const m = lines[0].match(/^HTTP\/1\.1 (\d{3}) /);
        if (!m) return this.finish(new Error(`bad status line ${JSON.stringify(lines[0].slice(0, 80))}`));
        this.res.status = Number(m[1]);
        for (const l of lines.slice(1)) {
          const c = l.indexOf(':');
          if (c <= 0) return this.finish(new Error(`bad header line ${JSON.stringify(l.slice(0, 80))}`));
          this.res.headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
        }
        const h = this.res.headers;
        if (h['transfer-encoding'] === 'chunked' && !('content-length' in h)) {
          this.state = 'size';
        } else if (/^\d+$/.test(h['content-length'] ?? '') && !('transfer-encoding' in h)) {
          this.state = 'body';
          this.need = Number(h['content-length']);
        } else {
          return this.finish(new Error(`no usable framing: ${JSON.stringify(h)}`));
        }
      } else if (this.state === 'body') {
        if (this.buf.length < this.need) return;
        this.res.text = this.buf.slice(0, this.need);
        this.buf = this.buf.slice(this.need);
        return this.finish(null);
      } else if (this.state === 'size') {
        const i = this.buf.indexOf('\r\n');
        if (i < 0) return this.buf.length > 32 ? this.finish(new Error('bad chunk size line')) : undefined;
        const line = this.buf.slice(0, i);
        if (!/^[0-9a-fA-F]{1,8}$/.test(line)) return this.finish(new Error(`bad chunk size ${JSON.stringify(line)}`));
        this.need = parseInt(line, 16);
        if (this.need === 0) { // the last chunk: no trailers, just CRLF
          if (this.buf.length < i + 4) return;
          if (this.buf.slice(i + 2, i + 4) !== '\r\n') return this.finish(new Error('trailers or garbage after the last chunk'));
          this.buf = this.buf.slice(i + 4);
          return this.finish(null);
        }
        this.buf = this.buf.slice(i + 2);
        this.state = 'data';
      } else { // data
        if (this.buf.length < this.need + 2) return;
        if (this.buf.slice(this.need, this.need + 2) !== '\r\n') return this.finish(new Error('chunk not followed by CRLF'));
        this.res.text += this.buf.slice(0, this.need);
        this.buf = this.buf.slice(this.need + 2);
        this.state = 'size';
        if (this.onEvent) this.onEvent(this.res.text);
        if (this.over) return;
      }
    }
  }
}

const perKind = KINDS.map(() => ({ sent: 0, outcomes: new Map(), failures: 0, lat: [] }));
const failures = []; // the first few wrong answers, with their request
let launched = 0;
let finished = 0;
let inflight = 0;
let failed = 0;
let timeouts = 0;
const timeoutSamples = [];
let llmuxPort = 0;

function bodyOf(kind, n) {
  const content = kind.body ? `soak ${n} `.padEnd(kind.body, 'lorem ipsum ') : `soak ${n}`;
  const chat = (kind.path || '/v1/chat/completions') === '/v1/chat/completions';
  return JSON.stringify(chat
    ? { model: kind.alias, stream: kind.stream, messages: [{ role: 'user', content }] }
    : { model: kind.alias, stream: kind.stream, prompt: content });
}

function fail(kindIdx, n, why, res) {
  failed++;
  perKind[kindIdx].failures++;
  const key = `wrong: ${why.split(':')[0].slice(0, 60)}`;
  const o = perKind[kindIdx].outcomes;
  o.set(key, (o.get(key) || 0) + 1);
  if (failures.length < 20)
    failures.push({ kind: KINDS[kindIdx].id, request_id: `soak-${kindIdx}-${n}`, why, status: res?.status, body: res?.text?.slice(0, 600) });
}

function launch() {
  const n = launched++;
  const ki = pickTable[Math.floor(rand() * pickTable.length)];
  const kind = KINDS[ki];
  const st = perKind[ki];
  st.sent++;
  inflight++;
  const t0 = process.hrtime.bigint();
  let settled = false;
  const settle = (fn, res) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    inflight--;
    finished++;
    try {
      const outcome = fn();
      st.outcomes.set(outcome, (st.outcomes.get(outcome) || 0) + 1);
      st.lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    } catch (e) {
      let excuse = null;
      try { excuse = kind.expect === 'abort' || !res?.status ? null : timeoutExcuse(kind, res); } catch { /* wrong */ }
      if (excuse) {
        timeouts++;
        st.outcomes.set(excuse, (st.outcomes.get(excuse) || 0) + 1);
        if (timeoutSamples.length < 5) timeoutSamples.push({ kind: kind.id, request_id: `soak-${ki}-${n}`, body: res.text.slice(-300) });
      } else {
        fail(ki, n, e.message, res);
      }
    }
  };
  let from = 0;
  let events = 0;
  const onEvent = kind.expect === 'abort' && kind.events ? (text) => {
    for (let i = text.indexOf('\n\n', from); i >= 0; i = text.indexOf('\n\n', i + 2)) { events++; from = i + 2; }
    if (events >= kind.events) {
      ex.abort();
      settle(() => checkPartial(kind, ex.res), ex.res);
    }
  } : null;
  const ex = new Exchange(kind.path || '/v1/chat/completions',
    `content-type: application/json\r\nx-request-id: soak-${ki}-${n}\r\n`, bodyOf(kind, n), onEvent,
    (err, res) => settle(() => {
      if (err) throw err;
      return kind.expect === 'abort' ? checkPartial(kind, res) : check(kind, res);
    }, res));
  const leaveAfter = kind.expect === 'abort' && kind.ms ? kind.ms : REQUEST_TIMEOUT_MS;
  const timer = setTimeout(() => {
    ex.abort();
    settle(() => {
      if (kind.expect === 'abort') return checkPartial(kind, ex.res);
      throw new Error(`no complete answer within ${REQUEST_TIMEOUT_MS} ms`);
    }, ex.res);
  }, leaveAfter);
}

// A small seeded generator: the same mix on every run.
let seed = 0x9e3779b9;
function rand() {
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed / 4294967296;
}

function pct(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

// ---- main ----

const mocks = {};
mocks.ok = await start('mock-ok', BIN.mock, ['--listen', '127.0.0.1:0', '--quiet'], MOCK_CORE);
mocks.f503 = await start('mock-503', BIN.mock, ['--listen', '127.0.0.1:0', '--quiet', '--script', 'fail_every=3&status=503'], MOCK_CORE);
mocks.f429 = await start('mock-429', BIN.mock, ['--listen', '127.0.0.1:0', '--quiet', '--script', 'fail_every=4&status=429'], MOCK_CORE);
mocks.slow = await start('mock-slow', BIN.mock, ['--listen', '127.0.0.1:0', '--quiet'], MOCK_CORE);
const port = await freePort();
writeFileSync(join(tmp, 'llmux.json'), JSON.stringify(llmuxConfig(port, mocks), null, 2));
const llmux = await start('llmux', BIN.llmux, ['-c', join(tmp, 'llmux.json')], PROXY_CORE);
llmuxPort = llmux.port;
await sleep(200);
const idle0 = sampleProc(llmux.pid);
log(`llmux pid ${llmux.pid} on 127.0.0.1:${llmuxPort}${PIN ? ` (core ${PROXY_CORE}; mocks on core ${MOCK_CORE}; client not pinned)` : ''}: ` +
  `RSS ${idle0.rss_kb} KB, ${idle0.fds} fds idle; ${SECONDS} s at ${RATE} req/s (at most ${MAX_REQUESTS} requests, ${CONCURRENCY} in flight), ${KINDS.length} kinds`);

const samples = []; // one per second: t, rss_kb, fds, done (answers that second), inflight
let lastDone = 0;
let backlog = 0; // the most requests ever due but held back because CONCURRENCY were in flight
const RAMP_S = Math.min(3, SECONDS / 4); // the rate climbs linearly to RATE: no thundering herd at start
const dueAt = (t) => RATE * (t < RAMP_S ? (t * t) / (2 * RAMP_S) : t - RAMP_S / 2);
const loadStart = Date.now();
const sampler = setInterval(() => {
  const s = sampleProc(llmux.pid);
  if (!s) return;
  const t = Math.round((Date.now() - loadStart) / 1000);
  samples.push({ t, ...s, done: finished - lastDone, inflight });
  lastDone = finished;
  if (t % 10 === 0) log(`t=${t}s sent ${launched}, answered ${finished}, wrong ${failed}, timeouts ${timeouts}, in flight ${inflight}, RSS ${s.rss_kb} KB, fds ${s.fds}`);
}, 1000);

await new Promise((resolveLoad) => {
  const tick = setInterval(() => {
    const elapsed = (Date.now() - loadStart) / 1000;
    if (elapsed >= SECONDS || launched >= MAX_REQUESTS || crashed.length) {
      clearInterval(tick);
      resolveLoad();
      return;
    }
    const due = Math.min(MAX_REQUESTS, Math.floor(dueAt(elapsed))) - launched;
    const room = Math.min(due, CONCURRENCY - inflight);
    for (let i = 0; i < room; i++) launch();
    backlog = Math.max(backlog, due - room);
  }, 2);
});
const loadSeconds = (Date.now() - loadStart) / 1000;
log(`load done: ${launched} sent in ${loadSeconds.toFixed(1)} s; waiting for ${inflight} in flight`);
const drainUntil = Date.now() + REQUEST_TIMEOUT_MS + 5000;
while (inflight > 0 && Date.now() < drainUntil) await sleep(50);
clearInterval(sampler);
for (const sock of idleSockets.splice(0)) sock.destroy(); // llmux must come back to idle

// After the pool's idle timeout (1 s) llmux holds exactly the descriptors it started with.
let idle1 = sampleProc(llmux.pid);
const settleUntil = Date.now() + 10000;
while (idle1 && idle1.fds > idle0.fds && Date.now() < settleUntil) {
  await sleep(200);
  idle1 = sampleProc(llmux.pid);
}
const mockStats = {};
for (const [k, m] of Object.entries(mocks)) mockStats[k] = await adminGet(m.port, '/mock/stats').catch((e) => ({ error: e.message }));

// ---- verdicts ----

const checks = [];
const verdict = (ok, what) => checks.push({ ok, what });
verdict(crashed.length === 0, crashed.length ? crashed.join('; ') : 'no process exited during the run');
verdict(failed === 0, `${failed} of ${launched} answers lost, cut or wrong`);
verdict(timeouts <= MAX_TIMEOUTS * launched, `${timeouts} healthy answers replaced by an honest timeout error (at most ${MAX_TIMEOUTS * 100} % of the requests: a machine busy elsewhere)`);
verdict(inflight === 0, `${inflight} requests still unanswered ${REQUEST_TIMEOUT_MS / 1000} s after the load`);

const inRange = (a, b) => samples.filter((s) => s.t > a && s.t <= b);
const firstW = inRange(WARMUP_S, WARMUP_S + WINDOW_S);
const lastW = inRange(Math.floor(loadSeconds) - WINDOW_S, Math.floor(loadSeconds));
const maxOf = (arr, k) => Math.max(...arr.map((s) => s[k]));
const rss = { first: maxOf(firstW, 'rss_kb'), last: maxOf(lastW, 'rss_kb'), max: maxOf(samples, 'rss_kb') };
const fds = { first: maxOf(firstW, 'fds'), last: maxOf(lastW, 'fds'), max: maxOf(samples, 'fds') };
const rssLimit = Math.round(rss.first * 1.05) + RSS_MARGIN_KB;
verdict(!FLATNESS || (firstW.length > 0 && lastW.length > 0 && rss.last <= rssLimit),
  `${FLATNESS ? '' : '(reported only) '}RSS flat: max of the last ${WINDOW_S} s ${rss.last} KB <= ${rssLimit} KB (first ${WINDOW_S} s after ${WARMUP_S} s warm-up: ${rss.first} KB, +5 % + ${RSS_MARGIN_KB} KB)`);
const fdLimit = Math.round(fds.first * 1.25) + FD_MARGIN;
verdict(!FLATNESS || fds.last <= fdLimit, `${FLATNESS ? '' : '(reported only) '}descriptors flat: max of the last ${WINDOW_S} s ${fds.last} <= ${fdLimit} (first window ${fds.first}, +25 % + ${FD_MARGIN})`);
verdict(idle1 && idle1.fds === idle0.fds, `descriptors back to idle after the load: ${idle1?.fds} (before the load: ${idle0.fds})`);

const abortsSent = perKind.filter((_, i) => KINDS[i].alias.startsWith('slow')).reduce((a, s) => a + s.sent, 0);
const slow = mockStats.slow;
verdict(slow && slow.requests === slow.aborted && slow.active_connections === 0 && slow.requests <= abortsSent,
  `every upstream request of a client that left was cancelled: slow mock ${slow?.requests} requests, ${slow?.aborted} aborted, ${slow?.active_connections} connections open (${abortsSent} clients left)`);
const openUp = Object.entries(mockStats).map(([k, s]) => `${k} ${s.active_connections}`).join(', ');
verdict(Object.values(mockStats).every((s) => s.active_connections === 0), `no upstream connection left open after the pool timeout (${openUp})`);

stopping = true;
const exit = await stopProc(llmux);
for (const m of Object.values(mocks)) await stopProc(m, 5000);
verdict(exit.code === 0 && !exit.hung, `llmux exits 0 on SIGTERM (${exit.code ?? exit.signal}${exit.hung ? ', hung' : ''})`);
const reports = [llmux, ...Object.values(mocks)].filter((p) => sanitizerRe.test(p.stderrText));
verdict(reports.length === 0, reports.length
  ? `sanitizer report or crash from ${reports.map((p) => p.label).join(', ')}:\n${reports[0].stderrText.slice(-4000)}`
  : 'no sanitizer report, no crash message');

// Every request must have exactly one access-log line (the log is flushed at exit).
const seen = new Uint8Array(launched);
const logOutcomes = new Map();
let logLines = 0;
let dupes = 0;
const rl = createInterface({ input: createReadStream(join(tmp, 'access.log')) });
for await (const line of rl) {
  const m = line.match(/^\{"request_id":"soak-(\d+)-(\d+)"/);
  if (!m) continue;
  logLines++;
  const n = Number(m[2]);
  if (seen[n]) dupes++;
  seen[n] = 1;
  const o = line.match(/"outcome":"([^"]+)"/)?.[1];
  logOutcomes.set(o, (logOutcomes.get(o) || 0) + 1);
}
const missing = launched - seen.reduce((a, b) => a + b, 0);
verdict(missing === 0 && dupes === 0, `one access-log line per request: ${logLines} lines for ${launched} requests (${missing} missing, ${dupes} twice)`);

// ---- report ----

const fmt = (v) => (Number.isFinite(v) ? (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)) : '');
const int = (v) => v.toLocaleString('en-US');
const total = perKind.reduce((a, s) => a + s.sent, 0);
const rows = KINDS.map((k, i) => {
  const s = perKind[i];
  const lat = Float64Array.from(s.lat).sort();
  const outs = [...s.outcomes.entries()].sort((a, b) => b[1] - a[1]).map(([o, c]) => `${o}: ${int(c)}`).join(', ');
  return `| ${k.id} | \`${k.alias}\` | ${k.stream ? 'stream' : 'non-stream'} | ${k.what} | ${int(s.sent)} | ${outs} | ${int(s.failures)} | ${fmt(pct(lat, 50))} | ${fmt(pct(lat, 99))} |`;
});
const allLat = Float64Array.from(perKind.flatMap((s) => s.lat)).sort();
const answeredPerS = samples.filter((s) => s.t > WARMUP_S && s.t <= loadSeconds).map((s) => s.done);
const git = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
const ok = checks.every((c) => c.ok);
const lines = [
  `# llmux soak, ${DATE}`,
  '',
  `Generated by \`make soak\` (bench/soak.mjs, [bench/README.md](../README.md#soak)) in ${Math.round((Date.now() - started) / 1000)} s: **${ok ? 'PASS' : 'FAIL'}**.`,
  '',
  `- llmux git ${git || '?'} (${BIN.llmux}); ${cpus().length} vCPUs (${cpus()[0]?.model ?? '?'}); ` +
    (PIN ? `llmux pinned to core ${PROXY_CORE}, the four mockllm upstreams to core ${MOCK_CORE}, the Node load client not pinned.` : 'nothing pinned.'),
  `- Load: ${int(total)} requests in ${loadSeconds.toFixed(1)} s (${int(Math.round(total / loadSeconds))} req/s; target ${int(RATE)} req/s, at most ${CONCURRENCY} in flight: the largest backlog held back by that cap was ${int(backlog)}; ${RAMP_S} s ramp-up), ` +
    `answers per second after warm-up: min ${int(Math.min(...answeredPerS))}, median ${int(pct(Float64Array.from(answeredPerS).sort(), 50))}, max ${int(Math.max(...answeredPerS))}. All traffic on 127.0.0.1.`,
  `- Latency of all answers: p50 ${fmt(pct(allLat, 50))} ms, p99 ${fmt(pct(allLat, 99))} ms, max ${fmt(allLat.at(-1))} ms (the stall kinds wait for a ${SHORT_MS} ms timeout by design).`,
  `- Load average (1, 5, 15 min) at the start ${loadavgStart}, at the end ${loadavg()}: the soak itself keeps about 1.2 cores busy, more means other work shared the machine.`,
  '',
  '## Checks',
  '',
  ...checks.map((c) => `- ${c.ok ? 'ok' : '**FAILED**'}: ${c.what}`),
  '',
  '## Requests by kind',
  '',
  'Every answer is compared with what mockllm must have said (token i is `w<i> `): the whole text, one `finish_reason`, one `[DONE]` at the end of a complete stream; ' +
    'a truncated stream must carry exactly the tokens sent before the break, then the error chunk (`finish_reason: "error"`, top-level `error`) and a clean chunked end with no `[DONE]`; ' +
    'a request every deployment refuses must get an OpenAI error body. Latency in ms, from the request to the last byte (or to the client leaving).',
  '',
  '| kind | alias | | scenario | requests | outcomes | wrong | p50 | p99 |',
  '|---|---|---|---|--:|---|--:|--:|--:|',
  ...rows,
  `| **all** | | | | **${int(total)}** | ${int(timeouts)} timeouts | **${int(failed)}** | ${fmt(pct(allLat, 50))} | ${fmt(pct(allLat, 99))} |`,
  '',
  `Access log outcomes: ${[...logOutcomes.entries()].sort((a, b) => b[1] - a[1]).map(([o, c]) => `${o} ${int(c)}`).join(', ')}.`,
  '',
  '## llmux memory and descriptors',
  '',
  `Sampled every second from /proc/${'<pid>'}/status (VmRSS) and /proc/<pid>/fd. "first" is the maximum of the first ${WINDOW_S} s after a ${WARMUP_S} s warm-up, "last" the maximum of the last ${WINDOW_S} s.`,
  '',
  '| | idle before | first | last | max | idle after |',
  '|---|--:|--:|--:|--:|--:|',
  `| RSS (KB) | ${int(idle0.rss_kb)} | ${int(rss.first)} | ${int(rss.last)} | ${int(rss.max)} | ${idle1 ? int(idle1.rss_kb) : '?'} |`,
  `| open descriptors | ${idle0.fds} | ${fds.first} | ${fds.last} | ${fds.max} | ${idle1?.fds ?? '?'} |`,
  '',
  `VmHWM at the end: ${int(samples.at(-1)?.hwm_kb ?? 0)} KB. Upstreams at the end (mockllm /mock/stats): ` +
    Object.entries(mockStats).map(([k, s]) => `${k}: ${int(s.requests ?? 0)} requests, ${int(s.aborted ?? 0)} aborted, ${int(s.connections ?? 0)} connections`).join('; ') + '.',
  '',
  '<details><summary>Per-second samples (t s: RSS KB / fds / answers / in flight)</summary>',
  '',
  samples.map((s) => `${s.t}: ${s.rss_kb}/${s.fds}/${s.done}/${s.inflight}`).join(', '),
  '',
  '</details>',
];
if (timeoutSamples.length) {
  lines.push('', '## First timeouts (the end of the answer)', '', '```');
  for (const f of timeoutSamples) lines.push(JSON.stringify(f));
  lines.push('```');
}
if (failures.length) {
  lines.push('', '## First wrong answers', '', '```');
  for (const f of failures) lines.push(JSON.stringify(f));
  lines.push('```');
}
const md = `${lines.join('\n')}\n`;
if (REPORT) {
  mkdirSync(dirname(REPORT), { recursive: true });
  writeFileSync(REPORT, md);
}
if (!QUIET || !ok) {
  console.log('');
  console.log(lines.filter((l) => !l.startsWith('<') && !/^\d+: /.test(l)).join('\n'));
  if (REPORT) console.log(`\nwritten to ${REPORT}`);
}
process.exit(ok ? 0 : 1);
