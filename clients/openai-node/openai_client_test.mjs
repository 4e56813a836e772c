// moeserve's OpenAI-compatible API driven by the official `openai` npm client (pinned in
// package-lock.json): completions and chat, streaming and not, errors, auth.
//
//   node openai_client_test.mjs --moeserve build/server/moeserve --model build/models/deco-default
//
// Starts its own moeserve on loopback (ephemeral ports, a bearer token) and stops it with
// SIGTERM at the end, which must exit 0. The default test model is random, its text gibberish:
// the checks are on shapes, token counts and finish reasons. Exit status 0 = all passed.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';

const { values: args } = parseArgs({ options: { moeserve: { type: 'string' }, model: { type: 'string' } } });
assert.ok(args.moeserve && args.model, 'usage: --moeserve BIN --model DIR');

const MODEL = 'deco-default';
const API_KEY = 'sk-moeserve-node-test';

async function startServer() {
  const dir = mkdtempSync(join(tmpdir(), 'moeserve-openai-node-'));
  const httpPortFile = join(dir, 'http-port');
  const grpcPortFile = join(dir, 'grpc-port');
  const settings = [
    `model.path=${args.model}`, 'model.threads=2', 'server.listen=127.0.0.1:0', `server.port_file=${grpcPortFile}`,
    'metrics.listen=', 'http.listen=127.0.0.1:0', `http.port_file=${httpPortFile}`,
    `http.served_model_name=${MODEL}`, 'server.auth.token_env=MOESERVE_NODE_TEST_KEY', 'server.grace_period_s=5',
  ];
  let log = '';
  const proc = spawn(args.moeserve, ['--set', settings.join(',')], {
    env: { ...process.env, MOESERVE_NODE_TEST_KEY: API_KEY },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  proc.on('error', (e) => { log += `spawn failed: ${e}\n`; });
  const deadline = Date.now() + 120_000;
  while (!existsSync(grpcPortFile)) {  // written after the HTTP port file
    if (proc.exitCode !== null) throw new Error(`moeserve exited with ${proc.exitCode} while starting:\n${log}`);
    if (Date.now() > deadline) throw new Error(`moeserve did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const port = Number(readFileSync(httpPortFile, 'utf8').trim());
  const stop = async () => {
    proc.kill('SIGTERM');
    const code = await exited;
    rmSync(dir, { recursive: true, force: true });
    return { code, log };
  };
  return { port, stop };
}

function checkUsage(usage, maxTokens) {
  assert.ok(usage.prompt_tokens > 0);
  assert.ok(usage.completion_tokens >= 1 && usage.completion_tokens <= maxTokens);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
}

function checkFinish(reason, usage, maxTokens) {
  assert.ok(reason === 'length' || reason === 'stop', `finish_reason ${reason}`);
  if (reason === 'length') assert.equal(usage.completion_tokens, maxTokens);
}

const tests = {
  async models(client) {
    const page = await client.models.list();
    assert.deepEqual(page.data.map((m) => m.id), [MODEL]);
  },

  async completion(client) {
    const r = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 6, temperature: 0 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices.length, 1);
    assert.equal(typeof r.choices[0].text, 'string');
    checkUsage(r.usage, 6);
    checkFinish(r.choices[0].finish_reason, r.usage, 6);
    assert.ok(r.moe.layers.length > 0, 'moe.layers');
  },

  async completionTokenIdsWithExpertBudget(client) {
    // The moe extension passes through the client as an extra body field.
    const r = await client.completions.create({
      model: MODEL, prompt: [1, 17, 42, 99], max_tokens: 4, moe: { expert_budget: { min_weight: 1e9 } },
    });
    assert.equal(r.usage.prompt_tokens, 4);
    for (const layer of r.moe.layers) assert.equal(layer.activations, 0, 'every expert dropped');
  },

  async completionStream(client) {
    const stream = await client.completions.create({
      model: MODEL, prompt: 'The sea', max_tokens: 8, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let finish = null;
    let usage = null;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'text_completion');
      if (chunk.usage) usage = chunk.usage;
      if (chunk.choices.length === 0) continue;
      text += chunk.choices[0].text;
      if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
    }
    assert.ok(usage, 'usage chunk');
    checkUsage(usage, 8);
    checkFinish(finish, usage, 8);
    assert.equal(typeof text, 'string');
  },

  async chat(client) {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hello!' }],
      max_completion_tokens: 5, logprobs: true, top_logprobs: 2,
    });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(typeof r.choices[0].message.content, 'string');
    checkUsage(r.usage, 5);
    checkFinish(r.choices[0].finish_reason, r.usage, 5);
    assert.equal(r.choices[0].logprobs.content.length, r.usage.completion_tokens);
    for (const t of r.choices[0].logprobs.content) assert.ok(t.top_logprobs.length <= 2);
  },

  async chatStream(client) {
    const stream = await client.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 6, stream: true,
      stream_options: { include_usage: true },
    });
    let role = null;
    let finish = null;
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      chunks += 1;
      if (chunk.usage) usage = chunk.usage;
      if (chunk.choices.length === 0) continue;
      if (chunk.choices[0].delta.role) role = chunk.choices[0].delta.role;
      if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
    }
    assert.equal(role, 'assistant');
    assert.ok(chunks >= 3);
    checkUsage(usage, 6);
    checkFinish(finish, usage, 6);
  },

  async invalidParameter(client) {
    await assert.rejects(
      client.completions.create({ model: MODEL, prompt: 'x', temperature: -1 }),
      (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'temperature' &&
        /temperature/.test(e.message));
    await assert.rejects(
      client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], n: 3 }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'n');
    await assert.rejects(
      client.completions.create({ model: 'not-this-one', prompt: 'x' }),
      (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
  },

  async wrongApiKey(client, port) {
    const other = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    await assert.rejects(other.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  },
};

const server = await startServer();
let failed = 0;
try {
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${server.port}/v1`, apiKey: API_KEY, maxRetries: 0, timeout: 120_000 });
  for (const [name, test] of Object.entries(tests)) {
    try {
      await test(client, server.port);
      console.log(`ok   ${name}`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name}: ${e.stack || e}`);
    }
  }
} finally {
  const { code, log } = await server.stop();
  if (code !== 0) {
    failed += 1;
    console.log(`FAIL moeserve exited with ${code} after SIGTERM:\n${log}`);
  }
}
console.log(failed ? `${failed} failed` : 'all passed');
process.exit(failed ? 1 : 0);
