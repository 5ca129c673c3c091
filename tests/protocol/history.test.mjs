// Call history end to end: a real call through the gateways reaches the history
// (the calls bucket, followed by the gateway's in-process history or the history
// service) and comes back through get-call-history and missed-calls.
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { joinCall, leaveCall, protocolSuite, startCall } from './harness.mjs';

const { scenario } = protocolSuite();

/** Asks for `client`'s history until `callId` is there and ended, within 10 s. */
async function ended(client, callId) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ack = await client.emitWithAck('get-call-history', {});
    assert.equal(ack.ok, true, JSON.stringify(ack));
    const call = ack.calls.find((c) => c.callId === callId);
    if (call?.endedAt) return call;
    assert.ok(Date.now() < deadline, `${callId} not in ${client.label}'s history: ${JSON.stringify(ack)}`);
    await delay(100);
  }
}

scenario('a call that happened is in the history of who took part and who missed it, and nobody else', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const c = await sc.user('c');
  const stranger = await sc.user('stranger');
  const callId = sc.id('call');
  await startCall(a, callId, [b, c], { isVideo: true });
  await joinCall(b, callId);
  await leaveCall(b, callId);
  await leaveCall(a, callId);

  const mine = await ended(a, callId);
  assert.equal(mine.direction, 'outgoing');
  assert.equal(mine.isVideo, true);
  assert.equal(mine.initiator.id, a.userId);
  const outcomes = Object.fromEntries(mine.attendees.map((x) => [x.id, x.outcome]));
  // c still rang when its caller hung up: cancelled (a missed call all the same).
  assert.deepEqual(outcomes, { [a.userId]: 'answered', [b.userId]: 'answered', [c.userId]: 'cancelled' });
  assert.equal((await ended(b, callId)).outcome, 'answered');
  assert.equal((await ended(c, callId)).outcome, 'cancelled');
  const theirs = await stranger.emitWithAck('get-call-history', { userId: a.userId });
  assert.deepEqual(theirs.calls.filter((x) => x.callId === callId), [], 'a stranger sees nothing of it');

  // c comes back on a new socket: the call it missed is announced once.
  const c2 = await sc.socketOf(c, 'c again');
  const missed = await c2.waitFor('missed-calls', () => true);
  assert.ok(missed.count >= 1 && missed.calls.some((x) => x.callId === callId), JSON.stringify(missed));
});
