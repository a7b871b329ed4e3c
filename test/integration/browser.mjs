// Headless Chromium (Debian's `chromium`, installed by `deps/install.sh test`) driven through the
// DevTools protocol over a pipe (--remote-debugging-pipe: the browser reads commands on fd 3 and
// writes answers and events on fd 4, each a JSON message ended by a NUL byte). No npm package,
// no port, no WebSocket.
//
//   const b = await startBrowser();
//   const page = await b.open('http://127.0.0.1:8080/ui');
//   await page.eval('document.title');
//   await b.stop();
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export async function startBrowser() {
  const profile = mkdtempSync(join(tmpdir(), 'llmux-chromium-'));
  const args = [
    '--headless', '--remote-debugging-pipe', `--user-data-dir=${profile}`,
    // the sandbox needs user namespaces or the setuid helper, and refuses to run as root (CI
    // runs as root in a container); the browser only ever loads llmux's own page here
    '--no-sandbox',
    '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-extensions', '--mute-audio', '--hide-scrollbars', '--window-size=1400,1000',
    'about:blank',
  ];
  // its own process group, so stop() can end the renderer and helpers with it
  const proc = spawn(CHROMIUM, args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'], detached: true });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr = (stderr + d.toString()).slice(-20000); });
  const exited = new Promise((r) => proc.once('exit', r));
  const toBrowser = proc.stdio[3];
  const fromBrowser = proc.stdio[4];
  toBrowser.on('error', () => {}); // a dead browser: the pending calls fail below

  let nextId = 0;
  const pending = new Map();
  const listeners = [];
  let inbox = '';
  fromBrowser.setEncoding('utf8');
  fromBrowser.on('data', (d) => {
    inbox += d;
    let end;
    while ((end = inbox.indexOf('\0')) >= 0) {
      const msg = JSON.parse(inbox.slice(0, end));
      inbox = inbox.slice(end + 1);
      if (msg.id !== undefined && pending.has(msg.id)) {
        const { resolve, reject, method } = pending.get(msg.id);
        pending.delete(msg.id);
        if (msg.error) reject(new Error(`${method}: ${msg.error.message}`));
        else resolve(msg.result);
      } else if (msg.method) {
        for (const l of listeners) l(msg);
      }
    }
  });
  exited.then((code) => {
    for (const { reject, method } of pending.values())
      reject(new Error(`chromium exited (${code}) during ${method}:\n${stderr.slice(-3000)}`));
    pending.clear();
  });

  // One protocol call; sessionId addresses a page (attached with flatten: true).
  function send(method, params = {}, sessionId) {
    const id = ++nextId;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject, method });
      toBrowser.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
    });
  }

  const self = {
    proc,
    stderr: () => stderr,
    // Opens url in a new tab and waits for its load event. The page object collects its uncaught exceptions and console
    // and log entries from the start (page.errors, page.logs).
    async open(url) {
      const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
      const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
      const page = {
        errors: [],
        logs: [],
        send: (method, params) => send(method, params, sessionId),
        // The value of a JS expression in the page (promises awaited); throws on an exception.
        async eval(expression) {
          const r = await page.send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
          if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
          return r.result.value;
        },
        // Types text into the focused element, as a keyboard would.
        type: (text) => page.send('Input.insertText', { text }),
        // A PNG of the whole page (not only the window).
        async screenshot() {
          const { cssContentSize: s } = await page.send('Page.getLayoutMetrics');
          const { data } = await page.send('Page.captureScreenshot', {
            format: 'png', captureBeyondViewport: true,
            clip: { x: 0, y: 0, width: Math.ceil(s.width), height: Math.ceil(s.height), scale: 1 },
          });
          return Buffer.from(data, 'base64');
        },
      };
      listeners.push((msg) => {
        if (msg.sessionId !== sessionId) return;
        if (msg.method === 'Runtime.exceptionThrown') page.errors.push(msg.params.exceptionDetails.exception?.description ?? msg.params.exceptionDetails.text);
        if (msg.method === 'Log.entryAdded') page.logs.push(msg.params.entry.text);
        if (msg.method === 'Runtime.consoleAPICalled') page.logs.push(msg.params.args.map((a) => a.value ?? a.description).join(' '));
      });
      for (const d of ['Page', 'Runtime', 'Log']) await page.send(`${d}.enable`);
      const loaded = new Promise((resolve) => listeners.push((msg) => {
        if (msg.sessionId === sessionId && msg.method === 'Page.loadEventFired') resolve();
      }));
      const nav = await page.send('Page.navigate', { url });
      if (nav.errorText) throw new Error(`navigating to ${url}: ${nav.errorText}`);
      await loaded;
      return page;
    },
    // Closes the browser (Browser.close, then SIGKILL to its process group after 10 s).
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        send('Browser.close').catch(() => {});
        let timer;
        const hung = await Promise.race([exited.then(() => false),
          new Promise((r) => { timer = setTimeout(() => r(true), 10000); })]);
        clearTimeout(timer);
        if (hung) {
          try { process.kill(-proc.pid, 'SIGKILL'); } catch { /* gone */ }
          await exited;
        }
      }
      rmSync(profile, { recursive: true, force: true });
    },
  };
  // the browser answers once it is up (or exits: the call fails with its stderr)
  await send('Browser.getVersion');
  return self;
}
