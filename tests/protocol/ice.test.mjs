// ICE servers: GET /ice-servers and the ice-servers event with STUN URLs and TURN REST credentials; TURN_URLS without TURN_SECRET refuses to start.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import path from 'node:path';
import { BIN_DIR, DEFAULT_ENV, protocolSuite, show } from './harness.mjs';

const STUN = 'stun:stun.example.org:3478';
const TURN = ['turn:turn.example.org:3478?transport=udp', 'turns:turn.example.org:5349'];
const SECRET = 's3cr3t';
const TTL = 600;
const { scenario } = protocolSuite({ env: { ICE_SERVERS: STUN, TURN_URLS: TURN.join(','), TURN_SECRET: SECRET, TURN_TTL_SECS: String(TTL) } });

const nowSecs = () => Math.floor(Date.now() / 1000);

/** Asserts `body` is exactly { iceServers: [stun, turn for userId], ttl } with a valid credential issued in [from, to]. */
function assertIceServers(body, userId, [from, to], what) {
  assert.deepEqual(Object.keys(body ?? {}).sort(), ['iceServers', 'ttl'], `${what}: keys of ${show(body)}`);
  assert.equal(body.ttl, TTL, `${what}: ttl`);
  assert.equal(body.iceServers.length, 2, `${what}: ${show(body)}`);
  const [stun, turn] = body.iceServers;
  assert.deepEqual(stun, { urls: [STUN] }, `${what}: the STUN entry`);
  assert.deepEqual(Object.keys(turn).sort(), ['credential', 'urls', 'username'], `${what}: TURN entry keys`);
  assert.deepEqual(turn.urls, TURN, `${what}: TURN urls`);
  const match = /^(\d+):(.+)$/.exec(turn.username);
  assert.ok(match, `${what}: TURN username "${turn.username}" is <expiry>:<userId>`);
  assert.equal(match[2], userId, `${what}: the user id in the TURN username`);
  const expiry = Number(match[1]);
  assert.ok(expiry >= from + TTL && expiry <= to + TTL + 1, `${what}: expiry ${expiry} is now+${TTL} (issued in [${from}, ${to}])`);
  const expected = createHmac('sha1', SECRET).update(turn.username).digest('base64');
  assert.equal(turn.credential, expected, `${what}: credential is base64 HMAC-SHA1(TURN_SECRET, username)`);
}

scenario('GET /ice-servers?userId= answers STUN and TURN entries with a TURN REST credential for that user', async (sc) => {
  for (const [i, base] of sc.gatewayUrls.entries()) {
    for (const userId of ['alice', sc.id('bob')]) {
      const from = nowSecs();
      const res = await fetch(`${base}/ice-servers?userId=${encodeURIComponent(userId)}`, { signal: AbortSignal.timeout(5_000) });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
      assertIceServers(await res.json(), userId, [from, nowSecs()], `gateway ${i}, ${userId}`);
    }
  }
});

scenario('after user-joined, each socket gets an ice-servers event for its own user id', async (sc) => {
  for (const label of ['a', 'b']) {
    const from = nowSecs();
    const client = await sc.user(label); // a on gatewayUrls[0], b on gatewayUrls[1]
    const event = await client.waitFor('ice-servers');
    assertIceServers(event, client.userId, [from, nowSecs()], `${label}: ice-servers event`);
    assert.equal(client.received('ice-servers').length, 1, `${label}: one ice-servers event`);
  }
});

/** Runs meetup-gateway with `env` (over the defaults) and resolves with { code, stdout, stderr } once it exits. */
function runGateway(env, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(BIN_DIR, 'meetup-gateway'), [], {
      env: { PATH: process.env.PATH, ...DEFAULT_ENV, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = { stdout: '', stderr: '' };
    child.stdout.on('data', (d) => (out.stdout += d));
    child.stderr.on('data', (d) => (out.stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`meetup-gateway still running after ${timeoutMs}ms (it should refuse to start)\n${out.stdout}${out.stderr}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, ...out });
    });
  });
}

scenario('TURN_URLS without TURN_SECRET: the gateway refuses to start (exit 2, one line naming TURN_SECRET)', async () => {
  for (const secret of [undefined, '']) {
    const env = { TURN_URLS: TURN.join(','), ...(secret === undefined ? {} : { TURN_SECRET: secret }) };
    const { code, stderr, stdout } = await runGateway(env);
    const what = `TURN_SECRET ${secret === undefined ? 'unset' : 'empty'}`;
    assert.equal(code, 2, `${what}: exit code; stderr ${show(stderr)}`);
    const lines = stderr.trim().split('\n');
    assert.equal(lines.length, 1, `${what}: one line on stderr: ${show(stderr)}`);
    assert.match(lines[0], /TURN_SECRET/, what);
    assert.doesNotMatch(stdout, /"message":"listening"/, `${what}: it never listened`);
  }
});
