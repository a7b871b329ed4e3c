// bench/tls.mjs: the TLS-upstream section of `make bench` (method in README.md here): llmux and
// nginx (proxy_pass https://, upstream keep-alive, proxy_ssl_session_reuse on, the peer verified)
// in front of the same HTTPS mockllm, and a direct connection to a plain mockllm as the baseline.
// Writes bench/results/<date>-tls.md. Measures, rounds interleaved: latency and CPU per request
// (non-stream) and per stream; system calls per request and per stream (strace -c on the proxy);
// new TLS connections per second with the session resumption hit rate (proxies that keep no
// upstream connection: every request is a handshake); memory per TLS stream held open; and the
// crypto costs behind llmux's cipher suite order (llmux-crypto-bench). Environment: BUILD,
// BENCH_ROUNDS (5), BENCH_SPIN=0, BENCH_TLS_STREAMS (1,000 streams held open), LLMUX_BIN (another
// llmux binary, e.g. a build of an earlier commit), LLMUX_BASE (a second llmux binary measured
// beside the first in the same rounds, as "llmux-base": a before/after in one run) and BENCH_OUT
// (the report's name instead of <date>-tls.md).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import {
  BIN, BUILD, LOAD_CORE, PATH, PROXY_CORE, ROOT, bench, children, errorsOf, f0, f1, freePort,
  killAll, latencyRounds, llmuxConfig, loadavg, log, median, procStatus, rotate, signed, sleep, start, startNginx,
  startSpinners, started, stop, tmp,
} from './lib.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS || 5);
const STREAMS = Number(process.env.BENCH_TLS_STREAMS || 1000);
const MOCK_SCRIPT = 'tokens=16&tps=1000&stamp=1';
const HELD = 'bench?tokens=20&tps=1'; // streams held open for the memory figure
const BURST = 'bench?tokens=16&tps=0'; // a stream whose events come together (a few reads)
// BENCH_TLS_PARTS: the sections to run (all by default), BENCH_TLS_WORKLOADS: of small,stream
const PARTS = (process.env.BENCH_TLS_PARTS || 'latency,syscalls,cold,burst,memory,crypto').split(',');
const part = (x) => PARTS.includes(x);
const WORKLOADS = [
  { id: 'small', title: 'non-stream, 1 KB request body', args: ['-b', '1024'], secs: 1, strace: ['-n', '400'] },
  { id: 'stream', title: 'stream, 1 KB request body, 16 tokens 1 ms apart', args: ['-s', '-b', '1024'], secs: 1.5, strace: ['-n', '100'] },
].filter((w) => (process.env.BENCH_TLS_WORKLOADS || 'small,stream').split(',').includes(w.id));
// system calls only: the events of one upstream read leave in one client write
const BURST_W = { id: 'burst', title: 'stream, 1 KB request body, 16 tokens at once', args: ['-s', '-b', '1024'], strace: ['-n', '100'] };
const loadStart = loadavg();

for (const f of [BIN.llmux, BIN.mock, BIN.bench])
  if (!existsSync(f)) throw new Error(`${f} is missing: run make build first`);
const certs = join(tmp, 'certs');
spawnSync('sh', [join(ROOT, 'test', 'gen-certs.sh'), certs], { stdio: 'ignore' });
await startSpinners();

const ports = {};
for (const k of ['tls', 'plain', 'llmux', 'base', 'nginx', 'llmuxCold', 'nginxCold', 'burst']) ports[k] = await freePort();
const tlsArgs = ['--tls-cert', join(certs, 'localhost.pem'), '--tls-key', join(certs, 'localhost.key')];
log(`HTTPS mockllm and a plain one (direct) on core ${LOAD_CORE} with the load client; proxies on core ${PROXY_CORE}`);
const mockTls = await start('mock-tls', BIN.mock, ['--listen', `127.0.0.1:${ports.tls}`, '--quiet', '--script', MOCK_SCRIPT, ...tlsArgs],
  { core: LOAD_CORE, port: ports.tls });
