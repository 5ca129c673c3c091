// HTTP: GET / shape and live counters, CORS (listed origins, foreign origins, default), /healthz and /readyz.
import assert from 'node:assert/strict';
import { callUser, joinCall, leaveCall, protocolSuite, startCall, startSystem } from './harness.mjs';

const ALLOWED = ['http://allowed.example', 'http://also-allowed.example:8080'];
const FOREIGN = 'http://evil.example';
const { scenario } = protocolSuite({ env: { CLIENT_URL: ALLOWED.join(',') } });

const HANDSHAKE = '/socket.io/?EIO=4&transport=polling';

// This runs first in the file, on a fresh system: the counts start at zero.
scenario('GET / counts online users and active calls live', async (sc) => {
  assert.deepEqual(await sc.status().then(({ onlineUsers, activeCalls }) => ({ onlineUsers, activeCalls })), {
    onlineUsers: 0,
    activeCalls: 0,
  });
  const counts = (onlineUsers, activeCalls) => (s) => s.onlineUsers === onlineUsers && s.activeCalls === activeCalls;
  const expectNow = async (onlineUsers, activeCalls, what) => {
    const s = await sc.status();
    assert.deepEqual({ onlineUsers: s.onlineUsers, activeCalls: s.activeCalls }, { onlineUsers, activeCalls }, what);
  };

  const lurker = await sc.connect('lurker');
  await expectNow(0, 0, 'a connected, unregistered socket is not an online user');
  const a1 = await sc.user('a');
  await sc.waitForStatus(counts(1, 0), 'a online');
  const a2 = await sc.socketOf(a1, 'a-2');
  await expectNow(1, 0, 'a second socket of a is not another user');
  const b = await sc.user('b');
  await sc.waitForStatus(counts(2, 0), 'a and b online');

  const first = sc.id('first');
  await startCall(a1, first, [b]);
  await sc.waitForStatus(counts(2, 1), 'one call');
  await joinCall(b, first);
  await expectNow(2, 1, 'joining does not add a call');
  const second = sc.id('second');
  await startCall(b, second, []);
  await sc.waitForStatus(counts(2, 2), 'two calls');
  const dup = await a1.emitWithAck('start-call', { id: second, initiator: callUser(a1), participants: [], isVideo: true });
  assert.equal(dup.ok, false);
  await expectNow(2, 2, 'a rejected start-call adds no call');
  await leaveCall(a1, first);
  await expectNow(2, 2, 'a call with a participant left is still active');
  b.close(); // ends both calls: b was the last one in each
  await sc.waitForStatus(counts(1, 0), 'b gone, its calls ended');
  a2.close();
  await sc.presenceBarrier(lurker); // a third user comes and is counted
  await sc.waitForStatus(counts(2, 0), 'a (one socket left) and the barrier user');
  a1.close();
  await sc.waitForStatus(counts(1, 0), 'a gone with its last socket');
  const status = await sc.status();
  assert.equal(typeof status.message, 'string');
});

scenario('GET / answers JSON {message, onlineUsers, activeCalls}', async (sc) => {
  const res = await sc.http('/');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  const body = await res.json();
  assert.equal(typeof body.message, 'string');
  assert.ok(body.message.length > 0);
  for (const key of ['onlineUsers', 'activeCalls']) {
    assert.equal(typeof body[key], 'number', key);
    assert.ok(Number.isInteger(body[key]) && body[key] >= 0, `${key} is a count`);
  }
});

scenario('/healthz answers {status: "ok"} and /readyz {status: "ready"}', async (sc) => {
  for (const [path, status] of [['/healthz', 'ok'], ['/readyz', 'ready']]) {
    const res = await sc.http(path);
    assert.equal(res.status, 200, path);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/, path);
    assert.deepEqual(await res.json(), { status }, path);
  }
});

