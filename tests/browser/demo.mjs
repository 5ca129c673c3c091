// Browser test helpers: Debian's Chromium through playwright-core, the system per suite, demo pages as users.
import { after, before } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startSystem } from '../protocol/system.mjs';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/**
 * MEETUP_DEMO_DIR=../../gateway/demo serves the page's own files from that directory instead
 * of the copy embedded in the gateway binary: for working on the page without rebuilding.
 */
const DEMO_DIR = process.env.MEETUP_DEMO_DIR;
// The client module the page imports lives with the JavaScript client, not with the page.
const CLIENT_MODULE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'clients', 'js', 'meetup.js');
const DEMO_FILES = {
  '/demo': 'index.html',
  '/demo/': 'index.html',
  '/demo/demo.js': 'demo.js',
  '/demo/demo.css': 'demo.css',
  '/demo/meetup.js': CLIENT_MODULE, // absolute: path.resolve(DEMO_DIR, it) is itself
};

// A document fulfilled by the test (MEETUP_DEMO_DIR) comes from no address, so Chromium's
// Local Network Access checks take it for a public page and block its websocket to the
// gateway on loopback (net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS): off for those runs.
const LAUNCH_ARGS = DEMO_DIR
  ? [...CHROMIUM_ARGS, '--disable-features=LocalNetworkAccessChecks,LocalNetworkAccessChecksWebSockets,LocalNetworkAccessChecksWebRTC']
  : CHROMIUM_ARGS;

// Failure bounds of the waits (every wait ends as soon as its condition holds).
export const UI_TIMEOUT_MS = 10_000; // a page reacting to a click or to a signaling event
export const CONNECT_TIMEOUT_MS = 30_000; // ICE + DTLS on a loaded 2-core machine
export const FRAMES_TIMEOUT_MS = 30_000; // more than MIN_FRAMES frames decoded
export const MIN_FRAMES = 10;
const STATS_POLL_MS = 200;

/**
 * Registers before/after hooks of the current suite: one system of `topology` and one
 * Chromium. Returns a getter for { system, browser } (set once `before` has run).
 */
export function useSystemAndBrowser(topology, env = {}) {
  const state = {};
  before(async () => {
    state.system = await startSystem({ topology, env });
    state.browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: LAUNCH_ARGS,
    });
  });
  after(async () => {
    await state.browser?.close();
    await state.system?.stop();
  });
  return () => state;
}

async function serveDemoFromDisk(context) {
  await context.route(
    (url) => url.pathname in DEMO_FILES,
    async (route) => {
      await route.fulfill({ path: path.resolve(DEMO_DIR, DEMO_FILES[new URL(route.request().url()).pathname]) });
    },
  );
}

/**
 * `err` with `message` instead of its own: the test reporter prints the stack, which
 * Playwright's errors made before the diagnosis was added to the message.
 */
function explained(err, message) {
  err.message = message;
  err.stack = `${err.name}: ${message}\n${(err.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l)).join('\n')}`;
  return err;
}

/** One person on the demo page, in a browser context of its own (own camera, own socket). */
export class DemoUser {
  constructor(name, context, page) {
    this.name = name;
    this.context = context;
    this.page = page;
    this.errors = []; // uncaught page errors and console errors
    this.id = null;
    this.closed = false;
  }

  /**
   * Opens `${gatewayUrl}/demo` (with `query`), types `name`, joins, waits for the gateway's ack.
   * `iceServers`: the answer of GET /ice-servers is replaced by this list (the gateway's is empty in tests).
   */
  static async join(browser, gatewayUrl, name, { query = '', viewport = { width: 1000, height: 600 }, iceServers } = {}) {
    const context = await browser.newContext({ viewport });
    if (DEMO_DIR) await serveDemoFromDisk(context);
    if (iceServers) {
      await context.route(
        (url) => url.pathname === '/ice-servers',
        async (route) => {
          await route.fulfill({ json: { iceServers } });
        },
      );
    }
    const page = await context.newPage();
    const user = new DemoUser(name, context, page);
    page.on('pageerror', (err) => user.errors.push(`pageerror: ${err.message}`));
    page.on('console', (msg) => msg.type() === 'error' && user.errors.push(`console: ${msg.text()}`));
    await page.goto(`${gatewayUrl}/demo${query}`, { timeout: UI_TIMEOUT_MS });
    await page.getByTestId('name-input').fill(name);
    await page.getByTestId('join-button').click();
    await user.waitFor(() => window.meetup?.registered === true, null, 'registered', UI_TIMEOUT_MS);
    user.id = await page.evaluate(() => window.meetup.userId);
    return user;
  }

  /** page.waitForFunction, failing with this page's signaling history. */
  async waitFor(fn, arg, what, timeout = UI_TIMEOUT_MS) {
    try {
      await this.page.waitForFunction(fn, arg, { timeout, polling: 100 });
    } catch (err) {
      throw explained(err, `${this.name}: ${what} not within ${timeout}ms\n${err.message}\n${await this.diagnosis()}`);
    }
  }

