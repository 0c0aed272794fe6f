# shellcheck shell=bash
# Environment for the pullrun test suite. Sourced by the Makefile (`make test`);
# source it yourself to run pytest by hand:  . scripts/test-env.sh
#
# What scripts/registry.sh and scripts/images.sh provide behind these:
#   127.0.0.1:5000/pullrun/busybox:latest   busybox image, one layer (also the `make run` sample)
#   127.0.0.1:5000/pullrun/layers:latest    busybox + 3 layers of random data (3, 2, 1 MiB)
#   127.0.0.1:5001/pullrun/private:latest   busybox image, registry needs basic auth
#   127.0.0.1:5002/pullrun/broken:latest    like layers, but its last layer blob is deleted:
#                                           the manifest answers, the pull fails mid-stream
# Locally only pullrun/busybox:base is kept (no 127.0.0.1:500x/... tags), so that
# pulls in the tests really download.
export PULLRUN_TEST_REGISTRY=127.0.0.1:5000
export PULLRUN_TEST_AUTH_REGISTRY=127.0.0.1:5001
export PULLRUN_TEST_AUTH_USER=pullrun
export PULLRUN_TEST_AUTH_PASSWORD=s3cret-pw
export PULLRUN_TEST_BROKEN_REGISTRY=127.0.0.1:5002
#
# Two more engines for the placement tests (scripts/engines.sh): engine 2 on a
# unix socket, engine 3 on tcp://127.0.0.1:23760 with TLS (client certificate
# in PULLRUN_TEST_ENGINE3_TLS_DIR: ca.pem, cert.pem, key.pem). Their pidfiles
# name their dockerd; `$PULLRUN_TEST_ENGINES_SCRIPT start 2` brings engine 2 back.
eval "$("$(dirname "${BASH_SOURCE[0]}")/engines.sh" env)"
#
# A two-node swarm (scripts/swarm.sh): PULLRUN_TEST_SWARM_HOST is the manager's
# socket (swarm on 127.0.0.1:23770), PULLRUN_TEST_SWARM_WORKER_HOST the worker's
# engine; nodes are labelled pullrun.node=swarm1 / swarm2 (same hostname).
# `$PULLRUN_TEST_SWARM_SCRIPT` brings a stopped or killed node back.
eval "$("$(dirname "${BASH_SOURCE[0]}")/swarm.sh" env)"
