#!/usr/bin/env bash
# Builds the real components kosmos-vc runs (Temporal CLI, etcd, Kubernetes control plane,
# kubectl, kwok) from their Go modules into a cache outside the repo. Idempotent: a component
# whose stamp file exists is skipped, so a warm machine finishes in well under a second.
#
#   scripts/setup.sh            build whatever is missing
#   scripts/setup.sh --check    exit 0 when everything is built, 1 otherwise (builds nothing)
#   scripts/setup.sh --print    print the bin directory of each component, one NAME=DIR a line
#   scripts/setup.sh --tests    also what only the tests use (Debian's chromium, for the Temporal
#                               Web UI test; `npm test` runs this)
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
REGISTRY_VERSION=v3.1.2
# The embedded host's persistent volumes (a tenant's etcd data, ADR 14).
LOCAL_PATH_VERSION=v0.0.30
# The chart's tests (helm lint, helm template) and installing it (deploy/helm/kosmos-vc).
HELM_VERSION=v4.3.2
# The images' busybox: upstream's source as Debian's archive keeps it (the pristine tarball, not
# Debian's patched build, whose shell drops variables like `data-1` that the e2e suite passes).
BUSYBOX_VERSION=1.37.0
BUSYBOX_SHA256=3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Image names and tags as upstream publishes them (k8s.io/kubernetes test/utils/image/manifest.go
# and kubeadm's pause version), so unmodified manifests and the e2e suite find them locally.
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2
AGNHOST_IMAGE=registry.k8s.io/e2e-test-images/agnhost:2.66.1
BUSYBOX_IMAGE=registry.k8s.io/e2e-test-images/busybox:1.37.0-2
COREDNS_IMAGE=registry.k8s.io/coredns/coredns:$COREDNS_VERSION
KUBECTL_IMAGE=registry.k8s.io/kubectl:$KUBERNETES_VERSION
# The e2e suite's other images its [Conformance] tests run (manifest.go's names and tags).
E2E=registry.k8s.io/e2e-test-images
AGNHOST_PREV_IMAGE=$E2E/agnhost:2.55
NGINX_IMAGES=("$E2E/nginx:1.27.0-2" "$E2E/nginx:1.28.0-2")
GLIBC_DNS_IMAGE=$E2E/glibc-dns-testing:2.1.1
NAUTILUS_IMAGE=$E2E/nautilus:1.8
KITTEN_IMAGE=$E2E/kitten:1.8
NONROOT_IMAGE=$E2E/nonroot:1.5
NONEWPRIVS_IMAGE=$E2E/nonewprivs:1.4
SAMPLE_APISERVER_IMAGE=$E2E/sample-apiserver:1.29.2
ETCD_IMAGE=registry.k8s.io/etcd:3.7.0-0
# The Debian root itself, which `npm run image` (scripts/image.sh) builds the operator's image on.
DEBIAN_IMAGE=localhost/kosmos-vc/debian:bookworm
# A tenant control plane's images for the kubernetes runtime (ADR 14), named as upstream's: the
# pinned static binaries at /usr/local/bin, etcd's under its own version's tag.
CONTROL_PLANE_IMAGES=(kube-apiserver kube-controller-manager kube-scheduler)
# Debian packages in the images' Debian root (the tools upstream's agnhost has, and nginx).
IMAGE_PACKAGES=passwd,dnsutils,curl,wget,netcat-openbsd,iproute2,iputils-ping,procps,nginx
# Debian packages the real node runs with (runc, CNI plugins, iptables for kube-proxy) and the
# image builder (buildah, gcc and make for busybox and pause, mmdebstrap for a Debian root).
# What only the tests use: the headless browser that drives the Temporal Web UI.
TEST_PACKAGES=(chromium)
NODE_PACKAGES=(runc containernetworking-plugins iptables conntrack buildah gcc libc6-dev make bzip2 curl mmdebstrap)

# ~ rather than $HOME: bash falls back to the password database when HOME is unset (services).
CACHE="${KOSMOS_VC_CACHE:-${XDG_CACHE_HOME:-$(echo ~)/.cache}/kosmos-vc}"
TOOLS="$CACHE/tools"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

dir_of() {
  case "$1" in
    temporal) echo "$TOOLS/temporal-$TEMPORAL_CLI_VERSION" ;;
    etcd) echo "$TOOLS/etcd-$ETCD_VERSION" ;;
    kubernetes) echo "$TOOLS/kubernetes-$KUBERNETES_VERSION" ;;
    controlplane) echo "$TOOLS/kube-control-plane-$KUBERNETES_VERSION" ;;
    kwok) echo "$TOOLS/kwok-$KWOK_VERSION" ;;
    containerd) echo "$TOOLS/containerd-$CONTAINERD_VERSION" ;;
    coredns) echo "$TOOLS/coredns-$COREDNS_VERSION" ;;
    registry) echo "$TOOLS/registry-$REGISTRY_VERSION" ;;
    storage) echo "$TOOLS/local-path-provisioner-$LOCAL_PATH_VERSION" ;;
    helm) echo "$TOOLS/helm-$HELM_VERSION" ;;
    conformance) echo "$TOOLS/conformance-$KUBERNETES_VERSION" ;;
    images) echo "$TOOLS/images-$KUBERNETES_VERSION-$COREDNS_VERSION" ;;
  esac
}
# images last: it packs binaries the components before it built.
COMPONENTS=(temporal etcd kwok kubernetes controlplane containerd coredns registry storage helm conformance images)

