// mockllm's wire formats seen on the wire, below what the SDKs show: SSE framing and event
// names, every script key in every kind (OpenAI, Azure OpenAI, Anthropic, Gemini), error shapes,
// continuation, and /mock/last and /mock/stats. The SDK view is mockllm_sdk.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, mockText, waitFor } from './lib.mjs';

let mock;
before(async () => { mock = await startMock(); });
after(async () => { await mock?.stop(); });

const base = () => `http://127.0.0.1:${mock.port}`;

// Each kind: how to ask for a chat answer, and where its text and errors are.
const KINDS = {
  openai: {
    path: () => '/v1/chat/completions',
    headers: {},
    body: (turns, stream) => ({ model: 'm', messages: turns.map(([role, content]) => ({ role, content })), stream }),
    assistant: 'assistant',
    text: (b) => b.choices[0].message.content,
    chunkText: (d) => (d === '[DONE]' ? '' : JSON.parse(d).choices[0]?.delta?.content ?? ''),
    errorType: (b) => b.error.type,
  },
  azure: {
    path: () => '/openai/deployments/dep/chat/completions?api-version=2024-10-21',
    headers: { 'api-key': 'az' },
    body: (turns, stream) => ({ messages: turns.map(([role, content]) => ({ role, content })), stream }),
    assistant: 'assistant',
    text: (b) => b.choices[0].message.content,
    chunkText: (d) => (d === '[DONE]' ? '' : JSON.parse(d).choices[0]?.delta?.content ?? ''),
    errorType: (b) => b.error.type,
  },
  anthropic: {
    path: () => '/v1/messages',
    headers: { 'x-api-key': 'k', 'anthropic-version': '2023-06-01' },
    body: (turns, stream) => ({ model: 'c', max_tokens: 1000, messages: turns.map(([role, content]) => ({ role, content })), stream }),
    assistant: 'assistant',
    text: (b) => b.content[0].text,
    chunkText: (d) => { const e = JSON.parse(d); return e.type === 'content_block_delta' ? e.delta.text : ''; },
    errorType: (b) => { assert.equal(b.type, 'error'); return b.error.type; },
  },
  gemini: {
    path: (stream) => `/v1beta/models/g:${stream ? 'streamGenerateContent?alt=sse' : 'generateContent'}`,
    headers: { 'x-goog-api-key': 'g' },
    body: (turns) => ({ contents: turns.map(([role, text]) => ({ role, parts: [{ text }] })) }),
    assistant: 'model',
    text: (b) => b.candidates[0].content.parts[0].text,
    chunkText: (d) => JSON.parse(d).candidates[0].content.parts[0].text ?? '',
    errorType: (b) => b.error.status,
  },
};
const HELLO = [['user', 'hello']];

function ask(kind, script, { stream = false, turns = HELLO, signal } = {}) {
  const k = KINDS[kind];
  return fetch(base() + k.path(stream), {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-mock': script, ...k.headers },
    body: JSON.stringify(k.body(turns, stream)),
    signal: signal ?? AbortSignal.timeout(10000),
  });
}

// SSE blocks as { event, data, raw }, split on blank lines (LF or CRLF framing).
function events(text) {
  return text.split(/\r?\n\r?\n/).filter((b) => b.length).map((raw) => {
    const lines = raw.split(/\r?\n/);
    return {
      event: lines.find((l) => l.startsWith('event: '))?.slice(7) ?? null,
      data: lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n'),
      raw,
    };
  });
}

async function answer(kind, script, opts = {}) {
  const res = await ask(kind, script, opts);
  const raw = await res.text();
  if (!opts.stream) return { res, raw, text: res.status === 200 ? KINDS[kind].text(JSON.parse(raw)) : null };
  const evs = events(raw);
  const content = evs.filter((e) => e.event !== 'error' && !/^\{"error"/.test(e.data));
  return { res, raw, evs, text: content.map((e) => KINDS[kind].chunkText(e.data)).join('') };
}

// Reads a stream until `want` text has arrived, then checks nothing more comes for `quietMs`.
async function readStalled(res, want, quietMs = 300) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let text = '';
  for (;;) {
    const chunk = await Promise.race([reader.read(), new Promise((r) => setTimeout(() => r(null), quietMs))]);
    if (chunk === null) break;
    assert.ok(!chunk.done, 'a stalled stream must not end');
    text += dec.decode(chunk.value);
  }
  await reader.cancel();
  return text;
}