  /** The page's events (without SDP bodies), peer states and errors, to explain a failure. */
  async diagnosis() {
    const state = await this.page
      .evaluate(() => ({
        userId: window.meetup?.userId,
        callId: window.meetup?.callId,
        transport: window.meetup?.transport,
        peers: [...(window.meetup?.peers ?? [])].map(([id, pc]) => `${id}: ${pc.connectionState}/${pc.signalingState}`),
        events: (window.meetup?.events ?? []).map(
          (e) => `${e.t} ${e.dir} ${e.event} ${JSON.stringify(e.payload, (k, v) => (k === 'sdp' || k === 'candidate' ? '…' : v))}`,
        ),
      }))
      .catch((err) => ({ unavailable: err.message }));
    return `--- ${this.name} (${this.id}) page state ---\n${JSON.stringify(state, null, 1)}\nerrors: ${JSON.stringify(this.errors)}`;
  }

  /** The row of `other` in my online list (waits for it to be listed). */
  async row(other) {
    const row = this.page.locator(`[data-testid="user"][data-user-id="${other.id}"]`);
    await row.waitFor({ timeout: UI_TIMEOUT_MS });
    return row;
  }

  /** Clicks Call on `other`'s row. */
  async call(other) {
    await (await this.row(other)).getByTestId('call-button').click();
  }

  /** Ticks each of `others` and clicks the group call button. */
  async groupCall(others) {
    for (const other of others) await (await this.row(other)).getByTestId('select-user').check();
    await this.page.getByTestId('call-selected-button').click();
  }

  /** Waits for the incoming call from `caller` and clicks Accept. */
  async accept(caller) {
    try {
      await this.page.getByTestId('incoming-call').waitFor({ timeout: UI_TIMEOUT_MS });
    } catch (err) {
      throw explained(err, `${this.name}: no incoming call from ${caller.name}\n${err.message}\n${await this.diagnosis()}\n${await caller.diagnosis()}`);
    }
    const from = await this.page.getByTestId('incoming-caller').textContent();
    if (from !== caller.name) throw new Error(`${this.name}: incoming call from ${from}, expected ${caller.name}`);
    await this.page.getByTestId('accept-button').click();
  }

  /** Waits until my RTCPeerConnection to each of `others` is 'connected'. */
  async waitConnected(others, timeout = CONNECT_TIMEOUT_MS) {
    const ids = others.map((o) => o.id);
    await this.waitFor(
      (ids) => ids.every((id) => window.meetup.peers.get(id)?.connectionState === 'connected'),
      ids,
      `peer connections connected to ${others.map((o) => o.name)}`,
      timeout,
    );
  }

  /** Video frames decoded from each of `others`: { userId: framesDecoded }. */
  async framesDecoded(others) {
    return this.page.evaluate(async (ids) => {
      const frames = {};
      for (const id of ids) {
        const pc = window.meetup.peers.get(id);
        frames[id] = 0;
        if (!pc) continue;
        (await pc.getStats()).forEach((r) => {
          if (r.type === 'inbound-rtp' && r.kind === 'video') frames[id] = Math.max(frames[id], r.framesDecoded ?? 0);
        });
      }
      return frames;
    }, others.map((o) => o.id));
  }

  /** Waits until more than `min` video frames were decoded from each of `others`. */
  async waitFrames(others, min = MIN_FRAMES, timeout = FRAMES_TIMEOUT_MS) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const frames = await this.framesDecoded(others);
      if (Object.values(frames).every((n) => n > min)) return frames;
      if (Date.now() > deadline) {
        throw new Error(`${this.name}: not more than ${min} frames decoded from each peer within ${timeout}ms: ${JSON.stringify(frames)}\n${await this.diagnosis()}`);
      }
      await delay(STATS_POLL_MS); // the poll interval of a bounded poll, not a wait for a state
    }
  }

  /** When (page clock, ms) my connection to `other` first reported 'connected'. */
  async connectedAt(other) {
    return this.page.evaluate(
      (id) => window.meetup.events.find((e) => e.event === 'peer-state' && e.payload.userId === id && e.payload.state === 'connected')?.t,
      other.id,
    );
  }

  /** When (page clock, ms) the user clicked a call button last. */
  async callClickedAt() {
    return this.page.evaluate(() => window.meetup.events.findLast((e) => e.event === 'call-clicked')?.t);
  }

  /**
   * Closes the page's context. Route handlers still running (a long-poll the test forwards,
   * a file it serves) are cut off first and their errors dropped: they answer a page that is
   * going away, and nothing of theirs may run after the test that started them has ended.
   * Closing again (a test's own close, then its `after` hook) does nothing.
   */
  async close() {
    if (this.closed) return;
    this.closed = true;
    await this.context.unrouteAll({ behavior: 'ignoreErrors' });
    await this.context.close();
  }
}

/** Every pair of `users` connected, with video flowing both ways. */
export async function assertMeshUp(users) {
  await Promise.all(users.map((u) => u.waitConnected(users.filter((o) => o !== u))));
  const frames = await Promise.all(users.map((u) => u.waitFrames(users.filter((o) => o !== u))));
  return frames;
}

/** Prints the time from the caller's click on Call to every connection of the call being connected. */
export async function reportSetupTime(label, caller, users) {
  const clicked = await caller.callClickedAt();
  const connected = [];
  for (const u of users) for (const o of users) if (u !== o) connected.push(await u.connectedAt(o));
  const ms = Math.max(...connected) - clicked;
  console.log(`${label}: start-call -> ${users.length === 2 ? 'both' : 'all'} connected: ${ms} ms`);
  return ms;
}
