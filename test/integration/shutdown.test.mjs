// SIGTERM drains: the listener closes, a stream in flight completes with [DONE], then llmux
// exits 0. SIGINT stops at once: the in-flight stream is cut and the upstream is cancelled.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startLlmux, provider, post, chat, sseData, chunksText, mockText, waitFor } from './lib.mjs';

async function firstBytesThen(res) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let text = dec.decode((await reader.read()).value);
  const rest = (async () => {
    for (;;) {
      let r;
      try { r = await reader.read(); } catch { return { text, error: true }; }
      if (r.done) return { text, error: false };
      text += dec.decode(r.value);
    }
  })();
  return rest;
}

test('SIGTERM lets a stream in flight finish, refuses new connections, exits 0', async () => {
  const mock = await startMock();
  const llmux = await startLlmux({ providers: { m: provider(mock.baseUrl) } });
  try {
    const res = await post(llmux.base, '/v1/chat/completions', chat('m/x?tokens=8&tps=10', { stream: true }));
    assert.equal(res.status, 200);
    const done = firstBytesThen(res);
    llmux.proc.kill('SIGTERM');
    await waitFor(async () => {
      try { await fetch(llmux.base + '/healthz'); return false; } catch { return true; }
    }, { what: 'the listener to close' });
    const { text, error } = await done;
    assert.equal(error, false);
    const d = sseData(text);
    assert.equal(chunksText(d), mockText(8));
    assert.equal(d.at(-1), '[DONE]');
    await new Promise((r) => (llmux.proc.exitCode !== null ? r() : llmux.proc.once('exit', r)));
    assert.equal(llmux.proc.exitCode, 0);
  } finally {
    await llmux.stop();
    await mock.stop();
  }
});

test('SIGINT stops at once and cancels the upstream', async () => {
  const mock = await startMock();
  const llmux = await startLlmux({ providers: { m: provider(mock.baseUrl) } });
  try {
    const res = await post(llmux.base, '/v1/chat/completions', chat('m/x?tokens=100&tps=10', { stream: true }));
    const done = firstBytesThen(res);
    llmux.proc.kill('SIGINT');
    const { text } = await done;
    assert.ok(!sseData(text).includes('[DONE]'));
    await waitFor(async () => (await mock.stats()).aborted === 1, { what: 'the upstream to be cancelled' });
    await new Promise((r) => (llmux.proc.exitCode !== null ? r() : llmux.proc.once('exit', r)));
    assert.equal(llmux.proc.exitCode, 0);
  } finally {
    await llmux.stop();
    await mock.stop();
  }
});
