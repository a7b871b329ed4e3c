// Faults found by a hostile review (issue 9), each with the behaviour a user relies on: no forged
// response header, a finished stream stays finished, no silent replay of a request a provider
// may be generating, ids and retry hints on llmux's own errors, CORS for browser apps, no
// provider key in any text llmux relays or logs, 429 when every deployment rate-limits, 1xx
// interim answers, and provider keys checked at start-up.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import {
  startMock, startLlmux, runLlmux, writeConfig, provider, post, chat, expectError, readSse,
  chunks, chunksText, mockText, waitFor, headersText, openRaw, tcpState, parseResponses,
} from './lib.mjs';

const LEAKY = 'sk-test-leakykey-0123456789abcdefXYZ';
let mock, llmux, cors;

before(async () => {
  mock = await startMock();
  const m = (script) => ({ deployments: [{ provider: 'mock', model: `m?${script}` }], max_attempts: 1 });
  const base = {
    timeouts_ms: { connect: 2000, first_byte: 20000, idle: 60000, total: 120000 },
    providers: {
      mock: provider(mock.baseUrl),
      leaky: provider(mock.baseUrl, { api_key_env: 'LLMUX_IT_LEAKY_KEY' }),
      off: provider(mock.baseUrl, { api_key_env: 'LLMUX_IT_UNSET_KEY' }),
    },
    models: {
      ok: m('tokens=3'),
      done_reset: m('tokens=3&after_done=reset'),
      done_stall: m('tokens=3&after_done=stall'),
      done_reset_cont: {
        deployments: [{ provider: 'mock', model: 'm?tokens=3&after_done=reset' },
          { provider: 'mock', model: 'm?tokens=3' }],
        on_stream_failure: 'continue',
      },
      slow_reset: m('delay=300&reset_after=0'),
      leak401: { deployments: [{ provider: 'leaky', model: 'm?status=401&echo_key=1' }], max_attempts: 1 },
      leak400: { deployments: [{ provider: 'leaky', model: 'm?status=400&echo_key=1' }], max_attempts: 1 },
      limited: {
        deployments: [{ provider: 'mock', model: 'm?status=429' }, { provider: 'mock', model: 'n?status=429' }],
      },
      disabled: { deployments: [{ provider: 'off', model: 'm' }] },
    },
  };
  const env = { LLMUX_IT_LEAKY_KEY: LEAKY };
  llmux = await startLlmux(base, { env });
  cors = await startLlmux({ ...base, cors: { origins: ['https://app.example'] } }, { env });
});

after(async () => {
  await llmux?.stop();
  await cors?.stop();
  await mock?.stop();
});

test('a model id with CR/LF is refused with 400 and forges no header', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('mock/x\r\nSet-Cookie: a=1'));
  const err = await expectError(res, 400);
  assert.equal(err.param, 'model');
  assert.equal(res.headers.get('set-cookie'), null);
  assert.equal(res.headers.get('x-llmux-model'), null);
});

test('a stream whose provider resets after [DONE] is a complete answer, not an error', async () => {
  const id = `done-reset-${process.pid}`;
  const res = await post(llmux.base, '/v1/chat/completions', chat('done_reset', { stream: true }),
    { 'x-request-id': id });
  assert.equal(res.status, 200);
  const datas = await readSse(res);
  assert.equal(datas.at(-1), '[DONE]', 'the stream ends with [DONE]');
  assert.equal(datas.filter((d) => d === '[DONE]').length, 1);
  assert.ok(!chunks(datas).some((c) => c.error), 'no error chunk after [DONE]');
  assert.equal(chunksText(datas), mockText(3));
  const line = await llmux.logFor(id);
  assert.equal(line.outcome, 'ok');
});

test('after [DONE] and a reset, continue mode does not start a second generation', async () => {
  const before = (await mock.stats()).requests;
  const id = `done-reset-cont-${process.pid}`;
  const res = await post(llmux.base, '/v1/chat/completions', chat('done_reset_cont', { stream: true }),
    { 'x-request-id': id });
  const datas = await readSse(res);
  assert.equal(chunksText(datas), mockText(3));
  assert.ok(!chunks(datas).some((c) => c.llmux?.continued), 'nothing continued');
  const line = await llmux.logFor(id);
  assert.equal(line.outcome, 'ok');
  assert.equal((await mock.stats()).requests - before, 1, 'one generation billed');
});

