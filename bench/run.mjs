// bench/run.mjs: the benchmark behind `make bench` (method and tables explained in README.md here).
//
// Starts mockllm (the upstream), llmux, nginx and, when installed, the Portkey gateway on
// loopback, drives them with build/bench/llmux-bench, and writes bench/results/<date>.md with a
// CDF plot <date>-latency.png beside it. Every process it starts is killed when it exits, however
// it exits. Targets are reported, never asserted: the exit status is 0 when every number was
// measured. Environment: BUILD (build dir, default build), BENCH_ROUNDS (5), BENCH_SPIN=0 (no
// idle spinners), BENCH_SCALE_STREAMS (default: 10,000, or what the descriptor limit allows).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import {
  BIN, LOAD_CORE, PATH, PROXY_CORE, ROOT, bench, errorsOf, f0, f1, freePort, killAll, llmuxConfig,
  latencyRounds, loadavg, log, median, procStatus, signed, startNginx, startSpinners, start, started, stop,
  tmp,
} from './lib.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS || 5);
const MOCK_SCRIPT = 'tokens=16&tps=1000&stamp=1'; // answers of 16 tokens; streams send one every ms,
// each event stamped with its send time (mockllm's stamp=1) so its transit is measured exactly
const STALL_IDLE_MS = 200;
const SLO_US = 1000;
const LADDER = [500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 7000, 8000, 10000, 12000,
  14000, 16000, 20000, 24000, 28000, 32000, 40000];
const WORKLOADS = [
  { id: 'small', title: 'non-stream, 1 KB request body', args: ['-b', '1024'], secs: 1 },
  { id: 'large', title: 'non-stream, 100 KB request body', args: ['-b', '102400'], secs: 1 },
  { id: 'stream', title: 'stream, 1 KB request body, 16 tokens 1 ms apart', args: ['-s', '-b', '1024'], secs: 1.5 },
];

const loadStart = loadavg();

// ---------------------------------------------------------------------------------------------

for (const [k, f] of Object.entries(BIN))
  if (k !== 'portkey' && !existsSync(f)) throw new Error(`${f} is missing: run make build first`);
const hardNofile = Number(spawnSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).stdout.trim()) || 1024;
// llmux holds two descriptors per stream (client and upstream) and cannot raise its hard limit.
const SCALE = Number(process.env.BENCH_SCALE_STREAMS) ||
  Math.min(10000, Math.floor((hardNofile - 200) / 2 / 100) * 100);

await startSpinners();

const ports = { mock: await freePort(), llmux: await freePort(), nginx: await freePort(), portkey: await freePort(), dead: await freePort() };
const mockBase = `http://127.0.0.1:${ports.mock}`;

log(`mockllm on core ${LOAD_CORE} with the load client; proxies on core ${PROXY_CORE}`);
const mock = await start('mockllm', BIN.mock, ['--listen', `127.0.0.1:${ports.mock}`, '--quiet', '--script', MOCK_SCRIPT],
  { core: LOAD_CORE, port: ports.mock });

writeFileSync(join(tmp, 'llmux.json'), JSON.stringify(llmuxConfig(ports.llmux, {
  mock: { kind: 'openai', base_url: `${mockBase}/v1` },
  dead: { kind: 'openai', base_url: `http://127.0.0.1:${ports.dead}/v1` }, // nothing listens: refused
}, {
  bench: { deployments: [{ provider: 'mock', model: 'bench' }] },
  failover: { deployments: [{ provider: 'dead', model: 'bench' }, { provider: 'mock', model: 'bench' }] },
  stall: { deployments: [{ provider: 'mock', model: 'bench?stall_after=3' }], timeouts_ms: { idle: STALL_IDLE_MS } },
}), null, 2));
const llmux = await start('llmux', BIN.llmux, ['-c', join(tmp, 'llmux.json')], { core: PROXY_CORE, port: ports.llmux });

const { proc: nginx, workerPid } = await startNginx('nginx', ports.nginx, `http://mock`,
  `server 127.0.0.1:${ports.mock};\n        keepalive 256;`);

