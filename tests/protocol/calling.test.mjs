// Calling extension: every device rings, answered elsewhere, decline, cancel, the inviter leaving,
// busy, unavailable, invite-to-call, the handshake opt-in of its events, and bad input for its events.
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { ACK_TIMEOUT_MS, assertAckError, callUser, emitPayload, joinCall, leaveCall, malformed, protocolSuite, show, startCall } from './harness.mjs';

// Many sockets per scenario, back to back, from one address: the per-IP handshake rate
// (tested in connections.test.mjs) is raised so that it never refuses one here.
const { scenario } = protocolSuite({ env: { CONNECTIONS_PER_IP_PER_SEC: '1000' } });

/** Handshake option of a socket that asks for this extension's events. */
const CALLING = { auth: { calling: true } };
/** The server-to-client events only opted-in sockets may get. */
const CALLING_EVENTS = ['invite-ended', 'call-declined', 'call-unanswered', 'user-busy', 'user-unavailable', 'call-message', 'call-messages'];

const forCall = (callId) => (p) => p?.callId === callId;
const about = (callId, userId) => (p) => p?.callId === callId && p.userId === userId;
const joinedBy = (callId, userId) => (p) => p?.callId === callId && p.user?.id === userId;
const endedFor = (callId, reason) => (p) => p?.callId === callId && p.reason === reason;
const sorted = (list) => [...list].sort();

/** This extension's events `client` received since `since`, readable in a failure. */
function callingEvents(client, since = 0) {
  return client
    .eventsSince(since)
    .filter((e) => CALLING_EVENTS.includes(e.event) || e.event.startsWith('app:'))
    .map((e) => `${e.event} ${show(e.args[0], 200)}`);
}

/**
 * Emits with an ack callback; resolves with the ack and `atAck`, the position in the client's
 * event log when the ack arrived (taken in the callback: after an `await`, events that came in
 * the same websocket read as the ack would already be logged).
 */
function emitMarkingAck(client, event, payload) {
  return new Promise((resolve, reject) => {
    client.socket.timeout(ACK_TIMEOUT_MS).emit(event, payload, (err, ack) => {
      if (err) reject(new Error(`${client.label}: no ack for ${event} within ${ACK_TIMEOUT_MS}ms`));
      else resolve({ ack, atAck: client.mark() });
    });
  });
}

/** Payloads of `event` that `client` received at log positions [from, to). */
const receivedBetween = (client, event, from, to) =>
  client.eventsSince(from).slice(0, to - from).filter((e) => e.event === event).map((e) => e.args[0]);

/**
 * Sends invite-to-call and asserts the exact success ack (lists compared as sets).
 * Resolves with { ack, atAck } (see emitMarkingAck).
 */
async function invite(client, callId, userIds, expected) {
  const { ack, atAck } = await emitMarkingAck(client, 'invite-to-call', { callId, userIds });
  const context = `${client.label}: invite-to-call ${show(userIds)}`;
  assert.equal(ack?.ok, true, `${context}: ${show(ack)}`);
  assert.deepEqual(Object.keys(ack).sort(), ['busy', 'callId', 'invited', 'ok', 'unavailable'], `${context}: ack keys of ${show(ack)}`);
  assert.equal(ack.callId, callId, `${context}: callId`);
  for (const key of ['invited', 'busy', 'unavailable']) {
    assert.ok(Array.isArray(ack[key]), `${context}: ${key} is not an array: ${show(ack)}`);
    assert.deepEqual(sorted(ack[key]), sorted(expected[key] ?? []), `${context}: ${key}`);
  }
  return { ack, atAck };
}

/** Sends cancel-call and asserts the success ack; `cancelled` compared as a set. */
async function cancel(client, callId, cancelled) {
  const ack = await client.emitWithAck('cancel-call', { callId });
  assert.equal(ack?.ok, true, `${client.label}: cancel-call ${show(ack)}`);
  assert.deepEqual(Object.keys(ack).sort(), ['callId', 'cancelled', 'ok'], `cancel-call ack keys of ${show(ack)}`);
  assert.equal(ack.callId, callId);
  assert.deepEqual(sorted(ack.cancelled), sorted(cancelled), 'cancel-call ack: cancelled');
  return ack;
}

async function decline(client, callId) {
  assert.deepEqual(await client.emitWithAck('decline-call', { callId }), { ok: true, callId }, `${client.label}: decline-call ack`);
}

/** Sends a chat message (a barrier for the sockets in the call: it reaches each after earlier call events). */
async function chatBarrier(sender, callId, ...observers) {
  const text = `barrier ${Math.random().toString(36).slice(2)}`;
  const ack = await sender.emitWithAck('call-message', { callId, text });
  assert.equal(ack?.ok, true, `${sender.label}: call-message barrier ${show(ack)}`);
  await Promise.all([sender, ...observers].map((o) => o.waitFor('call-message', (m) => m?.id === ack.id, { what: 'chat barrier' })));
}

/**
 * Ring barrier for sockets outside a call: a fresh user rings the observers' users in a call of
 * its own and each observer waits for that incoming-call, so whatever earlier invitation changes
 * would have sent them has arrived. The barrier call stays until the scenario closes its sockets.
 */
