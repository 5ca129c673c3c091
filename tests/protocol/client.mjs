// socket.io clients for the tests: connect, record every event, wait for events, emit with acks, assert acks.
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

// Failure bounds, never waits: each wait ends as soon as its condition holds.
export const EVENT_TIMEOUT_MS = 5_000;
export const ACK_TIMEOUT_MS = 5_000;
const CONNECT_TIMEOUT_MS = 5_000;

function describe(value, max = 300) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) text = String(value);
  return text.length > max ? `${text.slice(0, max)}...(${text.length} chars)` : text;
}

/** A socket.io client that records every event it receives, in order. */
export class TestClient {
  constructor(socket, label) {
    this.socket = socket;
    this.label = label;
    this.events = []; // { event, args, at } (at: Date.now() when it arrived)
    this.listeners = new Set();
    this.userId = null;
    this.username = null;
    this.ackIds = new Map(); // ack packet id -> how many acks with that id arrived
    socket.onAny((event, ...args) => this.#record(event, args));
    // Every decoded Socket.IO packet passes the manager: count acks (type 3) to catch duplicates.
    socket.io.on('packet', (packet) => {
      if (packet.type === 3) this.ackIds.set(packet.id, (this.ackIds.get(packet.id) ?? 0) + 1);
    });
    // Reserved events are not seen by onAny; recorded under a `$` name.
    socket.on('disconnect', (reason) => this.#record('$disconnect', [reason]));
  }

  #record(event, args) {
    this.events.push({ event, args, at: Date.now() });
    for (const listener of this.listeners) listener();
  }

  get connected() {
    return this.socket.connected;
  }

  /** Position in the event log, for `since` in later checks. */
  mark() {
    return this.events.length;
  }

  /** Payloads (first argument) of the recorded `event`s matching `predicate`, from `since`. */
  received(event, predicate = () => true, since = 0) {
    return this.events
      .slice(since)
      .filter((e) => e.event === event && predicate(e.args[0], e.args))
      .map((e) => e.args[0]);
  }

  /** Every recorded event from `since`, as { event, args, at }. */
  eventsSince(since = 0) {
    return this.events.slice(since);
  }

  summary(since = 0) {
    const recent = this.events.slice(since).slice(-20);
    return recent.map((e) => `${e.event} ${describe(e.args.length === 1 ? e.args[0] : e.args, 200)}`).join('\n    ');
  }

  /**
   * Resolves with the first payload of an `event` matching `predicate` (already recorded from
   * `since`, or arriving later). Rejects with a clear message after `timeoutMs`.
   */
  waitFor(event, predicate = () => true, { since = 0, timeoutMs = EVENT_TIMEOUT_MS, what = '' } = {}) {
    return new Promise((resolve, reject) => {
      let index = since;
      const check = () => {
        for (; index < this.events.length; index++) {
          const e = this.events[index];
          if (e.event === event && predicate(e.args[0], e.args)) {
            finish();
            resolve(e.args[0]);
            return;
          }
        }
      };
      const finish = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      const timer = setTimeout(() => {
        finish();
        reject(
          new Error(
            `${this.label}: no "${event}"${what ? ` (${what})` : ''} within ${timeoutMs}ms; ` +
              `connected=${this.connected}; last events since ${since}:\n    ${this.summary(since) || '(none)'}`,
          ),
        );
      }, timeoutMs);
      this.listeners.add(check);
      check();
    });
  }

  /** Emits with an ack callback and resolves with the ack (rejects if none within the bound). */
  async emitWithAck(event, ...args) {
    try {
      return await this.socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, ...args);
    } catch (err) {
      throw new Error(
        `${this.label}: no ack for "${event}" ${describe(args)} within ${ACK_TIMEOUT_MS}ms (${err.message}); connected=${this.connected}`,
      );
    }
  }

  /** Emits without an ack callback. */
  emit(event, ...args) {
    this.socket.emit(event, ...args);
  }

  close() {
    this.socket.disconnect();
  }
}

/**
 * Connects a client. transport: 'websocket' (default, websocket only), 'polling' (long-polling
 * only) or 'upgrade' (socket.io-client defaults: polling first, then upgrade to websocket).
 */
export async function connect(url, { transport = 'websocket', label = 'client', ...ioOptions } = {}) {
  const options = { forceNew: true, reconnection: false, ...ioOptions };
  if (transport === 'websocket') options.transports = ['websocket'];
  else if (transport === 'polling') Object.assign(options, { transports: ['polling'], upgrade: false });
  else if (transport !== 'upgrade') throw new Error(`unknown transport ${transport}`);
  const socket = io(url, options);
  const client = new TestClient(socket, label);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.disconnect();
      reject(new Error(`${label}: not connected to ${url} within ${CONNECT_TIMEOUT_MS}ms`));
    }, CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('connect_error', (err) => {
      clearTimeout(timer);
      socket.disconnect();
      reject(new Error(`${label}: connect_error to ${url}: ${err.message}`));
    });
  });
  return client;
}

/** The function forms the suite is written against. */
export function waitFor(client, event, predicate, timeoutMs = EVENT_TIMEOUT_MS, options = {}) {
  return client.waitFor(event, predicate, { ...options, timeoutMs });
}

export function emitWithAck(client, event, ...args) {
  return client.emitWithAck(event, ...args);
}

/** Sends `user-joined` and asserts the success ack; returns the ack's user record. */
export async function register(client, { id, username, ...extra }) {
  const ack = await client.emitWithAck('user-joined', { id, username, ...extra });
  assert.equal(ack?.ok, true, `${client.label}: user-joined ${id} not acked ok: ${describe(ack)}`);
  client.userId = id;
  client.username = username;
  return ack.user;
}

/** Asserts an ack is exactly a failure with `code` and a human message. */
export function assertAckError(ack, code, context = '') {
  const where = context ? `${context}: ` : '';
  assert.equal(typeof ack, 'object', `${where}ack is not an object: ${describe(ack)}`);
  assert.notEqual(ack, null, `${where}ack is null`);
  assert.equal(ack.ok, false, `${where}expected ok:false with code ${code}, got ${describe(ack)}`);
  assert.equal(ack.error?.code, code, `${where}expected error code ${code}, got ${describe(ack)}`);
  assert.equal(typeof ack.error.message, 'string', `${where}error.message is not a string: ${describe(ack)}`);
  assert.ok(ack.error.message.length > 0, `${where}error.message is empty`);
  assert.deepEqual(Object.keys(ack).sort(), ['error', 'ok'], `${where}failure ack has extra keys: ${describe(ack)}`);
  assert.deepEqual(Object.keys(ack.error).sort(), ['code', 'message'], `${where}error has extra keys: ${describe(ack)}`);
}

export const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$/;

/** Asserts `record` is exactly a public user record { id, username, joinedAt }. */
export function assertPublicUser(record, expected = {}, context = 'user record') {
  assert.deepEqual(Object.keys(record ?? {}).sort(), ['id', 'joinedAt', 'username'], `${context}: keys of ${describe(record)}`);
  assert.equal(typeof record.id, 'string');
  assert.equal(typeof record.username, 'string');
  assert.match(record.joinedAt, ISO_UTC, `${context}: joinedAt is not ISO-8601 UTC`);
  for (const [key, value] of Object.entries(expected)) assert.equal(record[key], value, `${context}: ${key}`);
}

/** `{id, username}` of a registered client, as the server reports users in calls. */
export function callUser(client) {
  return { id: client.userId, username: client.username };
}

export { describe as show };
