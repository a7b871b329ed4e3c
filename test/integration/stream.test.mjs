// Streams after commit: honest error endings on a stall or a reset, cancellation when the client
// goes away, keep-alive reuse of upstream connections, and bounded memory with a slow client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startMock, startLlmux, provider, post, chat, readSse, chunks, chunksText, mockText, rid,
  waitFor, rssBytes, ioBytes,
} from './lib.mjs';

const IDLE_MS = 600;
let mock, kaMock, llmux, llmuxPatient;

before(async () => {
  mock = await startMock();
  kaMock = await startMock();
  // ASan keeps freed memory in a quarantine (256 MB by default), which would make RSS grow with
  // every byte relayed even when live memory is bounded: keep it small for the memory test.
  const asan = [process.env.ASAN_OPTIONS, 'quarantine_size_mb=1', 'thread_local_quarantine_size_kb=64']
    .filter(Boolean).join(':');
  llmux = await startLlmux({
    timeouts_ms: { connect: 2000, first_byte: 3000, idle: IDLE_MS, total: 60000 },
    pool: { max_idle_per_origin: 4, idle_timeout_ms: 30000 },
    providers: { mock: provider(mock.baseUrl), ka: provider(kaMock.baseUrl) },
    models: {
      'short-total': { deployments: [{ provider: 'mock', model: 'm?tokens=100&tps=10' }], timeouts_ms: { total: 700 } },
    },
  }, { env: { ASAN_OPTIONS: asan } });
  // The same with a long idle timeout, for the memory measurement alone.
  llmuxPatient = await startLlmux({
    timeouts_ms: { connect: 2000, first_byte: 3000, idle: 30000, total: 60000 },
    providers: { mock: provider(mock.baseUrl) },
    models: {},
  }, { env: { ASAN_OPTIONS: asan } });
});

after(async () => {
  await llmux?.stop();
  await llmuxPatient?.stop();
  await mock?.stop();
  await kaMock?.stop();
});

// Reads a stream that must end with llmux's error chunk after three content chunks.
async function expectHonestEnd(model) {
  const id = rid('st');
  const abortedBefore = (await mock.stats()).aborted;
  const res = await post(llmux.base, '/v1/chat/completions', chat(model, { stream: true }), { 'x-request-id': id });
  assert.equal(res.status, 200);
  // The body must complete (a proper chunked end), not hang and not break off.
  const datas = await readSse(res);
  assert.ok(!datas.includes('[DONE]'), 'a broken stream must not end with [DONE]');
  const parsed = chunks(datas);
  const content = parsed.filter((c) => c.choices?.[0]?.delta?.content);
  assert.equal(content.length, 3, `content chunks: ${datas.join('\n')}`);
  assert.equal(chunksText(datas), mockText(3));
  const last = parsed.at(-1);
  assert.equal(last.choices[0].finish_reason, 'error', JSON.stringify(last));
  assert.ok(last.error, 'the final chunk has an error object');
  assert.equal(typeof last.error.message, 'string');
  assert.ok(last.error.message.length > 0);
  assert.ok('code' in last.error);
  assert.equal(parsed.filter((c) => c.error).length, 1, 'exactly one error chunk');
  const line = await llmux.logFor(id);
  assert.equal(line.status, 200);
  assert.equal(line.outcome, 'truncated');
  assert.ok(line.reason, 'the log says why the stream was cut');
  return { line, last, abortedBefore };
}

test('a stall after commit ends the stream with an error chunk and no [DONE]', async () => {
  const { line, abortedBefore } = await expectHonestEnd('mock/m?tokens=10&stall_after=3');
  assert.match(line.reason, /idle|stall|timeout/i);
  // The stalled upstream connection is closed, not kept waiting.
  await mock.waitStats((s) => s.aborted > abortedBefore, 'the stalled upstream to be closed');
});

test('a reset after commit ends the stream with an error chunk and no [DONE]', async () => {
  await expectHonestEnd('mock/m?tokens=10&reset_after=3');
});