async function ringBarrier(sc, ...observers) {
  const probe = await sc.user(`ring-probe${sc.clients.length}`);
  const callId = sc.id(`ring-barrier${sc.clients.length}`);
  const users = [...new Map(observers.map((o) => [o.userId, o])).values()];
  await startCall(probe, callId, users);
  await Promise.all(observers.map((o) => o.waitFor('incoming-call', forCall(callId), { what: 'ring barrier' })));
  return callId;
}

/** Asks for `client`'s history until `callId` is there and ended (within 10 s). */
async function endedInHistory(client, callId) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ack = await client.emitWithAck('get-call-history', {});
    assert.equal(ack?.ok, true, show(ack));
    const call = ack.calls.find((c) => c.callId === callId);
    if (call?.endedAt) return call;
    assert.ok(Date.now() < deadline, `${callId} not ended in ${client.label}'s history: ${show(ack, 2000)}`);
    await delay(100);
  }
}

// ---------------------------------------------------------------------------------------------
// Ringing
// ---------------------------------------------------------------------------------------------

scenario('incoming-call rings every socket of an online invitee, on either gateway, once each', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b1 = await sc.user('b', { ...CALLING, gateway: 0 });
  const b2 = await sc.socketOf(b1, 'b-2', { ...CALLING, gateway: 1 });
  const b3 = await sc.socketOf(b1, 'b-3-legacy', { gateway: 1 }); // not opted in: rings all the same
  const callId = sc.id('call');
  await startCall(a, callId, [b1], { isVideo: false });
  for (const socket of [b1, b2, b3]) {
    const incoming = await socket.waitFor('incoming-call', forCall(callId));
    assert.deepEqual(incoming, { callId, initiator: callUser(a), isVideo: false }, `${socket.label}: incoming-call`);
  }
  await ringBarrier(sc, b1, b2, b3);
  for (const socket of [b1, b2, b3]) {
    assert.equal(socket.received('incoming-call', forCall(callId)).length, 1, `${socket.label}: rang more than once`);
    assert.deepEqual(callingEvents(socket), [], `${socket.label}: calling events while it rings`);
  }
  assert.deepEqual(a.received('incoming-call', forCall(callId)), [], 'the caller rang');
});

scenario('a device that comes online while the user is being called rings too (once); an invitation that stopped ringing does not', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b1 = await sc.user('b', { ...CALLING, gateway: 0 });
  const ringing = sc.id('ringing');
  const declined = sc.id('declined');
  await startCall(a, ringing, [b1]);
  await startCall(a, declined, [b1]);
  await b1.waitFor('incoming-call', forCall(declined));
  const ack = await b1.emitWithAck('decline-call', { callId: declined });
  assert.equal(ack?.ok, true, show(ack));
  // b's phone comes online, on the other gateway: the call that still rings rings there too.
  const b2 = await sc.socketOf(b1, 'b-2', { ...CALLING, gateway: 1 });
  const incoming = await b2.waitFor('incoming-call', forCall(ringing));
  assert.deepEqual(incoming, { callId: ringing, initiator: callUser(a), isVideo: true });
  // A later invitation reaches both devices, and the new one rang once for the first.
  const barrier = await ringBarrier(sc, b1, b2);
  assert.ok(barrier);
  assert.equal(b2.received('incoming-call', forCall(ringing)).length, 1, 'rang once');
  assert.deepEqual(b2.received('incoming-call', forCall(declined)), [], 'a declined invitation rang again');
  assert.equal(b1.received('incoming-call', forCall(ringing)).length, 1, 'the first device rang again');
});

scenario('answered elsewhere: one socket joins, the invitee\'s other sockets get invite-ended answered-elsewhere, the joiner does not', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b1 = await sc.user('b', { ...CALLING, gateway: 0 });
  const b2 = await sc.socketOf(b1, 'b-2', { ...CALLING, gateway: 1 });
  const b3 = await sc.socketOf(b1, 'b-3', { ...CALLING, gateway: 0 });
  const callId = sc.id('call');
  await startCall(a, callId, [b1]);
  await Promise.all([b1, b2, b3].map((s) => s.waitFor('incoming-call', forCall(callId))));
  const sinceA = a.mark();
  assert.deepEqual(await joinCall(b1, callId), [callUser(a), callUser(b1)]);
  for (const other of [b2, b3]) {
    const ended = await other.waitFor('invite-ended', forCall(callId));
    assert.deepEqual(ended, { callId, reason: 'answered-elsewhere' }, `${other.label}: invite-ended`);
  }
  await a.waitFor('user-joined-call', (p) => p?.callId === callId && p.user?.id === b1.userId, { since: sinceA });
  // Barrier for the two sockets in the call, then: the joiner heard no end of its ring.
  await chatBarrier(a, callId, b1);
  assert.deepEqual(b1.received('invite-ended'), [], 'the joining socket got invite-ended');
  assert.deepEqual(a.received('call-declined'), [], 'the caller got call-declined for an answer');
  assert.deepEqual(a.received('call-unanswered'), []);
  await ringBarrier(sc, b2, b3);
  for (const other of [b2, b3]) assert.equal(other.received('invite-ended', forCall(callId)).length, 1, `${other.label}: invite-ended once`);
  // The invitation was accepted: nothing rings any more.
  assertAckError(await b2.emitWithAck('decline-call', { callId }), 'not-invited', 'decline after the answer');
  // A second socket of the answering user may join the call too: nobody is told.
  assert.deepEqual(await joinCall(b2, callId), [callUser(a), callUser(b1)]);
});

