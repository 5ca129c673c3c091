// JWT authentication with AUTH_JWT_SECRET (HS256): refused handshakes and their reasons, token via auth or query, sub binding, username claim.
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { claimsFor, nowSecs, signJwt } from './jwt.mjs';
import { assertAckError, assertPublicUser, callUser, protocolSuite, show, startCall } from './harness.mjs';

const SECRET = 'protocol-suite-hs256-secret';
const { scenario } = protocolSuite({ env: { AUTH_JWT_SECRET: SECRET } });

const hs256 = (claims, key = SECRET) => signJwt(claims, { alg: 'HS256', key });

/** Connects with `options` and resolves with the connect_error message (fails if it connects). */
async function refusal(url, options, timeoutMs = 5_000) {
  const socket = io(url, { forceNew: true, reconnection: false, transports: ['websocket'], ...options });
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`neither connect nor connect_error within ${timeoutMs}ms`)), timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        reject(new Error('connected, but the handshake should have been refused'));
      });
      socket.once('connect_error', (err) => {
        clearTimeout(timer);
        resolve(err.message);
      });
    });
  } finally {
    socket.disconnect();
  }
}

/** Asserts the handshake with `options` is refused with "authentication failed: <reason>". */
async function assertRefused(sc, options, reason, what) {
  for (const url of new Set(sc.gatewayUrls)) {
    const message = await refusal(url, options);
    assert.match(message, /^authentication failed: /, `${what}: connect_error message ${show(message)}`);
    if (reason instanceof RegExp) assert.match(message, reason, what);
    else assert.equal(message, `authentication failed: ${reason}`, what);
  }
}

/** A user registered with a valid token for its own id (token sent as `via`: 'auth' or 'query'). */
async function authedUser(sc, label, { claims = {}, via = 'auth', ...options } = {}) {
  const id = sc.id(label);
  const token = hs256(claimsFor(id, claims));
  const carrier = via === 'auth' ? { auth: { token } } : { query: { token } };
  const client = await sc.user(label, { id, ...carrier, ...options });
  client.token = token;
  return client;
}

/** Presence barrier with an authenticated probe (the harness's own probe has no token); returns its id. */
async function barrier(sc, ...observers) {
  const probe = await authedUser(sc, `barrier${sc.clients.length}`);
  await Promise.all(observers.map((o) => o.waitFor('user-joined', (u) => u?.id === probe.userId, { what: 'barrier' })));
  return probe.userId;
}

scenario('a handshake without a token is refused: "authentication failed: missing token"', async (sc) => {
  await assertRefused(sc, {}, 'missing token', 'no auth, no query');
  await assertRefused(sc, { auth: {} }, 'missing token', 'auth without token');
  await assertRefused(sc, { transports: ['polling'] }, 'missing token', 'no token over long-polling');
  assert.deepEqual(await sc.status().then((s) => s.onlineUsers), sc.baseline.onlineUsers);
});

scenario('an expired token is refused: "token expired"', async (sc) => {
  const token = hs256({ sub: sc.id('late'), iat: nowSecs(-7200), exp: nowSecs(-3600) });
  await assertRefused(sc, { auth: { token } }, 'token expired', 'expired via auth');
  await assertRefused(sc, { query: { token } }, 'token expired', 'expired via query');
});

scenario('a token expired longer ago than the leeway (AUTH_JWT_LEEWAY_SECS, default 30) is refused; within it, accepted', async (sc) => {
  const late = hs256({ sub: sc.id('late'), iat: nowSecs(-600), exp: nowSecs(-45) });
  await assertRefused(sc, { auth: { token: late } }, 'token expired', 'expired 45 s ago');
  // Clock skew of a few seconds is forgiven.
  const skewed = await authedUser(sc, 'skewed', { claims: { iat: nowSecs(-600), exp: nowSecs(-5) } });
  assert.ok(skewed.connected, 'expired 5 s ago: within the leeway');
});

scenario('a token whose nbf lies in the future is refused: "token not yet valid"', async (sc) => {
  const early = hs256(claimsFor(sc.id('early'), { nbf: nowSecs(600) }));
  await assertRefused(sc, { auth: { token: early } }, 'token not yet valid', 'nbf in 10 min via auth');
  await assertRefused(sc, { query: { token: early } }, 'token not yet valid', 'nbf in 10 min via query');
  const almost = await authedUser(sc, 'almost', { claims: { nbf: nowSecs(5) } });
  assert.ok(almost.connected, 'nbf 5 s ahead: within the leeway');
  const past = await authedUser(sc, 'past', { claims: { nbf: nowSecs(-60) } });
  assert.ok(past.connected, 'nbf in the past');
});

scenario('a token with a bad signature is refused: "invalid token signature"', async (sc) => {
  const id = sc.id('forger');
  await assertRefused(sc, { auth: { token: hs256(claimsFor(id), 'another-secret') } }, 'invalid token signature', 'other secret');
  // A valid token whose payload is swapped for another user's: the signature no longer matches.
  const [head, , signature] = hs256(claimsFor(id)).split('.');
  const forged = `${head}.${Buffer.from(JSON.stringify(claimsFor(sc.id('victim')))).toString('base64url')}.${signature}`;
  await assertRefused(sc, { auth: { token: forged } }, 'invalid token signature', 'payload swapped');
});

