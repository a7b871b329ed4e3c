// Slow and hostile clients: each test runs its own llmux with small limits, attacks it over raw
// sockets on 127.0.0.1, and checks what a user would notice: llmux stays up, bounded in memory,
// descriptors and CPU, closes what it must, and keeps serving a normal client.
//
// Traffic is bounded in count (at most a few thousand connections, never past this process's
// descriptor limit) and time (every wait has a deadline).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startLlmux, provider, post, chat, waitFor, assertErrorShape, mockText,
  openRaw, parseResponses, rssBytes, ioBytes, fdCount, cpuSeconds, nofileLimit, tcpState,
} from './lib.mjs';

let mock;
const GATEWAY_KEY = 'llmux-hostile-key';
const MB = 1024 * 1024;

before(async () => {
  mock = await startMock();
});

after(async () => {
  await mock?.stop();
});

// A config with small limits; `limits` entries override these.
function config(limits = {}, extra = {}) {
  return {
    timeouts_ms: { connect: 2000, first_byte: 10000, idle: 10000, total: 120000 },
    limits: { header_timeout_ms: 60000, body_timeout_ms: 60000, keepalive_timeout_ms: 60000, ...limits },
    providers: { mock: provider(mock.baseUrl) },
    models: { demo: { deployments: [{ provider: 'mock', model: 'm?tokens=3' }] } },
    ...extra,
  };
}

// Runs fn with a fresh llmux; llmux is stopped (and checked for a clean exit) afterwards.
async function withLlmux(cfg, fn, opts = {}) {
  const l = await startLlmux(cfg, opts);
  try {
    await fn(l);
  } finally {
    await l.stop();
  }
}

// A normal client: one chat request, answered in full.
async function assertServes(l, headers = {}) {
  const res = await post(l.base, '/v1/chat/completions', chat('demo'), headers);
  const text = await res.text();
  assert.equal(res.status, 200, text);
  assert.equal(JSON.parse(text).choices[0].message.content, mockText(3));
}

// The sockets of `conns` that llmux has not closed yet.
const openOnes = (conns) => conns.filter((c) => !c.closed);

function destroyAll(conns) {
  for (const c of conns) c.sock.destroy();
}

test('slowloris: trickled headers are cut at header_timeout_ms while a normal client is served', async (t) => {
  await withLlmux(config({ header_timeout_ms: 1000 }), async (l) => {
    const N = 200;
    const head = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slowloris: ';
    const conns = [];
    for (let i = 0; i < N; i++) {
      const c = openRaw(l.port);
      c.sent = 0;
      conns.push(c);
    }
    // One header byte per connection every 200 ms, never the end of the head.
    const tick = setInterval(() => {
      for (const c of conns) {
        if (c.closed || !c.connected) continue;
        c.write(c.sent < head.length ? head[c.sent] : 'a');
        c.sent++;
      }
    }, 200);
    const t0 = Date.now();
    try {
      await waitFor(() => conns.every((c) => c.connected || c.closed) && conns.some((c) => c.sent > 0),
        { timeout: 10000, what: 'the slow connections to start' });
      // A normal request while they trickle.
      await assertServes(l);
      await waitFor(() => openOnes(conns).length === 0,
        { timeout: 20000, every: 100, what: `llmux to close the trickling connections (${N})` })
        .catch((e) => { throw new Error(`${e.message}; still open: ${openOnes(conns).length} of ${N}`); });
      t.diagnostic(`all ${N} closed after ${Date.now() - t0} ms`);
      for (const c of conns) {
        const st = parseResponses(c.text())[0]?.status ?? 0;
        assert.ok(st === 0 || st === 408, `a trickling client got ${st}`);
      }
    } finally {
      clearInterval(tick);
      destroyAll(conns);
    }
    await assertServes(l);
  });
});