// ---------------------------------------------------------------------------------------------
// Decline
// ---------------------------------------------------------------------------------------------

scenario('decline-call from one socket stops the ring on every socket; the call gets call-declined; ack ok', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const c = await sc.user('c', { ...CALLING, gateway: 1 });
  const b1 = await sc.user('b', { ...CALLING, gateway: 0 });
  const b2 = await sc.socketOf(b1, 'b-2', { ...CALLING, gateway: 1 });
  const callId = sc.id('call');
  await startCall(a, callId, [b1, c]);
  await Promise.all([b1, b2, c].map((s) => s.waitFor('incoming-call', forCall(callId))));
  await joinCall(c, callId);
  const since = [a, c, b1, b2].map((s) => s.mark());
  // The payload cannot speak for someone else: b declines as b, whatever it claims.
  assert.deepEqual(await b2.emitWithAck('decline-call', { callId, userId: c.userId }), { ok: true, callId });
  for (const socket of [b1, b2]) {
    assert.deepEqual(await socket.waitFor('invite-ended', forCall(callId)), { callId, reason: 'declined' }, `${socket.label}: invite-ended`);
  }
  for (const member of [a, c]) {
    assert.deepEqual(await member.waitFor('call-declined', forCall(callId)), { callId, userId: b1.userId }, `${member.label}: call-declined`);
  }
  await chatBarrier(a, callId, c);
  for (const [i, member] of [[0, a], [1, c]]) {
    assert.deepEqual(member.received('call-declined', () => true, since[i]), [{ callId, userId: b1.userId }], `${member.label}: call-declined once`);
  }
  await ringBarrier(sc, b1, b2);
  for (const [i, socket] of [[2, b1], [3, b2]]) {
    assert.deepEqual(callingEvents(socket, since[i]), [`invite-ended ${show({ callId, reason: 'declined' })}`], `${socket.label}: calling events`);
  }
  // Declined: it rings no more, from either socket.
  assertAckError(await b1.emitWithAck('decline-call', { callId }), 'not-invited', 'a second decline');
});

scenario('decline-call when nothing rings: not-invited; for an unknown or ended call: call-not-found; nobody told', async (sc) => {
  const a = await sc.user('a', CALLING);
  const b = await sc.user('b', CALLING);
  const c = await sc.user('c', CALLING);
  const stranger = await sc.user('stranger', CALLING);
  const callId = sc.id('call');
  await startCall(a, callId, [b, c]);
  await joinCall(b, callId);
  assertAckError(await stranger.emitWithAck('decline-call', { callId }), 'not-invited', 'never invited');
  assertAckError(await b.emitWithAck('decline-call', { callId }), 'not-invited', 'accepted (joined)');
  assertAckError(await a.emitWithAck('decline-call', { callId }), 'not-invited', 'the caller');
  await decline(c, callId);
  assertAckError(await c.emitWithAck('decline-call', { callId }), 'not-invited', 'already declined');
  assertAckError(await c.emitWithAck('decline-call', { callId: sc.id('nowhere') }), 'call-not-found', 'unknown call');
  const gone = sc.id('gone');
  await startCall(stranger, gone, [c]);
  await leaveCall(stranger, gone);
  assertAckError(await c.emitWithAck('decline-call', { callId: gone }), 'call-not-found', 'ended call');
  await chatBarrier(a, callId, b);
  for (const member of [a, b]) {
    assert.deepEqual(member.received('call-declined', forCall(callId)), [{ callId, userId: c.userId }], `${member.label}: only c's decline told`);
  }
  assert.deepEqual(stranger.received('invite-ended', forCall(callId)), []);
});

// ---------------------------------------------------------------------------------------------
// Cancel, and the inviter leaving
// ---------------------------------------------------------------------------------------------

scenario('cancel-call: invite-ended cancelled to every socket of each invitee the sender rang; ack lists them; the sender stays', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b1 = await sc.user('b', { ...CALLING, gateway: 0 });
  const b2 = await sc.socketOf(b1, 'b-2', { ...CALLING, gateway: 1 });
  const c = await sc.user('c', { ...CALLING, gateway: 1 });
  const d = await sc.user('d', { ...CALLING, gateway: 0 });
  const e = await sc.user('e', { ...CALLING, gateway: 1 });
  const stranger = await sc.user('stranger', CALLING);
  const callId = sc.id('call');
  const offline = sc.id('offline');
  await startCall(a, callId, [b1, c, offline]);
  await Promise.all([b1, b2, c].map((s) => s.waitFor('incoming-call', forCall(callId))));
  // d walks in and rings e: a's cancel does not touch d's invitation.
  await joinCall(d, callId);
  await invite(d, callId, [e.userId], { invited: [e.userId] });
  await e.waitFor('incoming-call', forCall(callId));

  // Errors first: they change nothing.
  assertAckError(await b1.emitWithAck('cancel-call', { callId }), 'not-in-call', 'a ringing invitee is not a participant');
  assertAckError(await stranger.emitWithAck('cancel-call', { callId }), 'not-in-call', 'a stranger');
  assertAckError(await a.emitWithAck('cancel-call', { callId: sc.id('nowhere') }), 'call-not-found', 'unknown call');

  await cancel(a, callId, [b1.userId, c.userId]);
  for (const socket of [b1, b2, c]) {
    assert.deepEqual(await socket.waitFor('invite-ended', forCall(callId)), { callId, reason: 'cancelled' }, `${socket.label}: invite-ended`);
  }
  // The sender is still in the call, d's invitation of e still rings, and nothing rings for a any more.
  assert.deepEqual(await joinCall(a, callId), [callUser(a), callUser(d)], 'the canceller stays in the call');
  await cancel(a, callId, []);
  await ringBarrier(sc, e, b1, b2, c);
  assert.deepEqual(e.received('invite-ended', forCall(callId)), [], 'e\'s invitation (made by d) was cancelled');
  for (const socket of [b1, b2, c]) assert.equal(socket.received('invite-ended', forCall(callId)).length, 1, `${socket.label}: invite-ended once`);
  assertAckError(await b2.emitWithAck('decline-call', { callId }), 'not-invited', 'decline after the cancel');
  await decline(e, callId);
  await d.waitFor('call-declined', about(callId, e.userId));
  // Participants hear nothing about a cancel (only the invitees do).
  await chatBarrier(a, callId, d);
  assert.deepEqual(d.received('call-declined', forCall(callId)), [{ callId, userId: e.userId }]);
  assert.deepEqual(a.received('call-unanswered', forCall(callId)), []);
});

