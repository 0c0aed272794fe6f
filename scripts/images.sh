#!/usr/bin/env bash
# Build the test images offline and push them to the local registries.
# Needs scripts/engine.sh and scripts/registry.sh to have run first.
#
# Images (no Docker Hub involved: the base image is made from busybox-static):
#   pullrun/busybox:base                    local only; busybox with every applet in /bin
#   127.0.0.1:5000/pullrun/busybox:latest   that image; the sample for `make run`
#   127.0.0.1:5000/pullrun/layers:latest    busybox + 3 layers of random data (3, 2, 1 MiB),
#                                           so a pull shows real Downloading/Extracting
#   127.0.0.1:5001/pullrun/private:latest   the busybox image on the auth registry
#   127.0.0.1:5002/pullrun/broken:latest    the layers image with its last layer's blob
#                                           deleted from the registry's storage: the
#                                           manifest answers 200, the pull then fails
#                                           with "blob unknown" inside the stream
# Afterwards no 127.0.0.1:500x/... tag and no pullrun/layers tag is left locally,
# so the tests really download; pullrun/busybox:base stays.
#
# Environment for the tests (also in scripts/test-env.sh, which the Makefile sources):
#   PULLRUN_TEST_REGISTRY=127.0.0.1:5000
#   PULLRUN_TEST_AUTH_REGISTRY=127.0.0.1:5001
#   PULLRUN_TEST_AUTH_USER=pullrun
#   PULLRUN_TEST_AUTH_PASSWORD=s3cret-pw
#   PULLRUN_TEST_BROKEN_REGISTRY=127.0.0.1:5002
#
# Idempotent and quick when already done: each image is checked through the
# registry API (manifest and every blob) and only built/pushed when missing.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/test-env.sh
source "$PULLRUN_SCRIPTS_DIR/test-env.sh"

REG=$PULLRUN_TEST_REGISTRY
AUTH_REG=$PULLRUN_TEST_AUTH_REGISTRY
BROKEN_REG=$PULLRUN_TEST_BROKEN_REGISTRY
AUTH=(-u "$PULLRUN_TEST_AUTH_USER:$PULLRUN_TEST_AUTH_PASSWORD")
BASE=pullrun/busybox:base
LAYERS=pullrun/layers:latest
BUILD="$PULLRUN_STATE_DIR/build"
BROKEN_DATA="$PULLRUN_STATE_DIR/registry-${BROKEN_REG##*:}/data"
BROKEN_MARK="$PULLRUN_STATE_DIR/registry-${BROKEN_REG##*:}/deleted-blob"
MANIFEST_V2=application/vnd.docker.distribution.manifest.v2+json

timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
  || die "no Docker engine answers: run scripts/engine.sh first"
