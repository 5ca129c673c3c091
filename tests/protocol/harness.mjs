// Test harness: one system per test file, scenarios with their own ids and clients, and shared call flows.
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { callUser, connect, EVENT_TIMEOUT_MS, register, show, assertAckError } from './client.mjs';
import { READY_POLL_MS, startSystem } from './system.mjs';

export * from './client.mjs';
export * from './system.mjs';

/** The clients, ids and helpers of one test. Closes its clients when the test ends. */
export class Scenario {
  constructor(system, name) {
    this.system = system;
    this.name = name;
    this.prefix = `${randomBytes(4).toString('hex')}`;
    this.clients = [];
    this.logMark = system.mark();
  }

  get gatewayUrls() {
    return this.system.gatewayUrls;
  }

  /** A unique id for this scenario. */
  id(label) {
    return `${this.prefix}-${label}`;
  }

  /**
   * Connects a client. The n-th client of a scenario goes to gatewayUrls[n % 2] unless
   * `gateway` says otherwise, so that later the same scenarios run across gateways.
   */
  async connect(label, { gateway, ...options } = {}) {
    const urls = this.gatewayUrls;
    const index = gateway ?? this.clients.length % urls.length;
    const client = await connect(urls[index % urls.length], { label, ...options });
    client.gatewayIndex = index % urls.length;
    this.clients.push(client);
    return client;
  }

  /** Connects and registers a user `label` (id unique to this scenario). */
  async user(label, { username = `${label}-name`, id = this.id(label), ...options } = {}) {
    const client = await this.connect(label, options);
    const since = client.mark();
    client.registeredUser = await register(client, { id, username });
    // The ack and the users-list it caused may come in either order: settle on both.
    await client.waitFor('users-list', (l) => Array.isArray(l) && l.some((u) => u?.id === id), { since });
    return client;
  }

  /** Another socket of an already registered user. */
  async socketOf(user, label, { username = user.username, ...options } = {}) {
    const client = await this.connect(label, options);
    client.registeredUser = await register(client, { id: user.userId, username });
    return client;
  }

  async http(pathName, init = {}) {
    return fetch(`${this.gatewayUrls[0]}${pathName}`, { signal: AbortSignal.timeout(5_000), ...init });
  }

  /** GET / as JSON. */
  async status() {
    const res = await this.http('/');
    assert.equal(res.status, 200, 'GET / status');
    return res.json();
  }

