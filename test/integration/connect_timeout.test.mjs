// The connect timeout covers DNS + TCP + TLS. Loopback cannot drop a SYN, so the hanging
// upstream is one that accepts TCP and never answers the TLS handshake: the attempt must fail
// after timeouts_ms.connect and the next deployment must serve.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { startMock, startLlmux, provider, post, chat, mockText, rid, CERTS } from './lib.mjs';

let silent, mock, llmux;
const sockets = new Set();

before(async () => {
  silent = net.createServer((s) => { sockets.add(s); s.on('error', () => {}); }); // never answers
  await new Promise((r) => silent.listen(0, '127.0.0.1', r));
  mock = await startMock();
  llmux = await startLlmux({
    timeouts_ms: { connect: 300, first_byte: 10000, idle: 10000, total: 20000 },
    providers: {
      hang: provider(`https://localhost:${silent.address().port}/v1`, { ca_file: join(CERTS, 'ca.pem') }),
      good: provider(mock.baseUrl),
    },
    models: { m: { deployments: [{ provider: 'hang', model: 'x' }, { provider: 'good', model: 'g?tokens=2' }] } },
  });
});

after(async () => {
  await llmux?.stop();
  await mock?.stop();
  for (const s of sockets) s.destroy();
  silent?.close();
});

test('an upstream that never completes the handshake hits the connect timeout, then failover', async () => {
  const id = rid('ct');
  const res = await post(llmux.base, '/v1/chat/completions', chat('m'), { 'x-request-id': id });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).choices[0].message.content, mockText(2));
  assert.equal(res.headers.get('x-llmux-provider'), 'good');
  const line = await llmux.logFor(id);
  assert.equal(line.attempts.length, 2);
  assert.match(line.attempts[0].error, /connect timeout after 300 ms/);
});
