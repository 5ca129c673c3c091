// The client against the real gateway: registration, the users map (full and delta), a call with relays, ack errors, resume, goodbye.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MeetUpError } from '../index.js';
import { Gateway } from './gateway.mjs';
import { joined, opener, uniqueId } from './events.mjs';

/** `promise` rejects with a MeetUpError of `code` for `event`. */
async function rejectsWith(promise, code, event) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof MeetUpError, `a MeetUpError, not ${err}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.event, event);
    return true;
  });
}

/** a calls b, b answers: both in the call. */
async function inCall(a, b) {
  const { callId } = await a.client.startCall({ participants: [b.id] });
  await b.waitFor('incoming-call', (p) => p.callId === callId);
  const joinedAck = await b.client.joinCall(callId);
  assert.deepEqual(joinedAck.participants.map((p) => p.id), [a.id, b.id]);
  await a.waitFor('user-joined-call', (p) => p.callId === callId && p.user.id === b.id);
  return callId;
}

describe('MeetUpClient against the gateway', () => {
  let gateway;
  before(async () => {
    gateway = await Gateway.start();
  });
  after(() => gateway?.stop());

  test('register: the ack, a resume token, and the users map of everyone online', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Ann');
    assert.equal(a.ack.ok, true);
    assert.deepEqual(Object.keys(a.ack.user).sort(), ['id', 'joinedAt', 'username']);
    assert.equal(typeof a.ack.resumeToken, 'string');
    assert.equal(a.ack.resumed, false);
    assert.equal(a.client.registered, true);
    assert.equal(a.client.userId, a.id);
    assert.equal(a.client.resumeToken, a.ack.resumeToken);
    await a.waitFor('users-list', (list) => list.some((u) => u.id === a.id));
    assert.equal(a.client.users.get(a.id)?.username, 'Ann');

    const b = await joined(open, 'Bob');
    await a.waitFor('user-joined', (u) => u.id === b.id);
    assert.equal(a.client.users.get(b.id)?.username, 'Bob');
    b.client.disconnect();
    await a.waitFor('user-left', (id) => id === b.id);
    assert.equal(a.client.users.has(b.id), false, 'gone from the map');
    await rejectsWith(a.client.register({ id: uniqueId('other'), username: 'X' }), 'already-registered', 'user-joined');
  });

  test('presence deltas: the map stays exact from one list and the deltas', async (t) => {
    const open = opener(t, gateway.url);
    const d = await joined(open, 'Delta', { presence: 'delta' });
    await d.waitFor('users-list', (list) => list.some((u) => u.id === d.id));
    const since = d.mark();
    const e = await joined(open, 'Echo');
    await d.waitFor('user-joined', (u) => u.id === e.id, { since });
    assert.equal(d.client.users.get(e.id)?.username, 'Echo');
    e.client.disconnect();
    await d.waitFor('user-left', (id) => id === e.id, { since });
    assert.equal(d.client.users.has(e.id), false);
    assert.equal(d.client.users.has(d.id), true);
    assert.deepEqual(d.received('users-list', () => true, since), [], 'no full list after the first (deltas)');
  });

  test('a call: incoming-call, join, an offer, an answer and a candidate relayed, numbered with seq', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Caller');
    const b = await joined(open, 'Callee');
    const callId = await inCall(a, b);
    const offer = { type: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n' };
    assert.deepEqual(await b.client.sendOffer(callId, a.id, offer), { ok: true });
    const got = await a.waitFor('webrtc-offer', (p) => p.callId === callId);
    assert.deepEqual(got, { seq: got.seq, callId, fromUserId: b.id, offer });
    assert.equal(typeof got.seq, 'number');
    assert.equal(a.client.lastSeq, got.seq);
    await a.client.sendAnswer(callId, b.id, { type: 'answer', sdp: 'v=0' });
    await a.client.sendIceCandidate(callId, b.id, { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: '0' });
    await b.waitFor('webrtc-ice-candidate', (p) => p.fromUserId === a.id);
    const [answer] = b.received('webrtc-answer');
    const [candidate] = b.received('webrtc-ice-candidate');
    assert.equal(candidate.seq, answer.seq + 1, 'relays numbered in order');
    assert.equal(b.client.lastSeq, candidate.seq);
    const left = await b.client.leaveCall(callId);
    assert.deepEqual(left, { ok: true, callId, left: true });
    await a.waitFor('user-left-call', (p) => p.callId === callId && p.userId === b.id);
  });

  test('refusals reject with a MeetUpError carrying the code', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Errs');
    await rejectsWith(a.client.joinCall(uniqueId('no-such-call')), 'call-not-found', 'join-call');
    await rejectsWith(a.client.sendOffer(uniqueId('no-call'), uniqueId('nobody'), {}), 'not-in-call', 'webrtc-offer');
    await rejectsWith(a.client.request('start-call', { id: uniqueId('call') }), 'invalid-payload', 'start-call');
    const { callId } = await a.client.startCall({ participants: [] });
    await rejectsWith(a.client.startCall({ id: callId, participants: [] }), 'call-exists', 'start-call');
    const stranger = open('Stranger'); // never registered
    await rejectsWith(stranger.client.startCall({ participants: [a.id] }), 'not-registered', 'start-call');
    const impatient = await joined(open, 'Impatient');
    impatient.client.ackTimeoutMs = 300;
    await rejectsWith(impatient.client.request('no-such-event', {}), 'timeout', 'no-such-event'); // unknown events get no answer
  });

  test('history: get-call-history lists my calls, newest first', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Hist');
    const b = await joined(open, 'Tory');
    const first = await inCall(a, b);
    await a.client.leaveCall(first);
    await b.client.leaveCall(first);
    const second = (await a.client.startCall({ participants: [b.id], isVideo: false })).callId;
    // The history takes in call changes a moment after they happen: ask until both are there.
    let page;
    for (const deadline = Date.now() + 5_000; ; ) {
      page = await a.client.callHistory({ limit: 10 });
      if (page.calls.length >= 2 || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.deepEqual(page.calls.map((c) => c.callId), [second, first]);
    assert.equal(page.calls[1].direction, 'outgoing');
    assert.equal(page.next, null);
    const one = await a.client.callHistory({ limit: 1 });
    assert.equal(one.calls.length, 1);
    const rest = await a.client.callHistory({ limit: 1, before: one.next });
    assert.deepEqual(rest.calls.map((c) => c.callId), [first]);
  });

  test('resume: a dropped transport comes back as the same session; what was sent meanwhile arrives, in order', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Stay');
    const b = await joined(open, 'Drop');
    const callId = await inCall(a, b);
    await a.client.sendOffer(callId, b.id, { n: 1 });
    await b.waitFor('webrtc-offer', (p) => p.offer.n === 1);
    const tokenBefore = b.client.resumeToken;
    const sinceA = a.mark();
    const sinceB = b.mark();

    b.client.socket.io.engine.close(); // the transport goes, no goodbye
    await b.waitFor('$disconnect', () => true, { since: sinceB });
    assert.equal(b.client.reconnecting, true);
    // Sent by B while away: waits for the resume, then goes out.
    const queued = b.client.sendIceCandidate(callId, a.id, { candidate: 'while-away' });
    await a.waitFor('user-reconnecting', (p) => p.callId === callId && p.userId === b.id, { since: sinceA });
    await a.client.sendIceCandidate(callId, b.id, { n: 2 }); // kept for B's session

    const resumed = await b.waitFor('$registered', () => true, { since: sinceB });
    assert.deepEqual([resumed.resumed, resumed.recovered, resumed.reconnected], [true, true, true]);
    assert.notEqual(b.client.resumeToken, tokenBefore, 'a new token');
    assert.equal(b.client.reconnecting, false);
    assert.deepEqual(await queued, { ok: true });
    await a.waitFor('webrtc-ice-candidate', (p) => p.candidate.candidate === 'while-away', { since: sinceA });
    const kept = await b.waitFor('webrtc-ice-candidate', (p) => p.candidate.n === 2, { since: sinceB });
    const [firstOffer] = b.received('webrtc-offer');
    assert.equal(kept.seq, firstOffer.seq + 1, 'seq continues across the resume');
    await a.waitFor('user-reconnected', (p) => p.userId === b.id, { since: sinceA });
    assert.deepEqual(
      a.received('user-left-call', () => true, sinceA).concat(a.received('user-left', () => true, sinceA)),
      [],
      'nobody saw a leave',
    );
    assert.equal(b.client.users.has(a.id), true);
  });

  test('resume refused: the client registers afresh, says so, and drops relays of the old session', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Peer');
    const b = await joined(open, 'Forged');
    const callId = await inCall(a, b);
    const since = b.mark();
    b.client.resumeToken = 'not-a-token-of-this-session';
    b.client.socket.io.engine.close();
    await b.waitFor('$disconnect', () => true, { since });
    const relay = b.client.sendOffer(callId, a.id, { stale: true });
    const other = b.client.callHistory({ limit: 1 });
    const refused = await b.waitFor('$resume-refused', () => true, { since });
    assert.equal(refused.code, 'resume-refused');
    const again = await b.waitFor('$registered', () => true, { since });
    assert.deepEqual([again.resumed, again.reconnected], [false, true]);
    await rejectsWith(relay, 'session-lost', 'webrtc-offer');
    assert.equal((await other).ok, true, 'requests that are not relays go out after the registration');
    assert.equal(b.client.registered, true);
    assert.equal(b.client.lastSeq, 0, 'a new session numbers from 1 again');
  });

  test('goodbye: disconnect() ends the session at once; requests afterwards are refused locally', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Host');
    const b = await joined(open, 'Guest');
    const callId = await inCall(a, b);
    const since = a.mark();
    b.client.disconnect();
    await a.waitFor('user-left-call', (p) => p.callId === callId && p.userId === b.id, { since });
    assert.deepEqual(a.received('user-reconnecting', () => true, since), []);
    await rejectsWith(b.client.sendMessage(callId, 'late'), 'disconnected', 'call-message');
    // connect() again: a new session as the same user.
    const sinceB = b.mark();
    b.client.connect();
    const again = await b.waitFor('$registered', () => true, { since: sinceB });
    assert.deepEqual([again.resumed, again.reconnected], [false, false]);
    await a.waitFor('user-joined', (u) => u.id === b.id, { since });
  });
});
