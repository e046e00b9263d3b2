#!/usr/bin/env bash
# Build the real test components from the Go module proxy into a cache outside
# the work tree, reusing whatever is already there:
#   kube-apiserver  k8s.io/kubernetes   (testbed/kube-apiserver)
#   etcd            go.etcd.io/etcd/server/v3 (testbed/etcd)
#   helm            helm.sh/helm/v3     (go install)
#   crds/argocd     Argo CD's CRDs from the github.com/argoproj/argo-cd/v3 module
#   examples/argocd its documented full Application and AppProject (test data)
#   crds/prometheus-operator  ServiceMonitor, PrometheusRule from
#                   github.com/prometheus-operator/prometheus-operator
#   crds/cert-manager  Certificate, Issuer, ClusterIssuer from github.com/cert-manager/cert-manager
#
# The folder is named by every version and a digest of testbed/ (its "recipe"). A
# binary missing from it is first looked for in the other folders: one built from
# the same inputs (bin/NAME.recipe says which) is hard-linked, not rebuilt, so a new
# CRD version does not cost a kube-apiserver build.
#
#   scripts/testbed.sh                build what is missing, print the directory
#   scripts/testbed.sh --path         print the directory only (nothing is built)
#   scripts/testbed.sh --if-possible  as the default, but without Go say so and exit 0
#                                     (under CI=true a missing Go is still an error)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TB="$ROOT/testbed"
# shellcheck source=../testbed/versions.env
source "$TB/versions.env"
required() {  # required MODULE GO.MOD: the version GO.MOD requires of MODULE
  awk -v m="$1" '$1 == m {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$2"
}
KUBE_VERSION="$(required k8s.io/kubernetes "$TB/kube-apiserver/go.mod")"
ETCD_VERSION="$(required go.etcd.io/etcd/server/v3 "$TB/etcd/go.mod")"
RECIPE="$(cd "$TB" && cat versions.env extract.py */go.mod */go.sum */main.go | sha256sum | cut -c1-8)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mooring-testbed"
DIR="$CACHE/kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_argocd-${ARGOCD_VERSION}"
DIR+="_prometheus-operator-${PROMETHEUS_OPERATOR_VERSION}_cert-manager-${CERT_MANAGER_VERSION}_${RECIPE}"

mode="${1:-build}"
case "$mode" in
  --path) echo "$DIR"; exit 0 ;;
  build|--if-possible) ;;
  *) echo "usage: scripts/testbed.sh [--path | --if-possible]" >&2; exit 2 ;;
esac

if ! command -v go >/dev/null; then
  if [ "$mode" = "--if-possible" ] && [ "${CI:-}" != "true" ]; then
    echo "testbed: go not found; the Kubernetes tests will be skipped (install Go 1.26+, then run bash scripts/testbed.sh)"
    exit 0
  fi
  echo "testbed: go not found: install Go 1.26+ (the test bed is built from the Go module proxy)" >&2
  exit 1
fi

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" GOTOOLCHAIN=local
mkdir -p "$DIR/bin"
took=()
step() {  # step NAME OUTPUT COMMAND...: run COMMAND unless OUTPUT exists; time it
  local name="$1" out="$2"; shift 2
  if [ -e "$out" ]; then return 0; fi
  local start=$SECONDS
  echo "testbed: building $name ..." >&2
  "$@"
  took+=("$name $((SECONDS - start))s")
}

