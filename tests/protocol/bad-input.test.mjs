// Bad input: every client event with malformed, mistyped, too long or oversized payloads, with and without acks.
import assert from 'node:assert/strict';
import { assertAckError, callUser, emitPayload, joinCall, malformed, protocolSuite, register, runNormalCall, show, startCall } from './harness.mjs';

const { scenario } = protocolSuite();

const PRESENCE = ['users-list', 'user-joined', 'user-left'];
const forCall = (callId) => (p) => p?.callId === callId;

// Wrong values per field kind: [description, value].
const WRONG = {
  id: [
    ['a number', 42],
    ['a boolean', true],
    ['null', null],
    ['an object', { id: 'x' }],
    ['an array', ['x']],
    ['empty', ''],
    ['129 bytes', 'x'.repeat(129)],
    ['130 bytes in 65 chars', 'é'.repeat(65)],
  ],
  name: [
    ['a number', 7],
    ['a boolean', false],
    ['null', null],
    ['an object', {}],
    ['an array', ['n']],
    ['empty', ''],
    ['129 bytes', 'u'.repeat(129)],
    ['129 bytes in 43 chars', '€'.repeat(43)],
  ],
  object: [
    ['a string', 'someone'],
    ['a number', 1],
    ['a boolean', true],
    ['null', null],
    ['an array', [{ id: 'x', username: 'y' }]],
  ],
  boolean: [
    ['the string "true"', 'true'],
    ['the number 1', 1],
    ['null', null],
    ['an object', {}],
  ],
  any: [],
};

/** Wrong `participants` values; each keeps `validId` in the list so a partial accept would show. */
function wrongParticipants(validId) {
  const ok = { id: validId };
  return [
    ['a string', validId],
    ['a number', 1],
    ['null', null],
    ['an object', ok],
    ['holding a string', [ok, 'x']],
    ['holding null', [ok, null]],
    ['holding an element without id', [ok, { username: 'x' }]],
    ['holding an element with a numeric id', [ok, { id: 42 }]],
    ['holding an element with an empty id', [ok, { id: '' }]],
    ['holding an element with a 129-byte id', [ok, { id: 'p'.repeat(129) }]],
    ['of 65 participants', [ok, ...Array.from({ length: 64 }, (_, i) => ({ id: `p${i}` }))]],
  ];
}

/** The wrong values of each required field of `spec` (field -> kind), `extraWrong` where given. */
function wrongValues(spec, extraWrong = {}) {
  return Object.fromEntries(Object.entries(spec).map(([field, kind]) => [field, extraWrong[field] ?? WRONG[kind]]));
}

/** Payloads past MAX_PAYLOAD_BYTES (default 65,536) but below MAX_MESSAGE_BYTES. */
function oversized(base, opaqueKey) {
  const list = [
    ['200 KB extra field', { ...base, pad: 'x'.repeat(200_000) }],
    ['70 KB extra field', { ...base, pad: 'y'.repeat(70_000) }],
    ['200 KB of nested objects', { ...base, pad: Array.from({ length: 10_000 }, (_, i) => ({ k: i, v: 'zzzzzzzz' })) }],
  ];
  if (opaqueKey) list.push([`200 KB ${opaqueKey}`, { ...base, [opaqueKey]: { sdp: 's'.repeat(200_000) } }]);
  return list;
}


/**
 * Per event: how to set up a sender with everything in place, the valid payload, and how to
 * prove afterwards (through the same socket, whose events are handled in order) that no bad
 * payload changed state or reached anyone.
 */
