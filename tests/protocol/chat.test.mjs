// Calling extension, in-call chat: call-message to every participant in one order on every
// gateway, the last CALL_CHAT_HISTORY messages in call-messages for a joiner (and a resumed
// socket), errors, text limits in code points, and the chat ending with its call.
import assert from 'node:assert/strict';
import { ACK_TIMEOUT_MS, assertAckError, assertCallGone, callUser, emitPayload, ISO_UTC, joinCall, leaveCall, malformed, protocolSuite, show, startCall } from './harness.mjs';

const CALL_CHAT_HISTORY = 5;
const { scenario } = protocolSuite({ env: { CALL_CHAT_HISTORY: String(CALL_CHAT_HISTORY) } });

const CALLING = { auth: { calling: true } };
const PRESENCE = ['users-list', 'user-joined', 'user-left'];
const forCall = (callId) => (p) => p?.callId === callId;

/** Sends a call-message and asserts the exact success ack { ok, callId, id, sentAt }. */
async function say(client, callId, text) {
  const ack = await client.emitWithAck('call-message', { callId, text });
  const context = `${client.label}: call-message ${show(text, 60)}`;
  assert.equal(ack?.ok, true, `${context}: ${show(ack)}`);
  assert.deepEqual(Object.keys(ack).sort(), ['callId', 'id', 'ok', 'sentAt'], `${context}: ack keys of ${show(ack)}`);
  assert.equal(ack.callId, callId, `${context}: ack callId`);
  assert.equal(typeof ack.id, 'string', `${context}: ack id`);
  assert.ok(ack.id.length > 0, `${context}: empty id`);
  assert.match(ack.sentAt, ISO_UTC, `${context}: sentAt is not ISO 8601 UTC`);
  return { ...ack, from: callUser(client), text };
}

/** The call-message every socket gets for a sent message (as `say` returned it). */
const asEvent = (callId, sent) => ({ callId, id: sent.id, from: sent.from, text: sent.text, sentAt: sent.sentAt });

