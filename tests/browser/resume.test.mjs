// Calls survive a lost signaling connection: a page whose socket.io connection is cut for a few
// seconds resumes its session, its peer connection and video never stop, nobody sees a leave.
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { DemoUser, UI_TIMEOUT_MS, assertMeshUp, useSystemAndBrowser } from './demo.mjs';

const ARTIFACTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'artifacts');
const CUT_MS = 3_000; // how long B's page stays cut off from its gateway
// The server's default grace: a 3 s cut is well within it (the protocol tests' system
// defaults to a short one).
const RESUME_GRACE_MS = '15000';
const MIN_FRAMES_DURING_CUT = 10; // video frames decoded each way while B is cut off (~30 fps)

/** Opens demo pages for one test; every page still open is closed when the test ends. */
function opener(t, browser) {
  return async (gatewayUrl, name, options = {}) => {
    const user = await DemoUser.join(browser, gatewayUrl, name, options);
    t.after(() => user.close());
    return user;
  };
}

/**
 * Watches `user`'s page from now on: remote tiles removed, and every event received.
 * `seen()` returns what happened since.
 */
async function watch(user) {
  await user.page.evaluate(() => {
    window.removedTiles = [];
    new MutationObserver((mutations) => {
      for (const m of mutations) {
        for (const node of m.removedNodes) if (node.dataset?.testid === 'remote-tile') window.removedTiles.push(node.dataset.userId);
      }
    }).observe(document.querySelector('[data-testid="video-grid"]'), { childList: true });
  });
  const since = Date.now();
  return () =>
    user.page.evaluate(
      (since) => ({
        removedTiles: window.removedTiles,
        received: window.meetup.events.filter((e) => e.t >= since && e.dir === 'in').map((e) => e.event),
        peerStates: window.meetup.events.filter((e) => e.t >= since && e.event === 'peer-state').map((e) => e.payload.state),
        iceRestarts: window.meetup.events.filter((e) => e.t >= since && e.event === 'ice-restart').length,
      }),
      since,
    );
}

/**
 * Cuts `user`'s page off its gateway: DevTools takes the page offline (no new connection
 * can be made), and the engine's open websocket is closed from inside the page without a
 * Socket.IO disconnect packet (an offline page may keep an open websocket). Returns
 * how the websocket went, and `restore()`, which takes the page back online.
 */
async function cutSignaling(user) {
  const cdp = await user.context.newCDPSession(user.page);
  await cdp.send('Network.enable');
  const conditions = { latency: 0, downloadThroughput: -1, uploadThroughput: -1 };
  await cdp.send('Network.emulateNetworkConditions', { ...conditions, offline: true });
  const how = await user.page.evaluate(() => {
    const transport = window.meetup.socket.io.engine?.transport;
    if (!transport?.ws) return 'closed by the browser';
    transport.ws.close(); // a transport close: no goodbye
    return 'closed by the page';
  });
  return {
    how,
    restore: async () => {
      await cdp.send('Network.emulateNetworkConditions', { ...conditions, offline: false });
      await cdp.detach();
    },
  };
}

const tileSelector = (id) => `[data-testid="remote-tile"][data-user-id="${id}"]`;

/**
 * a calls b, b accepts: the call is up, b on a websocket. b joined, so b is the side that
 * offers (and restarts ICE). Each page keeps a handle on its peer connection.
 */
async function callUp(a, b) {
  await a.call(b);
  await b.accept(a);
  await assertMeshUp([a, b]);
  await b.waitFor(() => window.meetup.transport === 'websocket', null, 'websocket upgrade');
  await a.page.evaluate((id) => (window.peerUnderTest = window.meetup.peers.get(id)), b.id);
  await b.page.evaluate((id) => (window.peerUnderTest = window.meetup.peers.get(id)), a.id);
  assert.equal(await b.page.evaluate(() => window.peerUnderTest.meetupOffering), true, `${b.name} offers`);
}

/** The ICE username fragment of the peer's side, as `user`'s connection to `other` knows it. */
const remoteUfrag = (user, other) =>
  user.page.evaluate((id) => /a=ice-ufrag:(\S+)/.exec(window.meetup.peers.get(id)?.remoteDescription?.sdp ?? '')?.[1], other.id);

