#!/usr/bin/env bash
# Drives headless Chromium through GraphiQL on a live rollcall server (graphiql.mjs): the page
# loads with no console errors or CSP violations and no request anywhere but the server, a
# query typed into the editor with the owner's token in the Headers tab runs, and the result
# pane shows the owner. Saves the screenshot the README shows (tests/browser/graphiql.png).
#
# Uses the already built server: $ROLLCALL_BIN, by default the debug binary under
# ${CARGO_TARGET_DIR:-target}. Uses Debian's chromium (installed with apt-get when
# /usr/bin/chromium is missing; $CHROMIUM names another) and playwright-core, pinned in
# package-lock.json, which downloads no browser. Traffic goes only to the server it starts on
# 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${CARGO_TARGET_DIR:-target}
bin=${ROLLCALL_BIN:-$target/debug/rollcall}
browser_dir=$PWD/tests/browser
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [[ ! -x $bin ]]; then
    echo "browser: no server binary at $bin (build it with: cargo build --bin rollcall)" >&2
    exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

if [[ ! -x $CHROMIUM ]]; then
    echo "browser: installing Debian's chromium"
    sudo=
    [[ $(id -u) -ne 0 ]] && sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y --no-install-recommends chromium; then
        $sudo apt-get update
        $sudo apt-get install -y --no-install-recommends chromium
    fi
fi

(cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)

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
    export DATABASE_URL="sqlite://$work/browser.db?mode=rwc"
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
        echo "browser: the server exited before it listened:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ $addr != 127.0.0.1:* ]]; then
    echo "browser: the server did not report a loopback address (got '$addr'):" >&2
    cat "$work/server.log" >&2
    exit 1
fi
export ROLLCALL_URL=http://$addr
echo "browser: rollcall listening at $ROLLCALL_URL"

# The owner: the first account registered on an empty database.
export ROLLCALL_USERNAME=ada
ROLLCALL_TOKEN=$(node --input-type=module -e '
const response = await fetch(`${process.env.ROLLCALL_URL}/graphql`, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({
    query: "mutation($input: RegisterInput!) { register(input: $input) { accessToken user { role } } }",
    variables: { input: {
      username: process.env.ROLLCALL_USERNAME,
      email: "ada@example.com",
      password: "violet teapot harbour 42",
    } },
  }),
});
const body = await response.json();
if (body.data?.register?.user?.role !== "OWNER") {
  console.error(`register failed: ${JSON.stringify(body)}`);
  process.exit(1);
}
console.log(body.data.register.accessToken);
')
export ROLLCALL_TOKEN
export SCREENSHOT=$browser_dir/graphiql.png

status=0
(cd "$browser_dir" && timeout --kill-after=10 180 node graphiql.mjs) || status=1
if grep -q 'panicked' "$work/server.log"; then
    echo "browser: FAILED: the server panicked:" >&2
    grep -B 2 -A 10 'panicked' "$work/server.log" >&2
    status=1
fi
if [[ $status -ne 0 ]]; then
    echo "browser: the server's last log lines:" >&2
    tail -n 40 "$work/server.log" >&2
    echo "browser: FAILED" >&2
fi
exit "$status"
