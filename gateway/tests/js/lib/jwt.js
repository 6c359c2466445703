// Minimal JWT (JWS compact) signing with node:crypto, enough to mint test
// tokens: HS256 with a shared secret, RS256 with a private key.

import { createHmac, sign } from "node:crypto";

const b64url = (value) => Buffer.from(value).toString("base64url");

/** Seconds since the epoch, `offset` seconds from now. */
export const epoch = (offset = 0) => Math.floor(Date.now() / 1000) + offset;

/**
 * Signs `claims`. `key` is the HMAC secret for HS256 and a private KeyObject or
 * PEM for RS256; `alg: "none"` yields an unsigned token.
 */
export function signJwt(claims, { alg, key, header = {} }) {
  const input = `${b64url(JSON.stringify({ alg, typ: "JWT", ...header }))}.${b64url(JSON.stringify(claims))}`;
  let signature;
  if (alg === "HS256") signature = createHmac("sha256", key).update(input).digest();
  else if (alg === "RS256") signature = sign("sha256", Buffer.from(input), key);
  else if (alg === "none") signature = Buffer.alloc(0);
  else throw new Error(`unsupported alg ${alg}`);
  return `${input}.${b64url(signature)}`;
}