const systems = [
  { name: 'direct', url: `${mockBase}${PATH}`, pid: mock.pid, hdr: [] },
  { name: 'llmux', url: `http://127.0.0.1:${ports.llmux}${PATH}`, pid: llmux.pid, proc: llmux, hdr: [] },
  { name: 'nginx', url: `http://127.0.0.1:${ports.nginx}${PATH}`, pid: workerPid, proc: nginx, hdr: [] },
];
let portkeyNote = '';
if (existsSync(BIN.portkey)) {
  try {
    const pk = await start('portkey', 'node', [BIN.portkey, `--port=${ports.portkey}`, '--headless'],
      { core: PROXY_CORE, port: ports.portkey, cwd: join(ROOT, 'bench', 'node') });
    systems.push({ name: 'portkey', url: `http://127.0.0.1:${ports.portkey}${PATH}`, pid: pk.pid, proc: pk,
      hdr: ['-H', 'x-portkey-provider: openai', '-H', `x-portkey-custom-host: ${mockBase}/v1`, '-H', 'Authorization: Bearer bench'] });
  } catch (e) {
    portkeyNote = `Portkey did not start: ${e.message.split('\n')[0]}`;
  }
} else {
  portkeyNote = 'Portkey is not installed (bench/node): `make bench-deps` installs it from npm.';
}

// Every system must answer both shapes before anything is measured.
for (const s of [...systems]) {
  for (const extra of [[], ['-s']]) {
    const j = await bench(s.url, ['-n', '3', '--timeout', '10', ...s.hdr, ...extra]);
    if (j.ok === 3) continue;
    const why = `${s.name} failed the smoke test (${extra.length ? 'stream' : 'non-stream'}): ${JSON.stringify(j.errors)}`;
    if (s.name !== 'portkey') throw new Error(why);
    portkeyNote = why;
    systems.splice(systems.indexOf(s), 1);
    await stop(s.proc);
    break;
  }
}
if (portkeyNote) log(`skipping Portkey: ${portkeyNote}`);
const idleRss = Object.fromEntries(systems.map((s) => [s.name, procStatus(s.pid)]));

// ---- 1. the upstream's own capacity: mockllm alone on its core, the client on the other ----
log('mockllm capacity');
const mockMax = await bench(systems[0].url, ['-c', '32', '-w', '0.5', '-d', '2'], { core: PROXY_CORE });

// ---- 2. latency, one request at a time, rounds interleaved ----
const lat = await latencyRounds(systems, WORKLOADS, ROUNDS);

// Median over rounds of one number picked from each run.
const med = (runs, pick) => median(runs.map(pick));
function summary(wid, name) {
  const runs = lat[wid][name];
  const q = runs[0].quantiles_us.map((_, i) => [runs[0].quantiles_us[i][0], med(runs, (j) => j.quantiles_us[i][1])]);
  return {
    p50: med(runs, (j) => j.latency_us.p50), p99: med(runs, (j) => j.latency_us.p99), p999: med(runs, (j) => j.latency_us.p999),
    ttfb: med(runs, (j) => j.ttfb_us.p50), first: med(runs, (j) => j.first_event_us.p50),
    gmean: med(runs, (j) => j.gap_us.mean), g50: med(runs, (j) => j.gap_us.p50), g99: med(runs, (j) => j.gap_us.p99), g999: med(runs, (j) => j.gap_us.p999),
    tcount: runs.reduce((a, j) => a + (j.transit_us?.count ?? 0), 0),
    t50: med(runs, (j) => j.transit_us?.p50 ?? 0), t99: med(runs, (j) => j.transit_us?.p99 ?? 0), t999: med(runs, (j) => j.transit_us?.p999 ?? 0),
    cpu: med(runs, (j) => j.process?.cpu_us_per_req), count: runs.reduce((a, j) => a + j.ok, 0),
    st50: med(runs, (j) => j.server_overhead_us?.count ? j.server_overhead_us.p50 : NaN),
    gaps: runs.reduce((a, j) => a + j.gap_us.count, 0), errors: runs.reduce((a, j) => a + errorsOf(j), 0), q,
  };
}
const S = Object.fromEntries(WORKLOADS.map((w) => [w.id, Object.fromEntries(systems.map((s) => [s.name, summary(w.id, s.name)]))]));