test('the total deadline after commit ends the stream honestly too', async () => {
  const id = rid('st');
  const res = await post(llmux.base, '/v1/chat/completions', chat('short-total', { stream: true }), { 'x-request-id': id });
  assert.equal(res.status, 200);
  const datas = await readSse(res);
  assert.ok(!datas.includes('[DONE]'));
  const parsed = chunks(datas);
  assert.ok(chunksText(datas).startsWith('w0 '), 'some content arrived before the deadline');
  assert.ok(chunksText(datas).length < mockText(100).length);
  const last = parsed.at(-1);
  assert.equal(last.choices[0].finish_reason, 'error');
  assert.match(last.error.message, /deadline/);
  assert.equal((await llmux.logFor(id)).outcome, 'truncated');
});

test('llmux serves normally after broken streams', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('mock/m?tokens=5', { stream: true }));
  const datas = await readSse(res);
  assert.equal(datas.at(-1), '[DONE]');
  assert.equal(chunksText(datas), mockText(5));
});

test('the client disconnecting mid-stream cancels the upstream', async () => {
  const id = rid('st');
  const before = await mock.stats();
  const ac = new AbortController();
  // 20 tokens per second: the stream would last 10 s.
  const res = await fetch(llmux.base + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-id': id },
    body: JSON.stringify(chat('mock/m?tokens=200&tps=20', { stream: true })),
    signal: ac.signal,
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const first = await reader.read();
  assert.ok(!first.done);
  ac.abort();
  await reader.read().catch(() => {});
  const after = await mock.waitStats((s) => s.aborted > before.aborted, 'mockllm to see the upstream closed');
  assert.equal(after.streams_completed, before.streams_completed, 'the upstream stream ran to completion');
  const line = await llmux.logFor(id);
  assert.equal(line.outcome, 'client_closed');
});

test('the client disconnecting before the first token cancels the upstream', async () => {
  const id = rid('st');
  const before = await mock.stats();
  const ac = new AbortController();
  const pending = fetch(llmux.base + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-id': id },
    body: JSON.stringify(chat('mock/m?tokens=5&ttft=2500', { stream: true })),
    signal: ac.signal,
  }).catch(() => null);
  // Wait until the request is at the mock, then go away.
  await mock.waitStats((s) => s.requests > before.requests, 'the request to reach mockllm');
  ac.abort();
  await pending;
  await mock.waitStats((s) => s.aborted > before.aborted, 'mockllm to see the upstream closed');
  const line = await llmux.logFor(id);
  assert.equal(line.outcome, 'client_closed');
});

test('20 sequential requests reuse one upstream connection', async () => {
  // kaMock serves only this test. Our own stats calls each use a fresh connection: measure how
  // much one stats call adds to the counter and take it off.
  const s0 = await kaMock.stats();
  const s1 = await kaMock.stats();
  const perStatsCall = s1.connections - s0.connections;
  assert.ok(perStatsCall === 0 || perStatsCall === 1, `stats calls add ${perStatsCall}`);
  for (let i = 0; i < 20; i++) {
    const stream = i % 2 === 1;
    const res = await post(llmux.base, '/v1/chat/completions', chat('ka/m?tokens=3', { stream }));
    assert.equal(res.status, 200);
    if (stream) assert.equal(chunksText(await readSse(res)), mockText(3));
    else assert.equal((await res.json()).choices[0].message.content, mockText(3));
  }
  const s2 = await kaMock.stats();
  assert.equal(s2.requests - s1.requests, 20);
  const used = s2.connections - s1.connections - perStatsCall;
  assert.equal(used, 1, `20 sequential requests used ${used} upstream connections`);
});

