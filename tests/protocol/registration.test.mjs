// Identity rules: re-registering, already-registered, several sockets per user, unregistered sockets.
import assert from 'node:assert/strict';
import { assertAckError, assertCallGone, assertPublicUser, callUser, joinCall, protocolSuite, register, startCall } from './harness.mjs';

const { scenario } = protocolSuite();

const listed = (id) => (list) => Array.isArray(list) && list.some((u) => u.id === id);

scenario('same-id re-register refreshes the username: users-list to everyone again, no user-joined', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b', { username: 'Bob' });
  const joinedAt = b.registeredUser.joinedAt;
  await a.waitFor('user-joined', (u) => u?.id === b.userId);
  const sinceA = a.mark();
  const sinceB = b.mark();
  const ack = await b.emitWithAck('user-joined', { id: b.userId, username: 'Robert' });
  assert.equal(ack.ok, true);
  assertPublicUser(ack.user, { id: b.userId, username: 'Robert', joinedAt }, 'ack.user');
  const renamed = (l) => Array.isArray(l) && l.some((u) => u.id === b.userId && u.username === 'Robert');
  for (const [client, since] of [[a, sinceA], [b, sinceB]]) {
    const list = await client.waitFor('users-list', renamed, { since });
    const entry = list.filter((u) => u.id === b.userId);
    assert.equal(entry.length, 1, 'listed once');
    assert.equal(entry[0].joinedAt, joinedAt, 'joinedAt unchanged');
  }
  await sc.presenceBarrier(a, b);
  assert.deepEqual(a.received('user-joined', (u) => u?.id === b.userId, sinceA), [], 'a got user-joined for a refresh');
  assert.deepEqual(b.received('user-joined', (u) => u?.id === b.userId, sinceB), []);
});

scenario('a socket registered as one id cannot re-register as another: already-registered, no state change', async (sc) => {
  const observer = await sc.user('observer');
  const x = await sc.user('x');
  const otherId = sc.id('other');
  await observer.waitFor('user-joined', (u) => u?.id === x.userId);
  const since = observer.mark();
  assertAckError(await x.emitWithAck('user-joined', { id: otherId, username: 'Other' }), 'already-registered');
  // Barrier through the same socket: its events are handled in order, and this one broadcasts.
  await register(x, { id: x.userId, username: 'x-again' });
  await observer.waitFor('users-list', (l) => l?.some?.((u) => u.id === x.userId && u.username === 'x-again'), { since });
  assert.deepEqual(observer.received('users-list', listed(otherId), since), [], 'other id appeared in users-list');
  assert.deepEqual(observer.received('user-joined', () => true, since), [], 'a user-joined was broadcast');
  // The socket still acts as x.
  const callId = sc.id('call');
  await startCall(x, callId, [observer]);
  const incoming = await observer.waitFor('incoming-call', (p) => p?.callId === callId);
  assert.deepEqual(incoming.initiator, { id: x.userId, username: 'x-again' });
  // The other id is not online: registering it elsewhere is a first registration (user-joined).
  const sinceOther = observer.mark();
  const other = await sc.connect('other');
  await register(other, { id: otherId, username: 'Other' });
  await observer.waitFor('user-joined', (u) => u?.id === otherId, { since: sinceOther });
});

scenario('a second socket of an online user: users-list once, no user-joined, latest username, first joinedAt', async (sc) => {
  const observer = await sc.user('observer');
  const first = await sc.user('multi', { username: 'First' });
  const joinedAt = first.registeredUser.joinedAt;
  await observer.waitFor('user-joined', (u) => u?.id === first.userId);
  const sinceObserver = observer.mark();
  const sinceFirst = first.mark();
  const second = await sc.connect('multi-2');
  const sinceSecond = second.mark();
  const user = await register(second, { id: first.userId, username: 'Second' });
  assertPublicUser(user, { id: first.userId, username: 'Second', joinedAt }, 'second socket ack.user');
  const updated = (l) => Array.isArray(l) && l.some((u) => u.id === first.userId && u.username === 'Second');
  for (const [client, since] of [[observer, sinceObserver], [first, sinceFirst], [second, sinceSecond]]) {
    const list = await client.waitFor('users-list', updated, { since });
    const entries = list.filter((u) => u.id === first.userId);
    assert.equal(entries.length, 1, `${client.label}: user listed once`);
    assert.deepEqual(entries[0], { id: first.userId, username: 'Second', joinedAt });
  }
  await sc.presenceBarrier(observer, first, second);
  for (const [client, since] of [[observer, sinceObserver], [first, sinceFirst], [second, sinceSecond]]) {
    assert.deepEqual(client.received('user-joined', (u) => u?.id === first.userId, since), [], `${client.label} got user-joined`);
  }
});

