// Calling extension, no answer: an invitation still ringing RING_TIMEOUT_MS after it started is
// missed (call-unanswered to the call, invite-ended missed to the invitee); answered, declined,
// cancelled and offline invitations never time out. A short timeout of its own system (the
// cluster's call service gets it too: childEnv gives every process the suite's env).
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { assertAckError, callUser, joinCall, leaveCall, protocolSuite, show, startCall } from './harness.mjs';

const RING_TIMEOUT_MS = 1_500;
const { scenario } = protocolSuite({ env: { RING_TIMEOUT_MS: String(RING_TIMEOUT_MS) } });

/** The contract's bound: missed within the timeout plus 2 s (the service checks every 0.5 s). */
const LATEST_MS = RING_TIMEOUT_MS + 2_000;
/** Never before the timeout; the slack covers the clocks of two processes on one machine. */
const EARLIEST_MS = RING_TIMEOUT_MS - 100;
/** A failure bound for waits on a timeout (never a wait in itself). */
const WAIT_MS = LATEST_MS + 2_000;

const CALLING = { auth: { calling: true } };
const CALLING_EVENTS = ['invite-ended', 'call-declined', 'call-unanswered', 'user-busy', 'user-unavailable', 'call-message', 'call-messages'];
const forCall = (callId) => (p) => p?.callId === callId;
const about = (callId, userId) => (p) => p?.callId === callId && p.userId === userId;
const missedFor = (callId) => (p) => p?.callId === callId && p.reason === 'missed';

/** Resolves with the recorded event (payload and arrival time `at`) of the first match. */
async function arrival(client, event, predicate, what) {
  const payload = await client.waitFor(event, predicate, { timeoutMs: WAIT_MS, what });
  return client.events.find((e) => e.event === event && e.args[0] === payload);
}

/** Asserts an event arrived within [startedAt + EARLIEST_MS, startedAt + LATEST_MS]. */
function assertInWindow(record, startedAt, context) {
  const after = record.at - startedAt;
  assert.ok(after >= EARLIEST_MS, `${context}: came ${after} ms after the ring started, before RING_TIMEOUT_MS=${RING_TIMEOUT_MS}`);
  assert.ok(after <= LATEST_MS, `${context}: came ${after} ms after the ring started, later than the timeout + 2 s`);
}

/** Waits until `ms` after `since` (the negative checks below need the time to pass). */
async function until(since, ms) {
  await delay(Math.max(0, since + ms - Date.now()));
}

function callingEvents(client, since = 0) {
  return client
    .eventsSince(since)
    .filter((e) => CALLING_EVENTS.includes(e.event))
    .map((e) => `${e.event} ${show(e.args[0], 200)}`);
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

scenario('no answer: after RING_TIMEOUT_MS the call gets call-unanswered and every socket of the invitee invite-ended missed', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const c = await sc.user('c', { ...CALLING, gateway: 1 });
  const legacy = await sc.user('legacy', { gateway: 0 }); // a participant that did not opt in
  const b1 = await sc.user('b', { ...CALLING, gateway: 0 });
  const b2 = await sc.socketOf(b1, 'b-2', { ...CALLING, gateway: 1 });
  const callId = sc.id('call');
  const startedAt = Date.now();
  await startCall(a, callId, [b1, c]);
  await joinCall(c, callId); // answered at once: never missed
  await joinCall(legacy, callId);
  await Promise.all([b1, b2].map((s) => s.waitFor('incoming-call', forCall(callId))));

  for (const member of [a, c]) {
    const got = await arrival(member, 'call-unanswered', forCall(callId), 'the ring timed out');
    assert.deepEqual(got.args[0], { callId, userId: b1.userId }, `${member.label}: call-unanswered`);
    assertInWindow(got, startedAt, `${member.label}: call-unanswered`);
  }
  for (const socket of [b1, b2]) {
    const got = await arrival(socket, 'invite-ended', forCall(callId), 'the ring timed out');
    assert.deepEqual(got.args[0], { callId, reason: 'missed' }, `${socket.label}: invite-ended`);
    assertInWindow(got, startedAt, `${socket.label}: invite-ended`);
  }
  // Once only, and nothing for the invitation that was answered; two more service checks pass.
  await delay(1_000);
  for (const member of [a, c]) {
    assert.deepEqual(member.received('call-unanswered', forCall(callId)), [{ callId, userId: b1.userId }], `${member.label}: call-unanswered once`);
  }
  for (const socket of [b1, b2]) assert.equal(socket.received('invite-ended', forCall(callId)).length, 1, `${socket.label}: invite-ended once`);
  assert.deepEqual(callingEvents(legacy), [], 'a participant that did not opt in got calling events');
  // Missed: nothing rings, so nothing to decline; the call goes on.
  assertAckError(await b2.emitWithAck('decline-call', { callId }), 'not-invited', 'decline after the timeout');
  assert.deepEqual(await joinCall(c, callId), [callUser(a), callUser(c), callUser(legacy)]);
  // In the history b's outcome is missed.
  for (const member of [a, c, legacy]) await leaveCall(member, callId);
  const record = await endedInHistory(b1, callId);
  assert.equal(record.outcome, 'missed', `b's history: ${show(record, 1000)}`);
  assert.equal(record.direction, 'incoming');
});

