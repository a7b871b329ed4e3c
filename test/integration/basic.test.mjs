// The happy path a user sees first: chat (stream and not), completions, embeddings, models,
// health, request ids, model rewriting, provider keys that never leak, and the command line.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startLlmux, runLlmux, writeConfig, provider, post, chat, readSse, chunks, chunksText,
  mockText, headersText, rid, waitFor,
} from './lib.mjs';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SECRET = 'sk-it-provider-secret-9f8e7d6c5b4a';
let mock, llmux;
// Everything llmux sent back to a client, searched for the provider key at the end.
const seen = [];

async function record(res) {
  const text = await res.text();
  seen.push(headersText(res), text);
  return text;
}

before(async () => {
  mock = await startMock();
  llmux = await startLlmux({
    timeouts_ms: { connect: 2000, first_byte: 5000, idle: 5000, total: 20000 },
    providers: {
      mock: provider(mock.baseUrl, { api_key_env: 'LLMUX_IT_PROVIDER_KEY' }),
      plain: provider(mock.baseUrl),
      'needs-key': provider(mock.baseUrl, { api_key_env: 'LLMUX_IT_UNSET_KEY' }),
    },
    models: {
      demo: { deployments: [{ provider: 'mock', model: 'upstream-x' }] },
      five: { deployments: [{ provider: 'mock', model: 'upstream-five?tokens=5' }] },
      'keyless-only': { deployments: [{ provider: 'needs-key', model: 'm' }] },
    },
  }, { env: { LLMUX_IT_PROVIDER_KEY: SECRET } });
});

after(async () => {
  await llmux?.stop();
  await mock?.stop();
  // The provider key is never in the gateway's own output, nor in anything a client got back.
  if (llmux) assert.ok(!llmux.stderr().includes(SECRET), 'provider key appears in llmux stderr');
  for (const s of seen) assert.ok(!s.includes(SECRET), `provider key sent to a client: ${s.slice(0, 200)}`);
});

test('non-stream chat returns the upstream answer with usage', async () => {
  const id = rid('basic');
  const res = await post(llmux.base, '/v1/chat/completions', chat('five'), { 'x-request-id': id });
  const body = JSON.parse(await record(res));
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /application\/json/);
  assert.equal(body.object, 'chat.completion');
  assert.equal(body.choices[0].message.role, 'assistant');
  assert.equal(body.choices[0].message.content, mockText(5));
  assert.equal(body.choices[0].finish_reason, 'stop');
  assert.equal(body.usage.completion_tokens, 5);
  assert.equal(res.headers.get('x-llmux-provider'), 'mock');
  assert.equal(res.headers.get('x-llmux-model'), 'upstream-five?tokens=5');
  assert.equal(res.headers.get('x-llmux-attempts'), '1');

  const line = await llmux.logFor(id);
  assert.equal(line.endpoint, 'chat');
  assert.equal(line.model, 'five');
  assert.equal(line.provider, 'mock');
  assert.equal(line.upstream_model, 'upstream-five?tokens=5');
  assert.equal(line.stream, false);
  assert.equal(line.status, 200);
  assert.equal(line.outcome, 'ok');
  assert.equal(line.attempts.length, 1);
  assert.equal(line.attempts[0].provider, 'mock');
  assert.equal(line.attempts[0].status, 200);
  assert.equal(line.bytes_in, JSON.stringify(chat('five')).length);
  assert.ok(line.bytes_out > 0);
  assert.equal(typeof line.duration_ms, 'number');
  assert.equal(line.usage.completion_tokens, 5);
  assert.equal(line.usage.total_tokens, line.usage.prompt_tokens + 5);
});

test('streamed chat relays every token and ends with [DONE]', async () => {
  const id = rid('basic');
  const res = await post(llmux.base, '/v1/chat/completions',
    chat('mock/m?tokens=12', { stream: true }), { 'x-request-id': id });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  const datas = await readSse(res);
  seen.push(headersText(res), datas.join('\n'));
  assert.equal(datas.at(-1), '[DONE]');
  assert.equal(datas.filter((d) => d === '[DONE]').length, 1);
  for (const c of chunks(datas)) assert.equal(c.object, 'chat.completion.chunk');
  assert.equal(chunksText(datas), mockText(12));
  assert.ok(chunks(datas).some((c) => c.choices?.[0]?.finish_reason === 'stop'), 'no finish_reason stop');
  const line = await llmux.logFor(id);
  assert.equal(line.stream, true);
  assert.equal(line.outcome, 'ok');
  assert.equal(typeof line.ttfb_ms, 'number');
});

