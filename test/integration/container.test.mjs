// The container image and the compose demo, run for real with podman (deps/install.sh test
// installs it, with test/containers.conf for these machines): `make image` builds the image under
// a tag of this run, then llmux and mockllm run from it on a podman network of their own, the
// image's HEALTHCHECK is run by hand (no systemd here to run it on a timer), `podman stop` drains
// a stream, and conf/compose.yaml is brought up, used and brought down. Every container, network
// and image made here is removed at the end, also on failure. Only loopback ports are called.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  LLMUX_BIN, CERTS, post, chat, sseData, chunksText, mockText, waitFor, writeConfig, closedPort,
} from './lib.mjs';

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ID = `llmux-it-${process.pid}`;
const IMAGE = `localhost/${ID}:test`;
const NET = ID;
const MOCK = `${ID}-mock`;
const GW = `${ID}-llmux`;
const TLS_MOCK = `${ID}-tls-mock`;
const PROJECT = `${ID}-compose`;
const REDIS_PROJECT = `${ID}-compose-redis`;
const REDIS_IMAGE = `localhost/${ID}-redis:test`;
const LABEL = `llmux-it=${process.pid}`;
const MB = 1000 * 1000;
// the inner make must not see the outer make's jobserver (ctest runs under make test)
const ENV = { ...process.env, CONTAINERS_CONF: process.env.CONTAINERS_CONF || join(SRC, 'test', 'containers.conf') };
for (const k of ['MAKEFLAGS', 'MFLAGS', 'MAKELEVEL']) delete ENV[k];
const skip = spawnSync('podman', ['--version']).status === 0 ? false
  : 'podman is not installed (make test-deps installs it)';

// Runs a command to its end: { code, stdout, stderr }; throws on a non-zero exit unless told.
function run(cmd, args, { check = true, env = {}, timeout = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { ...ENV, ...env }, timeout, maxBuffer: 16 * MB }, (err, stdout, stderr) => {
      const r = { code: err ? (err.code ?? 1) : 0, stdout, stderr };
      if (check && r.code !== 0) reject(new Error(`${cmd} ${args.join(' ')}: exit ${r.code}\n${stderr.slice(-3000)}`));
      else resolve(r);
    });
  });
}
const podman = (args, opts) => run('podman', args, opts);
const inspect = async (what, name, format) =>
  JSON.parse((await podman([what, 'inspect', '--format', `{{json ${format}}}`, name])).stdout);
const compose = (args, opts, project = PROJECT, file = 'compose.yaml') =>
  run('podman-compose', ['-p', project, '-f', join(SRC, 'conf', file), ...args], opts);

// No registry is reachable here: the compose file's Redis (the official image for users) is
// replaced by one built FROM scratch out of Debian's redis-server and the libraries it loads.
async function buildRedisImage() {
  const dir = mkdtempSync(join(tmpdir(), 'llmux-redis-image-'));
  const files = ['/usr/bin/redis-server', ...(await run('ldd', ['/usr/bin/redis-server'])).stdout
    .split('\n').map((l) => (l.match(/(\/\S+) \(0x/) || [])[1]).filter(Boolean)];
  for (const f of files) {
    mkdirSync(join(dir, 'root', dirname(f)), { recursive: true });
    copyFileSync(realpathSync(f), join(dir, 'root', f));
  }
  chmodSync(join(dir, 'root', 'usr/bin/redis-server'), 0o755);
  writeFileSync(join(dir, 'Containerfile'), 'FROM scratch\nCOPY root/ /\nENV PATH=/usr/bin\nUSER 65534\n' +
    'CMD ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]\n');
  await podman(['build', '-q', '-t', REDIS_IMAGE, dir], { timeout: 120000 });
  rmSync(dir, { recursive: true, force: true });
}

let base; // http://127.0.0.1:<port published for the llmux container>

before(async () => {
  if (skip) return;
  await run('make', ['--no-print-directory', '-C', SRC, 'image', `IMAGE_TAGS=${IMAGE}`,
    `IMAGE_BUILD=${join(dirname(LLMUX_BIN), 'image')}`], { timeout: 150000 });
  await podman(['network', 'create', '--label', LABEL, NET]);
  // the mock runs with the image's HEALTHCHECK left on: it checks a gateway that is not there
  await podman(['run', '-d', '--name', MOCK, '--label', LABEL, '--net', NET, '--network-alias', 'mock',
    IMAGE, 'mockllm', '--listen', '0.0.0.0:9101', '--quiet']);
  const cfg = writeConfig({
    listen: '0.0.0.0:8080',
    providers: {
      m: { kind: 'openai', base_url: 'http://mock:9101/v1' },
      // a TLS mock in llmux's own network namespace, verified against the test CA
      t: { kind: 'openai', base_url: 'https://localhost:9443/v1', ca_file: '/certs/ca.pem' },
    },
    models: { demo: { deployments: [{ provider: 'm', model: 'demo-upstream' }] } },
  });
  await podman(['run', '-d', '--name', GW, '--label', LABEL, '--net', NET, '-p', '127.0.0.1::8080',
    '-v', `${cfg}:/etc/llmux/llmux.json:ro`, '-v', `${CERTS}:/certs:ro`, IMAGE]);
  const port = (await podman(['port', GW, '8080'])).stdout.trim().split(':').pop();
  base = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => null))?.status === 200,
    { timeout: 20000, what: 'llmux in its container to answer /healthz' });
});

