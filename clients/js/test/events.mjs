// What a client under test received, in order, and waits on it that cannot miss an event that came first.
import { MeetUpClient } from '../index.js';

export const EVENT_TIMEOUT_MS = 5_000;

// The client's own events, recorded next to the server's.
const LOCAL = ['connect', 'disconnect', 'registered', 'resume-refused', 'registration-failed'];

/** A MeetUpClient whose every event is recorded (local ones as `$name`). */
export class Recorded {
  constructor(url, label, options = {}) {
    this.label = label;
    this.client = new MeetUpClient(url, { ackTimeoutMs: 5_000, ...options });
    this.events = []; // [event, payload]
    this.wakers = new Set();
    this.client.onAny((event, payload) => this.#record(event, payload));
    for (const event of LOCAL) this.client.on(event, (payload) => this.#record(`$${event}`, payload));
  }

  #record(event, payload) {
    this.events.push([event, payload]);
    for (const wake of [...this.wakers]) wake();
  }

  mark() {
    return this.events.length;
  }

  /** Payloads of `event` (local events: `$name`) from `since`, matching `predicate`. */
  received(event, predicate = () => true, since = 0) {
    return this.events.slice(since).filter(([e, p]) => e === event && predicate(p)).map(([, p]) => p);
  }

  /** The first `event` from `since` matching `predicate`, already received or to come. */
  waitFor(event, predicate = () => true, { since = 0, timeoutMs = EVENT_TIMEOUT_MS } = {}) {
    return new Promise((resolve, reject) => {
      let next = since;
      const check = () => {
        for (; next < this.events.length; next++) {
          const [e, p] = this.events[next];
          if (e === event && predicate(p)) {
            done();
            return resolve(p);
          }
        }
      };
      const done = () => {
        clearTimeout(timer);
        this.wakers.delete(check);
      };
      const timer = setTimeout(() => {
        done();
        const recent = this.events.slice(since).slice(-15).map(([e, p]) => `${e} ${JSON.stringify(p)?.slice(0, 160)}`);
        reject(new Error(`${this.label}: no ${event} within ${timeoutMs} ms; since then:\n  ${recent.join('\n  ') || '(nothing)'}`));
      }, timeoutMs);
      this.wakers.add(check);
      check();
    });
  }

  close() {
    this.client.disconnect();
  }
}

/** Unique ids per test, so that tests share one gateway without meeting. */
let counter = 0;
export function uniqueId(prefix) {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

/** Opens recorded clients for test `t`, all closed when it ends. */
export function opener(t, url) {
  return (label, options) => {
    const recorded = new Recorded(url, label, options);
    t.after(() => recorded.close());
    return recorded;
  };
}

/** Opens and registers a client as a new user named `label`. */
export async function joined(open, label, options) {
  const user = open(label, options);
  user.id = uniqueId(label.toLowerCase());
  user.ack = await user.client.register({ id: user.id, username: label });
  return user;
}