// ---- 3. throughput: as fast as possible, and the highest fixed rate with p99 under 1 ms ----
// The rate ladder is climbed by every system in turn (noise hits them alike); a rate passes with
// no errors and p99 under 1 ms in one of two tries (the best of two filters out bursts of other
// work on the machine). A failed rate does not end the climb (tails can be worse at low rates than
// at higher ones): a system stops after two failed rates in a row or past its flat-out rate.
const tput = {};
for (const s of systems) {
  log(`throughput: ${s.name}, flat out and at 1,000 req/s`);
  const closed = await bench(s.url, ['-c', '32', '-w', '0.5', '-d', '2', '-p', String(s.pid), ...s.hdr]);
  const fixed = await bench(s.url, ['-c', '32', '-r', '1000', '-w', '0.3', '-d', '2', '-p', String(s.pid), ...s.hdr]);
  tput[s.name] = { closed, fixed, best: 0, bestRun: null, tried: [], climbing: true, fails: 0 };
}
for (const rate of LADDER) {
  const climbing = systems.filter((s) => tput[s.name].climbing);
  if (!climbing.length) break;
  log(`throughput: ${rate} req/s, p99 < ${SLO_US} µs? ${climbing.map((s) => s.name).join(', ')}`);
  for (const s of climbing) {
    const t = tput[s.name];
    let pass = false;
    for (let attempt = 0; attempt < 2 && !pass; attempt++) {
      const j = await bench(s.url, ['-c', '64', '-r', String(rate), '-w', '0.3', '-d', '1.5', ...s.hdr]);
      pass = errorsOf(j) === 0 && j.latency_us.p99 < SLO_US;
      t.tried.push(`${rate}:${Math.round(j.latency_us.p99)}${pass ? '' : '✗'}`);
      if (pass) { t.best = rate; t.bestRun = j; }
    }
    t.fails = pass ? 0 : t.fails + 1;
    const next = LADDER[LADDER.indexOf(rate) + 1];
    t.climbing = t.fails < 2 && next !== undefined && next <= t.closed.throughput_rps * 1.1;
  }
}
const peakRss = Object.fromEntries(systems.map((s) => [s.name, procStatus(s.pid)]));

// ---- 4. failover to a refused deployment, and stall detection ----
log('failover and stall detection');
const llmuxUrl = systems[1].url;
const fo = { direct: [], failover: [] };
for (let r = 0; r < 3; r++) {
  fo.direct.push(await bench(llmuxUrl, ['-c', '1', '-w', '0.2', '-d', '1', '-m', 'bench']));
  fo.failover.push(await bench(llmuxUrl, ['-c', '1', '-w', '0.2', '-d', '1', '-m', 'failover']));
}
const stall = await bench(llmuxUrl, ['-c', '1', '-n', '8', '-s', '-m', 'stall', '--timeout', '10']);

for (const s of systems.slice(1)) await stop(s.proc);
await stop(mock);