scenario('leave-call by the inviter while its invitee rings: invite-ended cancelled (once the inviter\'s last socket leaves)', async (sc) => {
  const a1 = await sc.user('a', { ...CALLING, gateway: 0 });
  const a2 = await sc.socketOf(a1, 'a-2', { ...CALLING, gateway: 1 });
  const c = await sc.user('c', { ...CALLING, gateway: 1 });
  const b1 = await sc.user('b', { ...CALLING, gateway: 0 });
  const b2 = await sc.socketOf(b1, 'b-2', { ...CALLING, gateway: 1 });
  const callId = sc.id('call');
  await startCall(a1, callId, [b1, c]);
  await Promise.all([b1, b2, c].map((s) => s.waitFor('incoming-call', forCall(callId))));
  await joinCall(c, callId);
  await joinCall(a2, callId);
  // One of a's two sockets leaves: a is still in the call, b still rings.
  await leaveCall(a1, callId);
  await chatBarrier(c, callId, a2);
  await ringBarrier(sc, b1, b2);
  assert.deepEqual(callingEvents(b1), [], 'b1: the ring ended while its inviter was still in the call');
  assert.deepEqual(callingEvents(b2), [], 'b2: the ring ended while its inviter was still in the call');
  // a's last socket leaves: its invitations are cancelled; the call goes on with c.
  const sinceC = c.mark();
  await leaveCall(a2, callId);
  for (const socket of [b1, b2]) {
    assert.deepEqual(await socket.waitFor('invite-ended', forCall(callId)), { callId, reason: 'cancelled' }, `${socket.label}: invite-ended`);
  }
  assert.deepEqual(await c.waitFor('user-left-call', forCall(callId), { since: sinceC }), { callId, userId: a1.userId, participants: [callUser(c)] });
  assertAckError(await b1.emitWithAck('decline-call', { callId }), 'not-invited', 'decline after the cancel');
});

scenario('the call ending, or the inviter disconnecting, cancels the invitations that still ring', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b1 = await sc.user('b', { ...CALLING, gateway: 1 });
  const b2 = await sc.socketOf(b1, 'b-2', { ...CALLING, gateway: 0 });
  const ends = sc.id('ends');
  await startCall(a, ends, [b1]);
  await Promise.all([b1, b2].map((s) => s.waitFor('incoming-call', forCall(ends))));
  await leaveCall(a, ends); // the only participant: the call ends
  for (const socket of [b1, b2]) {
    assert.deepEqual(await socket.waitFor('invite-ended', forCall(ends)), { callId: ends, reason: 'cancelled' }, `${socket.label}: call ended`);
  }
  assertAckError(await b1.emitWithAck('decline-call', { callId: ends }), 'call-not-found', 'decline of an ended call');

  // A socket closed on purpose is cleaned up at once (no resume grace): its rings end too.
  const x = await sc.user('x', { ...CALLING, gateway: 0 });
  const y = await sc.user('y', { ...CALLING, gateway: 0 });
  const dropped = sc.id('dropped');
  await startCall(x, dropped, [b1]);
  await joinCall(y, dropped);
  await Promise.all([b1, b2].map((s) => s.waitFor('incoming-call', forCall(dropped))));
  x.close();
  for (const socket of [b1, b2]) {
    assert.deepEqual(await socket.waitFor('invite-ended', forCall(dropped)), { callId: dropped, reason: 'cancelled' }, `${socket.label}: inviter gone`);
  }
  await y.waitFor('user-left-call', about(dropped, x.userId));
});

// ---------------------------------------------------------------------------------------------
// Busy and unavailable
// ---------------------------------------------------------------------------------------------

