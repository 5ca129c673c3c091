// Ringing, declining, cancelling, adding people and in-call chat on the demo page (PROTOCOL.md, "Calling"), in real Chromium.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DemoUser, assertMeshUp, useSystemAndBrowser } from './demo.mjs';

/** Opens demo pages for one test; every page is closed when the test ends, passed or not. */
function opener(t, browser) {
  return async (gatewayUrl, name) => {
    const user = await DemoUser.join(browser, gatewayUrl, name);
    t.after(() => user.close());
    return user;
  };
}

/** Waits until `user`'s page rings for a call from `caller` (panel shown, pulsing, ring on). */
async function waitRinging(user, caller) {
  await user.waitFor(
    (callerId) =>
      window.meetup.ringing === true &&
      window.meetup.incoming?.initiator.id === callerId &&
      document.querySelector('[data-testid="incoming-call"]').dataset.ringing === 'true' &&
      !document.querySelector('[data-testid="incoming-call"]').hidden,
    caller.id,
    `ringing for ${caller.name}'s call`,
  );
}

/** Waits until `user`'s page no longer rings (panel gone, ring off). */
async function waitRingStopped(user, what) {
  await user.waitFor(
    () =>
      window.meetup.ringing === false &&
      window.meetup.incoming === null &&
      document.querySelector('[data-testid="incoming-call"]').hidden &&
      document.querySelector('[data-testid="incoming-call"]').dataset.ringing === 'false',
    null,
    `ring stopped (${what})`,
  );
}

/** Waits for a notice of `kind` about `about` (a user, or null) on `user`'s page; returns its text. */
async function waitNotice(user, kind, about) {
  await user.waitFor(
    ([kind, id]) =>
      [...document.querySelectorAll('[data-testid="call-notice"]')].some(
        (n) => n.dataset.kind === kind && (id === null || n.dataset.userId === id) && n.checkVisibility(),
      ),
    [kind, about?.id ?? null],
    `a "${kind}" notice${about ? ` about ${about.name}` : ''}`,
  );
  return user.page.evaluate(
    (kind) => [...document.querySelectorAll('[data-testid="call-notice"]')].find((n) => n.dataset.kind === kind).textContent,
    kind,
  );
}

/** Types `text` into the chat of `user`'s page and sends it. */
async function chat(user, text) {
  await user.page.getByTestId('chat-input').fill(text);
  await user.page.getByTestId('chat-send').click();
}

/** The chat as `user`'s page shows it: [sender id, text] per message, in order. */
const chatShown = (user) =>
  user.page.evaluate(() =>
    [...document.querySelectorAll('[data-testid="chat-message"]')].map((m) => [m.dataset.fromId, m.querySelector('[data-testid="chat-text"]').textContent]),
  );

async function waitChatLength(user, n) {
  await user.waitFor((n) => document.querySelectorAll('[data-testid="chat-message"]').length >= n, n, `${n} chat messages shown`);
}

function assertNoErrors(users) {
  for (const u of users) assert.deepEqual(u.errors, [], `${u.name}: page errors`);
}

describe('calling (one gateway)', () => {
  const ctx = useSystemAndBrowser('single');

  test('B declines: A sees "declined", B stops ringing; A calls again, B accepts, media flows, chat both ways in the same order', async (t) => {
    const { system, browser } = ctx();
    const open = opener(t, browser);
    const a = await open(system.gatewayUrls[0], 'Alice');
    const b = await open(system.gatewayUrls[0], 'Bob');

    // --- first call: declined ---
    await a.call(b);
    await waitRinging(b, a);
    const firstCallId = await b.page.evaluate(() => window.meetup.incoming.callId);
    await b.page.getByTestId('decline-button').click();
    await waitRingStopped(b, 'declined');
    const declined = await waitNotice(a, 'declined', b);
    assert.match(declined, /declined/);
    assert.match(declined, /Bob/);
    // Nobody else rang: A's call is over, A is back in the lobby.
    await a.waitFor(() => window.meetup.callId === null && !document.querySelector('[data-testid="lobby"]').hidden, null, 'back in the lobby');
    await b.waitFor(
      (callId) => window.meetup.events.some((e) => e.dir === 'in' && e.event === 'invite-ended' && e.payload.callId === callId && e.payload.reason === 'declined'),
      firstCallId,
      'invite-ended (declined)',
    );
    assert.equal(await b.page.evaluate(() => window.meetup.callId), null, `${b.name} did not join`);

    // --- second call: accepted ---
    await a.call(b);
    await waitRinging(b, a);
    await b.accept(a);
    await waitRingStopped(b, 'accepted');
    await assertMeshUp([a, b]);
    await a.waitFor(() => document.querySelector('[data-testid="cancel-button"]').hidden, null, 'no Cancel once answered');

    // --- chat, one message each way ---
    await chat(a, 'Hello Bob');
    await waitChatLength(a, 1);
    await waitChatLength(b, 1);
    await chat(b, 'Hi Alice 👋');
    await waitChatLength(a, 2);
    await waitChatLength(b, 2);
    const expected = [[a.id, 'Hello Bob'], [b.id, 'Hi Alice 👋']];
    assert.deepEqual(await chatShown(a), expected, `${a.name}'s chat`);
    assert.deepEqual(await chatShown(b), expected, `${b.name}'s chat`);
    assertNoErrors([a, b]);
  });

  test('Cancel while it rings: the callee stops ringing and is told; the caller is back in the lobby', async (t) => {
    const { system, browser } = ctx();
    const open = opener(t, browser);
    const a = await open(system.gatewayUrls[0], 'Carol');
    const b = await open(system.gatewayUrls[0], 'Dave');
    await a.call(b);
    await waitRinging(b, a);
    await a.page.getByTestId('cancel-button').click();
    await waitRingStopped(b, 'cancelled');
    assert.match(await waitNotice(b, 'cancelled', a), /Carol cancelled/);
    await a.waitFor(() => window.meetup.callId === null, null, 'caller back in the lobby');
    assertNoErrors([a, b]);
  });

  test('Add people: a third user is rung into a running call, joins the mesh and gets the chat so far', async (t) => {
    const { system, browser } = ctx();
    const open = opener(t, browser);
    const a = await open(system.gatewayUrls[0], 'Erin');
    const b = await open(system.gatewayUrls[0], 'Frank');
    const c = await open(system.gatewayUrls[0], 'Grace');
    await a.call(b);
    await b.accept(a);
    await assertMeshUp([a, b]);
    await chat(b, 'before Grace came');
    await waitChatLength(a, 1);

    await a.page.getByTestId('add-people-button').click();
    await a.page.locator(`[data-testid="add-user"][data-user-id="${c.id}"]`).getByTestId('add-select-user').check();
    assert.equal(await a.page.locator(`[data-testid="add-user"][data-user-id="${b.id}"]`).count(), 0, 'people in the call are not offered');
    await a.page.getByTestId('invite-button').click();
    await waitRinging(c, a);
    await c.accept(a);
    await assertMeshUp([a, b, c]);
    await waitChatLength(c, 1);
    assert.deepEqual(await chatShown(c), [[b.id, 'before Grace came']]);
    assertNoErrors([a, b, c]);
  });
});