// ---- 5. scale: many concurrent streams through one fresh llmux, plain and TLS upstream ----
const certs = join(tmp, 'certs');
spawnSync('sh', [join(ROOT, 'test', 'gen-certs.sh'), certs], { stdio: 'ignore' });
const scale = [];
// TLS streams start more slowly and last longer: every new upstream connection is a handshake.
async function scaleRun(label, tls, n) {
  const rate = tls ? 500 : 1000; const tokens = tls ? 40 : 20;
  const mp = await freePort(); const lp = await freePort();
  const m = await start(`mock-${label}`, BIN.mock, ['--listen', `127.0.0.1:${mp}`, '--quiet',
    ...(tls ? ['--tls-cert', join(certs, 'localhost.pem'), '--tls-key', join(certs, 'localhost.key')] : [])],
  { core: LOAD_CORE, port: mp });
  const provider = tls ? { kind: 'openai', base_url: `https://localhost:${mp}/v1`, ca_file: join(certs, 'ca.pem') }
    : { kind: 'openai', base_url: `http://127.0.0.1:${mp}/v1` };
  const cfg = join(tmp, `llmux-${label}.json`);
  writeFileSync(cfg, JSON.stringify(llmuxConfig(lp, { mock: provider },
    { scale: { deployments: [{ provider: 'mock', model: `bench?tokens=${tokens}&tps=1` }] } },
    { timeouts_ms: { connect: 30000 } })));
  const l = await start(`llmux-${label}`, BIN.llmux, ['-c', cfg], { core: PROXY_CORE, port: lp });
  const idle = procStatus(l.pid);
  {
    log(`scale: ${n.toLocaleString('en-US')} streams, ${label} upstream`);
    // streams long enough that all of them are in flight together
    const j = await bench(`http://127.0.0.1:${lp}${PATH}`, ['-c', String(n), '-n', String(n), '-r', String(rate), '-s', '-m', 'scale',
      '-p', String(l.pid), '--sample-ms', '250', '--timeout', '90'], { timeout: 240 });
    const p = j.process;
    // why streams failed, in llmux's own words (its access log)
    const reasons = {};
    for (const line of readFileSync(join(tmp, `llmux-${lp}-access.log`), 'utf8').split('\n')) {
      const m = line.match(/"outcome":"([^"]+)"(?:,"reason":"([^"]{0,80}))?/);
      if (m && m[1] !== 'ok') reasons[m[2] || m[1]] = (reasons[m[2] || m[1]] || 0) + 1;
    }
    scale.push({ reasons, label, n, idle_kb: idle.rss_kb, peak_kb: p.peak?.rss_kb, inflight: p.peak_inflight,
      per_stream_kb: (p.peak?.rss_kb - idle.rss_kb) / p.peak_inflight, after_kb: p.end?.rss_kb,
      hwm_kb: p.end?.hwm_kb, cpu: p.cpu_us_per_req, ok: j.ok, errors: errorsOf(j), err: j.errors });
  }
  await stop(l);
  await stop(m);
}
await scaleRun('plain', false, 1000);
await scaleRun('plain', false, SCALE);
await scaleRun('TLS', true, SCALE);

// ---------------------------------------------------------------------------------------------
// The report.
const date = new Date().toISOString().slice(0, 10);
const outDir = join(ROOT, 'bench', 'results');
mkdirSync(outDir, { recursive: true });
const names = systems.map((s) => s.name);
const proxies = names.filter((n) => n !== 'direct');
const D = (wid) => S[wid].direct;
const verdict = (ok) => (ok ? '**met**' : '**missed**');
const md = [];
const version = (cmd, args) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`.trim().split('\n')[0];
};
const portkeyVersion = (() => {
  try { return JSON.parse(readFileSync(join(ROOT, 'bench/node/node_modules/@portkey-ai/gateway/package.json'), 'utf8')).version; } catch { return 'not installed'; }
})();

md.push(`# llmux benchmark, ${date}`, '',
  `Generated by \`make bench\` (bench/run.mjs, method in [bench/README.md](../README.md)) in ${Math.round((Date.now() - started) / 1000)} s.`, '',
  `- Machine: ${cpus()[0]?.model || 'unknown CPU'}, ${cpus().length} vCPUs, Linux ${release()}.`,
  `- llmux ${version(BIN.llmux, ['--version']).replace('llmux ', '')} (git ${version('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])}, Release build); ` +
  `${version('nginx', ['-v']).replace('nginx version: ', '')} (1 worker, upstream keepalive, proxy_buffering off); ` +
  `Portkey gateway ${portkeyVersion} on Node ${process.versions.node}.`,
  `- Proxy under test pinned to core ${PROXY_CORE}; mockllm (\`--script '${MOCK_SCRIPT}'\`) and the load client to core ${LOAD_CORE}` +
  `${process.env.BENCH_SPIN !== '0' ? '; SCHED_IDLE spinners keep both vCPUs out of idle' : ''}. All traffic on 127.0.0.1.`,
  `- Load average (1, 5, 15 min) at the start ${loadStart}, at the end ${loadavg()}: the bench itself keeps two cores busy ` +
  '(spinners included), so more than about 2.5 means other work shared the machine and the tails are noisier.',
  `- Latency: one request at a time, ${ROUNDS} interleaved rounds per system, each number the median of the round values. ` +
  '"Added" is the system minus direct. All times in µs.', '');
if (portkeyNote) md.push(`Portkey skipped: ${portkeyNote}`, '');

md.push('## Upstream capacity', '',
  `mockllm alone on its core (client on the other core, 32 connections, closed loop, 1 KB non-stream): ` +
  `**${f0(mockMax.throughput_rps)} req/s** (p99 ${f1(mockMax.latency_us.p99)} µs). ` +
  `Through a proxy the load client shares that core with it, so no run below can exceed it.`, '');

