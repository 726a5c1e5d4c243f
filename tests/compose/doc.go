// Package compose tests the Docker Compose deployment end to end: it
// builds the images with scripts/compose.sh (static binaries on FROM
// scratch, nats-server from the version in go.mod: nothing is pulled),
// starts docker-compose.yml and docker-compose.cluster.yml under a project
// name of their own, runs batches through the client package on a
// published NATS port, and scales, kills and restarts containers while the
// batches run. Every batch must end exact.
//
// The tests skip when no Docker engine (or no compose command) answers,
// and in -short mode, unless FANOUT_REQUIRE_DOCKER=1: then they fail.
// FANOUT_COMPOSE picks the compose command ("docker-compose" or
// "docker compose"; default: whichever the machine has).
// FANOUT_COMPOSE_IMAGES_TAG=<tag> skips the image build and uses images
// already built with that FANOUT_TAG (scripts/compose.sh build-images).
//
//	go test -count=1 -timeout 15m ./tests/compose/
package compose