test('a client that never reads its stream is closed after send_timeout_ms, the upstream cancelled', async (t) => {
  await withLlmux(config({ send_timeout_ms: 1000 }), async (l) => {
    const rss0 = rssBytes(l.pid);
    const { aborted: aborted0, streams_completed: completed0 } = await mock.stats();
    // The model id carries the script: a long fast stream from the mock.
    const body = JSON.stringify(chat('mock/m?tokens=200000', { stream: true }));
    const c = openRaw(l.port);
    c.sock.pause(); // never read: the kernel buffers fill, then llmux's queue stops moving
    c.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\n\r\n${body}`);
    let peak = rss0;
    try {
      await waitFor(() => c.connected, { timeout: 5000, what: 'connect' });
      const local = c.sock.localPort;
      // llmux's end of the connection leaves ESTABLISHED (reset: gone; close: FIN_WAIT1 behind
      // the data the client never read).
      await waitFor(() => {
        peak = Math.max(peak, rssBytes(l.pid));
        return tcpState(l.port, local) !== 'ESTABLISHED';
      }, { timeout: 20000, every: 50, what: 'llmux to close the connection of a client that never reads' });
      t.diagnostic(`llmux side: ${tcpState(l.port, local)}, rss ${rss0} -> peak ${peak}`);
      const s = await mock.waitStats((x) => x.aborted > aborted0, 'the upstream stream to be cancelled', 10000);
      assert.equal(s.streams_completed, completed0, 'the whole stream was generated');
      assert.ok(peak - rss0 < 48 * MB, `llmux grew by ${((peak - rss0) / MB).toFixed(1)} MB`);
      // Reading now: what was buffered, then the end, and never the whole stream.
      c.sock.resume();
      assert.ok(await c.waitClosed(10000), 'the client never saw the connection end');
      assert.ok(!/data: \[DONE\]/.test(c.text().slice(-200)), 'the stream that was cut looks complete');
    } finally {
      c.sock.destroy();
    }
    await assertServes(l);
  });
});

test('keep-alive idle: a stray CRLF between requests does not keep a connection open', async () => {
  await withLlmux(config({ keepalive_timeout_ms: 500 }), async (l) => {
    const req = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
    for (const [name, stray] of [['no stray bytes', ''], ['one CRLF', '\r\n'], ['CRLF every 100 ms', 'repeat'],
      ['CRLF in the same write as the request', 'same']]) {
      const c = openRaw(l.port);
      c.write(stray === 'same' ? `${req}\r\n` : req);
      await waitFor(() => parseResponses(c.text())[0]?.body !== undefined && !parseResponses(c.text())[0]?.incomplete,
        { timeout: 5000, what: `${name}: the first response` });
      assert.equal(parseResponses(c.text())[0].status, 200);
      let tick;
      if (stray === 'repeat') tick = setInterval(() => c.write('\r\n'), 100);
      else if (stray && stray !== 'same') c.write(stray);
      const closed = await c.waitClosed(5000);
      clearInterval(tick);
      assert.ok(closed, `${name}: the idle connection was still open 5 s after a 500 ms keep-alive timeout`);
      assert.equal(parseResponses(c.text()).length, 1, `${name}: ${c.text()}`);
    }
  });
});

test('thousands of idle keep-alive connections: refused beyond max_connections, descriptors come back', async (t) => {
  const CAP = 1000;
  // Bounded by this process's descriptor limit (raise nothing); llmux inherits the same one.
  const N = Math.min(2000, nofileLimit() - 200);
  if (N < CAP + 200) {
    t.skip(`the descriptor limit (${nofileLimit()}) leaves too few connections past the cap`);
    return;
  }
  await withLlmux(config({ max_connections: CAP }), async (l) => {
    const fd0 = fdCount(l.pid);
    const conns = [];
    // Each connection makes one request and stays open, idle. Batches keep the connect rate sane.
    for (let i = 0; i < N; i += 100) {
      const batch = [];
      for (let j = i; j < Math.min(N, i + 100); j++) {
        const c = openRaw(l.port);
        c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        batch.push(c);
      }
      conns.push(...batch);
      // Every connection gets its answer (200, or 503) or is closed: none may hang unanswered.
      await waitFor(() => batch.every((c) => c.closed || (parseResponses(c.text())[0]?.body !== undefined &&
        !parseResponses(c.text())[0].incomplete)), { timeout: 10000, what: `connections ${i}..${i + 99} answered or closed` })
        .catch((e) => {
          const hung = batch.filter((c) => !c.closed && !c.text().includes('\r\n\r\n')).length;
          throw new Error(`${e.message}: ${hung} connections neither answered nor closed`);
        });
    }
    const served = conns.filter((c) => !c.closed && parseResponses(c.text())[0]?.status === 200);
    const refused = conns.filter((c) => !served.includes(c));
    const statuses = {};
    for (const c of refused) {
      const st = parseResponses(c.text())[0]?.status ?? 'closed';
      statuses[st] = (statuses[st] ?? 0) + 1;
    }
    t.diagnostic(`${N} connections: ${served.length} served and idle, refused: ${JSON.stringify(statuses)}, ` +
      `llmux fds ${fd0} -> ${fdCount(l.pid)}`);
    for (const st of Object.keys(statuses)) assert.ok(st === '503' || st === 'closed', `a refused connection got ${st}`);
    for (const c of refused.filter((x) => parseResponses(x.text())[0]?.status === 503)) {
      assertErrorShape(JSON.parse(parseResponses(c.text())[0].body), 503);
      assert.ok(c.closed || await c.waitClosed(5000), 'a 503 for max_connections left the connection open');
    }
    assert.ok(served.length <= CAP, `${served.length} connections served with max_connections ${CAP}`);
    assert.ok(served.length >= CAP - 50, `only ${served.length} connections served below the cap`);
    assert.ok(fdCount(l.pid) <= fd0 + CAP + 20, `llmux holds ${fdCount(l.pid)} descriptors`);

    destroyAll(conns);
    await waitFor(() => fdCount(l.pid) <= fd0 + 2, { timeout: 10000, what: `llmux's descriptors back near ${fd0}` })
      .catch((e) => { throw new Error(`${e.message}: ${fdCount(l.pid)}`); });
    await assertServes(l);
  });
});

