// The exact response cache (per alias "cache": {"ttl_s"}): a miss is stored and the same request
// is then answered without reaching the provider (mockllm's request count stays put), as a body
// or replayed as a stream whose text is the original's (read by the official openai SDK), across
// shapes (stream miss -> non-stream hit and back), tool calls whole; x-llmux-cache no-store and
// refresh; errors, truncated and continued streams and cut tool calls never stored; one gateway
// key never reads another's answers; a hit costs 0 but keeps its token counts; rate limits still
// apply; the cache survives a reload (a shorter ttl_s then applies to stored entries); other
// endpoints say bypass; /metrics counts it all. (TTL expiry at the millisecond and LRU
// eviction by bytes: test/test_cache.c, with an injected clock.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import {
  startMock, startLlmux, provider, post, readSse, chunks, chunksText, mockText, waitFor,
} from './lib.mjs';

// ESM ignores NODE_PATH: load the package from test/node explicitly.
const { default: OpenAI } = await import(new URL('../node/node_modules/openai/index.mjs', import.meta.url).href);

const KEY_A = 'sk-cache-test-key-a';
const KEY_B = 'sk-cache-test-key-b';
const KEY_LIMITED = 'sk-cache-test-key-limited';
const A = { authorization: `Bearer ${KEY_A}` };
const TOOL_ARGS = '{"city":"Paris","unit":"celsius","days":3}';

let mock, mock2, llmux, config;

before(async () => {
  mock = await startMock();
  mock2 = await startMock();
  const cache = { ttl_s: 3600 };
  config = {
    keys: [{ name: 'team-a', key: KEY_A }, { name: 'team-b', key: KEY_B },
      { name: 'limited', key: KEY_LIMITED, rpm: 2 }],
    health: { failure_threshold: 1000, error_rate_percent: 100 },
    providers: {
      m: provider(mock.baseUrl),
      m2: provider(mock2.baseUrl),
      ant: { kind: 'anthropic', base_url: mock.baseUrl, api_key_env: 'LLMUX_IT_CACHE_ANTHROPIC' },
    },
    models: {
      cached: { cache, deployments: [{ provider: 'm', model: 'x?tokens=7', price: { input: 2, output: 8 } }] },
      plain: { deployments: [{ provider: 'm', model: 'x?tokens=7' }] },
      tool: { cache, deployments: [{ provider: 'm', model: 'x?tool=get_weather' }] },
      cut_tool: { cache, deployments: [{ provider: 'm', model: 'x?tool=get_weather&reset_after=2' }] },
      failing: { cache, deployments: [{ provider: 'm', model: 'x?status=500' }] },
      truncated: { cache, deployments: [{ provider: 'm', model: 'x?tokens=10&reset_after=4' }] },
      continued: {
        cache,
        on_stream_failure: 'continue',
        deployments: [{ provider: 'm', model: 'x?tokens=10&reset_after=4' }, { provider: 'm2', model: 'x?tokens=10' }],
      },
      emb: { cache, deployments: [{ provider: 'm', model: 'e' }] },
      claude: { cache, deployments: [{ provider: 'ant', model: 'claude-x?tokens=5' }] },
    },
  };
  llmux = await startLlmux(config, { env: { LLMUX_IT_CACHE_ANTHROPIC: 'sk-ant-cache-test' } });
});

after(async () => {
  await llmux?.stop();
  await mock?.stop();
  await mock2?.stop();
});

let n = 0;
// A request body no other test sends (the cache key covers the messages).
function ask(model, extra = {}) {
  return { model, messages: [{ role: 'user', content: `question ${++n} from ${process.pid}` }], ...extra };
}
const upstreamCalls = async () => (await mock.stats()).requests + (await mock2.stats()).requests;

async function send(body, headers = A) {
  const res = await post(llmux.base, '/v1/chat/completions', body, headers);
  const cache = res.headers.get('x-llmux-cache');
  if (body.stream) return { res, cache, datas: await readSse(res) };
  return { res, cache, body: await res.json() };
}

const sdk = (key = KEY_A) => new OpenAI({ baseURL: `${llmux.base}/v1`, apiKey: key, maxRetries: 0, timeout: 20000 });

test('a miss is stored, the same request is a hit that never reaches the provider', async () => {
  const body = ask('cached');
  const calls = await upstreamCalls();
  const miss = await send(body);
  assert.equal(miss.res.status, 200);
  assert.equal(miss.cache, 'miss');
  assert.equal(await upstreamCalls(), calls + 1);
  for (let i = 0; i < 3; i++) {
    const hit = await send(body);
    assert.equal(hit.res.status, 200);
    assert.equal(hit.cache, 'hit');
    assert.equal(hit.res.headers.get('x-llmux-attempts'), '0');
    assert.equal(hit.res.headers.get('x-llmux-provider'), null, 'no provider served it');
    assert.deepEqual(hit.body.choices, miss.body.choices);
    assert.equal(hit.body.id, miss.body.id, 'the stored answer, as it came');
  }
  assert.equal(await upstreamCalls(), calls + 1, 'the provider was asked once');
});

