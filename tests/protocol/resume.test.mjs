// Resume (extension): a socket gone without a goodbye leaves its session away for RESUME_GRACE_MS;
// user-reconnecting / user-reconnected, resume by token (or as the user's only away session),
// relays kept and replayed with seq, refused tokens, cleanup after the grace.
import assert from 'node:assert/strict';
import {
  assertAckError,
  assertPublicUser,
  callUser,
  joinCall,
  protocolSuite,
  RESUME_GRACE_MS,
  show,
  startCall,
} from './harness.mjs';

const { scenario } = protocolSuite();

const GRACE = RESUME_GRACE_MS;
/** When a resume happens in these tests: well inside the grace, yet clearly after the cut. */
const RESUME_AFTER_MS = Math.min(1_000, GRACE / 2);
/** How long after the grace the cleanup of a session nobody resumed may come at the latest. */
const CLEANUP_SLACK_MS = 3_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const forCall = (callId) => (p) => p?.callId === callId;
const lists = (id) => (list) => Array.isArray(list) && list.some((u) => u?.id === id);
const lacks = (id) => (list) => Array.isArray(list) && !list.some((u) => u?.id === id);
const RELAYS = ['webrtc-offer', 'webrtc-answer', 'webrtc-ice-candidate'];

/** The keys of every successful user-joined ack while a resume grace is set. */
const ACK_KEYS = ['ok', 'recovered', 'resumeToken', 'resumed', 'user'];

/** The gateway other than `client`'s (the same one in the single topology). */
const otherGateway = (client) => (client.gatewayIndex + 1) % 2;

/**
 * Connects and sends `user-joined` { id, username, ...fields }; resolves with { client, ack }
 * (the ack unchecked). On success the client is this user.
 */
async function joinAs(sc, label, { id, username, gateway, ...fields }) {
  const client = await sc.connect(label, gateway === undefined ? {} : { gateway });
  const since = client.mark();
  const ack = await client.emitWithAck('user-joined', { id, username, ...fields });
  if (ack?.ok === true) {
    client.userId = id;
    client.username = username;
  }
  client.joinedMark = since;
  return { client, ack };
}

/** Asserts a successful user-joined ack of this extension; returns it. */
function assertJoinAck(ack, { resumed, recovered, user }, context) {
  assert.equal(ack?.ok, true, `${context}: not acked ok: ${show(ack)}`);
  assert.deepEqual(Object.keys(ack).sort(), ACK_KEYS, `${context}: ack keys of ${show(ack)}`);
  assert.equal(ack.resumed, resumed, `${context}: resumed`);
  assert.equal(ack.recovered, recovered, `${context}: recovered`);
  assert.equal(typeof ack.resumeToken, 'string', `${context}: resumeToken is a string`);
  assert.ok(ack.resumeToken.length > 0, `${context}: resumeToken is empty`);
  assertPublicUser(ack.user, user, `${context}: ack.user`);
  return ack;
}

/**
 * A user whose client speaks resume: its first user-joined carries `resumeToken: null`.
 * Returns the client, with `token` (its resume token) and `record` (its public user record).
 */
async function resumeUser(sc, label, options = {}) {
  const id = sc.id(label);
  const username = `${label}-name`;
  const { client, ack } = await joinAs(sc, label, { id, username, resumeToken: null, ...options });
  assertJoinAck(ack, { resumed: false, recovered: false, user: { id, username } }, `${label}: first user-joined`);
  client.token = ack.resumeToken;
  client.record = ack.user;
  await client.waitFor('users-list', lists(id), { since: client.joinedMark });
  return client;
}

/** Kills the TCP connection under `client`'s websocket without any close packet; returns when. */
function cut(client) {
  const ws = client.socket.io.engine.transport.ws;
  assert.ok(ws, `${client.label}: websocket transport expected`);
  ws.terminate();
  return Date.now();
}

/** `user` going away, as a peer in call `callId` hears it. */
async function awaitReconnecting(peer, user, callId, since) {
  const got = await peer.waitFor('user-reconnecting', (p) => p?.callId === callId && p.userId === user.userId, {
    since,
    what: `${user.label} away`,
  });
  assert.deepEqual(got, { callId, userId: user.userId }, `${peer.label}: user-reconnecting payload`);
}

