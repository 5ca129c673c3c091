// The client's own logic against a scripted socket (no server): handshake options, outbox, resume, users map, errors.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MeetUpClient, MeetUpError } from '../meetup.js';

/** Stands in for a socket.io-client Socket: the test plays the server. */
class ScriptedSocket {
  constructor() {
    this.handlers = new Map();
    this.anyHandlers = [];
    this.sent = []; // { event, payload, ack(value), fail(message) }
    this.connected = false;
    this.active = true;
    this.id = undefined;
  }

  on(event, handler) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(handler);
  }

  onAny(handler) {
    this.anyHandlers.push(handler);
  }

  timeout() {
    return {
      emit: (event, payload, callback) => {
        this.sent.push({ event, payload, ack: (value) => callback(null, value), fail: (message) => callback(new Error(message)) });
      },
    };
  }

  connect() {
    this.active = true;
  }

  disconnect() {
    this.active = false;
    if (this.connected) this.drop('io client disconnect');
  }

  // ---- the server's side ----

  fire(event, ...args) {
    for (const handler of this.handlers.get(event) ?? []) handler(...args);
  }

  up(id) {
    this.connected = true;
    this.id = id;
    this.fire('connect');
  }

  drop(reason) {
    this.connected = false;
    this.id = undefined;
    this.fire('disconnect', reason);
  }

  push(event, payload) {
    for (const handler of this.anyHandlers) handler(event, payload);
  }

  /** The oldest request not yet taken, which must be `event`. */
  take(event) {
    const request = this.sent.shift();
    assert.equal(request?.event, event, `expected ${event} to be sent, got ${request?.event}`);
    return request;
  }
}

function scripted(options = {}, url = 'http://gateway.test') {
  const socket = new ScriptedSocket();
  const calls = [];
  const io = (...args) => {
    calls.push(args);
    return socket;
  };
  const client = new MeetUpClient(url, { io, ...options });
  const local = [];
  for (const event of ['registered', 'resume-refused', 'registration-failed', 'users-changed']) client.on(event, (p) => local.push([event, p]));
  return { client, socket, calls, local };
}

const ack = (extra = {}) => ({ ok: true, user: { id: 'u1', username: 'Ann', joinedAt: '2025-01-01T00:00:00.000Z' }, ...extra });
const refused = (code) => ({ ok: false, error: { code, message: `${code} (scripted)` } });
const settled = () => new Promise((resolve) => setImmediate(resolve));

test('handshake: calling always, presence and token when given, socket options passed on', () => {
  const { calls } = scripted({ presence: 'delta', token: 'jwt', socketOptions: { transports: ['websocket'], auth: { extra: 1 } } });
  assert.deepEqual(calls, [['http://gateway.test', { transports: ['websocket'], auth: { extra: 1, calling: true, presence: 'delta', token: 'jwt' } }]]);
  const sameOrigin = scripted({}, null);
  assert.deepEqual(sameOrigin.calls, [[{ auth: { calling: true } }]], 'no url: io(options), the page origin');
  assert.throws(() => new MeetUpClient('http://x', { io: undefined }), TypeError, 'no io anywhere');
});

test('register waits for the connection; requests made meanwhile wait for the ack, then go in order', async () => {
  const { client, socket, local } = scripted();
  const registering = client.register({ id: 'u1', username: 'Ann' });
  const start = client.startCall({ id: 'c1', participants: ['u2'] });
  const history = client.callHistory({ limit: 5 });
  assert.equal(socket.sent.length, 0, 'nothing before the connection');
  socket.up('s1');
  const joined = socket.take('user-joined');
  assert.deepEqual(joined.payload, { id: 'u1', username: 'Ann', resumeToken: null });
  assert.equal(socket.sent.length, 0, 'the requests wait for the registration');
  joined.ack(ack({ resumeToken: 't1', resumed: false, recovered: false }));
  assert.equal((await registering).resumeToken, 't1');
  assert.equal(client.registered, true);
  assert.equal(client.resumeToken, 't1');
  assert.deepEqual(local.at(-1), ['registered', { ...ack({ resumeToken: 't1' }), resumed: false, recovered: false, reconnected: false }]);
  const startReq = socket.take('start-call');
  assert.deepEqual(startReq.payload, { id: 'c1', initiator: { id: 'u1', username: 'Ann' }, participants: [{ id: 'u2' }], isVideo: true });
  assert.deepEqual(socket.take('get-call-history').payload, { limit: 5 });
  startReq.ack({ ok: true, callId: 'c1' });
  assert.deepEqual(await start, { ok: true, callId: 'c1' });
  void history;
});