scenario('user-left and removal from users-list only when the last socket of a user goes', async (sc) => {
  const observer = await sc.user('observer');
  const s1 = await sc.user('multi');
  const s2 = await sc.socketOf(s1, 'multi-2');
  const since = observer.mark();
  s1.close();
  // The throwaway user's users-list is computed after s1 went; the user must still be in it.
  const probeId = await sc.presenceBarrier(observer);
  const list = await observer.waitFor('users-list', listed(probeId), { since });
  assert.ok(list.some((u) => u.id === s1.userId), 'user dropped from users-list while a socket remains');
  assert.deepEqual(observer.received('user-left', (id) => id === s1.userId, since), [], 'user-left before the last socket');
  // s2 still reaches the user.
  const callId = sc.id('call');
  await startCall(observer, callId, [s2]);
  await s2.waitFor('incoming-call', (p) => p?.callId === callId);
  const sinceLast = observer.mark();
  s2.close();
  const left = await observer.waitFor('user-left', (id) => id === s1.userId, { since: sinceLast });
  assert.equal(left, s1.userId);
  const after = await observer.waitFor('users-list', (l) => Array.isArray(l) && !l.some((u) => u.id === s1.userId), { since: sinceLast });
  assert.ok(after.some((u) => u.id === observer.userId));
  await sc.presenceBarrier(observer);
  assert.equal(observer.received('user-left', (id) => id === s1.userId, since).length, 1, 'user-left exactly once');
});

scenario('an unregistered socket cannot start, join or leave calls or relay (not-registered, no state change)', async (sc) => {
  const a = await sc.user('a');
  const callId = sc.id('existing');
  await startCall(a, callId, []);
  const u = await sc.connect('unregistered');
  const uId = sc.id('u');
  const newCallId = sc.id('new');
  const since = a.mark();
  const sinceU = u.mark();

  assertAckError(
    await u.emitWithAck('start-call', { id: newCallId, initiator: { id: uId, username: 'U' }, participants: [{ id: a.userId }], isVideo: true }),
    'not-registered',
    'start-call',
  );
  assertAckError(await u.emitWithAck('join-call', { callId, user: { id: uId, username: 'U' } }), 'not-registered', 'join-call');
  assertAckError(await u.emitWithAck('leave-call', { callId, userId: a.userId }), 'not-registered', 'leave-call');
  for (const [event, key] of [['webrtc-offer', 'offer'], ['webrtc-answer', 'answer'], ['webrtc-ice-candidate', 'candidate']]) {
    assertAckError(await u.emitWithAck(event, { callId, targetUserId: a.userId, [key]: { x: 1 } }), 'not-registered', event);
  }

  // Now the same socket registers and does it all properly: each first effect must be the only one.
  await register(u, { id: uId, username: 'U' });
  await startCall(u, newCallId, [a]); // would be call-exists had the rejected start created it
  await a.waitFor('incoming-call', (p) => p?.callId === newCallId, { since });
  const participants = await joinCall(u, callId);
  assert.deepEqual(participants, [callUser(a), { id: uId, username: 'U' }]);
  const joined = await a.waitFor('user-joined-call', (p) => p?.callId === callId, { since });
  assert.deepEqual(joined.participants, [callUser(a), { id: uId, username: 'U' }]);
  assert.deepEqual(await u.emitWithAck('webrtc-offer', { callId, targetUserId: a.userId, offer: { n: 'valid' } }), { ok: true });
  await a.waitFor('webrtc-offer', (p) => p?.offer?.n === 'valid', { since });

  assert.equal(a.received('incoming-call', () => true, since).length, 1, 'a got one incoming-call');
  assert.equal(a.received('user-joined-call', () => true, since).length, 1, 'a got one user-joined-call');
  assert.deepEqual(a.received('user-left-call', () => true, since), [], 'a got user-left-call');
  const relays = a.eventsSince(since).filter((e) => e.event.startsWith('webrtc-'));
  assert.equal(relays.length, 1, `a got relays from the unregistered socket: ${JSON.stringify(relays)}`);
  assert.deepEqual(u.received('call-left', () => true, sinceU), [], 'unregistered leave-call answered with call-left');
});

scenario('events of one socket are handled in the order sent: register, start, join, relay, leave back to back', async (sc) => {
  const b = await sc.user('b');
  const a = await sc.connect('a');
  const aId = sc.id('a');
  const callId = sc.id('call');
  a.userId = aId;
  a.username = 'A';
  // None of these waits for the previous one's ack.
  const acks = await Promise.all([
    a.emitWithAck('user-joined', { id: aId, username: 'A' }),
    a.emitWithAck('start-call', { id: callId, initiator: { id: aId, username: 'A' }, participants: [{ id: b.userId }], isVideo: true }),
    a.emitWithAck('join-call', { callId, user: { id: aId, username: 'A' } }),
    a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: { n: 1 } }),
    a.emitWithAck('leave-call', { callId, userId: aId }),
  ]);
  assert.equal(acks[0].ok, true, `user-joined: ${JSON.stringify(acks[0])}`);
  assert.deepEqual(acks.slice(1), [
    { ok: true, callId },
    { ok: true, callId, participants: [{ id: aId, username: 'A' }] },
    { ok: true },
    { ok: true, callId, left: true },
  ]);
  await b.waitFor('incoming-call', (p) => p?.callId === callId);
  await b.waitFor('webrtc-offer', (p) => p?.callId === callId && p.fromUserId === aId);
  await assertCallGone(b, callId);
});