after(async () => {
  if (skip) return;
  for (const label of [LABEL, `io.podman.compose.project=${PROJECT}`, `io.podman.compose.project=${REDIS_PROJECT}`]) {
    const ids = (await podman(['ps', '-aq', '--filter', `label=${label}`], { check: false })).stdout.split(/\s+/).filter(Boolean);
    if (ids.length) await podman(['rm', '-f', '-t', '0', ...ids], { check: false });
  }
  // podman-compose 1.0.3's down leaves the project network behind
  await podman(['network', 'rm', '-f', NET, `${PROJECT}_default`, `${REDIS_PROJECT}_default`], { check: false });
  await podman(['rmi', '-f', IMAGE, REDIS_IMAGE], { check: false });
});

test('the image: under 8 MB, a numeric non-root user, port 8080, HEALTHCHECK llmux --healthcheck, a valid default config', { skip }, async (t) => {
  const size = await inspect('image', IMAGE, '.Size');
  t.diagnostic(`image size: ${(size / MB).toFixed(2)} MB`);
  assert.ok(size < 8 * MB, `image is ${size} bytes`);
  const config = await inspect('image', IMAGE, '.Config');
  assert.match(config.User, /^[1-9][0-9]*(:[0-9]+)?$/);
  assert.ok('8080/tcp' in config.ExposedPorts);
  // kept because the image is built --format docker (OCI images have no HEALTHCHECK)
  assert.deepEqual((await inspect('image', IMAGE, '.HealthCheck')).Test, ['CMD', '/usr/local/bin/llmux', '--healthcheck']);
  // FROM scratch: the two programs, the CA bundle and the config, nothing else (no shell)
  const root = (await podman(['image', 'mount', IMAGE])).stdout.trim();
  try {
    const files = (await run('find', [root, '-type', 'f'])).stdout.split('\n').filter(Boolean)
      .map((f) => f.slice(root.length)).sort();
    assert.deepEqual(files, ['/etc/llmux/llmux.json', '/etc/ssl/certs/ca-certificates.crt',
      '/usr/local/bin/llmux', '/usr/local/bin/mockllm']);
  } finally {
    await podman(['image', 'unmount', IMAGE], { check: false });
  }
  // /etc/llmux/llmux.json, read without -c, is valid
  const r = await podman(['run', '--rm', '--no-healthcheck', IMAGE, 'llmux', '-t']);
  assert.match(r.stdout, /\/etc\/llmux\/llmux\.json: configuration is valid/);
});

test('/healthz answers through the container', { skip }, async () => {
  const res = await fetch(`${base}/healthz`);
  assert.equal(res.status, 200);
});

test('a chat request goes through the llmux container to mockllm in another container of the same image', { skip }, async () => {
  let res = await post(base, '/v1/chat/completions', chat('demo'));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-llmux-provider'), 'm');
  const body = await res.json();
  assert.equal(body.model, 'demo-upstream');
  assert.equal(body.choices[0].message.content, mockText(8));
  res = await post(base, '/v1/chat/completions', chat('m/x?tokens=5', { stream: true }));
  const d = sseData(await res.text());
  assert.equal(chunksText(d), mockText(5));
  assert.equal(d.at(-1), '[DONE]');
});

test('an https upstream: the static mbedTLS verifies the mock\'s certificate against ca_file', { skip }, async () => {
  // root in this container only: the test key is readable by its owner alone
  await podman(['run', '-d', '--name', TLS_MOCK, '--label', LABEL, '--net', `container:${GW}`, '--user', '0',
    '--no-healthcheck', '-v', `${CERTS}:/certs:ro`, IMAGE, 'mockllm', '--listen', '127.0.0.1:9443', '--quiet',
    '--tls-cert', '/certs/localhost.pem', '--tls-key', '/certs/localhost.key']);
  await waitFor(async () => (await podman(['logs', TLS_MOCK])).stdout.includes('mockllm listening on'),
    { timeout: 10000, what: 'the TLS mock to listen' });
  const res = await post(base, '/v1/chat/completions', chat('t/x?tokens=3'));
  assert.equal(res.status, 200);
  assert.equal((await res.json()).choices[0].message.content, mockText(3));
});

