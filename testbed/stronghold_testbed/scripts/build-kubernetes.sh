#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and kubelet from Debian's
# kubernetes 1.20.2 source package with Debian's Go, into $STRONGHOLD_CACHE/bin.
# Idempotent: exits at once when the binaries are already cached.
set -euo pipefail
cache="${STRONGHOLD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stronghold}"
bin="$cache/bin"
want=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
have=1
for b in "${want[@]}"; do [ -x "$bin/$b" ] || have=0; done
if [ "$have" = 1 ]; then echo "kubernetes binaries cached in $bin"; exit 0; fi

src="$cache/src"
mkdir -p "$src" "$bin"
if ! ls -d "$src"/kubernetes-1.20.*/ >/dev/null 2>&1; then
  # apt-get source needs a deb-src line; add one for bookworm if none exists.
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    cat > /etc/apt/sources.list.d/stronghold-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  apt-get update -q >/dev/null
  (cd "$src" && apt-get source -q kubernetes >/dev/null)
fi
tree=$(ls -d "$src"/kubernetes-1.20.*/ | head -n1)
tree=${tree%/}

# reflect2 1.0.1 (vendored) crashes kube-apiserver under Go >= 1.18; use Debian's 1.0.2.
r2=/usr/share/gocode/src/github.com/modern-go/reflect2
if [ -d "$r2" ] && [ ! -e "$tree/.stronghold-reflect2" ]; then
  rm -rf "$tree/vendor/github.com/modern-go/reflect2"
  cp -r "$r2" "$tree/vendor/github.com/modern-go/reflect2"
  touch "$tree/.stronghold-reflect2"
fi

gopath="$src/gopath"
mkdir -p "$gopath/src/k8s.io"
ln -sfn "$tree" "$gopath/src/k8s.io/kubernetes"
cd "$gopath/src/k8s.io/kubernetes"
export GOPATH="$gopath" GOCACHE="$cache/go-build" CGO_ENABLED=0 GO111MODULE=off
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet"
for b in "${want[@]}"; do install -m 0755 "_output/local/bin/linux/amd64/$b" "$bin/$b"; done
echo "kubernetes binaries built into $bin"
