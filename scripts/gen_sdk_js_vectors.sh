#!/usr/bin/env bash
# Regenerates tests/fixtures/sdk_js_vectors.json with the AWS SDK for JavaScript v3
# CloudFront signer (independent reference for ECDSA P-256 and SHA-256 signing).
# Needs Node >= 18, npm and the openssl CLI. Installs the pinned SDK from
# scripts/node/package-lock.json with `npm ci` (nothing global).
set -euo pipefail
cd "$(dirname "$0")/.."
(cd scripts/node && npm ci --no-audit --no-fund --loglevel=error)
node scripts/node/gen_sdk_js_vectors.mjs
