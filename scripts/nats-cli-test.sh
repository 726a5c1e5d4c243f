#!/usr/bin/env bash
# Runs README.md's "Quick start with the `nats` tool" as a new user would:
# installs the real nats tool (natscli v0.5.0), starts `fanout dev` (built
# from this tree, on a free port, data in a temporary directory), then runs
# every `nats ...` command of that section's code block exactly as written
# there, with the batch id of the submit reply in place of `6b0c...`, and
# checks each output. Edit the README and this script together.
#
# Then the same commands as the `client` user of the accounts layout the
# compose files ship (a nats-server, a coordinator and a worker built from
# this tree, with deploy/nats/auth.conf): the `nats req` commands as
# written, the JetStream reads with `--js-domain fanout` (docs/security.md),
# and the batch-state read refused (that bucket is not exported to clients).
#
# Usage: bash scripts/nats-cli-test.sh   (needs Go and the module proxy)
set -euo pipefail
cd "$(dirname "$0")/.."

NATSCLI_VERSION=v0.5.0
PLACEHOLDER='6b0c...'

work=$(mktemp -d)
dev_pid=""
pids=()
cleanup() {
  local pid
  for pid in $dev_pid "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "nats-cli-test: FAIL: $*" >&2
  local log
  for log in dev nats coordinator worker; do
    if [ -f "$work/$log.log" ]; then
      echo "--- $log log:" >&2
      tail -n 50 "$work/$log.log" >&2
    fi
  done
  exit 1
}

echo "== install nats $NATSCLI_VERSION"
GOBIN="$work/bin" go install "github.com/nats-io/natscli/nats@$NATSCLI_VERSION"
export PATH="$work/bin:$PATH"
# No saved nats context or credentials of this machine may change where
# and how the tool connects: its contexts live in $XDG_CONFIG_HOME/nats,
# set to an empty directory for the nats commands below.
mkdir -p "$work/config"
unset NATS_CONTEXT NATS_CREDS NATS_NKEY NATS_USER NATS_PASSWORD NATS_TOKEN NATS_CERT NATS_KEY NATS_CA NATS_INBOX_PREFIX FANOUT_PREFIX || true

echo "== fanout dev"
go build -o "$work/fanout" ./cmd/fanout
"$work/fanout" dev --port 0 --data "$work/data" >"$work/dev.log" 2>&1 &
dev_pid=$!
url=""
for _ in $(seq 1 600); do # up to 60s for the line with the server's URL
  url=$(grep -o 'nats://127\.0\.0\.1:[0-9]*' "$work/dev.log" | head -n 1 || true)
  [ -n "$url" ] && break
  kill -0 "$dev_pid" 2>/dev/null || fail "fanout dev exited"
  sleep 0.1
done
[ -n "$url" ] || fail "fanout dev did not print its URL within 60s"
# The README's commands use the default server; this one is on a free port.
export NATS_URL="$url"
echo "fanout dev at $NATS_URL"

echo "== the README's commands"
section=$(awk '/^## Quick start with the `nats` tool/ { on = 1; next } /^## / { on = 0 } on' README.md)
[ -n "$section" ] || fail "README.md has no section \"Quick start with the \`nats\` tool\""
block=$(printf '%s\n' "$section" | awk '/^```sh/ { on = 1; next } /^```/ { on = 0 } on')
# The commands, without their trailing comments.
mapfile -t commands < <(printf '%s\n' "$block" | grep '^nats ' | sed -E 's/[[:space:]]+#.*$//')
[ "${#commands[@]}" -ge 5 ] || fail "found ${#commands[@]} nats commands in the section, want at least 5"

# expect OUTPUT WHAT PATTERN: the output has a line matching PATTERN
# (an extended regular expression).
expect() {
  printf '%s\n' "$1" | grep -Eq -- "$3" || fail "$2: no match for /$3/ in:
$1"
}