scenario('busy: an invitee in another live call still rings (call waiting) and the inviter gets user-busy', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const c = await sc.user('c', { ...CALLING, gateway: 0 });
  const d = await sc.user('d', { ...CALLING, gateway: 1 });
  const other = sc.id('other');
  await startCall(c, other, [b]);
  await joinCall(b, other);
  const callId = sc.id('call');
  await startCall(a, callId, [b, d]);
  for (const invitee of [b, d]) {
    assert.deepEqual(await invitee.waitFor('incoming-call', forCall(callId)), { callId, initiator: callUser(a), isVideo: true }, `${invitee.label}: rings`);
  }
  assert.deepEqual(await a.waitFor('user-busy', forCall(callId)), { callId, userId: b.userId });
  // invite-to-call reports busy users the same way: c is in `other` (it started it).
  await invite(a, callId, [c.userId], { invited: [c.userId], busy: [c.userId] });
  assert.deepEqual(await a.waitFor('user-busy', about(callId, c.userId)), { callId, userId: c.userId });
  await c.waitFor('incoming-call', forCall(callId));
  await chatBarrier(a, callId);
  assert.deepEqual(
    a.received('user-busy').map((p) => p.userId).sort(),
    sorted([b.userId, c.userId]),
    'user-busy for exactly the invitees in another call',
  );
  // The waiting call is answered; the other call is left as it was.
  await joinCall(b, callId);
  const sinceC = c.mark();
  await chatBarrier(c, other, b);
  assert.deepEqual(c.received('user-left-call', forCall(other), sinceC), [], 'answering the waiting call took b out of the other one');
  assert.deepEqual(b.received('user-busy'), [], 'the busy invitee got user-busy');
});

scenario('unavailable: an offline invitee is missed at once; the inviter gets user-unavailable after call-started (and before an invite-to-call ack)', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const callId = sc.id('call');
  const offline = sc.id('offline');
  const since = a.mark();
  await startCall(a, callId, [b, offline]);
  assert.deepEqual(await a.waitFor('user-unavailable', forCall(callId), { since }), { callId, userId: offline });
  await a.waitFor('call-started', forCall(callId), { since });
  const order = a.eventsSince(since).map((e) => e.event).filter((name) => name === 'call-started' || name === 'user-unavailable');
  assert.deepEqual(order, ['call-started', 'user-unavailable'], 'user-unavailable right after call-started');
  await b.waitFor('incoming-call', forCall(callId));

  const later = sc.id('later-offline');
  const before = a.mark();
  const { atAck } = await invite(a, callId, [later], { unavailable: [later] });
  assert.deepEqual(receivedBetween(a, 'user-unavailable', before, atAck), [{ callId, userId: later }], 'user-unavailable before the invite-to-call ack');
  await chatBarrier(a, callId);
  assert.deepEqual(
    a.received('user-unavailable', forCall(callId)).map((p) => p.userId),
    [offline, later],
    'user-unavailable for exactly the offline invitees',
  );
  // Missed at once: coming online later does not make it ring, and there is nothing to decline.
  const late = await sc.user('late', { ...CALLING, id: offline });
  assertAckError(await late.emitWithAck('decline-call', { callId }), 'not-invited', 'decline of a missed invitation');
  assert.deepEqual(late.received('incoming-call', forCall(callId)), []);
  // In the call history the offline invitee's outcome is missed.
  await leaveCall(a, callId);
  const record = await endedInHistory(a, callId);
  const outcomes = Object.fromEntries(record.attendees.map((x) => [x.id, x.outcome]));
  assert.equal(outcomes[offline], 'missed', `history attendees: ${show(record.attendees, 1000)}`);
  assert.equal(outcomes[later], 'missed', `history attendees: ${show(record.attendees, 1000)}`);
});

// ---------------------------------------------------------------------------------------------
// invite-to-call
// ---------------------------------------------------------------------------------------------

scenario('invite-to-call by a participant rings new users (initiator = the inviter); ack invited/busy/unavailable; the new invitee relays and joins', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const c1 = await sc.user('c', { ...CALLING, gateway: 0 });
  const c2 = await sc.socketOf(c1, 'c-2', { ...CALLING, gateway: 1 });
  const d = await sc.user('d', { ...CALLING, gateway: 1 });
  const e = await sc.user('e', { ...CALLING, gateway: 0 });
  const busyCall = sc.id('busy');
  await startCall(e, busyCall, [d]);
  await joinCall(d, busyCall);
  const callId = sc.id('call');
  await startCall(a, callId, [b], { isVideo: false });
  await joinCall(b, callId);
  const offline = sc.id('offline');
  const sinceA = a.mark();
  const sinceB = b.mark();
  // a is already in the call: left as it is.
  const { atAck } = await invite(b, callId, [c1.userId, d.userId, offline, a.userId], {
    invited: [c1.userId, d.userId],
    busy: [d.userId],
    unavailable: [offline],
  });
  assert.deepEqual(receivedBetween(b, 'user-unavailable', sinceB, atAck), [{ callId, userId: offline }], 'user-unavailable before the ack');
  for (const socket of [c1, c2, d]) {
    const incoming = await socket.waitFor('incoming-call', forCall(callId));
    assert.deepEqual(incoming, { callId, initiator: callUser(b), isVideo: false }, `${socket.label}: incoming-call`);
  }
  assert.deepEqual(await b.waitFor('user-busy', forCall(callId), { since: sinceB }), { callId, userId: d.userId });

  // A ringing invitee may relay with the participants, both ways.
  assert.deepEqual(await c1.emitWithAck('webrtc-offer', { callId, targetUserId: a.userId, offer: { sdp: 'from-c' } }), { ok: true });
  assert.deepEqual(await a.waitFor('webrtc-offer', forCall(callId)), { callId, fromUserId: c1.userId, offer: { sdp: 'from-c' } });
  assert.deepEqual(await a.emitWithAck('webrtc-answer', { callId, targetUserId: c1.userId, answer: { sdp: 'to-c' } }), { ok: true });
  assert.deepEqual(await c2.waitFor('webrtc-answer', forCall(callId)), { callId, fromUserId: a.userId, answer: { sdp: 'to-c' } }, 'to c\'s latest socket');

  // c answers on its first socket: its other socket stops ringing; everyone in the call hears the join.
  const abc = [callUser(a), callUser(b), callUser(c1)];
  assert.deepEqual(await joinCall(c1, callId), abc);
  assert.deepEqual(await c2.waitFor('invite-ended', forCall(callId)), { callId, reason: 'answered-elsewhere' });
  for (const member of [a, b]) {
    assert.deepEqual(await member.waitFor('user-joined-call', joinedBy(callId, c1.userId)), { callId, user: callUser(c1), participants: abc });
  }
  assert.deepEqual(await c1.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: { sdp: 'joined' } }), { ok: true });
  assert.deepEqual(await b.waitFor('webrtc-offer', forCall(callId)), { callId, fromUserId: c1.userId, offer: { sdp: 'joined' } });
  await chatBarrier(a, callId, b, c1);
  assert.deepEqual(a.received('incoming-call', forCall(callId), sinceA), [], 'a participant was rung again');
});

