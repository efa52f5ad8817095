"""`virt-debug demo`: the generated guest, healthy and broken, as a user runs it."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from virt_debug.backends.libvirt.collect import launch_dirs
from virt_debug.backends.libvirt.daemon import qemu_processes_mentioning
from virt_debug.demo.bootsector import GREETING, boot_sector
from virt_debug.demo.guest import DEFAULT_NAME

# strace -Y names each line's thread: "1234<CPU 0/KVM> 10:00:00.000 ...".
THREAD_NAME = re.compile(r"^\d+<([^>]*)>", re.MULTILINE)


def test_boot_sector_is_bootable_and_carries_the_greeting():
    sector = boot_sector()

    assert len(sector) == 512
    assert sector.endswith(b"\x55\xaa")
    assert GREETING.encode() in sector


@pytest.mark.libvirt
@pytest.mark.slow
def test_healthy_demo_prints_the_serial_line_and_every_thread(local_libvirt):
    work = local_libvirt.workdir("demo-healthy")
    output = work / "out"

    done = local_libvirt.virt_debug(["demo", "--output", str(output)], cwd=work)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("QEMU ran and ended normally")
    assert "no known cause" not in done.stdout
    # Piped and saved summaries wrap at 100 columns; only a path may stand longer.
    saved = (output / "summary.txt").read_text()
    for line in [*done.stdout.splitlines(), *saved.splitlines()]:
        assert len(line) <= 100 or " " not in line.strip(), line
    # Each progress line reads as one sentence.
    assert "probing: defining " in done.stderr
    assert "collecting: gathering the traces" in done.stderr
    serial = output / "guest" / "serial.log"
    assert f"the guest wrote, in {serial}:\n  {GREETING}" in done.stdout
    assert "the guest stopped" in done.stdout
    # Main thread, vCPU, monitor I/O thread, RCU...: all in the trace, by name.
    (launch,) = launch_dirs(output)
    names = set(
        THREAD_NAME.findall((launch / "strace.log").read_text(errors="replace"))
    )
    assert len(names) > 1 and any(n.startswith("CPU 0/") for n in names), names
    assert DEFAULT_NAME not in local_libvirt.domain_names()


@pytest.mark.libvirt
@pytest.mark.slow
def test_broken_demo_names_the_failing_open_and_the_disk(local_libvirt):
    work = local_libvirt.workdir("demo-broken")
    output = work / "out"
    disk = output / "guest" / "disk.img"

    done = local_libvirt.virt_debug(
        ["demo", "--broken", "--output", str(output)], cwd=work
    )

    # QEMU failed as the demo intends: the summary says why, and the demo succeeded.
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr
    assert "as intended, the guest never ran" in done.stdout
    assert done.stdout.startswith("QEMU failed to start")
    assert "the start failed" in done.stdout
    # The failing open and its path, whichever way the summary lays them out.
    assert str(disk) in done.stdout
    assert "open" in done.stdout
    assert "EACCES" in done.stdout or "Permission denied" in done.stdout
    assert DEFAULT_NAME not in local_libvirt.domain_names()


@pytest.mark.libvirt
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the drop to uid 107 is for root")
def test_demo_as_root_drops_to_uid_107_and_starts_its_own_daemon(local_libvirt):
    # Its own base directory, so the machine's /var/tmp one is left alone.
    base = Path(tempfile.mkdtemp(prefix="virt-debug-root-demo-", dir="/tmp"))
    base.chmod(0o755)
    output = local_libvirt.workdir("demo-root") / "out"
    env = dict(os.environ, VIRT_DEBUG_SESSION_BASE=str(base / "session"))
    env.pop("XDG_RUNTIME_DIR", None)

    # --broken: the drop and the daemon are what this test is about, and a guest whose
    # start fails at once keeps it short.
    argv = [
        sys.executable,
        "-m",
        "virt_debug",
        "demo",
        "--broken",
        "--output",
        str(output),
    ]
    try:
        done = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        # The daemon the demo started (libvirtd.pid, or virtqemud.pid).
        for pid_file in (base / "session" / "runtime" / "libvirt").glob("*.pid"):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            time.sleep(1)
        shutil.rmtree(base, ignore_errors=True)

    # The broken demo's failure is what it sets out to show: a success.
    assert done.returncode == 0, done.stderr
    assert "as intended, the guest never ran" in done.stdout
    assert "error" not in done.stderr
    assert "starting one" in done.stderr
    assert "running the demo as uid 107" in done.stderr
    assert str(output / "guest" / "disk.img") in done.stdout
    # Everything the guest run left was made by uid 107.
    assert all(p.stat().st_uid == 107 for p in launch_dirs(output))
    assert not qemu_processes_mentioning(str(output))
