// The shipped deployment files, checked without a container runtime: the image's default config,
// the compose demo's config and the Kubernetes sidecar's ConfigMap are valid for `llmux -t`;
// conf/compose.yaml, conf/compose-redis.yaml and conf/sidecar.yaml parse as YAML and have the parts a user relies on.
// (test/integration/container.test.mjs runs the image and the compose file.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runLlmux, writeConfig } from './lib.mjs';

const { default: YAML } = await import(
  new URL('../node/node_modules/yaml/dist/index.js', import.meta.url).href);
const conf = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'conf');
const read = (name) => readFileSync(join(conf, name), 'utf8');

function assertValid(path, env = {}) {
  const r = runLlmux(['-t', '-c', path], { env });
  assert.equal(r.status, 0, `${path}: ${r.stderr}`);
}

test('the image\'s default config is valid, listens on 0.0.0.0:8080 and keeps conf/llmux.json\'s presets', () => {
  assertValid(join(conf, 'image.json'));
  const image = JSON.parse(read('image.json'));
  const shipped = JSON.parse(read('llmux.json'));
  assert.equal(image.listen, '0.0.0.0:8080');
  // the same hosted providers and aliases as conf/llmux.json (no loopback demo or local models,
  // which mean nothing inside a container), so the two cannot drift apart
  for (const [name, p] of Object.entries(image.providers)) {
    assert.deepEqual(p, shipped.providers[name], `provider ${name}`);
    assert.ok(p.api_key_env, `provider ${name} has a key`);
  }
  for (const [name, m] of Object.entries(image.models)) assert.deepEqual(m, shipped.models[name], `model ${name}`);
  const hosted = Object.keys(shipped.providers).filter((n) => shipped.providers[n].api_key_env);
  assert.deepEqual(Object.keys(image.providers).sort(), hosted.sort());
});

test('conf/compose.yaml: llmux with its config mounted and keys from an env_file, two mockllm providers', () => {
  assertValid(join(conf, 'compose', 'llmux.json'));
  const c = YAML.parse(read('compose.yaml'));
  const { llmux, 'mock-healthy': healthy, 'mock-flaky': flaky } = c.services;
  assert.ok(llmux.volumes.some((v) => v.startsWith('./compose/llmux.json:/etc/llmux/llmux.json')));
  assert.deepEqual(llmux.env_file, ['./compose/providers.env']);
  readFileSync(join(conf, 'compose', 'providers.env')); // the env_file exists: compose needs it
  assert.ok(llmux.ports.some((p) => p.endsWith(':8080')));
  // both mocks run mockllm from the llmux image, on the ports the config names
  const cfg = JSON.parse(read('compose/llmux.json'));
  for (const [svc, prov, port] of [[healthy, 'sim-healthy', 9101], [flaky, 'sim-flaky', 9102]]) {
    assert.equal(svc.image, llmux.image);
    assert.equal(svc.command[0], 'mockllm');
    assert.ok(svc.command.includes(`0.0.0.0:${port}`));
    assert.match(cfg.providers[prov].base_url, new RegExp(`:${port}/v1$`));
  }
  assert.match(flaky.command.join(' '), /fail_every=2/);
  assert.deepEqual(cfg.models.demo.deployments.map((d) => d.provider), ['sim-flaky', 'sim-healthy']);
});

test('conf/compose-redis.yaml: two llmux instances with one config naming the redis service', () => {
  assertValid(join(conf, 'compose', 'llmux-redis.json'));
  const c = YAML.parse(read('compose-redis.yaml'));
  const { redis, 'llmux-a': a, 'llmux-b': b } = c.services;
  assert.match(redis.image, /redis/);
  const cfg = JSON.parse(read('compose/llmux-redis.json'));
  assert.equal(cfg.state.redis, 'redis://redis:6379/0', 'the config names the compose service');
  for (const svc of [a, b]) {
    assert.ok(svc.volumes.some((v) => v.startsWith('./compose/llmux-redis.json:/etc/llmux/llmux.json')));
    assert.ok(svc.depends_on.includes('redis'));
  }
  assert.notEqual(a.ports[0], b.ports[0], 'each instance on its own port');
});

test('conf/sidecar.yaml: a Pod with llmux as a native sidecar, probes on /healthz, ConfigMap and Secret', () => {
  const docs = YAML.parseAllDocuments(read('sidecar.yaml')).map((d) => {
    assert.deepEqual(d.errors, []);
    return d.toJS();
  });
  const byKind = Object.fromEntries(docs.map((d) => [d.kind, d]));
  assert.deepEqual(Object.keys(byKind).sort(), ['ConfigMap', 'Pod', 'Secret']);
  const pod = byKind.Pod.spec;
  const [sidecar] = pod.initContainers;
  assert.equal(sidecar.restartPolicy, 'Always'); // a native sidecar (Kubernetes >= 1.29)
  assert.match(sidecar.image, /^llmux:/);
  // each probe runs llmux --healthcheck: GET /healthz on the listen address, 200 or fail
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe'])
    assert.deepEqual(sidecar[probe].exec.command, ['/usr/local/bin/llmux', '--healthcheck'], probe);
  // the config comes from the ConfigMap, mounted where llmux looks without -c
  const mount = sidecar.volumeMounts.find((m) => m.mountPath === '/etc/llmux');
  const vol = pod.volumes.find((v) => v.name === mount.name);
  assert.equal(vol.configMap.name, byKind.ConfigMap.metadata.name);
  const path = writeConfig(byKind.ConfigMap.data['llmux.json']);
  assertValid(path);
  // the keys come from the Secret, and every api_key_env of the config is in it
  assert.equal(sidecar.envFrom[0].secretRef.name, byKind.Secret.metadata.name);
  const cfg = JSON.parse(byKind.ConfigMap.data['llmux.json']);
  for (const p of Object.values(cfg.providers))
    assert.ok(p.api_key_env in byKind.Secret.stringData, p.api_key_env);
  // the app reaches llmux on the pod's loopback, where the config listens
  const [app] = pod.containers;
  const base = app.env.find((e) => e.name === 'OPENAI_BASE_URL').value;
  assert.equal(base, `http://${cfg.listen}/v1`);
});
