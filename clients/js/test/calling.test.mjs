// The calling extension through the client: decline, cancel, unavailable, busy, answered elsewhere, invite, in-call chat.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MeetUpError } from '../index.js';
import { Gateway } from './gateway.mjs';
import { joined, opener, uniqueId } from './events.mjs';

async function rejectsWith(promise, code) {
  await assert.rejects(promise, (err) => err instanceof MeetUpError && err.code === code);
}

/** a rings `invitees`; resolves the call id once each of them rings. */
async function ring(a, invitees) {
  const { callId } = await a.client.startCall({ participants: invitees.map((u) => u.id) });
  for (const u of invitees) await u.waitFor('incoming-call', (p) => p.callId === callId && p.initiator.id === a.id);
  return callId;
}

describe('calling extension', () => {
  let gateway;
  before(async () => {
    gateway = await Gateway.start();
  });
  after(() => gateway?.stop());

  test('decline: the callee hears invite-ended (declined), the caller call-declined', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Ring');
    const b = await joined(open, 'Nope');
    const callId = await ring(a, [b]);
    assert.deepEqual(await b.client.declineCall(callId), { ok: true, callId });
    assert.deepEqual(await b.waitFor('invite-ended', (p) => p.callId === callId), { callId, reason: 'declined' });
    assert.deepEqual(await a.waitFor('call-declined', (p) => p.callId === callId), { callId, userId: b.id });
    await rejectsWith(b.client.declineCall(callId), 'not-invited'); // no longer rings
    await rejectsWith(b.client.declineCall(uniqueId('no-call')), 'call-not-found');
    const history = await b.client.callHistory();
    const call = history.calls.find((c) => c.callId === callId);
    assert.equal(call?.outcome, 'declined');
    assert.equal(call?.direction, 'incoming');
  });

  test('cancel: the caller stops the ringing; the callee hears invite-ended (cancelled)', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Oops');
    const b = await joined(open, 'Rung');
    const callId = await ring(a, [b]);
    assert.deepEqual(await a.client.cancelCall(callId), { ok: true, callId, cancelled: [b.id] });
    assert.deepEqual(await b.waitFor('invite-ended', (p) => p.callId === callId), { callId, reason: 'cancelled' });
    await rejectsWith(b.client.cancelCall(callId), 'not-in-call');
  });

  test('unavailable and busy invitees are reported to the caller', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Dial');
    const b = await joined(open, 'Talk');
    const c = await joined(open, 'Busy');
    const ghost = uniqueId('ghost');
    const first = await ring(b, [c]);
    await c.client.joinCall(first);
    const { callId } = await a.client.startCall({ participants: [ghost, c.id] });
    assert.deepEqual(await a.waitFor('user-unavailable', (p) => p.callId === callId), { callId, userId: ghost });
    assert.deepEqual(await a.waitFor('user-busy', (p) => p.callId === callId), { callId, userId: c.id });
    await c.waitFor('incoming-call', (p) => p.callId === callId); // call waiting: rung all the same
  });

  test('answered on another device: the other sockets of the user hear invite-ended (answered-elsewhere)', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Multi');
    const phone = await joined(open, 'Dev');
    const laptop = open('Dev-laptop');
    await laptop.client.register({ id: phone.id, username: 'Dev' });
    const callId = await ring(a, [phone]);
    await laptop.waitFor('incoming-call', (p) => p.callId === callId); // every device rings
    await phone.client.joinCall(callId);
    assert.deepEqual(await laptop.waitFor('invite-ended', (p) => p.callId === callId), { callId, reason: 'answered-elsewhere' });
    assert.deepEqual(phone.received('invite-ended'), []);
  });

  test('invite-to-call rings more people; in-call chat reaches everyone in the same order, and joiners get the history', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Ada');
    const b = await joined(open, 'Bea');
    const c = await joined(open, 'Cid');
    const callId = await ring(a, [b]);
    await b.client.joinCall(callId);
    const first = await a.client.sendMessage(callId, 'hello from Ada');
    assert.equal(first.ok, true);
    assert.equal(typeof first.id, 'string');
    const second = await b.client.sendMessage(callId, 'hi Ada 👋');
    const expected = [
      { callId, id: first.id, from: { id: a.id, username: 'Ada' }, text: 'hello from Ada', sentAt: first.sentAt },
      { callId, id: second.id, from: { id: b.id, username: 'Bea' }, text: 'hi Ada 👋', sentAt: second.sentAt },
    ];
    for (const u of [a, b]) {
      await u.waitFor('call-message', (m) => m.id === second.id);
      assert.deepEqual(u.received('call-message'), expected, `${u.label}: both messages, in order`);
    }
    const invited = await b.client.inviteToCall(callId, [c.id]);
    assert.deepEqual(invited, { ok: true, callId, invited: [c.id], busy: [], unavailable: [] });
    assert.equal((await c.waitFor('incoming-call', (p) => p.callId === callId)).initiator.id, b.id, 'rung by who invited');
    await c.client.joinCall(callId);
    assert.deepEqual(await c.waitFor('call-messages', (p) => p.callId === callId), { callId, messages: expected });
    await rejectsWith(c.client.sendMessage(callId, ''), 'invalid-payload');
    const outsider = await joined(open, 'Out');
    await rejectsWith(outsider.client.sendMessage(callId, 'let me in'), 'not-in-call');
    await rejectsWith(outsider.client.inviteToCall(callId, [outsider.id]), 'not-in-call');
  });

  test('sockets that did not opt in (calling: false) get none of the extension events', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Opt');
    const b = await joined(open, 'Plain', { calling: false });
    const c = await joined(open, 'Classic', { calling: false });
    const callId = await ring(a, [b, c]);
    await b.client.declineCall(callId); // the requests work for every socket
    await a.waitFor('call-declined', (p) => p.callId === callId && p.userId === b.id);
    await c.client.joinCall(callId);
    await c.waitFor('call-participants', (p) => p.callId === callId);
    await a.client.sendMessage(callId, 'anyone?');
    await a.waitFor('call-message', (m) => m.text === 'anyone?');
    await a.client.sendOffer(callId, c.id, { after: 'the message' });
    await c.waitFor('webrtc-offer', (p) => p.offer.after === 'the message');
    const extension = ['invite-ended', 'call-declined', 'call-message', 'call-messages', 'user-busy', 'user-unavailable', 'call-unanswered'];
    for (const u of [b, c]) assert.deepEqual(u.events.filter(([e]) => extension.includes(e)), [], `${u.label}: no extension event`);
  });
});

describe('calling extension: nobody answers (RING_TIMEOUT_MS)', () => {
  const RING_TIMEOUT_MS = 1_500;
  let gateway;
  before(async () => {
    gateway = await Gateway.start({ RING_TIMEOUT_MS: String(RING_TIMEOUT_MS) });
  });
  after(() => gateway?.stop());

  test('the caller hears call-unanswered, the callee invite-ended (missed), and it counts as missed', async (t) => {
    const open = opener(t, gateway.url);
    const a = await joined(open, 'Wait');
    const b = await joined(open, 'Away');
    const callId = await ring(a, [b]);
    const bound = { timeoutMs: RING_TIMEOUT_MS + 5_000 };
    assert.deepEqual(await a.waitFor('call-unanswered', (p) => p.callId === callId, bound), { callId, userId: b.id });
    assert.deepEqual(await b.waitFor('invite-ended', (p) => p.callId === callId, bound), { callId, reason: 'missed' });
    const call = (await b.client.callHistory()).calls.find((c) => c.callId === callId);
    assert.equal(call?.outcome, 'missed');
  });
});
