#!/usr/bin/env bash
# Make this machine ready for virt-debug: Debian packages, the qemu user (uid 107, as in
# virt-launcher), access to /dev/kvm when the kernel offers it, and the Python environment
# in .venv. Safe to run again: it only does what is missing. Needs root for the first part.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
    qemu-system-x86 qemu-utils strace gdb gdbserver valgrind ltrace linux-perf
    busybox-static chromium
)

if [ "$(id -u)" = 0 ]; then
    missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi

    # virt-launcher runs libvirt and QEMU as qemu:qemu, 107:107.
    getent group 107 >/dev/null || groupadd -g 107 qemu
    getent passwd 107 >/dev/null || useradd -u 107 -g 107 -M -d /nonexistent -s /usr/sbin/nologin qemu

    # KVM when usable: let uid 107 open /dev/kvm, as the device plugin does in a cluster.
    if [ -c /dev/kvm ]; then
        getent group kvm >/dev/null || groupadd -r kvm
        chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
        usermod -a -G kvm "$(getent passwd 107 | cut -d: -f1)"
    fi
else
    echo "setup: not root; assuming the Debian packages and the qemu user are there" >&2
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
if [ ! -x .venv/bin/virt-debug ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e '.[libvirt,test]'
    touch .venv/.installed
fi