test('a hit costs 0 (cost_details zeros) and reports the original token counts', async () => {
  const body = ask('cached');
  const miss = await send(body, { ...A, 'x-request-id': `cache-cost-miss-${process.pid}` });
  assert.ok(miss.body.usage.cost > 0, 'the miss was paid for');
  const id = `cache-cost-hit-${process.pid}`;
  const hit = await send(body, { ...A, 'x-request-id': id });
  assert.equal(hit.cache, 'hit');
  assert.equal(hit.body.usage.cost, 0);
  assert.deepEqual(hit.body.usage.cost_details, { upstream_inference_cost: 0, failed_attempts_cost: 0 });
  for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens'])
    assert.equal(hit.body.usage[k], miss.body.usage[k], k);
  const log = await llmux.logFor(id);
  assert.equal(log.cache, 'hit');
  assert.equal(log.cost_usd, 0);
  assert.equal(log.provider, null);
  assert.equal(log.usage.completion_tokens, 7);
  const missLog = await llmux.logFor(`cache-cost-miss-${process.pid}`);
  assert.equal(missLog.cache, 'miss');
  const gen = await (await fetch(`${llmux.base}/v1/generation?id=${id}`, { headers: A })).json();
  assert.equal(gen.data.cache, 'hit');
  assert.equal(gen.data.total_cost, 0);
  assert.equal(gen.data.tokens_completion, 7);
  assert.deepEqual(gen.data.provider_responses, []);
  // an alias without a cache says nothing
  const plain = await send(ask('plain'));
  assert.equal(plain.res.status, 200);
  assert.equal(plain.cache, null);
});

test('a stream hit is a proper SSE stream (openai SDK) with the original text, usage when asked', async () => {
  const client = sdk();
  const req = { ...ask('cached'), stream: true, stream_options: { include_usage: true } };
  const calls = await upstreamCalls();
  const read = async () => {
    const { data: stream, response } = await client.chat.completions.create(req).withResponse();
    let text = '', finish = null, usage = null, role = null;
    for await (const c of stream) {
      role ??= c.choices[0]?.delta?.role ?? null;
      text += c.choices[0]?.delta?.content ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
      usage = c.usage ?? usage;
    }
    return { text, finish, usage, role, cache: response.headers.get('x-llmux-cache') };
  };
  const first = await read();
  assert.equal(first.cache, 'miss');
  assert.equal(first.text, mockText(7));
  const second = await read();
  assert.equal(second.cache, 'hit');
  assert.equal(second.text, first.text, 'the replayed text is the streamed text, exactly');
  assert.equal(second.role, 'assistant');
  assert.equal(second.finish, 'stop');
  assert.equal(second.usage.completion_tokens, first.usage.completion_tokens);
  assert.equal(second.usage.cost, 0);
  assert.equal(await upstreamCalls(), calls + 1);

  // the wire: role chunk first, content, finish, usage (asked), then [DONE]; without
  // include_usage no usage chunk
  const raw = await send(req);
  assert.equal(raw.cache, 'hit');
  assert.match(raw.res.headers.get('content-type'), /^text\/event-stream/);
  assert.equal(raw.datas.at(-1), '[DONE]');
  const cs = chunks(raw.datas);
  assert.equal(cs[0].choices[0].delta.role, 'assistant');
  assert.ok(cs.every((c) => c.object === 'chat.completion.chunk' && c.id === cs[0].id));
  assert.equal(cs.at(-2).choices[0].finish_reason, 'stop');
  assert.deepEqual(cs.at(-1).choices, []);
  assert.equal(cs.at(-1).usage.cost, 0);
  const bare = await send({ ...req, stream_options: undefined });
  assert.equal(bare.cache, 'hit', 'stream_options is not part of the key');
  assert.ok(chunks(bare.datas).every((c) => !c.usage), 'no usage chunk unless asked');
  assert.equal(chunksText(bare.datas), first.text);
});