/** Waits until `user`'s own status says it is reconnecting. */
const waitOwnReconnecting = (user, timeout) =>
  user.waitFor(
    () =>
      document.querySelector('[data-testid="connection-status"]').textContent === 'reconnecting…' &&
      !document.querySelector('[data-testid="reconnecting-notice"]').hidden,
    null,
    'own "reconnecting…" status',
    timeout,
  );

for (const topology of ['single', 'cluster']) {
  describe(`resume (${topology})`, () => {
    const ctx = useSystemAndBrowser(topology, { RESUME_GRACE_MS });

    test(`signaling cut for ${CUT_MS / 1000} s mid-call: the page resumes, media never stops, nobody sees a leave`, async (t) => {
      const { system, browser } = ctx();
      const open = opener(t, browser);
      const a = await open(system.gatewayUrls[0], 'Steady');
      const b = await open(system.gatewayUrls[1], 'Wobbly');
      await callUp(a, b);
      const seenOnA = await watch(a);
      const seenOnB = await watch(b);
      const framesBefore = [await a.framesDecoded([b]), await b.framesDecoded([a])];

      // --- the cut ---
      const cutAt = Date.now();
      const { how, restore } = await cutSignaling(b);
      // B knows it is reconnecting; A is told that B is (the peer tile stays, marked).
      await waitOwnReconnecting(b, CUT_MS);
      await a.waitFor(
        (sel) => {
          const tile = document.querySelector(sel);
          return tile?.dataset.reconnecting === 'true' && tile.querySelector('figcaption').textContent.includes('reconnecting…');
        },
        tileSelector(b.id),
        `"reconnecting…" on ${b.name}'s tile`,
        CUT_MS,
      );
      const reconnectingShownAfter = Date.now() - cutAt;
      if (topology === 'single') {
        await mkdir(ARTIFACTS, { recursive: true });
        await a.page.screenshot({ path: path.join(ARTIFACTS, 'demo-peer-reconnecting.png') });
      }
      await delay(Math.max(0, cutAt + CUT_MS - Date.now())); // the cut lasts CUT_MS: a test condition, not a wait for a state
      const framesAtEndOfCut = [await a.framesDecoded([b]), await b.framesDecoded([a])];
      const stillOffline = await b.page.evaluate(() => ({ connected: window.meetup.socket.connected, registered: window.meetup.registered }));
      assert.deepEqual(stillOffline, { connected: false, registered: false }, `${b.name} stayed cut off for the whole cut`);
      const onlineAt = Date.now();
      await restore();

      // --- the resume ---
      await b.waitFor(() => window.meetup.registered && window.meetup.resumes.length === 1, null, 'resumed', UI_TIMEOUT_MS);
      const resume = await b.page.evaluate(() => window.meetup.resumes[0]);
      await a.waitFor((sel) => document.querySelector(sel)?.dataset.reconnecting === 'false', tileSelector(b.id), `"reconnecting…" cleared on ${b.name}'s tile`);
      await b.waitFor(
        () => document.querySelector('[data-testid="connection-status"]').textContent.startsWith('online') && document.querySelector('[data-testid="reconnecting-notice"]').hidden,
        null,
        'online again',
      );
      assert.equal(resume.resumed, true, `${b.name} took its session over (not a new registration)`);
      assert.equal(resume.recovered, true, `${b.name}: nothing addressed to it was lost`);
      const gained = (after, before, id) => after[id] - before[id];
      const duringCut = { aFromB: gained(framesAtEndOfCut[0], framesBefore[0], b.id), bFromA: gained(framesAtEndOfCut[1], framesBefore[1], a.id) };
      assert.ok(duringCut.aFromB > MIN_FRAMES_DURING_CUT, `${a.name} kept decoding ${b.name}'s video during the cut: ${JSON.stringify(duringCut)}`);
      assert.ok(duringCut.bFromA > MIN_FRAMES_DURING_CUT, `${b.name} kept decoding ${a.name}'s video during the cut: ${JSON.stringify(duringCut)}`);
      // Video keeps flowing after the resume, over the same peer connections.
      const framesAfter = [await a.waitFrames([b], framesAtEndOfCut[0][b.id] + 5), await b.waitFrames([a], framesAtEndOfCut[1][a.id] + 5)];
      for (const [u, other] of [[a, b], [b, a]]) {
        const same = await u.page.evaluate((id) => window.meetup.peers.get(id) === window.peerUnderTest && window.peerUnderTest.connectionState, other.id);
        assert.equal(same, 'connected', `${u.name}: the same peer connection to ${other.name}, still connected`);
      }
      // Nobody saw a leave: tiles stayed, no user-left-call / user-left / call-ended, and
      // the connections never left 'connected' (no ICE restart was needed).
      for (const [u, seen] of [[a, seenOnA], [b, seenOnB]]) {
        const s = await seen();
        assert.deepEqual(s.removedTiles, [], `${u.name}: no tile removed`);
        const leaves = s.received.filter((e) => ['user-left-call', 'user-left', 'call-ended', 'call-left', 'call-not-found'].includes(e));
        assert.deepEqual(leaves, [], `${u.name}: no leave received`);
        assert.deepEqual(s.peerStates, [], `${u.name}: peer connection state unchanged`);
        assert.equal(s.iceRestarts, 0, `${u.name}: no ICE restart`);
        // (The reconnection attempts of the page offline fail, and Chromium says so.)
        const errors = u.errors.filter((e) => !(u === b && e.includes('net::ERR_INTERNET_DISCONNECTED')));
        assert.deepEqual(errors, [], `${u.name}: page errors`);
        assert.equal(await u.page.getByTestId('error').isHidden(), true, `${u.name}: no error shown`);
      }
      const seenA = await seenOnA();
      assert.deepEqual(
        seenA.received.filter((e) => e.startsWith('user-reconnect')),
        ['user-reconnecting', 'user-reconnected'],
        `${a.name} was told ${b.name} was reconnecting, then back`,
      );
      assert.ok(
        await a.page.evaluate((id) => window.meetup.users.some((u) => u.id === id), b.id),
        `${b.name} stayed on ${a.name}'s online list`,
      );
      console.log(
        `resume (${topology}): cut ${CUT_MS} ms (websocket ${how}); "reconnecting…" on the peer's tile after ${reconnectingShownAfter} ms; ` +
          `back online -> resumed ${resume.at - onlineAt} ms (lost -> resumed ${resume.ms} ms); ` +
          `frames decoded during the cut: ${a.name} from ${b.name} +${duringCut.aFromB}, ${b.name} from ${a.name} +${duringCut.bFromA}; ` +
          `decoded in all after the resume: ${JSON.stringify(framesAfter.map((f) => Object.values(f)[0]))}`,
      );

      // --- hanging up afterwards works as usual ---
      await b.page.getByTestId('hangup-button').click();
      await b.waitFor(() => window.meetup.callId === null && window.meetup.peers.size === 0, null, 'back in the lobby');
      await a.waitFor((sel) => !document.querySelector(sel), tileSelector(b.id), `${b.name}'s tile removed after its hang-up`);
      const after = await a.page.evaluate(() => ({ pc: window.peerUnderTest.connectionState, inCall: window.meetup.callId !== null }));
      assert.deepEqual(after, { pc: 'closed', inCall: true });
    });

    if (topology !== 'single') return; // the page's own logic: once is enough

    test('an ICE restart that fell due while the page was away runs after the resume, on the same connections', async (t) => {
      const { system, browser } = ctx();
      const open = opener(t, browser);
      const a = await open(system.gatewayUrls[0], 'Calm');
      const b = await open(system.gatewayUrls[1], 'Restless');
      await callUp(a, b);
      const ufragBefore = await remoteUfrag(a, b);
      const { restore } = await cutSignaling(b);
      await waitOwnReconnecting(b);
      // What a 'failed' (or long 'disconnected') connection does: the offering side restarts
      // ICE; while its own signaling is down, the restart waits.
      await b.page.evaluate((id) => window.meetup.restartIce(id, 'test'), a.id);
      await b.waitFor((id) => window.meetup.peers.get(id).meetupRestartPending === 'test', a.id, 'restart pending');
      await restore();
      await b.waitFor(() => window.meetup.registered && window.meetup.resumes.length === 1, null, 'resumed');
      await b.waitFor(() => window.meetup.events.some((e) => e.event === 'ice-restart'), null, 'ICE restart after the resume');
      await a.waitFor(
        ([id, before]) => {
          const pc = window.meetup.peers.get(id);
          return pc === window.peerUnderTest && pc.signalingState === 'stable' && !pc.remoteDescription.sdp.includes(`a=ice-ufrag:${before}`);
        },
        [b.id, ufragBefore],
        `${b.name}'s restart offer answered`,
      );
      await b.waitFor((id) => window.meetup.peers.get(id).signalingState === 'stable', a.id, 'restart answered');
      const frames = [await a.framesDecoded([b]), await b.framesDecoded([a])];
      await assertMeshUp([a, b]);
      await a.waitFrames([b], frames[0][b.id] + 10);
      await b.waitFrames([a], frames[1][a.id] + 10);
      for (const [u, other] of [[a, b], [b, a]]) {
        assert.equal(await u.page.evaluate((id) => window.meetup.peers.get(id) === window.peerUnderTest, other.id), true, `${u.name}: same peer connection`);
        assert.deepEqual(u.errors.filter((e) => !e.includes('net::ERR_INTERNET_DISCONNECTED')), [], `${u.name}: page errors`);
      }
      console.log(`ICE restart after a resume: ufrag ${ufragBefore} -> ${await remoteUfrag(a, b)}`);
    });
  });
}