test('anthropic stream: every event named like its data type, in Anthropic order', async () => {
  const { res, evs } = await answer('anthropic', 'tokens=3', { stream: true });
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  assert.match(res.headers.get('request-id'), /^req_/);
  for (const e of evs) assert.equal(JSON.parse(e.data).type, e.event, e.raw);
  assert.deepEqual(evs.map((e) => e.event), ['message_start', 'content_block_start', 'ping',
    'content_block_delta', 'content_block_delta', 'content_block_delta', 'content_block_stop',
    'message_delta', 'message_stop']);
  const start = JSON.parse(evs[0].data).message;
  assert.match(start.id, /^msg_/);
  assert.deepEqual({ ...start, id: 0, usage: 0 }, { id: 0, type: 'message', role: 'assistant', model: 'c',
    content: [], stop_reason: null, stop_sequence: null, usage: 0 });
  assert.ok(start.usage.input_tokens > 0 && 'output_tokens' in start.usage);
  assert.deepEqual(JSON.parse(evs.at(-2).data).delta, { stop_reason: 'end_turn', stop_sequence: null });
  assert.equal(JSON.parse(evs.at(-2).data).usage.output_tokens, 3);
});

test('gemini stream: CRLF-framed data events, no [DONE], finishReason on the last chunk', async () => {
  const { res, raw, evs, text } = await answer('gemini', 'tokens=3', { stream: true });
  assert.equal(res.status, 200);
  assert.equal(text, mockText(3));
  assert.ok(raw.endsWith('}\r\n\r\n'), JSON.stringify(raw.slice(-20)));
  assert.ok(!raw.includes('[DONE]'));
  assert.ok(evs.every((e) => e.event === null && e.raw.startsWith('data: {')));
  const chunks = evs.map((e) => JSON.parse(e.data));
  assert.deepEqual(chunks.map((c) => c.candidates[0].finishReason), [undefined, undefined, 'STOP']);
  assert.equal(chunks[2].usageMetadata.candidatesTokenCount, 3);
});

test('gemini: streamGenerateContent without alt=sse is refused; a model id may carry a %-encoded script', async () => {
  const res = await fetch(`${base()}/v1beta/models/g:streamGenerateContent`, { method: 'POST', body: '{"contents":[]}' });
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error.status, 'NOT_FOUND');
  const r = await fetch(`${base()}/v1beta/models/${encodeURIComponent('g?tokens=2')}:generateContent`,
    { method: 'POST', body: JSON.stringify(KINDS.gemini.body(HELLO)) });
  const b = await r.json();
  assert.equal(b.candidates[0].content.parts[0].text, mockText(2));
  assert.equal(b.modelVersion, 'g');
});