function assertGranted(res, origin, what) {
  assert.equal(res.headers.get('access-control-allow-origin'), origin, `${what}: access-control-allow-origin`);
  assert.equal(res.headers.get('access-control-allow-credentials'), 'true', `${what}: access-control-allow-credentials`);
}

function assertNotGranted(res, origin, what) {
  const granted = res.headers.get('access-control-allow-origin');
  assert.ok(granted === null || (granted !== origin && granted !== '*'), `${what}: ${origin} was granted (${granted})`);
}

scenario('CORS: every origin listed in CLIENT_URL is granted, with credentials, on GET / and the polling handshake', async (sc) => {
  for (const origin of ALLOWED) {
    const root = await sc.http('/', { headers: { Origin: origin } });
    assert.equal(root.status, 200);
    assertGranted(root, origin, `GET / from ${origin}`);
    const handshake = await sc.http(HANDSHAKE, { headers: { Origin: origin } });
    assert.equal(handshake.status, 200);
    assertGranted(handshake, origin, `polling handshake from ${origin}`);
    const body = await handshake.text();
    assert.match(body, /^0\{/, 'an Engine.IO v4 open packet');
    const { sid } = JSON.parse(body.slice(1));
    assert.equal(typeof sid, 'string');
    // The POST half of long-polling (here the Socket.IO CONNECT packet) is granted too.
    const post = await sc.http(`${HANDSHAKE}&sid=${encodeURIComponent(sid)}`, {
      method: 'POST',
      headers: { Origin: origin, 'Content-Type': 'text/plain;charset=UTF-8' },
      body: '40',
    });
    assert.equal(post.status, 200);
    assertGranted(post, origin, `polling POST from ${origin}`);
  }
});

scenario('CORS: preflight for a listed origin allows GET and POST with credentials', async (sc) => {
  for (const path of ['/', HANDSHAKE]) {
    const res = await sc.http(path, {
      method: 'OPTIONS',
      headers: { Origin: ALLOWED[0], 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
    });
    assert.ok(res.status === 200 || res.status === 204, `preflight ${path}: status ${res.status}`);
    assertGranted(res, ALLOWED[0], `preflight ${path}`);
    const methods = (res.headers.get('access-control-allow-methods') ?? '').toUpperCase();
    assert.match(methods, /\bGET\b/, `preflight ${path}: allow-methods ${methods}`);
    assert.match(methods, /\bPOST\b/, `preflight ${path}: allow-methods ${methods}`);
  }
});

scenario('CORS: a foreign origin gets no grant (GET /, polling handshake, preflight)', async (sc) => {
  for (const origin of [FOREIGN, 'http://allowed.example.evil.example', 'https://allowed.example', 'null']) {
    assertNotGranted(await sc.http('/', { headers: { Origin: origin } }), origin, 'GET /');
    assertNotGranted(await sc.http(HANDSHAKE, { headers: { Origin: origin } }), origin, 'polling handshake');
    const preflight = await sc.http(HANDSHAKE, {
      method: 'OPTIONS',
      headers: { Origin: origin, 'Access-Control-Request-Method': 'POST' },
    });
    assertNotGranted(preflight, origin, 'preflight');
  }
});

scenario('CORS: CLIENT_URL defaults to http://localhost:3000', async () => {
  const system = await startSystem({ env: { CLIENT_URL: undefined } });
  try {
    const [url] = system.gatewayUrls;
    const get = (origin, path = '/') => fetch(`${url}${path}`, { headers: { Origin: origin }, signal: AbortSignal.timeout(5_000) });
    assertGranted(await get('http://localhost:3000'), 'http://localhost:3000', 'GET / default origin');
    assertGranted(await get('http://localhost:3000', HANDSHAKE), 'http://localhost:3000', 'handshake default origin');
    assertNotGranted(await get(ALLOWED[0]), ALLOWED[0], 'GET / with CLIENT_URL unset');
  } catch (err) {
    console.error(system.logs());
    throw err;
  } finally {
    await system.stop();
  }
});
