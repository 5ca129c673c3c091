// A minimal gRPC unary client over node:http2 with hand-encoded protobuf (string fields only), for the calls API.
import http2 from 'node:http2';

function varint(n) {
  const bytes = [];
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

/** Encodes a protobuf message whose fields are all strings: { fieldNumber: value }. */
export function encodeStrings(fields) {
  const parts = [];
  for (const [number, value] of Object.entries(fields)) {
    const bytes = Buffer.from(value, 'utf8');
    parts.push(varint((Number(number) << 3) | 2), varint(bytes.length), bytes);
  }
  return Buffer.concat(parts);
}

/**
 * Calls `path` (e.g. "/meetup.calls.v1.CallService/EndCall") on the gRPC server at `addr`
 * (host:port, plaintext HTTP/2), with optional request `metadata` ({ name: value }, e.g.
 * authorization). Resolves with { status, message, body } (status 0 is OK).
 */
export function grpcUnary(addr, path, message, timeoutMs = 5_000, metadata = {}) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${addr}`);
    const fail = (err) => {
      clearTimeout(timer);
      session.destroy();
      reject(new Error(`gRPC ${path} at ${addr}: ${err.message}`));
    };
    const timer = setTimeout(() => fail(new Error(`no answer within ${timeoutMs}ms`)), timeoutMs);
    session.once('error', fail);
    const req = session.request({
      ...metadata,
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    let status = null;
    let statusMessage = '';
    const take = (headers) => {
      if (headers['grpc-status'] !== undefined) status = Number(headers['grpc-status']);
      if (headers['grpc-message'] !== undefined) statusMessage = decodeURIComponent(headers['grpc-message']);
    };
    const chunks = [];
    req.on('response', take);
    req.on('trailers', take);
    req.on('data', (chunk) => chunks.push(chunk));
    req.once('error', fail);
    req.on('end', () => {
      clearTimeout(timer);
      session.close();
      const body = Buffer.concat(chunks);
      resolve({ status, message: statusMessage, body: body.length >= 5 ? body.subarray(5) : body });
    });
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt8(0, 0);
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    req.end(frame);
  });
}