scenario('invite-to-call rings an ended invitation again and leaves a ringing one as it is', async (sc) => {
  const a = await sc.user('a', CALLING);
  const b = await sc.user('b', CALLING);
  const c = await sc.user('c', CALLING);
  const callId = sc.id('call');
  await startCall(a, callId, [b, c]);
  await Promise.all([b, c].map((s) => s.waitFor('incoming-call', forCall(callId))));
  await decline(b, callId);
  await b.waitFor('invite-ended', endedFor(callId, 'declined'));
  const sinceB = b.mark();
  const ack = await a.emitWithAck('invite-to-call', { callId, userIds: [b.userId, c.userId] });
  assert.equal(ack?.ok, true, show(ack));
  assert.ok(ack.invited.includes(b.userId), `the declined user rings again: ${show(ack)}`);
  assert.deepEqual(ack.busy, []);
  assert.deepEqual(ack.unavailable, []);
  assert.deepEqual(await b.waitFor('incoming-call', forCall(callId), { since: sinceB }), { callId, initiator: callUser(a), isVideo: true });
  // It rings: it can be declined again.
  await decline(b, callId);
  await ringBarrier(sc, c);
  assert.equal(c.received('incoming-call', forCall(callId)).length, 1, 'a ringing invitation rang again');
  await decline(c, callId);
  await a.waitFor('call-declined', about(callId, c.userId));
  await chatBarrier(a, callId);
  assert.deepEqual(
    a.received('call-declined', forCall(callId)).map((p) => p.userId),
    [b.userId, b.userId, c.userId],
    'call-declined for each decline, in order',
  );
});

scenario('invite-to-call errors: not-in-call from a non-participant, call-not-found for an unknown call; nobody rung', async (sc) => {
  const a = await sc.user('a', CALLING);
  const b = await sc.user('b', CALLING);
  const target = await sc.user('target', CALLING);
  const stranger = await sc.user('stranger', CALLING);
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await b.waitFor('incoming-call', forCall(callId));
  const userIds = [target.userId];
  assertAckError(await stranger.emitWithAck('invite-to-call', { callId, userIds }), 'not-in-call', 'a stranger');
  assertAckError(await b.emitWithAck('invite-to-call', { callId, userIds }), 'not-in-call', 'a ringing invitee');
  assertAckError(await a.emitWithAck('invite-to-call', { callId: sc.id('nowhere'), userIds }), 'call-not-found', 'unknown call');
  await joinCall(b, callId);
  await leaveCall(b, callId);
  assertAckError(await b.emitWithAck('invite-to-call', { callId, userIds }), 'not-in-call', 'a participant who left');
  await ringBarrier(sc, target);
  assert.deepEqual(target.received('incoming-call', forCall(callId)), [], 'a failed invite rang');
  // The same invitation from a participant rings once.
  await invite(a, callId, userIds, { invited: userIds });
  await target.waitFor('incoming-call', forCall(callId));
  await ringBarrier(sc, target);
  assert.equal(target.received('incoming-call', forCall(callId)).length, 1);
});

scenario('invite-to-call: a call lists at most 256 invitations (more is invalid-payload)', async (sc) => {
  const a = await sc.user('a', CALLING);
  const callId = sc.id('call');
  const batch = (tag) => Array.from({ length: 64 }, (_, i) => sc.id(`${tag}-${i}`));
  const first = batch('s');
  await startCall(a, callId, first);
  for (const tag of ['i1', 'i2', 'i3']) {
    const ids = batch(tag);
    await invite(a, callId, ids, { unavailable: ids });
  }
  assertAckError(await a.emitWithAck('invite-to-call', { callId, userIds: [sc.id('one-too-many')] }), 'invalid-payload', 'the 257th invitation');
  // Inviting one already listed again adds no invitation: still accepted.
  await invite(a, callId, [first[0]], { unavailable: [first[0]] });
});

// ---------------------------------------------------------------------------------------------
// Opt-in
// ---------------------------------------------------------------------------------------------

