// Configured limits: MAX_PAYLOAD_BYTES and MAX_MESSAGE_BYTES set through the environment are honoured.
import assert from 'node:assert/strict';
import { assertAckError, joinCall, protocolSuite, runNormalCall, startCall } from './harness.mjs';

const { scenario } = protocolSuite({ env: { MAX_PAYLOAD_BYTES: '2048', MAX_MESSAGE_BYTES: '65536' } });

const forCall = (callId) => (p) => p?.callId === callId;

scenario('MAX_PAYLOAD_BYTES=2048: a 1.5 KB relay passes, a 3 KB one is payload-too-large on every event', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  const small = { sdp: 's'.repeat(1_500) };
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: small }), { ok: true });
  assert.deepEqual((await b.waitFor('webrtc-offer', forCall(callId))).offer, small);
  const pad = 'p'.repeat(3_000);
  const since = b.mark();
  for (const [event, payload] of [
    ['user-joined', { id: a.userId, username: 'a', pad }],
    ['start-call', { id: sc.id('other'), initiator: {}, participants: [{ id: b.userId }], isVideo: true, pad }],
    ['join-call', { callId, user: {}, pad }],
    ['leave-call', { callId, userId: a.userId, pad }],
    ['webrtc-offer', { callId, targetUserId: b.userId, offer: { sdp: pad } }],
    ['webrtc-answer', { callId, targetUserId: b.userId, answer: pad }],
    ['webrtc-ice-candidate', { callId, targetUserId: b.userId, candidate: [pad] }],
  ]) {
    assertAckError(await a.emitWithAck(event, payload), 'payload-too-large', event);
  }
  // Barrier through the same socket: b got nothing from the rejected events.
  assert.deepEqual(await a.emitWithAck('webrtc-answer', { callId, targetUserId: b.userId, answer: 'done' }), { ok: true });
  await b.waitFor('webrtc-answer', (p) => p?.answer === 'done', { since });
  const caused = b.eventsSince(since).filter((e) => !['users-list', 'user-joined', 'user-left'].includes(e.event));
  assert.deepEqual(caused.map((e) => e.event), ['webrtc-answer']);
});

for (const transport of ['websocket', 'polling']) {
  scenario(`MAX_MESSAGE_BYTES=65536: a 100 KB message over ${transport} closes that connection only`, async (sc) => {
    const a = await sc.user('a');
    const big = await sc.user('big', { transport });
    const since = a.mark();
    big.emit('user-joined', { id: big.userId, username: 'big', pad: 'x'.repeat(100_000) });
    await big.waitFor('$disconnect', () => true, { timeoutMs: 10_000, what: 'the server closing the connection' });
    await a.waitFor('user-left', (id) => id === big.userId, { since });
    assert.ok(a.connected);
    await runNormalCall(sc);
  });
}
