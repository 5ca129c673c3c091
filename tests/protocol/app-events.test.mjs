// What internal services do through gRPC reaches the browsers (PROTOCOL.md, "Calling"):
// SendToUser pushes an `app:` event to every opted-in socket of a user, on whichever
// gateway each is; SendCallMessage posts into a call's chat as a bot or the system.
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { encodeStrings, grpcUnary } from './grpc.mjs';
import { joinCall, protocolSuite, startCall } from './harness.mjs';

const { scenario, system } = protocolSuite();

const CALLING = { auth: { calling: true } };
const PRESENCE = '/meetup.presence.v1.PresenceService';
const CALLS = '/meetup.calls.v1.CallService';
const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;

/** SendToUserRequest { user_id = 1, event = 2, json = 3 }. */
async function sendToUser(userId, event, json) {
  const addr = await system().presenceGrpcAddr(5_000);
  return grpcUnary(addr, `${PRESENCE}/SendToUser`, encodeStrings({ 1: userId, 2: event, 3: json }));
}

scenario('SendToUser: an app: event reaches every opted-in socket of the user, on both gateways, and nobody else', async (sc) => {
  const b = await sc.user('b', { ...CALLING, gateway: 0 });
  const b2 = await sc.socketOf(b, 'b2', { ...CALLING, gateway: 1 });
  const plain = await sc.socketOf(b, 'b plain', { gateway: 1 });
  const other = await sc.user('other', { ...CALLING, gateway: 0 });
  const marks = [b, b2, plain, other].map((c) => c.mark());
  const reply = await sendToUser(b.userId, 'app:reminder', JSON.stringify({ meeting: 'standup', in: 5 }));
  assert.equal(reply.status, 0, reply.message);
  for (const [client, since] of [[b, marks[0]], [b2, marks[1]]]) {
    assert.deepEqual(await client.waitFor('app:reminder', () => true, { since }), { meeting: 'standup', in: 5 });
  }
  // A barrier: a second push reaches b2 after the first; by then the others would have had it.
  assert.equal((await sendToUser(b.userId, 'app:barrier', 'null')).status, 0);
  await b2.waitFor('app:barrier', () => true, { since: marks[1] });
  await delay(100);
  assert.deepEqual(plain.received('app:reminder', () => true, marks[2]), [], 'a socket that did not opt in');
  assert.deepEqual(other.received('app:reminder', () => true, marks[3]), [], 'another user');
});

scenario('SendToUser refuses protocol events, bad names and bad JSON, and offline users', async (sc) => {
  const b = await sc.user('b', CALLING);
  const since = b.mark();
  for (const [event, json] of [['incoming-call', '{}'], ['app:', '{}'], ['call-message', '{}'], ['app:x', '{oops']]) {
    const reply = await sendToUser(b.userId, event, json);
    assert.equal(reply.status, INVALID_ARGUMENT, `${event} ${json}: ${reply.message}`);
  }
  const offline = await sendToUser(sc.id('nobody'), 'app:x', '{}');
  assert.equal(offline.status, NOT_FOUND, offline.message);
  await delay(100);
  assert.deepEqual(
    b.eventsSince(since).map((e) => e.event).filter((e) => e === 'incoming-call' || e === 'call-message' || e.startsWith('app:')),
    [],
    'nothing forged reached the socket',
  );
});

scenario('SendCallMessage: a bot posts into a call; every participant gets it, from the bot', async (sc) => {
  const a = await sc.user('a', { ...CALLING, gateway: 0 });
  const b = await sc.user('b', { ...CALLING, gateway: 1 });
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  const [sinceA, sinceB] = [a.mark(), b.mark()];
  const addr = await system().callsGrpcAddr(5_000);
  // SendCallMessageRequest { call_id = 1, text = 2, bot_name = 4 }.
  const reply = await grpcUnary(addr, `${CALLS}/SendCallMessage`, encodeStrings({ 1: callId, 2: 'Recording starts now', 4: 'recorder' }));
  assert.equal(reply.status, 0, reply.message);
  for (const [client, since] of [[a, sinceA], [b, sinceB]]) {
    const message = await client.waitFor('call-message', (m) => m?.callId === callId, { since });
    assert.deepEqual(message.from, { id: 'bot:recorder', username: 'recorder', kind: 'bot' });
    assert.equal(message.text, 'Recording starts now');
  }
});