# A component counts as built when its stamp holds the hash of the recipe that built it, so a
# changed recipe (new version, new flags) rebuilds it.
# Images also depend on what they are named and built from (names, busybox, Debian packages);
# kube-control-plane on its source in this repository.
recipe() {
  { declare -f "build_$1"
    if [ "$1" = controlplane ]; then cat "$REPO/kube-control-plane/main.go"; fi
    if [ "$1" = images ]; then
      declare -p PAUSE_IMAGE AGNHOST_IMAGE BUSYBOX_IMAGE COREDNS_IMAGE KUBECTL_IMAGE AGNHOST_PREV_IMAGE \
        NGINX_IMAGES GLIBC_DNS_IMAGE NAUTILUS_IMAGE KITTEN_IMAGE NONROOT_IMAGE NONEWPRIVS_IMAGE \
        SAMPLE_APISERVER_IMAGE ETCD_IMAGE DEBIAN_IMAGE CONTROL_PLANE_IMAGES ETCD_VERSION IMAGE_PACKAGES BUSYBOX_VERSION \
        BUSYBOX_SHA256
    fi
  } | sha256sum | cut -c1-16
}
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
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION" \
    "go.etcd.io/etcd/etcdutl/v3@$ETCD_VERSION"
  mkdir -p "$out/bin"
  # etcd's version is a constant in its api module; only the git SHA is stamped by its own build.
  go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" go.etcd.io/etcd/server/v3
  go build -trimpath -ldflags "-s -w" -o "$out/bin/etcdctl" go.etcd.io/etcd/etcdctl/v3
  # Backups: etcdctl takes a snapshot, etcdutl checks one and restores it into a data directory.
  go build -trimpath -ldflags "-s -w" -o "$out/bin/etcdutl" go.etcd.io/etcd/etcdutl/v3
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

# A throwaway module that requires k8s.io/kubernetes at the pinned version, with every staging
# module it replaces with ./staging (served as v0.<minor>.<patch>) pinned to the same release.
k8s_module() {
  local v="$KUBERNETES_VERSION" minor patch
  minor="$(echo "$v" | cut -d. -f2)"; patch="$(echo "$v" | cut -d. -f3)"
  scratch "$1"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [ -f "$gomod" ] || { echo "setup: could not download k8s.io/kubernetes@$v" >&2; exit 1; }
  local staging
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")"
  go mod edit -require="k8s.io/kubernetes@$v"
  for m in $staging; do go mod edit -replace="$m=$m@v0.$minor.$patch"; done
  local godebug; godebug="$(grep -m1 '^godebug ' "$gomod" || true)"
  [ -n "$godebug" ] && echo "$godebug" >> go.mod
  step "$1: resolving $(echo "$staging" | wc -w) staging modules"
}

