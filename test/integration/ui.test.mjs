// The dashboard (GET /ui) in headless Chromium: served without a key, it asks for the gateway key,
// says so clearly when a key is refused, then shows per alias the deployments of the config with
// their prices and the numbers measured from the traffic sent (requests, errors, uptime, TTFT,
// tokens/s), the totals from /metrics, and the failed attempts with why; it keeps refreshing.
// Names from the config holding HTML are shown as text, and the page's Content-Security-Policy
// lets its own script and style run (a wrong hash would leave the page blank). A screenshot goes
// to build-test/test-output/ui.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { startMock, startLlmux, provider, post, chat, readSse, waitFor } from './lib.mjs';
import { startBrowser } from './browser.mjs';

const KEY = 'sk-llmux-ui-test-key';
const auth = { authorization: `Bearer ${KEY}` };
// an upstream model name and an alias that a careless page would turn into markup
const FLAKY_MODEL = 'flaky<img src=x onerror="window.pwned=1">';
const CHEAP = 'cheap<b>bold</b>';

let good, flaky, llmux, browser;

before(async () => {
  good = await startMock({ script: 'tokens=20&ttft=30&tps=400' });
  flaky = await startMock({ script: 'fail_every=2&status=503' });
  llmux = await startLlmux({
    keys: [KEY],
    // never eject: the flaky deployment keeps getting (and failing) every other request
    health: { failure_threshold: 1000, error_rate_percent: 100 },
    providers: { good: provider(good.baseUrl), flaky: provider(flaky.baseUrl) },
    models: {
      demo: {
        deployments: [
          { provider: 'flaky', model: FLAKY_MODEL, price: { input: 0.5, output: 1.5 }, context_window: 32000 },
          { provider: 'good', model: 'good-1', price: { input: 0.15, output: 0.6 }, context_window: 128000 },
        ],
      },
      [CHEAP]: { deployments: [{ provider: 'good', model: 'cheap-1', price: { input: 0.1, output: 0.2 } }] },
    },
  });
});

after(async () => {
  await browser?.stop();
  await llmux?.stop();
  await good?.stop();
  await flaky?.stop();
});

async function demo(n) {
  for (let i = 0; i < n; i++) {
    const r = await post(llmux.base, '/v1/chat/completions', chat('demo'), auth);
    assert.equal(r.status, 200, 'the flaky deployment fails over to the good one');
    await r.text();
  }
}

// What the page shows: per alias heading, its table as row objects keyed by column title; the
// failed attempts likewise; the summary cards as "label: value"; the key form's state.
const READ_PAGE = `(() => {
  const rows = (t) => {
    if (!t || t.tagName !== 'TABLE') return null;
    const [head, ...body] = [...t.rows];
    const names = [...head.cells].map((c) => c.textContent);
    return body.map((r) => Object.fromEntries([...r.cells].map((c, i) => [names[i], c.textContent])));
  };
  const models = {};
  for (const h of document.querySelectorAll('#models h2'))
    models[h.firstChild.textContent] = { heading: h.textContent, rows: rows(h.nextElementSibling) };
  return {
    keyForm: !document.getElementById('keyform').hidden,
    keyMessage: document.getElementById('keymsg').textContent,
    status: document.getElementById('status').textContent,
    main: !document.getElementById('main').hidden,
    models,
    failed: rows(document.querySelector('#failed table')) || [],
    cards: [...document.querySelectorAll('.card')].map((c) => c.lastChild.textContent + ': ' + c.firstChild.textContent),
    markup: document.querySelectorAll('main img, main script, main h2 b, main table b').length,
    pwned: window.pwned === 1,
  };
})()`;