const FIXTURES = {
  'user-joined': {
    async setup(sc) {
      const observer = await sc.user('observer');
      const sender = await sc.connect('unregistered');
      const base = { id: sc.id('x'), username: 'X' };
      return { sender, observer, base, spec: { id: 'id', username: 'name' }, onlineBefore: (await sc.status()).onlineUsers };
    },
    async verify(sc, f, since) {
      assert.ok((await sc.status()).onlineUsers <= f.onlineBefore, 'onlineUsers grew');
      assertAckError(
        await f.sender.emitWithAck('start-call', { id: sc.id('c'), initiator: {}, participants: [], isVideo: true }),
        'not-registered',
        'the sender is still unregistered',
      );
      await register(f.sender, f.base);
      await f.observer.waitFor('user-joined', (u) => u?.id === f.base.id, { since: since.observer });
      const joined = f.observer.received('user-joined', () => true, since.observer);
      assert.deepEqual(joined.map((u) => u.id), [f.base.id], 'user-joined broadcast for a bad payload');
    },
  },
  'start-call': {
    async setup(sc) {
      const sender = await sc.user('a');
      const invitee = await sc.user('b');
      const callId = sc.id('call');
      const base = { id: callId, initiator: callUser(sender), participants: [{ id: invitee.userId }], isVideo: true };
      const spec = { id: 'id', initiator: 'object', participants: 'participants', isVideo: 'boolean' };
      const extraWrong = { participants: wrongParticipants(invitee.userId) };
      return { sender, invitee, base, spec, extraWrong, activeBefore: (await sc.status()).activeCalls };
    },
    async verify(sc, f, since) {
      assert.ok((await sc.status()).activeCalls <= f.activeBefore, 'activeCalls grew');
      await startCall(f.sender, f.base.id, [f.invitee]); // call-exists if a bad payload had created it
      await f.invitee.waitFor('incoming-call', forCall(f.base.id), { since: since.invitee });
      assert.deepEqual(f.invitee.received('incoming-call', () => true, since.invitee).map((p) => p.callId), [f.base.id]);
      await f.sender.waitFor('call-started', forCall(f.base.id), { since: since.sender });
      assert.deepEqual(f.sender.received('call-started', () => true, since.sender).map((p) => p.callId), [f.base.id]);
    },
  },
  'join-call': {
    async setup(sc) {
      const owner = await sc.user('a');
      const sender = await sc.user('b');
      const callId = sc.id('call');
      await startCall(owner, callId, [sender]);
      return { sender, owner, base: { callId, user: callUser(sender) }, spec: { callId: 'id', user: 'object' } };
    },
    async verify(sc, f, since) {
      const callId = f.base.callId;
      assert.deepEqual(await joinCall(f.sender, callId), [callUser(f.owner), callUser(f.sender)]);
      const joined = await f.owner.waitFor('user-joined-call', forCall(callId), { since: since.owner });
      assert.deepEqual(joined.participants, [callUser(f.owner), callUser(f.sender)]);
      assert.equal(f.owner.received('user-joined-call', () => true, since.owner).length, 1, 'owner told about a bad join');
      await f.sender.waitFor('call-participants', forCall(callId), { since: since.sender });
      assert.equal(f.sender.received('call-participants', () => true, since.sender).length, 1, 'call-participants for a bad join');
      assert.deepEqual(f.sender.received('call-not-found', () => true, since.sender), [], 'call-not-found for a bad join');
    },
  },
  'leave-call': {
    async setup(sc) {
      const owner = await sc.user('a');
      const sender = await sc.user('b');
      const callId = sc.id('call');
      await startCall(owner, callId, [sender]);
      await joinCall(sender, callId);
      return { sender, owner, base: { callId, userId: sender.userId }, spec: { callId: 'id', userId: 'id' } };
    },
    async verify(sc, f, since) {
      const callId = f.base.callId;
      assert.deepEqual(await f.sender.emitWithAck('leave-call', f.base), { ok: true, callId, left: true }, 'still in the call');
      const left = await f.owner.waitFor('user-left-call', forCall(callId), { since: since.owner });
      assert.deepEqual(left, { callId, userId: f.sender.userId, participants: [callUser(f.owner)] });
      assert.equal(f.owner.received('user-left-call', () => true, since.owner).length, 1, 'owner told about a bad leave');
      await f.sender.waitFor('call-left', forCall(callId), { since: since.sender });
      assert.equal(f.sender.received('call-left', () => true, since.sender).length, 1, 'call-left for a bad leave');
    },
  },
};

for (const [event, key] of [['webrtc-offer', 'offer'], ['webrtc-answer', 'answer'], ['webrtc-ice-candidate', 'candidate']]) {
  FIXTURES[event] = {
    opaqueKey: key,
    async setup(sc) {
      const sender = await sc.user('a');
      const target = await sc.user('b');
      const callId = sc.id('call');
      await startCall(sender, callId, [target]);
      await joinCall(target, callId);
      const base = { callId, targetUserId: target.userId, [key]: { sdp: 'bad-input-test' } };
      return { sender, target, base, spec: { callId: 'id', targetUserId: 'id', [key]: 'any' } };
    },
    async verify(sc, f, since) {
      const valid = { ...f.base, [key]: { sdp: 'the valid one' } };
      assert.deepEqual(await f.sender.emitWithAck(event, valid), { ok: true });
      await f.target.waitFor(event, (p) => p?.[key]?.sdp === 'the valid one', { since: since.target });
      const relays = f.target.eventsSince(since.target).filter((e) => e.event.startsWith('webrtc-'));
      assert.equal(relays.length, 1, `target received relays of bad payloads: ${show(relays)}`);
    },
  };
}

function marks(f) {
  const out = {};
  for (const [name, value] of Object.entries(f)) if (value?.mark) out[name] = value.mark();
  return out;
}

