"""`virt-debug run` as root with the default URI: the same drop to uid 107 as demo."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import chown_tree
from virt_debug.backends.libvirt.collect import launch_dirs
from virt_debug.backends.libvirt.daemon import qemu_processes_mentioning

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the drop to uid 107 is for root"),
]


def test_run_as_root_drops_to_uid_107_with_its_own_daemon(local_libvirt, guest_xml):
    # Its own base directory, so the machine's /var/tmp one is left alone.
    base = Path(tempfile.mkdtemp(prefix="virt-debug-root-run-", dir="/tmp"))
    base.chmod(0o755)
    work = local_libvirt.workdir("run-root")
    xml_file = work / "guest.xml"
    xml_file.write_text(guest_xml(work / "guest", "vd-run-root"))
    chown_tree(work, local_libvirt.uid, local_libvirt.daemon.gid)
    output = work / "out"
    env = dict(os.environ, VIRT_DEBUG_SESSION_BASE=str(base / "session"))
    env.pop("XDG_RUNTIME_DIR", None)

    argv = [sys.executable, "-m", "virt_debug", "run", "strace", str(xml_file)]
    argv += ["--duration", "2s", "--output", str(output)]
    try:
        done = subprocess.run(
            argv, env=env, cwd=work, capture_output=True, text=True, timeout=300
        )
    finally:
        for pid_file in (base / "session" / "runtime" / "libvirt").glob("*.pid"):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            time.sleep(1)
        shutil.rmtree(base, ignore_errors=True)

    assert done.returncode == 0, done.stderr
    assert "running run strace as uid 107" in done.stderr
    assert "libvirt-sock" not in done.stderr
    assert done.stdout.startswith("QEMU ran normally and was stopped by virt-debug")
    assert all(p.stat().st_uid == 107 for p in launch_dirs(output))
    assert not qemu_processes_mentioning(str(work))
