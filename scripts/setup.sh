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
  esac
}
COMPONENTS=(temporal etcd kwok kubernetes)

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
  step "kubernetes $v (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) -> $out"
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
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local pkgs=(); for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
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
}

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

announced=""
for c in "${COMPONENTS[@]}"; do
  if built "$c"; then step "$c: cached at $(dir_of "$c")"; continue; fi
  if [ -z "$announced" ]; then
    step "building from Go modules: about 12 minutes for everything on a cold 2-core machine, seconds once cached"
    announced=1
  fi
  start=$SECONDS
  ( "build_$c" )
  recipe "$c" > "$(dir_of "$c")/.complete"
  step "$c: built in $((SECONDS - start))s"
done
step "all components ready under $TOOLS"
