#!/bin/sh
# ringside on a local Kind cluster (docs/kubernetes.md):
#   scripts/kind.sh up     create the cluster, build and load the image, generate the
#                          NATS passwords (a Secret), apply the overlay, wait, say how
#                          to open the dashboard and tail the events
#   scripts/kind.sh down   delete the cluster
# Settings: RINGSIDE_KIND_CLUSTER (ringside), RINGSIDE_OVERLAY (deploy/overlays/kind),
# RINGSIDE_ENGINE (docker or podman; default: docker if present, else podman).
set -eu
cd "$(dirname "$0")/.."
CLUSTER=${RINGSIDE_KIND_CLUSTER:-ringside}
OVERLAY=${RINGSIDE_OVERLAY:-deploy/overlays/kind}
IMAGE=ringside:dev
NS=ringside

say() { printf '\n\033[1m=== %s\033[0m\n' "$*"; }
die() { printf 'kind.sh: error: %s\n' "$*" >&2; exit 1; }

# Checks every tool first, so one run names everything that is missing.
need_tools() {
    missing=0
    ENGINE=${RINGSIDE_ENGINE:-}
    if [ -z "$ENGINE" ]; then
        if command -v docker >/dev/null 2>&1; then ENGINE=docker
        elif command -v podman >/dev/null 2>&1; then ENGINE=podman
        fi
    fi
    if [ -z "$ENGINE" ] || ! command -v "$ENGINE" >/dev/null 2>&1; then
        echo "kind.sh: missing a container engine: install docker (https://docs.docker.com/engine/install/) or podman (apt-get install podman)" >&2
        missing=1
    fi
    command -v kind >/dev/null 2>&1 || {
        echo "kind.sh: missing kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation (go install sigs.k8s.io/kind@latest)" >&2
        missing=1
    }
    command -v kubectl >/dev/null 2>&1 || {
        echo "kind.sh: missing kubectl: https://kubernetes.io/docs/tasks/tools/" >&2
        missing=1
    }
    [ "$missing" = 0 ] || exit 1
    # kind drives podman only when told to.
    [ "$ENGINE" = podman ] && export KIND_EXPERIMENTAL_PROVIDER=podman
    return 0
}

password() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

up() {
    need_tools
    if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
        say "Kind cluster $CLUSTER exists; using it"
    else
        say "kind create cluster --name $CLUSTER (a control plane, two workers)"
        kind create cluster --name "$CLUSTER" --config deploy/kind/cluster.yaml
    fi
    kubectl config use-context "kind-$CLUSTER" >/dev/null

    [ -f Dockerfile ] || die "no Dockerfile at the repository root: the image cannot be built"
    say "$ENGINE build -t $IMAGE ."
    "$ENGINE" build -t "$IMAGE" .
    say "loading $IMAGE into the cluster's nodes"
    if [ "$ENGINE" = docker ]; then
        kind load docker-image "$IMAGE" --name "$CLUSTER"
    else
        archive=$(mktemp)
        podman save "$IMAGE" -o "$archive"
        kind load image-archive "$archive" --name "$CLUSTER"
        rm -f "$archive"
    fi

    say "NATS passwords: Secret $NS/ringside-nats (generated once, never written to disk)"
    kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    if kubectl -n "$NS" get secret ringside-nats >/dev/null 2>&1; then
        echo "kept the existing Secret (delete it and the nats pods to rotate)"
    else
        kubectl -n "$NS" create secret generic ringside-nats \
            --from-literal=watcher="$(password)" --from-literal=reducer="$(password)" \
            --from-literal=node="$(password)" --from-literal=collector="$(password)" \
            --from-literal=bridge="$(password)" --from-literal=admin="$(password)"
    fi

    say "kubectl apply -k $OVERLAY"
    kubectl apply -k "$OVERLAY"

    say "waiting for NATS, the streams and buckets (Job ringside-provision), the services"
    kubectl -n "$NS" rollout status statefulset/nats --timeout=300s
    kubectl -n "$NS" wait --for=condition=complete job/ringside-provision --timeout=300s
    for d in ringside-reducer ringside-watcher ringside-collector ringside-bridge ringside-node prometheus; do
        kubectl -n "$NS" rollout status "deployment/$d" --timeout=300s
    done
    for d in prometheus-adapter metrics-server; do
        kubectl -n kube-system rollout status "deployment/$d" --timeout=300s
    done
    kubectl -n "$NS" get pods -o wide

    say "ringside runs on Kind"
    cat <<TXT
Dashboard:   kubectl -n $NS port-forward svc/ringside-bridge 9480:9480
             then open http://127.0.0.1:9480/
Tail events: kubectl -n $NS port-forward svc/nats 4222:4222 &
             RINGSIDE_NATS_PASSWORD_ADMIN=\$(kubectl -n $NS get secret ringside-nats -o jsonpath='{.data.admin}' | base64 -d) \\
               just ringside tail --nats-url nats://127.0.0.1:4222
Autoscaler:  kubectl -n $NS get hpa ringside-node --watch
Load:        kubectl apply -k deploy/load   (150 client pods, 5 minutes)
Stop:        just down
TXT
}

down() {
    command -v kind >/dev/null 2>&1 || die "missing kind: nothing to delete with"
    if [ -z "${RINGSIDE_ENGINE:-}" ] && ! command -v docker >/dev/null 2>&1 && command -v podman >/dev/null 2>&1; then
        export KIND_EXPERIMENTAL_PROVIDER=podman
    fi
    [ "${RINGSIDE_ENGINE:-}" = podman ] && export KIND_EXPERIMENTAL_PROVIDER=podman
    kind delete cluster --name "$CLUSTER"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) die "usage: scripts/kind.sh up|down" ;;
esac
