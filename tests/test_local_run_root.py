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
    env = dict(os.environ, VIRT_DEBUG_SESSION_BASE=str(base / "session"))
    env.pop("XDG_RUNTIME_DIR", None)

    def virt_debug(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "virt_debug", *args]
        return subprocess.run(
            argv, env=env, cwd=work, capture_output=True, text=True, timeout=300
        )

    try:
        # -q and the default output directory must survive the drop to uid 107.
        done = virt_debug("-q", "run", "strace", str(xml_file), "--duration", "2s")
        missing = virt_debug("run", "strace", "vd-no-such-domain")
        unknown = virt_debug("run", "no-such-debugger", str(xml_file))
        # A folder that exists is the user's: never given to uid 107.
        mine = work / "mine"
        mine.mkdir(mode=0o755)
        theirs = virt_debug("run", "strace", str(xml_file), "--output", str(mine))
    finally:
        for pid_file in (base / "session" / "runtime" / "libvirt").glob("*.pid"):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            time.sleep(1)
        shutil.rmtree(base, ignore_errors=True)

    assert done.returncode == 0, done.stderr
    assert "running `run strace` as uid 107" in done.stderr
    assert "libvirt-sock" not in done.stderr
    assert "probing" not in done.stderr and "tracing" not in done.stderr
    assert done.stdout.startswith("QEMU ran normally and was stopped by virt-debug")
    # Named after the domain, as `run --help` says.
    outputs = list((work / "virt-debug-out").iterdir())
    assert [p.name.startswith("vd-run-root-") for p in outputs] == [True]
    assert all(p.stat().st_uid == 107 for p in launch_dirs(outputs[0]))
    assert not qemu_processes_mentioning(str(work))

    # A refused run: a one-line error whose hint reaches the uid-107 daemon from
    # root's shell, and no output directory left behind.
    assert missing.returncode == 2, missing.stderr
    assert "no domain named 'vd-no-such-domain'" in missing.stderr
    assert "virsh -c 'qemu+unix:///session?socket=" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert unknown.returncode == 2, unknown.stderr
    assert "no-such-debugger" in unknown.stderr
    assert list((work / "virt-debug-out").iterdir()) == outputs
    assert theirs.returncode == 2, theirs.stderr
    assert f"uid 107 (QEMU's user) cannot write {mine}" in theirs.stderr
    assert mine.stat().st_uid == 0 and not list(mine.iterdir())