scenario('opt-in: a socket without auth.calling gets none of the extension\'s events (incoming-call and the rest unchanged)', async (sc) => {
  const legacy = await sc.user('legacy', { gateway: 0 }); // caller, participant: never opted in
  const p = await sc.user('p', { ...CALLING, gateway: 1 }); // an opted-in participant sees everything
  const b1 = await sc.user('b', { gateway: 0 }); // an invitee with a legacy socket...
  const b2 = await sc.socketOf(b1, 'b-2', { ...CALLING, gateway: 1 }); // ...and an opted-in one
  const x = await sc.user('x', { gateway: 1 });
  const busy = await sc.user('busy', { ...CALLING, gateway: 0 });
  const elsewhere = sc.id('elsewhere');
  await startCall(busy, elsewhere, []);
  const callId = sc.id('call');
  const offline = sc.id('offline');
  // The legacy caller would get user-busy and user-unavailable here.
  await startCall(legacy, callId, [p, b1, busy, x, offline]);
  assert.deepEqual(await b1.waitFor('incoming-call', forCall(callId)), { callId, initiator: callUser(legacy), isVideo: true }, 'legacy sockets still ring');
  await b2.waitFor('incoming-call', forCall(callId));
  await joinCall(p, callId);
  await p.waitFor('call-messages', forCall(callId));
  // Declined on the opted-in socket: only opted-in sockets hear it.
  await decline(b2, callId);
  assert.deepEqual(await b2.waitFor('invite-ended', forCall(callId)), { callId, reason: 'declined' });
  assert.deepEqual(await p.waitFor('call-declined', forCall(callId)), { callId, userId: b1.userId });
  // x declines from its legacy socket: the client-to-server events work for every socket.
  assert.deepEqual(await x.emitWithAck('decline-call', { callId }), { ok: true, callId });
  await p.waitFor('call-declined', about(callId, x.userId));
  // Chat from the legacy socket works; it does not get the messages itself.
  const ack = await legacy.emitWithAck('call-message', { callId, text: 'hello from the past' });
  assert.equal(ack?.ok, true, show(ack));
  const heard = await p.waitFor('call-message', forCall(callId));
  assert.deepEqual(heard.from, callUser(legacy));
  // A join by the legacy socket: call-participants as ever, no call-messages.
  const sinceLegacy = legacy.mark();
  await joinCall(legacy, callId);
  await legacy.waitFor('call-participants', forCall(callId), { since: sinceLegacy });
  // Barriers: a walk-in joins (legacy hears user-joined-call); the legacy invitee socket rings again.
  const walkIn = await sc.user('walk-in', CALLING);
  await joinCall(walkIn, callId);
  await legacy.waitFor('user-joined-call', joinedBy(callId, walkIn.userId));
  await ringBarrier(sc, b1, x);
  for (const socket of [legacy, b1, x]) assert.deepEqual(callingEvents(socket), [], `${socket.label} (not opted in) got calling events`);
  // The opted-in ones did get theirs.
  await busy.waitFor('incoming-call', forCall(callId));
  assert.ok(p.received('call-message', forCall(callId)).length >= 1);
});

scenario('opt-in handshake: calling true/false/"true"/"false" accepted (auth or query), anything else refused with connect_error', async (sc) => {
  for (const calling of ['yes', 1, 'on']) {
    await assert.rejects(sc.connect('bad', { auth: { calling } }), /invalid calling/, `auth.calling ${show(calling)} refused`);
  }
  await assert.rejects(sc.connect('bad-query', { query: { calling: 'maybe' } }), /invalid calling/, 'query calling=maybe refused');
  const a = await sc.user('a', CALLING);
  const callId = sc.id('call');
  const invitees = [];
  for (const [label, options, optedIn] of [
    ['auth-true', { auth: { calling: true } }, true],
    ['auth-string-true', { auth: { calling: 'true' } }, true],
    ['query-true', { query: { calling: 'true' } }, true],
    ['auth-false', { auth: { calling: false } }, false],
    ['auth-string-false', { auth: { calling: 'false' } }, false],
    ['query-false', { query: { calling: 'false' } }, false],
  ]) {
    const client = await sc.user(label, options);
    client.optedIn = optedIn;
    invitees.push(client);
  }
  await startCall(a, callId, invitees);
  await Promise.all(invitees.map((i) => i.waitFor('incoming-call', forCall(callId))));
  await cancel(a, callId, invitees.map((i) => i.userId));
  const optedIn = invitees.filter((i) => i.optedIn);
  await Promise.all(optedIn.map((i) => i.waitFor('invite-ended', endedFor(callId, 'cancelled'))));
  await ringBarrier(sc, ...invitees);
  for (const client of invitees.filter((i) => !i.optedIn)) assert.deepEqual(callingEvents(client), [], `${client.label}: calling events`);
});

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

const WRONG_ID = [
  ['a number', 42],
  ['a boolean', true],
  ['null', null],
  ['an object', { id: 'x' }],
  ['an array', ['x']],
  ['empty', ''],
  ['129 bytes', 'x'.repeat(129)],
  ['130 bytes in 65 chars', 'é'.repeat(65)],
];

function wrongUserIds(validId) {
  return [
    ['a string', validId],
    ['a number', 1],
    ['null', null],
    ['an object', { id: validId }],
    ['empty', []],
    ['holding a number', [validId, 42]],
    ['holding null', [validId, null]],
    ['holding an object', [validId, { id: 'x' }]],
    ['holding an empty id', [validId, '']],
    ['holding a 129-byte id', [validId, 'p'.repeat(129)]],
    ['of 65 ids', [validId, ...Array.from({ length: 64 }, (_, i) => `u${i}`)]],
  ];
}


