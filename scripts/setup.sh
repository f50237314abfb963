#!/usr/bin/env bash
# Builds the real components kosmos-vc runs (Temporal CLI, etcd, Kubernetes control plane,
# kubectl, kwok) from their Go modules into a cache outside the repo. Idempotent: a component
# whose stamp file exists is skipped, so a warm machine finishes in well under a second.
#
#   scripts/setup.sh            build whatever is missing
#   scripts/setup.sh --check    exit 0 when everything is built, 1 otherwise (builds nothing)
#   scripts/setup.sh --print    print the bin directory of each component, one NAME=DIR a line
#
# Versions are pinned here and nowhere else; src/runtime/components.ts reads --print.
set -euo pipefail

TEMPORAL_CLI_VERSION=v1.5.1
ETCD_VERSION=v3.6.16
KUBERNETES_VERSION=v1.37.2
KWOK_VERSION=v0.8.0
CONTAINERD_VERSION=v2.2.9
CRICTL_VERSION=v1.37.0
COREDNS_VERSION=v1.14.7
# Image names and tags as upstream publishes them (k8s.io/kubernetes test/utils/image/manifest.go
# and kubeadm's pause version), so unmodified manifests and the e2e suite find them locally.
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2
AGNHOST_IMAGE=registry.k8s.io/e2e-test-images/agnhost:2.66.1
BUSYBOX_IMAGE=registry.k8s.io/e2e-test-images/busybox:1.37.0-2
COREDNS_IMAGE=registry.k8s.io/coredns/coredns:$COREDNS_VERSION
KUBECTL_IMAGE=registry.k8s.io/kubectl:$KUBERNETES_VERSION
# Debian packages the real node runs with (runc, CNI plugins, iptables for kube-proxy) and the
# image builder (buildah, busybox-static for the images' shell).
NODE_PACKAGES=(runc containernetworking-plugins iptables conntrack buildah busybox-static gcc libc6-dev)

# ~ rather than $HOME: bash falls back to the password database when HOME is unset (services).
CACHE="${KOSMOS_VC_CACHE:-${XDG_CACHE_HOME:-$(echo ~)/.cache}/kosmos-vc}"
TOOLS="$CACHE/tools"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

dir_of() {
  case "$1" in
    temporal) echo "$TOOLS/temporal-$TEMPORAL_CLI_VERSION" ;;
    etcd) echo "$TOOLS/etcd-$ETCD_VERSION" ;;
    kubernetes) echo "$TOOLS/kubernetes-$KUBERNETES_VERSION" ;;
    kwok) echo "$TOOLS/kwok-$KWOK_VERSION" ;;
    containerd) echo "$TOOLS/containerd-$CONTAINERD_VERSION" ;;
    coredns) echo "$TOOLS/coredns-$COREDNS_VERSION" ;;
    images) echo "$TOOLS/images-$KUBERNETES_VERSION-$COREDNS_VERSION" ;;
  esac
}
# images last: it packs binaries the components before it built.
COMPONENTS=(temporal etcd kwok kubernetes containerd coredns images)

# A component counts as built when its stamp holds the hash of the recipe that built it, so a
# changed recipe (new version, new flags) rebuilds it.
recipe() { declare -f "build_$1" | sha256sum | cut -c1-16; }
built() { [ "$(cat "$(dir_of "$1")/.complete" 2>/dev/null)" = "$(recipe "$1")" ]; }



step() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# A throwaway module per component keeps replace directives out of the way of `go install`.
scratch() {
  local d="$CACHE/build/$1"
  rm -rf "$d" && mkdir -p "$d" && cd "$d"
  go mod init "kosmosvc.local/build/$1" >/dev/null 2>&1
}

build_temporal() {
  local out; out="$(dir_of temporal)"
  step "temporal CLI $TEMPORAL_CLI_VERSION (dev server + Web UI) -> $out"
  mkdir -p "$out/bin"
  GOBIN="$out/bin" go install -trimpath \
    -ldflags "-s -w -X github.com/temporalio/cli/temporalcli.Version=${TEMPORAL_CLI_VERSION#v}" \
    "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION"
}

build_etcd() {
  local out; out="$(dir_of etcd)"
  step "etcd $ETCD_VERSION -> $out"
  scratch etcd
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
  mkdir -p "$out/bin"
  # etcd's version is a constant in its api module; only the git SHA is stamped by its own build.
  go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" go.etcd.io/etcd/server/v3
  go build -trimpath -ldflags "-s -w" -o "$out/bin/etcdctl" go.etcd.io/etcd/etcdctl/v3
}

