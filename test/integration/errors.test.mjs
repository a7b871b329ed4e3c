// Every error a client can get from llmux itself, in OpenAI's shape, and llmux serving normally
// afterwards.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startLlmux, provider, post, chat, expectError, rawRequest, assertErrorShape, mockText,
} from './lib.mjs';

let mock, llmux, keyed;
const GATEWAY_KEY = 'llmux-gw-key-1';

before(async () => {
  mock = await startMock();
  const base = {
    timeouts_ms: { connect: 2000, first_byte: 5000, idle: 5000, total: 20000 },
    limits: { max_body_bytes: 4096, max_header_bytes: 4096, max_url_bytes: 512, header_timeout_ms: 400 },
    providers: { mock: provider(mock.baseUrl) },
    models: { demo: { deployments: [{ provider: 'mock', model: 'm?tokens=3' }] } },
  };
  llmux = await startLlmux(base);
  keyed = await startLlmux({ ...base, keys: [GATEWAY_KEY, 'llmux-gw-key-2'] });
});

after(async () => {
  await llmux?.stop();
  await keyed?.stop();
  await mock?.stop();
});

async function stillServes(l) {
  const res = await post(l.base, '/v1/chat/completions', chat('demo'),
    l === keyed ? { authorization: `Bearer ${GATEWAY_KEY}` } : {});
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.choices[0].message.content, mockText(3));
}

test('unknown path: 404', async () => {
  await expectError(await fetch(llmux.base + '/v1/nope'), 404);
  await expectError(await post(llmux.base, '/v2/chat/completions', chat('demo')), 404);
});

test('wrong method: 405', async () => {
  await expectError(await fetch(llmux.base + '/v1/chat/completions'), 405);
  await expectError(await post(llmux.base, '/v1/models', {}), 405);
});

test('invalid JSON: 400', async () => {
  const err = await expectError(await post(llmux.base, '/v1/chat/completions', '{"model": "demo", "messages": ['), 400);
  assert.equal(err.type, 'invalid_request_error');
  await expectError(await post(llmux.base, '/v1/chat/completions', ''), 400);
  await expectError(await post(llmux.base, '/v1/chat/completions', '[1,2]'), 400);
});

test('missing model or messages: 400', async () => {
  await expectError(await post(llmux.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }] }), 400);
  await expectError(await post(llmux.base, '/v1/chat/completions', { model: 'demo' }), 400);
  await expectError(await post(llmux.base, '/v1/chat/completions', { model: '', messages: [] }), 400);
  assert.equal((await mock.stats()).requests, 0, 'invalid requests must not reach the provider');
});

test('unknown model: 404 model_not_found', async () => {
  const err = await expectError(await post(llmux.base, '/v1/chat/completions', chat('no-such-model')), 404, 'model_not_found');
  assert.match(err.message, /no-such-model/);
  // An unknown provider prefix is an unknown model too.
  await expectError(await post(llmux.base, '/v1/chat/completions', chat('nobody/m')), 404, 'model_not_found');
});

test('malformed HTTP: 400 and the connection is closed', async () => {
  const r = await rawRequest(llmux.port, 'THIS IS NOT HTTP\r\n\r\n');
  assert.equal(r.status, 400, r.data);
  assert.ok(r.closed, 'connection left open after a protocol error');
  assertErrorShape(JSON.parse(r.body), 400);

  const r2 = await rawRequest(llmux.port,
    'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!');
  assert.equal(r2.status, 400, r2.data);
  assert.ok(r2.closed);
});

