// Presence order under bursts: a change's users-list before its user-joined / user-left, whether lists are coalesced or not.
// (A file of its own: its burst of connections starts from a full per-address connection allowance.)
import assert from 'node:assert/strict';
import { protocolSuite } from './harness.mjs';

const { scenario } = protocolSuite();

scenario('bursts: each user-joined and user-left comes after a users-list that already shows it, lists coalesced or not', async (sc) => {
  // A burst makes the gateway coalesce lists (PROTOCOL.md "Ordering"): the deltas of a
  // change must still follow a list that holds it, never overtake the list held back.
  const observers = [await sc.user('observer-1'), await sc.user('observer-2')];
  const lurker = await sc.connect('lurker'); // never registers: gets lists and deltas too
  const watchers = [...observers, lurker];
  const labels = Array.from({ length: 12 }, (_, i) => `burst-${i}`);
  const ids = new Set(labels.map((l) => sc.id(l)));
  const shown = (id, present) => (e) => e.event === 'users-list' && Array.isArray(e.args[0]) && e.args[0].some((u) => u?.id === id) === present;
  const assertListFirst = (w, since, event, present) => {
    const events = w.eventsSince(since);
    for (const [i, e] of events.entries()) {
      const id = event === 'user-joined' ? e.args[0]?.id : e.args[0];
      if (e.event !== event || !ids.has(id)) continue;
      assert.ok(events.slice(0, i).some(shown(id, present)), `${w.label}: ${event} ${id} before any users-list ${present ? 'listing' : 'without'} it:\n    ${w.summary(since)}`);
    }
    assert.equal(events.filter((e) => e.event === event && ids.has(event === 'user-joined' ? e.args[0]?.id : e.args[0])).length, ids.size, `${w.label}: one ${event} per user`);
  };

  let since = watchers.map((w) => w.mark());
  const burst = await Promise.all(labels.map((l) => sc.user(l)));
  for (const [i, w] of watchers.entries()) {
    for (const id of ids) await w.waitFor('user-joined', (u) => u?.id === id, { since: since[i] });
    await w.waitFor('users-list', (l) => Array.isArray(l) && [...ids].every((id) => l.some((u) => u?.id === id)), { since: since[i] });
    assertListFirst(w, since[i], 'user-joined', true);
  }

  since = watchers.map((w) => w.mark());
  for (const client of burst) client.close();
  for (const [i, w] of watchers.entries()) {
    for (const id of ids) await w.waitFor('user-left', (x) => x === id, { since: since[i] });
    await w.waitFor('users-list', (l) => Array.isArray(l) && [...ids].every((id) => !l.some((u) => u?.id === id)), { since: since[i] });
    assertListFirst(w, since[i], 'user-left', false);
  }
});
