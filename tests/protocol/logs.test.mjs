// Logs never carry SDP / relay payloads or JWTs, at RUST_LOG=info and at RUST_LOG=debug.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { claimsFor, nowSecs, signJwt } from './jwt.mjs';
import { assertAckError, joinCall, protocolSuite, Scenario, startCall, startSystem } from './harness.mjs';

const SECRET = 'logs-suite-secret';
const ENV = { AUTH_JWT_SECRET: SECRET };
const { scenario, system } = protocolSuite({ env: { ...ENV, RUST_LOG: 'debug' } });

const token = (sub, claims) => signJwt(claims ?? claimsFor(sub), { alg: 'HS256', key: SECRET });

/**
 * Authenticated users (token in auth and in the query), a refused token, and relays whose payloads
 * carry `marker`, accepted and refused. Returns the secrets that must not be logged.
 */
async function exercise(sc, marker) {
  const tokens = [token(sc.id('a')), token(sc.id('b')), token(sc.id('late'), { sub: sc.id('late'), exp: nowSecs(-3600) })];
  const a = await sc.user('a', { id: sc.id('a'), auth: { token: tokens[0] } });
  const b = await sc.user('b', { id: sc.id('b'), query: { token: tokens[1] } });
  await assert.rejects(sc.connect('late', { auth: { token: tokens[2] } }), /token expired/);
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  const sdp = `v=0\r\no=- ${marker} 2 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 ${marker}\r\n`;
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: { type: 'offer', sdp } }), { ok: true });
  assert.deepEqual(await b.emitWithAck('webrtc-answer', { callId, targetUserId: a.userId, answer: { type: 'answer', sdp } }), { ok: true });
  const candidate = { candidate: `candidate:${marker} 1 udp 2122260223 10.0.0.1 54321 typ host`, sdpMid: '0' };
  assert.deepEqual(await a.emitWithAck('webrtc-ice-candidate', { callId, targetUserId: b.userId, candidate }), { ok: true });
  await b.waitFor('webrtc-ice-candidate', (p) => p?.callId === callId);
  await a.waitFor('webrtc-answer', (p) => p?.callId === callId);
  // Refused relays: not in the call, and a malformed one.
  assertAckError(await a.emitWithAck('webrtc-offer', { callId: sc.id('nocall'), targetUserId: b.userId, offer: { sdp } }), 'not-in-call');
  assertAckError(await a.emitWithAck('webrtc-offer', { targetUserId: b.userId, offer: { sdp } }), 'invalid-payload');
  const secrets = { 'SDP/candidate marker': marker };
  for (const [i, what] of ['token in auth', 'token in query', 'refused token'].entries()) {
    secrets[what] = tokens[i];
    secrets[`signature of the ${what}`] = tokens[i].split('.')[2];
  }
  return { a, b, secrets };
}

/** Asserts no line carries a secret; on failure lists "<log target>: <what leaked>" pairs and a few lines. */
function assertNoLeak(lines, secrets, where) {
  const leaks = [];
  for (const line of lines) {
    for (const [what, secret] of Object.entries(secrets)) {
      if (line.text.includes(secret)) leaks.push({ line, found: `${line.process} ${line.json?.target ?? line.stream}: ${what}` });
    }
  }
  const found = [...new Set(leaks.map((l) => l.found))].sort();
  const examples = leaks.slice(0, 3).map((l) => l.line.text.slice(0, 240)).join('\n  ');
  assert.deepEqual(found, [], `${where}: ${leaks.length} log lines carry an SDP marker or a token, e.g.\n  ${examples}`);
}

const linesOf = (sys, marks = []) => sys.processes.flatMap((p, i) => p.lines.slice(marks[i] ?? 0).map((l) => ({ ...l, process: p.name })));

scenario('RUST_LOG=debug: no SDP, candidate or token in any process output', async (sc) => {
  const marks = system().mark();
  const marker = `sdp-marker-${randomBytes(6).toString('hex')}`;
  const { a, b, secrets } = await exercise(sc, marker);
  // Log barrier: each socket's cleanup is logged (at debug) after everything it did.
  sc.closeAll();
  for (const client of [a, b]) {
    await Promise.any(
      system().processes.map((p) =>
        p.until(() => p.lines.slice(marks[system().processes.indexOf(p)]).some((l) => l.text.includes('socket cleaned up') && l.text.includes(client.userId)), 5_000, `cleanup of ${client.userId} logged`),
      ),
    );
  }
  assertNoLeak(linesOf(system(), marks), secrets, 'RUST_LOG=debug');
});

scenario('RUST_LOG=info (the default): no SDP, candidate or token in any process output', async () => {
  const sys = await startSystem({ env: { ...ENV, RUST_LOG: 'info' } });
  const sc = new Scenario(sys, 'info');
  let secrets;
  try {
    ({ secrets } = await exercise(sc, `sdp-marker-${randomBytes(6).toString('hex')}`));
  } finally {
    sc.closeAll();
    await sys.stop(); // every line is collected once the processes have exited
  }
  assertNoLeak(linesOf(sys), secrets, 'RUST_LOG=info');
});
