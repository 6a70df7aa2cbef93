# Sourced by the scripts that drive a live server (the fuzzer, the HTTP audit, the typed client,
# the browser test). `start_rollcall [NAME=VALUE …]` starts the built debug binary
# ($ROLLCALL_BIN, by default ${CARGO_TARGET_DIR:-target}/debug/rollcall) on a random
# 127.0.0.1 port with a fresh SQLite database, the given settings and no per-IP limit, waits
# until it listens and sets ROLLCALL_URL (…/graphql), ROLLCALL_PID and ROLLCALL_LOG. The server
# is stopped and its files removed when the sourcing script exits.

rollcall_bin() {
    local bin=${ROLLCALL_BIN:-${CARGO_TARGET_DIR:-target}/debug/rollcall}
    if [[ ! -x $bin ]]; then
        echo "no server binary at $bin (build it with: cargo build --bin rollcall)" >&2
        return 1
    fi
    echo "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
}

stop_rollcall() {
    if [[ -n ${ROLLCALL_PID:-} ]] && kill -0 "$ROLLCALL_PID" 2>/dev/null; then
        kill -TERM "$ROLLCALL_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$ROLLCALL_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$ROLLCALL_PID" 2>/dev/null || true
        wait "$ROLLCALL_PID" 2>/dev/null || true
    fi
    if [[ -n ${ROLLCALL_WORK:-} ]]; then
        rm -rf "$ROLLCALL_WORK"
    fi
}

start_rollcall() {
    local bin
    bin=$(rollcall_bin)
    ROLLCALL_WORK=$(mktemp -d)
    ROLLCALL_LOG=$ROLLCALL_WORK/server.log
    trap stop_rollcall EXIT
    (
        for name in $(compgen -e | grep '^ROLLCALL_' || true); do
            unset "$name"
        done
        export DATABASE_URL="sqlite://$ROLLCALL_WORK/rollcall.db?mode=rwc"
        export ROLLCALL_LISTEN=127.0.0.1:0 ROLLCALL_IP_RATE_LIMIT=0 RUST_LOG=info NO_COLOR=1
        for setting in "$@"; do
            export "${setting?}"
        done
        exec "$bin" serve
    ) 2>"$ROLLCALL_LOG" &
    ROLLCALL_PID=$!
    local addr=
    for _ in $(seq 600); do
        addr=$(sed -n 's|.*listening on http://\([^/]*\)/.*|\1|p' "$ROLLCALL_LOG" | head -n 1)
        [[ -n $addr ]] && break
        if ! kill -0 "$ROLLCALL_PID" 2>/dev/null; then
            echo "the server exited before it listened:" >&2
            cat "$ROLLCALL_LOG" >&2
            return 1
        fi
        sleep 0.1
    done
    if [[ $addr != 127.0.0.1:* ]]; then
        echo "the server did not report a loopback address (got '$addr'):" >&2
        cat "$ROLLCALL_LOG" >&2
        return 1
    fi
    ROLLCALL_URL=http://$addr/graphql
    export ROLLCALL_URL
}

# `finish_rollcall LABEL STATUS` ends a script: it fails if the server panicked, shows the
# server's last log lines on any failure, and exits with the outcome.
finish_rollcall() {
    local label=$1 status=$2
    if grep -q 'panicked' "$ROLLCALL_LOG"; then
        echo "$label: FAILED: the server panicked:" >&2
        grep -B 2 -A 10 'panicked' "$ROLLCALL_LOG" >&2
        status=1
    fi
    if [[ $status -ne 0 ]]; then
        echo "$label: the server's last log lines:" >&2
        tail -n 40 "$ROLLCALL_LOG" >&2
        echo "$label: FAILED" >&2
    else
        echo "$label: passed"
    fi
    exit "$status"
}