test('podman healthcheck run: the gateway is healthy; a container with no gateway on 8080 is not', { skip }, async () => {
  await podman(['healthcheck', 'run', GW]);
  assert.equal(await inspect('container', GW, '.State.Health.Status'), 'healthy');
  // one failed run (it takes 3 in a row to mark the container unhealthy)
  const r = await podman(['healthcheck', 'run', MOCK], { check: false });
  assert.equal(r.code, 1);
  assert.equal(r.stdout.trim(), 'unhealthy');
});

test('podman stop (SIGTERM) lets a stream in flight finish with all its events; llmux exits 0', { skip }, async () => {
  const res = await post(base, '/v1/chat/completions', chat('m/x?tokens=20&tps=10', { stream: true }));
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let text = dec.decode((await reader.read()).value);
  const stopped = podman(['stop', '-t', '20', GW]);
  for (let r = await reader.read(); !r.done; r = await reader.read()) text += dec.decode(r.value);
  await stopped;
  const d = sseData(text);
  assert.equal(chunksText(d), mockText(20));
  assert.equal(d.at(-1), '[DONE]');
  assert.equal(await inspect('container', GW, '.State.ExitCode'), 0);
});

test('conf/compose.yaml: up, a request that fails over from the flaky mock, down with nothing left', { skip }, async () => {
  const port = await closedPort();
  const env = { LLMUX_IMAGE: IMAGE, LLMUX_PORT: String(port) };
  await compose(['up', '-d'], { env });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/healthz`).catch(() => null))?.status === 200,
    { timeout: 20000, what: 'the compose llmux to answer /healthz' });
  // the image's HEALTHCHECK holds in compose too (what depends_on: service_healthy waits for)
  await podman(['healthcheck', 'run', `${PROJECT}_llmux_1`]);
  // mock-flaky fails every other request: of two requests, one is served by it and one fails
  // over to mock-healthy; the client sees two clean answers
  const seen = [];
  for (let i = 0; i < 2; i++) {
    const res = await post(url, '/v1/chat/completions', chat('demo'));
    assert.equal(res.status, 200);
    assert.ok((await res.json()).choices[0].message.content.startsWith('w0 '));
    seen.push(`${res.headers.get('x-llmux-provider')}/${res.headers.get('x-llmux-attempts')}`);
  }
  assert.deepEqual(seen.sort(), ['sim-flaky/1', 'sim-healthy/2']);
  await compose(['down'], { env });
  const left = await podman(['ps', '-aq', '--filter', `label=io.podman.compose.project=${PROJECT}`]);
  assert.equal(left.stdout.trim(), '');
});

test('conf/compose-redis.yaml: two llmux instances share one key limit and one deployment limit through Redis', { skip }, async () => {
  await buildRedisImage();
  const [pa, pb] = [await closedPort(), await closedPort()];
  const env = { LLMUX_IMAGE: IMAGE, REDIS_IMAGE, LLMUX_PORT: String(pa), LLMUX_PORT_B: String(pb) };
  await compose(['up', '-d'], { env }, REDIS_PROJECT, 'compose-redis.yaml');
  const urls = [`http://127.0.0.1:${pa}`, `http://127.0.0.1:${pb}`];
  const auth = { authorization: 'Bearer sk-demo' };
  // both instances up, and connected to Redis (their limits show in the headers)
  for (const url of urls)
    await waitFor(async () => {
      const s = await fetch(`${url}/v1/status`, { headers: auth }).then((r) => r.json()).catch(() => null);
      return s?.redis?.up === true;
    }, { timeout: 30000, what: `${url} connected to Redis` });
  const seen = [];
  for (let i = 0; i < 11; i++) {
    const res = await post(urls[i % 2], '/v1/chat/completions', chat('demo'), auth);
    await res.text();
    seen.push(res.status === 200 ? res.headers.get('x-llmux-provider') : res.status);
  }
  // the deployment's 5 per minute, then the secondary; the key's 10 per minute, then 429
  assert.deepEqual(seen, [...Array(5).fill('sim-primary'), ...Array(5).fill('sim-secondary'), 429]);
  await compose(['down'], { env }, REDIS_PROJECT, 'compose-redis.yaml');
  const left = await podman(['ps', '-aq', '--filter', `label=io.podman.compose.project=${REDIS_PROJECT}`]);
  assert.equal(left.stdout.trim(), '');
});
