// Abuse limits: EVENTS_PER_SEC / EVENTS_BURST / ABUSE_DISCONNECT_AFTER, MAX_CALL_PARTICIPANTS, MAX_CALLS_PER_USER, MAX_SOCKETS_PER_USER.
import assert from 'node:assert/strict';
import { ACK_TIMEOUT_MS, assertAckError, callUser, joinCall, leaveCall, protocolSuite, READY_POLL_MS, show, startCall } from './harness.mjs';

const { scenario } = protocolSuite({
  env: {
    EVENTS_PER_SEC: '5',
    EVENTS_BURST: '10',
    ABUSE_DISCONNECT_AFTER: '20',
    MAX_CALL_PARTICIPANTS: '2',
    MAX_CALLS_PER_USER: '1',
    MAX_SOCKETS_PER_USER: '2',
  },
});

const forCall = (callId) => (p) => p?.callId === callId;
const isOk = (ack) => ack?.ok === true && Object.keys(ack).length === 1;
const isRateLimited = (ack) => ack?.ok === false && ack.error?.code === 'rate-limited';

/** Emits `count` ICE candidates {seq} from `from` to `to` at once; resolves with each ack (or {lost}). */
function flood(from, to, callId, count, firstSeq = 0) {
  return Promise.all(
    Array.from({ length: count }, (_, i) =>
      from.socket
        .timeout(ACK_TIMEOUT_MS)
        .emitWithAck('webrtc-ice-candidate', { callId, targetUserId: to.userId, candidate: { seq: firstSeq + i } })
        .catch((err) => ({ lost: err.message })),
    ),
  );
}

/** a calls b, b joins: a relay path (a spends 2 events of its bucket, b 2). */
async function callPair(sc) {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  return { a, b, callId };
}

const seqsOf = (client, callId, since) => client.received('webrtc-ice-candidate', forCall(callId), since).map((p) => p.candidate.seq);

scenario('beyond EVENTS_BURST, events get rate-limited acks and are not processed; the rate refills the bucket', async (sc) => {
  const { a, b, callId } = await callPair(sc);
  const since = b.mark();
  const acks = await flood(a, b, callId, 15);
  assert.ok(acks.slice(0, 8).every(isOk), `the burst (10, 2 already spent) is accepted: ${show(acks)}`);
  for (const ack of acks) if (!isOk(ack)) assertAckError(ack, 'rate-limited', 'an event beyond the burst');
  const okSeqs = acks.flatMap((ack, seq) => (isOk(ack) ? [seq] : []));
  assert.ok(okSeqs.length <= 12, `at most the burst and a little refill pass: ${okSeqs.length} of 15`);
  // Bounded poll: at 5 events/s a token comes back within 200 ms.
  const deadline = Date.now() + 3_000;
  let ack;
  for (;;) {
    ack = await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: { sdp: 'after-refill' } });
    if (isOk(ack) || Date.now() > deadline) break;
    assertAckError(ack, 'rate-limited', 'while waiting for the refill');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.deepEqual(ack, { ok: true }, 'an event is accepted again once the bucket refilled');
  // Relays from one socket arrive in order: once the last one is there, all accepted ones are.
  await b.waitFor('webrtc-offer', (p) => p?.offer?.sdp === 'after-refill', { since });
  assert.deepEqual(seqsOf(b, callId, since), okSeqs, 'exactly the accepted candidates were relayed');
  assert.ok(a.connected, 'a few refusals do not disconnect');
});