# The version stamp Kubernetes' own build gives its binaries (kubectl version, e2e's checks).
k8s_ldflags() {
  local v="$KUBERNETES_VERSION" major minor
  major="${v#v}"; major="${major%%.*}"; minor="$(echo "$v" | cut -d. -f2)"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  echo "$ld"
}

build_kubernetes() {
  local out; out="$(dir_of kubernetes)"
  local v="$KUBERNETES_VERSION"
  step "kubernetes $v (control plane, kubectl, kubelet, kube-proxy, agnhost) -> $out"
  k8s_module kubernetes
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
  local pkgs=(); for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  # agnhost: upstream's many-in-one test server (netexec, serve-hostname, dns tools), as an image
  # for the real node and the tests.
  pkgs+=(k8s.io/kubernetes/test/images/agnhost)
  go get "${pkgs[@]/%/@$v}"
  local ld; ld="$(k8s_ldflags)"
  mkdir -p "$out/bin"
  for c in "${cmds[@]}"; do
    step "kubernetes: building $c"
    go build -p 2 -trimpath -tags selinux,notest -ldflags "$ld" -o "$out/bin/$c" "k8s.io/kubernetes/cmd/$c"
  done
  step "kubernetes: building agnhost"
  go build -p 2 -trimpath -ldflags "-s -w" -o "$out/bin/agnhost" k8s.io/kubernetes/test/images/agnhost
  # The pause container, the e2e image list and agnhost's own files (its serving certificate for
  # the porter and the probes that read it) come from the same module source.
  local src; src="$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
  mkdir -p "$out/src"
  cp "$src/build/pause/linux/pause.c" "$src/test/utils/image/manifest.go" "$out/src/"
  cp "$src/test/images/agnhost/porter/localhost.crt" "$src/test/images/agnhost/porter/localhost.key" "$out/src/"
  chmod u+w "$out/src/"*
}

