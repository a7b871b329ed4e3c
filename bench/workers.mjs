// bench/workers.mjs (`make bench-workers`): requests/s and CPU per request of llmux with
// "workers": 1 and 2 on this machine, and what one core does. Writes
// bench/results/<date>-workers.md. Environment: BUILD (default build), BENCH_ROUNDS (3),
// BENCH_SECONDS (4).
//
// mockllm and the load client stay pinned to core 0 as in `make bench`. One worker is pinned to
// core 1; two workers are left to the scheduler over both cores (one of which the load client
// and mockllm also need), so "2 workers" here measures the machine, not the design: the
// per-core figure (1 / CPU per request) is what carries over to bigger machines.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BUILD = resolve(ROOT, process.env.BUILD || 'build');
const BIN = { llmux: join(BUILD, 'llmux'), mock: join(BUILD, 'test', 'mockllm'), bench: join(BUILD, 'bench', 'llmux-bench') };
const ROUNDS = Number(process.env.BENCH_ROUNDS || 3);
const SECONDS = Number(process.env.BENCH_SECONDS || 4);
const CONNS = 64;
const TICK = 100; // clock ticks per second in /proc/PID/stat (USER_HZ)

for (const f of Object.values(BIN)) if (!existsSync(f)) throw new Error(`${f} is missing: run make build first`);
const tmp = mkdtempSync(join(tmpdir(), 'llmux-bench-workers-'));
const children = [];
process.on('exit', () => {
  for (const c of children) try { c.kill('SIGKILL'); } catch { /* gone */ }
  rmSync(tmp, { recursive: true, force: true });
});
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(130));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

function freePort() {
  return new Promise((res) => { const s = createServer(); s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); }); });
}

// Starts cmd (under taskset when cores is given) and resolves when it prints "listening".
function start(name, cmd, args, cores) {
  const argv = cores ? ['taskset', '-c', cores, cmd, ...args] : [cmd, ...args];
  const p = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(p);
  return new Promise((res, rej) => {
    let out = '';
    p.stdout.on('data', (d) => { out += d; if (/listening on/.test(out)) res(p); });
    p.on('exit', (c) => rej(new Error(`${name} exited (${c}): ${out}`)));
  });
}

async function stop(p) {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await gone;
}

// CPU seconds (user + system) of pid and its children processes (the workers).
function cpuOf(pid) {
  const one = (p) => {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
      return (Number(f[11]) + Number(f[12])) / TICK;
    } catch { return 0; }
  };
  let kids = [];
  try { kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean); } catch { /* none */ }
  return one(pid) + kids.reduce((s, k) => s + one(k), 0);
}

function load(url) {
  return new Promise((res, rej) => {
    const p = spawn('taskset', ['-c', '0', BIN.bench, '-q', '-j', '-', '-c', String(CONNS), '-w', '0.5',
      '-d', String(SECONDS), url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.on('close', (c) => (c === 0 ? res(JSON.parse(out)) : rej(new Error(`llmux-bench failed (${c})`))));
  });
}

const mockPort = await freePort();
await start('mockllm', BIN.mock, ['--listen', `127.0.0.1:${mockPort}`, '--quiet', '--script', 'tokens=16'], '0');
const runs = { 1: [], 2: [] };
for (let round = 0; round < ROUNDS; round++) {
  for (const workers of round % 2 ? [2, 1] : [1, 2]) {
    const port = await freePort();
    const cfg = join(tmp, `llmux-${workers}.json`);
    writeFileSync(cfg, JSON.stringify({
      listen: `127.0.0.1:${port}`, workers, access_log: join(tmp, 'access.log'), pool: { max_idle_per_origin: 256 },
      providers: { mock: { kind: 'openai', base_url: `http://127.0.0.1:${mockPort}/v1` } },
      models: { bench: { deployments: [{ provider: 'mock', model: 'bench' }] } },
    }));
    const llmux = await start('llmux', BIN.llmux, ['-c', cfg], workers === 1 ? '1' : '0,1');
    await sleep(200);
    const cpu0 = cpuOf(llmux.pid);
    const r = await load(`http://127.0.0.1:${port}/v1/chat/completions`);
    const cpu = cpuOf(llmux.pid) - cpu0; // includes the 0.5 s warm-up
    const sent = r.requests * (1 + 0.5 / SECONDS); // requests over the same span, warm-up included
    runs[workers].push({ rps: r.throughput_rps, errors: r.requests - r.ok, cpu_us: (cpu * 1e6) / sent, p50: r.latency_us.p50, p99: r.latency_us.p99 });
    console.log(`round ${round + 1}: ${workers} worker(s): ${r.throughput_rps} req/s, ${(cpu * 1e6 / sent).toFixed(1)} us CPU/request, errors ${r.requests - r.ok}`);
    await stop(llmux);
  }
}

const row = (w) => {
  const x = runs[w];
  const cpu = median(x.map((r) => r.cpu_us));
  return `| ${w} | ${Math.round(median(x.map((r) => r.rps))).toLocaleString('en-US')} | ${cpu.toFixed(1)} | ${Math.round(1e6 / cpu).toLocaleString('en-US')} | ${median(x.map((r) => r.p50)).toFixed(0)} | ${median(x.map((r) => r.p99)).toFixed(0)} | ${x.reduce((s, r) => s + r.errors, 0)} |`;
};
const date = new Date().toISOString().slice(0, 10);
const rps1 = median(runs[1].map((r) => r.rps)), rps2 = median(runs[2].map((r) => r.rps));
const md = `# llmux workers: ${date}

Machine: ${cpus().length} x ${cpus()[0].model}, load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}.
Non-stream chat, 1 KB body, ${CONNS} keep-alive connections flat out for ${SECONDS} s after 0.5 s warm-up,
${ROUNDS} interleaved rounds, medians. mockllm and the load client on core 0; 1 worker on core 1,
2 workers over cores 0-1 (sharing core 0 with the load). CPU per request: user + system time of
every llmux process over the run / requests.

| workers | req/s | CPU us/request | req/s per core (1e6 / CPU) | p50 us | p99 us | errors |
|---|---|---|---|---|---|---|
${row(1)}
${row(2)}

2 workers / 1 worker: ${(rps2 / rps1).toFixed(2)}x requests/s on this 2-core machine.
`;
writeFileSync(join(ROOT, 'bench', 'results', `${date}-workers.md`), md);
console.log(md);
process.exit(0);