scenario('call-message counts against the rate limit: beyond the burst, rate-limited and never posted', async (sc) => {
  const a = await sc.user('a', { auth: { calling: true } });
  const b = await sc.user('b', { auth: { calling: true } });
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  const since = b.mark();
  const acks = await Promise.all(
    Array.from({ length: 15 }, (_, i) =>
      a.socket
        .timeout(ACK_TIMEOUT_MS)
        .emitWithAck('call-message', { callId, text: `m${i}` })
        .catch((err) => ({ lost: err.message })),
    ),
  );
  const posted = acks.flatMap((ack, i) => (ack?.ok === true ? [`m${i}`] : []));
  for (const ack of acks) if (ack?.ok !== true) assertAckError(ack, 'rate-limited', 'a message beyond the burst');
  assert.ok(posted.length >= 7 && posted.length <= 12, `the burst (10, 2 spent) passes, the rest is refused: ${show(acks)}`);
  // Exactly the accepted messages reach the peer, in order: the last one accepted closes the list.
  await b.waitFor('call-message', (m) => m?.text === posted.at(-1), { since });
  assert.deepEqual(b.received('call-message', forCall(callId), since).map((m) => m.text), posted);
});

scenario('more than ABUSE_DISCONNECT_AFTER refusals: the server disconnects the socket and cleans its user up', async (sc) => {
  const { a, b, callId } = await callPair(sc);
  const since = b.mark();
  // First the burst, answered in full; then a flood past the abuse threshold.
  const acks = await flood(a, b, callId, 10);
  assert.ok(acks.slice(0, 8).every(isOk), `the burst is accepted: ${show(acks)}`);
  acks.push(...(await flood(a, b, callId, 40, acks.length)));
  const reason = await a.waitFor('$disconnect', () => true, { what: 'the server disconnecting the flooder' });
  assert.equal(reason, 'io server disconnect');
  const limited = acks.filter(isRateLimited).length;
  assert.ok(limited >= 20, `ABUSE_DISCONNECT_AFTER=20 refusals are answered before the disconnect (got ${limited})`);
  for (const ack of acks) if (!isOk(ack) && !ack.lost) assertAckError(ack, 'rate-limited');
  const lost = acks.filter((ack) => ack.lost).length;
  assert.ok(lost > 0, 'the disconnect came before the flood ended');
  // Cleanup for the others: a leaves the call, then goes offline.
  await b.waitFor('user-left-call', (p) => p?.callId === callId && p.userId === a.userId, { since });
  await b.waitFor('user-left', (id) => id === a.userId, { since });
  const refused = new Set(acks.flatMap((ack, seq) => (isRateLimited(ack) ? [seq] : [])));
  for (const seq of acks.flatMap((ack, s) => (isOk(ack) ? [s] : []))) {
    await b.waitFor('webrtc-ice-candidate', (p) => p?.callId === callId && p.candidate?.seq === seq, { since, what: `accepted candidate ${seq}` });
  }
  assert.deepEqual(seqsOf(b, callId, since).filter((seq) => refused.has(seq)), [], 'a rate-limited candidate was relayed');
});

scenario('MAX_CALL_PARTICIPANTS=2: a third socket gets call-full, nobody hears of it; a freed place can be taken', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const c = await sc.user('c');
  const a2 = await sc.socketOf(a, 'a-2');
  const callId = sc.id('call');
  await startCall(a, callId, [b, c]);
  await joinCall(b, callId);
  await a.waitFor('user-joined-call', (p) => p?.callId === callId && p.user?.id === b.userId);
  const since = [a, b].map((x) => x.mark());
  const cSince = c.mark();
  assertAckError(await c.emitWithAck('join-call', { callId, user: callUser(c) }), 'call-full', 'c joins a full call');
  assertAckError(await a2.emitWithAck('join-call', { callId, user: callUser(a2) }), 'call-full', "a's second socket (sockets count)");
  // Call events are ordered: once a hears b leave, a join of c would have been heard before.
  await leaveCall(b, callId);
  await a.waitFor('user-left-call', (p) => p?.callId === callId && p.userId === b.userId, { since: since[0] });
  for (const [i, x] of [a, b].entries()) {
    assert.deepEqual(x.received('user-joined-call', forCall(callId), since[i]), [], `${x.label}: user-joined-call for a refused join`);
  }
  assert.deepEqual(c.received('call-participants', forCall(callId), cSince), [], 'call-participants for a refused join');
  // b's place is free again.
  const participants = await joinCall(c, callId);
  assert.deepEqual(participants, [callUser(a), callUser(c)]);
  await a.waitFor('user-joined-call', (p) => p?.callId === callId && p.user?.id === c.userId, { since: since[0] });
});