test('stream_options.include_usage gives exactly one usage chunk', async () => {
  const res = await post(llmux.base, '/v1/chat/completions',
    chat('mock/m?tokens=7', { stream: true, stream_options: { include_usage: true } }));
  assert.equal(res.status, 200);
  const datas = await readSse(res);
  seen.push(datas.join('\n'));
  assert.equal(datas.at(-1), '[DONE]');
  assert.equal(chunksText(datas), mockText(7));
  const withUsage = chunks(datas).filter((c) => c.usage);
  assert.equal(withUsage.length, 1, 'exactly one chunk carries usage');
  assert.equal(withUsage[0].usage.completion_tokens, 7);
  assert.equal(withUsage[0].usage.total_tokens,
    withUsage[0].usage.prompt_tokens + withUsage[0].usage.completion_tokens);
});

test('completions, stream and not', async () => {
  let res = await post(llmux.base, '/v1/completions', { model: 'mock/m?tokens=4', prompt: 'Say' });
  const body = JSON.parse(await record(res));
  assert.equal(res.status, 200);
  assert.equal(body.object, 'text_completion');
  assert.equal(body.choices[0].text, mockText(4));

  res = await post(llmux.base, '/v1/completions', { model: 'mock/m?tokens=6', prompt: 'Say', stream: true });
  assert.equal(res.status, 200);
  const datas = await readSse(res);
  seen.push(datas.join('\n'));
  assert.equal(datas.at(-1), '[DONE]');
  assert.equal(chunksText(datas), mockText(6));
});

test('embeddings', async () => {
  const id = rid('basic');
  const res = await post(llmux.base, '/v1/embeddings', { model: 'demo', input: ['one', 'two'] },
    { 'x-request-id': id });
  const body = JSON.parse(await record(res));
  assert.equal(res.status, 200);
  assert.equal(body.object, 'list');
  assert.ok(body.data.length >= 1);
  assert.ok(Array.isArray(body.data[0].embedding));
  assert.ok(body.data[0].embedding.length > 0);
  assert.ok(body.data[0].embedding.every((x) => typeof x === 'number'));
  const last = await mock.last();
  assert.equal(last.url, '/v1/embeddings');
  assert.equal(JSON.parse(last.body).model, 'upstream-x');
  assert.equal((await llmux.logFor(id)).endpoint, 'embeddings');
});

test('/v1/models lists the aliases that have an enabled deployment', async () => {
  const res = await fetch(llmux.base + '/v1/models');
  const body = JSON.parse(await record(res));
  assert.equal(res.status, 200);
  assert.equal(body.object, 'list');
  const ids = body.data.map((m) => m.id).sort();
  assert.deepEqual(ids, ['demo', 'five']);
  for (const m of body.data) assert.equal(m.object, 'model');
});

test('/healthz', async () => {
  const res = await fetch(llmux.base + '/healthz');
  await record(res);
  assert.equal(res.status, 200);
});

test('x-request-id: kept from the client, sent upstream, echoed', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('demo'), { 'x-request-id': 'client-req-42' });
  await record(res);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-request-id'), 'client-req-42');
  const last = await mock.last();
  assert.equal(last.headers['x-request-id'], 'client-req-42');
  await llmux.logFor('client-req-42');
});

test('x-request-id: generated when absent, the same upstream, in the log and in the response', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('demo'));
  await record(res);
  assert.equal(res.status, 200);
  const id = res.headers.get('x-request-id');
  assert.ok(id && id.length >= 8, `generated request id: ${id}`);
  assert.equal((await mock.last()).headers['x-request-id'], id);
  await llmux.logFor(id);
  const res2 = await post(llmux.base, '/v1/chat/completions', chat('demo'));
  await record(res2);
  assert.notEqual(res2.headers.get('x-request-id'), id, 'each request gets its own id');
});

test('the upstream gets the deployment model and the rest of the body unchanged', async () => {
  const req = {
    model: 'demo',
    messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'héllo "quoted" \u2603' }],
    temperature: 0.25,
    user: 'u-123',
    custom_field: { nested: [1, 2, 3] },
  };
  const res = await post(llmux.base, '/v1/chat/completions', req);
  await record(res);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-llmux-model'), 'upstream-x');
  const last = await mock.last();
  assert.equal(last.method, 'POST');
  assert.equal(last.url, '/v1/chat/completions');
  const up = JSON.parse(last.body);
  assert.deepEqual(up, { ...req, model: 'upstream-x' });
});

test('the provider key goes upstream as a bearer token, never the client\'s credentials', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('demo'),
    { authorization: 'Bearer client-junk-token' });
  await record(res);
  assert.equal(res.status, 200);
  const last = await mock.last();
  assert.equal(last.headers.authorization, `Bearer ${SECRET}`);
  assert.ok(!JSON.stringify(last.headers).includes('client-junk-token'), 'client credentials forwarded upstream');

  // A provider without api_key_env sends no key at all.
  const res2 = await post(llmux.base, '/v1/chat/completions', chat('plain/m'));
  await record(res2);
  assert.equal(res2.status, 200);
  assert.ok(!JSON.stringify((await mock.last()).headers).includes(SECRET));
});