await start('mock-plain', BIN.mock, ['--listen', `127.0.0.1:${ports.plain}`, '--quiet', '--script', MOCK_SCRIPT],
  { core: LOAD_CORE, port: ports.plain });

// llmux: one openai provider on the HTTPS mock, verified against the test CA
async function startLlmux(name, port, poolIdle, bin = BIN.llmux) {
  const cfg = join(tmp, `${name}.json`);
  writeFileSync(cfg, JSON.stringify(llmuxConfig(port,
    { mock: { kind: 'openai', base_url: `https://localhost:${ports.tls}/v1`, ca_file: join(certs, 'ca.pem') } },
    { bench: { deployments: [{ provider: 'mock', model: 'bench' }] },
      held: { deployments: [{ provider: 'mock', model: HELD }] },
      burst: { deployments: [{ provider: 'mock', model: BURST }] } },
    { pool: { max_idle_per_origin: poolIdle }, timeouts_ms: { connect: 30000 } })));
  return start(name, bin, ['-c', cfg], { core: PROXY_CORE, port });
}
// nginx: the same, with upstream keep-alive (or none: every request a new TLS connection)
const NGINX_SSL = `proxy_ssl_session_reuse on;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate ${join(certs, 'ca.pem')};
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.2;`;
const startNginxTls = (name, port, keepalive) => startNginx(name, port, 'https://mock',
  `server 127.0.0.1:${ports.tls};${keepalive ? '\n        keepalive 256;' : ''}`, NGINX_SSL);

const llmux = await startLlmux('llmux', ports.llmux, 256);
const nginx = await startNginxTls('nginx', ports.nginx, true);
const url = (port) => `http://127.0.0.1:${port}${PATH}`;
const systems = [
  { name: 'direct', url: url(ports.plain), pid: null },
  { name: 'llmux', url: url(ports.llmux), pid: llmux.pid, model: 'held', burst: 'burst' },
  { name: 'nginx', url: url(ports.nginx), pid: nginx.workerPid, model: HELD, burst: BURST },
];
if (process.env.LLMUX_BASE) {
  const base = await startLlmux('llmux-base', ports.base, 256, process.env.LLMUX_BASE);
  systems.splice(2, 0, { name: 'llmux-base', url: url(ports.base), pid: base.pid, model: 'held', burst: 'burst' });
}
for (const s of systems) {
  for (const extra of [[], ['-s']]) {
    const j = await bench(s.url, ['-n', '3', '--timeout', '10', ...extra]);
    if (j.ok !== 3) throw new Error(`${s.name} failed the smoke test: ${JSON.stringify(j.errors)}`);
  }
}
async function tlsStats() {
  // the HTTPS mock's own counters, read over TLS with the test CA (TLS 1.2 without a session:
  // this read's own handshake counts as a full one, which callers subtract)
  const r = spawnSync('curl', ['-s', '--tlsv1.2', '--tls-max', '1.2', '--cacert', join(certs, 'ca.pem'),
    `https://localhost:${ports.tls}/mock/stats`], { encoding: 'utf8' });
  return JSON.parse(r.stdout);
}

// ---- 1. latency and CPU, one request at a time, rounds interleaved ----
const lat = part('latency') ? await latencyRounds(systems, WORKLOADS, ROUNDS) : null;
const med = (runs, pick) => median(runs.map(pick));
const S = {};
for (const w of lat ? WORKLOADS : []) {
  S[w.id] = {};
  for (const s of systems) {
    const runs = lat[w.id][s.name];
    S[w.id][s.name] = {
      p50: med(runs, (j) => j.latency_us.p50), p99: med(runs, (j) => j.latency_us.p99),
      t50: med(runs, (j) => j.transit_us?.p50 ?? NaN), t99: med(runs, (j) => j.transit_us?.p99 ?? NaN),
      cpu: med(runs, (j) => j.process?.cpu_us_per_req), cpus: runs.map((j) => j.process?.cpu_us_per_req),
      count: runs.reduce((a, j) => a + j.ok, 0), errors: runs.reduce((a, j) => a + errorsOf(j), 0),
    };
  }
}

