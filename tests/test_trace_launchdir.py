"""The analysis of a real launch directory of the emulator wrapper.

The wrapper's default strace filter leaves ``write`` out, so QEMU's own error message
is not in ``strace.log``: it is in the ``stderr`` file beside it, with ``filter`` (the
calls left out) and ``status`` (how QEMU ended). These tests run the real wrapper
around a real QEMU whose ``-drive`` file is missing, then analyse what it left.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from virt_debug.trace import analyze_paths
from virt_debug.trace.report import FORMATS, render
from wrapper_harness import (
    QEMU,
    SHELLS,
    kill_all,
    make_workspace,
    qemu_pids,
    remove_workspace,
)

CORPUS = Path(__file__).parent / "data" / "traces" / "qemu"
SECRET = "vd-SECRET-0123456789"

needs_qemu = pytest.mark.skipif(
    not os.path.exists(QEMU), reason="qemu-system-x86_64 missing"
)


def _launch(full: bool = False, extra: str = "") -> tuple[Path, Path]:
    """Run the wrapper (as libvirt would) on a QEMU whose disk is missing: the
    launch directory it made and the missing disk's path."""
    work = make_workspace()
    try:
        missing = work.root / "no such dir" / "disk.img"
        args = ["-name", "guest=t", "-machine", "pc,accel=tcg", "-display", "none"]
        args += ["-nodefaults", "-drive", f"file={missing},format=raw,if=ide{extra}"]
        proc = work.start(SHELLS["dash"], work.write_wrapper(full=full), args)
        assert proc.wait(60) == 1, work.stderr()
        (launch,) = work.launch_dirs()
        # Keep the launch directory beyond the workspace: the tests read it later.
        kept = Path(work.root.parent / f"{work.root.name}-launch")
        shutil.copytree(launch, kept)
        return kept, missing
    finally:
        kill_all(qemu_pids(str(work.root)))
        remove_workspace(work)


@pytest.fixture(scope="module")
def default_launch():
    launch, missing = _launch()
    yield launch, missing
    shutil.rmtree(launch, ignore_errors=True)


@pytest.mark.libvirt
@needs_qemu
def test_summary_shows_qemus_message_from_the_stderr_file(default_launch):
    launch, missing = default_launch
    assert "write" in (launch / "filter").read_text().split()
    assert "Could not open" not in (launch / "strace.log").read_text()

    a = analyze_paths([launch])

    assert "Could not open" in a.qemu_stderr and str(missing) in a.qemu_stderr
    assert a.stderr_file == str(launch / "stderr")
    assert "write" in a.not_traced and "read" in a.not_traced
    assert a.launch_status == "exit 1"
    assert (a.ended.how, a.ended.code) == ("exited", 1)
    assert not a.notes, "status file and trace agree"
    top = a.hints[0]
    assert top.rule == "image" and str(missing) in top.title
    assert top.confirmed, "QEMU's message (in the stderr file) confirms the hint"
    said = [e for e in top.evidence if e.text.startswith("QEMU stderr")]
    assert said and said[0].source == str(launch / "stderr") and said[0].line == 1
    assert "Could not open" in said[0].text

    summary = render(a, "text", width=100)
    # Long lines wrap at the width: compare with the whitespace made single.
    flat = " ".join(summary.split())
    assert "Could not open" in flat
    assert f"Could not open '{missing}'" in flat
    assert "not traced: recvmsg ppoll poll read write" in summary
    assert "Wrapper's status file: exit 1" in summary


@pytest.mark.libvirt
@needs_qemu
def test_json_and_html_name_the_calls_not_traced(default_launch):
    launch, missing = default_launch
    a = analyze_paths([launch / "strace.log"])  # the trace file itself works too

    data = json.loads(render(a, "json"))
    assert data["launch"]["not_traced"] == ["recvmsg", "ppoll", "poll", "read", "write"]
    assert data["launch"]["status"] == "exit 1"
    assert data["launch"]["stderr_file"] == str(launch / "stderr")
    assert "Could not open" in data["qemu"]["stderr"]
    page = render(a, "html")
    assert "not traced: recvmsg ppoll poll read write" in page
    assert "Could not open" in page


@pytest.mark.libvirt
@needs_qemu
def test_full_mode_takes_qemus_message_from_the_trace():
    launch, missing = _launch(full=True)
    try:
        assert not (launch / "filter").exists()
        a = analyze_paths([launch])
        assert "Could not open" in a.qemu_stderr and str(missing) in a.qemu_stderr
        assert a.stderr_file is None and a.not_traced == []
        said = [e for e in a.hints[0].evidence if e.text.startswith("QEMU stderr")]
        assert said and said[0].source == str(launch / "strace.log")
    finally:
        shutil.rmtree(launch, ignore_errors=True)