for r in "$REG" "$BROKEN_REG"; do
  [[ "$(http_code "http://$r/v2/")" == 200 ]] || die "no registry at $r: run scripts/registry.sh first"
done
[[ "$(http_code "http://$AUTH_REG/v2/" "${AUTH[@]}")" == 200 ]] \
  || die "no auth registry at $AUTH_REG: run scripts/registry.sh first"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# blob_digests REGISTRY REPO TAG [curl args]: print config and layer digests,
# config first, then layers in order; fails if the manifest is not there.
blob_digests() {
  local reg=$1 repo=$2 tag=$3 manifest
  shift 3
  manifest="$(curl -sf --noproxy '*' --max-time 10 "$@" -H "Accept: $MANIFEST_V2" \
    "http://$reg/v2/$repo/manifests/$tag")" || return 1
  python3 -c '
import json, sys
m = json.loads(sys.argv[1])
print(m["config"]["digest"])
for layer in m["layers"]:
    print(layer["digest"])
' "$manifest"
}

# pushed_ok REGISTRY REPO TAG [curl args]: manifest and every blob answer 200.
pushed_ok() {
  local reg=$1 repo=$2 tag=$3 digests d
  shift 3
  digests="$(blob_digests "$reg" "$repo" "$tag" "$@")" || return 1
  for d in $digests; do
    [[ "$(http_code "http://$reg/v2/$repo/blobs/$d" -I "$@")" == 200 ]] || return 1
  done
}

# push LOCAL_IMAGE REMOTE_REF: tag, push, untag.
push() {
  log "pushing $1 as $2"
  docker tag "$1" "$2"
  docker push "$2" >"$BUILD/push.log" 2>&1 || { cat "$BUILD/push.log" >&2; die "docker push $2 failed"; }
  docker rmi "$2" >/dev/null
}

mkdir -p "$BUILD"

# --- pullrun/busybox:base ------------------------------------------------------
if have_image "$BASE"; then
  log "$BASE is there"
else
  apt_install busybox-static
  bb=/bin/busybox
  [[ -x "$bb" ]] || die "$bb missing after installing busybox-static"
  rootfs="$BUILD/busybox-rootfs"
  rm -rf "$rootfs"
  mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
  chmod 1777 "$rootfs/tmp"
  cp "$bb" "$rootfs/bin/busybox"
  n=0
  for applet in $("$bb" --list); do
    # linking "busybox" itself would overwrite the binary with a self-link
    [[ "$applet" == busybox ]] && continue
    ln -sf busybox "$rootfs/bin/$applet"
    n=$((n + 1))
  done
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
    'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$rootfs/etc/group"
  log "importing $BASE (busybox with $n applets)"
  # fixed owner, order and mtimes: the layer has the same digest on every machine
  tar -C "$rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -c . \
    | docker import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$BASE" >/dev/null
  docker run --rm --network none "$BASE" seq 1 3 | tr '\n' ' ' | grep -q '^1 2 3 $' \
    || die "$BASE does not run"
fi

# --- the layers image, built on demand -----------------------------------------
ensure_layers_image() {
  have_image "$LAYERS" && return 0
  local ctx="$BUILD/layers" mib
  mkdir -p "$ctx"
  for mib in 3 2 1; do
    if [[ "$(stat -c %s "$ctx/random-${mib}m.bin" 2>/dev/null || echo 0)" != $((mib * 1048576)) ]]; then
      head -c $((mib * 1048576)) /dev/urandom >"$ctx/random-${mib}m.bin"
    fi
  done
  cat >"$ctx/Dockerfile" <<'EOF'
FROM pullrun/busybox:base
COPY random-3m.bin /data/random-3m.bin
COPY random-2m.bin /data/random-2m.bin
COPY random-1m.bin /data/random-1m.bin
CMD ["sh", "-c", "ls -l /data && echo pullrun layers ok"]
EOF
  log "building $LAYERS (legacy builder, context $ctx)"
  DOCKER_BUILDKIT=0 docker build -q -t "$LAYERS" "$ctx" >"$BUILD/build.log" 2>&1 \
    || { cat "$BUILD/build.log" >&2; die "docker build $LAYERS failed"; }
}

# --- 5000: busybox and layers ----------------------------------------------------
if pushed_ok "$REG" pullrun/busybox latest; then
  log "$REG/pullrun/busybox:latest is there"
else
  push "$BASE" "$REG/pullrun/busybox:latest"
fi

if pushed_ok "$REG" pullrun/layers latest; then
  log "$REG/pullrun/layers:latest is there"
else
  ensure_layers_image
  push "$LAYERS" "$REG/pullrun/layers:latest"
fi

# --- 5001: busybox behind basic auth --------------------------------------------
if pushed_ok "$AUTH_REG" pullrun/private latest "${AUTH[@]}"; then
  log "$AUTH_REG/pullrun/private:latest is there"
else
  # A throwaway client config: the credentials never reach ~/.docker/config.json.
  DOCKER_CONFIG="$(mktemp -d)"
  export DOCKER_CONFIG
  trap 'rm -rf "$DOCKER_CONFIG"' EXIT
  printf '%s' "$PULLRUN_TEST_AUTH_PASSWORD" \
    | docker login "$AUTH_REG" -u "$PULLRUN_TEST_AUTH_USER" --password-stdin >/dev/null 2>&1 \
    || die "docker login $AUTH_REG failed"
  push "$BASE" "$AUTH_REG/pullrun/private:latest"
  docker logout "$AUTH_REG" >/dev/null 2>&1 || true
  rm -rf "$DOCKER_CONFIG"
  trap - EXIT
  unset DOCKER_CONFIG
fi

# --- 5002: the broken image -------------------------------------------------------
broken_ok() { # manifest there, the marked blob gone, every other blob there
  local gone d digests
  [[ -s "$BROKEN_MARK" ]] || return 1
  gone="$(cat "$BROKEN_MARK")"
  digests="$(blob_digests "$BROKEN_REG" pullrun/broken latest)" || return 1
  grep -qx "$gone" <<<"$digests" || return 1
  for d in $digests; do
    if [[ "$d" == "$gone" ]]; then
      [[ "$(http_code "http://$BROKEN_REG/v2/pullrun/broken/blobs/$d" -I)" == 404 ]] || return 1
    else
      [[ "$(http_code "http://$BROKEN_REG/v2/pullrun/broken/blobs/$d" -I)" == 200 ]] || return 1
    fi
  done
}

if broken_ok; then
  log "$BROKEN_REG/pullrun/broken:latest is there, blob $(cat "$BROKEN_MARK") deleted"
else
  ensure_layers_image
  # pushing again restores a blob deleted before, then we delete it anew
  push "$LAYERS" "$BROKEN_REG/pullrun/broken:latest"
  digests="$(blob_digests "$BROKEN_REG" pullrun/broken latest)" \
    || die "no manifest for pullrun/broken after pushing it"
  gone="$(tail -n 1 <<<"$digests")" # the last layer: never the base layer
  hex="${gone#sha256:}"
  blob="$BROKEN_DATA/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
  [[ -f "$blob" ]] || die "cannot find $blob: is the registry on $BROKEN_REG the one registry.sh started?"
  rm -f "$blob"
  echo "$gone" >"$BROKEN_MARK"
  broken_ok || die "$BROKEN_REG/pullrun/broken:latest is not broken the expected way after deleting $blob"
  log "deleted layer blob $gone of $BROKEN_REG/pullrun/broken:latest"
fi

# --- no local copies of what the tests pull ------------------------------------------
mapfile -t refs < <(docker image ls --format '{{.Repository}}:{{.Tag}}' \
  | grep -E "^(127\.0\.0\.1:500[0-2]/|pullrun/layers:)" || true)
for ref in "${refs[@]}"; do
  if docker rmi "$ref" >/dev/null 2>&1; then
    log "removed local image $ref"
  else
    log "warning: could not remove local image $ref (in use by a container?)"
  fi
done
log "images ready: $REG/pullrun/busybox:latest $REG/pullrun/layers:latest" \
  "$AUTH_REG/pullrun/private:latest $BROKEN_REG/pullrun/broken:latest (broken)"
