#!/usr/bin/env bash
# Packs the built operator (dist/, after `npm run build`) into the image clusterTree's pods and the
# in-cluster operator run (ADR 14): setup's Debian root, the Node.js 24 binary of the npm `node`
# package at /usr/local/bin/node, dist/ and the production node_modules at /app. Pushed into the
# storage of the loopback registry the real node pulls from, as localhost/kosmos-vc/operator:<tag>,
# the tag a hash of what went in, so the same tree is packed once; dist/operator.name says it, for
# this checkout alone (checkouts on one machine share the registry, each uses its own image).
#
#   scripts/image.sh            pack the working tree's dist/ (skipped when that tag exists)
#   scripts/image.sh --print    print the name the working tree's image has (builds nothing)
#
# Without setup's images (no buildah or mmdebstrap on the machine) there is nothing to build on:
# it says so and exits 0, as setup does (kwok nodes only).
set -euo pipefail
# A failure inside $(...) fails the assignment too (an unreadable file is an error, not half a hash).
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SELF=scripts/image.sh

REPOSITORY=localhost/kosmos-vc/operator
BASE=localhost/kosmos-vc/debian:bookworm
NODE_BIN="$PWD/node_modules/node/bin/node"
# Tags kept besides the new one: other checkouts' images, and pods that still run an older one.
KEEP=4

step() { printf '[image %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

dir_of() { bash scripts/setup.sh --print | sed -n "s|^$1=\(.*\)/bin$|\1|p"; }

main() {
  local images registry storage
  images="$(dir_of images)"; registry="$(dir_of registry)/bin/registry"; storage="$images/registry"
  [ -d dist/src ] && [ -f dist/workflow-bundle.js ] || { echo "image: no dist/ (npm run build first)" >&2; exit 1; }
  [ -x "$NODE_BIN" ] || { echo "image: no $NODE_BIN (npm ci installs it)" >&2; exit 1; }
  # What the image holds, hashed: the compiled code, the package and its locked dependencies,
  # Node.js and this recipe, by paths relative to the checkout (two checkouts of one tree share
  # an image; a file that cannot be read fails the script: no tag of half a hash).
  local tag sums
  sums="$( (cd dist && find src workflow-bundle.js -type f -print0 | sort -z | xargs -0 sha256sum)
          sha256sum package.json package-lock.json "$SELF"; "$NODE_BIN" --version)"
  tag="$(printf '%s\n' "$sums" | sha256sum | cut -c1-16)"
  if [ "${1:-}" = --print ]; then echo "$REPOSITORY:$tag"; return 0; fi
  if [ ! -d "$storage/docker/registry/v2/repositories/${BASE%:*}" ] || ! command -v buildah >/dev/null; then
    step "no base image (setup builds it where buildah and mmdebstrap are installed): not built"
    return 0
  fi
  local tags="$storage/docker/registry/v2/repositories/$REPOSITORY/_manifests/tags"
  # One build, push and clean-up at a time on this machine (checkouts share the storage; setup
  # takes the same lock before it rebuilds the images). Nothing started below inherits the lock.
  exec 9> "$(dirname "$images")/.images.lock"
  flock -w 1800 9 || { echo "image: another build held $(dirname "$images")/.images.lock for 30 min" >&2; exit 1; }
  if [ -e "$tags/$tag" ]; then
    touch "$tags/$tag"
    printf '%s\n' "$REPOSITORY:$tag" > dist/operator.name
    step "$REPOSITORY:$tag: already built"
    return 0
  fi

  local cache work
  cache="$(dirname "$(dirname "$images")")"
  [ -n "$cache" ] && [ "$cache" != / ] || return 1
  mkdir -p "$cache/build"
  work="$(mktemp -d "$cache/build/operator-image.XXXXXX")"
  # shellcheck disable=SC2064 # the folder is expanded now
  trap "rm -rf '$work'" EXIT
  step "$REPOSITORY:$tag <- dist/, the production node_modules, Node.js $("$NODE_BIN" --version)"
  mkdir -p "$work/app/dist" "$work/bin"
  cp -r dist/src dist/workflow-bundle.js "$work/app/dist/"
  cp package.json package-lock.json "$work/app/"
  # The production dependencies as locked; no install scripts: Node.js itself is copied below.
  (cd "$work/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  rm -rf "$work/app/node_modules/node" "$work/app/node_modules/.bin/node"
  cp "$NODE_BIN" "$work/bin/node"

  # A registry on the storage for the pull of the base and the push, stopped by its PID however this ends.
  local port
  port="$(comm -23 <(seq 46000 46999) <(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -u) | shuf -n1)"
  printf 'version: 0.1\nlog: { level: warn }\nstorage: { filesystem: { rootdirectory: %s } }\nhttp: { addr: "127.0.0.1:%s" }\n' \
    "$storage" "$port" > "$work/registry.yaml"
  "$registry" serve "$work/registry.yaml" > "$work/registry.log" 2>&1 9>&- &
  local pid=$!
  # shellcheck disable=SC2064 # the PID and the folder are expanded now
  trap "kill $pid 2>/dev/null; rm -rf '$work'" EXIT
  local i; for i in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.2; done
  curl -sf "http://127.0.0.1:$port/v2/" >/dev/null \
    || { cat "$work/registry.log" >&2; echo "image: the registry did not start" >&2; return 1; }

  local bh=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs) c
  c="$("${bh[@]}" from -q --tls-verify=false "docker://127.0.0.1:$port/$BASE")"
  "${bh[@]}" copy --chmod 0755 "$c" "$work/bin/node" /usr/local/bin/node >/dev/null
  "${bh[@]}" copy "$c" "$work/app" /app >/dev/null
  # Non-root as every pod of a control plane (ADR 14); the entry point is the kosmos-vc command,
  # with the operator's V8 flags (src/runtime/nodeFlags.ts).
  "${bh[@]}" config --workingdir /app --user 65532:65532 --env NODE_ENV=production \
    --entrypoint '["/usr/local/bin/node", "--max-semi-space-size=2", "/app/dist/src/cli/main.js"]' --cmd '[]' "$c"
  "${bh[@]}" commit -q "$c" "$REPOSITORY:$tag" >/dev/null
  "${bh[@]}" push -q --tls-verify=false "$REPOSITORY:$tag" "docker://127.0.0.1:$port/$REPOSITORY:$tag" >/dev/null
  kill "$pid" && { wait "$pid" || true; }
  # The oldest trees' images go (by when a checkout last used them): their tags, then the layers
  # no tag names any more.
  local t
  for t in $(ls -1t "$tags" | tail -n +$((KEEP + 2))); do rm -rf "${tags:?}/$t"; done
  "$registry" garbage-collect --delete-untagged "$work/registry.yaml" > "$work/gc.log" 2>&1 9>&- \
    || { tail -5 "$work/gc.log" >&2; echo "image: the registry's garbage collection failed" >&2; return 1; }
  rm -rf "$work" && trap - EXIT
  printf '%s\n' "$REPOSITORY:$tag" > dist/operator.name
  step "$REPOSITORY:$tag pushed"
}

main "$@"