/** The events at `peer` since `since` that would mean `userId` left or (re)joined. */
function leavesAndJoins(peer, userId, since) {
  return peer
    .eventsSince(since)
    .filter(
      (e) =>
        (e.event === 'user-left-call' && e.args[0]?.userId === userId) ||
        (e.event === 'user-joined-call' && e.args[0]?.user?.id === userId) ||
        (e.event === 'user-left' && e.args[0] === userId) ||
        (e.event === 'user-joined' && e.args[0]?.id === userId) ||
        (e.event === 'users-list' && lacks(userId)(e.args[0])),
    )
    .map((e) => `${e.event} ${show(e.args[0], 200)}`);
}

/** The relays `client` received since `since`, as { event, payload }. */
const relaysOf = (client, since) =>
  client
    .eventsSince(since)
    .filter((e) => RELAYS.includes(e.event))
    .map((e) => ({ event: e.event, payload: e.args[0] }));

/** Sends a relay and asserts it was acked ok (kept, for an away target). */
async function relay(from, to, callId, event, body) {
  const key = { 'webrtc-offer': 'offer', 'webrtc-answer': 'answer', 'webrtc-ice-candidate': 'candidate' }[event];
  const ack = await from.emitWithAck(event, { callId, targetUserId: to.userId, [key]: body });
  assert.deepEqual(ack, { ok: true }, `${from.label}: ${event} ${show(body)} to ${to.label}: ack`);
  return { event, key, body };
}

/** What `sent` looks like at a target (with `seq` first when it numbers its relays). */
const asReceived = (sent, callId, fromUserId, seq) => ({
  event: sent.event,
  payload: { ...(seq === undefined ? {} : { seq }), callId, fromUserId, [sent.key]: sent.body },
});

/** a (gateway 0) starts call `callId` and `b` joins it; a has heard of it. */
async function inCall(a, b, callId) {
  const since = a.mark();
  await startCall(a, callId, [b]);
  await b.waitFor('incoming-call', forCall(callId));
  await joinCall(b, callId);
  await a.waitFor('user-joined-call', (p) => p?.callId === callId && p.user?.id === b.userId, { since });
}

