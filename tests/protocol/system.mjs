// The system under test as child processes: spawn, learn ports from the JSON logs, wait for /readyz, stop.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN_DIR = process.env.MEETUP_BIN_DIR ?? path.join(REPO_ROOT, 'target', 'debug');

// Failure bounds, never waits: every wait below ends as soon as its condition holds.
const STARTUP_TIMEOUT_MS = 30_000;
const READY_TIMEOUT_MS = 15_000;
export const READY_POLL_MS = 25;
const STOP_GRACE_MS = 5_000;
const LOG_TAIL_LINES = 200;

/** The environment every gateway gets unless a test overrides a key (`undefined` removes it). */
export const DEFAULT_ENV = {
  HOST: '127.0.0.1',
  PORT: '0',
  PRESENCE_LISTEN: '127.0.0.1:0',
  CALLS_LISTEN: '127.0.0.1:0',
  // Each gateway its own call history, gone with it.
  HISTORY_DATABASE_URL: 'sqlite::memory:',
  LOG_FORMAT: 'json',
  CLIENT_URL: 'http://allowed.example',
  RUST_LOG: 'info',
  RUST_BACKTRACE: '1',
  // A socket gone without a goodbye stays resumable this long (the server default is 15 s):
  // short, so that cleanup after the grace is quick to test. The presence and calls services
  // of the cluster topology get it too (childEnv starts from DEFAULT_ENV for every process).
  RESUME_GRACE_MS: '2000',
};

/** The resume grace of the suite's systems, in ms (a test's `env` may override it). */
export const RESUME_GRACE_MS = Number(DEFAULT_ENV.RESUME_GRACE_MS);

// Children still running; killed if this test process exits in any way.
const liveChildren = new Set();
process.on('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const child of liveChildren) child.kill('SIGKILL');
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}


/** One child process of the system, with its output kept in memory for diagnosis. */
class ServiceProcess {
  constructor(name, bin, env, args = []) {
    this.name = name;
    this.bin = bin;
    this.lines = []; // { stream, text, json }
    this.listening = new Map(); // service name -> "host:port", from the "listening" log lines
    this.exit = null; // { code, signal } once exited
    this.waiters = new Set();
    this.child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        liveChildren.delete(this.child);
        this.exit = { code, signal };
        this.#notify();
        resolve(this.exit);
      });
    });
    this.child.once('error', (err) => {
      liveChildren.delete(this.child);
      this.exit = { code: null, signal: null, error: err };
      this.#notify();
    });
    this.#collect(this.child.stdout, 'stdout');
    this.#collect(this.child.stderr, 'stderr');
  }

  #collect(stream, streamName) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      partial += chunk;
      const parts = partial.split('\n');
      partial = parts.pop();
      for (const text of parts) this.#line(streamName, text);
    });
    stream.on('end', () => {
      if (partial) this.#line(streamName, partial);
    });
  }

  #line(stream, text) {
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not a JSON log line (a panic message, for example): kept as text
    }
    this.lines.push({ stream, text, json });
    const fields = json?.fields ?? json;
    if (fields && fields.message === 'listening' && typeof fields.addr === 'string') {
      this.listening.set(String(fields.service ?? ''), fields.addr);
    }
    this.#notify();
  }

  #notify() {
    for (const check of this.waiters) check();
  }

  /** Resolves with what `probe()` returns once it is truthy; rejects if the process exits first. */
  until(probe, timeoutMs, what) {
    return new Promise((resolve, reject) => {
      const done = (fn, value) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        fn(value);
      };
      const check = () => {
        const value = probe();
        if (value) return done(resolve, value);
        if (this.exit) {
          const why = this.exit.error ? this.exit.error.message : `code ${this.exit.code}, signal ${this.exit.signal}`;
          done(reject, new Error(`${this.name} (${this.bin}) exited (${why}) before ${what}\n${this.tail()}`));
        }
      };
      const timer = setTimeout(
        () => done(reject, new Error(`${this.name}: no ${what} within ${timeoutMs}ms\n${this.tail()}`)),
        timeoutMs,
      );
      this.waiters.add(check);
      check();
    });
  }

  waitForListening(service, timeoutMs = STARTUP_TIMEOUT_MS) {
    const matches = typeof service === 'function' ? service : (name) => name === service;
    return this.until(
      () => [...this.listening].find(([name]) => matches(name))?.[1],
      timeoutMs,
      `"listening" log line for service ${typeof service === 'function' ? '(matcher)' : service}`,
    );
  }

  mark() {
    return this.lines.length;
  }

  tail(since = 0, max = LOG_TAIL_LINES) {
    const lines = this.lines.slice(Math.max(since, this.lines.length - max));
    const body = lines.map((l) => `  [${this.name} ${l.stream}] ${l.text}`).join('\n');
    return `--- ${this.name} output (${lines.length} of ${this.lines.length - since} lines) ---\n${body}`;
  }

  async stop() {
    if (this.exit) return this.exit;
    this.child.kill('SIGTERM');
    let timer;
    const bounded = new Promise((resolve) => {
      timer = setTimeout(resolve, STOP_GRACE_MS, 'timeout');
    });
    const result = await Promise.race([this.exited, bounded]);
    clearTimeout(timer);
    if (result === 'timeout') {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    return this.exit;
  }
}

