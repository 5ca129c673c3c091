// Smoke test for the Node.js reference server (benchmark baseline).
// Run with: node --test   (from bench/node-reference, after npm ci)
//
// Starts server.js on a free port as a child process, then drives the main
// flows with socket.io-client. Every wait is bounded; no sleeps.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { io as connect } from 'socket.io-client';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WAIT_MS = 5000;

let child;
let baseUrl;
let childOutput = '';
const sockets = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function withTimeout(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Resolves with the payload of the next `event` on `socket` that matches `pred`.
function next(socket, event, pred = () => true) {
  return withTimeout(
    new Promise((resolve) => {
      const handler = (payload) => {
        if (!pred(payload)) return;
        socket.off(event, handler);
        resolve(payload);
      };
      socket.on(event, handler);
    }),
    `${event} on ${socket.__name}`,
  );
}

function client(name, opts = {}) {
  const s = connect(baseUrl, { forceNew: true, reconnection: false, ...opts });
  s.__name = name;
  s.__events = [];
  s.__payloads = [];
  s.onAny((event, payload) => { s.__events.push(event); s.__payloads.push([event, payload]); });
  sockets.push(s);
  return s;
}

function childExited() {
  return child.exitCode !== null || child.signalCode !== null;
}

async function getStatus() {
  const res = await withTimeout(fetch(`${baseUrl}/`), 'GET /');
  assert.equal(res.status, 200);
  return res.json();
}

before(async () => {
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  child = spawn(process.execPath, ['server.js'], {
    cwd: HERE,
    env: { ...process.env, PORT: String(port), DEBUG_LOG: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderr.on('data', (d) => { childOutput += d; });
  // Ready once it prints its listening line (bounded), then GET / must answer.
  await withTimeout(
    new Promise((resolve, reject) => {
      child.stdout.on('data', (d) => {
        childOutput += d;
        if (childOutput.includes('running on port')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`server exited early (${code}): ${childOutput}`)));
    }),
    'server start',
  );
  const status = await getStatus();
  assert.equal(typeof status.message, 'string');
  assert.deepEqual({ u: status.onlineUsers, c: status.activeCalls }, { u: 0, c: 0 });
});

after(async () => {
  for (const s of sockets) s.disconnect();
  if (child && !childExited()) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await withTimeout(exited, 'server exit').catch(() => child.kill('SIGKILL'));
  }
});

test('join, call, relay, ack, bad input, disconnect', async () => {
  // A: default transports (polling then upgrade); B: websocket only.
  const a = client('A');
  const b = client('B', { transports: ['websocket'] });
  await withTimeout(Promise.all([
    new Promise((r) => a.once('connect', r)),
    new Promise((r) => b.once('connect', r)),
  ]), 'connect');

  // --- two users join ---
  const aList1 = next(a, 'users-list', (l) => l.length === 1);
  const aAck = await a.timeout(WAIT_MS).emitWithAck('user-joined', { id: 'ua', username: 'Alice' });
  assert.equal(aAck.ok, true);
  assert.equal(aAck.user.id, 'ua');
  const list1 = await aList1;
  assert.deepEqual(list1.map((u) => u.id), ['ua']);

  const aList2 = next(a, 'users-list', (l) => l.length === 2);
  const bList2 = next(b, 'users-list', (l) => l.length === 2);
  const aSawB = next(a, 'user-joined');
  b.emit('user-joined', { id: 'ub', username: 'Bob' });
  const [la, lb, joined] = await Promise.all([aList2, bList2, aSawB]);
  for (const l of [la, lb]) {
    assert.deepEqual(l.map((u) => u.id).sort(), ['ua', 'ub']);
    for (const u of l) {
      assert.deepEqual(Object.keys(u).sort(), ['id', 'joinedAt', 'username']);
      assert.ok(!Number.isNaN(Date.parse(u.joinedAt)));
    }
  }
  assert.equal(joined.id, 'ub');
  assert.equal(joined.username, 'Bob');
  assert.deepEqual(Object.keys(joined).sort(), ['id', 'joinedAt', 'username']);
  assert.ok(
    !b.__payloads.some(([e, p]) => e === 'user-joined' && p && p.id === 'ub'),
    'the joiner does not get its own user-joined',
  );

  // --- A starts a call inviting B ---
  const incoming = next(b, 'incoming-call');
  const started = next(a, 'call-started');
  a.emit('start-call', {
    id: 'call-1',
    initiator: { id: 'ua', username: 'Alice' },
    participants: [{ id: 'ua', username: 'Alice' }, { id: 'ub', username: 'Bob' }],
    isVideo: true,
  });
  const inc = await incoming;
  assert.equal(inc.callId, 'call-1');
  assert.equal(inc.initiator.id, 'ua');
  assert.equal(inc.isVideo, true);
  assert.deepEqual(await started, { callId: 'call-1' });

  // --- B joins it ---
  const joinedCall = next(a, 'user-joined-call');
  const partsB = next(b, 'call-participants');
  b.emit('join-call', { callId: 'call-1', user: { id: 'ub', username: 'Bob' } });
  const jc = await joinedCall;
  assert.equal(jc.callId, 'call-1');
  assert.equal(jc.user.id, 'ub');
  assert.deepEqual(jc.participants.map((p) => p.id), ['ua', 'ub']);
  const cp = await partsB;
  assert.equal(cp.callId, 'call-1');
  assert.deepEqual(cp.participants.map((p) => p.id), ['ua', 'ub']);

  // Unknown call: call-not-found event plus a failing ack.
  const notFound = next(b, 'call-not-found');
  const nfAck = await b.timeout(WAIT_MS).emitWithAck('join-call', { callId: 'nope', user: { id: 'ub' } });
  assert.equal(nfAck.ok, false);
  assert.equal(nfAck.error.code, 'call-not-found');
  assert.deepEqual(await notFound, { callId: 'nope' });

  // --- offer and ICE candidate relay A -> B, in order, with fromUserId ---
  const offer = { type: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n' };
  const candidate = { candidate: 'candidate:1 1 UDP 2122260223 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
  const gotOffer = next(b, 'webrtc-offer');
  const gotIce = next(b, 'webrtc-ice-candidate');
  a.emit('webrtc-offer', { callId: 'call-1', targetUserId: 'ub', offer });
  const iceAck = await a.timeout(WAIT_MS).emitWithAck('webrtc-ice-candidate', {
    callId: 'call-1', targetUserId: 'ub', candidate,
  });
  assert.deepEqual(iceAck, { ok: true });
  assert.deepEqual(await gotOffer, { callId: 'call-1', fromUserId: 'ua', offer });
  assert.deepEqual(await gotIce, { callId: 'call-1', fromUserId: 'ua', candidate });
  const order = b.__events.filter((e) => e.startsWith('webrtc-'));
  assert.deepEqual(order, ['webrtc-offer', 'webrtc-ice-candidate']);

  // Relay to an offline user: rejected through the ack, nothing crashes.
  const offAck = await a.timeout(WAIT_MS).emitWithAck('webrtc-answer', {
    callId: 'call-1', targetUserId: 'ghost', answer: {},
  });
  assert.equal(offAck.ok, false);
  assert.equal(offAck.error.code, 'user-offline');

  // --- bad input must not crash the server ---
  const nullAck = await a.timeout(WAIT_MS).emitWithAck('start-call', null);
  assert.equal(nullAck.ok, false);
  assert.equal(nullAck.error.code, 'invalid-payload');
  assert.equal(typeof nullAck.error.message, 'string');
  a.emit('start-call', null); // no ack
  a.emit('start-call', { id: 'call-x', participants: [], isVideo: false }); // the original's crash
  a.emit('start-call'); // no payload at all
  const noArgAck = await a.timeout(WAIT_MS).emitWithAck('join-call');
  assert.equal(noArgAck.ok, false);
  assert.equal(noArgAck.error.code, 'invalid-payload');
  assert.ok(!childExited(), `server died on bad input: ${childOutput}`);
  const status = await getStatus();
  assert.equal(status.onlineUsers, 2);
  assert.equal(status.activeCalls, 1, 'bad start-call payloads create no call');

  // --- B disconnects: A gets user-left-call, then user-left ---
  const leftCall = next(a, 'user-left-call');
  const userLeft = next(a, 'user-left');
  a.__events.length = 0;
  b.disconnect();
  const lc = await leftCall;
  assert.equal(lc.callId, 'call-1');
  assert.equal(lc.userId, 'ub');
  assert.deepEqual(lc.participants.map((p) => p.id), ['ua']);
  assert.equal(await userLeft, 'ub');
  const iLeftCall = a.__events.indexOf('user-left-call');
  const iUserLeft = a.__events.indexOf('user-left');
  assert.ok(iLeftCall >= 0 && iLeftCall < iUserLeft, `order was ${a.__events.join(', ')}`);
  assert.ok(a.__events.slice(iLeftCall, iUserLeft).includes('users-list'));

  const after = await getStatus();
  assert.equal(after.onlineUsers, 1);
  assert.equal(after.activeCalls, 1);
  assert.ok(!childExited());
});
