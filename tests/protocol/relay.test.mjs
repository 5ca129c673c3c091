// WebRTC relays: offer/answer/ice shapes, opaque payloads, who may relay to whom, offline targets, ordering, routing to sockets.
import assert from 'node:assert/strict';
import { assertAckError, joinCall, leaveCall, protocolSuite, runNormalCall, startCall } from './harness.mjs';

const { scenario } = protocolSuite();

const KINDS = [
  ['webrtc-offer', 'offer'],
  ['webrtc-answer', 'answer'],
  ['webrtc-ice-candidate', 'candidate'],
];

const forCall = (callId) => (p) => p?.callId === callId;

/** a and b in call `callId` (a started it, b joined). */
async function twoInCall(sc, tag = 'call') {
  const a = await sc.user(`${tag}-a`);
  const b = await sc.user(`${tag}-b`);
  const callId = sc.id(tag);
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  return { a, b, callId };
}

scenario('offer, answer and ice-candidate reach the target as {callId, fromUserId, ...} with fromUserId from registration', async (sc) => {
  const { a, b, callId } = await twoInCall(sc);
  for (const [event, key] of KINDS) {
    const value = { type: key, sdp: `v=0 ${event}` };
    const ack = await a.emitWithAck(event, { callId, targetUserId: b.userId, [key]: value, fromUserId: 'spoofed' });
    assert.deepEqual(ack, { ok: true }, `${event} ack`);
    const got = await b.waitFor(event, forCall(callId));
    assert.deepEqual(got, { callId, fromUserId: a.userId, [key]: value }, `${event} as received`);
    // And back the other way.
    assert.deepEqual(await b.emitWithAck(event, { callId, targetUserId: a.userId, [key]: value }), { ok: true });
    assert.deepEqual(await a.waitFor(event, forCall(callId)), { callId, fromUserId: b.userId, [key]: value });
  }
  // The sender does not get its own relays.
  for (const [event] of KINDS) assert.equal(a.received(event, (p) => p?.fromUserId === a.userId).length, 0);
});

const OPAQUE = {
  'nested object': { type: 'offer', sdp: 'v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\n', meta: { a: [1, { b: [null, true] }], e: {} } },
  array: [1, 'two', { three: 3 }, [4, [5]], null, false],
  string: 'candidate:842163049 1 udp 1677729535 1.2.3.4 46154 typ srflx',
  'empty string': '',
  number: 42,
  zero: 0,
  'negative float': -1.5e-7,
  'large integer': 9007199254740991,
  true: true,
  false: false,
  null: null,
  'empty object': {},
  'empty array': [],
  unicode: { text: 'Zoë 🎥 日本語 \u0000 \u2028 "quotes" \\backslash' },
  'deep nesting': JSON.parse(`${'{"d":'.repeat(40)}"bottom"${'}'.repeat(40)}`),
  'sdp-sized (20 KB)': { type: 'offer', sdp: 'a=candidate:x\r\n'.repeat(1_400) },
  'keys that look like fields': { callId: 'other', fromUserId: 'x', targetUserId: 'y', __proto__x: 1 },
};

scenario('relayed payloads are opaque: every JSON shape arrives deep-equal, for all three relays', async (sc) => {
  const { a, b, callId } = await twoInCall(sc);
  let n = 0;
  for (const [event, key] of KINDS) {
    for (const [name, value] of Object.entries(OPAQUE)) {
      n += 1;
      const tag = `${event}#${n}`;
      const since = b.mark();
      const ack = await a.emitWithAck(event, { callId, targetUserId: b.userId, [key]: value, tag });
      assert.deepEqual(ack, { ok: true }, `${event} / ${name}: ack`);
      const got = await b.waitFor(event, forCall(callId), { since, what: `${event} / ${name}` });
      assert.deepEqual(got, { callId, fromUserId: a.userId, [key]: value }, `${event} / ${name}: payload changed on the way`);
    }
  }
});

scenario('relays are allowed between an initiator and invitees that have not joined yet', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await b.waitFor('incoming-call', forCall(callId));
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: { o: 1 } }), { ok: true });
  assert.deepEqual(await b.waitFor('webrtc-offer', forCall(callId)), { callId, fromUserId: a.userId, offer: { o: 1 } });
  assert.deepEqual(await b.emitWithAck('webrtc-answer', { callId, targetUserId: a.userId, answer: { a: 1 } }), { ok: true });
  assert.deepEqual(await a.waitFor('webrtc-answer', forCall(callId)), { callId, fromUserId: b.userId, answer: { a: 1 } });
});