describe('resume refused (one gateway, 1 s grace)', () => {
  const GRACE_MS = 1_000;
  const ctx = useSystemAndBrowser('single', { RESUME_GRACE_MS: String(GRACE_MS) });

  test('a page back after its grace registers again and rejoins the call, which is still on', async (t) => {
    const { system, browser } = ctx();
    const open = opener(t, browser);
    const a = await open(system.gatewayUrls[0], 'Patient');
    const b = await open(system.gatewayUrls[0], 'Late');
    await callUp(a, b);
    const { restore } = await cutSignaling(b);
    // B's grace runs out: A sees it leave its call (the tile goes), then go offline. (Only
    // then is B's session surely gone: the calls and presence services expire it each on
    // its own, and a resume in between is accepted, in no call.)
    await a.waitFor((sel) => !document.querySelector(sel), tileSelector(b.id), `${b.name} gone after the grace`, GRACE_MS + UI_TIMEOUT_MS);
    await a.waitFor((id) => !window.meetup.users.some((u) => u.id === id), b.id, `${b.name} off the online list`);
    assert.equal(await a.page.evaluate(() => window.meetup.callId !== null), true, `${a.name} still in the call`);
    await restore();
    // B's token is refused: it registers anew, joins the call again and offers afresh.
    await b.waitFor(() => window.meetup.registered && window.meetup.resumes.length === 1, null, 'registered again');
    const resume = await b.page.evaluate(() => window.meetup.resumes[0]);
    assert.equal(resume.resumed, false, 'not a resume');
    await assertMeshUp([a, b]);
    for (const [u, other] of [[a, b], [b, a]]) {
      const view = await u.page.evaluate(
        (id) => ({
          newConnection: window.meetup.peers.get(id) !== window.peerUnderTest,
          tiles: [...document.querySelectorAll('[data-testid="remote-tile"]')].map((tile) => tile.dataset.userId),
          error: document.querySelector('[data-testid="error"]').hidden ? null : document.querySelector('[data-testid="error"]').textContent,
        }),
        other.id,
      );
      assert.deepEqual(view, { newConnection: true, tiles: [other.id], error: null }, `${u.name}: one new connection to ${other.name}`);
    }
    const bSaw = await b.page.evaluate(() => window.meetup.events.filter((e) => ['resume-refused', 'rejoin-call', 'call-participants'].includes(e.event)).map((e) => e.event));
    assert.deepEqual(bSaw, ['call-participants', 'resume-refused', 'rejoin-call', 'call-participants']);
    console.log(`resume refused: lost -> registered again ${resume.ms} ms`);
  });
});

