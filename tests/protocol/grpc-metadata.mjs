// gRPC unary calls with request metadata (e.g. authorization), over node:http2; grpc.mjs cannot send metadata.
import http2 from 'node:http2';

/**
 * Calls `path` on the plaintext gRPC server at `addr` with `message` (encoded protobuf) and
 * `metadata` ({ name: value } request headers). Resolves with { status, message, body }.
 */
export function grpcUnaryWithMetadata(addr, path, message, metadata = {}, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${addr}`);
    const fail = (err) => {
      clearTimeout(timer);
      session.destroy();
      reject(new Error(`gRPC ${path} at ${addr}: ${err.message}`));
    };
    const timer = setTimeout(() => fail(new Error(`no answer within ${timeoutMs}ms`)), timeoutMs);
    session.once('error', fail);
    const req = session.request({ ...metadata, ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
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
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    req.end(frame);
  });
}
