// INTERNAL_API_TOKEN: the gateway still works; direct gRPC calls to the services need "authorization: Bearer <token>".
import assert from 'node:assert/strict';
import { encodeStrings, grpcUnary } from './grpc.mjs';
import { assertCallGone, joinCall, protocolSuite, runNormalCall, startCall } from './harness.mjs';

const TOKEN = 'tok';
const { scenario, system } = protocolSuite({ env: { INTERNAL_API_TOKEN: TOKEN } });

const CALLS = '/meetup.calls.v1.CallService';
const UNAUTHENTICATED = 16;
const forCall = (callId) => (p) => p?.callId === callId;
const WRONG = [{}, { authorization: 'Bearer wrong' }, { authorization: TOKEN }, { authorization: `Basic ${TOKEN}` }];

/** host:port of a service's gRPC API, from its "listening" log line (embedded or its own process). */
function serviceAddr(name) {
  const proc = system().processes.find((p) => p.listening?.has(name));
  assert.ok(proc, `no "listening" log line for service ${name}`);
  return proc.listening.get(name);
}

scenario('with INTERNAL_API_TOKEN set, a normal call still works through the gateway', async (sc) => {
  await runNormalCall(sc);
});

scenario('calls service: without the bearer token a call is UNAUTHENTICATED and changes nothing; with it, it succeeds', async (sc) => {
  const addr = await system().callsGrpcAddr(5_000);
  const a = await sc.user('a');
  const b = await sc.user('b');
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  const call = encodeStrings({ 1: callId });
  for (const metadata of WRONG) {
    for (const method of ['GetCall', 'EndCall']) {
      const res = await grpcUnary(addr, `${CALLS}/${method}`, call, 5_000, metadata);
      assert.equal(res.status, UNAUTHENTICATED, `${method} with ${JSON.stringify(metadata)}: status ${res.status} ${res.message}`);
    }
  }
  // The refused EndCalls ended nothing: b can still join.
  await joinCall(b, callId);
  const ok = { authorization: `Bearer ${TOKEN}` };
  const got = await grpcUnary(addr, `${CALLS}/GetCall`, call, 5_000, ok);
  assert.equal(got.status, 0, `GetCall with the token: ${got.status} ${got.message}`);
  assert.ok(got.body.includes(Buffer.from(callId)), 'GetCall answers the call');
  const since = a.mark();
  const ended = await grpcUnary(addr, `${CALLS}/EndCall`, call, 5_000, ok);
  assert.equal(ended.status, 0, `EndCall with the token: ${ended.status} ${ended.message}`);
  await a.waitFor('call-ended', forCall(callId), { since });
  await assertCallGone(b, callId);
});

scenario('presence service: without the bearer token UNAUTHENTICATED, with it OK', async (sc) => {
  const addr = serviceAddr('presence');
  const a = await sc.user('a');
  const path = '/meetup.presence.v1.PresenceService/ListUsers';
  for (const metadata of WRONG) {
    const res = await grpcUnary(addr, path, Buffer.alloc(0), 5_000, metadata);
    assert.equal(res.status, UNAUTHENTICATED, `ListUsers with ${JSON.stringify(metadata)}: status ${res.status} ${res.message}`);
  }
  const res = await grpcUnary(addr, path, Buffer.alloc(0), 5_000, { authorization: `Bearer ${TOKEN}` });
  assert.equal(res.status, 0, `ListUsers with the token: ${res.status} ${res.message}`);
  assert.ok(res.body.includes(Buffer.from(a.userId)), 'ListUsers lists the online user');
});
