#!/usr/bin/env bash
# The typed TypeScript client end to end: installs the pinned packages from the committed lock
# file, generates the operation types from the repository's schema.graphql, type-checks, then
# runs src/main.ts against a rollcall server started here on a random 127.0.0.1 port with a
# fresh SQLite database. A schema change that breaks an operation or the program's use of its
# result fails at generate or typecheck; a server that answers differently fails the run.
#
# Uses the already built server: $ROLLCALL_BIN, by default the debug binary under
# ${CARGO_TARGET_DIR:-target} (relative to the repository root).
set -euo pipefail
example_dir=$(cd "$(dirname "$0")" && pwd)
cd "$example_dir/../.."

source tests/support/serve.sh
# Resolved before leaving the repository root, where a relative default points.
ROLLCALL_BIN=$(rollcall_bin)

cd "$example_dir"
npm ci --no-audit --no-fund
npm run generate
npm run typecheck

start_rollcall ROLLCALL_REFRESH_REUSE_GRACE=1s
status=0
npm start || status=1
finish_rollcall typescript "$status"
