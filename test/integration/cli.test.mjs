// The command line a container relies on: `llmux --healthcheck [URL]` (exit 0 on a 200 within
// 2 s, else 1: an image's HEALTHCHECK needs no shell or curl), the config found through
// $LLMUX_CONFIG when -c is absent, and LLMUX_LISTEN overriding the config's "listen".
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startMock, startLlmux, runLlmux, writeConfig, provider, closedPort } from './lib.mjs';

let mock, llmux, port, cfgPath, cfg;

before(async () => {
  mock = await startMock();
  port = await closedPort();
  cfg = {
    providers: { mock: provider(mock.baseUrl) },
    models: { demo: { deployments: [{ provider: 'mock', model: 'm' }] } },
  };
  // the config says port 0; LLMUX_LISTEN puts llmux on a known port instead
  llmux = await startLlmux(cfg, { env: { LLMUX_LISTEN: `127.0.0.1:${port}` } });
  cfgPath = writeConfig({ ...cfg, listen: `127.0.0.1:${port}` });
});

after(async () => {
  await llmux?.stop();
  await mock?.stop();
});

test('LLMUX_LISTEN overrides the config\'s listen address', () => {
  assert.equal(llmux.port, port);
});

test('--healthcheck URL: 0 when /healthz answers 200', () => {
  const r = runLlmux(['--healthcheck', `http://127.0.0.1:${port}/healthz`]);
  assert.equal(r.status, 0, r.stderr);
});

test('--healthcheck with no URL checks /healthz of the config in use (-c, or $LLMUX_CONFIG)', () => {
  let r = runLlmux(['--healthcheck', '-c', cfgPath]);
  assert.equal(r.status, 0, r.stderr);
  r = runLlmux(['--healthcheck'], { env: { LLMUX_CONFIG: cfgPath } });
  assert.equal(r.status, 0, r.stderr);
  // a wildcard listen address is checked on loopback
  const wild = writeConfig({ ...cfg, listen: `0.0.0.0:${port}` });
  r = runLlmux(['--healthcheck', '-c', wild]);
  assert.equal(r.status, 0, r.stderr);
});

test('--healthcheck: 1 when nothing listens, or the answer is not 200', async () => {
  let r = runLlmux(['--healthcheck', `http://127.0.0.1:${await closedPort()}/healthz`]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /did not answer 200/);
  const busy = http.createServer((req, res) => { res.writeHead(503); res.end('draining'); });
  await new Promise((resolve) => busy.listen(0, '127.0.0.1', resolve));
  try {
    r = await new Promise((resolve) => {
      // runLlmux blocks the event loop: the server must answer from another process's view,
      // so run the check asynchronously
      import('node:child_process').then(({ execFile }) => execFile(process.env.LLMUX_BIN,
        ['--healthcheck', `http://127.0.0.1:${busy.address().port}/healthz`],
        (err, stdout, stderr) => resolve({ status: err ? err.code : 0, stderr })));
    });
    assert.equal(r.status, 1, r.stderr);
  } finally {
    busy.close();
  }
});

test('without -c and without $LLMUX_CONFIG, llmux reads /etc/llmux/llmux.json', () => {
  const r = runLlmux(['-t'], { env: { LLMUX_CONFIG: '' } });
  assert.match(r.stderr + r.stdout, /\/etc\/llmux\/llmux\.json/);
});
