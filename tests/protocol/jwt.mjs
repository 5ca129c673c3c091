// JWT signing for the auth tests (HS256, RS256, ES256) with node:crypto only, and key pairs as PEM.
import { createHmac, generateKeyPairSync, sign } from 'node:crypto';

const b64url = (data) => Buffer.from(data).toString('base64url');

/** Seconds since the epoch, shifted by `offset` seconds. */
export const nowSecs = (offset = 0) => Math.floor(Date.now() / 1000) + offset;

/**
 * Signs `claims` as a compact JWT. `alg` is HS256 (`key`: the secret) or RS256 / ES256 (`key`:
 * a private KeyObject or PEM). `header` adds or overrides header fields.
 */
export function signJwt(claims, { alg = 'HS256', key, header = {} } = {}) {
  const input = `${b64url(JSON.stringify({ alg, typ: 'JWT', ...header }))}.${b64url(JSON.stringify(claims))}`;
  let signature;
  if (alg === 'HS256') signature = createHmac('sha256', key).update(input).digest();
  else if (alg === 'RS256') signature = sign('sha256', Buffer.from(input), key);
  else if (alg === 'ES256') signature = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  else throw new Error(`signJwt: unsupported alg ${alg}`);
  return `${input}.${b64url(signature)}`;
}

/** Claims valid for an hour for user `sub` (plus `extra`). */
export function claimsFor(sub, extra = {}) {
  return { sub, iat: nowSecs(), exp: nowSecs(3600), ...extra };
}

/** A fresh key pair: { privateKey (KeyObject), publicPem (SPKI PEM text) }. 'rsa' or 'ec' (P-256). */
export function keyPair(type) {
  const options = type === 'rsa' ? { modulusLength: 2048 } : { namedCurve: 'P-256' };
  const { privateKey, publicKey } = generateKeyPairSync(type, options);
  return { privateKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }) };
}