scenario('resume by token through the other gateway: reconnecting then reconnected, no leave, kept relays replayed in order numbered after lastSeq', async (sc) => {
  const a = await sc.user('a'); // never sent resumeToken: its relays carry no seq
  const b = await resumeUser(sc, 'b');
  const callId = sc.id('call');
  await inCall(a, b, callId);

  // Two relays reach b's first socket: seq 1 and 2, `seq` the first member.
  const before = [
    await relay(a, b, callId, 'webrtc-offer', { sdp: 'first offer' }),
    await relay(a, b, callId, 'webrtc-ice-candidate', { candidate: 'first candidate' }),
  ];
  await b.waitFor('webrtc-ice-candidate', forCall(callId));
  const delivered = relaysOf(b, 0);
  assert.deepEqual(delivered, before.map((s, i) => asReceived(s, callId, a.userId, i + 1)), 'relays before the cut');
  for (const { payload } of delivered) assert.equal(Object.keys(payload)[0], 'seq', `seq is the first member: ${show(payload)}`);
  const lastSeq = delivered.at(-1).payload.seq;
  // b's own relays reach a (which does not speak resume) unnumbered.
  const answer = await relay(b, a, callId, 'webrtc-answer', { sdp: 'b answers' });
  assert.deepEqual(await a.waitFor('webrtc-answer', forCall(callId)), asReceived(answer, callId, b.userId).payload);

  const sinceA = a.mark();
  const cutAt = cut(b);
  await awaitReconnecting(a, b, callId, sinceA);
  // While b is away: an offer and five candidates, each acked to a, kept for b.
  const whileAway = [await relay(a, b, callId, 'webrtc-offer', { sdp: 'offer while away' })];
  for (let n = 1; n <= 5; n++) whileAway.push(await relay(a, b, callId, 'webrtc-ice-candidate', { candidate: `away ${n}` }));
  assert.deepEqual(leavesAndJoins(a, b.userId, sinceA), [], 'a heard b leave while b was away');

  await sleep(cutAt + RESUME_AFTER_MS - Date.now());
  const { client: b2, ack } = await joinAs(sc, 'b-again', {
    id: b.userId,
    username: b.username,
    resumeToken: b.token,
    lastSeq,
    gateway: otherGateway(b),
  });
  assertJoinAck(ack, { resumed: true, recovered: true, user: { id: b.userId, username: b.username } }, 'resume');
  assert.notEqual(ack.resumeToken, b.token, 'a resume hands out a new token');
  assert.deepEqual(ack.user, b.record, 'the resumed session is the same presence record (same joinedAt)');
  const reconnected = await a.waitFor('user-reconnected', (p) => p?.callId === callId && p.userId === b.userId, { since: sinceA });
  assert.deepEqual(reconnected, { callId, userId: b.userId });

  // A relay sent after the resume comes after the kept ones.
  const after = await relay(a, b2, callId, 'webrtc-ice-candidate', { candidate: 'after the resume' });
  await b2.waitFor('webrtc-ice-candidate', (p) => p?.candidate?.candidate === 'after the resume', { since: b2.joinedMark });
  // b can relay back to a, and a once more to b.
  const back = await relay(b2, a, callId, 'webrtc-answer', { sdp: 'b answers again' });
  const atA = await a.waitFor('webrtc-answer', (p) => p?.answer?.sdp === 'b answers again', { since: sinceA });
  assert.deepEqual(atA, asReceived(back, callId, b.userId).payload, 'a relay from the resumed socket');
  const last = await relay(a, b2, callId, 'webrtc-offer', { sdp: 'last offer' });
  await b2.waitFor('webrtc-offer', (p) => p?.offer?.sdp === 'last offer', { since: b2.joinedMark });

  const expected = [...whileAway, after, last].map((s, i) => asReceived(s, callId, a.userId, lastSeq + 1 + i));
  assert.deepEqual(relaysOf(b2, b2.joinedMark), expected, 'kept relays exactly once, in order, numbered lastSeq+1..., then the newer ones');
  assert.deepEqual(relaysOf(b, 0), delivered, 'the cut socket got nothing more');

  // The resuming socket got a users-list with everyone.
  const list = await b2.waitFor('users-list', lists(b.userId), { since: b2.joinedMark });
  assert.ok(lists(a.userId)(list), `users-list at the resumed socket lacks a: ${show(list)}`);

  // Past the first socket's grace: still nothing about b leaving, and b is still in the call.
  await sleep(cutAt + GRACE + 1_000 - Date.now());
  const c = await sc.user('c');
  assert.deepEqual(await joinCall(c, callId), [callUser(a), callUser(b2), callUser(c)], 'b still in the call past the grace');
  await a.waitFor('user-joined-call', (p) => p?.callId === callId && p.user?.id === c.userId, { since: sinceA });
  assert.deepEqual(leavesAndJoins(a, b.userId, sinceA), [], 'a heard b leave or join around the resume');
  const aboutB = a
    .eventsSince(sinceA)
    .filter((e) => ['user-reconnecting', 'user-reconnected'].includes(e.event) && e.args[0]?.userId === b.userId)
    .map((e) => e.event);
  assert.deepEqual(aboutB, ['user-reconnecting', 'user-reconnected'], 'a heard each once, in order');
  assert.deepEqual(b2.received('user-reconnected', () => true, b2.joinedMark), [], 'the resumed socket heard of itself');
});

