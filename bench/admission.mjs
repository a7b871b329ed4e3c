// bench/admission.mjs (`make bench-admission`): what a gateway key's limits cost per request.
// Three llmux instances side by side: no key; a key with rpm/tpm limits in shared memory; the
// same key with the counters in Redis (state.redis: one EVALSHA round trip per admission, one
// fire-and-forget settle). One request at a time (the latency a client sees) and 64
// connections flat out (CPU per request), rounds interleaved, medians. Writes
// bench/results/<date>-admission.md. Environment: BUILD, BENCH_ROUNDS (3), BENCH_SECONDS (4).
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import {
  BIN, LOAD_CORE, PATH, PROXY_CORE, ROOT, bench, children, f1, freePort, latencyRounds, llmuxConfig,
  loadavg, log, median, rotate, sleep, start, startSpinners, tmp,
} from './lib.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS || 3);
const SECONDS = Number(process.env.BENCH_SECONDS || 4);
const KEY = 'sk-bench-limited';
// Limits far above what the run sends: every request is admitted, so the figures are the
// cost of deciding, not of refusing.
const keys = [{ name: 'bench', key: KEY, rpm: 100000000, tpm: 4000000000 }];

await startSpinners();
const mockPort = await freePort();
await start('mockllm', BIN.mock, ['--listen', `127.0.0.1:${mockPort}`, '--quiet', '--script', 'tokens=16'],
  { core: LOAD_CORE, port: mockPort });
const redisPort = await freePort();
await start('redis', 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '',
  '--appendonly', 'no'], { core: LOAD_CORE, port: redisPort });

const providers = { mock: { kind: 'openai', base_url: `http://127.0.0.1:${mockPort}/v1` } };
const models = { bench: { deployments: [{ provider: 'mock', model: 'bench' }] } };
const variants = [
  { name: 'no key', extra: {} },
  { name: 'key limits, shared memory', extra: { keys } },
  { name: 'key limits, Redis', extra: { keys, state: { redis: `redis://127.0.0.1:${redisPort}`, prefix: `bench${process.pid}:` } } },
];
const systems = [];
for (const v of variants) {
  const port = await freePort();
  const cfg = join(tmp, `llmux-${port}.json`);
  writeFileSync(cfg, JSON.stringify(llmuxConfig(port, providers, models, v.extra)));
  const p = await start(`llmux-${port}`, BIN.llmux, ['-c', cfg], { core: PROXY_CORE, port });
  systems.push({ name: v.name, url: `http://127.0.0.1:${port}${PATH}`, pid: p.pid, port,
    hdr: v.extra.keys ? ['-H', `Authorization: Bearer ${KEY}`] : [] });
}
await sleep(300);

const workloads = [{ id: 'seq', title: 'one request at a time, 1 KB', secs: SECONDS, args: [] }];
const lat = await latencyRounds(systems, workloads, ROUNDS);
// Redis's round trips as llmux measured them over the one-at-a-time rounds (its /v1/status)
const st = await (await fetch(`http://127.0.0.1:${systems[2].port}/v1/status`,
  { headers: { authorization: `Bearer ${KEY}` } })).json();

// CPU per request under load: the llmux process's CPU time over a flat-out run / requests
const cpuRuns = Object.fromEntries(systems.map((s) => [s.name, []]));
for (let r = 0; r < ROUNDS; r++) {
  log(`throughput round ${r + 1}/${ROUNDS}`);
  for (const s of rotate(systems, r)) {
    const j = await bench(s.url, ['-c', '64', '-w', '0.5', '-d', String(SECONDS), '-p', String(s.pid), ...s.hdr]);
    cpuRuns[s.name].push({ rps: j.throughput_rps, cpu_us: j.process?.cpu_us_per_req, errors: j.requests - j.ok });
  }
}


const m = (name, k) => median(lat.seq[name].map((j) => j.latency_us[k]));
const base50 = m('no key', 'p50');
const base99 = m('no key', 'p99');
const rows = systems.map((s) => {
  const c = cpuRuns[s.name];
  return `| ${s.name} | ${f1(m(s.name, 'p50'))} | ${f1(m(s.name, 'p99'))} | ${f1(m(s.name, 'p50') - base50)} | ${f1(m(s.name, 'p99') - base99)} | ${Math.round(median(c.map((x) => x.rps))).toLocaleString('en-US')} | ${f1(median(c.map((x) => x.cpu_us)))} | ${c.reduce((a, x) => a + x.errors, 0)} |`;
}).join('\n');
const date = new Date().toISOString().slice(0, 10);
const md = `# Admission: what a key's limits cost (${date})

Machine: ${cpus().length} x ${cpus()[0].model}, load ${loadavg()}. llmux on core ${PROXY_CORE}; mockllm,
redis-server (7, loopback TCP) and the load client on core ${LOAD_CORE}. Non-stream chat, 1 KB
body. Latency: one request at a time for ${SECONDS} s, ${ROUNDS} interleaved rounds, medians of
each round's p50/p99 (microseconds, as the client measures). CPU: 64 connections flat out,
llmux's user + system time per request. Every request is admitted (limits far above the load).

| variant | p50 us | p99 us | p50 added vs no key | p99 added | req/s (64 conns) | CPU us/request | errors |
|---|---|---|---|---|---|---|---|
${rows}

Redis round trips measured inside llmux over the one-at-a-time rounds (EVALSHA admission and
settle, command sent to reply read):
p50 ${st.redis.rtt_us.p50} us, p90 ${st.redis.rtt_us.p90} us, p99 ${st.redis.rtt_us.p99} us
over ${st.redis.rtt_us.count} commands.
`;
writeFileSync(join(ROOT, 'bench', 'results', `${date}-admission.md`), md);
console.log(md);
for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
process.exit(0);