describe('gateway hand-over (cluster)', () => {
  const ctx = useSystemAndBrowser('cluster', { RESUME_GRACE_MS });

  test("a page whose gateway stops resumes through the other gateway, the call goes on", async (t) => {
    const { system, browser } = ctx();
    const open = opener(t, browser);
    const [urlA, urlB] = system.gatewayUrls;
    const a = await open(urlA, 'Anchor');
    // B long-polls, so that the test can play the load balancer: its page's Socket.IO
    // requests go to whichever gateway `target` names (gateway B, then A once B stops).
    const b = await open(urlB, 'Drifter', { query: '?transport=polling' });
    let target = urlB;
    const served = new Set();
    await b.context.route(
      (url) => url.pathname.startsWith('/socket.io/'),
      async (route) => {
        const url = new URL(route.request().url());
        const to = new URL(`${url.pathname}${url.search}`, target);
        served.add(to.origin);
        let response;
        try {
          // As behind a real balancer, the page and both gateways share one origin: the
          // forwarded request names the gateway it goes to as its origin.
          const headers = { ...route.request().headers(), origin: to.origin };
          response = await route.fetch({ url: to.href, headers, timeout: 0, maxRedirects: 0 });
        } catch {
          await route.abort('connectionreset'); // the gateway went away mid-request
          return;
        }
        await route.fulfill({ response });
      },
    );
    await a.call(b);
    await b.accept(a);
    await assertMeshUp([a, b]);
    await a.page.evaluate((id) => (window.peerUnderTest = window.meetup.peers.get(id)), b.id);
    await b.page.evaluate((id) => (window.peerUnderTest = window.meetup.peers.get(id)), a.id);
    const seenOnA = await watch(a);
    const framesBefore = await a.framesDecoded([b]);

    // Gateway B stops (SIGTERM): it hands B's session over (away) and closes its socket.
    target = urlA;
    const gatewayB = system.processes.find((p) => p.name === 'gateway-b');
    const stoppedAt = Date.now();
    await gatewayB.stop();
    assert.equal(gatewayB.exit.signal ?? gatewayB.exit.code, gatewayB.exit.signal ? 'SIGTERM' : 0, 'gateway B stopped cleanly');
    await b.waitFor(() => window.meetup.registered && window.meetup.resumes.length === 1, null, 'resumed through gateway A', UI_TIMEOUT_MS);
    const resume = await b.page.evaluate(() => window.meetup.resumes[0]);
    const reason = await b.page.evaluate(() => window.meetup.events.find((e) => e.event === 'disconnect')?.payload);
    assert.equal(resume.resumed, true, `${b.name} took its session over on the other gateway`);
    assert.ok(served.has(new URL(urlA).origin), `${b.name}'s page reached gateway A`);
    await a.waitFor((sel) => document.querySelector(sel)?.dataset.reconnecting === 'false', tileSelector(b.id), `"reconnecting…" cleared on ${b.name}'s tile`);
    const framesAfter = await a.waitFrames([b], framesBefore[b.id] + 10);
    const s = await seenOnA();
    assert.deepEqual(s.removedTiles, [], `${a.name}: no tile removed`);
    assert.deepEqual(s.received.filter((e) => ['user-left-call', 'user-left', 'call-ended'].includes(e)), [], `${a.name}: no leave`);
    assert.deepEqual(s.received.filter((e) => e.startsWith('user-reconnect')), ['user-reconnecting', 'user-reconnected']);
    for (const [u, other] of [[a, b], [b, a]]) {
      const state = await u.page.evaluate((id) => window.meetup.peers.get(id) === window.peerUnderTest && window.peerUnderTest.connectionState, other.id);
      assert.equal(state, 'connected', `${u.name}: the same peer connection to ${other.name}, still connected`);
    }
    console.log(
      `gateway hand-over: SIGTERM -> socket closed ("${reason}") -> resumed through the other gateway ${resume.at - stoppedAt} ms (recovered: ${resume.recovered}); ` +
        `frames from ${b.name} on ${a.name}: ${framesBefore[b.id]} -> ${framesAfter[b.id]}`,
    );

    // Hanging up through the new gateway works as usual.
    await b.page.getByTestId('hangup-button').click();
    await a.waitFor((sel) => !document.querySelector(sel), tileSelector(b.id), `${b.name}'s tile removed after its hang-up`);
  });
});