scenario('a client that knows nothing of tokens takes its only away session over by user id: no seq, resumed, no leave', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b'); // a legacy client: never sends resumeToken
  const callId = sc.id('call');
  await inCall(a, b, callId);
  const first = await relay(a, b, callId, 'webrtc-offer', { sdp: 'before' });
  assert.deepEqual(await b.waitFor('webrtc-offer', forCall(callId)), asReceived(first, callId, a.userId).payload, 'no seq for a legacy client');

  const sinceA = a.mark();
  const cutAt = cut(b);
  await awaitReconnecting(a, b, callId, sinceA);
  const whileAway = [
    await relay(a, b, callId, 'webrtc-offer', { sdp: 'again' }),
    await relay(a, b, callId, 'webrtc-ice-candidate', { candidate: 'k1' }),
    await relay(a, b, callId, 'webrtc-ice-candidate', { candidate: 'k2' }),
  ];
  await sleep(cutAt + RESUME_AFTER_MS - Date.now());
  const { client: b2, ack } = await joinAs(sc, 'b-again', { id: b.userId, username: b.username, gateway: otherGateway(b) });
  // A relay had reached the first socket and the client cannot say it got it: maybe something was lost.
  assertJoinAck(ack, { resumed: true, recovered: false, user: { id: b.userId, username: b.username } }, 'legacy resume');
  await a.waitFor('user-reconnected', (p) => p?.callId === callId && p.userId === b.userId, { since: sinceA });
  const after = await relay(a, b2, callId, 'webrtc-answer', { sdp: 'after' });
  await b2.waitFor('webrtc-answer', forCall(callId), { since: b2.joinedMark });
  assert.deepEqual(
    relaysOf(b2, b2.joinedMark),
    [...whileAway, after].map((s) => asReceived(s, callId, a.userId)),
    'kept relays in order, without seq, then the newer one',
  );
  const back = await relay(b2, a, callId, 'webrtc-ice-candidate', { candidate: 'from b again' });
  assert.deepEqual(
    await a.waitFor('webrtc-ice-candidate', (p) => p?.candidate?.candidate === 'from b again', { since: sinceA }),
    asReceived(back, callId, b.userId).payload,
  );
  await b2.waitFor('users-list', (l) => lists(b.userId)(l) && lists(a.userId)(l), { since: b2.joinedMark });
  // Past the grace of the first socket: b is still there.
  await sleep(cutAt + GRACE + 1_000 - Date.now());
  await sc.presenceBarrier(a);
  assert.deepEqual(leavesAndJoins(a, b.userId, sinceA), [], 'a heard b leave or join');
  assert.equal(a.received('user-reconnected', (p) => p?.userId === b.userId, sinceA).length, 1);
});

scenario('a deliberate disconnect still leaves at once: no user-reconnecting, and its token resumes nothing', async (sc) => {
  const a = await sc.user('a');
  const b = await resumeUser(sc, 'b');
  const callId = sc.id('call');
  await inCall(a, b, callId);
  const since = a.mark();
  const closedAt = Date.now();
  b.close();
  const left = await a.waitFor('user-left-call', forCall(callId), { since });
  const leftAfter = Date.now() - closedAt;
  assert.deepEqual(left, { callId, userId: b.userId, participants: [callUser(a)] });
  await a.waitFor('user-left', (x) => x === b.userId, { since });
  await a.waitFor('users-list', lacks(b.userId), { since });
  assert.ok(leftAfter < GRACE / 2, `user-left-call ${leftAfter}ms after a deliberate disconnect (grace ${GRACE}ms)`);
  assert.deepEqual(a.received('user-reconnecting', () => true, since), [], 'user-reconnecting after a goodbye');
  // Nothing is left to resume.
  const { client: b2, ack } = await joinAs(sc, 'b-again', { id: b.userId, username: b.username, resumeToken: b.token, lastSeq: 0 });
  assertAckError(ack, 'resume-refused', 'the token of a session that said goodbye');
  // The refused socket may still register afresh.
  const fresh = await b2.emitWithAck('user-joined', { id: b.userId, username: b.username, resumeToken: null });
  assertJoinAck(fresh, { resumed: false, recovered: false, user: { id: b.userId, username: b.username } }, 'fresh registration');
  await a.waitFor('user-joined', (u) => u?.id === b.userId, { since });
});