test('a provider that stalls after [DONE] does not hold the client until the idle timeout', async () => {
  // idle is 60 s in this config: the response must end long before that
  const t0 = Date.now();
  const res = await post(llmux.base, '/v1/chat/completions', chat('done_stall', { stream: true }));
  const datas = await readSse(res);
  assert.equal(datas.at(-1), '[DONE]');
  assert.equal(chunksText(datas), mockText(3));
  assert.ok(Date.now() - t0 < 30000, 'the answer ended at its end marker');
});

test('a pooled connection that dies after the provider had the request is not silently resent', async () => {
  // warm the pool: the next request to the mock goes out on a reused connection
  await (await post(llmux.base, '/v1/chat/completions', chat('ok'))).json();
  const before = (await mock.stats()).requests;
  const res = await post(llmux.base, '/v1/chat/completions', chat('slow_reset'));
  await expectError(res, 502);
  assert.equal((await mock.stats()).requests - before, 1, 'the provider saw the request once');
});

test('llmux\'s own errors carry x-request-id, x-should-retry and OpenAI\'s param', async () => {
  let res = await post(llmux.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }] });
  let err = await expectError(res, 400);
  assert.equal(err.param, 'model');
  assert.match(res.headers.get('x-request-id') ?? '', /^[0-9a-f]{32}$/);
  assert.equal(res.headers.get('x-should-retry'), 'false');

  res = await post(llmux.base, '/v1/chat/completions', chat('ok', { stream: 'yes' }), { 'x-request-id': 'mine-1' });
  err = await expectError(res, 400);
  assert.equal(err.param, 'stream');
  assert.equal(res.headers.get('x-request-id'), 'mine-1');

  res = await post(llmux.base, '/v1/chat/completions', chat('no-such-model'));
  await expectError(res, 404, 'model_not_found');
  assert.ok(res.headers.get('x-request-id'));

  res = await fetch(`${llmux.base}/v1/nope`);
  await expectError(res, 404, 'unknown_url');
  assert.ok(res.headers.get('x-request-id'));

  res = await post(llmux.base, '/v1/chat/completions', chat('disabled'));
  await expectError(res, 503, 'no_enabled_deployment');
  assert.equal(res.headers.get('x-should-retry'), 'false', 'the SDK must not retry 3 times for nothing');
  assert.ok(res.headers.get('x-request-id'));
});