  /** Polls GET / until `predicate(status)` holds (counts may settle asynchronously). */
  async waitForStatus(predicate, what, timeoutMs = EVENT_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    let last;
    for (;;) {
      last = await this.status();
      if (predicate(last)) return last;
      if (Date.now() > deadline) {
        throw new Error(`GET / never satisfied "${what}" within ${timeoutMs}ms; last: ${show(last)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
    }
  }

  /**
   * Presence barrier: a throwaway user registers and each observer waits for its `user-joined`.
   * Broadcasts reach an observer in the order they are made, so anything an earlier action
   * would have broadcast to the observers has arrived once this resolves.
   */
  async presenceBarrier(...observers) {
    const label = `barrier${this.clients.length}`;
    const probe = await this.user(label);
    // The probe's user-joined, and the (possibly coalesced) users-list that lists it:
    // whatever earlier registrations caused has been delivered by then.
    const listsProbe = (l) => Array.isArray(l) && l.some((u) => u.id === probe.userId);
    await Promise.all(
      observers.map(async (o) => {
        await o.waitFor('user-joined', (u) => u?.id === probe.userId, { what: 'presence barrier' });
        await o.waitFor('users-list', listsProbe, { what: 'presence barrier users-list' });
      }),
    );
    return probe.userId;
  }

  /** Each ack the server sent was sent exactly once (the client API silently drops repeats). */
  assertAcksOnce() {
    for (const client of this.clients) {
      const repeated = [...client.ackIds].filter(([, count]) => count > 1);
      assert.deepEqual(repeated, [], `${client.label}: acks answered more than once (id, count)`);
    }
  }

  closeAll() {
    for (const client of this.clients) client.close();
  }

  /**
   * After closing every client: GET / back to the counts from before the scenario, so the next
   * scenario of the file starts on a quiet system (no cleanup broadcasts still to come).
   */
  async waitForQuiet() {
    if (!this.baseline) return;
    const { onlineUsers, activeCalls } = this.baseline;
    await this.waitForStatus(
      (s) => s.onlineUsers === onlineUsers && s.activeCalls === activeCalls,
      `back to onlineUsers=${onlineUsers} activeCalls=${activeCalls} once the scenario's sockets closed (cleanup)`,
    );
  }

  logs() {
    return this.system.logs(this.logMark);
  }
}

/**
 * Declares the tests of one file against one system of their own (started before the first
 * test, stopped after the last). Tests within a file run one after the other.
 * `scenario(name, async (sc, t) => ...)` declares a test that gets a Scenario.
 */
export function protocolSuite({ env = {} } = {}) {
  const state = { system: null };
  before(async () => {
    state.system = await startSystem({ env });
  });
  after(async () => {
    await state.system?.stop();
  });
  function scenario(name, fn, options = {}) {
    test(name, { timeout: 60_000, ...options }, async (t) => {
      assert.ok(state.system, 'system did not start (see the before hook failure)');
      const sc = new Scenario(state.system, name);
      let failed = false;
      try {
        sc.baseline = await sc.status();
        await fn(sc, t);
        sc.assertAcksOnce();
        assert.deepEqual(state.system.panics(sc.logMark), [], 'the gateway panicked during the scenario');
        assert.equal(state.system.dead(), null, 'a process of the system died during the scenario');
      } catch (err) {
        failed = true;
        if (options.todo) throw err; // expected to fail for now: no diagnosis dump
        const dead = state.system.dead();
        if (dead) err.message = `${err.message}\n(system process died: ${dead})`;
        console.error(`\n### FAILED: ${name}\n${err?.stack ?? err}\n${sc.logs()}\n### end of ${name}\n`);
        throw err;
      } finally {
        sc.closeAll();
        try {
          await sc.waitForQuiet();
        } catch (err) {
          // A leak after a passing scenario fails it; after a failing one the first error stands.
          if (!failed) {
            console.error(`\n### FAILED (cleanup): ${name}\n${err.message}\n${sc.logs()}\n`);
            throw err;
          }
        }
      }
    });
  }
  return { scenario, system: () => state.system };
}

// ---------------------------------------------------------------------------------------------
// Shared flows
// ---------------------------------------------------------------------------------------------

/** Starts call `callId` from `initiator` inviting `invitees`; asserts the success ack. */
export async function startCall(initiator, callId, invitees = [], { isVideo = true, extra = {} } = {}) {
  const ack = await initiator.emitWithAck('start-call', {
    id: callId,
    initiator: callUser(initiator),
    participants: invitees.map((p) => (typeof p === 'string' ? { id: p } : callUser(p))),
    isVideo,
    ...extra,
  });
  assert.deepEqual(ack, { ok: true, callId }, `${initiator.label}: start-call ${callId} ack`);
  return ack;
}

/** Joins call `callId`; asserts the success ack and returns its participants. */
export async function joinCall(client, callId) {
  const ack = await client.emitWithAck('join-call', { callId, user: callUser(client) });
  assert.equal(ack?.ok, true, `${client.label}: join-call ${callId} ack ${show(ack)}`);
  assert.equal(ack.callId, callId);
  return ack.participants;
}

export async function leaveCall(client, callId) {
  const ack = await client.emitWithAck('leave-call', { callId, userId: client.userId });
  assert.equal(ack?.ok, true, `${client.label}: leave-call ${callId} ack ${show(ack)}`);
  return ack;
}

/** Asserts `ack` of join-call is the call does not exist. */
export async function assertCallGone(client, callId) {
  const since = client.mark();
  const ack = await client.emitWithAck('join-call', { callId, user: callUser(client) });
  assertAckError(ack, 'call-not-found', `join-call ${callId}`);
  const event = await client.waitFor('call-not-found', (p) => p?.callId === callId, { since });
  assert.deepEqual(event, { callId });
}

/**
 * A complete, normal two-party call on fresh users: proves the process still serves calls.
 * Returns after both have left and the call is gone.
 */
export async function runNormalCall(sc, tag = 'normal') {
  const a = await sc.user(`${tag}-a`);
  const b = await sc.user(`${tag}-b`);
  const callId = sc.id(`${tag}-call`);
  await startCall(a, callId, [b]);
  await b.waitFor('incoming-call', (p) => p?.callId === callId);
  await joinCall(b, callId);
  await a.waitFor('user-joined-call', (p) => p?.callId === callId && p.user?.id === b.userId);
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: { sdp: 'o' } }), { ok: true });
  await b.waitFor('webrtc-offer', (p) => p?.callId === callId && p.fromUserId === a.userId);
  assert.deepEqual(await b.emitWithAck('webrtc-answer', { callId, targetUserId: a.userId, answer: { sdp: 'a' } }), { ok: true });
  await a.waitFor('webrtc-answer', (p) => p?.callId === callId && p.fromUserId === b.userId);
  assert.deepEqual(
    await a.emitWithAck('webrtc-ice-candidate', { callId, targetUserId: b.userId, candidate: { c: 1 } }),
    { ok: true },
  );
  await b.waitFor('webrtc-ice-candidate', (p) => p?.callId === callId && p.fromUserId === a.userId);
  await leaveCall(a, callId);
  await b.waitFor('user-left-call', (p) => p?.callId === callId && p.userId === a.userId);
  await leaveCall(b, callId);
  await assertCallGone(b, callId);
  a.close();
  b.close();
}

/** Stands for "no payload argument at all" in lists of bad payloads. */
export const NO_ARGUMENT = Symbol('no argument');

/**
 * Every malformed variant of the valid payload `base`: not an object at all, then, for each
 * field of `wrong` (field -> [[what, wrong value], ...]), the field missing and each wrong value.
 */
export function malformed(base, wrong) {
  const list = [
    ['no payload argument at all', NO_ARGUMENT],
    ['null', null],
    ['a number', 42],
    ['a string', JSON.stringify(base)],
    ['true', true],
    ['an empty array', []],
    ['an array holding a valid payload', [base]],
    ['{}', {}],
  ];
  for (const [field, values] of Object.entries(wrong)) {
    const { [field]: _omitted, ...rest } = base;
    list.push([`${field} missing`, rest]);
    for (const [what, value] of values) list.push([`${field} ${what}`, { ...base, [field]: value }]);
  }
  return list;
}

/** Emits `payload` (or no argument, for NO_ARGUMENT); with `withAck`, resolves with the ack. */
export function emitPayload(client, event, payload, withAck) {
  const args = payload === NO_ARGUMENT ? [] : [payload];
  if (withAck) return client.emitWithAck(event, ...args);
  client.emit(event, ...args);
  return null;
}