scenario('a user who never comes back is cleaned up once the grace ran out, not before; its token then resumes nothing', async (sc) => {
  const a = await sc.user('a');
  const b = await resumeUser(sc, 'b');
  const observer = await sc.user('observer'); // online, not in the call
  const callId = sc.id('call');
  await inCall(a, b, callId);
  const since = [a.mark(), observer.mark()];
  const cutAt = cut(b);
  await awaitReconnecting(a, b, callId, since[0]);
  const kept = await relay(a, b, callId, 'webrtc-offer', { sdp: 'never read' });
  assert.ok(kept);
  const bound = GRACE + CLEANUP_SLACK_MS;
  await a.waitFor('user-left-call', forCall(callId), { since: since[0], timeoutMs: bound, what: 'cleanup after the grace' });
  for (const [i, client] of [a, observer].entries()) {
    await client.waitFor('user-left', (x) => x === b.userId, { since: since[i], timeoutMs: bound });
    await client.waitFor('users-list', lacks(b.userId), { since: since[i] });
  }
  const aboutB = (e) =>
    (e.event === 'user-reconnecting' && e.args[0]?.userId === b.userId) ||
    (e.event === 'user-left-call' && e.args[0]?.userId === b.userId) ||
    (e.event === 'users-list' && lacks(b.userId)(e.args[0])) ||
    (e.event === 'user-left' && e.args[0] === b.userId);
  const atA = a.eventsSince(since[0]).filter(aboutB);
  assert.deepEqual(atA.map((e) => e.event), ['user-reconnecting', 'user-left-call', 'users-list', 'user-left'], 'order at a');
  assert.deepEqual(atA[1].args[0], { callId, userId: b.userId, participants: [callUser(a)] });
  const atObserver = observer.eventsSince(since[1]).filter(aboutB);
  assert.deepEqual(atObserver.map((e) => e.event), ['users-list', 'user-left'], 'order at the observer (not in the call)');
  for (const [who, e] of [['a', atA[1]], ['observer', atObserver[0]]]) {
    const after = e.at - cutAt;
    assert.ok(after >= GRACE - 500, `${who}: cleanup ${after}ms after the cut, before the ${GRACE}ms grace`);
    assert.ok(after <= bound, `${who}: cleanup ${after}ms after the cut`);
  }
  // Too late now.
  const { ack } = await joinAs(sc, 'b-late', { id: b.userId, username: b.username, resumeToken: b.token, lastSeq: 0 });
  assertAckError(ack, 'resume-refused', 'an expired token');
  assertAckError(
    await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: { sdp: 'to nobody' } }),
    'user-offline',
    'a relay to the user who left',
  );
});

scenario('a forged token, another user\'s token and a spent token are refused and change nothing', async (sc) => {
  const a = await sc.user('a');
  const b = await resumeUser(sc, 'b');
  const c = await resumeUser(sc, 'c'); // online, in no call
  const callId = sc.id('call');
  await inCall(a, b, callId);
  const sinceA = a.mark();
  const sinceC = c.mark();
  const baseline = await sc.status();

  /** A fresh socket tries to take b's (or `id`'s) session over with `resumeToken`: refused. */
  const refused = async (label, resumeToken, id = b.userId) => {
    const { client, ack } = await joinAs(sc, label, { id, username: `${label}-name`, resumeToken, lastSeq: 0, gateway: otherGateway(b) });
    assertAckError(ack, 'resume-refused', label);
    return client;
  };

  let cutAt = cut(b);
  await awaitReconnecting(a, b, callId, sinceA);
  const kept = await relay(a, b, callId, 'webrtc-offer', { sdp: 'kept through refusals' });
  await refused('forged', 'AAAAAAAAAAAAAAAAAAAAAA');
  await refused('forged-long', 'x'.repeat(100));
  await refused('c-token', c.token); // another user's token, for b
  await refused('b-token-for-c', b.token, c.userId); // b's token, for c (who is online)
  // c is untouched: still online, and it heard nothing about b.
  assert.ok(c.connected);
  // Nothing changed: b is still away and resumable with its token, from the start of the grace.
  assert.deepEqual(leavesAndJoins(a, b.userId, sinceA), [], 'a heard b leave or join');
  assert.deepEqual(a.received('user-reconnected', () => true, sinceA), [], 'a heard b reconnect on a refused attempt');
  const status = await sc.status();
  assert.equal(status.onlineUsers, baseline.onlineUsers, `onlineUsers changed: ${show(status)} vs ${show(baseline)}`);
  assert.equal(status.activeCalls, baseline.activeCalls);

  await sleep(cutAt + RESUME_AFTER_MS / 2 - Date.now());
  const { client: b2, ack } = await joinAs(sc, 'b-2', { id: b.userId, username: b.username, resumeToken: b.token, lastSeq: 0, gateway: otherGateway(b) });
  assertJoinAck(ack, { resumed: true, recovered: true, user: { id: b.userId, username: b.username } }, 'resume with the right token');
  await a.waitFor('user-reconnected', (p) => p?.userId === b.userId, { since: sinceA });
  await b2.waitFor('webrtc-offer', forCall(callId), { since: b2.joinedMark });
  assert.deepEqual(relaysOf(b2, b2.joinedMark), [asReceived(kept, callId, a.userId, 1)], 'the kept relay, once');

  // Away again: the token just used is spent, the new one works.
  const sinceA2 = a.mark();
  cutAt = cut(b2);
  await awaitReconnecting(a, b2, callId, sinceA2);
  const spent = await refused('spent', b.token);
  assert.deepEqual(a.received('user-reconnected', () => true, sinceA2), [], 'a heard b reconnect on a spent token');
  // The refused socket is left unregistered, as before it tried: the right token works on it.
  const again = await spent.emitWithAck('user-joined', { id: b.userId, username: b.username, resumeToken: ack.resumeToken, lastSeq: 1 });
  assertJoinAck(again, { resumed: true, recovered: true, user: { id: b.userId, username: b.username } }, 'resume with the new token');
  assert.ok(Date.now() - cutAt < GRACE, 'resumed inside the grace');
  spent.userId = b.userId;
  spent.username = b.username;
  await a.waitFor('user-reconnected', (p) => p?.userId === b.userId, { since: sinceA2 });
  const hello = await relay(a, spent, callId, 'webrtc-ice-candidate', { candidate: 'hello again' });
  assert.deepEqual(
    await spent.waitFor('webrtc-ice-candidate', forCall(callId)),
    asReceived(hello, callId, a.userId, 2).payload,
    'the counter goes on across resumes',
  );
  await sc.presenceBarrier(a, c);
  assert.deepEqual(leavesAndJoins(a, b.userId, sinceA), [], 'a heard b leave or join');
  assert.deepEqual(leavesAndJoins(c, b.userId, sinceC), [], 'c heard b leave or join');
  assert.deepEqual(c.received('user-reconnecting', () => true, sinceC), [], 'c is in no call with b');
  assert.deepEqual(c.received('user-reconnected', () => true, sinceC), [], 'c is in no call with b');
});