test('HTTP-level refusals (before routing) carry x-request-id too', async () => {
  const res = await fetch(`${llmux.base}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(5 << 20),
  }).catch((e) => e);
  if (res instanceof Error) return; // the client may see the close before the answer
  await expectError(res, 413);
  assert.ok(res.headers.get('x-request-id'));
});

test('CORS: preflight and allowed origins', async () => {
  const origin = 'https://app.example';
  let res = await fetch(`${cors.base}/v1/chat/completions`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
  });
  assert.equal(res.status, 204);
  assert.equal(res.headers.get('access-control-allow-origin'), origin);
  assert.match(res.headers.get('access-control-allow-methods'), /POST/);
  assert.match(res.headers.get('access-control-allow-headers'), /authorization/);

  res = await post(cors.base, '/v1/chat/completions', chat('ok'), { origin });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('access-control-allow-origin'), origin);
  assert.match(res.headers.get('access-control-expose-headers'), /x-request-id/);
  await res.json();

  res = await post(cors.base, '/v1/chat/completions', chat('ok', { stream: true }), { origin });
  assert.equal(res.headers.get('access-control-allow-origin'), origin, 'streams too');
  await res.text();

  res = await post(cors.base, '/v1/chat/completions', chat('ok'), { origin: 'https://evil.example' });
  assert.equal(res.headers.get('access-control-allow-origin'), null);
  await res.json();
  res = await fetch(`${cors.base}/v1/chat/completions`, {
    method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
  });
  assert.equal(res.status, 403);
  assert.equal(res.headers.get('access-control-allow-origin'), null);

  // without "cors" in the config, no CORS at all (preflight: 405)
  res = await fetch(`${llmux.base}/v1/chat/completions`, {
    method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' },
  });
  assert.equal(res.status, 405);
  assert.equal(res.headers.get('access-control-allow-origin'), null);
});

test('a provider that quotes our key back: the key reaches no client, status page or log', async () => {
  const seen = [];
  for (const model of ['leak401', 'leak400']) {
    const res = await post(llmux.base, '/v1/chat/completions', chat(model), { 'x-request-id': `${model}-${process.pid}` });
    seen.push(headersText(res), await res.text());
    await llmux.logFor(`${model}-${process.pid}`);
  }
  assert.ok((await mock.last()).headers.authorization.includes(LEAKY), 'the mock did get the key');
  const status = await fetch(`${llmux.base}/v1/status`);
  seen.push(await status.text());
  seen.push(llmux.stderr());
  const all = seen.join('\n');
  assert.ok(!all.includes(LEAKY), 'the key leaked');
  assert.ok(!all.includes(LEAKY.slice(8, 24)), 'a piece of the key leaked');
  assert.match(all, /Incorrect API key provided/, 'the message itself is kept');
});

test('every deployment answering 429 without Retry-After is a 429, not a 502', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('limited'));
  const err = await expectError(res, 429);
  assert.equal(err.type, 'rate_limit_error');
});

// A hand-written upstream: a 103 Early Hints with many headers, then the real answer.
function earlyHintsUpstream() {
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      server.lastAuth = req.headers.authorization ?? '';
      const links = {};
      for (let i = 0; i < 60; i++) links[`x-hint-${i}`] = `v${i}`;
      res.writeEarlyHints({ link: '</a.css>; rel=preload', ...links });
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = { id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'x',
        choices: [{ index: 0, delta: { content: 'hello' }, finish_reason: null }] };
      const fin = { ...chunk, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] };
      res.end(`data: ${JSON.stringify(chunk)}\n\ndata: ${JSON.stringify(fin)}\n\ndata: [DONE]\n\n`);
    });
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

test('1xx interim answers do not count against the final answer\'s headers; long keys are sent', async () => {
  const up = await earlyHintsUpstream();
  const longKey = 'k'.repeat(600);
  const l = await startLlmux({
    providers: { hints: provider(`http://127.0.0.1:${up.address().port}/v1`, { api_key_env: 'LLMUX_IT_LONG_KEY' }) },
    models: { h: { deployments: [{ provider: 'hints', model: 'x' }] } },
  }, { env: { LLMUX_IT_LONG_KEY: longKey } });
  try {
    const res = await post(l.base, '/v1/chat/completions', chat('h', { stream: true }));
    assert.equal(res.status, 200);
    assert.equal(chunksText(await readSse(res)), 'hello');
    assert.equal(up.lastAuth, `Bearer ${longKey}`, 'a 600-byte key is sent whole');
  } finally {
    await l.stop();
    up.close();
  }
});