function childEnv(overrides) {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' };
  for (const [key, value] of Object.entries({ ...DEFAULT_ENV, ...overrides })) {
    if (value !== undefined) env[key] = String(value);
  }
  return env;
}

/** Polls `url` until it answers 200 (a bounded poll, not a sleep). */
export async function pollUntilOk(url, timeoutMs = READY_TIMEOUT_MS, isDead = () => null) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  for (;;) {
    const dead = isDead();
    if (dead) throw new Error(`process died while polling ${url}: ${dead}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      const body = await res.text();
      if (res.status === 200) return body;
      last = `${res.status} ${body}`;
    } catch (err) {
      last = err.message;
    }
    if (Date.now() > deadline) throw new Error(`${url} not 200 within ${timeoutMs}ms; last: ${last}`);
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
}

async function startGateway(env, name = 'gateway') {
  const bin = path.join(BIN_DIR, 'meetup-gateway');
  const proc = new ServiceProcess(name, bin, childEnv(env));
  try {
    const addr = await proc.waitForListening('gateway', STARTUP_TIMEOUT_MS);
    const url = `http://${addr}`;
    await pollUntilOk(`${url}/readyz`, READY_TIMEOUT_MS, () =>
      proc.exit ? `exit ${JSON.stringify(proc.exit)}` : null,
    );
    return { proc, url };
  } catch (err) {
    await proc.stop();
    if (!err.message.includes('--- ')) err.message += `\n${proc.tail()}`;
    throw err;
  }
}

/** Whole system in one process: one gateway with embedded presence and call services. */
async function startSingle(env) {
  const { proc, url } = await startGateway(env);
  return {
    topology: 'single',
    gatewayUrls: [url, url],
    processes: [proc],
    /** host:port of the calls gRPC service (the embedded one logs its own "listening" line). */
    callsGrpcAddr: (timeoutMs) => proc.waitForListening((name) => /call/i.test(name), timeoutMs),
    presenceGrpcAddr: (timeoutMs) => proc.waitForListening((name) => /^presence$/i.test(name), timeoutMs),
    stop: () => proc.stop(),
  };
}

/** `NATS_SERVER_BIN`, else `nats-server` on the PATH, else Debian's. */
function natsServerBin() {
  if (process.env.NATS_SERVER_BIN) return process.env.NATS_SERVER_BIN;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, 'nats-server');
    if (dir && existsSync(candidate)) return candidate;
  }
  return '/usr/sbin/nats-server';
}

/**
 * A real nats-server with JetStream (the state store) on a free loopback port
 * (`-p -1`), its port read from its log, its store in a fresh temporary directory.
 */
async function startNats() {
  const storeDir = mkdtempSync(path.join(os.tmpdir(), 'meetup-nats-'));
  const proc = new ServiceProcess('nats', natsServerBin(), childEnv({}), ['-a', '127.0.0.1', '-p', '-1', '-js', '-sd', storeDir]);
  process.once('exit', () => rmSync(storeDir, { recursive: true, force: true }));
  const port = await proc.until(
    () => proc.lines.map((l) => /Listening for client connections on [\d.]+:(\d+)/.exec(l.text)?.[1]).find(Boolean),
    STARTUP_TIMEOUT_MS,
    'nats-server listening line',
  );
  return { proc, url: `nats://127.0.0.1:${port}` };
}