scenario('the resuming socket gets a users-list with everyone; users outside the call hear nothing of the resume', async (sc) => {
  const a = await sc.user('a');
  const b = await resumeUser(sc, 'b');
  const observer = await sc.user('observer');
  const lurker = await sc.connect('lurker'); // connected, never registered
  const callId = sc.id('call');
  await inCall(a, b, callId);
  const since = [observer.mark(), lurker.mark()];
  const sinceA = a.mark();
  const cutAt = cut(b);
  await awaitReconnecting(a, b, callId, sinceA);
  await sleep(cutAt + RESUME_AFTER_MS / 2 - Date.now());
  const { client: b2, ack } = await joinAs(sc, 'b-again', { id: b.userId, username: b.username, resumeToken: b.token, gateway: otherGateway(b) });
  assertJoinAck(ack, { resumed: true, recovered: true, user: { id: b.userId, username: b.username } }, 'resume without lastSeq, nothing relayed');
  const list = await b2.waitFor('users-list', lists(b.userId), { since: b2.joinedMark });
  await b2.waitFor('ice-servers', () => true, { since: b2.joinedMark, what: 'ice-servers after a resume' });
  const ids = list.map((u) => u.id);
  for (const user of [a, b, observer]) assert.ok(ids.includes(user.userId), `users-list lacks ${user.label}: ${show(list)}`);
  assert.equal(ids.filter((id) => id === b.userId).length, 1, 'b listed once');
  for (const record of list) assertPublicUser(record, {}, 'users-list record');
  assert.deepEqual(list.find((u) => u.id === b.userId), b.record, 'b listed as it registered first');
  await a.waitFor('user-reconnected', (p) => p?.userId === b.userId, { since: sinceA });
  await sc.presenceBarrier(observer, lurker);
  for (const [i, client] of [observer, lurker].entries()) {
    assert.deepEqual(leavesAndJoins(client, b.userId, since[i]), [], `${client.label} heard b leave or join`);
    const extension = client.eventsSince(since[i]).filter((e) => ['user-reconnecting', 'user-reconnected'].includes(e.event));
    assert.deepEqual(extension, [], `${client.label} is in no call with b`);
  }
});