test('a stream miss serves a later non-stream hit, and a non-stream miss a later stream hit', async () => {
  const s = { ...ask('cached'), stream: true, stream_options: { include_usage: true } };
  const calls = await upstreamCalls();
  const streamed = await send(s);
  assert.equal(streamed.cache, 'miss');
  const text = chunksText(streamed.datas);
  const usage = chunks(streamed.datas).at(-1).usage;
  const { stream, stream_options, ...plain } = s;
  const hit = await send(plain);
  assert.equal(hit.cache, 'hit');
  assert.equal(hit.body.object, 'chat.completion');
  assert.equal(hit.body.choices[0].message.role, 'assistant');
  assert.equal(hit.body.choices[0].message.content, text);
  assert.equal(hit.body.choices[0].finish_reason, 'stop');
  assert.equal(hit.body.usage.prompt_tokens, usage.prompt_tokens);
  assert.equal(hit.body.usage.completion_tokens, usage.completion_tokens);
  assert.equal(hit.body.id, chunks(streamed.datas)[0].id);

  const p = ask('cached');
  const missed = await send(p);
  assert.equal(missed.cache, 'miss');
  const replay = await send({ ...p, stream: true });
  assert.equal(replay.cache, 'hit');
  assert.equal(chunksText(replay.datas), missed.body.choices[0].message.content);
  assert.equal(await upstreamCalls(), calls + 2);
});

test('x-llmux-cache: no-store neither reads nor writes; refresh writes the fresh answer', async () => {
  const body = ask('cached');
  const calls = await upstreamCalls();
  const bypass = await send(body, { ...A, 'x-llmux-cache': 'no-store' });
  assert.equal(bypass.cache, 'bypass');
  const miss = await send(body);
  assert.equal(miss.cache, 'miss', 'no-store did not store');
  const bypass2 = await send(body, { ...A, 'x-llmux-cache': 'no-store' });
  assert.equal(bypass2.cache, 'bypass', 'no-store did not read');
  assert.notEqual(bypass2.body.id, miss.body.id);
  const refreshed = await send(body, { ...A, 'x-llmux-cache': 'refresh' });
  assert.equal(refreshed.cache, 'miss');
  assert.notEqual(refreshed.body.id, miss.body.id, 'refresh asked the provider');
  const hit = await send(body);
  assert.equal(hit.cache, 'hit');
  assert.equal(hit.body.id, refreshed.body.id, 'the refreshed answer replaced the old one');
  assert.equal(await upstreamCalls(), calls + 4);
  const bad = await send(body, { ...A, 'x-llmux-cache': 'sometimes' });
  assert.equal(bad.res.status, 400);
  assert.match(bad.body.error.message, /no-store or refresh/);
});

test('errors are never stored: the same failing request reaches the provider again', async () => {
  const body = ask('failing');
  for (let i = 0; i < 2; i++) {
    const calls = await upstreamCalls();
    const r = await send(body);
    assert.equal(r.res.status, 502);
    assert.equal(r.cache, 'miss', 'an error answer of a cached alias says miss');
    assert.equal(await upstreamCalls(), calls + 1);
  }
});

test('truncated and continued streams, and tool calls cut short, are never stored', async () => {
  for (const model of ['truncated', 'continued', 'cut_tool']) {
    const body = { ...ask(model), stream: true };
    for (let i = 0; i < 2; i++) {
      const calls = await upstreamCalls();
      const r = await send(body);
      assert.equal(r.res.status, 200);
      assert.equal(r.cache, 'miss', `${model} #${i}`);
      if (model === 'continued') assert.equal(chunksText(r.datas), mockText(10), 'the client got it all');
      else assert.notEqual(r.datas.at(-1), '[DONE]', 'an honest error end');
      assert.ok(await upstreamCalls() > calls, `${model} #${i} reached the provider`);
    }
  }
});

test('tool-call answers are stored whole and replayed whole, in both shapes', async () => {
  const s = { ...ask('tool'), stream: true };
  const calls = await upstreamCalls();
  const miss = await send(s);
  assert.equal(miss.cache, 'miss');
  // to store the stream with its usage, llmux asked the provider for the usage chunk, which
  // this client did not ask for and does not get
  assert.deepEqual(JSON.parse((await mock.last()).body).stream_options, { include_usage: true });
  assert.ok(chunks(miss.datas).every((c) => !c.usage), 'no usage chunk relayed');
  assert.equal(miss.datas.at(-1), '[DONE]');
  const { stream, ...plain } = s;
  const hit = await send(plain);
  assert.equal(hit.cache, 'hit');
  const msg = hit.body.choices[0].message;
  assert.equal(msg.content, null);
  assert.equal(msg.tool_calls.length, 1);
  assert.equal(msg.tool_calls[0].type, 'function');
  assert.match(msg.tool_calls[0].id, /^call_/);
  assert.equal(msg.tool_calls[0].function.name, 'get_weather');
  assert.equal(msg.tool_calls[0].function.arguments, TOOL_ARGS);
  assert.equal(hit.body.choices[0].finish_reason, 'tool_calls');
  // and as a stream through the SDK's accumulating helper
  const runner = sdk().chat.completions.stream(s);
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.tool_calls[0].function.arguments, TOOL_ARGS);
  assert.equal(final.choices[0].message.tool_calls[0].id, msg.tool_calls[0].id);
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.equal(await upstreamCalls(), calls + 1);
});

