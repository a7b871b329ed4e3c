// TLS to providers: verified against the provider's ca_file with the host name checked; a
// failed verification is a failed attempt (the next deployment serves), never a fallback to an
// unverified connection. Also: c-ares resolving "localhost".
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  startMock, startLlmux, provider, post, chat, readSse, chunksText, mockText, rid, expectError, CERTS,
} from './lib.mjs';

let tlsMock, plainMock, llmux;

before(async () => {
  tlsMock = await startMock({ tls: true });
  plainMock = await startMock();
  const ca = join(CERTS, 'ca.pem');
  const other = join(CERTS, 'other-ca.pem');
  const p = tlsMock.port;
  llmux = await startLlmux({
    timeouts_ms: { connect: 3000, first_byte: 5000, idle: 5000, total: 20000 },
    providers: {
      'tls-ok': provider(`https://localhost:${p}/v1`, { ca_file: ca }),
      'tls-wrong-ca': provider(`https://localhost:${p}/v1`, { ca_file: other }),
      'tls-ip': provider(`https://127.0.0.1:${p}/v1`, { ca_file: ca }),
      'tls-system-ca': provider(`https://localhost:${p}/v1`),
      plain: provider(`http://localhost:${plainMock.port}/v1`),
    },
    models: {
      ok: { deployments: [{ provider: 'tls-ok', model: 'tls-model?tokens=6' }] },
      'wrong-ca': { deployments: [{ provider: 'tls-wrong-ca', model: 'm' }, { provider: 'plain', model: 'plain-model?tokens=4' }] },
      'ip-name': { deployments: [{ provider: 'tls-ip', model: 'm' }, { provider: 'plain', model: 'plain-model?tokens=4' }] },
      'system-ca': { deployments: [{ provider: 'tls-system-ca', model: 'm' }, { provider: 'plain', model: 'plain-model?tokens=4' }] },
      'wrong-ca-only': { deployments: [{ provider: 'tls-wrong-ca', model: 'm' }] },
    },
  });
});

after(async () => {
  await llmux?.stop();
  await tlsMock?.stop();
  await plainMock?.stop();
});

test('TLS verified with the test CA (non-stream and stream)', async () => {
  const before = (await tlsMock.stats()).requests;
  const res = await post(llmux.base, '/v1/chat/completions', chat('ok'));
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.choices[0].message.content, mockText(6));
  assert.equal(res.headers.get('x-llmux-provider'), 'tls-ok');

  const res2 = await post(llmux.base, '/v1/chat/completions', chat('ok', { stream: true }));
  assert.equal(res2.status, 200);
  const datas = await readSse(res2);
  assert.equal(chunksText(datas), mockText(6));
  assert.equal(datas.at(-1), '[DONE]');
  assert.equal((await tlsMock.stats()).requests, before + 2);
  assert.equal(JSON.parse((await tlsMock.last()).body).model, 'tls-model?tokens=6');
});

test('TLS connections are kept alive and reused', async () => {
  const s0 = await tlsMock.stats();
  const s1 = await tlsMock.stats();
  const perStatsCall = s1.connections - s0.connections;
  for (let i = 0; i < 5; i++) {
    const res = await post(llmux.base, '/v1/chat/completions', chat('ok'));
    assert.equal(res.status, 200);
    await res.text();
  }
  const s2 = await tlsMock.stats();
  assert.ok(s2.connections - s1.connections - perStatsCall <= 1,
    `5 sequential TLS requests used ${s2.connections - s1.connections - perStatsCall} connections`);
});

// The request is served by the plain deployment after a failed verification, and nothing was
// sent to the TLS mock over the unverified connection.
async function expectVerifyFailover(model, failedProvider) {
  const id = rid('tls');
  const before = (await tlsMock.stats()).requests;
  const res = await post(llmux.base, '/v1/chat/completions', chat(model), { 'x-request-id': id });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.choices[0].message.content, mockText(4));
  assert.equal(res.headers.get('x-llmux-provider'), 'plain');
  assert.equal(res.headers.get('x-llmux-attempts'), '2');
  assert.equal((await tlsMock.stats()).requests, before, 'a request went over an unverified connection');
  const line = await llmux.logFor(id);
  assert.equal(line.attempts.length, 2);
  assert.equal(line.attempts[0].provider, failedProvider);
  assert.match(line.attempts[0].error, /certificate|verif/i, `reason: ${line.attempts[0].error}`);
  return line;
}

test('wrong CA: verification fails, the next deployment serves', async () => {
  await expectVerifyFailover('wrong-ca', 'tls-wrong-ca');
});

test('host name mismatch (IP address vs. a certificate for localhost): next deployment serves', async () => {
  const line = await expectVerifyFailover('ip-name', 'tls-ip');
  assert.match(line.attempts[0].error, /name|host|CN|verif/i);
});

test('the system CA bundle does not trust the test CA', async () => {
  await expectVerifyFailover('system-ca', 'tls-system-ca');
});

test('a verification failure with nothing to fall back on is a 502 that says why', async () => {
  const err = await expectError(await post(llmux.base, '/v1/chat/completions', chat('wrong-ca-only')),
    502, 'all_deployments_failed');
  assert.match(err.message, /certificate|verif/i);
});

test('c-ares resolves localhost for plain http providers', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('plain/m?tokens=2'));
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.choices[0].message.content, mockText(2));
  assert.equal((await plainMock.last()).headers.host, `localhost:${plainMock.port}`);
});