build_kwok() {
  local out; out="$(dir_of kwok)"
  step "kwok $KWOK_VERSION -> $out"
  scratch kwok
  go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mkdir -p "$out/bin" "$out/stages"
  go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" -o "$out/bin/kwok" sigs.k8s.io/kwok/cmd/kwok
  # Standalone kwok has no default stages; keep the module's own stage files next to it.
  local src; src="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  cp -r "$src/kustomize/stage/." "$out/stages/"
  chmod -R u+w "$out/stages"
}

build_kubernetes() {
  local out; out="$(dir_of kubernetes)"
  local v="$KUBERNETES_VERSION" minor patch major
  major="${v#v}"; major="${major%%.*}"
  minor="$(echo "$v" | cut -d. -f2)"; patch="$(echo "$v" | cut -d. -f3)"
  step "kubernetes $v (control plane, kubectl, kubelet, kube-proxy, agnhost) -> $out"
  scratch kubernetes
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [ -f "$gomod" ] || { echo "setup: could not download k8s.io/kubernetes@$v" >&2; exit 1; }
  # Every staging module k8s.io/kubernetes replaces with ./staging is served as v0.<minor>.<patch>.
  local staging
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")"
  go mod edit -require="k8s.io/kubernetes@$v"
  for m in $staging; do go mod edit -replace="$m=$m@v0.$minor.$patch"; done
  local godebug; godebug="$(grep -m1 '^godebug ' "$gomod" || true)"
  [ -n "$godebug" ] && echo "$godebug" >> go.mod
  step "kubernetes: resolving $(echo "$staging" | wc -w) staging modules"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
  local pkgs=(); for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  # agnhost: upstream's many-in-one test server (netexec, serve-hostname, dns tools), as an image
  # for the real node and the tests.
  pkgs+=(k8s.io/kubernetes/test/images/agnhost)
  go get "${pkgs[@]/%/@$v}"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  mkdir -p "$out/bin"
  for c in "${cmds[@]}"; do
    step "kubernetes: building $c"
    go build -p 2 -trimpath -tags selinux,notest -ldflags "$ld" -o "$out/bin/$c" "k8s.io/kubernetes/cmd/$c"
  done
  step "kubernetes: building agnhost"
  go build -p 2 -trimpath -ldflags "-s -w" -o "$out/bin/agnhost" k8s.io/kubernetes/test/images/agnhost
  # The pause container and the e2e image list come from the same module source.
  local src; src="$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
  mkdir -p "$out/src"
  cp "$src/build/pause/linux/pause.c" "$src/test/utils/image/manifest.go" "$out/src/"
  chmod u+w "$out/src/"*
}

build_containerd() {
  local out; out="$(dir_of containerd)"
  step "containerd $CONTAINERD_VERSION (containerd, shim, ctr) -> $out"
  scratch containerd
  local cmds=(containerd containerd-shim-runc-v2 ctr) pkgs=()
  for c in "${cmds[@]}"; do pkgs+=("github.com/containerd/containerd/v2/cmd/$c@$CONTAINERD_VERSION"); done
  go get "${pkgs[@]}"
  mkdir -p "$out/bin"
  # btrfs and devmapper snapshotters need cgo; the node uses overlayfs.
  local ld="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  for c in "${cmds[@]}"; do
    go build -p 2 -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags "$ld" -o "$out/bin/$c" \
      "github.com/containerd/containerd/v2/cmd/$c"
  done
  # crictl removes pod sandboxes through CRI (and so through CNI) when the node stops.
  scratch crictl
  go get "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  go build -p 2 -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    -o "$out/bin/crictl" sigs.k8s.io/cri-tools/cmd/crictl
}

build_coredns() {
  local out; out="$(dir_of coredns)"
  step "CoreDNS $COREDNS_VERSION (host and tenant DNS) -> $out"
  scratch coredns
  go get "github.com/coredns/coredns@$COREDNS_VERSION"
  mkdir -p "$out/bin"
  go build -p 2 -trimpath -ldflags "-s -w" -o "$out/bin/coredns" github.com/coredns/coredns
}

# Debian packages are installed only where they are missing; without root (or apt) the real node
# is unavailable and the embedded host says so and runs kwok nodes only.
install_node_packages() {
  local missing=()
  for p in "${NODE_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    step "real node: missing Debian packages ${missing[*]} (needs root and apt-get); kwok nodes only"
    return 0
  fi
  step "real node: installing Debian packages ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >/dev/null || step "real node: apt-get install failed; kwok nodes only"
}