// ---- 2. system calls of the proxy (strace -c), requests one at a time ----
async function strace(pid, target, args) {
  const out = join(tmp, `strace-${pid}-${Date.now()}.txt`);
  const p = spawn('strace', ['-c', '-f', '-p', String(pid), '-o', out], { stdio: 'ignore' });
  children.push(p);
  await sleep(400);
  const j = await bench(target, ['-c', '1', ...args]);
  const gone = new Promise((r) => p.once('exit', r));
  p.kill('SIGINT');
  await gone;
  const calls = {};
  for (const line of readFileSync(out, 'utf8').split('\n')) {
    const m = line.trim().split(/\s+/);
    if (m.length >= 5 && /^\d/.test(m[0]) && m[m.length - 1] !== 'total') calls[m[m.length - 1]] = Number(m[3]);
  }
  const n = j.ok;
  const per = (k) => (calls[k] || 0) / n;
  const total = Object.values(calls).reduce((a, b) => a + b, 0) / n;
  return { n, write: per('write'), writev: per('writev'), read: per('read') + per('readv') + per('recvfrom'),
    epoll: per('epoll_wait'), total };
}
const sys = {};
for (const w of part('syscalls') ? [...WORKLOADS, BURST_W] : []) {
  sys[w.id] = {};
  for (const s of systems.slice(1)) {
    log(`system calls: ${s.name}, ${w.title}`);
    sys[w.id][s.name] = await strace(s.pid, s.url, [...w.strace, ...w.args, ...(w === BURST_W ? ['-m', s.burst] : [])]);
  }
}

// ---- 3. new TLS connections per second: proxies that keep no upstream connection ----
const cold = {};
if (part('cold')) {
log('cold TLS connections');
const llmuxCold = await startLlmux('llmux-cold', ports.llmuxCold, 0);
const nginxCold = await startNginxTls('nginx-cold', ports.nginxCold, false);
for (const [name, port, pid] of [['llmux', ports.llmuxCold, llmuxCold.pid], ['nginx', ports.nginxCold, nginxCold.workerPid]]) {
  const runs = [];
  await bench(url(port), ['-c', '1', '-n', '1', '--timeout', '30']); // a session to resume
  let before, after;
  for (let r = 0; r < 3; r++) {
    before = await tlsStats();
    const j = await bench(url(port), ['-c', '8', '-w', '0.3', '-d', '2', '-p', String(pid)]);
    after = await tlsStats();
    runs.push({ rps: j.throughput_rps, cpu: j.process?.cpu_us_per_req, p50: j.latency_us.p50, errors: errorsOf(j),
      handshakes: after.tls_handshakes - before.tls_handshakes - 1, resumed: after.tls_resumed - before.tls_resumed });
  }
  cold[name] = { rps: median(runs.map((x) => x.rps)), cpu: median(runs.map((x) => x.cpu)),
    p50: median(runs.map((x) => x.p50)), errors: runs.reduce((a, x) => a + x.errors, 0),
    handshakes: runs.reduce((a, x) => a + x.handshakes, 0), resumed: runs.reduce((a, x) => a + x.resumed, 0) };
}
await stop(llmuxCold);
await stop(nginxCold.proc);
}