for (const w of WORKLOADS) {
  const d = D(w.id);
  md.push(`## Latency: ${w.title}`, '');
  if (w.id === 'stream') {
    md.push('| system | total p50 | total p99 | first byte p50 | first event p50 | event gap p50 | gap p99 | gap p99.9 | added gap mean | added gap p50 | added gap p99 | added gap p99.9 | CPU µs/stream | streams (gaps) | errors |',
      '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
    for (const n of names) {
      const x = S[w.id][n];
      const add = (k) => (n === 'direct' ? '' : signed(x[k] - d[k]));
      md.push(`| ${n} | ${f1(x.p50)} | ${f1(x.p99)} | ${f1(x.ttfb)} | ${f1(x.first)} | ${f1(x.g50)} | ${f1(x.g99)} | ${f1(x.g999)} | ${add('gmean')} | ${add('g50')} | ${add('g99')} | ${add('g999')} | ${n === 'direct' ? '' : f1(x.cpu)} | ${x.count} (${x.gaps}) | ${x.errors} |`);
    }
    const a = S.stream.llmux;
    for (const n of proxies) {
      if (S.stream[n].first > d.p50 * 0.8)
        md.push('', `${n}'s first event came only after about as long as a whole direct stream (${f1(S.stream[n].first)} vs ${f1(d.p50)} µs): ` +
          'it passed the stream on in one piece, not event by event, so its gap columns say nothing about per-event delay.');
    }
    md.push('', `Per-event added delay (event gap through the proxy minus direct; the role-chunk gap and \`[DONE]\` left out): ` +
      `llmux p99 ${signed(a.g99 - d.g99)} µs against the target ≤ 10 µs: ${verdict(a.g99 - d.g99 <= 10)} ` +
      `(mean ${signed(a.gmean - d.gmean)} µs). mockllm paces tokens with libuv's millisecond timers, so every gap ` +
      'carries up to a millisecond of timer phase jitter, direct too; the tail of the difference is mostly that jitter.', '');
    if (d.tcount > 0) {
      md.push('Per-event transit, exact: mockllm stamps every event with its send time and the load client subtracts it ' +
        'from the arrival time (one monotonic clock), so timer jitter drops out. Added = through the proxy − direct.', '',
        '| system | transit p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | events |', '|---|--:|--:|--:|--:|--:|--:|--:|');
      for (const n of names) {
        const x = S.stream[n];
        if (!x.tcount) continue;
        const add = (k) => (n === 'direct' ? '' : signed(x[k] - d[k]));
        md.push(`| ${n} | ${f1(x.t50)} | ${f1(x.t99)} | ${f1(x.t999)} | ${add('t50')} | ${add('t99')} | ${add('t999')} | ${x.tcount} |`);
      }
      md.push('', `Target, per-event added delay ≤ 10 µs at p99 (transit): llmux ${signed(a.t99 - d.t99)} µs: ${verdict(a.t99 - d.t99 <= 10)}` +
        (S.stream.nginx?.tcount ? ` (nginx ${signed(S.stream.nginx.t99 - d.t99)} µs).` : '.'), '');
    }
  } else {
    md.push('| system | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | CPU µs/request | requests | errors |',
      '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
    for (const n of names) {
      const x = S[w.id][n];
      const add = (k) => (n === 'direct' ? '' : signed(x[k] - d[k]));
      md.push(`| ${n} | ${f1(x.p50)} | ${f1(x.p99)} | ${f1(x.p999)} | ${add('p50')} | ${add('p99')} | ${add('p999')} | ${n === 'direct' ? '' : f1(x.cpu)} | ${x.count.toLocaleString('en-US')} | ${x.errors} |`);
    }
    const a = S[w.id].llmux; const g = S[w.id].nginx;
    md.push('', `Target, added latency ≤ nginx's: p50 ${signed(a.p50 - d.p50)} vs ${signed(g.p50 - d.p50)} ${verdict(a.p50 <= g.p50)}, ` +
      `p99 ${signed(a.p99 - d.p99)} vs ${signed(g.p99 - d.p99)} ${verdict(a.p99 <= g.p99)}.`, '');
    // llmux's own account of its time (Server-Timing: overhead) is part of what it adds: it
    // must not exceed the added latency measured from outside (the rest is the extra hop).
    md.push(`llmux's Server-Timing \`overhead\` p50 ${f1(a.st50)} µs against its added latency p50 ` +
      `${signed(a.p50 - d.p50)} µs: ${Number.isFinite(a.st50) && a.st50 <= a.p50 - d.p50 + 1 ? 'consistent (its own time is part of what it adds)' : 'INCONSISTENT'}.`, '');
  }
}
md.push(`![latency CDF and added-latency CDF, 1 KB non-stream](${date}-latency.png)`, '');

md.push('## Throughput: non-stream, 1 KB request body', '',
  '| system | max req/s (32 conns, closed loop) | p99 there | highest fixed rate with p99 < 1 ms, no errors | p99 at that rate | CPU µs/request at 1,000 req/s | rates tried (rate:p99, ✗ failed) |',
  '|---|--:|--:|--:|--:|--:|---|');
for (const n of names) {
  const t = tput[n];
  md.push(`| ${n} | ${f0(t.closed.throughput_rps)} | ${f1(t.closed.latency_us.p99)} | ${t.best ? f0(t.best) : `< ${LADDER[0]}`} | ${t.bestRun ? f1(t.bestRun.latency_us.p99) : '–'} | ${n === 'direct' ? '' : f1(t.fixed.process?.cpu_us_per_req)} | ${t.tried.join(' ')} |`);
}
const L = tput.llmux; const N = tput.nginx; const P = tput.portkey;
md.push('', `llmux / nginx: ${N.best ? (L.best / N.best).toFixed(2) : '–'}× at the 1 ms p99 limit, ${(L.closed.throughput_rps / N.closed.throughput_rps).toFixed(2)}× flat out.`);
if (P) {
  const sloRatio = P.best ? L.best / P.best : NaN;
  const flat = L.closed.throughput_rps / P.closed.throughput_rps;
  md.push(`llmux / Portkey: ${P.best ? `${sloRatio.toFixed(1)}×` : `Portkey never kept p99 under 1 ms (lowest rate tried ${LADDER[0]}/s)`} at the 1 ms p99 limit, ` +
    `${flat.toFixed(1)}× flat out. Target ≥ 10×: ${verdict(P.best ? sloRatio >= 10 : flat >= 10)}.`);
}
md.push('');

md.push('## Memory of the proxies', '', '| system | RSS idle (KiB) | RSS after the runs | peak RSS (VmHWM) |', '|---|--:|--:|--:|');
for (const n of proxies) md.push(`| ${n}${n === 'nginx' ? ' (worker)' : ''} | ${f0(idleRss[n].rss_kb)} | ${f0(peakRss[n].rss_kb)} | ${f0(peakRss[n].hwm_kb)} |`);
md.push('');

md.push(`## Scale: concurrent streams through one llmux`, '',
  'A fresh llmux per run; streams of 20 tokens at 1 token/s started at 1,000/s (TLS: 40 tokens, started at 500/s, connect timeout 30 s as handshakes queue). RSS per stream = (RSS with the most streams in flight − idle RSS) / streams in flight.', '',
  '| upstream | streams | in flight at the peak sample | RSS idle (KiB) | RSS at peak | KiB per stream | RSS after | VmHWM | CPU µs/stream | ok | errors |',
  '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
const errText = (e) => Object.entries(e).filter(([k, v]) => v && !k.startsWith('last')).map(([k, v]) => `${v} ${k}`).join(', ') +
  (e.last_error ? ` (last: ${e.last_error})` : '');
for (const x of scale)
  md.push(`| ${x.label} | ${f0(x.n)} | ${f0(x.inflight)} | ${f0(x.idle_kb)} | ${f0(x.peak_kb)} | ${f1(x.per_stream_kb)} | ${f0(x.after_kb)} | ${f0(x.hwm_kb)} | ${f1(x.cpu)} | ${f0(x.ok)} | ${x.errors ? errText(x.err) : 0} |`);
for (const x of scale) {
  const top = Object.entries(x.reasons).sort((a, b) => b[1] - a[1]).slice(0, 3);
  if (top.length) md.push('', `${x.label} ${f0(x.n)}: llmux logged ${top.map(([r, n]) => `${n} × "${r}"`).join(', ')}.`);
}
if (scale.every((x) => x.after_kb > 0.9 * x.peak_kb))
  md.push('', '"RSS after" is read once every stream has ended: llmux keeps the memory it took for the streams (over 90 % of the peak) instead of giving it back to the system.');
const plainN = scale.find((x) => x.label === 'plain' && x.n === SCALE); const tlsN = scale.find((x) => x.label === 'TLS');
md.push('', `Targets: ≤ 16 KiB per plain stream ${verdict(plainN.per_stream_kb <= 16)}, ≤ 64 KiB per TLS stream ${verdict(tlsN.per_stream_kb <= 64)}.`);
if (SCALE < 10000)
  md.push(`${f0(SCALE)} streams, not 10,000: this machine's hard RLIMIT_NOFILE is ${hardNofile} and cannot be raised (no CAP_SYS_RESOURCE); llmux needs two descriptors per stream.`);
md.push('');

const foD = median(fo.direct.map((j) => j.latency_us.p50)); const foF = median(fo.failover.map((j) => j.latency_us.p50));
const foD99 = median(fo.direct.map((j) => j.latency_us.p99)); const foF99 = median(fo.failover.map((j) => j.latency_us.p99));
const foErr = [...fo.direct, ...fo.failover].reduce((a, j) => a + errorsOf(j), 0);
md.push('## Failover and stall detection', '',
  '| plan (non-stream 1 KB, one at a time, median of 3 rounds) | p50 | p99 |', '|---|--:|--:|',
  `| one live deployment | ${f1(foD)} | ${f1(foD99)} |`,
  `| refused deployment first, then the live one | ${f1(foF)} | ${f1(foF99)} |`,
  `| added by the failover | ${signed(foF - foD)} | ${signed(foF99 - foD99)} |`, '',
  `Errors seen by the client: ${foErr}.`, '',
  `Stall: the upstream stops after 3 tokens with \`timeouts_ms.idle\` = ${STALL_IDLE_MS} ms. Over ${stall.requests} streams the client saw the ` +
  `ending error chunk ${f1(stall.max_gap_us.p50 / 1000)} ms (p50; max ${f1(stall.max_gap_us.max / 1000)} ms) after the last token: ` +
  `detection overshoots the configured idle time by ${f1(stall.max_gap_us.p50 / 1000 - STALL_IDLE_MS)} ms. ` +
  `${stall.errors.incomplete} of ${stall.requests} streams ended without \`[DONE]\` as they must (honest ending).`, '');

// The plot: latency CDFs of every system, and the CDF of the latency each proxy adds.
const dat = join(tmp, 'cdf.dat');
const rows = S.small.direct.q.filter(([q]) => q < 1).map(([q], i) => [q, ...names.map((n) => S.small[n].q[i][1]),
  ...proxies.map((n) => Math.max(0.1, S.small[n].q[i][1] - S.small.direct.q[i][1]))]);
writeFileSync(dat, rows.map((r) => r.join(' ')).join('\n') + '\n');
const png = join(outDir, `${date}-latency.png`);
const plot = [
  `set terminal pngcairo size 1200,480 font ",10"`, `set output "${png}"`,
  'set multiplot layout 1,2', 'set logscale x', 'set grid', 'set key bottom right', 'set yrange [0:1]',
  'set ylabel "fraction of requests"',
  'set title "Latency, 1 KB non-stream, one request at a time"', 'set xlabel "latency (µs, log)"',
  `plot ${names.map((n, i) => `"${dat}" using ${i + 2}:1 with lines lw 2 title "${n}"`).join(', ')}`,
  'set title "Added latency (proxy − direct, per quantile; ≤ 0.1 drawn at 0.1)"', 'set xlabel "added latency (µs, log)"',
  `plot ${proxies.map((n, i) => `"${dat}" using ${names.length + i + 2}:1 with lines lw 2 lc ${i + 2} title "${n}"`).join(', ')}`,
  'unset multiplot',
].join('\n');
const gp = spawnSync('gnuplot', [], { input: plot, encoding: 'utf8' });
if (gp.status !== 0) md.push(`(plot failed: ${gp.stderr})`);

writeFileSync(join(outDir, `${date}.md`), md.join('\n'));
log(`wrote bench/results/${date}.md and ${date}-latency.png`);
console.log(md.join('\n'));
killAll();
process.exit(0);
