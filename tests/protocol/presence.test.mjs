// Presence: user-joined registration, users-list and user-joined broadcasts, public user records, joinedAt.
import assert from 'node:assert/strict';
import { assertPublicUser, protocolSuite, register } from './harness.mjs';

const { scenario } = protocolSuite();

scenario('user-joined: users-list to everyone incl. sender and unregistered sockets, user-joined to others only', async (sc) => {
  const a = await sc.user('a');
  const lurker = await sc.connect('lurker'); // connected, never registers
  const b = await sc.connect('b');
  const sinceA = a.mark();
  const sinceLurker = lurker.mark();
  const sinceB = b.mark();

  const ack = await b.emitWithAck('user-joined', { id: sc.id('b'), username: 'Bob' });
  b.userId = sc.id('b');
  assert.equal(ack.ok, true);
  assertPublicUser(ack.user, { id: sc.id('b'), username: 'Bob' }, 'ack.user');
  // With a resume grace (the suite's default), a fresh registration also hands out a resume
  // token: a new session, nothing resumed or recovered.
  assert.deepEqual(Object.keys(ack).sort(), ['ok', 'recovered', 'resumeToken', 'resumed', 'user']);
  assert.equal(ack.resumed, false, 'a fresh registration is not a resume');
  assert.equal(ack.recovered, false, 'a fresh registration recovered nothing');
  assert.equal(typeof ack.resumeToken, 'string', 'resumeToken is a string');
  assert.ok(ack.resumeToken.length > 0, 'resumeToken is not empty');

  const hasB = (list) => Array.isArray(list) && list.some((u) => u.id === sc.id('b'));
  for (const [client, since] of [[a, sinceA], [lurker, sinceLurker], [b, sinceB]]) {
    const list = await client.waitFor('users-list', hasB, { since });
    assert.ok(list.some((u) => u.id === sc.id('a')), `${client.label}: users-list lacks a`);
  }
  for (const [client, since] of [[a, sinceA], [lurker, sinceLurker]]) {
    const joined = await client.waitFor('user-joined', (u) => u?.id === sc.id('b'), { since });
    assert.deepEqual(joined, ack.user, `${client.label}: user-joined payload equals the ack's user`);
  }
  // Nothing the registration broadcast is still on its way once a later registration arrived.
  await sc.presenceBarrier(a, b, lurker);
  assert.deepEqual(b.received('user-joined', (u) => u?.id === sc.id('b')), [], 'the sender got its own user-joined');
  assert.equal(a.received('user-joined', (u) => u?.id === sc.id('b'), sinceA).length, 1, 'a got user-joined once');
});

scenario('public user records are exactly {id, username, joinedAt} everywhere', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.connect('b');
  const since = a.mark();
  const ack = await b.emitWithAck('user-joined', {
    id: sc.id('b'),
    username: 'Bob',
    socketId: 'fake-socket',
    gatewayId: 'fake-gateway',
    sessionId: 'fake-session',
    extra: { nested: true },
  });
  assertPublicUser(ack.user, { id: sc.id('b'), username: 'Bob' }, 'ack.user');
  const joined = await a.waitFor('user-joined', (u) => u?.id === sc.id('b'), { since });
  assertPublicUser(joined, { id: sc.id('b'), username: 'Bob' }, 'user-joined');
  const list = await b.waitFor('users-list', (l) => Array.isArray(l) && l.some((u) => u.id === sc.id('b')));
  for (const record of list) assertPublicUser(record, {}, 'users-list entry');
  const listed = list.filter((u) => u.id === sc.id('b') || u.id === sc.id('a'));
  assert.equal(listed.length, 2, 'each user listed once');
  assertPublicUser(list.find((u) => u.id === sc.id('a')), { username: 'a-name' }, 'users-list entry for a');
});

scenario('joinedAt is stamped by the server (ISO-8601 UTC), whatever the client sends', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.connect('b');
  const before = Date.now();
  const since = a.mark();
  const user = await register(b, { id: sc.id('b'), username: 'Bob', joinedAt: '1999-01-01T00:00:00.000Z' });
  const after = Date.now();
  assert.notEqual(user.joinedAt, '1999-01-01T00:00:00.000Z');
  const stamped = Date.parse(user.joinedAt);
  assert.ok(stamped >= before - 2_000 && stamped <= after + 2_000, `joinedAt ${user.joinedAt} is not now`);
  const joined = await a.waitFor('user-joined', (u) => u?.id === sc.id('b'), { since });
  assert.equal(joined.joinedAt, user.joinedAt);
  const list = await a.waitFor('users-list', (l) => l?.some?.((u) => u.id === sc.id('b')), { since });
  assert.equal(list.find((u) => u.id === sc.id('b')).joinedAt, user.joinedAt);
});

scenario('users-list contains every online user once, and drops users that left', async (sc) => {
  const a = await sc.user('a');
  const b = await sc.user('b');
  const c = await sc.user('c');
  const ids = [a, b, c].map((x) => x.userId);
  const list = await c.waitFor('users-list', (l) => Array.isArray(l) && ids.every((id) => l.some((u) => u.id === id)));
  for (const id of ids) assert.equal(list.filter((u) => u.id === id).length, 1, `${id} listed once`);
  const since = a.mark();
  b.close();
  const after = await a.waitFor('users-list', (l) => Array.isArray(l) && !l.some((u) => u.id === b.userId), { since });
  assert.ok(after.some((u) => u.id === a.userId) && after.some((u) => u.id === c.userId));
});

scenario('user ids and usernames are opaque strings (unicode, punctuation, Date.now()-style)', async (sc) => {
  const observer = await sc.user('observer');
  for (const [label, id, username] of [
    ['digits', `${Date.now()}${sc.prefix.replace(/\D/g, '')}`, 'Ada'],
    ['unicode', sc.id('ünï-çødé-👋'), 'Zoë 🎥 <script>"\''],
    ['max', sc.id('m').padEnd(128, 'x'), 'u'.repeat(128)],
  ]) {
    const client = await sc.connect(label);
    const since = observer.mark();
    const user = await register(client, { id, username });
    assert.equal(user.id, id);
    assert.equal(user.username, username);
    const joined = await observer.waitFor('user-joined', (u) => u?.id === id, { since });
    assert.equal(joined.username, username);
  }
});

scenario('the same id can come online again after leaving, with a new joinedAt and a new user-joined', async (sc) => {
  const observer = await sc.user('observer');
  const first = await sc.user('x');
  const firstJoinedAt = first.registeredUser.joinedAt;
  let since = observer.mark();
  first.close();
  await observer.waitFor('user-left', (id) => id === first.userId, { since });
  since = observer.mark();
  const again = await sc.connect('x-again');
  const user = await register(again, { id: first.userId, username: 'x-renamed' });
  const joined = await observer.waitFor('user-joined', (u) => u?.id === first.userId, { since });
  assert.deepEqual(joined, user);
  assert.ok(Date.parse(user.joinedAt) >= Date.parse(firstJoinedAt));
  assert.equal(user.username, 'x-renamed');
});