// ---- 3b. a cold burst: a proxy just started, N requests at once, no session yet ----
// Each round starts every proxy afresh (rounds interleaved) and sends it BURST_N requests at
// once: each is a new TLS connection. Full and resumed handshakes are counted by the mock (and
// by llmux itself: /v1/status upstream_tls_handshakes); the rate is connections / the burst's
// elapsed time (first request sent to last answer).
const BURST_N = part('burst') ? (process.env.BENCH_TLS_BURST || '32,128').split(',').map(Number) : [];
const burstSystems = [['llmux', BIN.llmux, true], ['nginx', null, false]];
if (process.env.LLMUX_BASE) burstSystems.push(['llmux-base', process.env.LLMUX_BASE, false]);
const coldBurst = {};
for (const n of BURST_N) {
  coldBurst[n] = Object.fromEntries(burstSystems.map(([name]) => [name, []]));
  for (let r = 0; r < ROUNDS; r++) {
    log(`cold burst of ${n}, round ${r + 1}/${ROUNDS}`);
    for (const [name, bin, status] of rotate(burstSystems, r)) {
      const proc = bin ? await startLlmux(`burst-${name}-${n}-${r}`, ports.burst, 256, bin)
        : await startNginxTls(`burst-nginx-${n}-${r}`, ports.burst, true);
      const pid = bin ? proc.pid : proc.workerPid;
      const before = await tlsStats();
      const j = await bench(url(ports.burst), ['-c', String(n), '-n', String(n), '--timeout', '30', '-p', String(pid)]);
      const after = await tlsStats();
      const own = status ? await fetch(`http://127.0.0.1:${ports.burst}/v1/status`).then((x) => x.json()) : null;
      const hs = after.tls_handshakes - before.tls_handshakes - 1;
      coldBurst[n][name].push({ ms: j.elapsed_s * 1000, rate: hs / j.elapsed_s, cpu: j.process?.cpu_us_per_req * j.ok / hs,
        p50: j.latency_us.p50, p99: j.latency_us.p99, handshakes: hs, resumed: after.tls_resumed - before.tls_resumed,
        own: own?.upstream_tls_handshakes, errors: errorsOf(j) });
      await stop(bin ? proc : proc.proc);
    }
  }
}

// ---- 4. memory per TLS stream held open ----
const mem = {};
for (const s of part('memory') ? systems.slice(1) : []) {
  log(`memory: ${STREAMS} TLS streams held open through ${s.name}`);
  const idle = procStatus(s.pid);
  const j = await bench(s.url, ['-c', String(STREAMS), '-n', String(STREAMS), '-r', '500', '-s', '-m', s.model,
    '-p', String(s.pid), '--sample-ms', '250', '--timeout', '60'], { timeout: 120 });
  const p = j.process;
  mem[s.name] = { idle: idle.rss_kb, peak: p.peak?.rss_kb, inflight: p.peak_inflight,
    per: (p.peak?.rss_kb - idle.rss_kb) / p.peak_inflight, ok: j.ok, errors: errorsOf(j) };
}

// ---- 5. crypto costs (the cipher suite order) ----
const crypto = part('crypto') && JSON.parse(spawnSync('taskset', ['-c', String(PROXY_CORE), join(BUILD, 'bench', 'llmux-crypto-bench')], { encoding: 'utf8' }).stdout);

// ---------------------------------------------------------------------------------------------
const date = new Date().toISOString().slice(0, 10);
const version = (cmd, args) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`.trim().split('\n')[0];
};
const md = [];
const D = (wid) => S[wid].direct;
const sum2 = (runs, k) => runs.reduce((a, x) => a + x.own[k], 0);
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b ? (a / b).toFixed(2) : '–');
md.push(`# llmux with a TLS upstream, ${date}`, '',
  `Generated by \`make bench\` (bench/tls.mjs, method in [bench/README.md](../README.md)) in ${Math.round((Date.now() - started) / 1000)} s.`, '',
  `- Machine: ${cpus()[0]?.model || 'unknown CPU'}, ${cpus().length} vCPUs, Linux ${release()}; shared with other work, so wall-clock numbers are noisy: ` +
  'the system call counts are exact, CPU per request is the proxy\'s own CPU time (schedstat), and rounds are interleaved.',
  `- llmux ${process.env.LLMUX_BIN ? `\`${process.env.LLMUX_BIN}\` (` : `(git ${version('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])}, Release, `}mbedTLS 2.28) and ` +
  `${version('nginx', ['-v']).replace('nginx version: ', '')} (OpenSSL; 1 worker, \`proxy_pass https://\`, upstream \`keepalive 256\`, ` +
  '`proxy_ssl_session_reuse on`, `proxy_ssl_verify on` against the test CA, TLS 1.2), both pinned to core ' +
  `${PROXY_CORE}, in front of the same HTTPS mockllm (\`--script '${MOCK_SCRIPT}'\`, test certificate: ECDSA P-256) on core ${LOAD_CORE} ` +
  'with the load client. "direct" is the client on a plain mockllm: the baseline of the added latency.' +
  (process.env.LLMUX_BASE ? ` "llmux-base" is \`${process.env.LLMUX_BASE}\`, measured in the same rounds.` : ''),
  `- Load average at the start ${loadStart}, at the end ${loadavg()}.`, '');

