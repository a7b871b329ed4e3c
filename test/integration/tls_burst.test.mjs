// TLS session resumption for a cold burst: llmux keeps one client session per origin (host name
// and port), and while the first handshake to an origin is in flight further connections to it
// wait for its session, so a burst of concurrent first requests makes one full handshake and
// resumes the rest. A session is never offered to another origin (another port, another name),
// and a resumed connection's origin is the one that verified the certificate.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startMock, startLlmux, provider, post, chat, mockText, CERTS } from './lib.mjs';

let mockA, mockB, llmux;

before(async () => {
  mockA = await startMock({ tls: true });
  mockB = await startMock({ tls: true });
  const ca = join(CERTS, 'ca.pem');
  llmux = await startLlmux({
    timeouts_ms: { connect: 10000, first_byte: 10000, idle: 10000, total: 30000 },
    providers: { // one CA file: one TLS context for all three
      a: provider(`https://localhost:${mockA.port}/v1`, { ca_file: ca }),
      b: provider(`https://localhost:${mockB.port}/v1`, { ca_file: ca }),
      'a-ip': provider(`https://127.0.0.1:${mockA.port}/v1`, { ca_file: ca }),
    },
    models: {
      // answers that take a while: no request of a burst finds a pooled connection
      a: { deployments: [{ provider: 'a', model: 'm?tokens=5&delay=300' }] },
      b: { deployments: [{ provider: 'b', model: 'm?tokens=3&delay=300' }] },
      'a-by-ip': { deployments: [{ provider: 'a-ip', model: 'm' }, { provider: 'b', model: 'm?tokens=3' }] },
    },
  });
});

after(async () => {
  await llmux?.stop();
  await mockA?.stop();
  await mockB?.stop();
});

async function handshakes() {
  const s = await fetch(`${llmux.base}/v1/status`).then((r) => r.json());
  return { ...s.upstream_tls_handshakes, connects: s.upstream_connects };
}

// n requests at once; every answer must be the mock's
async function burst(model, n, tokens) {
  const answers = await Promise.all(Array.from({ length: n }, async () => {
    const res = await post(llmux.base, '/v1/chat/completions', chat(model));
    return { status: res.status, body: await res.json() };
  }));
  for (const a of answers) {
    assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(a.body.choices[0].message.content, mockText(tokens));
  }
}

test('a burst of concurrent first requests makes one full TLS handshake and resumes the rest', async () => {
  assert.deepEqual(await handshakes(), { full: 0, resumed: 0, connects: 0 });
  await burst('a', 8, 5);
  const h = await handshakes();
  assert.ok(h.connects >= 2, `the burst used ${h.connects} connection(s)`);
  assert.deepEqual(h, { full: 1, resumed: h.connects - 1, connects: h.connects });
  // the server agrees: every session offered was resumed (the test's stats requests offer none)
  const s = await mockA.stats();
  assert.equal(s.tls_offered, h.resumed);
  assert.equal(s.tls_resumed, h.resumed);
});

test('a session is never offered to another origin: another port gets its own full handshake first', async () => {
  const h0 = await handshakes();
  await burst('b', 4, 3);
  const h1 = await handshakes();
  assert.equal(h1.full - h0.full, 1);
  assert.equal(h1.resumed - h0.resumed, h1.connects - h0.connects - 1);
  const s = await mockB.stats();
  assert.equal(s.tls_offered, h1.resumed - h0.resumed, 'a session of another origin was offered to mock B');
  assert.equal(s.tls_resumed, s.tls_offered);
});

test('another host name for the same server is verified, never resumed: the IP fails and the next deployment serves', async () => {
  const offered = (await mockA.stats()).tls_offered;
  const res = await post(llmux.base, '/v1/chat/completions', chat('a-by-ip'));
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(res.headers.get('x-llmux-provider'), 'b');
  assert.equal(body.choices[0].message.content, mockText(3));
  assert.equal((await mockA.stats()).tls_offered, offered, "localhost's session was offered to 127.0.0.1");
});