test('descriptor exhaustion: llmux with 64 descriptors survives 100 connections without spinning', async (t) => {
  await withLlmux(config(), async (l) => {
    await assertServes(l);
    const fd0 = fdCount(l.pid);
    const conns = [];
    for (let i = 0; i < 100; i++) {
      const c = openRaw(l.port);
      c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      conns.push(c);
    }
    try {
      // The kernel completes every handshake (the listen backlog); llmux answers what it can.
      await waitFor(() => conns.every((c) => c.connected || c.closed),
        { timeout: 10000, what: '100 connections to connect' });
      await waitFor(() => conns.filter((c) => c.text().includes('\r\n\r\n')).length >= 20,
        { timeout: 10000, what: 'llmux to answer some of them' });
      // A one-second window with the connections held: llmux must not spin on accept errors.
      const cpu0 = cpuSeconds(l.pid);
      const w0 = Date.now();
      await waitFor(() => Date.now() - w0 >= 1000, { timeout: 2000, every: 100, what: 'the measuring window' });
      const cpu = cpuSeconds(l.pid) - cpu0;
      const answered = conns.filter((c) => c.text().includes('\r\n\r\n')).length;
      const closed = conns.filter((c) => c.closed).length;
      t.diagnostic(`fds ${fd0} -> ${fdCount(l.pid)}, answered ${answered}, closed ${closed}, cpu ${cpu.toFixed(2)} s in 1 s`);
      assert.equal(l.proc.exitCode, null, 'llmux exited');
      assert.ok(cpu < 0.5, `llmux used ${cpu.toFixed(2)} s of CPU in 1 s while out of descriptors`);
    } finally {
      destroyAll(conns);
    }
    await waitFor(() => fdCount(l.pid) <= fd0 + 1, { timeout: 10000, what: `llmux's descriptors back near ${fd0}` })
      .catch((e) => { throw new Error(`${e.message}: ${fdCount(l.pid)}`); });
    await assertServes(l);
  }, { nofile: 64 });
});

test('pipelined flood: 20,000 requests from a client that does not read keep llmux bounded', async (t) => {
  await withLlmux(config(), async (l) => {
    const N = 20000;
    const one = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
    const rss0 = rssBytes(l.pid);
    const c = openRaw(l.port);
    c.sock.pause();
    c.write(one.repeat(N - 1) + 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    let peak = rss0;
    try {
      // Wait until llmux stops moving bytes (it is held back by the client), sampling its RSS.
      let last = -1;
      let since = Date.now();
      await waitFor(() => {
        peak = Math.max(peak, rssBytes(l.pid));
        const io = ioBytes(l.pid);
        const moved = io.rchar + io.wchar;
        if (moved !== last) {
          last = moved;
          since = Date.now();
          return false;
        }
        return Date.now() - since >= 500;
      }, { timeout: 60000, every: 50, what: 'llmux to stop reading and writing' });
      t.diagnostic(`rss ${(rss0 / MB).toFixed(1)} MB -> peak ${(peak / MB).toFixed(1)} MB before the client reads`);
      assert.ok(peak - rss0 < 32 * MB, `llmux grew by ${((peak - rss0) / MB).toFixed(1)} MB for one pipelining client`);

      // Now the client reads: every request is answered, in order, with a well-formed response.
      c.sock.resume();
      assert.ok(await c.waitClosed(60000), 'the connection did not end after the last (Connection: close) request');
    } finally {
      c.sock.destroy();
    }
    const rs = parseResponses(c.text());
    assert.ok(!rs.some((r) => r.garbage || r.incomplete), 'a malformed response');
    assert.equal(rs.length, N, `${rs.length} responses to ${N} requests`);
    assert.ok(rs.every((r) => r.status === 200 && r.body === '{"status":"ok"}'), 'a response other than 200 ok');
    await assertServes(l);
  });
});

test('unfinished bodies without a gateway key get 401 from the headers, at once', async () => {
  await withLlmux(config({}, { keys: [GATEWAY_KEY] }), async (l) => {
    const before = (await mock.stats()).requests;
    const conns = [];
    for (let i = 0; i < 20; i++) {
      const c = openRaw(l.port);
      c.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        'Content-Length: 1000000\r\n\r\n{"model":"demo","messages":[');
      conns.push(c);
    }
    const tick = setInterval(() => { for (const c of conns) if (!c.closed) c.write('{}'); }, 100);
    try {
      // body_timeout_ms is 60 s and the body is never finished: only an answer from the headers
      // arrives within this bound.
      await waitFor(() => conns.every((c) => c.closed), { timeout: 5000, every: 50, what: '20 connections closed' })
        .catch((e) => { throw new Error(`${e.message}: ${openOnes(conns).length} still open, ` +
          `${conns.filter((c) => c.text().includes('\r\n\r\n')).length} answered`); });
    } finally {
      clearInterval(tick);
      destroyAll(conns);
    }
    for (const c of conns) {
      const r = parseResponses(c.text())[0];
      assert.equal(r?.status, 401, `expected 401 before the body: ${JSON.stringify(c.text().slice(0, 300))} (${c.error})`);
      assertErrorShape(JSON.parse(r.body), 401);
    }
    assert.equal((await mock.stats()).requests, before);
    await assertServes(l, { authorization: `Bearer ${GATEWAY_KEY}` });
  });
});
