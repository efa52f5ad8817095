"""Redaction and root causes on traces made now: QEMU run under strace on this host.

QEMU gets a master-key-like secret file and, over QMP, an ``object-add`` of a
secret whose bytes it reads one per ``recvmsg``; the trace is full (``-s 4096``)."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from virt_debug.trace import analyze_paths
from virt_debug.trace.report import FORMATS, render

QEMU = shutil.which("qemu-system-x86_64")
STRACE = shutil.which("strace")
SECRET = "hunter2-SECRET"
KEY = "MK-live-0123456789abcdefghijklmn"

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (QEMU and STRACE), reason="needs qemu-system-x86_64, strace"
    ),
]
BASE = ["-nodefaults", "-display", "none", "-m", "32", "-no-user-config"]


def qmp(sock_path: Path, commands: list[dict]) -> None:
    for _ in range(200):
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(sock_path))
            break
        except OSError:
            time.sleep(0.05)
    else:
        raise AssertionError("QEMU's QMP socket never came up")
    stream = sock.makefile("rwb", buffering=0)
    stream.readline()  # greeting
    for command in commands:
        stream.write(json.dumps(command).encode() + b"\n")
        while "event" in json.loads(stream.readline()):
            pass
    sock.close()


@pytest.fixture(scope="module")
def live_trace(tmp_path_factory):
    work = tmp_path_factory.mktemp("live")
    key = work / "master-key.aes"
    key.write_text(KEY)
    sock = work / "qmp.sock"
    out = work / "strace.log"
    proc = subprocess.Popen(
        [STRACE, "-f", "-tt", "-T", "-yy", "-s", "4096", "-o", str(out), QEMU, *BASE,
         "-accel", "tcg", "-S",
         "-object", f"secret,id=masterKey0,format=raw,file={key}",
         "-qmp", f"unix:{sock},server=on,wait=off"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        qmp(
            sock,
            [
                {"execute": "qmp_capabilities"},
                {
                    "execute": "object-add",
                    "arguments": {"qom-type": "secret", "id": "s0", "data": SECRET},
                },
                {"execute": "quit"},
            ],
        )
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert SECRET[0] in out.read_text()  # the trace itself does carry it, byte by byte
    assert KEY in out.read_text()
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_live_secrets_never_in_a_report(live_trace, fmt):
    redacted = render(analyze_paths([live_trace]), fmt, verbose=True)
    plain = render(analyze_paths([live_trace], redact=False), fmt, verbose=True)

    assert SECRET not in redacted and KEY not in redacted
    assert SECRET in plain and KEY in plain


def test_live_clean_quit(live_trace):
    a = analyze_paths([live_trace])

    assert (a.ended.how, a.ended.code) == ("exited", 0)
    assert a.hints == [] and a.failures == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to uid 107")
def test_live_kvm_denied_as_qemu_user_without_kvm_group():
    # uid 107 cannot enter pytest's private tmp dirs: a world-writable one of ours.
    work = Path(tempfile.mkdtemp(prefix="virt-debug-kvm-"))
    work.chmod(0o1777)
    out = work / "kvm.strace"
    subprocess.run(
        ["setpriv", "--reuid", "107", "--regid", "107", "--clear-groups",
         STRACE, "-f", "-tt", "-T", "-yy", "-o", str(out), QEMU, *BASE,
         "-accel", "kvm"],
        stderr=subprocess.DEVNULL, timeout=60, check=False,
    )  # fmt: skip

    try:
        a = analyze_paths([out])
    finally:
        shutil.rmtree(work)

    assert a.hints[0].rule == "kvm-device" and a.hints[0].confirmed
    assert a.ended.code == 1
    # strace's default -s 32 cut QEMU's message: the cut pieces are marked
    assert "failed to initialize kvm: Permis[...]" in a.qemu_stderr
