// The demo page against a gateway that requires a JWT: ?token= carries it, the user id is its sub, no token no entry.
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { DemoUser, UI_TIMEOUT_MS, assertMeshUp, useSystemAndBrowser } from './demo.mjs';

const SECRET = randomBytes(24).toString('hex');

/** An HS256 JWT for `sub` with the display name `name`, valid for ten minutes. */
function token(sub, name) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, name, exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`;
}

describe('gateway with JWT authentication (AUTH_JWT_SECRET)', () => {
  const ctx = useSystemAndBrowser('single', { AUTH_JWT_SECRET: SECRET });

  test('pages with ?token= join as the token subject and call each other', async (t) => {
    const { system, browser } = ctx();
    const suffix = randomBytes(3).toString('hex');
    const users = [];
    t.after(() => Promise.all(users.map((u) => u.close())));
    for (const [sub, name] of [[`ada-${suffix}`, 'Ada Lovelace'], [`bob-${suffix}`, 'Bob Kahn']]) {
      const user = await DemoUser.join(browser, system.gatewayUrls[0], name.split(' ')[0], { query: `?token=${token(sub, name)}` });
      users.push(user);
      assert.equal(user.id, sub, 'the user id is the token subject');
      user.name = name; // the token's name claim is what the others see
      assert.equal(await user.page.getByTestId('me-name').textContent(), name);
    }
    const [a, b] = users;
    await a.call(b);
    await b.accept(a);
    await assertMeshUp([a, b]);
  });

  test('a page without a token cannot join and says why', async (t) => {
    const { system, browser } = ctx();
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    await page.goto(`${system.gatewayUrls[0]}/demo`, { timeout: UI_TIMEOUT_MS });
    await page.getByTestId('connection-status').filter({ hasText: /authentication failed/ }).waitFor({ timeout: UI_TIMEOUT_MS });
    await page.getByTestId('name-input').fill('Mallory');
    await page.getByTestId('join-button').click();
    assert.equal(await page.evaluate(() => window.meetup.registered), false);
  });
});
