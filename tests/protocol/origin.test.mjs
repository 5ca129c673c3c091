// Origin check: only pages of the allowed origins (CLIENT_URL, default http://localhost:3000) may open a
// socket, over websocket and long-polling; requests without Origin (services, native apps) pass.
import assert from 'node:assert/strict';
import http from 'node:http';
import { connect, protocolSuite, startSystem } from './harness.mjs';

// The gateway's default CLIENT_URL, not the suite's.
const { scenario } = protocolSuite({ env: { CLIENT_URL: undefined } });

const DEFAULT_ORIGIN = 'http://localhost:3000';
const REFUSED = ['http://evil.example', 'http://localhost:3000.evil.example', 'http://localhost:30001', 'null', 'https://localhost:3000'];
const TRANSPORTS = ['websocket', 'polling'];

/** Connects with `Origin: origin` (absent when null) over `transport`. */
function connectFrom(url, origin, transport) {
  const extraHeaders = origin === null ? {} : { Origin: origin };
  return connect(url, { label: `${transport} from ${origin}`, transport, extraHeaders });
}

/** The HTTP status of a bare Engine.IO polling handshake from `origin`. */
async function pollingHandshakeStatus(url, origin) {
  const res = await fetch(`${url}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: origin }, signal: AbortSignal.timeout(5_000) });
  await res.arrayBuffer();
  return res.status;
}

/** The HTTP status a websocket upgrade from `origin` gets (101 when it is taken). */
function upgradeStatus(url, origin) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}/socket.io/?EIO=4&transport=websocket`, {
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
        Origin: origin,
      },
      timeout: 5_000,
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy(new Error('no answer to the upgrade')));
    req.on('error', reject);
    req.end();
  });
}

async function refusedCount(url) {
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const line = (await res.text()).split('\n').find((l) => l.startsWith('meetup_gateway_origin_refused_total '));
  return Number(line?.split(' ')[1] ?? NaN);
}

scenario('the default CLIENT_URL: its origin connects over websocket and long-polling, on every gateway', async (sc) => {
  for (const url of sc.gatewayUrls) {
    for (const transport of TRANSPORTS) {
      const client = await connectFrom(url, DEFAULT_ORIGIN, transport);
      assert.ok(client.connected, `${transport} from ${DEFAULT_ORIGIN}`);
      client.close();
    }
  }
});

scenario('other origins are refused on both transports with 403, before any socket exists, and counted', async (sc) => {
  for (const url of sc.gatewayUrls) {
    const before = await refusedCount(url);
    for (const origin of REFUSED) {
      for (const transport of TRANSPORTS) {
        await assert.rejects(connectFrom(url, origin, transport), /connect_error/, `${transport} from ${origin} refused`);
      }
      assert.equal(await pollingHandshakeStatus(url, origin), 403, `polling handshake from ${origin}`);
      assert.equal(await upgradeStatus(url, origin), 403, `websocket upgrade from ${origin}`);
    }
    assert.ok((await refusedCount(url)) >= before + REFUSED.length * 4, 'gateway_origin_refused_total counts the refusals');
    assert.equal(await upgradeStatus(url, DEFAULT_ORIGIN), 101, 'the allowed origin upgrades');
  }
  // Nobody got in: no user, and the gateways serve everyone else as before.
  const status = await sc.status();
  assert.equal(status.onlineUsers, sc.baseline.onlineUsers);
  const ok = await sc.user('after');
  assert.ok(ok.connected);
});

scenario('a request without Origin (a service, a native app) connects on both transports', async (sc) => {
  for (const url of sc.gatewayUrls) {
    for (const transport of TRANSPORTS) {
      const client = await connectFrom(url, null, transport);
      assert.ok(client.connected, `${transport} without Origin`);
      client.close();
    }
  }
});

scenario("the gateway's own origin (its /demo page) connects", async (sc) => {
  for (const url of sc.gatewayUrls) {
    for (const transport of TRANSPORTS) {
      const client = await connectFrom(url, new URL(url).origin, transport);
      assert.ok(client.connected, `${transport} from the gateway's own origin`);
      client.close();
    }
  }
});

scenario('a list of origins allows each, and https://*.example.com its subdomains only', async () => {
  const system = await startSystem({ env: { CLIENT_URL: 'http://a.example,http://b.example:8080,https://*.example.com' } });
  try {
    for (const url of system.gatewayUrls) {
      for (const transport of TRANSPORTS) {
        for (const origin of ['http://a.example', 'http://b.example:8080', 'https://a.example.com', 'https://x.y.example.com']) {
          const client = await connectFrom(url, origin, transport);
          assert.ok(client.connected, `${transport} from ${origin}`);
          client.close();
        }
        for (const origin of ['https://example.com', 'https://example.com.evil.net', 'http://b.example', 'http://a.example.com', DEFAULT_ORIGIN]) {
          await assert.rejects(connectFrom(url, origin, transport), /connect_error/, `${transport} from ${origin} refused`);
        }
      }
    }
  } catch (err) {
    console.error(system.logs());
    throw err;
  } finally {
    await system.stop();
  }
});