scenario('tokens without sub or exp, unsigned (alg none) or not JWTs are refused', async (sc) => {
  await assertRefused(sc, { auth: { token: hs256({ exp: nowSecs(3600) }) } }, 'token lacks the sub claim', 'no sub');
  await assertRefused(sc, { auth: { token: hs256({ sub: sc.id('x') }) } }, 'token lacks the exp claim', 'no exp');
  const none = signJwt(claimsFor(sc.id('x')), { alg: 'HS256', key: SECRET, header: { alg: 'none' } }).replace(/[^.]+$/, '');
  await assertRefused(sc, { auth: { token: none } }, /./, 'alg none, no signature');
  await assertRefused(sc, { auth: { token: 'not-a-jwt' } }, /./, 'garbage');
  await assertRefused(sc, { auth: { token: 42 } }, /./, 'a number as token');
});

scenario('a valid token in auth.token: the socket registers as its sub and calls work', async (sc) => {
  const a = await authedUser(sc, 'a');
  const b = await authedUser(sc, 'b');
  assertPublicUser(a.registeredUser, { id: a.userId, username: 'a-name' }, 'ack user (no name claim: from user-joined)');
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await b.waitFor('incoming-call', (p) => p?.callId === callId);
  const join = await b.emitWithAck('join-call', { callId, user: callUser(b) });
  assert.equal(join?.ok, true, show(join));
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: { sdp: 'o' } }), { ok: true });
  await b.waitFor('webrtc-offer', (p) => p?.callId === callId && p.fromUserId === a.userId);
});

for (const transport of ['websocket', 'polling']) {
  scenario(`a valid token in the "token" query parameter (${transport})`, async (sc) => {
    const a = await authedUser(sc, 'a', { via: 'query', transport });
    const b = await authedUser(sc, 'b', { via: 'query', transport });
    const since = b.mark();
    assert.deepEqual(await a.emitWithAck('start-call', { id: sc.id('call'), initiator: callUser(a), participants: [{ id: b.userId }], isVideo: false }), {
      ok: true,
      callId: sc.id('call'),
    });
    await b.waitFor('incoming-call', (p) => p?.callId === sc.id('call'), { since });
  });
}

scenario('user-joined with an id other than the token sub is forbidden and changes nothing', async (sc) => {
  const observer = await authedUser(sc, 'observer');
  const victim = await authedUser(sc, 'victim');
  const mallory = await sc.connect('mallory', { auth: { token: hs256(claimsFor(sc.id('mallory'))) } });
  await observer.waitFor('user-joined', (u) => u?.id === victim.userId);
  const since = observer.mark();
  const before = await sc.status();
  for (const id of [victim.userId, sc.id('nobody')]) {
    assertAckError(await mallory.emitWithAck('user-joined', { id, username: 'impostor' }), 'forbidden', `user-joined as ${id}`);
  }
  // Still unregistered: nothing it does is attributed to anyone.
  assertAckError(
    await mallory.emitWithAck('start-call', { id: sc.id('call'), initiator: { id: victim.userId, username: 'x' }, participants: [], isVideo: true }),
    'not-registered',
  );
  const probeId = await barrier(sc, observer);
  const seen = observer.eventsSince(since).filter((e) => e.event === 'user-joined' || e.event === 'user-left');
  assert.deepEqual(seen.map((e) => e.args[0]?.id ?? e.args[0]), [probeId], 'presence events from the forbidden attempts');
  const lists = observer.received('users-list', () => true, since);
  for (const list of lists) {
    assert.equal(list.filter((u) => u.id === victim.userId).length, 1);
    assert.ok(!list.some((u) => u.username === 'impostor' || u.id === sc.id('nobody')), `users-list ${show(list)}`);
  }
  assert.equal((await sc.status()).onlineUsers, before.onlineUsers + 1, 'only the barrier user came online');
  // The same socket may still register as its own sub.
  const ack = await mallory.emitWithAck('user-joined', { id: sc.id('mallory'), username: 'mallory' });
  assert.equal(ack?.ok, true, show(ack));
});

scenario('the username comes from the token name claim when present', async (sc) => {
  const observer = await authedUser(sc, 'observer');
  const since = observer.mark();
  const named = await authedUser(sc, 'named', { claims: { name: 'Name From Token' }, username: 'typed-name' });
  assertPublicUser(named.registeredUser, { id: named.userId, username: 'Name From Token' }, 'ack user');
  const joined = await observer.waitFor('user-joined', (u) => u?.id === named.userId, { since });
  assert.equal(joined.username, 'Name From Token');
  const list = await observer.waitFor('users-list', (l) => l.some((u) => u.id === named.userId), { since });
  assert.equal(list.find((u) => u.id === named.userId).username, 'Name From Token');
});
