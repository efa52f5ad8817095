"""The machine has what the suite needs.

Most tests skip, with a reason, when a program they drive is missing, so that a
developer without e.g. Chromium can still run the rest. In CI a skip would hide a
missing install step in scripts/setup.sh, so there every program must be present.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROGRAMS = [
    "qemu-system-x86_64",
    "qemu-img",
    "strace",
    "libvirtd",
    "virsh",
    "gdb",
    "gdbserver",
    "valgrind",
    "ltrace",
    "perf",
    "setpriv",
    "chroot",
    "unshare",
    "chromium",
]

in_ci = pytest.mark.skipif(not os.environ.get("CI"), reason="only CI must have all")


@in_ci
@pytest.mark.parametrize("program", PROGRAMS)
def test_program_is_installed(program):
    assert shutil.which(program), f"{program} missing: add its package to setup.sh"


@in_ci
def test_static_busybox_for_the_bundle():
    # The bundle's shell must run in an empty root: no interpreter, no libraries.
    elf = Path("/bin/busybox").read_bytes()[:4096]
    assert elf[:4] == b"\x7fELF"
    assert b"/lib64/ld-linux" not in elf and b"/lib/ld-linux" not in elf


@in_ci
def test_python39_for_the_hook():
    # The sidecar-shim has python3.9 only; the hook and helper are run under it.
    found = list(Path("/root/.pyenv/versions").glob("3.9*/bin/python3.9"))
    found += [Path(p) for p in [shutil.which("python3.9")] if p]
    assert found, "no python3.9 to prove the hook's 3.9 compatibility"


@in_ci
def test_uid_107_exists_and_can_use_kvm_when_present():
    out = subprocess.run(["id", "107"], capture_output=True, text=True)
    assert out.returncode == 0, "setup.sh must create the qemu user (uid 107)"
    if Path("/dev/kvm").exists():
        assert "kvm" in out.stdout, "uid 107 must be in the kvm group"