/** Waits until `client` holds every message of `sent`; returns its call-message events for `callId` from `since`. */
async function receivedAll(client, callId, sent, since = 0) {
  await Promise.all(sent.map((m) => client.waitFor('call-message', (p) => p?.id === m.id, { since, what: `message ${show(m.text, 40)}` })));
  return client.received('call-message', forCall(callId), since);
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

/** Three opted-in users in one call, on both gateways: a (0) calls, b (1) and c (1) join. */
async function threeInCall(sc, callId) {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const c = await sc.user('c', { ...CALLING, gateway: 1 });
  await startCall(a, callId, [b, c]);
  await joinCall(b, callId);
  await joinCall(c, callId);
  return [a, b, c];
}

/**
 * Joins `callId` and returns the call-messages payload, asserting it comes right after
 * call-participants (nothing but presence broadcasts in between).
 */
async function joinForHistory(client, callId) {
  const since = client.mark();
  await joinCall(client, callId);
  const history = await client.waitFor('call-messages', forCall(callId), { since });
  const events = client.eventsSince(since).filter((e) => !PRESENCE.includes(e.event)).map((e) => e.event);
  const at = events.indexOf('call-participants');
  assert.ok(at >= 0, `${client.label}: no call-participants before call-messages: ${show(events)}`);
  assert.equal(events[at + 1], 'call-messages', `${client.label}: call-messages right after call-participants: ${show(events)}`);
  assert.deepEqual(Object.keys(history).sort(), ['callId', 'messages'], `${client.label}: call-messages keys`);
  assert.ok(Array.isArray(history.messages), `${client.label}: messages is not a list`);
  return history.messages;
}

// ---------------------------------------------------------------------------------------------
// Order
// ---------------------------------------------------------------------------------------------

scenario('call-message: three participants on two gateways each get every message once, in the same order, the sender included', async (sc) => {
  const callId = sc.id('call');
  const members = await threeInCall(sc, callId);
  const since = members.map((m) => m.mark());
  const sent = [];
  for (let round = 0; round < 3; round++) {
    for (const member of members) sent.push(await say(member, callId, `${member.label} says ${round}`));
  }
  assert.equal(new Set(sent.map((m) => m.id)).size, sent.length, 'message ids are unique');
  const expected = sent.map((m) => asEvent(callId, m));
  for (const [i, member] of members.entries()) {
    const got = await receivedAll(member, callId, sent, since[i]);
    // Sent one after the other, acks awaited: this is the one order.
    assert.deepEqual(got, expected, `${member.label}: the messages, in order, exactly`);
    for (const m of got) assert.match(m.sentAt, ISO_UTC);
  }
});

scenario('call-message: several senders interleaving; one order on every socket, each sender\'s messages in the order it sent them', async (sc) => {
  const callId = sc.id('call');
  const members = await threeInCall(sc, callId);
  const since = members.map((m) => m.mark());
  const PER_SENDER = 15;
  // Fired at once, without waiting for acks: the three sockets' messages interleave.
  const acks = await Promise.all(
    members.flatMap((member) =>
      Array.from({ length: PER_SENDER }, (_, i) => member.emitWithAck('call-message', { callId, text: `${member.label}-${i}` })),
    ),
  );
  for (const ack of acks) assert.equal(ack?.ok, true, show(ack));
  const ids = acks.map((a) => a.id);
  assert.equal(new Set(ids).size, ids.length, 'message ids are unique');
  const sent = ids.map((id) => ({ id }));
  const seen = [];
  for (const [i, member] of members.entries()) seen.push(await receivedAll(member, callId, sent, since[i]));
  const order = seen.map((list) => list.map((m) => m.id));
  assert.equal(order[0].length, ids.length, `${members[0].label}: every message exactly once`);
  assert.deepEqual(order[1], order[0], `${members[1].label} saw another order than ${members[0].label}`);
  assert.deepEqual(order[2], order[0], `${members[2].label} saw another order than ${members[0].label}`);
  for (const member of members) {
    const own = seen[0].filter((m) => m.from.id === member.userId).map((m) => m.text);
    assert.deepEqual(own, Array.from({ length: PER_SENDER }, (_, i) => `${member.label}-${i}`), `${member.label}'s messages out of order`);
  }
  // Each event matches its ack.
  const byId = new Map(acks.map((a) => [a.id, a]));
  for (const m of seen[0]) assert.equal(m.sentAt, byId.get(m.id).sentAt, 'sentAt of the event and of the ack');
});

// ---------------------------------------------------------------------------------------------
// History for joiners
// ---------------------------------------------------------------------------------------------

scenario('a late joiner gets the chat so far in call-messages, oldest first, right after call-participants', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  assert.deepEqual(await joinForHistory(b, callId), [], 'b: no messages yet');
  const sent = [await say(a, callId, 'one'), await say(b, callId, 'two'), await say(a, callId, 'three')];
  const late = await sc.user('late', { ...CALLING, gateway: 1 });
  const history = await joinForHistory(late, callId);
  assert.deepEqual(history, sent.map((m) => asEvent(callId, m)));
  // What the late joiner got is what the others got live.
  assert.deepEqual(await receivedAll(a, callId, sent), history);
  // And it hears the next one live.
  const next = await say(b, callId, 'four');
  assert.deepEqual(await late.waitFor('call-message', forCall(callId)), asEvent(callId, next));
});

scenario(`call-messages holds the last CALL_CHAT_HISTORY (${CALL_CHAT_HISTORY}) messages; a re-join gets them again`, async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  const sent = [];
  for (let i = 1; i <= 8; i++) sent.push(await say(i % 2 ? a : b, callId, `message ${i}`));
  const late = await sc.user('late', { ...CALLING, gateway: 0 });
  const lastFive = sent.slice(-CALL_CHAT_HISTORY).map((m) => asEvent(callId, m));
  assert.deepEqual(await joinForHistory(late, callId), lastFive, 'the late joiner: the newest five, oldest first');
  // join-call by a socket already in the call: call-messages again.
  assert.deepEqual(await joinForHistory(a, callId), lastFive, 'a re-join');
  sent.push(await say(late, callId, 'message 9'));
  assert.deepEqual(await joinForHistory(b, callId), sent.slice(-CALL_CHAT_HISTORY).map((m) => asEvent(callId, m)), 'after one more');
});