# run_commands MODE runs the README's commands and checks their outputs.
# MODE readme: as written. MODE client: as the client user of the accounts
# layout: JetStream reads with --js-domain fanout, the batch state refused.
run_commands() {
  local mode=$1 shown cmd out
  batch=""
  seen=""
  for shown in "${commands[@]}"; do
    cmd=$shown
    if [[ $cmd == *"$PLACEHOLDER"* ]]; then
      [ -n "$batch" ] || fail "'$shown' uses the batch id before a submit gave one"
      cmd=${cmd//"$PLACEHOLDER"/$batch}
    fi
    if [ "$mode" = client ] && [[ $cmd == "nats sub "* ]]; then
      cmd="nats --js-domain fanout ${cmd#nats }"
    fi
    if [ "$mode" = client ] && [[ $cmd == "nats kv get FANOUT_BATCHES "* ]]; then
      echo "\$ $cmd   (must be refused: the client account does not import the batch state)"
      if out=$(XDG_CONFIG_HOME="$work/config" timeout 60 nats --js-domain fanout --timeout 2s ${cmd#nats } 2>&1); then
        fail "'$cmd' as the client user succeeded:
$out"
      fi
      seen+=" state"
      continue
    fi
    echo "\$ $cmd"
    if [[ $cmd == "nats req fanout.submit "* ]]; then
      # As the client user the worker starts with the test: the submit can
      # come before its consumer exists (unknown_activity), so it is asked
      # again for up to 30s.
      for _ in $(seq 1 60); do
        out=$(XDG_CONFIG_HOME="$work/config" timeout 60 bash -c "$cmd" 2>&1) || fail "'$cmd' exited with status $?:
$out"
        if [ "$mode" != client ] || printf '%s\n' "$out" | grep -q '"status":"running"'; then
          break
        fi
        sleep 0.5
      done
    else
      out=$(XDG_CONFIG_HOME="$work/config" timeout 60 bash -c "$cmd" 2>&1) || fail "'$cmd' exited with status $?:
$out"
    fi
    printf '%s\n' "$out" | sed 's/^/    /'
    case "$cmd" in
    "nats req fanout.submit "*)
      expect "$out" submit '"batch_id":"[^"]+","total":2,"status":"running"'
      batch=$(printf '%s\n' "$out" | grep -Eo '"batch_id":"[^"]+"' | head -n 1 | cut -d'"' -f4)
      seen+=" submit"
      ;;
    "nats req fanout.status "*)
      expect "$out" status "\"batch_id\":\"$batch\",\"activity\":\"sha256\",\"status\":\"(running|completed)\",\"total\":2"
      seen+=" status"
      ;;
    "nats sub 'fanout.result."* | "nats --js-domain fanout sub 'fanout.result."*)
      for item in 0 1; do
        expect "$out" results "subject: fanout\\.result\\.$batch\\.$item"
        expect "$out" results "^\\{\"batch_id\":\"$batch\",\"item\":$item,\"ok\":true,\"output\":\\{\"sha256\":\"[0-9a-f]{64}\"\\}"
      done
      seen+=" results"
      ;;
    "nats sub 'fanout.done."* | "nats --js-domain fanout sub 'fanout.done."*)
      expect "$out" aggregate "stream: FANOUT_DONE"
      expect "$out" aggregate "^\\{\"batch_id\":\"$batch\",\"activity\":\"sha256\",\"status\":\"completed\",\"total\":2,\"succeeded\":2,\"failed\":0"
      expect "$out" aggregate '"results":\[\{"item":0,"ok":true,"output":\{"sha256":"ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"\}\},\{"item":1,"ok":true'
      seen+=" aggregate"
      ;;
    "nats kv get FANOUT_BATCHES "*)
      expect "$out" "batch state" "^\\{\"batch_id\":\"$batch\",\"activity\":\"sha256\",\"status\":\"completed\",\"total\":2,\"succeeded\":2,\"failed\":0,"
      expect "$out" "batch state" '"last_seq":[1-9]'
      seen+=" state"
      ;;
    *)
      echo "    (no output check for this command: it exited 0)"
      ;;
    esac
  done
  [ "$seen" = " submit status results aggregate state" ] ||
    fail "the section's commands checked were:$seen; want submit status results aggregate state, in that order"
}

run_commands readme
kill "$dev_pid" 2>/dev/null || true
wait "$dev_pid" 2>/dev/null || true
dev_pid=""

echo "== the same as the client user of the accounts layout (deploy/nats/auth.conf)"
go build -o "$work/nats-server" github.com/nats-io/nats-server/v2
go build -o "$work/coordinator" ./cmd/coordinator
go build -o "$work/worker" ./cmd/worker
# Every password variable the file reads (one per user), random.
for var in $(grep -Eo '\$FANOUT_[A-Z_]+_PASSWORD' deploy/nats/auth.conf | sort -u | tr -d '$'); do
  export "$var=test-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
done
mkdir -p "$work/accounts"
cp deploy/nats/auth.conf "$work/accounts/auth.conf"
cat >"$work/accounts/nats.conf" <<CONF
listen: 127.0.0.1:-1
jetstream { store_dir: "$work/accounts/data" }
include "auth.conf"
CONF
"$work/nats-server" -c "$work/accounts/nats.conf" >"$work/nats.log" 2>&1 &
pids+=($!)
url=""
for _ in $(seq 1 600); do
  url=$(grep -Eo 'Listening for client connections on 127\.0\.0\.1:[0-9]+' "$work/nats.log" | grep -Eo '[0-9]+$' | head -n 1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || fail "nats-server with the accounts layout did not start: $(cat "$work/nats.log")"
export NATS_URL="nats://127.0.0.1:$url"
echo "nats-server with the accounts layout at $NATS_URL"
NATS_USER=coordinator NATS_PASSWORD="$FANOUT_COORDINATOR_PASSWORD" NATS_INBOX_PREFIX=_INBOX_fanout_coordinator \
  "$work/coordinator" >"$work/coordinator.log" 2>&1 &
pids+=($!)
NATS_USER=worker NATS_PASSWORD="$FANOUT_WORKER_PASSWORD" NATS_JS_DOMAIN=fanout \
  "$work/worker" >"$work/worker.log" 2>&1 &
pids+=($!)
export NATS_USER=client NATS_PASSWORD="$FANOUT_CLIENT_PASSWORD"
run_commands client

echo "nats-cli-test: ok: ${#commands[@]} commands of README.md's quick start work as shown with nats $NATSCLI_VERSION, and as the client user of the accounts layout"
