#!/usr/bin/env bash
# Runs README.md's "Quick start with the `nats` tool" as a new user would:
# every command line of that section's code block, in order, exactly as
# written there (the batch id of the submit reply in place of `6b0c...`):
# it installs the real nats tool (natscli v0.5.0), builds ./fanout, starts
# `./fanout dev &` and waits for it as the block says. Two variables keep
# the run off shared ground: FANOUT_DEV_PORT and FANOUT_DEV_DATA put
# `fanout dev` on a free port and a temporary data directory, and NATS_URL
# points the nats tool and ./fanout there, as the README says to do when
# 4222 is taken. Each output is checked. Edit the README and this script
# together.
#
# Then the block's nats commands as the `client` user of the accounts
# layout the compose files ship (a nats-server, a coordinator and a worker
# built from this tree, with deploy/nats/auth.conf): the `nats req`
# commands as written, the JetStream reads with `--js-domain fanout`
# (docs/security.md), and the batch-state read refused (that bucket is not
# exported to clients).
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

# No saved nats context or credentials of this machine may change where
# and how the tool connects: its contexts live in $XDG_CONFIG_HOME/nats,
# set to an empty directory for the commands below.
mkdir -p "$work/config" "$work/bin"
unset NATS_CONTEXT NATS_CREDS NATS_NKEY NATS_USER NATS_PASSWORD NATS_TOKEN NATS_CERT NATS_KEY NATS_CA NATS_INBOX_PREFIX FANOUT_PREFIX || true
export GOBIN="$work/bin" PATH="$work/bin:$PATH" XDG_CONFIG_HOME="$work/config"

# A free port: one nobody listens on now (fanout dev fails at once if it
# is taken meanwhile, and this script then fails saying so).
port=""
for _ in $(seq 1 50); do
  p=$((20000 + RANDOM % 20000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || fail "found no free port"
export FANOUT_DEV_PORT="$port" FANOUT_DEV_DATA="$work/data" NATS_URL="nats://127.0.0.1:$port"

# Files the block makes in the repository's root, removed at the end
# unless they were there before.
made=()
for f in fanout batch.json; do [ -e "$f" ] || made+=("$f"); done

echo "== the README's commands (nats $NATSCLI_VERSION, fanout dev at $NATS_URL)"
section=$(awk '/^## Quick start with the `nats` tool/ { on = 1; next } /^## / { on = 0 } on' README.md)
[ -n "$section" ] || fail "README.md has no section \"Quick start with the \`nats\` tool\""
block=$(printf '%s\n' "$section" | awk '/^```sh/ { on = 1; next } /^```/ { on = 0 } on')
# The commands: every line that is not blank or a comment, without its
# trailing comment.
mapfile -t commands < <(printf '%s\n' "$block" | grep -Ev '^[[:space:]]*(#|$)' | sed -E 's/[[:space:]]+#.*$//')
[ "${#commands[@]}" -ge 10 ] || fail "found ${#commands[@]} commands in the section, want at least 10"

# expect OUTPUT WHAT PATTERN: the output has a line matching PATTERN
# (an extended regular expression).
expect() {
  printf '%s\n' "$1" | grep -Eq -- "$3" || fail "$2: no match for /$3/ in:
$1"
}

batch=""
seen=""
for shown in "${commands[@]}"; do
  cmd=$shown
  if [[ $cmd == *"$PLACEHOLDER"* ]]; then
    [ -n "$batch" ] || fail "'$shown' uses the batch id before a submit gave one"
    cmd=${cmd//"$PLACEHOLDER"/$batch}
  fi
  echo "\$ $cmd"
  if [[ $cmd == *"&" ]]; then
    # In the background, as the README has it; its output to a log.
    eval "${cmd%&} >\"$work/dev.log\" 2>&1 &"
    dev_pid=$!
    seen+=" dev"
    continue
  fi
  out=$(timeout 300 bash -c "$cmd" 2>&1) || fail "'$cmd' exited with status $?:
$out"
  printf '%s\n' "$out" | sed 's/^/    /'
  case "$cmd" in
  "go install "*)
    command -v nats >/dev/null || fail "nats is not on PATH after '$cmd'"
    seen+=" install"
    ;;
  "./fanout ping "*)
    expect "$out" ping "a coordinator answers on nats://127\.0\.0\.1:$port"
    expect "$(cat "$work/dev.log")" "fanout dev" "^fanout dev: ready at nats://127\.0\.0\.1:$port"
    seen+=" ready"
    ;;
  "nats req fanout.submit '"*)
    expect "$out" submit '"batch_id":"[^"]+","total":2,"status":"running"'
    batch=$(printf '%s\n' "$out" | grep -Eo '"batch_id":"[^"]+"' | head -n 1 | cut -d'"' -f4)
    seen+=" submit"
    ;;
  "nats req fanout.status "*)
    expect "$out" status "\"batch_id\":\"$batch\",\"activity\":\"sha256\",\"status\":\"(running|completed)\",\"total\":2"
    seen+=" status"
    ;;
  "nats stream subjects "*)
    # Queued work: the batch's subject with its count, or none once it ended.
    printf '%s\n' "$out" | grep -Eq "fanout\.work\.sha256\.$batch|[Nn]o subjects" || fail "queued work: unexpected output:
$out"
    seen+=" queued"
    ;;
  "nats sub 'fanout.result."*)
    for item in 0 1; do
      expect "$out" results "subject: fanout\\.result\\.$batch\\.$item"
      expect "$out" results "^\\{\"batch_id\":\"$batch\",\"item\":$item,\"ok\":true,\"output\":\\{\"sha256\":\"[0-9a-f]{64}\"\\}"
    done
    seen+=" results"
    ;;
  "nats sub 'fanout.done."*)
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
  "nats req fanout.submit --force-stdin"*)
    expect "$out" "submit from a file" '"batch_id":"[^"]+","total":3,"status":"running"'
    seen+=" stdin"
    ;;
  *)
    echo "    (no output check for this command: it exited 0)"
    ;;
  esac
done
want=" install dev ready submit status queued results aggregate state stdin"
[ "$seen" = "$want" ] || fail "the section's commands checked were:$seen; want$want, in that order"
for f in "${made[@]}"; do rm -f "$f"; done
readme_count=${#commands[@]}
kill "$dev_pid" 2>/dev/null || true
wait "$dev_pid" 2>/dev/null || true
dev_pid=""

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


# As the client user: the block's nats commands that read or request (not
# the queued-work listing, a stream API call the client account does not
# import, nor the submit from a file, shown once above).
mapfile -t commands < <(printf '%s\n' "$block" | grep '^nats ' | grep -Ev 'stream subjects|--force-stdin' | sed -E 's/[[:space:]]+#.*$//')
unset FANOUT_DEV_PORT FANOUT_DEV_DATA
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

echo "nats-cli-test: ok: $readme_count commands of README.md's quick start work as written with nats $NATSCLI_VERSION, and its nats commands as the client user of the accounts layout"
