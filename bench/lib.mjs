// bench/lib.mjs: what the bench scripts (run.mjs, tls.mjs) share: the binaries, starting and
// stopping processes (every process started is killed when the script exits, however it exits),
// the load client, an nginx configuration, and the numbers' formatting.
import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync,
} from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const BUILD = resolve(ROOT, process.env.BUILD || 'build');
export const BIN = {
  llmux: process.env.LLMUX_BIN ? resolve(process.env.LLMUX_BIN) : join(BUILD, 'llmux'), // another llmux: a before/after
  mock: join(BUILD, 'test', 'mockllm'),
  bench: join(BUILD, 'bench', 'llmux-bench'),
  portkey: join(ROOT, 'bench', 'node', 'node_modules', '@portkey-ai', 'gateway', 'build', 'start-server.js'),
};
export const LOAD_CORE = 0; // mockllm and the load client
export const PROXY_CORE = 1; // the proxy under test
export const PATH = '/v1/chat/completions';

export const started = Date.now();
export const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
export const tmp = mkdtempSync(join(tmpdir(), 'llmux-bench-'));
export const children = []; // every process we started, killed on exit
export const extraPids = []; // processes they forked (nginx's worker)

export function log(...a) {
  console.log(`[${String(Math.round((Date.now() - started) / 1000)).padStart(3)} s]`, ...a);
}

// Parents first: a live nginx master would replace a killed worker.
export function killAll() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) try { c.kill('SIGKILL'); } catch { /* gone */ }
  }
  for (const pid of extraPids) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
}
process.on('exit', () => {
  killAll();
  rmSync(tmp, { recursive: true, force: true });
});
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, () => process.exit(130));

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export function canConnect(port) {
  return new Promise((res) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.on('connect', () => { s.destroy(); res(true); });
    s.on('error', () => res(false));
  });
}

export function logTail(name) {
  try { return readFileSync(join(tmp, `${name}.log`), 'utf8').slice(-2000); } catch { return ''; }
}

// Start a process (pinned to `core` when given) and wait until it accepts on `port`.
export async function start(name, cmd, args, { core, port, cwd } = {}) {
  const out = openSync(join(tmp, `${name}.log`), 'a');
  const argv = core === undefined ? [cmd, ...args] : ['taskset', '-c', String(core), cmd, ...args];
  const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', out, out], cwd });
  closeSync(out);
  children.push(p);
  p.name = name;
  const until = Date.now() + 20000;
  while (port && !(await canConnect(port))) {
    if (p.exitCode !== null || Date.now() > until)
      throw new Error(`${name} did not start on port ${port}:\n${logTail(name)}`);
    await sleep(50);
  }
  return p;
}

export async function stop(p) {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  if (await Promise.race([gone.then(() => true), sleep(3000).then(() => false)])) return;
  p.kill('SIGKILL');
  await gone;
}

export function procStatus(pid) {
  try {
    const t = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k) => Number((t.match(new RegExp(`${k}:\\s+(\\d+)`)) || [])[1] || 0);
    return { rss_kb: kb('VmRSS'), hwm_kb: kb('VmHWM') };
  } catch { return { rss_kb: 0, hwm_kb: 0 }; }
}

// One run of the load client (pinned to the load core); resolves to its JSON. Asynchronous, so
// that a signal stops the whole run at once.
export function bench(url, args, { core = LOAD_CORE, timeout = 180 } = {}) {
  return new Promise((res, rej) => {
    const p = spawn('taskset', ['-c', String(core), BIN.bench, '-q', '-j', '-', ...args, url],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(p);
    let out = ''; let err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeout * 1000);
    p.on('close', (code) => {
      clearTimeout(timer);
      children.splice(children.indexOf(p), 1);
      if (code !== 0) rej(new Error(`llmux-bench ${args.join(' ')} ${url} failed (${code}): ${err}`));
      else res(JSON.parse(out));
    });
  });
}

export const errorsOf = (j) => j.requests - j.ok;
export const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
export const rotate = (xs, k) => xs.map((_, i) => xs[(i + k) % xs.length]);

// One request at a time through every system, `rounds` rounds interleaved (each round starts
// one system later): { workload id: { system name: [one JSON per round] } }. A system's `pid`
// (CPU and memory sampled) and `hdr` (extra load client arguments) are optional.
export async function latencyRounds(systems, workloads, rounds) {
  const lat = {};
  for (const w of workloads) {
    lat[w.id] = Object.fromEntries(systems.map((s) => [s.name, []]));
    for (let r = 0; r < rounds; r++) {
      log(`latency: ${w.title}, round ${r + 1}/${rounds}`);
      for (const s of rotate(systems, r)) {
        const args = ['-c', '1', '-w', '0.2', '-d', String(w.secs), ...(s.pid ? ['-p', String(s.pid)] : []), ...(s.hdr || []), ...w.args];
        lat[w.id][s.name].push(await bench(s.url, args));
      }
    }
  }
  return lat;
}
export const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : '–');
export const f0 = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–');
export const signed = (x) => (Number.isFinite(x) ? (x >= 0 ? '+' : '') + x.toFixed(1) : '–');


// SCHED_IDLE spinners keep both vCPUs from halting between requests: they run only when
// nothing else wants the core, and spare every request the VM's wake-up from idle.
export async function startSpinners() {
  if (process.env.BENCH_SPIN === '0') return;
  for (const core of [LOAD_CORE, PROXY_CORE])
    await start(`spin${core}`, 'chrt', ['-i', '0', 'sh', '-c', 'while :; do :; done'], { core });
}

export function llmuxConfig(listenPort, providers, models, extra = {}) {
  return { listen: `127.0.0.1:${listenPort}`, access_log: join(tmp, `llmux-${listenPort}-access.log`),
    pool: { max_idle_per_origin: 256 }, providers, models, ...extra };
}

// nginx, 1 worker pinned to the proxy core, relaying to `upstream` (the lines of an upstream
// block named mock) through proxy_pass `pass`, plus `extra` lines in the location. Resolves to
// the master process and the worker's pid (the one to measure).
export async function startNginx(name, port, pass, upstream, extra = '') {
  const dir = join(tmp, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'nginx.conf'), `${userInfo().uid === 0 ? 'user root;\n' : ''}daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
    access_log ${dir}/access.log;
    client_body_temp_path ${dir}/body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    client_max_body_size 8m;
    client_body_buffer_size 256k;
    keepalive_requests 1000000;
    upstream mock {
        ${upstream}
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:${port};
        location / {
            proxy_pass ${pass};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            ${extra}
        }
    }
}
`);
  const proc = await start(name, 'nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')],
    { core: PROXY_CORE, port });
  const workerPid = Number(readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
  extraPids.push(workerPid);
  return { proc, workerPid };
}
