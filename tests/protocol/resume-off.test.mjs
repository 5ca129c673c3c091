// RESUME_GRACE_MS=0: the resume extension off, the original behaviour: plain acks, abrupt closes cleaned up at once.
import assert from 'node:assert/strict';
import { assertPublicUser, callUser, joinCall, protocolSuite, startCall } from './harness.mjs';

const { scenario } = protocolSuite({ env: { RESUME_GRACE_MS: '0' } });

const forCall = (callId) => (p) => p?.callId === callId;
const lacks = (id) => (list) => Array.isArray(list) && !list.some((u) => u.id === id);

scenario('RESUME_GRACE_MS=0: the user-joined ack is exactly {ok, user}, no resume token', async (sc) => {
  for (const [label, extra] of [['plain', {}], ['speaks-resume', { resumeToken: null }]]) {
    const client = await sc.connect(label);
    const ack = await client.emitWithAck('user-joined', { id: sc.id(label), username: label, ...extra });
    assert.equal(ack?.ok, true, `${label}: ${JSON.stringify(ack)}`);
    assert.deepEqual(Object.keys(ack).sort(), ['ok', 'user'], `${label}: ack keys`);
    assertPublicUser(ack.user, { id: sc.id(label), username: label });
  }
});

scenario('RESUME_GRACE_MS=0: an abrupt transport close is cleaned up at once, without user-reconnecting', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  const since = a.mark();
  const ws = b.socket.io.engine.transport.ws;
  assert.ok(ws, 'websocket transport expected');
  const cutAt = Date.now();
  ws.terminate();
  const left = await a.waitFor('user-left-call', forCall(callId), { since });
  const after = Date.now() - cutAt;
  assert.deepEqual(left, { callId, userId: b.userId, participants: [callUser(a)] });
  await a.waitFor('user-left', (x) => x === b.userId, { since });
  await a.waitFor('users-list', lacks(b.userId), { since });
  assert.ok(after < 1_000, `user-left-call only ${after}ms after the cut`);
  assert.deepEqual(a.received('user-reconnecting', () => true, since), [], 'user-reconnecting with the extension off');
});
