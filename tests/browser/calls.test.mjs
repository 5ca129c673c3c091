// Real WebRTC video calls through the demo page: two parties on one gateway and across a cluster, a three-party mesh, long-polling.
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { DemoUser, UI_TIMEOUT_MS, assertMeshUp, reportSetupTime, useSystemAndBrowser } from './demo.mjs';

const ARTIFACTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'artifacts');

/** Opens demo pages for one test; every page is closed when the test ends, passed or not. */
function opener(t, browser) {
  return async (gatewayUrl, name, options) => {
    const user = await DemoUser.join(browser, gatewayUrl, name, options);
    t.after(() => user.close());
    return user;
  };
}

/** What every page in a working call shows: one connected tile per other party, no error. */
async function assertCallScreen(users) {
  for (const u of users) {
    const others = users.filter((o) => o !== u);
    const view = await u.page.evaluate(() => ({
      callId: window.meetup.callId,
      peers: [...window.meetup.peers.keys()].sort(),
      tiles: [...document.querySelectorAll('[data-testid="remote-tile"]')].map((t) => [t.dataset.userId, t.dataset.state]),
      error: document.querySelector('[data-testid="error"]').hidden ? null : document.querySelector('[data-testid="error"]').textContent,
    }));
    assert.equal(view.error, null, `${u.name}: error shown on the page`);
    assert.deepEqual(view.peers, others.map((o) => o.id).sort(), `${u.name}: one peer connection per other party`);
    assert.deepEqual(
      view.tiles.sort(),
      others.map((o) => [o.id, 'connected']).sort(),
      `${u.name}: one connected video tile per other party`,
    );
    assert.deepEqual(u.errors, [], `${u.name}: page errors`);
  }
  const callIds = new Set(await Promise.all(users.map((u) => u.page.evaluate(() => window.meetup.callId))));
  assert.equal(callIds.size, 1, 'everybody is in the same call');
}

/** a calls b, b accepts; both connected with video both ways. */
async function twoPartyCall(label, a, b) {
  await a.call(b);
  await b.accept(a);
  await assertMeshUp([a, b]);
  await reportSetupTime(label, a, [a, b]);
  await assertCallScreen([a, b]);
}

describe('one gateway', () => {
  const ctx = useSystemAndBrowser('single');

  test('two pages: Call, Accept, both peer connections connected, video decoded both ways', async (t) => {
    const { system, browser } = ctx();
    const open = opener(t, browser);
    const a = await open(system.gatewayUrls[0], 'Ada');
    const b = await open(system.gatewayUrls[0], 'Bob');
    await twoPartyCall('single gateway', a, b);
  });

  test('three-party mesh: a group call, every pair connected, video from both others on each page', async (t) => {
    const { system, browser } = ctx();
    const open = opener(t, browser);
    const a = await open(system.gatewayUrls[0], 'Ann');
    const b = await open(system.gatewayUrls[0], 'Ben');
    const c = await open(system.gatewayUrls[0], 'Cy');
    await a.groupCall([b, c]);
    await b.accept(a);
    await c.accept(a);
    await assertMeshUp([a, b, c]);
    await reportSetupTime('three-party mesh, single gateway', a, [a, b, c]);
    await assertCallScreen([a, b, c]);
  });

  test('a long-polling page calls a websocket page', async (t) => {
    const { system, browser } = ctx();
    const open = opener(t, browser);
    const a = await open(system.gatewayUrls[0], 'Poll', { query: '?transport=polling' });
    const b = await open(system.gatewayUrls[0], 'Sock');
    await b.waitFor(() => window.meetup.transport === 'websocket', null, 'websocket upgrade');
    await twoPartyCall('polling caller, single gateway', a, b);
    assert.equal(await a.page.evaluate(() => window.meetup.transport), 'polling', 'the caller stayed on long-polling');
    assert.equal(await b.page.evaluate(() => window.meetup.transport), 'websocket');
  });

  test('the page fetches /ice-servers and configures its peer connections with them', async (t) => {
    const { system, browser } = ctx();
    // What the gateway itself answers (tests run it without STUN or TURN servers).
    const res = await fetch(`${system.gatewayUrls[0]}/ice-servers`, { signal: AbortSignal.timeout(5_000) });
    assert.equal(res.status, 200);
    assert.deepEqual((await res.json()).iceServers, []);
    // A list of our own instead (ports on loopback where nobody listens: harmless).
    const iceServers = [
      { urls: ['stun:127.0.0.1:3478'] },
      { urls: ['turn:127.0.0.1:3478?transport=udp'], username: '1700000000:ice', credential: 'secret' },
    ];
    const open = opener(t, browser);
    const a = await open(system.gatewayUrls[0], 'Ice', { iceServers });
    const b = await open(system.gatewayUrls[0], 'Berg', { iceServers });
    await twoPartyCall('with STUN and TURN servers configured', a, b);
    for (const [u, other] of [[a, b], [b, a]]) {
      const configured = await u.page.evaluate((id) => window.meetup.peers.get(id).getConfiguration().iceServers, other.id);
      assert.deepEqual(
        configured,
        iceServers.map(({ urls, username = '', credential = '' }) => ({ urls, username, credential })),
        `${u.name}: iceServers of its RTCPeerConnection`,
      );
    }
  });

  test('screenshot of the demo page in a call (tests/artifacts/demo-call.png)', async (t) => {
    const { system, browser } = ctx();
    const open = opener(t, browser);
    const a = await open(system.gatewayUrls[0], 'Alice');
    const b = await open(system.gatewayUrls[0], 'Bob');
    await twoPartyCall('screenshot call', a, b);
    // Both videos on Alice's page are playing real frames before the picture is taken.
    await a.waitFor(
      () =>
        [...document.querySelectorAll('video')].every(
          (v) => v.videoWidth > 0 && !v.paused && v.readyState >= HTMLMediaElement.HAVE_ENOUGH_DATA,
        ),
      null,
      'local and remote videos playing',
      UI_TIMEOUT_MS,
    );
    await mkdir(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, 'demo-call.png');
    const png = await a.page.screenshot({ path: file });
    assert.ok(png.length > 10_000, `screenshot of ${png.length} bytes`);
    console.log(`screenshot: ${file}`);
  });
});

describe('cluster of two gateways', () => {
  const ctx = useSystemAndBrowser('cluster');

  test('two pages on different gateways, each loaded from its own gateway: connected, video both ways', async (t) => {
    const { system, browser } = ctx();
    assert.notEqual(system.gatewayUrls[0], system.gatewayUrls[1]);
    const open = opener(t, browser);
    const a = await open(system.gatewayUrls[0], 'Ada');
    const b = await open(system.gatewayUrls[1], 'Bob');
    await twoPartyCall('cluster, across gateways', a, b);
  });

  test('three-party mesh across both gateways', async (t) => {
    const { system, browser } = ctx();
    const open = opener(t, browser);
    const a = await open(system.gatewayUrls[0], 'Ann');
    const b = await open(system.gatewayUrls[1], 'Ben');
    const c = await open(system.gatewayUrls[1], 'Cy');
    await a.groupCall([b, c]);
    await c.accept(a);
    await b.accept(a);
    await assertMeshUp([a, b, c]);
    await reportSetupTime('three-party mesh, cluster', a, [a, b, c]);
    await assertCallScreen([a, b, c]);
  });
});
