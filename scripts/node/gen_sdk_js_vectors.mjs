#!/usr/bin/env node
// Generates tests/fixtures/sdk_js_vectors.json: CloudFront signed URLs and cookies made by
// the AWS SDK for JavaScript v3 (`@aws-sdk/cloudfront-signer`, pinned in package.json and
// package-lock.json), an implementation independent of cdnsign, for the modern signing
// modes: ECDSA P-256 keys and SHA-256 (`Hash-Algorithm=SHA256`, `CloudFront-Hash-Algorithm`).
//
// What the SDK does (read from its source, version pinned here): it signs the policy with
// Node's `crypto.createSign("RSA-SHA1" | "RSA-SHA256")`. With an EC key that yields an ECDSA
// signature in DER (ASN.1 `SEQUENCE { r INTEGER, s INTEGER }`, Node's default
// `dsaEncoding`), the same bytes `openssl dgst -sha256 -sign` writes and what CloudFront's
// documentation prescribes. `algorithm: "SHA256"` adds `Hash-Algorithm=SHA256` after the
// other URL parameters and a `CloudFront-Hash-Algorithm=SHA256` cookie.
//
// Every signature written is checked twice before the file is written: with Node's
// `crypto.verify` and with the `openssl` CLI (`openssl dgst -<hash> -verify pub.pem`).
// Any failure aborts, so a written file is a checked file. ECDSA signatures are randomized:
// regenerating changes their bytes (the RSA ones are deterministic and do not change).
//
// Run from the repository root:  bash scripts/gen_sdk_js_vectors.sh

import { execFileSync } from "node:child_process";
import { createPublicKey, verify } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { getSignedCookies, getSignedUrl } from "@aws-sdk/cloudfront-signer";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..", "..");
const sdkVersion = JSON.parse(
  readFileSync(join(here, "node_modules/@aws-sdk/cloudfront-signer/package.json"), "utf8"),
).version;

const KEYS = {
  "ec-p256": {
    private: "tests/fixtures/keys/ec-p256.pem",
    public: "tests/fixtures/keys/ec-p256.pub.pem",
    key_pair_id: "KECP256TESTONLY",
    type: "ecdsa_p256",
  },
  "rsa-test-only": {
    private: "config/dev-keys/TEST-ONLY-cloudfront.pem",
    public: "config/dev-keys/TEST-ONLY-cloudfront.pub.pem",
    key_pair_id: "K2JCJMDEHXQW5F",
    type: "rsa",
  },
};

const HOST = "https://d111111abcdef8.cloudfront.net";

// Custom policies are passed to the SDK as exact JSON text in botocore's (and cdnsign's)
// condition order, so the RSA cases can be compared byte for byte with cdnsign's output.
function customPolicy({ resource, expires, ip, notBefore }) {
  let cond = `"DateLessThan":{"AWS:EpochTime":${expires}}`;
  if (ip) cond += `,"IpAddress":{"AWS:SourceIp":"${ip}"}`;
  if (notBefore) cond += `,"DateGreaterThan":{"AWS:EpochTime":${notBefore}}`;
  return `{"Statement":[{"Resource":"${resource}","Condition":{${cond}}}]}`;
}

const CASES = [
  // ECDSA P-256 with SHA-256: the modern mode.
  { name: "ecdsa-sha256-canned", key: "ec-p256", algorithm: "SHA256", url: `${HOST}/hls/abc/index.m3u8`, expires: 1767225600 },
  { name: "ecdsa-sha256-canned-existing-query", key: "ec-p256", algorithm: "SHA256", url: `${HOST}/video/movie.mp4?a=1&b=2`, expires: 2000000000 },
  { name: "ecdsa-sha256-custom-wildcard", key: "ec-p256", algorithm: "SHA256", url: `${HOST}/hls/abc/seg-00001.ts`, resource: `${HOST}/hls/abc/*`, expires: 1893456000 },
  { name: "ecdsa-sha256-custom-ip-and-start", key: "ec-p256", algorithm: "SHA256", url: `${HOST}/downloads/app.tar.gz`, resource: `${HOST}/downloads/app.tar.gz`, expires: 2000000000, ip: "192.0.2.0/24", notBefore: 1700000000 },
  // ECDSA P-256 with CloudFront's default digest (SHA-1, no Hash-Algorithm parameter).
  { name: "ecdsa-sha1-canned", key: "ec-p256", algorithm: undefined, url: `${HOST}/images/photo.jpg`, expires: 1767225600 },
  { name: "ecdsa-sha1-custom-wildcard", key: "ec-p256", algorithm: undefined, url: `${HOST}/live/a/seg1.ts`, resource: `${HOST}/live/*`, expires: 2000000000 },
  // RSA with SHA-256: deterministic, so the signatures are compared byte for byte.
  { name: "rsa-sha256-canned", key: "rsa-test-only", algorithm: "SHA256", url: `${HOST}/hls/abc/index.m3u8`, expires: 1767225600 },
  { name: "rsa-sha256-canned-existing-query", key: "rsa-test-only", algorithm: "SHA256", url: `${HOST}/search?q=hello%20world&lang=en`, expires: 2000000000 },
  { name: "rsa-sha256-custom-wildcard", key: "rsa-test-only", algorithm: "SHA256", url: `${HOST}/hls/abc/seg-00001.ts`, resource: `${HOST}/hls/abc/*`, expires: 1893456000 },
  { name: "rsa-sha256-custom-ip-and-start", key: "rsa-test-only", algorithm: "SHA256", url: `${HOST}/downloads/app.tar.gz`, resource: `${HOST}/downloads/app.tar.gz`, expires: 2000000000, ip: "198.51.100.7/32", notBefore: 1700000000 },
];

