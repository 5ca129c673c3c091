// Transports: HTTP long-polling only, polling that upgrades to websocket, and both mixed in one call.
import assert from 'node:assert/strict';
import { assertAckError, assertCallGone, callUser, joinCall, leaveCall, protocolSuite, startCall } from './harness.mjs';

const { scenario } = protocolSuite();

const forCall = (callId) => (p) => p?.callId === callId;

/** A full call between a and b: invite, join, offer/answer/candidates both ways, leave, disconnect. */
async function fullCall(sc, a, b, tag = 'call') {
  const callId = sc.id(tag);
  await startCall(a, callId, [b]);
  assert.deepEqual(await b.waitFor('incoming-call', forCall(callId)), { callId, initiator: callUser(a), isVideo: true });
  await a.waitFor('call-started', forCall(callId));
  assert.deepEqual(await joinCall(b, callId), [callUser(a), callUser(b)]);
  await a.waitFor('user-joined-call', forCall(callId));
  const offer = { type: 'offer', sdp: 'v=0\r\n'.repeat(400) };
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer }), { ok: true });
  for (let i = 0; i < 20; i++) a.emit('webrtc-ice-candidate', { callId, targetUserId: b.userId, candidate: { seq: i } });
  assert.deepEqual(await b.emitWithAck('webrtc-answer', { callId, targetUserId: a.userId, answer: { type: 'answer' } }), { ok: true });
  assert.deepEqual(await b.waitFor('webrtc-offer', forCall(callId)), { callId, fromUserId: a.userId, offer });
  await b.waitFor('webrtc-ice-candidate', (p) => p?.candidate?.seq === 19);
  assert.deepEqual(b.received('webrtc-ice-candidate').map((p) => p.candidate.seq), [...Array(20).keys()]);
  assert.deepEqual(await a.waitFor('webrtc-answer', forCall(callId)), { callId, fromUserId: b.userId, answer: { type: 'answer' } });
  await leaveCall(b, callId);
  await b.waitFor('call-left', forCall(callId));
  await a.waitFor('user-left-call', (p) => p?.callId === callId && p.userId === b.userId);
  const since = a.mark();
  b.close();
  await a.waitFor('user-left', (id) => id === b.userId, { since });
  await a.waitFor('users-list', (l) => Array.isArray(l) && !l.some((u) => u.id === b.userId), { since });
  await leaveCall(a, callId);
  await assertCallGone(a, callId);
}

function transportOf(client) {
  return client.socket.io.engine.transport.name;
}

scenario('a whole call over HTTP long-polling only', async (sc) => {
  const a = await sc.user('a', { transport: 'polling' });
  const b = await sc.user('b', { transport: 'polling' });
  assert.equal(transportOf(a), 'polling');
  assert.equal(transportOf(b), 'polling');
  await a.waitFor('users-list', (l) => Array.isArray(l) && l.some((u) => u.id === b.userId));
  await fullCall(sc, a, b);
  assert.equal(transportOf(a), 'polling');
});

scenario('the socket.io-client default (polling, then upgrade to websocket) works across the upgrade', async (sc) => {
  const a = await sc.user('a', { transport: 'upgrade' });
  const b = await sc.user('b', { transport: 'upgrade' });
  for (const client of [a, b]) {
    const engine = client.socket.io.engine;
    if (engine.transport.name !== 'websocket') {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${client.label}: no upgrade to websocket within 5000ms`)), 5_000);
        engine.once('upgrade', () => {
          clearTimeout(timer);
          resolve();
        });
        engine.once('upgradeError', (err) => {
          clearTimeout(timer);
          reject(new Error(`${client.label}: upgrade failed: ${err.message}`));
        });
      });
    }
    assert.equal(transportOf(client), 'websocket');
  }
  await fullCall(sc, a, b);
});

scenario('a polling user and a websocket user share a call', async (sc) => {
  const a = await sc.user('a', { transport: 'polling' });
  const b = await sc.user('b', { transport: 'websocket' });
  await fullCall(sc, a, b, 'call-ab');
  const c = await sc.user('c', { transport: 'websocket' });
  const d = await sc.user('d', { transport: 'polling' });
  await fullCall(sc, c, d, 'call-cd');
});

scenario('over polling, an oversized payload gets payload-too-large and the connection stays usable', async (sc) => {
  const a = await sc.user('a', { transport: 'polling' });
  const b = await sc.user('b', { transport: 'polling' });
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  const ack = await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: 'x'.repeat(200_000) });
  assertAckError(ack, 'payload-too-large');
  assert.ok(a.connected);
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: 'small' }), { ok: true });
  assert.deepEqual(await b.waitFor('webrtc-offer', forCall(callId)), { callId, fromUserId: a.userId, offer: 'small' });
  assert.equal(b.received('webrtc-offer').length, 1);
});

// Engine.IO v3 (socket.io-client 2.x) is a nice-to-have in PROTOCOL.md; the gateway supports it.
scenario('an Engine.IO v3 (socket.io-client 2.x) polling handshake is answered', async (sc) => {
  const res = await sc.http('/socket.io/?EIO=3&transport=polling');
  assert.equal(res.status, 200);
  const body = await res.text();
  // v3 frames packets as <length>:<packet>; the open packet is 0{...}.
  assert.match(body, /^\d+:0\{/, `EIO=3 handshake body: ${body.slice(0, 120)}`);
});
