// Calls: start-call, join-call, leave-call, their events and acks, duplicates, empty calls, several sockets.
import assert from 'node:assert/strict';
import { assertAckError, assertCallGone, callUser, joinCall, leaveCall, protocolSuite, startCall } from './harness.mjs';

const { scenario } = protocolSuite();

const forCall = (callId) => (p) => p?.callId === callId;

scenario('start-call: incoming-call to online invitees only (not the initiator), call-started to the sender', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const c = await sc.user('c');
  const stranger = await sc.user('stranger');
  const callId = sc.id('call');
  const since = [a, b, c, stranger].map((x) => x.mark());
  const ack = await a.emitWithAck('start-call', {
    id: callId,
    // Claims to be b: the server reports the registered sender.
    initiator: { id: b.userId, username: 'mallory' },
    participants: [{ id: a.userId }, { id: b.userId, username: 'B' }, { id: c.userId }, { id: sc.id('offline') }],
    isVideo: false,
  });
  assert.deepEqual(ack, { ok: true, callId });
  for (const invitee of [b, c]) {
    const incoming = await invitee.waitFor('incoming-call', forCall(callId));
    assert.deepEqual(incoming, { callId, initiator: callUser(a), isVideo: false }, `${invitee.label}: incoming-call`);
  }
  assert.deepEqual(await a.waitFor('call-started', forCall(callId)), { callId });

  // Barrier: a later call from the same socket, inviting the stranger; call events arrive in order.
  const second = sc.id('second');
  await startCall(a, second, [stranger], { isVideo: true });
  const incoming2 = await stranger.waitFor('incoming-call', forCall(second));
  assert.deepEqual(incoming2, { callId: second, initiator: callUser(a), isVideo: true });
  await a.waitFor('call-started', forCall(second));
  assert.deepEqual(stranger.received('incoming-call', forCall(callId), since[3]), [], 'uninvited user got incoming-call');
  assert.deepEqual(a.received('incoming-call', () => true, since[0]), [], 'initiator got incoming-call');
  assert.equal(b.received('incoming-call', forCall(callId), since[1]).length, 1, 'b got incoming-call once');
  assert.equal(a.received('call-started', forCall(callId), since[0]).length, 1, 'call-started once');
});

scenario('incoming-call goes to every socket of an invited user, and to no socket of the initiator', async (sc) => {
  const a1 = await sc.user('a');
  const a2 = await sc.socketOf(a1, 'a-2');
  const b1 = await sc.user('b');
  const b2 = await sc.socketOf(b1, 'b-2');
  const b3 = await sc.socketOf(b1, 'b-3');
  const callId = sc.id('call');
  await startCall(a1, callId, [a1, b1]);
  for (const socket of [b1, b2, b3]) {
    assert.deepEqual(await socket.waitFor('incoming-call', forCall(callId)), { callId, initiator: callUser(a1), isVideo: true });
  }
  // Barrier for a2: a call from b inviting a reaches a2 after anything about the first call.
  const back = sc.id('back');
  await startCall(b1, back, [a1]);
  await a2.waitFor('incoming-call', forCall(back));
  await a1.waitFor('incoming-call', forCall(back));
  assert.deepEqual(a2.received('incoming-call', forCall(callId)), [], 'initiator second socket got incoming-call');
  assert.deepEqual(a2.received('call-started', forCall(callId)), [], 'call-started went to a socket that did not start');
});

scenario('start-call with the id of a live call is rejected with call-exists and changes nothing', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const d = await sc.user('d');
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  const sinceB = b.mark();
  const sinceD = d.mark();
  const sinceA = a.mark();
  const dup = (initiator) => ({ id: callId, initiator: callUser(initiator), participants: [{ id: d.userId }], isVideo: false });
  assertAckError(await a.emitWithAck('start-call', dup(a)), 'call-exists', 'same initiator');
  assertAckError(await b.emitWithAck('start-call', dup(b)), 'call-exists', 'other user');
  // Barrier: b's next call reaches d after anything b's rejected start-call could have sent.
  const barrier = sc.id('barrier');
  await startCall(b, barrier, [d]);
  await d.waitFor('incoming-call', forCall(barrier), { since: sinceD });
  assert.deepEqual(d.received('incoming-call', forCall(callId), sinceD), [], 'duplicate start invited d');
  assert.deepEqual(b.received('call-started', forCall(callId), sinceB), [], 'duplicate start answered with call-started');
  assert.deepEqual(a.received('call-started', forCall(callId), sinceA), [], 'duplicate start answered with call-started');
  // The live call is untouched: a is still its initiator and only participant.
  const participants = await joinCall(b, callId);
  assert.deepEqual(participants, [callUser(a), callUser(b)]);
  const joined = await a.waitFor('user-joined-call', forCall(callId), { since: sinceA });
  assert.deepEqual(joined.participants, [callUser(a), callUser(b)]);
});

