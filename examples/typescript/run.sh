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

bin=${ROLLCALL_BIN:-${CARGO_TARGET_DIR:-target}/debug/rollcall}
if [[ ! -x $bin ]]; then
    echo "typescript: no server binary at $bin (build it with: cargo build --bin rollcall)" >&2
    exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

cd "$example_dir"
npm ci --no-audit --no-fund
npm run generate
npm run typecheck

work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The server, on a fresh SQLite database, with a clean environment for its settings.
(
    for name in $(compgen -e | grep '^ROLLCALL_' || true); do
        unset "$name"
    done
    export DATABASE_URL="sqlite://$work/rollcall.db?mode=rwc"
    export ROLLCALL_LISTEN=127.0.0.1:0
    export ROLLCALL_IP_RATE_LIMIT=0
    export RUST_LOG=info NO_COLOR=1
    exec "$bin" serve
) 2>"$work/server.log" &
server_pid=$!

addr=
for _ in $(seq 600); do
    addr=$(sed -n 's|.*listening on http://\([^/]*\)/.*|\1|p' "$work/server.log" | head -n 1)
    [[ -n $addr ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "typescript: the server exited before it listened:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ $addr != 127.0.0.1:* ]]; then
    echo "typescript: the server did not report a loopback address (got '$addr'):" >&2
    cat "$work/server.log" >&2
    exit 1
fi

if ! ROLLCALL_URL="http://$addr/graphql" npm start; then
    echo "typescript: FAILED; the server's last log lines:" >&2
    tail -n 40 "$work/server.log" >&2
    exit 1
fi
