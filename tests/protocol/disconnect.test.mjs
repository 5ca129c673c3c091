// Disconnect cleanup: user-left-call, users-list and user-left, their order, empty calls, several sockets; abrupt closes (away for the resume grace first).
import assert from 'node:assert/strict';
import { assertCallGone, callUser, joinCall, protocolSuite, RESUME_GRACE_MS, startCall } from './harness.mjs';

const { scenario } = protocolSuite();

const forCall = (callId) => (p) => p?.callId === callId;
const lacks = (id) => (list) => Array.isArray(list) && !list.some((u) => u.id === id);

scenario('disconnect: user-left-call to the remaining, then users-list and user-left (bare id) to everyone else', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const c = await sc.user('c');
  const observer = await sc.user('observer'); // online, not in the call
  const lurker = await sc.connect('lurker'); // connected, never registered: still "everyone"
  const callId = sc.id('call');
  await startCall(a, callId, [b, c]);
  await joinCall(b, callId);
  await joinCall(c, callId);
  const since = [a, c, observer].map((x) => x.mark());
  const sinceLurker = lurker.mark();
  b.close();
  for (const [i, client] of [a, c].entries()) {
    const left = await client.waitFor('user-left-call', forCall(callId), { since: since[i] });
    assert.deepEqual(left, { callId, userId: b.userId, participants: [callUser(a), callUser(c)] });
  }
  for (const [i, client] of [a, c, observer].entries()) {
    const id = await client.waitFor('user-left', (x) => x === b.userId, { since: since[i] });
    assert.equal(typeof id, 'string', 'user-left carries the bare id string');
    const list = await client.waitFor('users-list', lacks(b.userId), { since: since[i] });
    assert.ok(list.some((u) => u.id === client.userId), `${client.label}: users-list lacks the observer itself`);
  }
  assert.equal(await lurker.waitFor('user-left', (x) => x === b.userId, { since: sinceLurker }), b.userId);
  await lurker.waitFor('users-list', lacks(b.userId), { since: sinceLurker });
  // Order at an observer in the call: user-left-call, then users-list, then user-left.
  // (Only the events about b: a users-list still listing b was caused by something else.)
  const aboutB = (e) =>
    (e.event === 'user-left-call' && e.args[0]?.userId === b.userId) ||
    (e.event === 'users-list' && lacks(b.userId)(e.args[0])) ||
    (e.event === 'user-left' && e.args[0] === b.userId);
  const names = a.eventsSince(since[0]).filter(aboutB).map((e) => e.event);
  assert.deepEqual(names, ['user-left-call', 'users-list', 'user-left'], `order at a: ${names}`);
  const atObserver = observer.eventsSince(since[2]).filter(aboutB).map((e) => e.event);
  assert.deepEqual(atObserver, ['users-list', 'user-left']);
  await sc.presenceBarrier(observer, a);
  assert.deepEqual(observer.received('user-left-call', () => true, since[2]), [], 'a user not in the call got user-left-call');
  assert.equal(a.received('user-left', (x) => x === b.userId, since[0]).length, 1);
  // b is gone from the call: a fresh join lists a and c only.
  const d = await sc.user('d');
  assert.deepEqual(await joinCall(d, callId), [callUser(a), callUser(c), callUser(d)]);
});

scenario('disconnect leaves every call of the user; a call left empty ends', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const shared = sc.id('shared');
  const alone = sc.id('alone');
  await startCall(a, shared, [b]);
  await joinCall(b, shared);
  await startCall(b, alone, [a]); // only b is in it
  const since = a.mark();
  b.close();
  const left = await a.waitFor('user-left-call', forCall(shared), { since });
  assert.deepEqual(left, { callId: shared, userId: b.userId, participants: [callUser(a)] });
  await a.waitFor('user-left', (x) => x === b.userId, { since });
  await assertCallGone(a, alone);
  assert.deepEqual(a.received('user-left-call', forCall(alone), since), [], 'a was never in the call that ended');
});

scenario('the socket in a call goes while another socket of the user stays online: user-left-call, no user-left', async (sc) => {
  const a = await sc.user('a');
  const b1 = await sc.user('b');
  const b2 = await sc.socketOf(b1, 'b-2'); // online, not in the call
  const callId = sc.id('call');
  await startCall(a, callId, [b1]);
  await joinCall(b1, callId);
  const since = a.mark();
  b1.close();
  const left = await a.waitFor('user-left-call', forCall(callId), { since });
  assert.deepEqual(left, { callId, userId: b1.userId, participants: [callUser(a)] });
  await sc.presenceBarrier(a, b2);
  assert.deepEqual(a.received('user-left', (x) => x === b1.userId, since), [], 'user-left while a socket remains');
  assert.ok(b2.connected);
});

