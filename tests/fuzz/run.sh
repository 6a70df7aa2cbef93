#!/usr/bin/env bash
# Fuzzes the GraphQL API of a live rollcall server with schemathesis, from the schema the
# binary prints (`rollcall schema`, what the committed schema.graphql holds): first without
# credentials, then signed in as the owner.
# Fails on any 5xx, on a response that is not a well-formed GraphQL response with an error
# code on every error (tests/fuzz/checks.py), and on a server that dies or panics.
#
# Uses the already built server: $ROLLCALL_BIN, by default the debug binary under
# ${CARGO_TARGET_DIR:-target}. Installs the pinned fuzzer into a venv
# ($ROLLCALL_FUZZ_VENV, by default ${CARGO_TARGET_DIR:-target}/fuzz-venv), reused while
# tests/fuzz/requirements.txt is unchanged. ROLLCALL_FUZZ_SECONDS (default 120) is the
# fuzzing time, split between the two runs; ROLLCALL_FUZZ_SEED repeats a run's data.
# ROLLCALL_FUZZ_DB=postgres fuzzes a server on a fresh PostgreSQL database (created on
# $ROLLCALL_FUZZ_POSTGRES, by default postgres://postgres@127.0.0.1:5432, and dropped at the
# end) instead of SQLite: some input only PostgreSQL refuses.
# Traffic goes only to the server it starts on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${CARGO_TARGET_DIR:-target}
venv=${ROLLCALL_FUZZ_VENV:-$target/fuzz-venv}
seconds=${ROLLCALL_FUZZ_SECONDS:-120}
seed=${ROLLCALL_FUZZ_SEED:-}
fuzz_dir=$PWD/tests/fuzz

source tests/support/serve.sh
bin=$(rollcall_bin)
# The venv, reinstalled only when the pinned requirements change.
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
# Absolute: the fuzzer runs from a temporary directory.
venv=$(cd "$venv" && pwd)
if ! cmp -s "$fuzz_dir/requirements.txt" "$venv/requirements.installed"; then
    "$venv/bin/pip" install --disable-pip-version-check --quiet -r "$fuzz_dir/requirements.txt"
    cp "$fuzz_dir/requirements.txt" "$venv/requirements.installed"
fi

settings=()
case ${ROLLCALL_FUZZ_DB:-sqlite} in
sqlite) ;;
postgres)
    postgres=${ROLLCALL_FUZZ_POSTGRES:-postgres://postgres@127.0.0.1:5432}
    database=rollcall_fuzz_$$_$RANDOM
    psql "$postgres/postgres" -qc "CREATE DATABASE $database"
    settings+=("DATABASE_URL=$postgres/$database")
    ;;
*)
    echo "ROLLCALL_FUZZ_DB is sqlite or postgres" >&2
    exit 2
    ;;
esac
start_rollcall "${settings[@]}"
if [[ -n ${database:-} ]]; then
    # After the server stops, its database goes too.
    trap 'stop_rollcall; psql "$postgres/postgres" -qc "DROP DATABASE IF EXISTS $database" || true' EXIT
fi
# The fuzzer's files live beside the server's and go with them.
work=$ROLLCALL_WORK
server_pid=$ROLLCALL_PID
url=$ROLLCALL_URL
echo "fuzz: rollcall on ${ROLLCALL_FUZZ_DB:-sqlite} listening at $url"
"$bin" schema >"$work/schema.graphql"

# The owner the fuzzer signs in as, and users for it to act on (tests/fuzz/accounts.py).
cp "$fuzz_dir/schemathesis.toml" "$work/schemathesis.toml"
"$venv/bin/python" "$fuzz_dir/accounts.py" "$url" "$work"
token=$(cat "$work/token")

fuzz() {
    local label=$1 budget=$2
    shift 2
    echo "fuzz: $label, ${budget}s"
    # Hypothesis and schemathesis write their files in the working directory: the temp dir.
    (cd "$work" && SCHEMATHESIS_HOOKS="$fuzz_dir/checks.py" \
        timeout --kill-after=10 $((budget + 60)) "$venv/bin/schemathesis" \
        --config-file "$work/schemathesis.toml" run "$work/schema.graphql" --url "$url" \
        --checks rollcall_graphql_response,response_schema_conformance \
        --max-time "$budget" \
        --workers 2 \
        --generation-database none \
        --request-timeout 30 \
        --no-color \
        ${seed:+--seed "$seed"} \
        "$@")
}

status=0
anonymous=$((seconds / 3))
fuzz "without credentials" "$anonymous" || status=1
fuzz "signed in as the owner" "$((seconds - anonymous))" \
    --header "Authorization: Bearer $token" || status=1

# The server must have lived through it, and answer.
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "fuzz: FAILED: the server is no longer running" >&2
    status=1
elif ! "$venv/bin/python" -c 'import sys, urllib.request
sys.exit(urllib.request.urlopen(sys.argv[1], timeout=10).read() != b"ok")' "${url%/graphql}/health"; then
    echo "fuzz: FAILED: the server no longer answers /health" >&2
    status=1
fi
finish_rollcall fuzz "$status"