scenario('call-messages is an empty list when the call has no messages', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  assert.deepEqual(await joinForHistory(b, callId), []);
  assert.deepEqual(await joinForHistory(a, callId), [], 'the caller re-joining');
  assert.deepEqual(a.received('call-message'), []);
});

scenario('the chat goes when the call ends: a new call with the same id starts with an empty chat', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  await say(a, callId, 'from the first call');
  await say(b, callId, 'also from the first call');
  await leaveCall(a, callId);
  await leaveCall(b, callId);
  await assertCallGone(a, callId);
  await startCall(b, callId, [a]);
  assert.deepEqual(await joinForHistory(a, callId), [], 'messages of the ended call came back');
  const fresh = await say(a, callId, 'second call');
  const late = await sc.user('late', { ...CALLING, gateway: 0 });
  assert.deepEqual(await joinForHistory(late, callId), [asEvent(callId, fresh)]);
});

scenario('a resumed socket gets call-messages for each of its calls with its resume, before its user-joined ack', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.connect('b', { ...CALLING, gateway: 1 });
  const id = sc.id('b');
  const first = await b.emitWithAck('user-joined', { id, username: 'b-name', resumeToken: null });
  assert.equal(first?.ok, true, show(first));
  b.userId = id;
  b.username = 'b-name';
  const one = sc.id('one');
  const two = sc.id('two');
  await startCall(a, one, [b]);
  await startCall(a, two, [b]);
  await joinCall(b, one);
  await joinCall(b, two);
  const sentOne = [await say(a, one, 'one: before'), await say(b, one, 'one: from b')];
  const sentTwo = [await say(b, two, 'two: from b')];
  await receivedAll(b, one, sentOne);
  // b's transport dies without a goodbye: its session is away.
  const sinceA = a.mark();
  b.socket.io.engine.transport.ws.terminate();
  await a.waitFor('user-reconnecting', (p) => p?.callId === one && p.userId === id, { since: sinceA });
  sentOne.push(await say(a, one, 'one: while b was away'));
  const b2 = await sc.connect('b-resumed', { ...CALLING, gateway: 0 });
  const { ack, atAck } = await emitMarkingAck(b2, 'user-joined', { id, username: 'b-name', resumeToken: first.resumeToken });
  assert.equal(ack?.ok, true, show(ack));
  assert.equal(ack.resumed, true, `resumed: ${show(ack)}`);
  b2.userId = id;
  b2.username = 'b-name';
  const histories = await Promise.all(
    [one, two].map((callId) => b2.waitFor('call-messages', forCall(callId), { what: `call-messages for ${callId} on the resumed socket` })),
  );
  assert.deepEqual(histories[0], { callId: one, messages: sentOne.map((m) => asEvent(one, m)) });
  assert.deepEqual(histories[1], { callId: two, messages: sentTwo.map((m) => asEvent(two, m)) });
  assert.deepEqual(b2.received('call-messages', () => true, 0).length, 2, 'call-messages once per call');
  // The resumed socket is in the calls: it chats at once and hears the others.
  const after = await say(b2, one, 'one: back');
  assert.deepEqual(await a.waitFor('call-message', (m) => m?.id === after.id), asEvent(one, after));
  const early = b2.eventsSince(0).slice(0, atAck).filter((e) => e.event === 'call-messages').map((e) => e.args[0].callId);
  assert.deepEqual(early.sort(), [one, two].sort(), 'call-messages (for these calls) came with the resume, before the user-joined ack');
});

// ---------------------------------------------------------------------------------------------
// Errors and limits
// ---------------------------------------------------------------------------------------------