test('a translated stream (anthropic) is stored from its own usage and served in both shapes', async () => {
  const s = { ...ask('claude'), stream: true };
  const calls = await upstreamCalls();
  const miss = await send(s);
  assert.equal(miss.cache, 'miss');
  assert.equal(chunksText(miss.datas), mockText(5));
  assert.equal(miss.datas.at(-1), '[DONE]');
  assert.ok(chunks(miss.datas).every((c) => !c.usage), 'no usage chunk: not asked for');
  const { stream, ...plain } = s;
  const hit = await send(plain);
  assert.equal(hit.cache, 'hit');
  assert.equal(hit.body.choices[0].message.content, mockText(5));
  assert.equal(hit.body.choices[0].finish_reason, 'stop');
  assert.equal(hit.body.usage.completion_tokens, 5);
  const replay = await send(s);
  assert.equal(replay.cache, 'hit');
  assert.equal(chunksText(replay.datas), mockText(5));
  assert.equal(await upstreamCalls(), calls + 1);
});

test('one gateway key never reads another key\'s answers', async () => {
  const body = ask('cached');
  const a = await send(body, A);
  assert.equal(a.cache, 'miss');
  const b = await send(body, { authorization: `Bearer ${KEY_B}` });
  assert.equal(b.cache, 'miss', 'team-b does not see team-a\'s answer');
  assert.notEqual(b.body.id, a.body.id);
  assert.equal((await send(body, { authorization: `Bearer ${KEY_B}` })).body.id, b.body.id);
  assert.equal((await send(body, A)).body.id, a.body.id);
});

test('rate limits still apply to hits', async () => {
  const body = ask('cached');
  const L = { authorization: `Bearer ${KEY_LIMITED}` };
  assert.equal((await send(body, L)).cache, 'miss');
  const hit = await send(body, L);
  assert.equal(hit.cache, 'hit');
  assert.equal(hit.res.headers.get('x-ratelimit-limit-requests'), '2');
  const over = await send(body, L);
  assert.equal(over.res.status, 429, 'rpm 2: the third request is refused, hit or not');
});

test('endpoints other than chat completions say bypass and are not stored', async () => {
  const body = { model: 'emb', input: 'cache me' };
  for (let i = 0; i < 2; i++) {
    const calls = await upstreamCalls();
    const res = await post(llmux.base, '/v1/embeddings', body, A);
    assert.equal(res.status, 200);
    await res.json();
    assert.equal(res.headers.get('x-llmux-cache'), 'bypass');
    assert.equal(await upstreamCalls(), calls + 1);
  }
});

test('/metrics counts hits, misses, bypasses and the bytes held (promtool-valid)', async () => {
  const scrape = async () => (await fetch(`${llmux.base}/metrics`, { headers: A })).text();
  const value = (text, line) => Number(text.split('\n').find((l) => l.startsWith(line)).split(' ').at(-1));
  const before = await scrape();
  const body = ask('cached');
  await send(body);
  await send(body);
  await send(body);
  await send(body, { ...A, 'x-llmux-cache': 'no-store' });
  const text = await scrape();
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(lint.status, 0, `promtool check metrics: ${lint.stdout}${lint.stderr}`);
  for (const [result, d] of [['hit', 2], ['miss', 1], ['bypass', 1]]) {
    const l = `llmux_cache_requests_total{result="${result}"}`;
    assert.equal(value(text, l) - value(before, l), d, result);
  }
  assert.ok(value(text, 'llmux_cache_bytes ') > value(before, 'llmux_cache_bytes '));
  assert.ok(value(text, 'llmux_cache_entries ') > 0);
});

async function reload(cfg) {
  const reloaded = () => llmux.stderr().split('\n').filter((l) => l.startsWith('{"msg":"config reloaded"')).length;
  const before = reloaded();
  writeFileSync(llmux.configPath, JSON.stringify({ ...cfg, listen: '127.0.0.1:0' }));
  llmux.proc.kill('SIGHUP');
  await waitFor(() => reloaded() > before, { what: 'a "config reloaded" line' });
}

test('the cache survives a reload; a shorter ttl_s applies to the entries already stored', async () => {
  const body = ask('cached');
  assert.equal((await send(body)).cache, 'miss');
  await reload(config);
  assert.equal((await send(body)).cache, 'hit', 'entries are keyed by content, not by config');
  // stored for an hour; the alias now keeps answers 1 s: that entry expires within a second
  const models = { ...config.models, cached: { ...config.models.cached, cache: { ttl_s: 1 } } };
  await reload({ ...config, models });
  await waitFor(async () => (await send(body)).cache === 'miss', { what: 'the entry expired' });
});