scenario('the id of an ended call can be used again', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const callId = sc.id('call');
  await startCall(a, callId, []);
  await leaveCall(a, callId);
  await assertCallGone(b, callId);
  await startCall(b, callId, [a], { isVideo: false });
  const incoming = await a.waitFor('incoming-call', (p) => p?.callId === callId && p.initiator?.id === b.userId);
  assert.deepEqual(incoming, { callId, initiator: callUser(b), isVideo: false });
});

scenario('join-call for an unknown call: call-not-found event and ack, nobody else told', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const callId = sc.id('nowhere');
  const sinceA = a.mark();
  const ack = await b.emitWithAck('join-call', { callId, user: callUser(b) });
  assertAckError(ack, 'call-not-found');
  assert.deepEqual(await b.waitFor('call-not-found', forCall(callId)), { callId });
  // Without an ack the event still comes.
  const other = sc.id('nowhere-2');
  b.emit('join-call', { callId: other, user: callUser(b) });
  assert.deepEqual(await b.waitFor('call-not-found', forCall(other)), { callId: other });
  assert.deepEqual(b.received('call-participants'), []);
  await sc.presenceBarrier(a);
  assert.deepEqual(a.received('user-joined-call', () => true, sinceA), []);
  assert.deepEqual(a.received('call-not-found', () => true, sinceA), []);
});

scenario('join-call: user-joined-call to the others, call-participants to the joiner, identity from registration', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const c = await sc.user('c');
  const callId = sc.id('call');
  await startCall(a, callId, [b, c]);
  const sinceB = b.mark();
  // b claims to be a: the server reports b.
  const ack = await b.emitWithAck('join-call', { callId, user: { id: a.userId, username: 'not-b' } });
  const ab = [callUser(a), callUser(b)];
  assert.deepEqual(ack, { ok: true, callId, participants: ab });
  assert.deepEqual(await b.waitFor('call-participants', forCall(callId)), { callId, participants: ab });
  assert.deepEqual(await a.waitFor('user-joined-call', forCall(callId)), { callId, user: callUser(b), participants: ab });

  const abc = [...ab, callUser(c)];
  const ackC = await c.emitWithAck('join-call', { callId, user: {} }); // the shape check needs an object only
  assert.deepEqual(ackC, { ok: true, callId, participants: abc });
  assert.deepEqual(await c.waitFor('call-participants', forCall(callId)), { callId, participants: abc });
  for (const other of [a, b]) {
    const joined = await other.waitFor('user-joined-call', (p) => p?.callId === callId && p.user?.id === c.userId);
    assert.deepEqual(joined, { callId, user: callUser(c), participants: abc }, `${other.label}: user-joined-call for c`);
  }
  // c's join reached b after anything b's own join sent: b never hears about itself.
  assert.deepEqual(b.received('user-joined-call', (p) => p?.user?.id === b.userId, sinceB), [], 'joiner got its own user-joined-call');
  assert.deepEqual(c.received('user-joined-call', (p) => p?.user?.id === c.userId), []);
  assert.equal(a.received('user-joined-call', (p) => p?.user?.id === b.userId).length, 1);
});