test('acks: ok resolves, a refusal rejects with its code, a timeout or a lost socket with the client codes', async () => {
  const { client, socket } = scripted();
  const join = client.joinCall('nope');
  const offer = client.sendOffer('c1', 'u2', { sdp: 'x' });
  const chat = client.sendMessage('c1', 'hi');
  const leave = client.leaveCall('c1');
  socket.take('join-call').ack(refused('call-not-found'));
  socket.take('webrtc-offer').fail('operation has timed out');
  socket.take('call-message').fail('socket has been disconnected');
  socket.take('leave-call').ack({ ok: true, callId: 'c1', left: false });
  await assert.rejects(join, (err) => err instanceof MeetUpError && err.code === 'call-not-found' && err.event === 'join-call');
  await assert.rejects(offer, (err) => err.code === 'timeout' && err.event === 'webrtc-offer');
  await assert.rejects(chat, (err) => err.code === 'disconnected');
  assert.deepEqual(await leave, { ok: true, callId: 'c1', left: false });
});

test('users map: a full list, then joins (insert or replace) and leaves', () => {
  const { client, socket, local } = scripted();
  const ann = { id: 'u1', username: 'Ann', joinedAt: 't' };
  socket.push('users-list', [ann, { id: 'u2', username: 'Bob', joinedAt: 't' }]);
  socket.push('user-joined', { id: 'u3', username: 'Cy', joinedAt: 't' });
  socket.push('user-joined', { id: 'u2', username: 'Robert', joinedAt: 't' });
  socket.push('user-left', 'u3');
  assert.deepEqual([...client.users.values()], [ann, { id: 'u2', username: 'Robert', joinedAt: 't' }]);
  assert.equal(local.filter(([e]) => e === 'users-changed').length, 4);
  socket.push('users-list', [ann]);
  assert.deepEqual([...client.users.keys()], ['u1'], 'a list supersedes what came before');
});

/** A client registered on socket s1 with token t1, having received relays up to seq 3. */
async function registeredClient() {
  const setup = scripted();
  const { client, socket } = setup;
  socket.up('s1');
  const registering = client.register({ id: 'u1', username: 'Ann' });
  socket.take('user-joined').ack(ack({ resumeToken: 't1', resumed: false, recovered: false }));
  await registering;
  socket.push('webrtc-offer', { seq: 3, callId: 'c1', fromUserId: 'u2', offer: {} });
  socket.push('call-message', { seq: 99, callId: 'c1' }); // not a relay: no effect on lastSeq
  assert.equal(client.lastSeq, 3);
  return setup;
}

test('resume: a new socket takes the session over with the token and lastSeq; what waited goes after', async () => {
  const { client, socket, local } = await registeredClient();
  socket.drop('transport close');
  assert.deepEqual([client.registered, client.reconnecting], [false, true]);
  const relay = client.sendIceCandidate('c1', 'u2', { candidate: 'a' });
  assert.equal(socket.sent.length, 0, 'waits while reconnecting');
  socket.up('s2');
  const resume = socket.take('user-joined');
  assert.deepEqual(resume.payload, { id: 'u1', username: 'Ann', resumeToken: 't1', lastSeq: 3 });
  resume.ack(ack({ resumeToken: 't2', resumed: true, recovered: true }));
  assert.deepEqual([client.registered, client.reconnecting, client.resumeToken, client.lastSeq], [true, false, 't2', 3]);
  assert.equal(local.at(-1)[1].reconnected, true);
  socket.take('webrtc-ice-candidate').ack({ ok: true });
  assert.deepEqual(await relay, { ok: true });
});

