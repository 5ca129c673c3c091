// JWT authentication with AUTH_JWT_PUBLIC_KEY: RS256 (PEM text) and ES256 (PEM file), wrong algorithms, AUTH_USERNAME_CLAIM.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { claimsFor, keyPair, signJwt } from './jwt.mjs';
import { assertPublicUser, protocolSuite, Scenario, startSystem } from './harness.mjs';

const rsa = keyPair('rsa');
const ec = keyPair('ec');
const { scenario } = protocolSuite({ env: { AUTH_JWT_PUBLIC_KEY: rsa.publicPem, AUTH_USERNAME_CLAIM: 'display_name' } });

/** Asserts connecting with `token` fails with "authentication failed: <reason>". */
async function assertRefused(sc, token, reason, what) {
  await assert.rejects(sc.connect(what, { auth: { token } }), (err) => {
    assert.match(err.message, new RegExp(`connect_error to \\S+: authentication failed: ${reason}$`), what);
    return true;
  });
}

scenario('RS256: a token signed with the configured key registers as its sub', async (sc) => {
  const id = sc.id('a');
  const a = await sc.user('a', { id, auth: { token: signJwt(claimsFor(id), { alg: 'RS256', key: rsa.privateKey }) } });
  assertPublicUser(a.registeredUser, { id, username: 'a-name' });
  const other = keyPair('rsa');
  await assertRefused(sc, signJwt(claimsFor(id), { alg: 'RS256', key: other.privateKey }), 'invalid token signature', 'RS256, another key');
});

scenario('RS256 configured: HS256 (keyed with the public key) and ES256 tokens are refused for their algorithm', async (sc) => {
  const claims = claimsFor(sc.id('x'));
  await assertRefused(sc, signJwt(claims, { alg: 'HS256', key: rsa.publicPem }), 'token algorithm not accepted', 'HS256 keyed with the PEM');
  await assertRefused(sc, signJwt(claims, { alg: 'ES256', key: ec.privateKey }), 'token algorithm not accepted', 'ES256');
});

scenario('AUTH_USERNAME_CLAIM=display_name: the username comes from that claim, not from name', async (sc) => {
  const observer = await sc.user('observer', {
    id: sc.id('observer'),
    auth: { token: signJwt(claimsFor(sc.id('observer')), { alg: 'RS256', key: rsa.privateKey }) },
  });
  const since = observer.mark();
  const id = sc.id('named');
  const token = signJwt(claimsFor(id, { name: 'Not This', display_name: 'Display Name' }), { alg: 'RS256', key: rsa.privateKey });
  const named = await sc.user('named', { id, username: 'typed', auth: { token } });
  assertPublicUser(named.registeredUser, { id, username: 'Display Name' }, 'ack user');
  const list = await observer.waitFor('users-list', (l) => l.some((u) => u.id === id), { since });
  assert.equal(list.find((u) => u.id === id).username, 'Display Name');
});

scenario('ES256 with AUTH_JWT_PUBLIC_KEY as a file path: ES256 tokens pass, RS256 tokens are refused', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'meetup-es256-'));
  const file = path.join(dir, 'ec-public.pem');
  writeFileSync(file, ec.publicPem);
  const system = await startSystem({ env: { AUTH_JWT_PUBLIC_KEY: file } });
  const sc = new Scenario(system, 'es256');
  try {
    const id = sc.id('a');
    const a = await sc.user('a', { id, auth: { token: signJwt(claimsFor(id, { name: 'Ecdsa' }), { alg: 'ES256', key: ec.privateKey }) } });
    assertPublicUser(a.registeredUser, { id, username: 'Ecdsa' });
    const b = await sc.user('b', { id: sc.id('b'), query: { token: signJwt(claimsFor(sc.id('b')), { alg: 'ES256', key: ec.privateKey }) } });
    await a.waitFor('user-joined', (u) => u?.id === b.userId);
    await assertRefused(sc, signJwt(claimsFor(id), { alg: 'RS256', key: rsa.privateKey }), 'token algorithm not accepted', 'RS256 on ES256');
    await assertRefused(sc, signJwt(claimsFor(id), { alg: 'ES256', key: keyPair('ec').privateKey }), 'invalid token signature', 'ES256, another key');
  } catch (err) {
    console.error(system.logs());
    throw err;
  } finally {
    sc.closeAll();
    await system.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
