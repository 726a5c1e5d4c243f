#!/usr/bin/env bash
# Build fanout's container images and run the compose setups.
#
#   scripts/compose.sh build-images
#   scripts/compose.sh [--cluster] up [--workers N] [--coordinators N] [--no-wait] [compose up args]
#   scripts/compose.sh [--cluster] scale --workers N
#   scripts/compose.sh [--cluster] wait
#   scripts/compose.sh [--cluster] down [-v]
#   scripts/compose.sh [--cluster] compose <any compose arguments>   (ps, logs, ...)
#   scripts/compose.sh compose-command      # print the compose command in use
#
# --cluster (or FANOUT_CLUSTER=1) uses docker-compose.cluster.yml (three NATS
# nodes) instead of docker-compose.yml.
#
# build-images needs Go and a Docker engine, and pulls nothing: the binaries
# are compiled here (CGO_ENABLED=0) and copied into FROM-scratch images:
#   fanout-coordinator:$FANOUT_TAG  fanout-worker:$FANOUT_TAG  fanout-cli:$FANOUT_TAG
#   fanout-nats:<nats-server version in go.mod, without the v>
# (each name prefixed by $FANOUT_IMAGE_PREFIX when set).
#
# up uses NATS_IMAGE when set; otherwise the locally built fanout-nats image
# when there is one; otherwise the compose file's default (the official nats
# image). It then waits until every container is healthy
# (FANOUT_UP_TIMEOUT seconds, default 180).
#
# Environment: FANOUT_TAG (default local), FANOUT_IMAGE_PREFIX,
# COMPOSE_PROJECT_NAME (default fanout, or fanout-cluster with --cluster),
# FANOUT_COMPOSE (the compose command, e.g. "docker-compose"; default: the
# `docker compose` plugin when it answers, else docker-compose), and every
# variable the compose files read (docs/deploy.md).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export FANOUT_TAG="${FANOUT_TAG:-local}"
prefix="${FANOUT_IMAGE_PREFIX:-}"

die() { echo "compose.sh: $*" >&2; exit 1; }
log() { echo "compose.sh: $*" >&2; }

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# compose_cmd sets the array COMPOSE to the compose command this machine has.
compose_cmd() {
	if [ -n "${FANOUT_COMPOSE:-}" ]; then
		read -r -a COMPOSE <<<"$FANOUT_COMPOSE"
	elif docker compose version >/dev/null 2>&1; then
		COMPOSE=(docker compose)
	elif command -v docker-compose >/dev/null 2>&1; then
		COMPOSE=(docker-compose)
	else
		die "neither 'docker compose' nor 'docker-compose' is installed"
	fi
}

# ensure_passwords gives each NATS user a password: from the environment,
# or from .env next to the compose files, where it writes random ones for
# those still missing (compose reads .env itself).
ensure_passwords() {
	local envfile="$root/.env" var pw
	for var in FANOUT_COORDINATOR_PASSWORD FANOUT_WORKER_PASSWORD FANOUT_CLIENT_PASSWORD FANOUT_UI_PASSWORD FANOUT_ADMIN_PASSWORD FANOUT_UI_TOKEN; do
		if [ -n "${!var:-}" ] || { [ -f "$envfile" ] && grep -q "^$var=" "$envfile"; }; then
			continue
		fi
		pw="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
		echo "$var=$pw" >>"$envfile"
		log "wrote a random $var to $envfile"
	done
}

nats_version() {
	local v
	v="$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)" || die "cannot read the nats-server version from go.mod"
	echo "${v#v}"
}