for (const w of lat ? WORKLOADS : []) {
  const d = D(w.id);
  md.push(`## ${w.title}`, '', `One request at a time, ${ROUNDS} interleaved rounds, medians of the round values (µs).`, '',
    `| system | p50 | p99 | added p50 | added p99 |${w.id === 'stream' ? ' event transit p50 | p99 |' : ''} CPU µs/${w.id === 'stream' ? 'stream' : 'request'} (median; per round) | CPU / nginx | ok | errors |`,
    `|---|--:|--:|--:|--:|${w.id === 'stream' ? '--:|--:|' : ''}--:|--:|--:|--:|`);
  for (const s of systems) {
    const x = S[w.id][s.name];
    const add = (k) => (s.name === 'direct' ? '' : signed(x[k] - d[k]));
    md.push(`| ${s.name} | ${f1(x.p50)} | ${f1(x.p99)} | ${add('p50')} | ${add('p99')} |${w.id === 'stream' ? ` ${f1(x.t50)} | ${f1(x.t99)} |` : ''} ` +
      `${s.pid ? `${f1(x.cpu)} (${x.cpus.map(f1).join(', ')})` : ''} | ${s.name.startsWith('llmux') ? ratio(x.cpu, S[w.id].nginx.cpu) : ''} | ${x.count.toLocaleString('en-US')} | ${x.errors} |`);
  }
  if (sys[w.id]) md.push('', `System calls of the proxy per ${w.id === 'stream' ? 'stream' : 'request'} (strace -c -f on the proxy for ${w.strace[1]} sequential ` +
    `${w.id === 'stream' ? 'streams' : 'requests'} on one client connection; the upstream connection is pooled):`, '',
    '| system | write | writev | read | epoll_wait | all |', '|---|--:|--:|--:|--:|--:|');
  for (const s of sys[w.id] ? systems.slice(1) : []) {
    const x = sys[w.id][s.name];
    md.push(`| ${s.name} | ${f1(x.write)} | ${f1(x.writev)} | ${f1(x.read)} | ${f1(x.epoll)} | ${f1(x.total)} |`);
  }
  md.push('');
}

if (sys.burst) md.push(`## ${BURST_W.title}: system calls`, '', 'The mock sends the 16 events as fast as it can, so the proxy reads several in one read: ' +
  `per stream, over ${BURST_W.strace[1]} streams one at a time (strace -c -f on the proxy).`, '',
  '| system | write | writev | read | epoll_wait | all |', '|---|--:|--:|--:|--:|--:|');
for (const s of sys.burst ? systems.slice(1) : []) {
  const x = sys.burst[s.name];
  md.push(`| ${s.name} | ${f1(x.write)} | ${f1(x.writev)} | ${f1(x.read)} | ${f1(x.epoll)} | ${f1(x.total)} |`);
}
md.push('');

if (part('cold')) md.push('## New TLS connections', '',
  'A proxy that keeps no upstream connection (llmux `pool.max_idle_per_origin: 0`, nginx without `keepalive`), so every request ' +
  'is a new TLS connection that may resume the session of an earlier one: 8 connections closed loop for 2 s, 3 rounds (medians; ' +
  'handshakes and resumptions counted by the HTTPS mockllm over the 3 rounds), after one request made a session.', '',
  '| system | new TLS connections/s | CPU µs per connection | p50 µs | resumed / handshakes | hit rate | errors |',
  '|---|--:|--:|--:|--:|--:|--:|');