const oversized = (base) => [
  ['200 KB extra field', { ...base, pad: 'x'.repeat(200_000) }],
  ['70 KB extra field', { ...base, pad: 'y'.repeat(70_000) }],
];


/** Per event: a sender with everything in place, the valid payload, and a check that nothing changed. */
const FIXTURES = {
  'decline-call': {
    async setup(sc) {
      const owner = await sc.user('a', CALLING);
      const sender = await sc.user('b', CALLING);
      const callId = sc.id('call');
      await startCall(owner, callId, [sender]);
      await sender.waitFor('incoming-call', forCall(callId));
      return { owner, sender, callId, base: { callId }, wrong: { callId: WRONG_ID } };
    },
    async verify(sc, f) {
      await decline(f.sender, f.callId); // not-invited if a bad payload had declined
      await f.owner.waitFor('call-declined', forCall(f.callId));
      await chatBarrier(f.owner, f.callId);
      assert.equal(f.owner.received('call-declined').length, 1, 'call-declined for a bad payload');
      await ringBarrier(sc, f.sender);
      assert.deepEqual(callingEvents(f.sender), [`invite-ended ${show({ callId: f.callId, reason: 'declined' })}`]);
    },
  },
  'cancel-call': {
    async setup(sc) {
      const sender = await sc.user('a', CALLING);
      const invitee = await sc.user('b', CALLING);
      const callId = sc.id('call');
      await startCall(sender, callId, [invitee]);
      await invitee.waitFor('incoming-call', forCall(callId));
      return { sender, invitee, callId, base: { callId }, wrong: { callId: WRONG_ID } };
    },
    async verify(sc, f) {
      await cancel(f.sender, f.callId, [f.invitee.userId]); // [] if a bad payload had cancelled
      await f.invitee.waitFor('invite-ended', forCall(f.callId));
      await ringBarrier(sc, f.invitee);
      assert.deepEqual(callingEvents(f.invitee), [`invite-ended ${show({ callId: f.callId, reason: 'cancelled' })}`]);
    },
  },
  'invite-to-call': {
    async setup(sc) {
      const sender = await sc.user('a', CALLING);
      const target = await sc.user('t', CALLING);
      const callId = sc.id('call');
      await startCall(sender, callId, []);
      const base = { callId, userIds: [target.userId] };
      return { sender, target, callId, base, wrong: { callId: WRONG_ID, userIds: wrongUserIds(target.userId) } };
    },
    async verify(sc, f) {
      await ringBarrier(sc, f.target);
      assert.deepEqual(f.target.received('incoming-call', forCall(f.callId)), [], 'a bad payload rang');
      await invite(f.sender, f.callId, [f.target.userId], { invited: [f.target.userId] });
      await f.target.waitFor('incoming-call', forCall(f.callId));
      await ringBarrier(sc, f.target);
      assert.equal(f.target.received('incoming-call', forCall(f.callId)).length, 1);
      assert.deepEqual(f.sender.received('user-unavailable'), [], 'user-unavailable for a bad payload');
    },
  },
};

for (const [event, fixture] of Object.entries(FIXTURES)) {
  scenario(`${event}: every malformed or oversized payload is acked with an error and changes nothing`, async (sc, t) => {
    const f = await fixture.setup(sc);
    const cases = [
      ...malformed(f.base, f.wrong).map(([name, payload]) => [name, payload, 'invalid-payload']),
      ...oversized(f.base).map(([name, payload]) => [name, payload, 'payload-too-large']),
    ];
    for (const [name, payload, code] of cases) {
      await t.test(`${event} with ${name} -> ${code}`, async () => {
        assertAckError(await emitPayload(f.sender, event, payload, true), code, `${event} with ${name}`);
      });
    }
    assert.ok(f.sender.connected, 'the sender was disconnected');
    await fixture.verify(sc, f);
  });

  scenario(`${event}: malformed payloads without an ack callback change nothing and break nothing`, async (sc) => {
    const f = await fixture.setup(sc);
    for (const [, payload] of [...malformed(f.base, f.wrong), ...oversized(f.base)]) emitPayload(f.sender, event, payload, false);
    await fixture.verify(sc, f);
    assert.ok(f.sender.connected, 'the sender was disconnected');
  });
}

scenario('the extension\'s events from a socket that never registered: not-registered, nothing changes', async (sc) => {
  const a = await sc.user('a', CALLING);
  const b = await sc.user('b', CALLING);
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await b.waitFor('incoming-call', forCall(callId));
  const anonymous = await sc.connect('anonymous', CALLING);
  for (const [event, payload] of [
    ['decline-call', { callId }],
    ['cancel-call', { callId }],
    ['invite-to-call', { callId, userIds: [b.userId] }],
    ['call-message', { callId, text: 'who am I' }],
  ]) {
    assertAckError(await anonymous.emitWithAck(event, payload), 'not-registered', event);
  }
  // Still ringing, and nothing said.
  await chatBarrier(a, callId);
  assert.deepEqual(a.received('call-message', forCall(callId)).length, 1);
  await cancel(a, callId, [b.userId]);
});
