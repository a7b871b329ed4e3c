// The soak behind `make soak` (bench/soak.mjs) in miniature: 8 s at 300 requests/s against this
// build (sanitizers on), asserting the same properties as the full run (every answer checked
// against mockllm's deterministic text, honest ends, cancelled upstreams, one access-log line per
// request, flat RSS and descriptors, descriptors back to idle, clean exit, no sanitizer report),
// so the soak script cannot rot between the runs that take minutes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('../../bench/soak.mjs', import.meta.url));

test('soak smoke: 8 s of the mixed load, every answer right, nothing grows', { timeout: 120000 }, async () => {
  for (const v of ['LLMUX_BIN', 'MOCKLLM_BIN'])
    assert.ok(process.env[v], `${v} is not set: run through ctest (ctest -R it_soak)`);
  // A small ASan quarantine, as in stream.test.mjs: the default one (256 MB) fills over minutes
  // and would read as growth.
  const asan = [process.env.ASAN_OPTIONS, 'quarantine_size_mb=1', 'thread_local_quarantine_size_kb=64']
    .filter(Boolean).join(':');
  const child = spawn(process.execPath, [script], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env, ASAN_OPTIONS: asan, SOAK_SECONDS: '8', SOAK_RATE: '300', SOAK_PIN: '0',
      SOAK_REPORT: '-', SOAK_QUIET: '1',
      // 3 s windows: on a busy machine the number in flight (and with it RSS and descriptors)
      // swings between them without any leak, so flatness is reported, not judged; the leak
      // checks here are "descriptors back to idle" and LeakSanitizer at exit. The full
      // `make soak` judges flatness over minutes.
      SOAK_FLATNESS: '0',
    },
  });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const code = await new Promise((r) => child.on('exit', (c, sig) => r(c ?? sig)));
  assert.equal(code, 0, `the soak failed:\n${out.slice(-6000)}`);
});
