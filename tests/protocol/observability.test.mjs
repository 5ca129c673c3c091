// Observability: GET /metrics (gateway families and their values as users act, service families), /healthz.
import assert from 'node:assert/strict';
import { EVENT_TIMEOUT_MS, assertAckError, joinCall, protocolSuite, READY_POLL_MS, startCall } from './harness.mjs';

const { scenario, system } = protocolSuite();

/** Parses Prometheus / OpenMetrics text into [{ name, labels, value }]. */
function parse(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** The value of `name` with (at least) `labels`; 0 when absent (counters not yet created). */
function value(samples, name, labels = {}) {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value ?? 0;
}

async function scrape(base) {
  const res = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(res.status, 200, `${base}/metrics`);
  const text = await res.text();
  return { type: res.headers.get('content-type') ?? '', text, samples: parse(text) };
}

/** Polls `${base}/metrics` until `predicate(samples)` holds (gauges settle asynchronously). */
async function waitForMetrics(base, predicate, what) {
  const deadline = Date.now() + EVENT_TIMEOUT_MS;
  for (;;) {
    const { samples } = await scrape(base);
    if (predicate(samples)) return samples;
    if (Date.now() > deadline) {
      const ours = samples.filter((s) => /^meetup_(gateway|presence)_/.test(s.name) && !/latency/.test(s.name));
      throw new Error(`${base}/metrics never satisfied "${what}"; last:\n${ours.map((s) => `${s.name}${JSON.stringify(s.labels)} ${s.value}`).join('\n')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, READY_POLL_MS));
  }
}

/** Where the presence service's metrics are: the gateway (single) or the presence process's METRICS_LISTEN (cluster). */
function presenceMetricsBase(sc) {
  if (system().topology === 'single') return sc.gatewayUrls[0];
  const proc = system().processes.find((p) => p.listening?.has('presence-metrics'));
  assert.ok(proc, 'cluster: no "listening" line for presence-metrics');
  return `http://${proc.listening.get('presence-metrics')}`;
}

scenario('/metrics answers OpenMetrics text with every gateway family; /healthz is ok', async (sc) => {
  const a = await sc.user('a', { gateway: 0 });
  const b = await sc.user('b', { gateway: 0 });
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: { sdp: 'x' } }), { ok: true });
  assertAckError(await a.emitWithAck('join-call', {}), 'invalid-payload');
  const { type, text } = await scrape(sc.gatewayUrls[0]);
  assert.match(type, /^(application\/openmetrics-text|text\/plain)/, 'content-type');
  for (const [family, kind] of [
    ['meetup_gateway_connections', 'gauge'],
    ['meetup_gateway_registered_sockets', 'gauge'],
    ['meetup_gateway_online_users', 'gauge'],
    ['meetup_gateway_live_calls', 'gauge'],
    ['meetup_gateway_events_in', 'counter'],
    ['meetup_gateway_events_out', 'counter'],
    ['meetup_gateway_rejected_events', 'counter'],
    ['meetup_gateway_relay_latency_seconds', 'histogram'],
  ]) {
    assert.match(text, new RegExp(`^# TYPE ${family} ${kind}$`, 'm'), `# TYPE ${family} ${kind}`);
  }
  assert.match(text, /^meetup_gateway_events_in_total\{event="webrtc-offer",outcome="ok"\} \d+$/m);
  assert.match(text, /^meetup_gateway_events_out_total\{event="users-list"\} \d+$/m);
  assert.match(text, /^meetup_gateway_rejected_events_total\{reason="invalid-payload"\} \d+$/m);
  assert.match(text, /^meetup_gateway_relay_latency_seconds_bucket\{le="\+Inf"\} \d+$/m);
  assert.match(text, /^# EOF$/m, 'OpenMetrics ends with # EOF');
  const health = await sc.http('/healthz');
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { status: 'ok' });
});

scenario('gateway metrics move as users connect, register, call, relay, fail and leave', async (sc) => {
  const base = sc.gatewayUrls[0];
  const before = (await scrape(base)).samples;
  const at = (name, labels) => value(before, name, labels);
  const lurker = await sc.connect('lurker', { gateway: 0 });
  await waitForMetrics(base, (s) => value(s, 'meetup_gateway_connections') === at('meetup_gateway_connections') + 1, 'one more connection');
  const a = await sc.user('a', { gateway: 0 });
  const b = await sc.user('b', { gateway: 0 });
  await waitForMetrics(
    base,
    (s) =>
      value(s, 'meetup_gateway_connections') === at('meetup_gateway_connections') + 3 &&
      value(s, 'meetup_gateway_registered_sockets') === at('meetup_gateway_registered_sockets') + 2 &&
      value(s, 'meetup_gateway_online_users') === at('meetup_gateway_online_users') + 2,
    'three sockets, two registered, two users online',
  );
  const callId = sc.id('call');
  await startCall(a, callId, [b]);
  await joinCall(b, callId);
  await waitForMetrics(base, (s) => value(s, 'meetup_gateway_live_calls') === at('meetup_gateway_live_calls') + 1, 'one live call');
  assert.deepEqual(await a.emitWithAck('webrtc-offer', { callId, targetUserId: b.userId, offer: { sdp: 'x' } }), { ok: true });
  assertAckError(await lurker.emitWithAck('user-joined', { id: 42 }), 'invalid-payload');
  const now = (await scrape(base)).samples;
  const delta = (name, labels) => value(now, name, labels) - at(name, labels);
  assert.equal(delta('meetup_gateway_events_in_total', { event: 'user-joined', outcome: 'ok' }), 2, 'user-joined ok');
  assert.equal(delta('meetup_gateway_events_in_total', { event: 'user-joined', outcome: 'invalid-payload' }), 1);
  assert.equal(delta('meetup_gateway_events_in_total', { event: 'start-call', outcome: 'ok' }), 1);
  assert.equal(delta('meetup_gateway_events_in_total', { event: 'webrtc-offer', outcome: 'ok' }), 1);
  assert.equal(delta('meetup_gateway_rejected_events_total', { reason: 'invalid-payload' }), 1);
  assert.equal(delta('meetup_gateway_relay_latency_seconds_count'), 1, 'one relay timed');
  assert.equal(value(now, 'meetup_gateway_relay_latency_seconds_bucket', { le: '+Inf' }), value(now, 'meetup_gateway_relay_latency_seconds_count'));
  assert.ok(delta('meetup_gateway_events_out_total', { event: 'incoming-call' }) >= 1, 'incoming-call counted out');
  assert.ok(delta('meetup_gateway_events_out_total', { event: 'users-list' }) >= 2, 'users-list counted out');
  // In a cluster the other gateway mirrors the same cluster-wide counts.
  const other = sc.gatewayUrls[1];
  if (other !== base) {
    await waitForMetrics(other, (s) => value(s, 'meetup_gateway_live_calls') >= 1 && value(s, 'meetup_gateway_online_users') >= 2, 'the other gateway sees the users and the call');
  }
  sc.closeAll();
  await waitForMetrics(
    base,
    (s) =>
      ['meetup_gateway_connections', 'meetup_gateway_registered_sockets', 'meetup_gateway_online_users', 'meetup_gateway_live_calls'].every(
        (name) => value(s, name) === at(name),
      ),
    'every gauge back to its value before the scenario',
  );
});

scenario('service metrics: gRPC calls served by method and code, presence online users', async (sc) => {
  const base = presenceMetricsBase(sc);
  const register = { method: '/meetup.presence.v1.PresenceService/RegisterSession', code: '0' };
  const before = (await scrape(base)).samples;
  await sc.user('a');
  await sc.user('b');
  const after = await waitForMetrics(
    base,
    (s) => value(s, 'meetup_presence_online_users') === value(before, 'meetup_presence_online_users') + 2,
    'two more users online in presence',
  );
  assert.equal(value(after, 'meetup_grpc_server_calls_total', register) - value(before, 'meetup_grpc_server_calls_total', register), 2, 'RegisterSession calls');
  const { text } = await scrape(base);
  assert.match(text, /^# TYPE meetup_grpc_server_calls counter$/m);
  assert.match(text, /^# TYPE meetup_presence_online_users gauge$/m);
});