for (const kind of Object.keys(KINDS)) {
  test(`${kind}: tokens, chunk_bytes, stream and not`, async () => {
    assert.equal((await answer(kind, 'tokens=4')).text, mockText(4));
    assert.equal((await answer(kind, 'tokens=4', { stream: true })).text, mockText(4));
    const padded = (await answer(kind, 'tokens=2&chunk_bytes=12', { stream: true })).text;
    assert.equal(padded, 'w0 xxxxw1 xxxx');
  });

  test(`${kind}: status, retry_after, fail_every, error_type give the kind's error`, async () => {
    let { res, raw } = await answer(kind, 'status=429&retry_after=3');
    assert.equal(res.status, 429);
    assert.equal(res.headers.get('retry-after'), '3');
    const type429 = KINDS[kind].errorType(JSON.parse(raw));
    assert.equal(type429, { anthropic: 'rate_limit_error', gemini: 'RESOURCE_EXHAUSTED' }[kind] ?? 'rate_limit_error');
    ({ res, raw } = await answer(kind, 'status=503&error_type=custom_error'));
    assert.equal(res.status, 503);
    assert.equal(KINDS[kind].errorType(JSON.parse(raw)), 'custom_error');
    await mock.reset();
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await answer(kind, 'fail_every=2&tokens=1')).res.status);
    assert.deepEqual(statuses, [200, 503, 200, 503]);
  });

  test(`${kind}: unknown script key and context_window are 400 in the kind's shape`, async () => {
    let { res, raw } = await answer(kind, 'nope=1');
    assert.equal(res.status, 400);
    KINDS[kind].errorType(JSON.parse(raw));
    assert.match(raw, /unknown script key 'nope'/);
    ({ res, raw } = await answer(kind, 'context_window=3'));
    assert.equal(res.status, 400);
    const b = JSON.parse(raw);
    if (kind === 'anthropic') assert.match(b.error.message, /^prompt is too long: \d+ tokens > 3 maximum$/);
    else if (kind === 'gemini') assert.equal(b.error.status, 'INVALID_ARGUMENT');
    else assert.equal(b.error.code, 'context_length_exceeded');
  });

  test(`${kind}: delay and ttft hold the answer back`, async () => {
    let t0 = Date.now();
    await answer(kind, 'delay=150&tokens=1');
    assert.ok(Date.now() - t0 >= 140, `delay: ${Date.now() - t0} ms`);
    t0 = Date.now();
    const { text } = await answer(kind, 'ttft=150&tokens=2', { stream: true });
    assert.ok(Date.now() - t0 >= 140, `ttft: ${Date.now() - t0} ms`);
    assert.equal(text, mockText(2));
  });

  test(`${kind}: reset_after, stall_after, error_after, malformed`, async () => {
    // Reset after 2 tokens: the body breaks off.
    await assert.rejects((await ask(kind, 'tokens=6&reset_after=2', { stream: true })).text());
    await assert.rejects(ask(kind, 'reset_after=0'));
    // Stall after 2 tokens: the stream stays open with 2 tokens.
    const ac = new AbortController();
    const stalled = await readStalled(await ask(kind, 'tokens=6&stall_after=2', { stream: true, signal: ac.signal }), 2);
    ac.abort();
    assert.equal(events(stalled).map((e) => KINDS[kind].chunkText(e.data)).join(''), mockText(2));
    // An in-stream error after 2 tokens, then a clean end without the completion markers.
    const { res, evs, raw, text } = await answer(kind, 'tokens=6&error_after=2', { stream: true });
    assert.equal(res.status, 200);
    assert.equal(text, mockText(2));
    const err = evs.at(-1);
    if (kind === 'anthropic') assert.equal(err.event, 'error');
    KINDS[kind].errorType(JSON.parse(err.data));
    assert.ok(!raw.includes('[DONE]') && !raw.includes('message_stop'));
    // Malformed JSON: non-stream body, and the second stream event.
    const bad = await (await ask(kind, 'malformed=json&tokens=1')).text();
    assert.throws(() => JSON.parse(bad));
    const badStream = await answer(kind, 'malformed=json&tokens=3', { stream: true }).catch((e) => e);
    assert.ok(badStream instanceof Error, 'the second token event is not JSON');
    // Not SSE at all, and the connection closes without a proper chunked end.
    const reader = (await ask(kind, 'malformed=sse', { stream: true })).body.getReader();
    let sse = '';
    await assert.rejects(async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        sse += new TextDecoder().decode(value);
      }
    });
    assert.match(sse, /^this is not an event stream/);
  });

  test(`${kind}: continuation of an assistant text, by prefill and by a continue request`, async () => {
    const a = KINDS[kind].assistant;
    const prefix = mockText(3).trimEnd(); // "w0 w1 w2": a prefill without trailing whitespace
    let { text } = await answer(kind, 'tokens=6', { turns: [...HELLO, [a, prefix]] });
    assert.equal(prefix + text, mockText(6));
    ({ text } = await answer(kind, 'tokens=6', { stream: true, turns: [...HELLO, [a, mockText(2)],
      ['user', 'Continue your previous message exactly where it stopped. Do not repeat anything.']] }));
    assert.equal(mockText(2) + text, mockText(6));
    // A continue request is answered the same with prefill=0; a plain final user turn is not.
    ({ text } = await answer(kind, 'tokens=4&prefill=0', { turns: [...HELLO, [a, mockText(1)],
      ['user', 'Continue your previous message exactly where it stopped']] }));
    assert.equal(text, mockText(4).slice(mockText(1).length));
    ({ text } = await answer(kind, 'tokens=3', { turns: [...HELLO, [a, mockText(2)], ['user', 'thanks']] }));
    assert.equal(text, mockText(3));
    if (kind !== 'anthropic') { // Anthropic refuses it (mockllm_sdk); the others answer afresh
      ({ text } = await answer(kind, 'tokens=3&prefill=0', { turns: [...HELLO, [a, prefix]] }));
      assert.equal(text, mockText(3));
    }
  });

  test(`${kind}: /mock/last records the request`, async () => {
    const res = await ask(kind, 'tokens=1');
    await res.text();
    const last = await mock.last();
    assert.equal(last.method, 'POST');
    assert.equal(last.url, KINDS[kind].path(false));
    assert.equal(last.headers['x-mock'], 'tokens=1');
    for (const [h, v] of Object.entries(KINDS[kind].headers)) assert.equal(last.headers[h], v);
    assert.deepEqual(JSON.parse(last.body), KINDS[kind].body(HELLO, false));
  });
}