scenario('a user invited while offline may exchange relays once online', async (sc) => {
  const a = await sc.user('a');
  const lateId = sc.id('late');
  const callId = sc.id('call');
  await startCall(a, callId, [lateId]);
  const late = await sc.user('late', { id: lateId });
  assert.deepEqual(await late.emitWithAck('webrtc-offer', { callId, targetUserId: a.userId, offer: 'hi' }), { ok: true });
  assert.deepEqual(await a.waitFor('webrtc-offer', forCall(callId)), { callId, fromUserId: lateId, offer: 'hi' });
  assert.deepEqual(await a.emitWithAck('webrtc-answer', { callId, targetUserId: lateId, answer: 'yo' }), { ok: true });
  assert.deepEqual(await late.waitFor('webrtc-answer', forCall(callId)), { callId, fromUserId: a.userId, answer: 'yo' });
});

scenario('relays from or to someone outside the call are rejected with not-in-call and never delivered', async (sc) => {
  const { a, b, callId } = await twoInCall(sc);
  const stranger = await sc.user('stranger');
  // A second call that the stranger shares with a and b, used as the ordering barrier.
  const side = sc.id('side');
  await startCall(stranger, side, [a, b]);
  const sinceA = a.mark();
  const sinceB = b.mark();
  const sinceS = stranger.mark();
  for (const [event, key] of KINDS) {
    // Stranger -> participant, claiming to be a participant.
    assertAckError(
      await stranger.emitWithAck(event, { callId, targetUserId: a.userId, [key]: { bad: 1 }, fromUserId: b.userId }),
      'not-in-call',
      `${event} stranger -> a`,
    );
    // Participant -> stranger (the target does not share the call).
    assertAckError(await a.emitWithAck(event, { callId, targetUserId: stranger.userId, [key]: { bad: 2 } }), 'not-in-call', `${event} a -> stranger`);
    // Unknown call.
    assertAckError(await a.emitWithAck(event, { callId: sc.id('nope'), targetUserId: b.userId, [key]: { bad: 3 } }), 'not-in-call', `${event} unknown call`);
    // Without an ack: dropped just the same.
    stranger.emit(event, { callId, targetUserId: b.userId, [key]: { bad: 4 } });
  }
  // Barrier: per (sender, target) pair relays arrive in order.
  for (const [from, to] of [[stranger, a], [stranger, b], [a, stranger], [a, b]]) {
    assert.deepEqual(await from.emitWithAck('webrtc-offer', { callId: side, targetUserId: to.userId, offer: { ok: 1 } }), { ok: true });
    await to.waitFor('webrtc-offer', (p) => p?.callId === side && p.fromUserId === from.userId);
  }
  for (const [client, since] of [[a, sinceA], [b, sinceB], [stranger, sinceS]]) {
    const leaked = client.eventsSince(since).filter((e) => e.event.startsWith('webrtc-') && e.args[0]?.callId !== side);
    assert.deepEqual(leaked, [], `${client.label} received a relay it must not`);
  }
});

scenario('after leaving a call a user can no longer relay in it', async (sc) => {
  const { a, b, callId } = await twoInCall(sc);
  const c = await sc.user('c');
  await joinCall(c, callId);
  await leaveCall(c, callId);
  assertAckError(await c.emitWithAck('webrtc-offer', { callId, targetUserId: a.userId, offer: {} }), 'not-in-call');
  assertAckError(await a.emitWithAck('webrtc-offer', { callId, targetUserId: c.userId, offer: {} }), 'not-in-call');
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: {} }), { ok: true });
});

scenario('a relay to a user who is not online is answered user-offline and the server stays healthy', async (sc) => {
  const a = await sc.user('a');
  const ghostId = sc.id('ghost');
  const callId = sc.id('call');
  await startCall(a, callId, [ghostId]); // invited, so the pair shares the call
  for (const [event, key] of KINDS) {
    assertAckError(await a.emitWithAck(event, { callId, targetUserId: ghostId, [key]: { x: 1 } }), 'user-offline', event);
    a.emit(event, { callId, targetUserId: ghostId, [key]: { x: 2 } }); // no ack: silently dropped
  }
  // A participant who went offline.
  const b = await sc.user('b');
  await joinCall(b, callId);
  const since = a.mark();
  b.close();
  await a.waitFor('user-left', (id) => id === b.userId, { since });
  const ack = await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: {} });
  assert.equal(ack.ok, false, 'relay to a disconnected user succeeded');
  assert.ok(['user-offline', 'not-in-call'].includes(ack.error?.code), `unexpected code ${ack.error?.code}`);
  await runNormalCall(sc);
});

