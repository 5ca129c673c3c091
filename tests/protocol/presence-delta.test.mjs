// Presence deltas (extension, opt-in in the handshake): one users-list when a socket registers,
// then only user-joined / user-left, never another full list. Legacy sockets are unchanged.
import assert from 'node:assert/strict';
import { connect, protocolSuite, register } from './harness.mjs';

const { scenario } = protocolSuite();

const DELTA = { auth: { presence: 'delta' } };
const lists = (client, since = 0) => client.received('users-list', () => true, since);
const ids = (list) => list.map((u) => u.id).sort();

/**
 * Delta barrier: a throwaway user registers and every observer waits for its user-joined.
 * Presence changes reach a socket in the order they were applied, so whatever earlier
 * changes caused has arrived once this resolves.
 */
async function deltaBarrier(sc, ...observers) {
  const probe = await sc.user(`probe${sc.clients.length}`);
  await Promise.all(
    observers.map((o) => o.waitFor('user-joined', (u) => u?.id === probe.userId, { what: 'delta barrier' })),
  );
  return probe;
}

scenario('a delta socket gets one users-list when it registers, then only user-joined and user-left', async (sc) => {
  const a = await sc.user('a');
  const legacy = await sc.user('legacy');
  const d = await sc.connect('d', DELTA);
  const since = d.mark();
  const user = await register(d, { id: sc.id('d'), username: 'Delta' });
  const snapshot = await d.waitFor('users-list', (l) => Array.isArray(l), { since });
  assert.ok(snapshot.some((u) => u.id === a.userId) && snapshot.some((u) => u.id === legacy.userId), 'the snapshot lists everyone online');
  assert.deepEqual(snapshot.find((u) => u.id === user.id), user, 'the snapshot lists the registrant as its ack does');
  assert.equal(d.received('user-joined', (u) => u?.id === user.id).length, 0, 'no user-joined for itself');

  const legacySince = legacy.mark();
  const b = await sc.user('b');
  const joined = await d.waitFor('user-joined', (u) => u?.id === b.userId, { since });
  assert.deepEqual(joined, b.registeredUser, 'user-joined carries the public record');
  b.close();
  assert.equal(await d.waitFor('user-left', (id) => id === b.userId, { since }), b.userId);
  await deltaBarrier(sc, d, legacy);
  assert.equal(lists(d).length, 1, `the delta socket got exactly one users-list, got ${lists(d).length}`);
  // Legacy sockets still get full lists: one without b, after b left.
  const last = await legacy.waitFor('users-list', (l) => Array.isArray(l) && !l.some((u) => u.id === b.userId) && l.some((u) => u.id === user.id), { since: legacySince });
  assert.ok(last.some((u) => u.id === a.userId));
});

scenario('deltas keep a client exact: its set equals the server list after joins, leaves and several sockets per user', async (sc) => {
  const d = await sc.connect('d', DELTA);
  await register(d, { id: sc.id('d'), username: 'Delta' });
  const snapshot = await d.waitFor('users-list', (l) => Array.isArray(l));
  const set = new Map(snapshot.map((u) => [u.id, u]));
  const since = d.mark();
  const users = [];
  for (const label of ['u1', 'u2', 'u3']) users.push(await sc.user(label));
  // A second socket of u1 (possibly on the other gateway): nobody came online.
  const u1bis = await sc.socketOf(users[0], 'u1-second');
  users[1].close();
  users[0].close(); // u1 still has its second socket: not offline
  await deltaBarrier(sc, d);
  for (const e of d.eventsSince(since)) {
    if (e.event === 'user-joined') set.set(e.args[0].id, e.args[0]);
    if (e.event === 'user-left') set.delete(e.args[0]);
  }
  const legacy = await sc.user('legacy');
  const truth = await legacy.waitFor('users-list', (l) => Array.isArray(l) && l.some((u) => u.id === legacy.userId));
  // The probe and legacy registered after the replay; everyone else must match.
  const expected = ids(truth.filter((u) => !u.id.includes('probe') && u.id !== legacy.userId));
  assert.deepEqual(ids([...set.values()].filter((u) => !u.id.includes('probe'))), expected);
  assert.ok(set.has(users[0].userId), 'u1 is online through its second socket');
  assert.ok(!set.has(users[1].userId), 'u2 left');
  assert.equal(d.received('user-joined', (u) => u?.id === users[0].userId, since).length, 1, 'u1 joined once');
  assert.equal(d.received('user-left', (id) => id === users[0].userId, since).length, 0, 'u1 did not leave');
  u1bis.close();
  assert.equal(await d.waitFor('user-left', (id) => id === users[0].userId, { since }), users[0].userId, "u1's last socket went");
  assert.equal(lists(d).length, 1, 'still one users-list');
});

scenario('?presence=delta in the query works for clients that cannot set auth; "full" is the default', async (sc) => {
  const d = await sc.connect('d', { query: { presence: 'delta' } });
  await register(d, { id: sc.id('d'), username: 'Q' });
  await d.waitFor('users-list', (l) => Array.isArray(l));
  const full = await sc.connect('full', { auth: { presence: 'full' } });
  await register(full, { id: sc.id('full'), username: 'F' });
  await full.waitFor('users-list', (l) => Array.isArray(l) && l.some((u) => u.id === sc.id('full')));
  const since = full.mark();
  const b = await sc.user('b');
  await d.waitFor('user-joined', (u) => u?.id === b.userId);
  await full.waitFor('users-list', (l) => Array.isArray(l) && l.some((u) => u.id === b.userId), { since });
  await deltaBarrier(sc, d);
  assert.equal(lists(d).length, 1, 'the query form is a delta socket');
});

scenario('a delta socket hears a changed username as user-joined with the new record', async (sc) => {
  const d = await sc.user('d', DELTA);
  const a = await sc.user('a', { username: 'Old' });
  // a's own ack and list say nothing of when d hears of a: wait for that first.
  await d.waitFor('user-joined', (u) => u?.id === a.userId && u.username === 'Old');
  const since = d.mark();
  const renamed = await register(a, { id: a.userId, username: 'New' });
  const update = await d.waitFor('user-joined', (u) => u?.id === a.userId, { since });
  assert.deepEqual(update, renamed, 'the record as the ack tells it');
  assert.equal(update.username, 'New');
  assert.equal(lists(d).length, 1);
});

scenario('an unknown presence mode is refused at the handshake with a clear error', async (sc) => {
  for (const options of [{ auth: { presence: 'everything' } }, { query: { presence: 'deltas' } }]) {
    await assert.rejects(
      connect(sc.gatewayUrls[0], { label: 'bad', ...options }),
      (err) => /invalid presence/.test(err.message),
      `refused: ${JSON.stringify(options)}`,
    );
  }
  // The gateway goes on serving everyone else.
  const ok = await sc.user('ok', DELTA);
  assert.ok(ok.connected);
});