scenario('an answered invitation does not time out, nor a declined or a cancelled one', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const c = await sc.user('c', { ...CALLING, gateway: 0 });
  const d = await sc.user('d', { ...CALLING, gateway: 1 });
  const callId = sc.id('call');
  const startedAt = Date.now();
  await startCall(a, callId, [b, c]);
  await joinCall(b, callId);
  await c.waitFor('incoming-call', forCall(callId));
  assert.deepEqual(await c.emitWithAck('decline-call', { callId }), { ok: true, callId });
  const invited = await b.emitWithAck('invite-to-call', { callId, userIds: [d.userId] });
  assert.deepEqual(invited, { ok: true, callId, invited: [d.userId], busy: [], unavailable: [] });
  await d.waitFor('incoming-call', forCall(callId));
  assert.deepEqual(await b.emitWithAck('cancel-call', { callId }), { ok: true, callId, cancelled: [d.userId] });
  await until(startedAt, LATEST_MS + 500);
  for (const member of [a, b]) {
    assert.deepEqual(member.received('call-unanswered'), [], `${member.label}: call-unanswered for an invitation that did not ring`);
  }
  assert.deepEqual(callingEvents(c).filter((e) => e.startsWith('invite-ended')), [`invite-ended ${show({ callId, reason: 'declined' })}`]);
  assert.deepEqual(callingEvents(d).filter((e) => e.startsWith('invite-ended')), [`invite-ended ${show({ callId, reason: 'cancelled' })}`]);
  assert.deepEqual(b.received('invite-ended'), [], 'the answering invitee got invite-ended');
  // Both still in the call.
  assert.deepEqual(await joinCall(b, callId), [callUser(a), callUser(b)]);
});

scenario('invite-to-call rings for RING_TIMEOUT_MS from when it was sent; a missed invitation rings again when invited again', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const x = await sc.user('x', { ...CALLING, gateway: 1 });
  const y = await sc.user('y', { ...CALLING, gateway: 0 });
  const callId = sc.id('call');
  const startedX = Date.now();
  await startCall(a, callId, [x]);
  await x.waitFor('incoming-call', forCall(callId));
  await delay(800);
  const startedY = Date.now();
  const ack = await a.emitWithAck('invite-to-call', { callId, userIds: [y.userId] });
  assert.deepEqual(ack, { ok: true, callId, invited: [y.userId], busy: [], unavailable: [] });
  await y.waitFor('incoming-call', forCall(callId));

  assertInWindow(await arrival(a, 'call-unanswered', about(callId, x.userId), 'x missed'), startedX, 'call-unanswered for x');
  assertInWindow(await arrival(x, 'invite-ended', missedFor(callId), 'x missed'), startedX, 'x: invite-ended missed');
  assertInWindow(await arrival(a, 'call-unanswered', about(callId, y.userId), 'y missed'), startedY, 'call-unanswered for y');
  assertInWindow(await arrival(y, 'invite-ended', missedFor(callId), 'y missed'), startedY, 'y: invite-ended missed');

  // Invited again: it rings again, with a fresh timeout.
  const sinceX = x.mark();
  const sinceA = a.mark();
  const again = Date.now();
  const reAck = await a.emitWithAck('invite-to-call', { callId, userIds: [x.userId] });
  assert.deepEqual(reAck, { ok: true, callId, invited: [x.userId], busy: [], unavailable: [] });
  assert.deepEqual(await x.waitFor('incoming-call', forCall(callId), { since: sinceX }), { callId, initiator: callUser(a), isVideo: true });
  const second = await x.waitFor('invite-ended', missedFor(callId), { since: sinceX, timeoutMs: WAIT_MS });
  assert.deepEqual(second, { callId, reason: 'missed' });
  assertInWindow(x.events.find((e) => e.event === 'invite-ended' && e.args[0] === second), again, 'x missed again');
  await a.waitFor('call-unanswered', about(callId, x.userId), { since: sinceA, timeoutMs: WAIT_MS });
  assert.equal(a.received('call-unanswered', about(callId, x.userId)).length, 2, 'call-unanswered for each missed ring');
});

scenario('an offline invitee is missed at once (user-unavailable) and never reported call-unanswered', async (sc) => {
  const a = await sc.user('a', CALLING);
  const b = await sc.user('b', CALLING);
  const callId = sc.id('call');
  const offline = sc.id('offline');
  const startedAt = Date.now();
  await startCall(a, callId, [offline]);
  assert.deepEqual(await a.waitFor('user-unavailable', forCall(callId)), { callId, userId: offline });
  await joinCall(b, callId);
  await until(startedAt, LATEST_MS + 500);
  for (const member of [a, b]) assert.deepEqual(member.received('call-unanswered'), [], `${member.label}: call-unanswered for an offline invitee`);
});