const CF_TO_STD = { "-": "+", _: "=", "~": "/" };
const cfDecode = (s) => Buffer.from(s.replace(/[-_~]/g, (c) => CF_TO_STD[c]), "base64");

function queryParams(signedUrl) {
  const q = signedUrl.slice(signedUrl.indexOf("?") + 1);
  const out = {};
  for (const pair of q.split("&")) {
    const i = pair.indexOf("=");
    out[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return out;
}

const tmp = mkdtempSync(join(tmpdir(), "cdnsign-vectors-"));
function opensslVerify(hash, pubPath, message, signature) {
  const msg = join(tmp, "msg");
  const sig = join(tmp, "sig");
  writeFileSync(msg, message);
  writeFileSync(sig, signature);
  const out = execFileSync("openssl", ["dgst", `-${hash}`, "-verify", pubPath, "-signature", sig, msg], {
    encoding: "utf8",
  });
  return out.trim() === "Verified OK";
}

function check(cond, what) {
  if (!cond) {
    rmSync(tmp, { recursive: true, force: true });
    console.error(`gen_sdk_js_vectors: check failed: ${what}`);
    process.exit(1);
  }
}

const cases = [];
for (const c of CASES) {
  const key = KEYS[c.key];
  const privateKey = readFileSync(join(root, key.private), "utf8");
  const pubPath = join(root, key.public);
  const publicKey = createPublicKey(readFileSync(pubPath));
  const hash = c.algorithm === "SHA256" ? "sha256" : "sha1";
  const dateLessThan = new Date(c.expires * 1000).toISOString();
  const custom = c.resource !== undefined;
  const policy = custom
    ? customPolicy(c)
    : `{"Statement":[{"Resource":"${c.url}","Condition":{"DateLessThan":{"AWS:EpochTime":${c.expires}}}}]}`;
  const common = { keyPairId: key.key_pair_id, privateKey, ...(c.algorithm ? { algorithm: c.algorithm } : {}) };
  const signedUrl = custom
    ? getSignedUrl({ url: c.url, policy, ...common })
    : getSignedUrl({ url: c.url, dateLessThan, ...common });
  const cookies = custom
    ? getSignedCookies({ policy, ...common })
    : getSignedCookies({ url: c.url, dateLessThan, ...common });

  // Check the SDK's output against the policy we expect it to have signed.
  const params = queryParams(signedUrl);
  check(signedUrl.startsWith(c.url + (c.url.includes("?") ? "&" : "?")), `${c.name}: base URL kept`);
  if (custom) {
    check(cfDecode(params.Policy).toString("utf8") === policy, `${c.name}: Policy parameter`);
  } else {
    check(params.Expires === String(c.expires), `${c.name}: Expires parameter`);
  }
  check(params["Key-Pair-Id"] === key.key_pair_id, `${c.name}: Key-Pair-Id`);
  check(params["Hash-Algorithm"] === c.algorithm, `${c.name}: Hash-Algorithm parameter`);
  check(cookies["CloudFront-Hash-Algorithm"] === c.algorithm, `${c.name}: CloudFront-Hash-Algorithm cookie`);
  for (const sigB64 of [params.Signature, cookies["CloudFront-Signature"]]) {
    const sig = cfDecode(sigB64);
    check(verify(hash, Buffer.from(policy), publicKey, sig), `${c.name}: node crypto.verify`);
    check(opensslVerify(hash, pubPath, policy, sig), `${c.name}: openssl dgst -verify`);
    if (key.type === "ecdsa_p256") {
      // DER SEQUENCE, not the 64-byte raw r||s (IEEE P1363) form.
      check(sig[0] === 0x30 && sig[1] === sig.length - 2 && sig.length <= 72, `${c.name}: DER ECDSA signature`);
    }
  }

  cases.push({
    name: c.name,
    key: c.key,
    key_type: key.type,
    key_pair_id: key.key_pair_id,
    algorithm: c.algorithm ?? "SHA1",
    kind: custom ? "custom" : "canned",
    url: c.url,
    resource: custom ? c.resource : null,
    expires: c.expires,
    not_before: c.notBefore ?? null,
    ip: c.ip ?? null,
    policy,
    signed_url: signedUrl,
    cookies,
    node_verified: true,
    openssl_verified: true,
  });
}
rmSync(tmp, { recursive: true, force: true });

const openssl = execFileSync("openssl", ["version"], { encoding: "utf8" }).trim();
const doc = {
  generator: "scripts/node/gen_sdk_js_vectors.mjs",
  reference: `@aws-sdk/cloudfront-signer ${sdkVersion} on Node ${process.versions.node}; checked with ${openssl}`,
  keys: Object.fromEntries(Object.entries(KEYS).map(([k, v]) => [k, { private: v.private, public: v.public, key_pair_id: v.key_pair_id, type: v.type }])),
  notes: [
    "ECDSA signatures are DER (SEQUENCE of two INTEGERs), randomized: compare by verifying, never by bytes.",
    "RSA PKCS#1 v1.5 signatures are deterministic: the RSA cases compare byte for byte.",
    "Signature and Policy use CloudFront base64 (+ to -, = to _, / to ~).",
    "algorithm SHA256 adds Hash-Algorithm=SHA256 (URL, after Key-Pair-Id/Signature) and a CloudFront-Hash-Algorithm=SHA256 cookie; SHA1 adds neither.",
    "The SDK orders URL parameters Expires|Policy, Key-Pair-Id, Signature, Hash-Algorithm; CloudFront does not depend on the order.",
  ],
  cases,
};
const out = join(root, "tests/fixtures/sdk_js_vectors.json");
writeFileSync(out, JSON.stringify(doc, null, 2) + "\n");
console.log(`wrote ${cases.length} cases to ${out}`);