async function startService(name, bin, listenVar, natsUrl, env) {
  const proc = new ServiceProcess(name, path.join(BIN_DIR, bin), childEnv({ ...env, [listenVar]: '127.0.0.1:0', METRICS_LISTEN: '127.0.0.1:0', NATS_URL: natsUrl }));
  const addr = await proc.waitForListening(name, STARTUP_TIMEOUT_MS);
  return { proc, addr };
}

/**
 * MEETUP_TOPOLOGY=cluster: a nats-server, the presence and call services as their own
 * processes, and two gateways (gatewayUrls[0] and gatewayUrls[1] on different processes).
 */
async function startCluster(env) {
  const started = [];
  try {
    const nats = await startNats();
    started.push(nats.proc);
    // Failover is tested elsewhere (tests/tests/cluster.rs): here a long lease
    // keeps a busy machine from declaring a live gateway dead. The services
    // create the gateways bucket, so its lease lifetime is theirs.
    env = { GATEWAY_TIMEOUT_MS: '15000', ...env };
    const presence = await startService('presence', 'meetup-presence', 'PRESENCE_LISTEN', nats.url, env);
    started.push(presence.proc);
    const calls = await startService('calls', 'meetup-calls', 'CALLS_LISTEN', nats.url, env);
    started.push(calls.proc);
    const suffix = Math.random().toString(36).slice(2, 8);
    const gateways = [];
    for (const name of ['gateway-a', 'gateway-b']) {
      const gateway = await startGateway(
        {
          ...env,
          NATS_URL: nats.url,
          PRESENCE_URL: `http://${presence.addr}`,
          CALLS_URL: `http://${calls.addr}`,
          GATEWAY_ID: `${name}-${suffix}`,
        },
        name,
      );
      started.push(gateway.proc);
      gateways.push(gateway);
    }
    // Each gateway must see both gateways' services ready before scenarios start.
    for (const gateway of gateways) await pollUntilOk(`${gateway.url}/readyz`);
    return {
      topology: 'cluster',
      gatewayUrls: gateways.map((g) => g.url),
      processes: started,
      callsGrpcAddr: async () => calls.addr,
      presenceGrpcAddr: async () => presence.addr,
      // Gateways first, so that they drain while the services and NATS are still up.
      stop: async () => {
        for (const proc of [...started].reverse()) await proc.stop();
      },
    };
  } catch (err) {
    for (const proc of [...started].reverse()) await proc.stop();
    throw err;
  }
}

/**
 * Starts the system under test. Resolves once every gateway answers 200 on /readyz.
 * `topology` ('single' | 'cluster') defaults to MEETUP_TOPOLOGY, else 'single'.
 * Returns { gatewayUrls: [urlA, urlB], stop(), logs(since), mark(), ... }.
 */
export async function startSystem({ topology = process.env.MEETUP_TOPOLOGY ?? 'single', env = {} } = {}) {
  let system;
  if (topology === 'single') system = await startSingle(env);
  else if (topology === 'cluster') system = await startCluster(env);
  else throw new Error(`unknown topology ${JSON.stringify(topology)} (single | cluster)`);
  const stop = system.stop;
  return {
    ...system,
    mark: () => system.processes.map((p) => p.mark()),
    /** Output since `marks`; the whole tail of any process that has exited, with how it exited. */
    logs: (marks = []) =>
      system.processes
        .map((p, i) =>
          p.exit ? `!!! ${p.name} EXITED ${JSON.stringify(p.exit)}\n${p.tail(0)}` : p.tail(Math.max(0, (marks[i] ?? 0) - 20)),
        )
        .join('\n'),
    /** Output lines since `marks` that report a panic (a handler must never panic). */
    panics: (marks = []) =>
      system.processes.flatMap((p, i) =>
        p.lines
          .slice(marks[i] ?? 0)
          .filter((l) => /panicked at|stack backtrace:/.test(l.text))
          .map((l) => `[${p.name}] ${l.text}`),
      ),
    /** Describes processes of the system that are no longer running (none: null). */
    dead: () => {
      const dead = system.processes.filter((p) => p.exit).map((p) => `${p.name} exited ${JSON.stringify(p.exit)}`);
      return dead.length ? dead.join('; ') : null;
    },
    stop: async () => {
      await stop();
    },
  };
}