@pytest.mark.libvirt
@needs_qemu
def test_secret_in_qemus_message_is_redacted_in_every_format():
    # QEMU repeats the option it rejects, secret value and all, in its message.
    launch, missing = _launch(extra=f",password={SECRET}")
    try:
        assert SECRET in (launch / "stderr").read_text()
        a = analyze_paths([launch])
        assert "Could not open" in a.qemu_stderr
        for fmt in FORMATS:
            assert SECRET not in render(a, fmt), fmt
        kept = analyze_paths([launch], redact=False)
        assert SECRET in kept.qemu_stderr
    finally:
        shutil.rmtree(launch, ignore_errors=True)


# -- launch directories made by hand: odd, cut or contradicting files --------------


def _fake_launch(tmp_path: Path, trace: str, **files: bytes) -> Path:
    launch = tmp_path / "20261203-120000-1"
    launch.mkdir()
    shutil.copy(CORPUS / trace, launch / "strace.log")
    (launch / "argv").write_bytes(b"/usr/bin/qemu-system-x86_64\0")
    (launch / "wrapper.log").write_text("virt-debug wrapper: pid 1\n")
    for name, data in files.items():
        (launch / name).write_bytes(data)
    return launch


def test_status_that_contradicts_the_trace_is_noted(tmp_path):
    launch = _fake_launch(tmp_path, "disk-missing.strace", status=b"exit 0\n")
    a = analyze_paths([launch])
    assert (a.ended.how, a.ended.code) == ("exited", 1)  # the trace has the last word
    assert any("status file says 'exit 0'" in note for note in a.notes), a.notes


def test_forwarded_sigterm_is_not_a_contradiction(tmp_path):
    launch = _fake_launch(tmp_path, "kvm-ok.strace", status=b"signal TERM\n")
    a = analyze_paths([launch])
    assert a.launch_status == "signal TERM"
    assert any("asked to stop with SIGTERM" in n for n in a.notes), a.notes


def test_trace_cut_before_the_end_takes_the_end_from_the_status(tmp_path):
    lines = (CORPUS / "disk-missing.strace").read_text().splitlines(keepends=True)
    cut = [line for line in lines if "+++" not in line and "exit_group" not in line]
    launch = tmp_path / "20261203-120000-2"
    launch.mkdir()
    (launch / "strace.log").write_text("".join(cut))
    (launch / "wrapper.log").write_text("virt-debug wrapper: pid 1\n")
    (launch / "status").write_text("exit 1\n")
    a = analyze_paths([launch])
    assert (a.ended.how, a.ended.code) == ("exited", 1)
    assert a.ended.evidence.source == str(launch / "status")
    assert any("ends before QEMU does" in note for note in a.notes)


def test_hostile_sidecar_files_never_break_the_analysis(tmp_path):
    noise = bytes(range(256)) * 2000 + b"\nqemu-system-x86_64: last words\n"
    launch = _fake_launch(
        tmp_path,
        "disk-missing.strace",
        stderr=noise,
        filter=b"\xff\xfe read write <script> $(x) read\n" + b"rm -rf /\n" * 500,
        status=b"exit 99999999999999\n\0",
    )
    a = analyze_paths([launch])
    # The trace has QEMU's writes to fd 2: they win over the file.
    assert "Could not open" in a.qemu_stderr and a.stderr_file is None
    assert a.not_traced == ["read", "write"]
    assert a.launch_status is None
    for fmt in FORMATS:
        render(a, fmt)


def test_big_stderr_file_keeps_its_end_with_true_line_numbers(tmp_path):
    disk = "/var/lib/vd-missing/disk0.qcow2"
    body = b"".join(b"line %d of chatter\n" % n for n in range(1, 20001))
    body += f"qemu-system-x86_64: Could not open '{disk}'\n".encode()
    launch = tmp_path / "20261203-120000-3"
    launch.mkdir()
    trace = (CORPUS / "disk-missing.strace").read_text().splitlines(keepends=True)
    # Without QEMU's writes to fd 2, as the default filter traces it.
    kept = [line for line in trace if " write(2" not in line and "writev(2" not in line]
    (launch / "strace.log").write_text("".join(kept))
    (launch / "argv").write_bytes(b"qemu\0")
    (launch / "stderr").write_bytes(body)
    (launch / "status").write_text("exit 1\n")

    a = analyze_paths([launch])

    assert a.qemu_stderr.endswith(f"Could not open '{disk}'\n")
    assert len(a.qemu_stderr) <= 65536
    assert any("QEMU's stderr: the first" in note for note in a.notes), a.notes
    top = a.hints[0]
    assert top.rule == "image" and top.confirmed
    said = [e for e in top.evidence if e.text.startswith("QEMU stderr")]
    assert said[0].source == str(launch / "stderr") and said[0].line == 20001