test('GET /ui: the page itself needs no key; HTML, no-cache and a CSP of hashes', async () => {
  const res = await fetch(`${llmux.base}/ui`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
  assert.equal(res.headers.get('cache-control'), 'no-cache');
  const csp = res.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/]{43}='(;|$)/, 'only the page\'s own script');
  assert.match(csp, /connect-src 'self'/);
  const html = await res.text();
  assert.match(html, /^<!DOCTYPE html>/);
  assert.doesNotMatch(html, /https?:\/\//, 'nothing loaded from elsewhere: works offline');
  const head = await fetch(`${llmux.base}/ui`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(Number(head.headers.get('content-length')), Buffer.byteLength(html));
  assert.equal((await head.arrayBuffer()).byteLength, 0);
  // the data it shows stays behind the key
  for (const path of ['/v1/models', '/metrics', '/v1/generations?failed=1'])
    assert.equal((await fetch(llmux.base + path)).status, 401, path);
});

test('the dashboard in Chromium: key, prices, measured numbers, failed attempts', async (t) => {
  // traffic first: 8 requests to demo (the flaky deployment fails every other one, 4 fail over
  // to good), 4 streams through the cheap alias (measured TTFT and tokens/s)
  await demo(8);
  for (let i = 0; i < 4; i++) {
    const r = await post(llmux.base, '/v1/chat/completions', chat(CHEAP, { stream: true, stream_options: { include_usage: true } }), auth);
    assert.equal(r.status, 200);
    await readSse(r);
  }

  browser = await startBrowser();
  const page = await browser.open(`${llmux.base}/ui`);
  const read = () => page.eval(READ_PAGE);
  const until = (pred, what) => waitFor(async () => { const s = await read(); return pred(s) && s; },
    { timeout: 30000, every: 100, what: `the page to show ${what}` });

  // no key yet: the page asks for one
  await until((s) => s.keyForm, 'the key form');
  await page.eval(`document.getElementById('key').focus()`);
  await page.type('not-the-key');
  await page.eval(`document.querySelector('#keyform button').click()`);
  let s = await until((s) => s.keyForm && /refused/.test(s.keyMessage), 'that the key was refused');
  assert.match(s.keyMessage, /Missing or invalid gateway key/, 'llmux\'s own reason');
  assert.equal(s.main, false);

  await page.eval(`document.getElementById('key').focus()`);
  await page.type(KEY);
  await page.eval(`document.querySelector('#keyform button').click()`);
  s = await until((s) => s.main && s.models.demo?.rows?.length === 2 && s.failed.length === 4,
    'the demo table and 4 failed attempts');
  assert.equal(await page.eval(`sessionStorage.getItem('llmux.key')`), KEY, 'kept for the session');

  // the cost llmux counted for good in demo, as /metrics says
  const metrics = await (await fetch(`${llmux.base}/metrics`, { headers: auth })).text();
  const goodCost = Number(/^llmux_cost_usd_total\{model="demo",provider="good",upstream_model="good-1"\} (\S+)$/m.exec(metrics)[1]);
  assert.ok(goodCost > 0);
  const [f, g] = s.models.demo.rows;
  const cells = (row, keys) => Object.fromEntries(keys.map((k) => [k, row[k]]));
  const shown = ['Provider', 'Upstream model', '$/M input', '$/M output', 'Context', 'Requests',
    'Errors', 'Uptime 1d', 'State'];
  assert.deepEqual(cells(f, shown), {
    Provider: 'flaky', 'Upstream model': FLAKY_MODEL /* as text, exactly */, '$/M input': '$0.5',
    '$/M output': '$1.5', Context: '32,000', Requests: '8', Errors: '4', 'Uptime 1d': '50.0%',
    State: 'healthy',
  });
  assert.deepEqual(cells(g, [...shown, 'Cost']), {
    Provider: 'good', 'Upstream model': 'good-1', '$/M input': '$0.15', '$/M output': '$0.6',
    Context: '128,000', Requests: '4', Errors: '0', 'Uptime 1d': '100.0%', State: 'healthy',
    Cost: `$${goodCost.toFixed(6)}`,
  });
  assert.match(f['TTFT p50'], /^[\d.]+ ms$/);
  // mockllm waits 30 ms before the first token
  assert.ok(parseFloat(g['TTFT p50']) >= 30, `TTFT p50 ${g['TTFT p50']}`);

  const [c] = s.models[CHEAP].rows;
  assert.equal(c['$/M input'], '$0.1');
  assert.equal(c.Requests, '4');
  assert.ok(Number(c['tokens/s']) > 0, `tokens/s ${c['tokens/s']}`);
  assert.match(s.models[CHEAP].heading, /4 requests/);

  assert.ok(s.cards.includes('requests: 12'), s.cards.join(' | '));
  assert.ok(s.cards.some((x) => /^fallbacks\/s; 4 in all/.test(x)), s.cards.join(' | '));
  assert.ok(s.cards.some((x) => /^cost so far: \$0\.000\d+$/.test(x)), s.cards.join(' | '));

  for (const a of s.failed) {
    assert.equal(a.Provider, 'flaky');
    assert.equal(a['Upstream model'], FLAKY_MODEL);
    assert.equal(a.Model, 'demo');
    assert.equal(a.Status, '503');
    assert.match(a.Why, /mockllm scripted status 503/);
    assert.equal(a.Answer, '200', 'the client got its answer from the next deployment');
  }
  assert.equal(s.markup, 0, 'no element made from a name');
  assert.equal(s.pwned, false);
  assert.deepEqual(page.errors, [], 'no exception in the page');
  assert.deepEqual(page.logs.filter((l) => /Content.Security.Policy/i.test(l)), [], 'nothing refused by the CSP');

  // it refreshes by itself: more traffic shows up without a reload
  await demo(2);
  s = await until((s) => s.models.demo?.rows?.[0].Requests === '10', 'the new requests');
  assert.equal(s.models.demo.rows[0].Errors, '5');
  assert.equal(s.failed.length, 5);

  const dir = process.env.LLMUX_TEST_OUTPUT || join(tmpdir(), 'llmux-test-output');
  mkdirSync(dir, { recursive: true });
  const png = join(dir, 'ui.png');
  writeFileSync(png, await page.screenshot());
  t.diagnostic(`screenshot: ${png}`);
});

test('without gateway keys the page shows the tables at once', async () => {
  const open = await startLlmux({
    providers: { good: provider(good.baseUrl) },
    models: { solo: { deployments: [{ provider: 'good', model: 'solo-1', price: { input: 1, output: 2 } }] } },
  });
  try {
    browser ??= await startBrowser();
    const page = await browser.open(`${open.base}/ui`);
    const s = await waitFor(async () => { const v = await page.eval(READ_PAGE); return v.main && v; },
      { timeout: 30000, every: 100, what: 'the tables' });
    assert.equal(s.keyForm, false, 'no key asked for');
    assert.equal(s.models.solo.rows[0]['$/M output'], '$2');
    assert.equal(s.models.solo.rows[0].Requests, '0');
    assert.equal(s.failed.length, 0);
  } finally {
    await open.stop();
  }
});