scenario('one of two sockets in a call going tells nobody; the last one going is the user leaving', async (sc) => {
  const a = await sc.user('a');
  const b1 = await sc.user('b');
  const b2 = await sc.socketOf(b1, 'b-2');
  const callId = sc.id('call');
  await startCall(a, callId, [b1]);
  await joinCall(b1, callId);
  await joinCall(b2, callId);
  const since = a.mark();
  b1.close();
  await sc.presenceBarrier(a);
  // c joins after b1 went: b is still in the call through b2, and a heard nothing about b.
  const c = await sc.user('c');
  const abc = [callUser(a), callUser(b1), callUser(c)];
  assert.deepEqual(await joinCall(c, callId), abc);
  const joined = await a.waitFor('user-joined-call', (p) => p?.user?.id === c.userId, { since });
  assert.deepEqual(joined.participants, abc);
  assert.deepEqual(a.received('user-left-call', () => true, since), [], 'one of two sockets leaving was told');
  assert.deepEqual(a.received('user-left', (x) => x === b1.userId, since), []);
  b2.close();
  const left = await a.waitFor('user-left-call', (p) => p?.callId === callId && p.userId === b1.userId, { since });
  assert.deepEqual(left.participants, [callUser(a), callUser(c)]);
  await a.waitFor('user-left', (x) => x === b1.userId, { since });
});

scenario('an unregistered socket going away broadcasts nothing', async (sc) => {
  const a = await sc.user('a');
  const lurker = await sc.connect('lurker');
  const since = a.mark();
  lurker.close();
  const probeId = await sc.presenceBarrier(a);
  assert.deepEqual(a.received('user-left', () => true, since), [], 'user-left for an unregistered socket');
  const lists = a.received('users-list', () => true, since);
  assert.ok(lists.every((l) => l.some((u) => u.id === probeId)), 'a users-list was sent for the unregistered socket');
  assert.ok(lists.length >= 1);
});

scenario('an abrupt transport close (no disconnect packet) turns the session away: user-reconnecting, then the usual cleanup once the grace ran out', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  const since = a.mark();
  // Kill the TCP connection under the websocket without a close handshake.
  const ws = b.socket.io.engine.transport.ws;
  assert.ok(ws, 'websocket transport expected');
  const cut = Date.now();
  ws.terminate();
  // At once: the peers in b's calls hear that b is reconnecting; b stays in presence and the call.
  const reconnecting = await a.waitFor('user-reconnecting', forCall(callId), { since });
  assert.deepEqual(reconnecting, { callId, userId: b.userId });
  // Nobody resumes b: once the grace ran out, the cleanup of a disconnect.
  const bound = RESUME_GRACE_MS + 3_000;
  const left = await a.waitFor('user-left-call', forCall(callId), { since, timeoutMs: bound, what: 'cleanup after the grace' });
  assert.deepEqual(left, { callId, userId: b.userId, participants: [callUser(a)] });
  await a.waitFor('user-left', (x) => x === b.userId, { since });
  await a.waitFor('users-list', lacks(b.userId), { since });
  const aboutB = (e) =>
    (e.event === 'user-reconnecting' && e.args[0]?.userId === b.userId) ||
    (e.event === 'user-reconnected' && e.args[0]?.userId === b.userId) ||
    (e.event === 'user-left-call' && e.args[0]?.userId === b.userId) ||
    (e.event === 'users-list' && lacks(b.userId)(e.args[0])) ||
    (e.event === 'user-left' && e.args[0] === b.userId);
  const seen = a.eventsSince(since).filter(aboutB);
  assert.deepEqual(
    seen.map((e) => e.event),
    ['user-reconnecting', 'user-left-call', 'users-list', 'user-left'],
    'order at a: reconnecting first, then the cleanup of a disconnect',
  );
  // Not before the grace (a little slack for the clocks of two processes), not long after it.
  const cleanupAt = seen[1].at - cut;
  assert.ok(cleanupAt >= RESUME_GRACE_MS - 500, `cleanup ${cleanupAt}ms after the cut, before the ${RESUME_GRACE_MS}ms grace`);
  assert.ok(cleanupAt <= bound, `cleanup ${cleanupAt}ms after the cut, over ${bound}ms`);
  assert.ok(seen[0].at - cut < RESUME_GRACE_MS - 500, `user-reconnecting only ${seen[0].at - cut}ms after the cut`);
  // The call lost b and goes on with a alone.
  const c = await sc.user('c');
  assert.deepEqual(await joinCall(c, callId), [callUser(a), callUser(c)]);
});