# kosmos-vc's own Go program, kube-control-plane/main.go: a tenant's API server, controller-manager
# and scheduler in one process (ADR 12, decision 16), from the same release with the same tags
# and version stamp as the binaries above.
build_controlplane() {
  local out; out="$(dir_of controlplane)"
  local v="$KUBERNETES_VERSION"
  step "kube-control-plane (kube-control-plane/main.go on Kubernetes $v) -> $out"
  k8s_module controlplane
  mkdir -p cmd/kube-control-plane
  cp "$REPO/kube-control-plane/main.go" cmd/kube-control-plane/
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$v" "k8s.io/kubernetes/cmd/kube-controller-manager@$v" \
    "k8s.io/kubernetes/cmd/kube-scheduler@$v"
  mkdir -p "$out/bin"
  go build -p 2 -trimpath -tags selinux,notest -ldflags "$(k8s_ldflags)" -o "$out/bin/kube-control-plane" ./cmd/kube-control-plane
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

# The registry the real node pulls every image from, on loopback: an OCI distribution server.
build_registry() {
  local out; out="$(dir_of registry)"
  step "registry $REGISTRY_VERSION (the real node's images, on loopback) -> $out"
  scratch registry
  go get "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
  mkdir -p "$out/bin"
  go build -p 2 -trimpath -ldflags "-s -w -X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION" \
    -o "$out/bin/registry" github.com/distribution/distribution/v3/cmd/registry
}

# Helm, for the chart (its tests run helm lint and helm template; users install it with it).
build_helm() {
  local out; out="$(dir_of helm)"
  step "helm $HELM_VERSION (the chart's lint and template) -> $out"
  scratch helm
  go get "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  mkdir -p "$out/bin"
  go build -p 2 -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    -o "$out/bin/helm" helm.sh/helm/v4/cmd/helm
}

# rancher's local-path-provisioner: the embedded host's StorageClass (src/runtime/storage.ts).
build_storage() {
  local out; out="$(dir_of storage)"
  step "local-path-provisioner $LOCAL_PATH_VERSION (the embedded host's volumes) -> $out"
  scratch storage
  go get "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"
  mkdir -p "$out/bin"
  go build -p 2 -trimpath -ldflags "-s -w" -o "$out/bin/local-path-provisioner" github.com/rancher/local-path-provisioner
}

# The upstream conformance suite: e2e.test (`go test -c` of k8s.io/kubernetes/test/e2e), the
# ginkgo CLI at the version it pins (parallel runs), and two programs some of its images run.
build_conformance() {
  local out; out="$(dir_of conformance)"
  local v="$KUBERNETES_VERSION"
  step "conformance $v (e2e.test, ginkgo, sample-apiserver, nnp) -> $out"
  k8s_module conformance
  go get -t "k8s.io/kubernetes/test/e2e@$v" "k8s.io/kubernetes/test/images/nonewprivs@$v" k8s.io/sample-apiserver
  local ginkgo; ginkgo="$(go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)"
  go get "github.com/onsi/ginkgo/v2/ginkgo@$ginkgo"
  local ld; ld="$(k8s_ldflags)"
  mkdir -p "$out/bin"
  step "conformance: building e2e.test (about 6 minutes once Kubernetes is built, on 2 cores)"
  go test -c -p 2 -trimpath -ldflags "$ld" -o "$out/bin/e2e.test" k8s.io/kubernetes/test/e2e
  go build -p 2 -trimpath -ldflags "-s -w" -o "$out/bin/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
  go build -p 2 -trimpath -ldflags "$ld" -o "$out/bin/sample-apiserver" k8s.io/sample-apiserver
  go build -p 2 -trimpath -ldflags "-s -w" -o "$out/bin/nnp" k8s.io/kubernetes/test/images/nonewprivs
  # The update-demo images' pages (nautilus, kitten) come from the same module source.
  local src; src="$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
  mkdir -p "$out/src"
  cp -r "$src/test/images/nautilus/html" "$out/src/nautilus"
  cp -r "$src/test/images/kitten/html" "$out/src/kitten"
  chmod -R u+w "$out/src"
}

# Debian packages are installed only where they are missing. Without root (or apt) what needs them
# says so and goes without: the real node (the embedded host runs kwok nodes only), or the Web UI
# test (it fails saying why).
#   install_packages <who> <what happens without them> <package>...
install_packages() {
  local who="$1" without="$2" missing=() p; shift 2
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    step "$who: missing Debian packages ${missing[*]} (needs root and apt-get); $without"
    return 0
  fi
  step "$who: installing Debian packages ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >/dev/null || step "$who: apt-get install ${missing[*]} failed; $without"
}

# Images the real node, the tests and the conformance suite use, built from the binaries above
# and a Debian root made from Debian's packages (no container registry is reached), pushed under
# their upstream names into the storage of the loopback registry the real node pulls from.
build_images() {
  local out work k8s e2e
  out="$(dir_of images)"; work="$CACHE/build/images"
  k8s="$(dir_of kubernetes)"; e2e="$(dir_of conformance)"
  step "images (pause, agnhost, busybox, coredns, kubectl, the control plane's and the conformance suite's) -> $out"
  local tool
  for tool in buildah mmdebstrap gcc make curl; do
    command -v "$tool" >/dev/null || { step "images need $tool (Debian packages): kwok nodes only"; return 1; }
  done
  [ -n "$out" ] && [ -n "$CACHE" ] || return 1
  # Not while scripts/image.sh pushes the operator's image into this storage (its lock).
  mkdir -p "$(dirname "$out")"
  exec 8> "$(dirname "$out")/.images.lock"
  flock -w 1800 8 || { step "images: another build held $(dirname "$out")/.images.lock for 30 min"; return 1; }
  rm -rf "$work" "$out" && mkdir -p "$work/rootfs" "$out/registry" "$out/bin"
  # A registry on a free loopback port for the pushes, stopped by its PID however this ends.
  local port
  port="$(comm -23 <(seq 45000 45999) <(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -u) | shuf -n1)"
  printf 'version: 0.1\nlog: { level: warn }\nstorage: { filesystem: { rootdirectory: %s } }\nhttp: { addr: "127.0.0.1:%s" }\n' \
    "$out/registry" "$port" > "$work/registry.yaml"
  "$(dir_of registry)/bin/registry" serve "$work/registry.yaml" > "$work/registry.log" 2>&1 8>&- &
  local registry=$!
  # shellcheck disable=SC2064 # the PID is expanded now: the trap runs after this function's locals are gone
  trap "kill $registry 2>/dev/null" EXIT
  local i; for i in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.2; done
  curl -sf "http://127.0.0.1:$port/v2/" >/dev/null \
    || { cat "$work/registry.log" >&2; echo "setup: the image registry did not start" >&2; return 1; }
  # buildah keeps its layers in the build folder, not in the machine's container storage.
  local bh=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
  # push NAME: the image, below its registry's folder of the registry (registry.k8s.io/pause).
  push() { "${bh[@]}" push -q --tls-verify=false "$1" "docker://127.0.0.1:$port/$1" >/dev/null; step "images: $1"; }
  # retag NAME ALIAS...: NAME pushed again under each alias (the registry stores its layers once).
  retag() { local n="$1"; shift; local a; for a in "$@"; do "${bh[@]}" tag "$n" "$a"; push "$a"; done; }
  # image NAME FROM ENTRYPOINT CMD USER SOURCE...: one layer of the sources on FROM, pushed.
  image() {
    local name="$1" from="$2" entry="$3" cmd="$4" user="$5" c src; shift 5
    c="$("${bh[@]}" from "$from")"
    for src in "$@"; do "${bh[@]}" copy "$c" "$src" / >/dev/null; done
    "${bh[@]}" config --entrypoint "$entry" --cmd "$cmd" --user "${user:-0}" \
      --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/ "$c"
    "${bh[@]}" commit -q "$c" "$name" >/dev/null
    "${bh[@]}" rm "$c" >/dev/null
    push "$name"
  }
  gcc -Os -static -Wall -DVERSION="${PAUSE_IMAGE##*:}" -o "$work/pause" "$k8s/src/pause.c"
  # busybox as upstream's image has it: version $BUSYBOX_VERSION, default configuration, static.
  step "images: building busybox $BUSYBOX_VERSION"
  curl -fsS -o "$work/busybox.tar.bz2" \
    "$DEBIAN_MIRROR/pool/main/b/busybox/busybox_$BUSYBOX_VERSION.orig.tar.bz2"
  echo "$BUSYBOX_SHA256  $work/busybox.tar.bz2" | sha256sum -c --quiet
  tar -xjf "$work/busybox.tar.bz2" -C "$work"
  ( cd "$work/busybox-$BUSYBOX_VERSION" && make defconfig && sed -i 's/^# CONFIG_STATIC is not set/CONFIG_STATIC=y/' .config \
      && make -j2 ) > "$work/busybox.log" 2>&1 || { tail -20 "$work/busybox.log" >&2; return 1; }
  # A busybox root: /bin/sh, wget, nslookup, nc, ... as links to one static binary.
  local bb="$work/rootfs/busybox"
  mkdir -p "$bb/bin" "$bb/etc" "$bb/tmp" "$bb/root"
  cp "$work/busybox-$BUSYBOX_VERSION/busybox" "$bb/bin/busybox"
  local a; for a in $("$bb/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$bb/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$bb/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$bb/etc/group"
  chmod 1777 "$bb/tmp"
  # A Debian root with the tools upstream's agnhost image has (dig, getent, curl, nc, ip, ping)
  # and nginx, and the user and group the e2e suite expects in agnhost; the operator's image
  # (scripts/image.sh) is built on it too.
  step "images: a Debian root (mmdebstrap, with $IMAGE_PACKAGES)"
  mmdebstrap --quiet --variant=essential --include="$IMAGE_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='chroot "$1" useradd -u 1000 -M -d / user-defined-in-image' \
    --customize-hook='chroot "$1" groupadd -g 50000 group-defined-in-image' \
    --customize-hook='chroot "$1" usermod -aG group-defined-in-image user-defined-in-image' \
    --customize-hook='mkdir "$1/uploads"' \
    bookworm "$work/debian.tar"
  local c; c="$("${bh[@]}" from scratch)"
  "${bh[@]}" add "$c" "$work/debian.tar" / >/dev/null
  "${bh[@]}" commit -q "$c" "$DEBIAN_IMAGE" >/dev/null
  "${bh[@]}" rm "$c" >/dev/null
  rm "$work/debian.tar"
  local debian="$DEBIAN_IMAGE"
  push "$debian"

  image "$PAUSE_IMAGE" scratch '["/pause"]' '' '' "$work/pause"
  image "$BUSYBOX_IMAGE" scratch '[]' '["/bin/sh"]' '' "$bb/."
  # As upstream's: agnhost at / (also as agnhost-2), coredns and the porter's certificate beside
  # it, on a distribution with the usual tools.
  mkdir -p "$work/rootfs/agnhost" && ln -s agnhost "$work/rootfs/agnhost/agnhost-2"
  cp "$k8s/src/localhost.crt" "$k8s/src/localhost.key" "$work/rootfs/agnhost/"
  image "$AGNHOST_IMAGE" "$debian" '["/agnhost"]' '["pause"]' '' "$k8s/bin/agnhost" \
    "$(dir_of coredns)/bin/coredns" "$work/rootfs/agnhost/."
  # The suite's "previous agnhost" is the same build under the older tag: only the name differs.
  retag "$AGNHOST_IMAGE" "$AGNHOST_PREV_IMAGE"
  image "$COREDNS_IMAGE" scratch '["/coredns"]' '' '' "$(dir_of coredns)/bin/coredns"
  # kubectl as upstream publishes it, with a shell beside it: an in-cluster client for pods.
  mkdir -p "$work/rootfs/kubectl/bin" && cp "$k8s/bin/kubectl" "$work/rootfs/kubectl/bin/kubectl"
  image "$KUBECTL_IMAGE" scratch '["/bin/kubectl"]' '' '' "$bb/." "$work/rootfs/kubectl/."

  # The conformance suite's other images, each doing what the suite asks of upstream's.
  image "$GLIBC_DNS_IMAGE" "$debian" '[]' '["/bin/sh"]' ''
  mkdir -p "$work/rootfs/nginx/var/log/nginx"
  ln -sf /dev/stdout "$work/rootfs/nginx/var/log/nginx/access.log"
  ln -sf /dev/stderr "$work/rootfs/nginx/var/log/nginx/error.log"
  image "${NGINX_IMAGES[0]}" "$debian" '["nginx", "-g", "daemon off;"]' '' '' "$work/rootfs/nginx/."
  retag "${NGINX_IMAGES[@]}"
  image "$NAUTILUS_IMAGE" "$AGNHOST_IMAGE" '["/agnhost"]' '["test-webserver"]' '' "$e2e/src/nautilus/."
  image "$KITTEN_IMAGE" "$AGNHOST_IMAGE" '["/agnhost"]' '["test-webserver"]' '' "$e2e/src/kitten/."
  image "$NONROOT_IMAGE" "$debian" '[]' '["/bin/sh"]' 1234
  mkdir -p "$work/rootfs/nnp/usr/local/bin" && cp "$e2e/bin/nnp" "$work/rootfs/nnp/usr/local/bin/nnp"
  chmod 4755 "$work/rootfs/nnp/usr/local/bin/nnp"
  image "$NONEWPRIVS_IMAGE" "$BUSYBOX_IMAGE" '[]' '["nnp"]' '' "$work/rootfs/nnp/."
  image "$SAMPLE_APISERVER_IMAGE" "$BUSYBOX_IMAGE" '["/sample-apiserver"]' '' '' "$e2e/bin/sample-apiserver"
  mkdir -p "$work/rootfs/etcd/usr/local/bin"
  cp "$(dir_of etcd)/bin/etcd" "$(dir_of etcd)/bin/etcdctl" "$work/rootfs/etcd/usr/local/bin/"
  image "$ETCD_IMAGE" "$BUSYBOX_IMAGE" '[]' '["/usr/local/bin/etcd"]' '' "$work/rootfs/etcd/."
  # The control plane's: Go binaries built with CGO_ENABLED=0, so nothing beside them.
  local cp
  for cp in "${CONTROL_PLANE_IMAGES[@]}"; do
    mkdir -p "$work/rootfs/$cp/usr/local/bin" && cp "$k8s/bin/$cp" "$work/rootfs/$cp/usr/local/bin/$cp"
    image "registry.k8s.io/$cp:$KUBERNETES_VERSION" scratch "[\"/usr/local/bin/$cp\"]" '' '' "$work/rootfs/$cp/."
    printf '%s\n' "registry.k8s.io/$cp:$KUBERNETES_VERSION" > "$out/$cp.name"
  done
  retag "$ETCD_IMAGE" "registry.k8s.io/etcd:${ETCD_VERSION#v}-0"
  printf '%s\n' "registry.k8s.io/etcd:${ETCD_VERSION#v}-0" > "$out/etcd.name"

  # Names the node and the tests look up: KEY.name holds the name the image KEY was pushed as.
  printf '%s\n' "$PAUSE_IMAGE" > "$out/pause.name"
  printf '%s\n' "$AGNHOST_IMAGE" > "$out/agnhost.name"
  printf '%s\n' "$BUSYBOX_IMAGE" > "$out/busybox.name"
  printf '%s\n' "$COREDNS_IMAGE" > "$out/coredns.name"
  printf '%s\n' "$KUBECTL_IMAGE" > "$out/kubectl.name"
  # Stopped here rather than by the trap: a subshell's EXIT trap that reaps a child sets its status.
  kill "$registry" && { wait "$registry" || true; } && trap - EXIT
  rm -rf "$work"
  exec 8>&-
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
    --tests) ;;
    "") ;;
    *) echo "usage: $0 [--check|--print|--tests]" >&2; exit 2 ;;
  esac

  command -v go >/dev/null || { echo "setup: Go is required (go 1.26 or newer)" >&2; exit 1; }

  install_packages "real node" "kwok nodes only" "${NODE_PACKAGES[@]}"
  if [ "${1:-}" = --tests ]; then
    install_packages tests "the Web UI test will say so" "${TEST_PACKAGES[@]}"
  fi

  announced=""
  for c in "${COMPONENTS[@]}"; do
    if built "$c"; then step "$c: cached at $(dir_of "$c")"; continue; fi
    if [ -z "$announced" ]; then
      step "building from Go modules: about half an hour for everything on a cold 2-core machine, seconds once cached"
      announced=1
    fi
    start=$SECONDS
    # errexit stays on inside the subshell; images are optional (without them: kwok nodes only).
    set +e; ( set -e; "build_$c" ); rc=$?; set -e
    if [ $rc -ne 0 ]; then
      [ "$c" = images ] || exit $rc
      step "images: not built (exit $rc): no real node, kwok nodes only"; continue
    fi
    recipe "$c" > "$(dir_of "$c")/.complete"
    step "$c: built in $((SECONDS - start))s"
  done
  step "all components ready under $TOOLS"
}

main "$@"; exit $?