# Images the real node and the tests use, built from the binaries above (no registry is reached):
# each is a docker archive containerd imports under the upstream name.
build_images() {
  local out; out="$(dir_of images)"
  local k8s; k8s="$(dir_of kubernetes)"
  step "images (pause, agnhost, busybox, coredns, kubectl) -> $out"
  if ! command -v buildah >/dev/null || [ ! -x /bin/busybox ]; then
    step "images need buildah and busybox-static (Debian packages): no real node, kwok nodes only"
    return 1
  fi
  local work="$CACHE/build/images"
  rm -rf "$work" && mkdir -p "$work/rootfs"
  # buildah keeps its layers in the build folder, not in the machine's container storage.
  local bh=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
  gcc -Os -static -Wall -DVERSION="${PAUSE_IMAGE##*:}" -o "$work/pause" "$k8s/src/pause.c"
  # A busybox root: /bin/sh, wget, nslookup, nc, ... as links to one static binary.
  local bb="$work/rootfs/busybox"
  mkdir -p "$bb/bin" "$bb/etc" "$bb/tmp" "$bb/root"
  cp /bin/busybox "$bb/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$bb/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$bb/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$bb/etc/group"
  chmod 1777 "$bb/tmp"
  rm -rf "$out" && mkdir -p "$out"
  image() { # key name entrypoint-json cmd source...
    local key="$1" name="$2" entry="$3" cmd="$4"; shift 4
    local c; c="$("${bh[@]}" from scratch)"
    for src in "$@"; do "${bh[@]}" copy "$c" "$src" / >/dev/null; done
    "${bh[@]}" config --entrypoint "$entry" --cmd "$cmd" --env PATH=/bin:/usr/bin:/ "$c"
    "${bh[@]}" commit -q "$c" "$name" >/dev/null
    "${bh[@]}" push -q "$name" "docker-archive:$out/$key.tar:$name"
    echo "$name" > "$out/$key.name"
    "${bh[@]}" rm "$c" >/dev/null
    step "images: $name"
  }
  image pause "$PAUSE_IMAGE" '["/pause"]' '' "$work/pause"
  image busybox "$BUSYBOX_IMAGE" '[]' '["/bin/sh"]' "$bb/."
  # As upstream's: agnhost at /, coredns beside it, a user and group the e2e suite expects.
  cp -a "$bb" "$work/rootfs/agnhost"
  echo 'user-defined-in-image:x:1000:1000::/:/bin/sh' >> "$work/rootfs/agnhost/etc/passwd"
  printf 'user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n' \
    >> "$work/rootfs/agnhost/etc/group"
  image agnhost "$AGNHOST_IMAGE" '["/agnhost"]' '["pause"]' "$work/rootfs/agnhost/." "$k8s/bin/agnhost" \
    "$(dir_of coredns)/bin/coredns"
  image coredns "$COREDNS_IMAGE" '["/coredns"]' '' "$(dir_of coredns)/bin/coredns"
  # kubectl as upstream publishes it, with a shell beside it: an in-cluster client for pods.
  mkdir -p "$work/rootfs/kubectl/bin" && cp "$k8s/bin/kubectl" "$work/rootfs/kubectl/bin/kubectl"
  image kubectl "$KUBECTL_IMAGE" '["/bin/kubectl"]' '' "$bb/." "$work/rootfs/kubectl/."
  rm -rf "$work"
}

# Everything runs inside main, read whole before it starts: editing this file while a build runs
# cannot change what the running build does.
main() {
  case "${1:-}" in
    --check)
      for c in "${COMPONENTS[@]}"; do built "$c" || exit 1; done
      exit 0 ;;
    --print)
      for c in "${COMPONENTS[@]}"; do echo "$c=$(dir_of "$c")/bin"; done
      exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--check|--print]" >&2; exit 2 ;;
  esac

  command -v go >/dev/null || { echo "setup: Go is required (go 1.26 or newer)" >&2; exit 1; }

  install_node_packages

  announced=""
  for c in "${COMPONENTS[@]}"; do
    if built "$c"; then step "$c: cached at $(dir_of "$c")"; continue; fi
    if [ -z "$announced" ]; then
      step "building from Go modules: about 12 minutes for everything on a cold 2-core machine, seconds once cached"
      announced=1
    fi
    start=$SECONDS
    # errexit stays on inside the subshell; images are optional (without them: kwok nodes only).
    set +e; ( set -e; "build_$c" ); rc=$?; set -e
    [ $rc -eq 0 ] || { [ "$c" = images ] && continue; exit $rc; }
    recipe "$c" > "$(dir_of "$c")/.complete"
    step "$c: built in $((SECONDS - start))s"
  done
  step "all components ready under $TOOLS"
}

main "$@"; exit $?
