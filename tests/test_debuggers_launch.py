"""Every debugger's wrapper launches a real QEMU that reaches its main loop.

QEMU starts paused (-S) with a monitor socket; the test asks its status over QMP and
quits it, then checks what the debugger left in the launch directory. strace has its
own, deeper tests in test_wrapper_launch.py.
"""

import os
import shutil
import subprocess

import pytest

from virt_debug import debuggers
from virt_debug.debuggers import LAUNCH_DIR
from virt_debug.debuggers.gdbserver import PORT, QUIET_SIGNALS
from virt_debug.errors import UsageError
from wrapper_harness import (
    QEMU,
    QMP,
    SHELLS,
    kill_all,
    make_workspace,
    qemu_pids,
    real_args,
    remove_workspace,
)

pytestmark = pytest.mark.skipif(
    not os.path.exists(QEMU), reason="qemu-system-x86_64 missing"
)


@pytest.fixture()
def work():
    work = make_workspace()
    yield work
    kill_all(qemu_pids(str(work.root)))
    remove_workspace(work)


def needs(program: str):
    return pytest.mark.skipif(
        shutil.which(program) is None, reason=f"{program} is not installed"
    )


def test_names_and_lookup():
    assert debuggers.NAMES == ("strace", "gdbserver", "valgrind", "ltrace", "perf")
    for name in debuggers.NAMES:
        spec = debuggers.get(name)
        assert spec.name == name and spec.outputs
        assert any(LAUNCH_DIR in w for w in spec.options()) or name == "gdbserver"
    with pytest.raises(UsageError, match="choose one of: strace"):
        debuggers.get("gdb")


def test_strace_default_leaves_out_only_the_named_hot_calls():
    from virt_debug.debuggers.strace import HOT_CALLS

    strace = debuggers.get("strace")
    options = strace.options()
    assert "-f" in options and "--seccomp-bpf" in options
    assert options[options.index("-e") + 1] == "trace=!" + ",".join(HOT_CALLS)
    assert strace.left_out(full=False) == " ".join(HOT_CALLS)
    assert 0 < len(HOT_CALLS) <= 6
    full = strace.options(full=True)
    assert "--seccomp-bpf" not in full and "-e" not in full
    assert strace.left_out(full=True) is None
    assert options[-1] == "--"


def test_missing_program_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UsageError, match="apt-get install -y linux-perf"):
        debuggers.get("perf").require()


def launch_and_quit(
    work, debugger: str, *, accel="kvm:tcg", timeout: float = 120, extra=()
):
    sock = work.root / "qmp.sock"
    wrapper = work.write_wrapper(debugger)
    args = [*real_args(sock, machine="pc", accel=accel), "-S", *extra]
    proc = work.start(SHELLS["dash"], wrapper, args)
    qmp = QMP(sock, timeout=timeout)
    assert qmp.command("query-status")["status"] == "prelaunch"
    qmp.quit()
    assert proc.wait(timeout) == 0, work.stderr()
    (launch,) = work.launch_dirs()
    assert (launch / "status").read_text() == "exit 0\n"
    return launch


@pytest.mark.libvirt
@needs("gdbserver")
@needs("gdb")
def test_gdbserver_holds_qemu_until_gdb_continues(work):
    sock = work.root / "qmp.sock"
    wrapper = work.write_wrapper("gdbserver")
    proc = work.start(SHELLS["dash"], wrapper, [*real_args(sock, machine="pc"), "-S"])

    # QEMU sits at its first instruction: no monitor until gdb says continue.
    gdb = subprocess.Popen(
        ["gdb", "-batch", "-nx", "-ex", "set confirm off"]
        + ["-ex", f"handle {QUIET_SIGNALS} nostop noprint pass"]
        + ["-ex", f"target remote 127.0.0.1:{PORT}", "-ex", "continue"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        qmp = QMP(sock, timeout=60)
        assert qmp.command("query-status")["status"] == "prelaunch"
        qmp.quit()
        assert proc.wait(60) == 0, work.stderr()
        gdb.wait(60)
    finally:
        gdb.kill()
    (launch,) = work.launch_dirs()
    assert f"target remote 127.0.0.1:{PORT}" in (launch / "note").read_text()
    assert (launch / "status").read_text() == "exit 0\n"


@pytest.mark.libvirt
@pytest.mark.slow
@needs("valgrind")
def test_valgrind_runs_qemu_to_its_main_loop(work):
    launch = launch_and_quit(work, "valgrind", accel="tcg", timeout=300)
    logs = list(launch.glob("valgrind.*.log"))
    assert logs and "Memcheck" in logs[0].read_text()


@pytest.mark.libvirt
@pytest.mark.slow
@needs("valgrind")
def test_valgrind_drops_libvirts_sandbox_option_and_says_so(work):
    # libvirt always passes -sandbox; QEMU under valgrind has no seccomp and would
    # refuse it ("There is no option group 'sandbox'") instead of starting.
    sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
    launch = launch_and_quit(
        work, "valgrind", accel="tcg", timeout=300, extra=["-sandbox", sandbox]
    )
    assert f"dropped -sandbox {sandbox}" in (launch / "wrapper.log").read_text()
    argv = (launch / "argv").read_bytes().split(b"\0")
    assert b"-sandbox" not in argv and b"-S" in argv


@pytest.mark.libvirt
@pytest.mark.slow
@needs("ltrace")
def test_ltrace_runs_qemu_to_its_main_loop(work):
    launch = launch_and_quit(work, "ltrace", timeout=300)
    assert (launch / "ltrace.log").stat().st_size > 0


@pytest.mark.libvirt
@needs("perf")
def test_perf_records_qemu(work):
    paranoid = int(open("/proc/sys/kernel/perf_event_paranoid").read())
    if os.geteuid() == 0 and paranoid > 2:
        pytest.skip(f"kernel.perf_event_paranoid is {paranoid}: uid 107 cannot record")
    launch = launch_and_quit(work, "perf")
    assert (launch / "perf.data").stat().st_size > 0
