#!/usr/bin/env bash
# The quick-start demo on a fresh machine: make the machine ready (scripts/setup.sh:
# Debian packages, the qemu user, /dev/kvm, .venv), then trace the generated demo guest
# once healthy and once broken. As root the demo runs as uid 107 with a private libvirt
# session daemon of its own, as virt-launcher does. Extra arguments go to both runs,
# e.g. `scripts/demo.sh --accel tcg`.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "== healthy: the guest prints a line on its serial port and powers off"
.venv/bin/virt-debug demo "$@"

echo
echo "== broken: the guest's disk is unreadable to QEMU's user"
.venv/bin/virt-debug demo --broken "$@"
