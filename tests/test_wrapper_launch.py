"""The strace emulator wrapper launching a real QEMU the way libvirt does.

Each test runs under every shell there is (dash, bash, busybox sh), as uid 107 when
the suite runs as root, with libvirt's kinds of invocation: the capability probe, the
real launch, libvirt's SIGTERM on destroy, a QEMU that fails.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from wrapper_harness import (
    QEMU,
    QMP,
    SHELLS,
    kill_all,
    make_workspace,
    qemu_pids,
    real_args,
    remove_workspace,
    trace_pids,
    wait_gone,
)

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.skipif(not os.path.exists(QEMU), reason="qemu-system-x86_64 missing"),
]

shells = pytest.mark.parametrize("shell", list(SHELLS.values()), ids=list(SHELLS))


@pytest.fixture()
def work():
    work = make_workspace()
    yield work
    kill_all(qemu_pids(str(work.root)))
    remove_workspace(work)


def finish(proc: subprocess.Popen, timeout: float = 60) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@shells
def test_probe_daemonizes_untraced_and_returns(shell, work):
    wrapper = work.write_wrapper()
    # Probes only note themselves in an existing output directory.
    work.out.mkdir()
    work.chown(work.out)
    pidfile = work.root / "probe.pid"
    args = [
        "-S", "-no-user-config", "-nodefaults", "-nographic",
        "-machine", "none,accel=kvm:tcg",
        "-qmp", f"unix:{work.root}/probe.sock,server=on,wait=off",
        "-pidfile", str(pidfile), "-daemonize",
    ]  # fmt: skip
    proc = work.start(shell, wrapper, args)
    # A traced probe never returns; a generous guard keeps a regression from hanging.
    assert finish(proc, timeout=60) == 0, work.stderr()

    pid = int(pidfile.read_text())
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        assert "\nTracerPid:\t0\n" in status, "the probe's QEMU is being traced"
        assert work.launch_dirs() == []
        assert "probe" in (work.out / "probes.log").read_text()
    finally:
        os.kill(pid, signal.SIGKILL)


@shells
def test_version_probe_is_plain_qemu(shell, work):
    proc = work.start(shell, work.write_wrapper(), ["-version"])
    assert finish(proc) == 0
    assert "QEMU emulator version" in work.stderr()
    assert work.launch_dirs() == []


@shells
def test_real_launch_traces_every_thread_with_arguments_intact(shell, work):
    wrapper = work.write_wrapper()
    sock = work.root / "qmp.sock"
    product = "a b  c"
    weird = "*?[x] 'q' \"dq\" back\\slash\nnew line $HOME `id` é"
    smbios = f"type=1,manufacturer=Acme Corp,product={product},version={weird}"
    args = [*real_args(sock), "-smbios", smbios]
    proc = work.start(shell, wrapper, args)

    qmp = QMP(sock)
    assert qmp.command("query-status")["status"] == "running"
    (pid,) = qemu_pids(str(sock))
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert cmdline == [QEMU.encode(), *(a.encode() for a in args)]
    qmp.quit()
    assert finish(proc) == 0, work.stderr()

    (launch,) = work.launch_dirs()
    argv = (launch / "argv").read_bytes().split(b"\0")[:-1]
    assert argv == [QEMU.encode(), *(a.encode() for a in args)]
    assert (launch / "status").read_text() == "exit 0\n"
    assert "recvmsg" in (launch / "filter").read_text()
    log = launch / "strace.log"
    assert len(trace_pids(log)) > 1, "only one thread traced"
    assert "execve(" in log.read_text()
    assert "except (never recorded)" in (launch / "wrapper.log").read_text()


@shells
def test_empty_and_glob_arguments_reach_qemu(shell, work):
    # QEMU stops at -version before it looks at what follows it.
    args = ["-name", "guest=t", "-version", "", "*", "?", "a  b", "x\ny", "'\"\\"]
    proc = work.start(shell, work.write_wrapper(), args)
    assert finish(proc) == 0, work.stderr()
    (launch,) = work.launch_dirs()
    argv = (launch / "argv").read_bytes().split(b"\0")[:-1]
    assert argv == [QEMU.encode(), *(a.encode() for a in args)]
    execve = (launch / "strace.log").read_text().split("execve(", 1)[1]
    assert '"", "*", "?", "a  b", "x\\ny", "\'\\"\\\\"]' in execve


@shells
def test_two_launches_give_two_trace_directories(shell, work):
    wrapper = work.write_wrapper()
    for _ in range(2):
        proc = work.start(shell, wrapper, ["-name", "guest=t", "-version"])
        assert finish(proc) == 0
    launches = work.launch_dirs()
    assert len(launches) == 2
    for launch in launches:
        assert (launch / "strace.log").stat().st_size > 0
        assert (launch / "status").read_text() == "exit 0\n"


@shells
def test_tool_library_path_never_reaches_qemu(shell, work):
    tools = work.root / "tools"
    (tools / "lib").mkdir(parents=True)
    env = {
        "PATH": f"{tools}/bin:/usr/bin:/bin",
        "LD_LIBRARY_PATH": f"{tools}/lib",
        "LD_PRELOAD": "",
        "LC_ALL": "C",
    }
    sock = work.root / "qmp.sock"
    proc = work.start(shell, work.write_wrapper(), real_args(sock), env=env)
    qmp = QMP(sock)
    (pid,) = qemu_pids(str(sock))
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    qmp.quit()
    assert finish(proc) == 0, work.stderr()
    names = {entry.split(b"=", 1)[0] for entry in environ if entry}
    assert not names & {b"LD_LIBRARY_PATH", b"LD_PRELOAD", b"LD_AUDIT"}
    assert b"LC_ALL=C" in environ


@shells
def test_sigterm_to_the_wrapper_leaves_no_qemu(shell, work):
    sock = work.root / "qmp.sock"
    proc = work.start(shell, work.write_wrapper(), real_args(sock))
    qmp = QMP(sock)
    pids = qemu_pids(str(sock))
    assert len(pids) == 1

    # What libvirt's destroy does first: SIGTERM to the pid it started.
    proc.send_signal(signal.SIGTERM)
    # QEMU ends itself cleanly on SIGTERM: its status is the wrapper's.
    assert finish(proc, timeout=30) == 0
    qmp.close()
    assert wait_gone(pids, timeout=5) == []
    (launch,) = work.launch_dirs()
    assert (launch / "status").read_text() == "exit 0\n"
    assert (launch / "forwarded").read_text() == "TERM\n"
    assert "SIGTERM" in (launch / "strace.log").read_text()


@shells
def test_sigterm_after_qemu_failed_keeps_qemus_own_status(shell, work):
    # libvirt sends SIGTERM once QEMU has gone (a missing firmware file, here): the
    # status must still say QEMU exited 1, not that the wrapper was stopped.
    fake = work.root / "qemu-then-child"
    fake.write_text(
        "#!/bin/sh\n"
        f'{QEMU} -machine pc,accel=tcg -display none -nodefaults -bios "$3"\n'
        "rc=$?\n"
        # Stands for the moment between QEMU's exit and the wrapper's: the stop
        # libvirt sends then ends this script with QEMU's status.
        "trap 'exit $rc' TERM\n"
        "while :; do sleep 0.1; done\n"
    )
    fake.chmod(0o755)
    wrapper = work.write_wrapper(qemu=str(fake))
    firmware = str(work.root / "no-such-firmware.fd")
    proc = work.start(shell, wrapper, ["-name", "guest=t", firmware])
    # The first `sleep` runs once the script's TERM trap is in place: a stop sent
    # earlier would kill the script itself, and the status would rightly say so.
    deadline = time.monotonic() + 60
    while not re.search(r'execve\("[^"]*/sleep"', _trace_text(work)):
        assert proc.poll() is None and time.monotonic() < deadline, work.stderr()
        time.sleep(0.05)
    assert "+++ exited with 1 +++" in _trace_text(work)

    proc.send_signal(signal.SIGTERM)
    assert finish(proc, timeout=30) == 1
    (launch,) = work.launch_dirs()
    assert (launch / "status").read_text() == "exit 1\n"
    assert (launch / "forwarded").read_text() == "TERM\n"
    assert "forwarded SIGTERM" in (launch / "wrapper.log").read_text()
    assert "no-such-firmware" in (launch / "stderr").read_text()


def _trace_text(work) -> str:
    return "".join(
        (d / "strace.log").read_text(errors="replace")
        for d in work.launch_dirs()
        if (d / "strace.log").exists()
    )


@shells
def test_failing_qemu_gives_exit_status_and_the_failed_open(shell, work):
    missing = work.root / "no such dir" / "disk.img"
    args = ["-name", "guest=t", "-machine", f"pc,accel={'tcg'}", "-display", "none"]
    args += ["-nodefaults", "-drive", f"file={missing},format=raw,if=ide"]
    proc = work.start(shell, work.write_wrapper(), args)
    assert finish(proc) == 1
    (launch,) = work.launch_dirs()
    assert (launch / "status").read_text() == "exit 1\n"
    assert "Could not open" in work.stderr()
    failed = [
        line
        for line in (launch / "strace.log").read_text().splitlines()
        if str(missing) in line and "ENOENT" in line
    ]
    assert failed, "the failed open of the disk is not in the trace"


def test_full_mode_records_everything(work):
    wrapper = work.write_wrapper(full=True)
    proc = work.start(SHELLS["dash"], wrapper, ["-name", "guest=t", "-version"])
    assert finish(proc) == 0
    (launch,) = work.launch_dirs()
    assert not (launch / "filter").exists()
    text = (launch / "strace.log").read_text()
    assert " read(" in text and " write(" in text


def test_unwritable_output_fails_the_launch_with_a_message(work):
    blocked = work.root / "blocked"
    blocked.mkdir(mode=0o500)
    wrapper = work.write_wrapper(output=str(blocked / "out"))
    proc = work.start(SHELLS["dash"], wrapper, ["-name", "guest=t", "-version"])
    assert finish(proc) == 1
    assert "cannot create a directory" in work.stderr()


@shells
def test_sigkill_to_the_wrapper_still_leaves_no_qemu(shell, work):
    # libvirt escalates to SIGKILL when SIGTERM did not end the process in time; that
    # cannot be trapped, so the wrapper's watcher kills QEMU once the wrapper is gone.
    sock = work.root / "qmp.sock"
    proc = work.start(shell, work.write_wrapper(), real_args(sock))
    qmp = QMP(sock)
    pids = qemu_pids(str(sock))
    proc.send_signal(signal.SIGKILL)
    assert finish(proc) == -signal.SIGKILL
    qmp.close()
    assert wait_gone(pids, timeout=15) == []
    (launch,) = work.launch_dirs()
    deadline = 15
    while not (launch / "status").exists() and deadline > 0:
        deadline -= 0.1
        time.sleep(0.1)
    assert (launch / "status").read_text() == "signal KILL\n"


@shells
def test_qemu_error_message_is_kept_beside_the_trace(shell, work):
    args = ["-name", "guest=t", "-machine", "pc,accel=tcg", "-display", "none"]
    args += ["-nodefaults", "-drive", "file=/nonexistent/d.img,format=raw,if=ide"]
    proc = work.start(shell, work.write_wrapper(), args)
    assert finish(proc) == 1
    (launch,) = work.launch_dirs()
    copied = (launch / "stderr").read_text()
    assert "Could not open '/nonexistent/d.img'" in copied
    # ...and it still reached the wrapper's own stderr (libvirt's domain log), with
    # nothing of the wrapper's own (bash once reported its killed watcher there).
    assert "Could not open '/nonexistent/d.img'" in work.stderr()
    assert "Killed" not in work.stderr() and "line " not in work.stderr()
    assert not (launch / ".stderr").exists()


def test_bundle_wrapper_needs_nothing_from_path(work):
    bundle = pytest.importorskip("virt_debug.launch.bundle")
    tools = work.root / "tools"
    try:
        bundle.build_bundle(tools, "strace")
    except Exception as e:  # noqa: BLE001 - any reason the bundle cannot be built
        pytest.skip(f"cannot build the strace bundle here: {e}")
    for path in [tools, *tools.rglob("*")]:
        work.chown(path)
    wrapper = work.write_wrapper(tool_dir=str(tools), shell=f"{tools}/bin/sh")
    sock = work.root / "qmp.sock"
    # No PATH at all: mkdir, date, mkfifo, tee and sleep must come from the busybox.
    env = {"PATH": f"{tools}/bin", "LD_LIBRARY_PATH": f"{tools}/lib", "LC_ALL": "C"}
    proc = work.start([], wrapper, real_args(sock), env=env)
    qmp = QMP(sock)
    (pid,) = qemu_pids(str(sock))
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    maps = Path(f"/proc/{pid}/maps").read_text()
    qmp.quit()
    assert finish(proc) == 0, work.stderr()
    assert b"LD_LIBRARY_PATH" not in environ and str(tools).encode() not in environ
    assert str(tools) not in maps, "QEMU loaded a library from the tool bundle"
    (launch,) = work.launch_dirs()
    assert len(trace_pids(launch / "strace.log")) > 1
    assert (launch / "status").read_text() == "exit 0\n"


@pytest.mark.parametrize(
    "args",
    [
        ["-name", "guest=t", "-M", "none", "-version"],
        ["-name", "guest=t", "-machine", "none,accel=kvm:tcg", "-version"],
        ["-name", "guest=t", "-machine", "type=none", "-version"],
        ["-help"],
        ["-machine", "help"],
    ],
    ids=["-M none", "-machine none,accel", "type=none", "-help", "no -name"],
)
def test_probe_shapes_run_untraced(args, work):
    proc = work.start(SHELLS["dash"], work.write_wrapper(), args)
    assert finish(proc) == 0, work.stderr()
    assert work.launch_dirs() == []


@pytest.mark.parametrize("sig", ["INT", "HUP", "QUIT"])
def test_other_stop_signals_also_end_qemu(sig, work):
    sock = work.root / "qmp.sock"
    proc = work.start(SHELLS["dash"], work.write_wrapper(), real_args(sock))
    qmp = QMP(sock)
    pids = qemu_pids(str(sock))
    proc.send_signal(getattr(signal, f"SIG{sig}"))
    assert finish(proc, timeout=30) == 0
    qmp.close()
    assert wait_gone(pids, timeout=5) == []
    (launch,) = work.launch_dirs()
    # QEMU's own outcome; what the wrapper forwarded is kept apart.
    assert (launch / "status").read_text() == "exit 0\n"
    sent = "TERM" if sig == "QUIT" else sig
    assert (launch / "forwarded").read_text() == f"{sig}\n"
    assert f"sending SIG{sent}" in (launch / "wrapper.log").read_text()


@pytest.mark.parametrize("sig", ["KILL", "ABRT"])
def test_qemu_killed_from_outside_is_a_signal_status(sig, work):
    # What the OOM killer or a crash looks like: QEMU itself dies of a signal.
    sock = work.root / "qmp.sock"
    proc = work.start(SHELLS["dash"], work.write_wrapper(), real_args(sock))
    qmp = QMP(sock)
    (pid,) = qemu_pids(str(sock))
    os.kill(pid, getattr(signal, f"SIG{sig}"))
    assert finish(proc, timeout=60) == 128 + getattr(signal, f"SIG{sig}")
    qmp.close()
    (launch,) = work.launch_dirs()
    assert (launch / "status").read_text() == f"signal {sig}\n"
    assert f"+++ killed by SIG{sig}" in (launch / "strace.log").read_text()