test('tool calls: the arguments stream in several pieces (OpenAI, Anthropic) or whole (Gemini)', async () => {
  const args = JSON.stringify({ city: 'Paris', unit: 'celsius', days: 3 });
  const oa = events((await answer('openai', 'tool=lookup', { stream: true })).raw).filter((e) => e.data !== '[DONE]')
    .map((e) => JSON.parse(e.data).choices[0]);
  assert.equal(oa[0].delta.tool_calls[0].function.name, 'lookup');
  assert.equal(oa[0].delta.tool_calls[0].function.arguments, '');
  const frags = oa.slice(1, -1).map((c) => c.delta.tool_calls[0].function.arguments);
  assert.ok(frags.length > 1);
  assert.equal(frags.join(''), args);
  assert.equal(oa.at(-1).finish_reason, 'tool_calls');

  const an = (await answer('anthropic', 'tool=lookup', { stream: true })).evs.map((e) => JSON.parse(e.data));
  assert.deepEqual(an[1].content_block, { type: 'tool_use', id: an[1].content_block.id, name: 'lookup', input: {} });
  const partial = an.filter((e) => e.type === 'content_block_delta').map((e) => e.delta);
  assert.ok(partial.length > 1 && partial.every((d) => d.type === 'input_json_delta'));
  assert.equal(partial.map((d) => d.partial_json).join(''), args);

  const ge = (await answer('gemini', 'tool=lookup', { stream: true })).evs.map((e) => JSON.parse(e.data));
  assert.equal(ge.length, 1);
  assert.deepEqual(ge[0].candidates[0].content.parts, [{ functionCall: { name: 'lookup', args: JSON.parse(args) } }]);
});

test('stats count completed streams of every kind, not broken ones', async () => {
  await mock.reset();
  for (const kind of Object.keys(KINDS)) await answer(kind, 'tokens=2', { stream: true });
  await answer('anthropic', 'tokens=3&error_after=1', { stream: true });
  const s = await waitFor(async () => { const st = await mock.stats(); return st.requests === 5 && st; });
  assert.equal(s.streams_completed, 4);
});