test('a provider whose key variable is unset is reported disabled at start-up', async () => {
  const lines = llmux.stderr().split('\n').filter((l) => l.startsWith('{"msg"')).map((l) => JSON.parse(l));
  const disabled = lines.find((l) => l.msg === 'provider disabled' && l.provider === 'needs-key');
  assert.ok(disabled, `no "provider disabled" line for needs-key in:\n${llmux.stderr().slice(0, 2000)}`);
  assert.match(disabled.reason, /LLMUX_IT_UNSET_KEY is not set/);
  assert.ok(lines.some((l) => l.msg === 'provider enabled' && l.provider === 'mock'));
  assert.ok(lines.some((l) => l.msg === 'provider enabled' && l.provider === 'plain'));
  // Its only alias cannot be served.
  const res = await post(llmux.base, '/v1/chat/completions', chat('keyless-only'));
  const text = await record(res);
  assert.ok(res.status >= 400, `alias of a disabled provider answered ${res.status}: ${text}`);
  assert.ok(JSON.parse(text).error);
});

test('IPv6: an upstream on [::1] and llmux listening on ::1', async () => {
  const mock6 = await startMock({ host: '::1' });
  const llmux6 = await startLlmux({
    providers: { v6: provider(mock6.baseUrl) },
    models: { six: { deployments: [{ provider: 'v6', model: 'm6?tokens=3' }] } },
  }, { listen: '::1' });
  try {
    assert.match(llmux6.base, /^http:\/\/\[::1\]:\d+$/);
    const res = await post(llmux6.base, '/v1/chat/completions', chat('six'));
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.choices[0].message.content, mockText(3));
    assert.equal((await mock6.stats()).requests, 1);
  } finally {
    await llmux6.stop();
    await mock6.stop();
  }
});

test('access_log writes the request lines to a file instead of stderr', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'llmux-log-')), 'access.log');
  const l = await startLlmux({
    access_log: path,
    providers: { mock: provider(mock.baseUrl) },
    models: {},
  });
  try {
    const res = await post(l.base, '/v1/chat/completions', chat('mock/m?tokens=2'), { 'x-request-id': 'to-file-1' });
    assert.equal(res.status, 200);
    await res.text();
    const line = await waitFor(() => {
      let text = '';
      try { text = readFileSync(path, 'utf8'); } catch { return false; }
      return text.split('\n').filter(Boolean).map((x) => JSON.parse(x)).find((x) => x.request_id === 'to-file-1');
    }, { what: 'the access-log line in the file' });
    assert.equal(line.status, 200);
    assert.equal(l.accessLog().length, 0, 'access-log lines also went to stderr');
  } finally {
    await l.stop();
  }
});

test('llmux -t accepts a valid config', () => {
  const path = writeConfig({
    listen: '127.0.0.1:8080',
    providers: { p: provider('http://127.0.0.1:9/v1') },
    models: { demo: { deployments: [{ provider: 'p', model: 'm' }] } },
  });
  const r = runLlmux(['-t', '-c', path]);
  assert.equal(r.status, 0, `exit ${r.status}: ${r.stdout}${r.stderr}`);
});

test('llmux -t rejects invalid configs naming the JSON path', () => {
  const base = {
    providers: { p: provider('http://127.0.0.1:9/v1') },
    models: { demo: { deployments: [{ provider: 'p', model: 'm' }] } },
  };
  const cases = [
    [{ ...base, models: { demo: { deployments: [{ provider: 'p', model: 'm' }, { provider: 'nope', model: 'm' }] } } },
      /\$\.models\.demo\.deployments\[1\]\.provider: .*unknown provider/],
    [{ ...base, modles: {} }, /\$\.modles: .*unknown key/],
    [{ ...base, providers: { p: { kind: 'openai', base_url: 'http://127.0.0.1:9/v1', base_ur: 'x' } } },
      /\$\.providers\.p\.base_ur: .*unknown key/],
    [{ ...base, timeouts_ms: { connect: 'soon' } }, /\$\.timeouts_ms\.connect: /],
    [{ ...base, providers: { p: { kind: 'nope', base_url: 'http://127.0.0.1:9/v1' } } }, /\$\.providers\.p\.kind: /],
    ['{ "providers": ', /invalid JSON/],
  ];
  for (const [cfg, re] of cases) {
    const r = runLlmux(['-t', '-c', writeConfig(cfg)]);
    assert.equal(r.status, 1, `exit ${r.status} for ${JSON.stringify(cfg)}`);
    assert.match(r.stdout + r.stderr, re);
  }
});

test('llmux --version', () => {
  const r = runLlmux(['--version']);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^llmux \d+\.\d+/);
});
