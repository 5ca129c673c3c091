// CONNECTIONS_PER_IP_PER_SEC: new Socket.IO handshakes per client IP (burst twice the rate), sessions exempt, TRUST_FORWARDED_FOR.
import assert from 'node:assert/strict';
import http from 'node:http';
import { protocolSuite, Scenario, startSystem } from './harness.mjs';

const RATE = 2; // burst 4: the 5th quick handshake is refused
const { scenario } = protocolSuite({ env: { CONNECTIONS_PER_IP_PER_SEC: String(RATE) } });

const HANDSHAKE = '/socket.io/?EIO=4&transport=polling';

/** A fresh loopback source address (all of 127/8 is local), so each scenario has its own budget. */
const freshLoopback = () => `127.${1 + Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 256)}.${1 + Math.floor(Math.random() * 250)}`;
const freshRemote = () => `198.51.100.${1 + Math.floor(Math.random() * 250)}`; // what a proxy would forward (TEST-NET-2)

/** One HTTP request from `localAddress`; resolves with { status, type, text }. */
function request(base, path, { localAddress, headers = {}, method = 'GET', body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method, headers, localAddress, timeout: 5_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'] ?? '', text }));
    });
    req.once('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 5 s`)));
    req.once('error', reject);
    req.end(body);
  });
}

const handshake = (base, options) => request(base, HANDSHAKE, options);

