#!/usr/bin/env bash
# The e2e sandbox: runs CMD inside a network namespace of its own, with virtlogd and a libvirtd
# that live in that namespace (so bridges, dnsmasq and VMs live there too), after making sure
# the golden image exists. On this kind of machine, traffic to private addresses is only allowed
# to test hosts inside a namespace the test made itself, and there is no systemd to start
# libvirt: this script is what makes `npm run test:e2e` work here.
#
# usage: test/e2e/sandbox.sh CMD [ARGS...]
#   BOMA_IT_NETNS     namespace name (default boma-it-e2e)
#   BOMA_IT_IMAGE     golden image to make sure of (default debian-13-local; "none" to skip)
#   BOMA_IT_STATE_CACHE  saved first boots; default a fresh folder for this call, removed after
#                        it (so a suite's first VM always boots, and the rest start from it)
set -euo pipefail

netns="${BOMA_IT_NETNS:-boma-it-e2e}"
image="${BOMA_IT_IMAGE:-debian-13-local}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

say() { printf 'sandbox: %s\n' "$*" >&2; }
die() { printf 'sandbox: %s\n' "$*" >&2; exit 3; }

[ "$#" -gt 0 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (it makes a network namespace and starts libvirtd); run it with sudo"
for tool in ip libvirtd virtlogd virsh; do
  command -v "$tool" >/dev/null || die "missing $tool: apt-get install iproute2 libvirt-daemon-system libvirt-clients"
done

# The namespace: made once, reused by later calls (CI makes it anew on a fresh machine).
if ! ip netns list | grep -qw "$netns"; then
  say "creating network namespace $netns"
  ip netns add "$netns"
fi
ip netns exec "$netns" ip link set lo up

# libvirtd must live in our namespace; one that lives elsewhere would put bridges and VMs outside.
libvirtd_pid="$(pgrep -x libvirtd | head -n1 || true)"
if [ -n "$libvirtd_pid" ]; then
  where="$(ip netns identify "$libvirtd_pid" 2>/dev/null || true)"
  [ "$where" = "$netns" ] || die "a libvirtd (pid $libvirtd_pid) runs outside namespace $netns (in '${where:-the host}'); stop it first: kill $libvirtd_pid"
else
  pgrep -x virtlogd >/dev/null || { say "starting virtlogd"; virtlogd -d; }
  say "starting libvirtd inside $netns"
  ip netns exec "$netns" libvirtd -d
  for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
  virsh -c qemu:///system version >/dev/null 2>&1 || die "libvirtd did not answer within 10 s"
fi
pgrep -x virtlogd >/dev/null || { say "starting virtlogd"; virtlogd -d; }

if [ "$image" != none ]; then
  node_bin="$root/node_modules/.bin/node"
  [ -x "$node_bin" ] || die "run npm ci first (Node 24 comes from the node@24 devDependency)"
  # Idempotent: returns at once when the image is in the cache, builds or pulls it otherwise.
  case "$image" in
    debian-13-local) "$node_bin" "$root/orchestrator/cli/main.ts" image build "$image" >&2 ;;
    *) "$node_bin" "$root/orchestrator/cli/main.ts" image pull "$image" >&2 ;;
  esac
fi

export BOMA_IT_SANDBOX="$netns"
if [ -n "${BOMA_IT_STATE_CACHE:-}" ]; then
  exec ip netns exec "$netns" "$@"
fi
states="$(mktemp -d /tmp/boma-it-e2e-states.XXXXXX)"
export BOMA_IT_STATE_CACHE="$states"
trap 'rm -rf "$states"' EXIT
set +e
ip netns exec "$netns" "$@"
exit $?
