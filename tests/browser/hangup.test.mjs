// Leaving a call through the demo page: Hang up, and a page closed mid-call; on one gateway and across a cluster.
// A closed page says goodbye (socket.disconnect() on pagehide): its peers see it leave at
// once, not after the resume grace that a lost connection gets (RESUME_GRACE_MS).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DemoUser, UI_TIMEOUT_MS, assertMeshUp, useSystemAndBrowser } from './demo.mjs';

/** Opens demo pages for one test; every page still open is closed when the test ends. */
function opener(t, browser) {
  return async (gatewayUrl, name) => {
    const user = await DemoUser.join(browser, gatewayUrl, name);
    t.after(() => user.close());
    return user;
  };
}

/** a calls b, b accepts, the call is up; a keeps a handle on its connection to b for later checks. */
async function callUp(a, b) {
  await a.call(b);
  await b.accept(a);
  await assertMeshUp([a, b]);
  await a.page.evaluate((id) => {
    window.peerUnderTest = window.meetup.peers.get(id);
  }, b.id);
}

/** On a's page: b's tile is gone and the connection a had to b was closed by the page. */
async function assertLeftOn(a, b, timeout) {
  await a.waitFor(
    (id) => !document.querySelector(`[data-testid="remote-tile"][data-user-id="${id}"]`),
    b.id,
    `${b.name}'s tile removed`,
    timeout,
  );
  const after = await a.page.evaluate(
    (id) => ({
      closed: window.peerUnderTest.connectionState,
      signaling: window.peerUnderTest.signalingState,
      stillListed: window.meetup.peers.has(id),
      leftEvent: window.meetup.events.some((e) => e.dir === 'in' && e.event === 'user-left-call' && e.payload.userId === id),
      inCall: window.meetup.callId !== null,
    }),
    b.id,
  );
  assert.deepEqual(after, { closed: 'closed', signaling: 'closed', stillListed: false, leftEvent: true, inCall: true });
}

// The server's default grace: a closed page that did not say goodbye would be seen leaving
// only after it.
const RESUME_GRACE_MS = 15_000;
// A closed page's leave is seen within this, far below the grace.
const GOODBYE_TIMEOUT_MS = 5_000;

for (const topology of ['single', 'cluster']) {
  describe(`hang-up (${topology})`, () => {
    const ctx = useSystemAndBrowser(topology, { RESUME_GRACE_MS: String(RESUME_GRACE_MS) });

    test('Hang up: the other side sees the participant leave and closes its connection', async (t) => {
      const { system, browser } = ctx();
      const open = opener(t, browser);
      const a = await open(system.gatewayUrls[0], 'Stay');
      const b = await open(system.gatewayUrls[1], 'Leave');
      await callUp(a, b);
      await b.page.getByTestId('hangup-button').click();
      // The one who hung up is back in the lobby with every connection closed.
      await b.waitFor(
        () => window.meetup.callId === null && window.meetup.peers.size === 0 && document.querySelector('[data-testid="call-view"]').hidden,
        null,
        'back in the lobby',
      );
      await b.page.getByTestId('lobby').waitFor({ timeout: UI_TIMEOUT_MS });
      await assertLeftOn(a, b, UI_TIMEOUT_MS);
      // The one left alone can hang up too, and both can call again.
      await a.page.getByTestId('hangup-button').click();
      await a.page.getByTestId('lobby').waitFor({ timeout: UI_TIMEOUT_MS });
      await b.call(a);
      await a.accept(b);
      await assertMeshUp([a, b]);
    });

    test('a page closed mid-call: the other side sees the participant leave and closes its connection', async (t) => {
      const { system, browser } = ctx();
      const open = opener(t, browser);
      const a = await open(system.gatewayUrls[0], 'Stay');
      const b = await open(system.gatewayUrls[1], 'Gone');
      await callUp(a, b);
      const closedAt = Date.now();
      await b.close();
      await assertLeftOn(a, b, GOODBYE_TIMEOUT_MS);
      await a.waitFor((id) => !document.querySelector(`[data-testid="user"][data-user-id="${id}"]`), b.id, 'closed page off the online list');
      const seen = await a.page.evaluate(
        (id) => ({
          left: window.meetup.events.find((e) => e.event === 'user-left-call' && e.payload.userId === id)?.t,
          reconnecting: window.meetup.events.some((e) => e.event === 'user-reconnecting'),
        }),
        b.id,
      );
      assert.equal(seen.reconnecting, false, 'a goodbye, not a lost connection: no user-reconnecting');
      console.log(`hang-up (${topology}): page closed -> user-left-call on the other page: ${seen.left - closedAt} ms (grace ${RESUME_GRACE_MS} ms)`);
    });
  });
}