scenario('recovered is false when the client may have missed a relay; the seq counter goes on regardless', async (sc) => {
  const a = await sc.user('a');
  const b = await resumeUser(sc, 'b'); // will say it got fewer relays than it was given
  const d = await resumeUser(sc, 'd'); // will not say what it got
  const callId = sc.id('call');
  await inCall(a, b, callId);
  await joinCall(d, callId);
  for (const target of [b, d]) {
    for (let n = 1; n <= 3; n++) await relay(a, target, callId, 'webrtc-ice-candidate', { candidate: `given ${n}` });
    await target.waitFor('webrtc-ice-candidate', (p) => p?.candidate?.candidate === 'given 3');
    assert.deepEqual(relaysOf(target, 0).map((r) => r.payload.seq), [1, 2, 3], `${target.label}: seq of the relays given`);
  }
  const sinceA = a.mark();
  const cutAt = cut(b);
  cut(d);
  await awaitReconnecting(a, b, callId, sinceA);
  await awaitReconnecting(a, d, callId, sinceA);
  const kept = {};
  for (const target of [b, d]) {
    kept[target.label] = [
      await relay(a, target, callId, 'webrtc-offer', { sdp: `kept for ${target.label}` }),
      await relay(a, target, callId, 'webrtc-ice-candidate', { candidate: `kept for ${target.label}` }),
    ];
  }
  await sleep(cutAt + RESUME_AFTER_MS / 2 - Date.now());
  const cases = [
    [b, { lastSeq: 2 }, 'lastSeq lower than what was given'],
    [d, {}, 'no lastSeq after relays were given'],
  ];
  for (const [user, extra, what] of cases) {
    const { client, ack } = await joinAs(sc, `${user.label}-again`, {
      id: user.userId,
      username: user.username,
      resumeToken: user.token,
      ...extra,
      gateway: otherGateway(user),
    });
    assertJoinAck(ack, { resumed: true, recovered: false, user: { id: user.userId, username: user.username } }, `${user.label}: ${what}`);
    await client.waitFor('webrtc-ice-candidate', forCall(callId), { since: client.joinedMark });
    assert.deepEqual(
      relaysOf(client, client.joinedMark),
      kept[user.label].map((s, i) => asReceived(s, callId, a.userId, 4 + i)),
      `${user.label}: the kept relays, numbered after the 3 given`,
    );
    await a.waitFor('user-reconnected', (p) => p?.userId === user.userId, { since: sinceA });
  }
  assert.deepEqual(leavesAndJoins(a, b.userId, sinceA), []);
  assert.deepEqual(leavesAndJoins(a, d.userId, sinceA), []);
});

scenario('a socket that sends user-joined again keeps numbering its relays, and a later resume counts them all', async (sc) => {
  const a = await sc.user('a');
  const b = await resumeUser(sc, 'b');
  const callId = sc.id('call');
  await inCall(a, b, callId);
  for (let n = 1; n <= 2; n++) await relay(a, b, callId, 'webrtc-ice-candidate', { candidate: `before ${n}` });
  await b.waitFor('webrtc-ice-candidate', (p) => p?.candidate?.candidate === 'before 2');
  // The same socket registers again, with a new username (a client may refresh its identity).
  const username = `${b.username}-renamed`;
  const again = await b.emitWithAck('user-joined', { id: b.userId, username, resumeToken: null });
  assertJoinAck(again, { resumed: false, recovered: false, user: { id: b.userId, username } }, 'b: user-joined again');
  await relay(a, b, callId, 'webrtc-ice-candidate', { candidate: 'after' });
  await b.waitFor('webrtc-ice-candidate', (p) => p?.candidate?.candidate === 'after');
  assert.deepEqual(relaysOf(b, 0).map((r) => r.payload.seq), [1, 2, 3], 'b: seq goes on across the second user-joined');
  // Away, then back with everything it got: recovered, the kept relay numbered on.
  const sinceA = a.mark();
  const cutAt = cut(b);
  await awaitReconnecting(a, b, callId, sinceA);
  const kept = await relay(a, b, callId, 'webrtc-offer', { sdp: 'kept' });
  await sleep(cutAt + RESUME_AFTER_MS / 2 - Date.now());
  const { client, ack } = await joinAs(sc, 'b-again', {
    id: b.userId,
    username,
    resumeToken: again.resumeToken,
    lastSeq: 3,
    gateway: otherGateway(b),
  });
  assertJoinAck(ack, { resumed: true, recovered: true, user: { id: b.userId, username } }, 'b: resumed');
  await client.waitFor('webrtc-offer', forCall(callId), { since: client.joinedMark });
  assert.deepEqual(relaysOf(client, client.joinedMark), [asReceived(kept, callId, a.userId, 4)], 'b: the kept relay, numbered 4');
});