scenario('call-message from a non-participant: not-in-call; for an unknown or ended call: call-not-found; nobody gets it', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const ringing = await sc.user('ringing', CALLING);
  const leaver = await sc.user('leaver', CALLING);
  const stranger = await sc.user('stranger', CALLING);
  const callId = sc.id('call');
  await startCall(a, callId, [b, ringing]);
  await joinCall(b, callId);
  await joinCall(leaver, callId);
  await leaveCall(leaver, callId);
  for (const [who, why] of [[stranger, 'a stranger'], [ringing, 'a ringing invitee'], [leaver, 'a participant who left']]) {
    assertAckError(await who.emitWithAck('call-message', { callId, text: `from ${who.label}` }), 'not-in-call', why);
  }
  assertAckError(await a.emitWithAck('call-message', { callId: sc.id('nowhere'), text: 'hello?' }), 'call-not-found', 'unknown call');
  const ended = sc.id('ended');
  await startCall(stranger, ended, []);
  await say(stranger, ended, 'soon gone');
  await leaveCall(stranger, ended);
  assertAckError(await stranger.emitWithAck('call-message', { callId: ended, text: 'too late' }), 'call-not-found', 'ended call');
  const barrier = await say(a, callId, 'the only message');
  assert.deepEqual(await receivedAll(b, callId, [barrier]), [asEvent(callId, barrier)], 'b got a rejected message');
  assert.deepEqual(a.received('call-message', forCall(callId)), [asEvent(callId, barrier)], 'a got a rejected message');
  assert.deepEqual(await joinForHistory(b, callId), [asEvent(callId, barrier)], 'a rejected message in the chat');
});

const WRONG_ID = [
  ['a number', 42],
  ['null', null],
  ['an object', { id: 'x' }],
  ['empty', ''],
  ['129 bytes', 'x'.repeat(129)],
];

const WRONG_TEXT = [
  ['empty', ''],
  ['4001 characters', 'x'.repeat(4_001)],
  ['4001 emoji (code points beyond the BMP)', '😀'.repeat(4_001)],
  ['4001 two-byte characters', 'é'.repeat(4_001)],
  ['a number', 42],
  ['a boolean', true],
  ['null', null],
  ['an object', { text: 'hi' }],
  ['an array', ['hi']],
];

/** Text at the limit: 4000 code points, in 1-, 2-, 3- and 4-byte UTF-8 (the emoji are 8000 UTF-16 units). */
const LONGEST_TEXTS = [
  ['4000 ASCII characters', 'a'.repeat(4_000)],
  ['4000 emoji', '😀'.repeat(4_000)],
  ['4000 mixed code points', `${'a'.repeat(1_000)}${'é'.repeat(1_000)}${'€'.repeat(1_000)}${'🎉'.repeat(1_000)}`],
  ['one character', '.'],
  ['one emoji', '👍'],
];

const malformedMessages = (base) => malformed(base, { callId: WRONG_ID, text: WRONG_TEXT });

scenario('call-message text: empty, over 4000 code points or not a string -> invalid-payload; 4000 code points, multi-byte included, delivered as sent', async (sc, t) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  const sinceB = b.mark();
  const base = { callId, text: 'valid' };
  for (const [name, payload] of malformedMessages(base)) {
    await t.test(`call-message with ${name} -> invalid-payload`, async () => {
      assertAckError(await emitPayload(a, 'call-message', payload, true), 'invalid-payload', `call-message with ${name}`);
    });
  }
  assertAckError(
    await a.emitWithAck('call-message', { ...base, pad: 'x'.repeat(200_000) }),
    'payload-too-large',
    'call-message past MAX_PAYLOAD_BYTES',
  );
  // The same bad payloads without an ack callback: nothing either.
  for (const [, payload] of malformedMessages(base)) emitPayload(a, 'call-message', payload, false);
  const sent = [];
  for (const [name, text] of LONGEST_TEXTS) {
    await t.test(`call-message with ${name} is accepted`, async () => {
      sent.push(await say(a, callId, text));
    });
  }
  assert.ok(a.connected, 'the sender was disconnected');
  const got = await receivedAll(b, callId, sent, sinceB);
  assert.deepEqual(got, sent.map((m) => asEvent(callId, m)), 'b got exactly the valid messages, text unchanged');
  assert.deepEqual(
    (await joinForHistory(b, callId)).map((m) => m.text),
    LONGEST_TEXTS.slice(-CALL_CHAT_HISTORY).map(([, text]) => text),
    'the chat kept the texts unchanged',
  );
});
