// Upstream response framing beyond what mockllm uses: a body delimited by the server closing
// the connection (no content-length, no chunked), and an SSE stream framed the same way. Such a
// connection is not reused. A tiny raw TCP server plays the upstream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startLlmux, provider, post, chat, readSse, chunksText } from './lib.mjs';

let server, llmux, connections = 0;

const json = JSON.stringify({
  id: 'chatcmpl-raw', object: 'chat.completion', created: 1, model: 'raw',
  choices: [{ index: 0, message: { role: 'assistant', content: 'close-delimited' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
});
const chunk = (c) => `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'raw', choices: [{ index: 0, delta: { content: c }, finish_reason: null }] })}\n\n`;

before(async () => {
  server = net.createServer((sock) => {
    connections++;
    let req = '';
    sock.on('data', (d) => {
      req += d.toString();
      const end = req.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = Number(/content-length: (\d+)/i.exec(req)?.[1] ?? 0);
      if (req.length < end + 4 + len) return;
      const stream = /"stream":true/.test(req);
      if (/"model":"flood"/.test(req)) { // role-only chunks, forever: content never comes
        sock.write('HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n');
        const role = `data: ${JSON.stringify({ id: 'f', object: 'chat.completion.chunk', model: 'raw', choices: [{ index: 0, delta: { role: 'assistant' } }], pad: 'p'.repeat(4000) })}\n\n`;
        const pump = () => { while (!sock.destroyed && sock.write(role)); };
        sock.on('drain', pump);
        pump();
        return;
      }
      // HTTP/1.1 without content-length or transfer-encoding: the body ends at close.
      sock.write(`HTTP/1.1 200 OK\r\ncontent-type: ${stream ? 'text/event-stream' : 'application/json'}\r\n\r\n`);
      if (stream) {
        sock.write(chunk('one '));
        setTimeout(() => { sock.write(chunk('two')); sock.end('data: [DONE]\n\n'); }, 20);
      } else {
        sock.end(json);
      }
    });
    sock.on('error', () => {});
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  llmux = await startLlmux({ providers: { raw: provider(`http://127.0.0.1:${server.address().port}/v1`) } });
});

after(async () => {
  await llmux?.stop();
  server?.close();
});

test('a close-delimited JSON body is relayed whole', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('raw/m'));
  assert.equal(res.status, 200);
  assert.equal((await res.json()).choices[0].message.content, 'close-delimited');
});

test('a close-delimited event stream is relayed whole and ends with [DONE]', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('raw/m', { stream: true }));
  assert.equal(res.status, 200);
  const d = await readSse(res);
  assert.equal(chunksText(d), 'one two');
  assert.equal(d.at(-1), '[DONE]');
});

test('a connection whose body ended by close is never reused', async () => {
  const before = connections;
  for (let i = 0; i < 3; i++) {
    const res = await post(llmux.base, '/v1/chat/completions', chat('raw/m'));
    assert.equal(res.status, 200);
    await res.text();
  }
  assert.equal(connections - before, 3);
});

test('an upstream that floods preamble chunks is cut off, not buffered without end', async () => {
  const res = await post(llmux.base, '/v1/chat/completions', chat('raw/flood', { stream: true }));
  assert.equal(res.status, 502);
  const body = await res.json();
  assert.match(body.error.message, /too much before any content/);
});