scenario('MAX_CALLS_PER_USER=1: a second live call of the same user is too-many-calls until the first ends', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const a2 = await sc.socketOf(a, 'a-2');
  const first = sc.id('first');
  await startCall(a, first, [b]);
  await b.waitFor('incoming-call', forCall(first));
  const since = b.mark();
  for (const [socket, id] of [[a, sc.id('second')], [a2, sc.id('third')]]) {
    const ack = await socket.emitWithAck('start-call', { id, initiator: callUser(socket), participants: [{ id: b.userId }], isVideo: true });
    assertAckError(ack, 'too-many-calls', `${socket.label} starts ${id}`);
  }
  await startCall(b, sc.id('b-own'), []); // the limit is per user
  await joinCall(b, first);
  await leaveCall(a, first);
  const still = await a.emitWithAck('start-call', { id: sc.id('fourth'), initiator: callUser(a), participants: [], isVideo: true });
  assertAckError(still, 'too-many-calls', 'the first call is still live (b is in it)');
  await leaveCall(b, first); // the last one leaves: the call ends
  const again = sc.id('again');
  await startCall(a, again, [b]);
  await b.waitFor('incoming-call', forCall(again), { since });
  const invites = b.received('incoming-call', () => true, since).map((p) => p.callId);
  assert.deepEqual(invites, [again], 'incoming-call only for the calls that started');
});

scenario('MAX_SOCKETS_PER_USER=2: a third socket of the same user gets too-many-sockets; the other two still work', async (sc) => {
  const o = await sc.user('o');
  const a1 = await sc.user('a');
  const a2 = await sc.socketOf(a1, 'a-2');
  const a3 = await sc.connect('a-3');
  await o.waitFor('user-joined', (u) => u?.id === a1.userId);
  const since = o.mark();
  const before = await sc.status();
  assertAckError(await a3.emitWithAck('user-joined', { id: a1.userId, username: a1.username }), 'too-many-sockets');
  assertAckError(await a3.emitWithAck('start-call', { id: sc.id('x'), initiator: callUser(a1), participants: [], isVideo: true }), 'not-registered');
  await sc.presenceBarrier(o);
  assert.deepEqual(o.received('user-joined', (u) => u?.id === a1.userId, since), [], 'user-joined for the refused socket');
  assert.equal((await sc.status()).onlineUsers, before.onlineUsers + 1, 'only the barrier user came online');
  // a1 and a2 are still a's sockets: both are invited, either can join.
  const callId = sc.id('call');
  await startCall(o, callId, [a1]);
  await Promise.all([a1, a2].map((s) => s.waitFor('incoming-call', forCall(callId))));
  await joinCall(a2, callId);
  assert.deepEqual(await o.emitWithAck('webrtc-offer', { callId, targetUserId: a1.userId, offer: { sdp: 'x' } }), { ok: true });
  await a2.waitFor('webrtc-offer', forCall(callId));
  // Once a1 is gone, its place is free (bounded poll: its cleanup is asynchronous).
  a1.close();
  const deadline = Date.now() + 5_000;
  for (;;) {
    const ack = await a3.emitWithAck('user-joined', { id: a1.userId, username: a1.username });
    if (ack?.ok) break;
    assert.ok(Date.now() < deadline, `a3 still refused 5 s after a1 closed: ${show(ack)}`);
    assertAckError(ack, 'too-many-sockets');
    await new Promise((resolve) => setTimeout(resolve, 4 * READY_POLL_MS));
  }
});