test('resume refused: registers afresh, says so, drops the old session\'s relays, sends the rest', async () => {
  const { client, socket, local } = await registeredClient();
  socket.drop('ping timeout');
  const relay = client.sendOffer('c1', 'u2', {});
  const history = client.callHistory();
  socket.up('s2');
  socket.take('user-joined').ack(refused('resume-refused'));
  assert.equal(local.at(-1)[0], 'resume-refused');
  assert.equal(local.at(-1)[1].code, 'resume-refused');
  const fresh = socket.take('user-joined');
  assert.deepEqual(fresh.payload, { id: 'u1', username: 'Ann', resumeToken: null });
  fresh.ack(ack({ resumeToken: 't3', resumed: false, recovered: false }));
  assert.deepEqual(local.at(-1)[1].reconnected, true);
  assert.equal(client.lastSeq, 0);
  await assert.rejects(relay, (err) => err.code === 'session-lost');
  socket.take('get-call-history').ack({ ok: true, calls: [], next: null });
  assert.deepEqual(await history, { ok: true, calls: [], next: null });
});

test('an answer to a socket gone since is ignored: the new socket registers', async () => {
  const { client, socket } = await registeredClient();
  socket.drop('transport close');
  socket.up('s2');
  const stale = socket.take('user-joined');
  socket.drop('transport close');
  socket.up('s3');
  const current = socket.take('user-joined');
  stale.ack(ack({ resumeToken: 'stale', resumed: true, recovered: true }));
  assert.equal(client.registered, false, 'not registered by an answer meant for s2');
  current.ack(ack({ resumeToken: 't4', resumed: true, recovered: true }));
  assert.deepEqual([client.registered, client.resumeToken], [true, 't4']);
});

test('a failed first registration rejects register(); what waited is sent and answered by the server', async () => {
  const { client, socket } = scripted();
  socket.up('s1');
  const registering = client.register({ id: 'u1', username: 'Ann' });
  const start = client.startCall({ participants: ['u2'] });
  socket.take('user-joined').ack(refused('forbidden'));
  await assert.rejects(registering, (err) => err.code === 'forbidden');
  assert.equal(client.userId, null);
  socket.take('start-call').ack(refused('not-registered'));
  await assert.rejects(start, (err) => err.code === 'not-registered');
});

test('goodbye: disconnect() rejects what waits and what comes after; the next connection registers afresh', async () => {
  const { client, socket } = await registeredClient();
  socket.drop('transport close');
  const waiting = client.sendMessage('c1', 'queued');
  client.disconnect();
  socket.fire('disconnect', 'io client disconnect');
  await assert.rejects(waiting, (err) => err.code === 'disconnected');
  await assert.rejects(client.joinCall('c1'), (err) => err.code === 'disconnected');
  assert.equal(client.resumeToken, null);
  client.connect();
  socket.up('s9');
  assert.deepEqual(socket.take('user-joined').payload, { id: 'u1', username: 'Ann', resumeToken: null });
  await settled();
});

test('a refused handshake rejects the registration and what waited for it; registering again tries again', async () => {
  const { client, socket } = scripted();
  const registering = client.register({ id: 'u1', username: 'Ann' });
  const start = client.startCall({ participants: ['u2'] });
  socket.active = false; // socket.io-client gives up after a refusal by the server
  socket.fire('connect_error', new Error('authentication failed: missing token'));
  await assert.rejects(registering, (err) => err.code === 'connect-failed' && /missing token/.test(err.message));
  await assert.rejects(start, (err) => err.code === 'connect-failed' && err.event === 'start-call');
  assert.equal(client.userId, null);
  // Registering again tries the handshake again.
  const again = client.register({ id: 'u1', username: 'Ann' });
  assert.equal(socket.active, true, 'connecting again');
  socket.up('s2');
  socket.take('user-joined').ack(ack({ resumeToken: 't1' }));
  assert.equal((await again).ok, true);
});