scenario('join-call twice is a no-op: call-participants again, nobody else told', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const c = await sc.user('c');
  const callId = sc.id('call');
  await startCall(a, callId, [b, c]);
  await joinCall(b, callId);
  await a.waitFor('user-joined-call', forCall(callId));
  const sinceB = b.mark();
  const ab = [callUser(a), callUser(b)];
  assert.deepEqual(await b.emitWithAck('join-call', { callId, user: callUser(b) }), { ok: true, callId, participants: ab });
  assert.deepEqual(await b.waitFor('call-participants', forCall(callId), { since: sinceB }), { callId, participants: ab });
  // Initiator re-joining its own call is a no-op too.
  const sinceA = a.mark();
  assert.deepEqual(await a.emitWithAck('join-call', { callId, user: callUser(a) }), { ok: true, callId, participants: ab });
  // Barrier: c joins; everyone's view of the call must still be a, b, c once each.
  const abc = [...ab, callUser(c)];
  assert.deepEqual(await joinCall(c, callId), abc);
  const seenByA = await a.waitFor('user-joined-call', (p) => p?.user?.id === c.userId);
  assert.deepEqual(seenByA.participants, abc);
  const seenByB = await b.waitFor('user-joined-call', (p) => p?.user?.id === c.userId);
  assert.deepEqual(seenByB.participants, abc);
  assert.equal(a.received('user-joined-call', (p) => p?.user?.id === b.userId).length, 1, 'a told twice about b');
  assert.deepEqual(b.received('user-joined-call', (p) => p?.user?.id === a.userId, sinceB), [], 'b told about a re-join');
  assert.deepEqual(c.received('user-joined-call', () => true), [], 'c told about earlier joins');
  assert.equal(a.received('call-participants', forCall(callId), sinceA).length, 1);
});

scenario('leave-call: user-left-call to the remaining, call-left to the sender, identity from registration', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const c = await sc.user('c');
  const callId = sc.id('call');
  await startCall(a, callId, [b, c]);
  await joinCall(b, callId);
  await joinCall(c, callId);
  // b claims to be a: b leaves, a stays.
  const ack = await b.emitWithAck('leave-call', { callId, userId: a.userId });
  assert.deepEqual(ack, { ok: true, callId, left: true });
  assert.deepEqual(await b.waitFor('call-left', forCall(callId)), { callId });
  const ac = [callUser(a), callUser(c)];
  for (const other of [a, c]) {
    assert.deepEqual(await other.waitFor('user-left-call', forCall(callId)), { callId, userId: b.userId, participants: ac });
  }
  // The initiator leaving does not end a call that still has participants.
  assert.deepEqual(await a.emitWithAck('leave-call', { callId, userId: a.userId }), { ok: true, callId, left: true });
  assert.deepEqual(
    await c.waitFor('user-left-call', (p) => p?.callId === callId && p.userId === a.userId),
    { callId, userId: a.userId, participants: [callUser(c)] },
  );
  assert.deepEqual(b.received('user-left-call'), [], 'the leaver got user-left-call');
  // b may come back; the call still exists.
  assert.deepEqual(await joinCall(b, callId), [callUser(c), callUser(b)]);
});

scenario('leave-call by a socket not in the call: ack left:false, call-left to it, nobody notified', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const outsider = await sc.user('outsider');
  const callId = sc.id('call');
  await startCall(a, callId, [b, outsider]);
  await joinCall(b, callId);
  const sinceA = a.mark();
  const sinceB = b.mark();
  const ack = await outsider.emitWithAck('leave-call', { callId, userId: outsider.userId });
  assert.deepEqual(ack, { ok: true, callId, left: false });
  assert.deepEqual(await outsider.waitFor('call-left', forCall(callId)), { callId });
  // Claiming to be a participant changes nothing either.
  assert.deepEqual(await outsider.emitWithAck('leave-call', { callId, userId: b.userId }), { ok: true, callId, left: false });
  // Barrier: the outsider joins for real; a and b hear about that, and nothing before it.
  const abo = [callUser(a), callUser(b), callUser(outsider)];
  assert.deepEqual(await joinCall(outsider, callId), abo);
  await a.waitFor('user-joined-call', (p) => p?.user?.id === outsider.userId, { since: sinceA });
  await b.waitFor('user-joined-call', (p) => p?.user?.id === outsider.userId, { since: sinceB });
  assert.deepEqual(a.received('user-left-call', () => true, sinceA), []);
  assert.deepEqual(b.received('user-left-call', () => true, sinceB), []);
});

