// The gateway binary for the client tests: spawned on port 0, its address read from its JSON log, ready when /readyz says so.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const BIN = path.join(process.env.MEETUP_BIN_DIR ?? path.join(REPO, 'target', 'debug'), 'meetup-gateway');

// Failure bounds: each wait ends as soon as its condition holds.
const LISTEN_TIMEOUT_MS = 30_000;
const READY_TIMEOUT_MS = 15_000;
const READY_POLL_MS = 25;
const STOP_TIMEOUT_MS = 5_000;
const KEPT_LINES = 300;

/** One gateway with embedded services, resume on with a short grace, history in memory. */
const BASE_ENV = {
  HOST: '127.0.0.1',
  PORT: '0',
  PRESENCE_LISTEN: '127.0.0.1:0',
  CALLS_LISTEN: '127.0.0.1:0',
  HISTORY_DATABASE_URL: 'sqlite::memory:',
  LOG_FORMAT: 'json',
  RUST_LOG: 'info',
  RESUME_GRACE_MS: '2000',
};

// Killed when this test process ends, however it ends.
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export class Gateway {
  /** Starts the gateway with `env` over BASE_ENV; resolves once it is ready. */
  static async start(env = {}) {
    if (!existsSync(BIN)) throw new Error(`${BIN} not found: build it (cargo build -p meetup-server) or set MEETUP_BIN_DIR`);
    const gateway = new Gateway({ PATH: process.env.PATH, HOME: process.env.HOME, ...BASE_ENV, ...env });
    try {
      gateway.url = `http://${await gateway.#listening()}`;
      await gateway.#ready();
      return gateway;
    } catch (err) {
      await gateway.stop();
      throw new Error(`${err.message}\n${gateway.log()}`);
    }
  }

  constructor(env) {
    this.url = null;
    this.lines = [];
    this.child = spawn(BIN, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(this.child);
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(() => running.delete(this.child));
    this.#onLine = () => {};
    for (const stream of [this.child.stdout, this.child.stderr]) {
      let rest = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        const parts = (rest + chunk).split('\n');
        rest = parts.pop();
        for (const line of parts) this.#line(line);
      });
    }
  }

  #onLine;

  #line(text) {
    this.lines.push(text);
    if (this.lines.length > KEPT_LINES) this.lines.shift();
    this.#onLine(text);
  }

  /** The address of the "listening" log line of the gateway's Socket.IO/HTTP server. */
  #listening() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`gateway: no "listening" line within ${LISTEN_TIMEOUT_MS} ms`)), LISTEN_TIMEOUT_MS);
      this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`gateway exited (code ${code}, signal ${signal}) before listening`));
      });
      const check = (text) => {
        let fields;
        try {
          const json = JSON.parse(text);
          fields = json.fields ?? json;
        } catch {
          return; // not a JSON log line
        }
        if (fields.message === 'listening' && fields.service === 'gateway' && typeof fields.addr === 'string') {
          clearTimeout(timer);
          this.#onLine = () => {};
          resolve(fields.addr);
        }
      };
      this.#onLine = check;
      for (const line of this.lines) check(line);
    });
  }

  async #ready() {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let last = 'no answer';
    for (;;) {
      try {
        const res = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(1_000) });
        if (res.status === 200) return;
        last = `${res.status} ${await res.text()}`;
      } catch (err) {
        last = err.message;
      }
      if (Date.now() > deadline) throw new Error(`gateway: /readyz not 200 within ${READY_TIMEOUT_MS} ms (last: ${last})`);
      await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS)); // the interval of a bounded poll
    }
  }

  /** The last lines of the gateway's output, to explain a failure. */
  log() {
    return `--- gateway output (last ${this.lines.length} lines) ---\n${this.lines.join('\n')}`;
  }

  /** SIGTERM, then SIGKILL if it does not stop in time. */
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    let timer;
    const late = new Promise((resolve) => {
      timer = setTimeout(resolve, STOP_TIMEOUT_MS, 'late');
    });
    if ((await Promise.race([this.exited, late])) === 'late') {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    clearTimeout(timer);
  }
}