// An upstream that answers a request's head at once (400, keep-alive) without reading its body,
// then stops reading that connection; any later connection gets a normal answer.
function earlyAnswerUpstream() {
  const seen = { connections: 0, requests: 0 };
  const server = net.createServer((sock) => {
    const n = ++seen.connections;
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      seen.requests++;
      if (n === 1) { // answer from the head, then read nothing more
        const body = '{"error":{"message":"too big for me","type":"invalid_request_error","code":null}}';
        sock.write(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
        sock.pause();
        return;
      }
      const len = Number(/content-length: (\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
      if (buf.length < end + 4 + len) return;
      buf = buf.slice(end + 4 + len);
      const body = JSON.stringify({ id: 'x', object: 'chat.completion', created: 1, model: 'x',
        choices: [{ index: 0, message: { role: 'assistant', content: 'fresh' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } });
      sock.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
    });
    sock.on('error', () => {});
  });
  server.seen = seen;
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

test('a connection whose request was not all sent never goes back to the pool', async () => {
  const up = await earlyAnswerUpstream();
  const l = await startLlmux({
    timeouts_ms: { first_byte: 3000 },
    limits: { max_body_bytes: 32 << 20 },
    providers: { early: provider(`http://127.0.0.1:${up.address().port}/v1`) },
    models: { e: { deployments: [{ provider: 'early', model: 'x' }], max_attempts: 1 } },
  });
  try {
    // 16 MB: more than the socket buffers take, so part of it is still queued in llmux when
    // the 400 has arrived whole
    let res = await post(l.base, '/v1/chat/completions', chat('e', { pad: 'x'.repeat(16 << 20) }));
    await expectError(res, 400);
    res = await post(l.base, '/v1/chat/completions', chat('e'));
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.choices[0].message.content, 'fresh');
    assert.equal(up.seen.connections, 2, 'the second request went out on a new connection');
  } finally {
    await l.stop();
    up.close();
  }
});

test('a provider key with a line break is refused at start-up, without quoting it', () => {
  const path = writeConfig({
    listen: '127.0.0.1:0',
    providers: { p: provider('http://127.0.0.1:9/v1', { api_key_env: 'LLMUX_IT_BAD_KEY' }) },
    models: { m: { deployments: [{ provider: 'p', model: 'x' }] } },
  });
  const r = runLlmux(['-t', '-c', path], { env: { LLMUX_IT_BAD_KEY: 'sk-abc\r\nx-evil: 1' } });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /LLMUX_IT_BAD_KEY.*control character/);
  assert.ok(!r.stderr.includes('sk-abc'), 'the key is not quoted');
});

test('a large answer with Connection: close to a client that never reads is cut by send_timeout_ms', async () => {
  const l = await startLlmux({
    limits: { send_timeout_ms: 500 },
    providers: { mock: provider(mock.baseUrl) },
    models: { big: { deployments: [{ provider: 'mock', model: 'm?tokens=600000' }] } },
  });
  try {
    const body = JSON.stringify(chat('big'));
    const c = openRaw(l.port);
    c.sock.pause(); // never read
    c.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await waitFor(() => c.connected, { what: 'connect' });
    const local = c.sock.localPort;
    await waitFor(() => tcpState(l.port, local) !== 'ESTABLISHED',
      { timeout: 20000, every: 50, what: 'llmux to close a connection whose output does not move' });
    c.sock.destroy();
    const res = await post(l.base, '/v1/chat/completions', chat('mock/m?tokens=2'));
    assert.equal((await res.json()).choices[0].message.content, mockText(2));
  } finally {
    await l.stop();
  }
});

test('request bodies still arriving are capped over all connections (503), then served again', async () => {
  const l = await startLlmux({
    limits: { max_body_buffer_bytes: 65536, max_body_bytes: 1 << 20 },
    providers: { mock: provider(mock.baseUrl) },
    models: { ok: { deployments: [{ provider: 'mock', model: 'm?tokens=2' }] } },
  });
  try {
    const head = (n) => `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${n}\r\n\r\n`;
    // two unfinished bodies of 60 KB and 10 KB: together over the 64 KiB cap, each under it;
    // whichever is read second is refused, the other is still waiting for its body
    const a = openRaw(l.port);
    const b = openRaw(l.port);
    a.write(head(200000) + ' '.repeat(60000));
    b.write(head(200000) + ' '.repeat(10000));
    const first = () => [a, b].map((c) => parseResponses(c.text())[0]).filter((r) => r?.status);
    await waitFor(() => first().length > 0, { timeout: 5000, what: 'the 503' });
    assert.equal(first().length, 1, 'one connection refused, the other still reading its body');
    const r = first()[0];
    assert.equal(r.status, 503);
    assert.equal(JSON.parse(r.body).error.code, 'server_busy');
    a.sock.destroy();
    b.sock.destroy();
    // with the unfinished bodies gone, bodies are accepted again
    await waitFor(async () => {
      const res = await post(l.base, '/v1/chat/completions', chat('ok', { pad: ' '.repeat(50000) }));
      return res.status === 200 && (await res.json()).choices[0].message.content === mockText(2);
    }, { timeout: 5000, what: 'a normal request after the cap' });
  } finally {
    await l.stop();
  }
});

test('still serves normally afterwards', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('ok'));
  const body = await res.json();
  assert.equal(body.choices[0].message.content, mockText(3));
  await waitFor(async () => (await fetch(`${llmux.base}/healthz`)).status === 200, { what: 'healthz' });
});