for (const [n, c] of Object.entries(cold))
  md.push(`| ${n} | ${f0(c.rps)} | ${f1(c.cpu)} | ${f1(c.p50)} | ${c.resumed} / ${c.handshakes} | ${f1(100 * c.resumed / c.handshakes)} % | ${c.errors} |`);
md.push('');

if (BURST_N.length) md.push('## A cold burst', '',
  `Each round starts the proxy afresh (upstream keep-alive as above, no session yet) and sends it N requests at once: N new TLS ` +
  `connections. ${ROUNDS} interleaved rounds; medians of the round values. Rate = handshakes / the burst's time (first request ` +
  'sent to last answer); CPU = the proxy\'s CPU time over the burst / handshakes; handshakes counted by the HTTPS mockllm over all ' +
  'rounds (llmux\'s own count, /v1/status `upstream_tls_handshakes`, in the last column).', '',
  '| system | N | burst ms (median; per round) | new TLS connections/s | CPU µs per connection | p99 µs | resumed / handshakes | hit rate | llmux: full / resumed | errors |',
  '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
for (const [n, bySystem] of Object.entries(coldBurst))
  for (const [name, runs] of Object.entries(bySystem)) {
    const sum = (k) => runs.reduce((a, x) => a + x[k], 0);
    const own = runs[0].own ? `${sum2(runs, 'full')} / ${sum2(runs, 'resumed')}` : '';
    md.push(`| ${name} | ${n} | ${f1(median(runs.map((x) => x.ms)))} (${runs.map((x) => f1(x.ms)).join(', ')}) | ` +
      `${f0(median(runs.map((x) => x.rate)))} | ${f1(median(runs.map((x) => x.cpu)))} | ${f0(median(runs.map((x) => x.p99)))} | ` +
      `${sum('resumed')} / ${sum('handshakes')} | ${f1(100 * sum('resumed') / sum('handshakes'))} % | ${own} | ${sum('errors')} |`);
  }
md.push('');

if (part('memory')) md.push('## Memory per TLS stream', '',
  `${f0(STREAMS)} streams (20 tokens at 1 token/s, started at 500/s) held open through each proxy; per stream = (RSS at the sample ` +
  'with the most streams in flight − idle RSS) / streams in flight. nginx: the worker.', '',
  '| system | RSS idle (KiB) | RSS at the peak | in flight | KiB per stream | ok | errors |', '|---|--:|--:|--:|--:|--:|--:|');
for (const [n, m] of Object.entries(mem))
  md.push(`| ${n} | ${f0(m.idle)} | ${f0(m.peak)} | ${f0(m.inflight)} | ${f1(m.per)} | ${f0(m.ok)} | ${m.errors} |`);
md.push('');

if (crypto) md.push('## Crypto costs with mbedTLS 2.28 (llmux-crypto-bench, CPU time, core ' + `${PROXY_CORE})`, '',
  '| AEAD | ns/byte, 1,400-byte records | ns/byte, 16 KiB records |', '|---|--:|--:|');
for (const [k, v] of Object.entries(crypto ? crypto.seal_ns_per_byte : {})) md.push(`| ${k} | ${v['1400']} | ${v['16384']} |`);
if (crypto) md.push('', `ECDHE (key pair + shared secret): ${Object.entries(crypto.ecdhe_ms).map(([k, v]) => `${k} ${v} ms`).join(', ')}; ` +
  `ECDSA P-256 verify ${crypto.ecdsa_p256_verify_ms} ms. llmux offers ChaCha20-Poly1305 first, then AES-128-GCM and AES-256-GCM ` +
  '(ECDHE only), and P-256 first among the groups: the fastest of each here.', '');

const out = join(ROOT, 'bench', 'results');
mkdirSync(out, { recursive: true });
const name = process.env.BENCH_OUT || `${date}-tls.md`;
writeFileSync(join(out, name), md.join('\n'));
log(`wrote bench/results/${name}`);
console.log(md.join('\n'));
await stop(mockTls);
killAll();
process.exit(0);