scenario('an offer followed by 200 ICE candidates arrives complete and in order, offer first', async (sc) => {
  const { a, b, callId } = await twoInCall(sc);
  const since = b.mark();
  a.emit('webrtc-offer', { callId, targetUserId: b.userId, offer: { type: 'offer', sdp: 'v=0 '.repeat(500) } });
  for (let i = 0; i < 200; i++) {
    a.emit('webrtc-ice-candidate', { callId, targetUserId: b.userId, candidate: { candidate: `c${i}`, sdpMLineIndex: i % 2, seq: i } });
  }
  // And the same with acks, answer first, the other way round.
  const acks = [b.emitWithAck('webrtc-answer', { callId, targetUserId: a.userId, answer: { type: 'answer' } })];
  for (let i = 0; i < 200; i++) {
    acks.push(b.emitWithAck('webrtc-ice-candidate', { callId, targetUserId: a.userId, candidate: { seq: i } }));
  }
  await b.waitFor('webrtc-ice-candidate', (p) => p?.candidate?.seq === 199, { since, timeoutMs: 15_000 });
  const relays = b.eventsSince(since).filter((e) => e.event.startsWith('webrtc-'));
  assert.equal(relays.length, 201, 'all 201 relays arrive exactly once');
  assert.equal(relays[0].event, 'webrtc-offer', 'the offer comes first');
  assert.deepEqual(relays.slice(1).map((e) => e.args[0].candidate.seq), [...Array(200).keys()], 'candidates in order');
  for (const ack of await Promise.all(acks)) assert.deepEqual(ack, { ok: true });
  await a.waitFor('webrtc-ice-candidate', (p) => p?.candidate?.seq === 199, { timeoutMs: 15_000 });
  const back = a.eventsSince(0).filter((e) => e.event.startsWith('webrtc-'));
  assert.equal(back[0].event, 'webrtc-answer');
  assert.deepEqual(back.slice(1).map((e) => e.args[0].candidate.seq), [...Array(200).keys()]);
});

scenario('a relay goes to the target socket in the call, else to its most recently registered socket', async (sc) => {
  const a = await sc.user('a');
  const t1 = await sc.user('t');
  const t2 = await sc.socketOf(t1, 't-2');
  const inCall = sc.id('in-call');
  const invited = sc.id('invited');
  await startCall(a, inCall, [t1]);
  await joinCall(t1, inCall); // t1 (the older socket) is the one in the call
  await startCall(a, invited, [t1]); // nobody of t joins this one
  const s1 = t1.mark();
  const s2 = t2.mark();
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId: inCall, targetUserId: t1.userId, offer: 'to-call-socket' }), { ok: true });
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId: invited, targetUserId: t1.userId, offer: 'to-latest' }), { ok: true });
  await t1.waitFor('webrtc-offer', forCall(inCall), { since: s1 });
  await t2.waitFor('webrtc-offer', forCall(invited), { since: s2 });
  // Same sender, same target user: had the first relay gone to t2 it would be there by now.
  assert.deepEqual(t2.received('webrtc-offer', forCall(inCall), s2), [], 'in-call relay went to the socket not in the call');
  assert.deepEqual(t1.received('webrtc-offer', forCall(invited), s1), [], 'relay went to the older socket');
  // Once both sockets are in the call, the most recently joined one gets it.
  await joinCall(t2, inCall);
  const s1b = t1.mark();
  const s2b = t2.mark();
  assert.deepEqual(await a.emitWithAck('webrtc-answer', { callId: inCall, targetUserId: t1.userId, answer: 'to-newest-joined' }), { ok: true });
  assert.deepEqual(await a.emitWithAck('webrtc-answer', { callId: invited, targetUserId: t1.userId, answer: 'barrier' }), { ok: true });
  await t2.waitFor('webrtc-answer', forCall(inCall), { since: s2b });
  await t2.waitFor('webrtc-answer', forCall(invited), { since: s2b });
  assert.deepEqual(t1.received('webrtc-answer', () => true, s1b), [], 'relay delivered to more than one socket');
  // Relays from a multi-socket user carry the user id.
  assert.deepEqual(await t1.emitWithAck('webrtc-answer', { callId: inCall, targetUserId: a.userId, answer: 'x' }), { ok: true });
  assert.deepEqual(await a.waitFor('webrtc-answer', forCall(inCall)), { callId: inCall, fromUserId: t1.userId, answer: 'x' });
});
