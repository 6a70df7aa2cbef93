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

browser_dir=$PWD/tests/browser
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
source tests/support/serve.sh
rollcall_bin >/dev/null

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

start_rollcall
# graphiql.mjs takes the server's origin.
export ROLLCALL_URL=${ROLLCALL_URL%/graphql}
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
finish_rollcall browser "$status"