for (const [event, fixture] of Object.entries(FIXTURES)) {
  scenario(`${event}: every malformed or oversized payload is acked with an error and changes nothing`, async (sc, t) => {
    const f = await fixture.setup(sc);
    const since = marks(f);
    const cases = [
      ...malformed(f.base, wrongValues(f.spec, f.extraWrong)).map(([name, payload]) => [name, payload, 'invalid-payload']),
      ...oversized(f.base, fixture.opaqueKey).map(([name, payload]) => [name, payload, 'payload-too-large']),
    ];
    for (const [name, payload, code] of cases) {
      await t.test(`${event} with ${name} -> ${code}`, async () => {
        assertAckError(await emitPayload(f.sender, event, payload, true), code, `${event} with ${name}`);
      });
    }
    assert.ok(f.sender.connected, 'the sender was disconnected');
    await fixture.verify(sc, f, since);
    await runNormalCall(sc);
  });

  scenario(`${event}: malformed payloads without an ack callback change nothing and break nothing`, async (sc) => {
    const f = await fixture.setup(sc);
    const since = marks(f);
    for (const [, payload] of [...malformed(f.base, wrongValues(f.spec, f.extraWrong)), ...oversized(f.base, fixture.opaqueKey)]) {
      emitPayload(f.sender, event, payload, false);
    }
    await fixture.verify(sc, f, since);
    assert.ok(f.sender.connected, 'the sender was disconnected');
    await runNormalCall(sc);
  });
}

scenario('payloads at the documented limits are accepted (128-byte ids and names, 64 participants, 60 KB relay)', async (sc) => {
  const a = await sc.user('a', { id: sc.id('a').padEnd(128, 'a'), username: 'é'.repeat(64) });
  assert.equal(a.registeredUser.username, 'é'.repeat(64));
  const b = await sc.user('b');
  const callId = sc.id('c').padEnd(128, 'c');
  const participants = [{ id: b.userId }, ...Array.from({ length: 63 }, (_, i) => ({ id: sc.id(`offline-${i}`) }))];
  const ack = await a.emitWithAck('start-call', { id: callId, initiator: callUser(a), participants, isVideo: false });
  assert.deepEqual(ack, { ok: true, callId });
  await b.waitFor('incoming-call', forCall(callId));
  await joinCall(b, callId);
  const offer = { type: 'offer', sdp: 'x'.repeat(60_000) };
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer }), { ok: true });
  assert.deepEqual(await b.waitFor('webrtc-offer', forCall(callId)), { callId, fromUserId: a.userId, offer });
  // The identity objects are shape-checked only: empty objects are fine.
  const other = sc.id('other');
  assert.deepEqual(await b.emitWithAck('start-call', { id: other, initiator: {}, participants: [], isVideo: true }), { ok: true, callId: other });
  assert.deepEqual((await a.emitWithAck('join-call', { callId: other, user: {} })).participants, [callUser(b), callUser(a)]);
});

scenario('unknown events are ignored: no broadcast, the socket and server keep working', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const since = b.mark();
  const acked = [];
  for (const event of ['no-such-event', 'user-join', 'users-list', 'incoming-call', 'call-started', 'webrtc-offer2', 'WEBRTC-OFFER', 'message']) {
    a.emit(event, { id: sc.id('x'), callId: sc.id('y'), targetUserId: b.userId, offer: {} });
    a.socket.emit(event, { any: 'thing' }, (reply) => acked.push([event, reply]));
    a.emit(event);
  }
  // Barrier through the same socket.
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await b.waitFor('incoming-call', forCall(callId), { since });
  const caused = b.eventsSince(since).filter((e) => !PRESENCE.includes(e.event));
  assert.deepEqual(caused.map((e) => e.event), ['incoming-call'], 'unknown events caused events');
  assert.ok(a.connected);
  for (const [event, reply] of acked) assert.notEqual(reply?.ok, true, `unknown event ${event} acked ok`);
  await runNormalCall(sc);
});

for (const transport of ['websocket', 'polling']) {
  scenario(`a message past MAX_MESSAGE_BYTES (1 MiB) over ${transport} closes only that connection; its user is cleaned up`, async (sc) => {
    const a = await sc.user('a');
    const big = await sc.user('big', { transport });
    const callId = sc.id('call');
    await startCall(a, callId, [big]);
    await joinCall(big, callId);
    const since = a.mark();
    big.emit('webrtc-offer', { callId, targetUserId: a.userId, offer: 'x'.repeat(2 * 1024 * 1024) });
    await big.waitFor('$disconnect', () => true, { timeoutMs: 10_000, what: 'the server closing the connection' });
    await a.waitFor('user-left-call', forCall(callId), { since });
    await a.waitFor('user-left', (id) => id === big.userId, { since });
    assert.deepEqual(a.received('webrtc-offer', () => true, since), [], 'the oversized message was relayed');
    assert.ok(a.connected);
    await runNormalCall(sc);
  });
}