scenario('leave-call for an unknown call: ack left:false and call-left', async (sc) => {
  const a = await sc.user('a');
  const callId = sc.id('unknown');
  assert.deepEqual(await a.emitWithAck('leave-call', { callId, userId: a.userId }), { ok: true, callId, left: false });
  assert.deepEqual(await a.waitFor('call-left', forCall(callId)), { callId });
  const other = sc.id('unknown-2');
  a.emit('leave-call', { callId: other, userId: a.userId });
  assert.deepEqual(await a.waitFor('call-left', forCall(other)), { callId: other });
  await assertCallGone(a, callId);
});

scenario('a call left empty ends: a later join-call gets call-not-found', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  await leaveCall(a, callId);
  await leaveCall(b, callId);
  await assertCallGone(a, callId);
  await assertCallGone(b, callId);
  // A call whose initiator leaves before anyone joins ends too, invitations or not.
  const lonely = sc.id('lonely');
  await startCall(a, lonely, [b]);
  await leaveCall(a, lonely);
  await assertCallGone(b, lonely);
});

scenario('three-party call: joins, participants in join order, leaves', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const c = await sc.user('c');
  const callId = sc.id('call');
  await startCall(a, callId, [b]); // c is not invited and may still join
  assert.deepEqual(await joinCall(c, callId), [callUser(a), callUser(c)]);
  assert.deepEqual(await joinCall(b, callId), [callUser(a), callUser(c), callUser(b)]);
  const all = [callUser(a), callUser(c), callUser(b)];
  assert.deepEqual((await a.waitFor('user-joined-call', (p) => p?.user?.id === b.userId)).participants, all);
  assert.deepEqual((await c.waitFor('user-joined-call', (p) => p?.user?.id === b.userId)).participants, all);
  await leaveCall(c, callId);
  for (const other of [a, b]) {
    const left = await other.waitFor('user-left-call', (p) => p?.callId === callId && p.userId === c.userId);
    assert.deepEqual(left.participants, [callUser(a), callUser(b)]);
  }
  await leaveCall(a, callId);
  assert.deepEqual(
    await b.waitFor('user-left-call', (p) => p?.callId === callId && p.userId === a.userId),
    { callId, userId: a.userId, participants: [callUser(b)] },
  );
  await leaveCall(b, callId);
  await assertCallGone(c, callId);
});

scenario('several sockets of one user in a call: listed once; a second join or one leave tells nobody', async (sc) => {
  const a = await sc.user('a');
  const b1 = await sc.user('b');
  const b2 = await sc.socketOf(b1, 'b-2');
  const callId = sc.id('call');
  await startCall(a, callId, [b1]);
  await joinCall(b1, callId);
  await a.waitFor('user-joined-call', forCall(callId));
  const sinceA = a.mark();
  const ab = [callUser(a), callUser(b1)];
  assert.deepEqual(await joinCall(b2, callId), ab, 'second socket: user listed once');
  assert.deepEqual(await b2.waitFor('call-participants', forCall(callId)), { callId, participants: ab });
  assert.deepEqual(await b1.emitWithAck('leave-call', { callId, userId: b1.userId }), { ok: true, callId, left: true });
  await b1.waitFor('call-left', forCall(callId));
  // Barrier: c joins; a hears that, and nothing about b before it.
  const c = await sc.user('c');
  await joinCall(c, callId);
  const joined = await a.waitFor('user-joined-call', (p) => p?.user?.id === c.userId, { since: sinceA });
  assert.deepEqual(joined.participants, [...ab, callUser(c)], 'b is still in the call through its second socket');
  assert.deepEqual(a.received('user-joined-call', (p) => p?.user?.id === b1.userId, sinceA), [], 'second socket join told');
  assert.deepEqual(a.received('user-left-call', () => true, sinceA), [], 'one of two sockets leaving told');
  // The last socket of b leaving is b leaving.
  await leaveCall(b2, callId);
  for (const other of [a, c]) {
    const left = await other.waitFor('user-left-call', (p) => p?.callId === callId && p.userId === b1.userId);
    assert.deepEqual(left, { callId, userId: b1.userId, participants: [callUser(a), callUser(c)] });
  }
});
