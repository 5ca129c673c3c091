// Extensions: call-ended after the gRPC EndCall, unasked call-left after the gRPC RemoveParticipant.
import assert from 'node:assert/strict';
import { encodeStrings, grpcUnary } from './grpc.mjs';
import { assertAckError, assertCallGone, callUser, joinCall, protocolSuite, startCall } from './harness.mjs';

const { scenario, system } = protocolSuite();

const CALLS = '/meetup.calls.v1.CallService';
const forCall = (callId) => (p) => p?.callId === callId;

async function callsApi(method, fields) {
  let addr;
  try {
    addr = await system().callsGrpcAddr(5_000);
  } catch (err) {
    throw new Error(`the calls gRPC address is taken from a "listening" log line with a service name containing "call": ${err.message}`);
  }
  const res = await grpcUnary(addr, `${CALLS}/${method}`, encodeStrings(fields));
  assert.equal(res.status, 0, `gRPC ${method} failed: status ${res.status} ${res.message}`);
  return res;
}

scenario('EndCall through the gRPC API: call-ended to every socket in the call, then the call is gone', async (sc) => {
  const a = await sc.user('a');
  const b1 = await sc.user('b');
  const b2 = await sc.socketOf(b1, 'b-2');
  const invited = await sc.user('invited'); // invited, never joined: not in the call
  const callId = sc.id('call');
  await startCall(a, callId, [b1, invited]);
  await joinCall(b1, callId);
  await joinCall(b2, callId);
  const since = invited.mark();
  await callsApi('EndCall', { 1: callId });
  for (const socket of [a, b1, b2]) {
    assert.deepEqual(await socket.waitFor('call-ended', forCall(callId)), { callId }, `${socket.label}: call-ended`);
  }
  await assertCallGone(invited, callId);
  assertAckError(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b1.userId, offer: {} }), 'not-in-call');
  // Barrier for the invitee: a later call event addressed to it.
  const later = sc.id('later');
  await startCall(a, later, [invited]);
  await invited.waitFor('incoming-call', forCall(later));
  assert.deepEqual(invited.received('call-ended', () => true, since), [], 'call-ended to a socket not in the call');
});

scenario('RemoveParticipant through the gRPC API: call-left to each removed socket, user-left-call to the rest', async (sc) => {
  const a = await sc.user('a');
  const b1 = await sc.user('b');
  const b2 = await sc.socketOf(b1, 'b-2');
  const c = await sc.user('c');
  const callId = sc.id('call');
  await startCall(a, callId, [c]); // b is not invited, so once removed it shares nothing with the call
  await joinCall(b1, callId);
  await joinCall(b2, callId);
  await joinCall(c, callId);
  const since = [b1, b2].map((x) => x.mark());
  await callsApi('RemoveParticipant', { 1: callId, 2: b1.userId });
  for (const [i, socket] of [b1, b2].entries()) {
    assert.deepEqual(await socket.waitFor('call-left', forCall(callId), { since: since[i] }), { callId }, `${socket.label}: call-left`);
  }
  for (const other of [a, c]) {
    const left = await other.waitFor('user-left-call', (p) => p?.callId === callId && p.userId === b1.userId);
    assert.deepEqual(left, { callId, userId: b1.userId, participants: [callUser(a), callUser(c)] });
  }
  assertAckError(await b1.emitWithAck('webrtc-offer', { callId, targetUserId: a.userId, offer: {} }), 'not-in-call');
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: c.userId, offer: {} }), { ok: true });
});
