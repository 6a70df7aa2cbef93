#!/usr/bin/env bash
# The graphql-http package's GraphQL-over-HTTP audits (pinned, installed with npm ci) against a
# live server: fails on any error or warning.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/support/serve.sh

(cd tests/http-audit && npm ci --no-audit --no-fund --silent)
start_rollcall
echo "http audit: rollcall at $ROLLCALL_URL"
(cd tests/http-audit && node audit.mjs)