test('body over limits.max_body_bytes: 413', async () => {
  const big = chat('demo', { messages: [{ role: 'user', content: 'x'.repeat(5000) }] });
  const body = JSON.stringify(big);
  const r = await rawRequest(llmux.port,
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  assert.equal(r.status, 413, r.data);
  assertErrorShape(JSON.parse(r.body.slice(0, Number(r.headers['content-length']))), 413);

  // Chunked bodies are counted too.
  const chunked = `${(body.length).toString(16)}\r\n${body}\r\n0\r\n\r\n`;
  const r2 = await rawRequest(llmux.port,
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}`);
  assert.equal(r2.status, 413, r2.data);
  assert.equal((await mock.stats()).requests, 0);
});

test('headers over limits.max_header_bytes: 431', async () => {
  const r = await rawRequest(llmux.port,
    `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(6000)}\r\n\r\n`);
  assert.equal(r.status, 431, r.data);
  assertErrorShape(JSON.parse(r.body.slice(0, Number(r.headers['content-length']))), 431);
  // Many small headers add up.
  let many = '';
  for (let i = 0; i < 200; i++) many += `X-H${i}: ${'b'.repeat(30)}\r\n`;
  const r2 = await rawRequest(llmux.port, `GET /v1/models HTTP/1.1\r\nHost: x\r\n${many}\r\n`);
  assert.equal(r2.status, 431, r2.data);
});

test('URL over limits.max_url_bytes: 414', async () => {
  const res = await fetch(`${llmux.base}/v1/models?pad=${'u'.repeat(1000)}`);
  await expectError(res, 414);
});

test('/v1/messages: the refusals the HTTP server makes itself are in Anthropic\'s shape', async () => {
  const anthropicError = (r, status, type) => {
    assert.equal(r.status, status, r.data);
    assert.match(r.headers['content-type'], /application\/json/);
    assert.ok(r.headers['x-request-id'], 'no x-request-id');
    const body = JSON.parse(r.body.slice(0, Number(r.headers['content-length'])));
    assert.equal(body.type, 'error', JSON.stringify(body));
    assert.equal(body.error.type, type, JSON.stringify(body));
    assert.equal(typeof body.error.message, 'string');
    return body;
  };
  const head = (path) => `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nanthropic-version: 2023-06-01\r\n`;
  const body = JSON.stringify({ model: 'demo', max_tokens: 8, messages: [{ role: 'user', content: 'x'.repeat(5000) }] });
  anthropicError(await rawRequest(llmux.port, `${head('/v1/messages')}Content-Length: ${body.length}\r\n\r\n${body}`),
    413, 'request_too_large');
  anthropicError(await rawRequest(llmux.port, `${head('/v1/messages/count_tokens')}Content-Length: ${body.length}\r\n\r\n${body}`),
    413, 'request_too_large');
  anthropicError(await rawRequest(llmux.port, `${head('/v1/messages?beta=true')}X-Big: ${'a'.repeat(6000)}\r\n\r\n`),
    431, 'invalid_request_error');
  anthropicError(await rawRequest(llmux.port, `${head(`/v1/messages?beta=true&pad=${'u'.repeat(1000)}`)}\r\n`),
    414, 'invalid_request_error');
  anthropicError(await rawRequest(llmux.port, `${head('/v1/messages')}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`),
    400, 'invalid_request_error');
  // the same refusal on another path keeps OpenAI's shape
  const r = await rawRequest(llmux.port, `${head('/v1/messagesx')}Content-Length: ${body.length}\r\n\r\n${body}`);
  assert.equal(r.status, 413);
  assertErrorShape(JSON.parse(r.body.slice(0, Number(r.headers['content-length']))), 413);
});

test('a client that never finishes its headers is disconnected', async () => {
  // header_timeout_ms is 400: the connection must be closed by llmux, not by our timeout.
  const r = await rawRequest(llmux.port, 'GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: 1', { timeout: 10000 });
  assert.ok(r.closed, 'slow client kept open');
  assert.ok(r.status === 0 || r.status === 408, `status ${r.status}`);
});

test('gateway keys: missing or wrong key 401, right key served', async () => {
  let err = await expectError(await post(keyed.base, '/v1/chat/completions', chat('demo')), 401);
  assert.equal(err.type, 'invalid_request_error');
  await expectError(await post(keyed.base, '/v1/chat/completions', chat('demo'),
    { authorization: 'Bearer wrong-key' }), 401);
  await expectError(await post(keyed.base, '/v1/chat/completions', chat('demo'),
    { authorization: `Bearer ${GATEWAY_KEY}x` }), 401);
  await expectError(await post(keyed.base, '/v1/chat/completions', chat('demo'),
    { authorization: GATEWAY_KEY }), 401);
  err = await expectError(await fetch(keyed.base + '/v1/models'), 401);
  assert.ok(!err.message.includes(GATEWAY_KEY), 'the error quotes a gateway key');

  const before = (await mock.stats()).requests;
  await stillServes(keyed);
  const res = await post(keyed.base, '/v1/chat/completions', chat('demo'), { authorization: 'Bearer llmux-gw-key-2' });
  assert.equal(res.status, 200);
  await res.text();
  const models = await fetch(keyed.base + '/v1/models', { headers: { authorization: `Bearer ${GATEWAY_KEY}` } });
  assert.equal(models.status, 200);
  await models.text();
  assert.equal((await mock.stats()).requests, before + 2);
  // The gateway key is the client's credential for llmux, never forwarded to the provider.
  assert.ok(!JSON.stringify((await mock.last()).headers).includes('llmux-gw-key'));
  assert.ok(!keyed.stderr().includes(GATEWAY_KEY), 'gateway key in the log');
});

test('a repeated or escaped member llmux reads is refused (the provider might read the other one)', async () => {
  for (const body of [
    '{"model":"demo","messages":[{"role":"user","content":"x"}],"model":"other"}',
    '{"model":"demo","messages":[],"stream":false,"stream":true}',
    '{"model":"demo","mod\\u0065l":"other","messages":[]}',
  ]) {
    const res = await post(llmux.base, '/v1/chat/completions', body);
    const err = await expectError(res, 400, null);
    assert.match(err.message, /repeats a member|escaped/);
  }
});

test('llmux still serves after all the errors', async () => {
  await stillServes(llmux);
  await stillServes(keyed);
  // Several requests on one kept-alive client connection.
  const body = JSON.stringify(chat('demo'));
  const one = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  const r = await rawRequest(llmux.port,
    one + one + `GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, { timeout: 10000 });
  assert.equal((r.data.match(/HTTP\/1\.1 200/g) || []).length, 3, r.data);
  assert.ok(r.closed);
});