function assertOpen(res, what) {
  assert.equal(res.status, 200, `${what}: ${res.status} ${res.text}`);
  assert.match(res.text, /^0\{/, `${what}: an Engine.IO open packet`);
  return JSON.parse(res.text.slice(1)).sid;
}

function assertLimited(res, what) {
  assert.equal(res.status, 429, `${what}: ${res.status} ${res.text.slice(0, 100)}`);
  assert.match(res.type, /^application\/json/, `${what}: content-type`);
  const body = JSON.parse(res.text);
  assert.equal(body.code, 'rate-limited', what);
  assert.equal(typeof body.message, 'string', what);
}

/** Four quick handshakes (the burst) pass, the fifth is 429; `headers(i)` per request. */
async function spendBurst(base, { localAddress, headers = () => ({}) }, what) {
  const started = Date.now();
  const sids = [];
  for (let i = 0; i < 2 * RATE; i++) sids.push(assertOpen(await handshake(base, { localAddress, headers: headers(i) }), `${what}: handshake ${i + 1}`));
  assertLimited(await handshake(base, { localAddress, headers: headers(2 * RATE) }), `${what}: handshake ${2 * RATE + 1} after ${Date.now() - started} ms`);
  return sids;
}

scenario('CONNECTIONS_PER_IP_PER_SEC=2: the 5th quick handshake from one IP is 429 rate-limited (polling and websocket)', async (sc) => {
  for (const base of new Set(sc.gatewayUrls)) {
    const localAddress = freshLoopback();
    await spendBurst(base, { localAddress }, base);
    // A websocket handshake from the same address is a new connection too.
    await assert.rejects(sc.connect('ws', { gateway: sc.gatewayUrls.indexOf(base), localAddress }), /connect_error/);
    // Another address has its own budget.
    assertOpen(await handshake(base, { localAddress: freshLoopback() }), 'another address');
  }
});

scenario('requests of established sessions (sid=) are not limited', async (sc) => {
  const base = sc.gatewayUrls[0];
  const localAddress = freshLoopback();
  const sids = await spendBurst(base, { localAddress }, 'burst');
  for (const sid of sids) {
    const session = `${HANDSHAKE}&sid=${encodeURIComponent(sid)}`;
    const connect = await request(base, session, { localAddress, method: 'POST', headers: { 'content-type': 'text/plain;charset=UTF-8' }, body: '40' });
    assert.equal(connect.status, 200, `POST 40 of ${sid}: ${connect.status} ${connect.text}`);
    // Long-polling GETs until the Socket.IO CONNECT answer (the server may send a ping first).
    let polled = '';
    for (let i = 0; i < 3 && !/(^|\x1e)40\{"sid":/.test(polled); i++) {
      const poll = await request(base, session, { localAddress });
      assert.equal(poll.status, 200, `GET of ${sid}: ${poll.status} ${poll.text}`);
      polled += `\x1e${poll.text}`;
    }
    assert.match(polled, /\x1e40\{"sid":/, `the Socket.IO CONNECT answer; got ${JSON.stringify(polled)}`);
    const close = await request(base, session, { localAddress, method: 'POST', headers: { 'content-type': 'text/plain;charset=UTF-8' }, body: '1' });
    assert.equal(close.status, 200, `POST 1 (close) of ${sid}`);
  }
  assertLimited(await handshake(base, { localAddress }), 'still no budget for a new connection');
});

scenario('a long-polling client keeps working after its address has spent its budget', async (sc) => {
  const a = await sc.user('a', { gateway: 0, transport: 'polling' }); // from 127.0.0.1
  let res;
  for (let i = 0; i < 4 * RATE && (res = await handshake(sc.gatewayUrls[0], { localAddress: '127.0.0.1' })).status !== 429; i++);
  assertLimited(res, '127.0.0.1 has spent its budget');
  const callId = sc.id('call');
  const since = a.mark();
  assert.deepEqual(await a.emitWithAck('start-call', { id: callId, initiator: { id: a.userId, username: a.username }, participants: [], isVideo: true }), { ok: true, callId });
  await a.waitFor('call-started', (p) => p?.callId === callId, { since });
});

scenario('TRUST_FORWARDED_FOR unset: different X-Forwarded-For values share the peer address budget', async (sc) => {
  await spendBurst(sc.gatewayUrls[0], { localAddress: freshLoopback(), headers: () => ({ 'X-Forwarded-For': freshRemote() }) }, 'forwarded-for ignored');
});

/** Runs `fn(base)` on a system of its own started with `env`. */
async function withSystem(env, label, fn) {
  const system = await startSystem({ env: { CONNECTIONS_PER_IP_PER_SEC: String(RATE), ...env } });
  const sc = new Scenario(system, label);
  try {
    await fn(system.gatewayUrls[0]);
  } catch (err) {
    console.error(system.logs());
    throw err;
  } finally {
    sc.closeAll();
    await system.stop();
  }
}

const freshSpoof = () => `203.0.113.${1 + Math.floor(Math.random() * 250)}`; // what a client writes itself (TEST-NET-3)

scenario('TRUST_FORWARDED_FOR=true, TRUSTED_PROXIES=127.10.0.0/16: the rightmost untrusted X-Forwarded-For address is the client; spoofed entries left of it never count', async () => {
  await withSystem({ TRUST_FORWARDED_FOR: 'true', TRUSTED_PROXIES: '127.10.0.0/16, ::1' }, 'trusted', async (base) => {
    const octet = () => 1 + Math.floor(Math.random() * 250);
    const localAddress = `127.10.${octet()}.${octet()}`; // our balancer
    const [real, other] = [freshRemote(), `2001:db8::${Math.floor(Math.random() * 0xffff).toString(16)}`];
    // The client writes a new address of its own each time: still counted against `real`, which the balancer appended.
    await spendBurst(base, { localAddress, headers: () => ({ 'X-Forwarded-For': `${freshSpoof()}, ${real}` }) }, `spoofing client ${real}`);
    // Behind a second balancer hop of ours (also trusted), the same client is still `real`.
    assertLimited(await handshake(base, { localAddress, headers: { 'X-Forwarded-For': `${freshSpoof()}, ${real}, 127.10.0.9` } }), `${real} through two hops`);
    // Another client through the same balancer has a budget of its own.
    await spendBurst(base, { localAddress, headers: () => ({ 'X-Forwarded-For': other }) }, `client ${other}`);
    assertOpen(await handshake(base, { localAddress, headers: {} }), 'the balancer itself (no X-Forwarded-For)');
    // A peer outside TRUSTED_PROXIES is not our balancer: its header is ignored, whatever it names.
    await spendBurst(base, { localAddress: `127.20.${octet()}.${octet()}`, headers: () => ({ 'X-Forwarded-For': freshRemote() }) }, 'untrusted peer');
  });
});

scenario('TRUST_FORWARDED_FOR=true without TRUSTED_PROXIES: the entry the peer appended (the last) is the client', async () => {
  await withSystem({ TRUST_FORWARDED_FOR: 'true' }, 'peer-only', async (base) => {
    const localAddress = freshLoopback();
    const real = freshRemote();
    await spendBurst(base, { localAddress, headers: () => ({ 'X-Forwarded-For': `${freshSpoof()}, ${real}` }) }, `spoofing client ${real}`);
  });
});