build_kube() {
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  (cd "$TB/kube-apiserver" && go build -trimpath -o "$DIR/bin/.kube-apiserver.tmp" -ldflags "-s -w \
    -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean" .)
  mv "$DIR/bin/.kube-apiserver.tmp" "$DIR/bin/kube-apiserver"
}
build_etcd() {
  (cd "$TB/etcd" && go build -trimpath -o "$DIR/bin/.etcd.tmp" -ldflags "-s -w" .)
  mv "$DIR/bin/.etcd.tmp" "$DIR/bin/etcd"
}
build_helm() {
  local gobin; gobin="$(mktemp -d "$DIR/.helm.XXXX")"
  GOBIN="$gobin" go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$gobin/helm" "$DIR/bin/helm"; rmdir "$gobin"
}
recipe() {  # recipe NAME: digest of what binary NAME is built from (its build function too)
  case "$1" in
    kube-apiserver) declare -f build_kube; cat "$TB"/kube-apiserver/{go.mod,go.sum,main.go} ;;
    etcd) declare -f build_etcd; cat "$TB"/etcd/{go.mod,go.sum,main.go} ;;
    helm) declare -f build_helm; echo "$HELM_VERSION" ;;
  esac | sha256sum | cut -c1-16
}
binary() {  # binary NAME BUILD: link NAME from a folder that built it from the same recipe, else BUILD
  local name="$1" build="$2" want stamp
  want="$(recipe "$name")"
  for stamp in "$CACHE"/*/bin/"$name.recipe"; do
    [ "$stamp" != "$DIR/bin/$name.recipe" ] && [ -x "${stamp%.recipe}" ] || continue
    [ "$(cat "$stamp")" = "$want" ] || continue
    ln -f "${stamp%.recipe}" "$DIR/bin/.$name.tmp" 2>/dev/null || cp "${stamp%.recipe}" "$DIR/bin/.$name.tmp"
    mv "$DIR/bin/.$name.tmp" "$DIR/bin/$name"
    echo "testbed: $name reused from ${stamp%/bin/*}" >&2
    echo "$want" > "$DIR/bin/$name.recipe"
    return 0
  done
  "$build"
  echo "$want" > "$DIR/bin/$name.recipe"
}
module_files() {  # module_files MODULE@VERSION OUT_DIR PATTERN...: files of a Go module
  # `go mod download` checks the module against the checksum database; extract.py
  # reads the verified zip (no go.mod or build needed). For a module that needs a
  # newer Go than ours to be *used* (Argo CD) it exits 1, after writing the zip;
  # extract.py checks that the zip is there.
  local module="$1" out="$2" info; shift 2
  info="$(go mod download -json "$module" || true)"
  python3 "$TB/extract.py" "$out" "$@" <<<"$info"
}
fetch_crds() {
  module_files "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" "$DIR/crds/argocd" \
    "manifests/crds/*-crd.yaml"
}
fetch_examples() {  # Argo CD's documented full Application and AppProject (test data)
  module_files "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" "$DIR/examples/argocd" \
    docs/operator-manual/application.yaml docs/operator-manual/project.yaml
}
fetch_monitoring_crds() {  # the generated CRDs the operator's own manifests install
  local crd=example/prometheus-operator-crd/monitoring.coreos.com
  module_files "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    "$DIR/crds/prometheus-operator" "${crd}_servicemonitors.yaml" "${crd}_prometheusrules.yaml"
}
fetch_cert_manager_crds() {  # plain controller-gen output; the chart's copies are templated
  local crd=deploy/crds/cert-manager.io
  module_files "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" "$DIR/crds/cert-manager" \
    "${crd}_certificates.yaml" "${crd}_issuers.yaml" "${crd}_clusterissuers.yaml"
}

build_all() {
  step kube-apiserver "$DIR/bin/kube-apiserver" binary kube-apiserver build_kube
  step etcd "$DIR/bin/etcd" binary etcd build_etcd
  step helm "$DIR/bin/helm" binary helm build_helm
  step "argo-cd CRDs" "$DIR/crds/argocd" fetch_crds
  step "argo-cd examples" "$DIR/examples/argocd" fetch_examples
  step "prometheus-operator CRDs" "$DIR/crds/prometheus-operator" fetch_monitoring_crds
  step "cert-manager CRDs" "$DIR/crds/cert-manager" fetch_cert_manager_crds
  if [ ${#took[@]} -gt 0 ]; then
    echo "testbed: built in this run: ${took[*]}" >&2
    printf '%s\n' "${took[@]}" >> "$DIR/build-times.txt"
  else
    echo "testbed: cached" >&2
  fi
}
# A subshell outside any condition, so `set -e` stops the build at the first failure.
set +e
(set -e; build_all)
built=$?
set -e
if [ "$built" != 0 ]; then
  if [ "$mode" = "--if-possible" ] && [ "${CI:-}" != "true" ]; then
    echo "testbed: the build failed (above; is the Go module proxy reachable?); the Kubernetes tests will be skipped" >&2
    exit 0
  fi
  echo "testbed: the build failed (above)" >&2
  exit 1
fi
"$DIR/bin/kube-apiserver" --version >&2
"$DIR/bin/etcd" --version | sed -n 1p >&2  # sed reads it all: no SIGPIPE (exit 141)
"$DIR/bin/helm" version --short >&2
echo "$DIR"