// Opens a raw client connection that asks for a big fast stream, reads the first 64 KiB, then
// stops reading until the mock is held back (its writes toward llmux stop growing for `quietMs`).
// Returns the measurements and a function that reads the rest.
async function slowReader(l, tokens, chunkBytes, quietMs) {
  const body = JSON.stringify(chat(`mock/m?tokens=${tokens}&chunk_bytes=${chunkBytes}`, { stream: true }));
  const rss0 = rssBytes(l.pid);
  const io0 = ioBytes(l.pid);
  const mock0 = ioBytes(mock.pid);

  const sock = net.connect(l.port, '127.0.0.1');
  sock.setNoDelay(true);
  const st = { received: 0, tail: '', closed: false };
  sock.on('data', (d) => {
    st.received += d.length;
    st.tail = (st.tail + d.toString('latin1')).slice(-512);
  });
  sock.on('close', () => { st.closed = true; });
  sock.on('error', () => {});
  sock.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `Connection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  await waitFor(() => st.received >= 64 * 1024, { timeout: 10000, what: 'the first 64 KiB of the stream' });
  sock.pause();
  const receivedAtPause = st.received;

  let lastW = -1;
  let stableSince = Date.now();
  let peakRss = rss0;
  await waitFor(() => {
    peakRss = Math.max(peakRss, rssBytes(l.pid));
    const w = ioBytes(mock.pid).wchar;
    if (w !== lastW) {
      lastW = w;
      stableSince = Date.now();
      return false;
    }
    return Date.now() - stableSince >= quietMs;
  }, { timeout: 30000, every: 50, what: 'the mock to stop writing' });
  const produced = ioBytes(mock.pid).wchar - mock0.wchar;
  const io1 = ioBytes(l.pid);
  const m = {
    produced,
    receivedAtPause,
    inLlmux: (io1.rchar - io0.rchar) - (io1.wchar - io0.wchar),
    growth: peakRss - rss0,
  };
  m.report = `produced ${produced}, client read ${receivedAtPause}, llmux read ${io1.rchar - io0.rchar} ` +
    `wrote ${io1.wchar - io0.wchar}, rss growth ${m.growth}`;
  m.pausedReceived = st.received;
  m.readRest = async () => {
    sock.resume();
    await waitFor(() => st.closed, { timeout: 60000, every: 50, what: 'the rest of the stream' });
    return st;
  };
  return m;
}

test('a slow client reading a fast big stream keeps llmux memory bounded', async (t) => {
  const TOKENS = 40000;
  const CHUNK = 1000;
  const total = TOKENS * CHUNK; // at least this many bytes of SSE from the mock
  const m = await slowReader(llmuxPatient, TOKENS, CHUNK, 700);
  t.diagnostic(m.report);
  // The mock is held back: it could not push the stream into llmux while the client was not reading.
  assert.ok(m.produced < total * 0.6, `the mock was not held back: ${m.report}`);
  // What llmux has read from the mock but not yet written to the client stays small.
  assert.ok(m.inLlmux < 4 * 1024 * 1024, `llmux holds ${m.inLlmux} bytes: ${m.report}`);
  // And its memory did not grow with the stream.
  assert.ok(m.growth < Math.max(m.produced * 0.25, 8 * 1024 * 1024), `llmux RSS grew by ${m.growth}: ${m.report}`);
  assert.equal(m.pausedReceived, m.receivedAtPause);

  // Reading again resumes the relay, and the stream completes.
  const st = await m.readRest();
  assert.ok(st.received >= total, `only ${st.received} bytes of at least ${total}; ${m.report}; ends with ${JSON.stringify(st.tail)}`);
  assert.match(st.tail, /data: \[DONE\]\n\n\r\n0\r\n\r\n$/);
});

test('a client that stops reading is not mistaken for a stalled upstream', async () => {
  // idle is 300 ms here: the upstream is not stalled, llmux stopped reading it because the
  // client is slow (backpressure). Pausing the client for longer than the idle timeout must not
  // cut the stream with "stream stalled".
  const TOKENS = 20000;
  const m = await slowReader(llmux, TOKENS, 1000, 3 * IDLE_MS);
  const st = await m.readRest();
  assert.ok(!/finish_reason":"error"/.test(st.tail), `stream cut while the client was paused: ${JSON.stringify(st.tail)}`);
  assert.match(st.tail, /data: \[DONE\]\n\n\r\n0\r\n\r\n$/);
  assert.ok(st.received >= TOKENS * 1000);
});