build_images() {
	command -v go >/dev/null || die "go is not installed (it builds the binaries)"
	docker version >/dev/null || die "no Docker engine answers"
	local goarch natsv ctx rev
	# The images run on the engine's architecture, whatever the host's.
	goarch="$(docker version -f '{{.Server.Arch}}' 2>/dev/null || go env GOARCH)"
	natsv="$(nats_version)"
	rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	ctx="$(mktemp -d "${TMPDIR:-/tmp}/fanout-images.XXXXXX")"
	# shellcheck disable=SC2064
	trap "rm -rf '$ctx'" EXIT
	mkdir -p "$ctx/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/etc" "$ctx/data" "$ctx/certs" "$ctx/nats"
	chmod 1777 "$ctx/rootfs/tmp"
	# Name the user 65532 too ("nonroot", as in distroless), for tools that
	# map a numeric user to a name.
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/rootfs/etc/group"
	chmod 0644 "$ctx/rootfs/etc/passwd" "$ctx/rootfs/etc/group"
	chmod 0755 "$ctx/data"
	if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
		cp /etc/ssl/certs/ca-certificates.crt "$ctx/certs/"
	fi
	cp deploy/nats/*.conf "$ctx/nats/"
	chmod 0644 "$ctx/nats/"*.conf

	log "building static binaries for linux/$goarch (nats-server v$natsv from go.mod)"
	local gobuild=(env CGO_ENABLED=0 GOOS=linux GOARCH="$goarch" go build -trimpath -ldflags "-s -w")
	"${gobuild[@]}" -o "$ctx/bin/fanout-coordinator" ./cmd/coordinator
	"${gobuild[@]}" -o "$ctx/bin/fanout-worker" ./cmd/worker
	"${gobuild[@]}" -o "$ctx/bin/fanout" ./cmd/fanout
	"${gobuild[@]}" -o "$ctx/bin/nats-server" github.com/nats-io/nats-server/v2

	# One small context per image (hard links), so that each build sends
	# only what its Dockerfile copies.
	local name file tag dir
	for name in coordinator worker cli nats; do
		file="deploy/docker/$name.Dockerfile"
		dir="$ctx/images/$name"
		mkdir -p "$dir/bin"
		cp -a "$ctx/rootfs" "$ctx/data" "$ctx/certs" "$dir/"
		case "$name" in
		coordinator) ln "$ctx/bin/fanout-coordinator" "$dir/bin/" ;;
		worker) ln "$ctx/bin/fanout-worker" "$dir/bin/" ;;
		cli) ln "$ctx/bin/fanout" "$dir/bin/" ;;
		nats) ln "$ctx/bin/nats-server" "$ctx/bin/fanout-worker" "$dir/bin/" && cp -a "$ctx/nats" "$dir/" ;;
		esac
		if [ "$name" = nats ]; then
			tag="${prefix}fanout-nats:$natsv"
		else
			tag="${prefix}fanout-$name:$FANOUT_TAG"
		fi
		log "building $tag"
		# The legacy builder and BuildKit both take a Dockerfile outside the
		# context; FROM scratch pulls nothing.
		docker build --quiet -f "$file" -t "$tag" \
			--label "org.opencontainers.image.source=https://github.com/fanoutdev/fanout" \
			--label "org.opencontainers.image.revision=$rev" \
			--label "org.opencontainers.image.version=$([ "$name" = nats ] && echo "$natsv" || echo "$FANOUT_TAG")" \
			"$dir" 2> >(grep -v -e DEPRECATED -e 'legacy builder' -e 'buildx component' -e 'docs.docker.com/go/buildx' -e '^ *$' >&2) >/dev/null
	done
	rm -rf "$ctx"
	trap - EXIT
	echo "${prefix}fanout-coordinator:$FANOUT_TAG ${prefix}fanout-worker:$FANOUT_TAG ${prefix}fanout-cli:$FANOUT_TAG ${prefix}fanout-nats:$natsv"
}

# choose_nats picks the NATS image and, for an image that carries the fanout
# probe, the health check command.
choose_nats() {
	if [ -z "${NATS_IMAGE:-}" ]; then
		local v
		v="$(nats_version 2>/dev/null)" || v=""
		if [ -n "$v" ] && docker image inspect "${prefix}fanout-nats:$v" >/dev/null 2>&1; then
			export NATS_IMAGE="${prefix}fanout-nats:$v"
		fi
	fi
	if [ -n "${NATS_IMAGE:-}" ] && [ -z "${NATS_HEALTHCHECK_BIN:-}" ]; then
		local probe
		probe="$(docker image inspect -f '{{index .Config.Labels "dev.fanout.nats-probe"}}' "$NATS_IMAGE" 2>/dev/null || true)"
		if [ -n "$probe" ] && [ "$probe" != "<no value>" ]; then
			export NATS_HEALTHCHECK_BIN="$probe" NATS_HEALTHCHECK_FLAG="-healthcheck"
		fi
	fi
	[ "${1:-}" = quiet ] || log "NATS image: ${NATS_IMAGE:-the default of the compose file}"
}

# project_containers lists the ids of the project's service containers,
# by the labels every compose version sets (docker-compose v1 takes seconds
# to start; docker ps does not).
project_name() {
	printf '%s' "$COMPOSE_PROJECT_NAME" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9_-'
}

project_containers() {
	docker ps -aq --filter "label=com.docker.compose.project=$(project_name)" --filter "label=com.docker.compose.oneoff=False"
}

# wait_healthy waits until every container of the project runs and, when it
# has a health check, is healthy.
wait_healthy() {
	local timeout="${FANOUT_UP_TIMEOUT:-180}" deadline ids line bad
	deadline=$((SECONDS + timeout))
	while :; do
		ids="$(project_containers)"
		bad=""
		if [ -z "$ids" ]; then
			bad=" no containers"
		else
			# shellcheck disable=SC2086
			while read -r line; do
				case "$line" in
				*" running healthy" | *" running none") ;;
				*) bad="$bad ${line%% *}(${line#* })" ;;
				esac
			done < <(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' $ids)
		fi
		if [ -z "$bad" ]; then
			log "all containers healthy"
			return 0
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			docker ps -a --filter "label=com.docker.compose.project=$(project_name)" >&2 || true
			die "not healthy after ${timeout}s:$bad"
		fi
		sleep 1
	done
}

cluster="${FANOUT_CLUSTER:-0}"
args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--cluster) cluster=1 ;;
	-h | --help | help) usage; exit 0 ;;
	*) args+=("$1") ;;
	esac
	shift
done
set -- "${args[@]+"${args[@]}"}"
[ $# -gt 0 ] || { usage >&2; exit 2; }
cmd="$1"
shift

if [ "$cluster" = 1 ]; then
	files=(-f "$root/docker-compose.cluster.yml")
	export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-fanout-cluster}"
else
	files=(-f "$root/docker-compose.yml")
	export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-fanout}"
fi

case "$cmd" in
build-images) ;;
*) ensure_passwords ;;
esac

case "$cmd" in
build-images)
	build_images
	;;
up)
	workers="${FANOUT_WORKERS:-}" coordinators="${FANOUT_COORDINATORS:-}" wait=1
	up_args=()
	while [ $# -gt 0 ]; do
		case "$1" in
		--workers) workers="$2"; shift ;;
		--workers=*) workers="${1#*=}" ;;
		--coordinators) coordinators="$2"; shift ;;
		--coordinators=*) coordinators="${1#*=}" ;;
		--no-wait) wait=0 ;;
		*) up_args+=("$1") ;;
		esac
		shift
	done
	if [ -z "$coordinators" ] && [ "$cluster" = 1 ]; then
		coordinators=2 # the cluster file's default
	fi
	compose_cmd
	choose_nats
	scale=()
	[ -z "$workers" ] || scale+=(--scale "worker=$workers")
	# Several coordinators start one after the other: the first creates the
	# streams alone. (Two creating the same stream at once on a fresh NATS
	# cluster can both wait for a reply that never comes; see
	# docs/deploy.md, "Known issues".)
	if [ -n "$coordinators" ] && [ "$coordinators" -gt 1 ]; then
		scale+=(--scale "coordinator=1")
	elif [ -n "$coordinators" ]; then
		scale+=(--scale "coordinator=$coordinators")
	fi
	"${COMPOSE[@]}" "${files[@]}" up -d --remove-orphans "${scale[@]+"${scale[@]}"}" "${up_args[@]+"${up_args[@]}"}"
	if [ -n "$coordinators" ] && [ "$coordinators" -gt 1 ]; then
		wait_healthy
		"${COMPOSE[@]}" "${files[@]}" up -d --no-deps --no-recreate --scale "coordinator=$coordinators" coordinator
	fi
	[ "$wait" = 0 ] || wait_healthy
	;;
scale)
	workers=""
	while [ $# -gt 0 ]; do
		case "$1" in
		--workers) workers="$2"; shift ;;
		--workers=*) workers="${1#*=}" ;;
		*) die "scale: unknown argument $1" ;;
		esac
		shift
	done
	[ -n "$workers" ] || die "scale: give --workers N"
	compose_cmd
	choose_nats quiet
	# Only the worker service: the others keep their containers and scale.
	"${COMPOSE[@]}" "${files[@]}" up -d --no-deps --no-recreate --scale "worker=$workers" worker
	wait_healthy
	;;
wait)
	compose_cmd
	wait_healthy
	;;
down)
	compose_cmd
	choose_nats quiet
	"${COMPOSE[@]}" "${files[@]}" down --remove-orphans "$@"
	;;
compose)
	compose_cmd
	choose_nats quiet
	"${COMPOSE[@]}" "${files[@]}" "$@"
	;;
compose-command)
	compose_cmd
	echo "${COMPOSE[*]}"
	;;
*)
	usage >&2
	exit 2
	;;
esac
