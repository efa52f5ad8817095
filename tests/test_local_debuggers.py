"""`virt-debug run` with debuggers other than strace, against the private daemon."""

import signal
import time

import pytest

from test_local_run import wait_for
from virt_debug.backends.libvirt.daemon import qemu_processes_mentioning

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]


def _start_gdbserver_run(local_libvirt, guest_xml, label: str, *extra: str):
    work = local_libvirt.workdir(label)
    name = local_libvirt.define(guest_xml(work / "guest", f"vd-{label}"))
    before = local_libvirt.inactive_xml(name)
    args = ["run", "gdbserver", name, "--output", str(work / "out"), *extra]
    return work, name, before, local_libvirt.start_virt_debug(args, cwd=work)


def test_gdbserver_run_waits_for_gdb_past_duration_and_ctrl_c_undoes_it(
    local_libvirt, guest_xml
):
    # QEMU waits for gdb before it answers libvirt's monitor, so libvirt's start
    # blocks: the run says where to attach, and --duration (which counts once the
    # guest runs) does not cut the wait short. Ctrl-C does, and restores everything.
    work, name, before, run = _start_gdbserver_run(
        local_libvirt, guest_xml, "gdb-duration", "--duration", "1s"
    )
    try:
        lines: list[str] = []
        wait_for(
            lambda: lines.append(run.stderr.readline()) or "waits for gdb" in lines[-1],
            180,
            "the attach line",
        )
        time.sleep(4)
        assert run.poll() is None, "the run ended while QEMU still waited for gdb"
        assert qemu_processes_mentioning(str(work))
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()

    # The whole gdb command on one line, ready to paste, whatever the width.
    attach = next(x for x in lines if "waits for gdb" in x)
    assert "gdb -ex 'target remote 127.0.0.1:" in attach
    assert "qemu-system" in attach or "qemu-kvm" in attach
    assert "Traceback" not in stderr
    assert run.returncode == 130, stderr
    assert "interrupted before the guest started" in stderr
    assert stdout.startswith("virt-debug stopped QEMU before the guest started")
    assert "QEMU ended:" in stdout and "/note: QEMU waits for gdb" in stdout
    assert "trace analysis" not in stdout + stderr
    assert local_libvirt.inactive_xml(name) == before
    assert not qemu_processes_mentioning(str(work))
    local_libvirt.undefine(name)


def test_gdbserver_run_stops_on_sigterm_while_qemu_waits(local_libvirt, guest_xml):
    work, name, before, run = _start_gdbserver_run(
        local_libvirt, guest_xml, "gdb-sigterm"
    )
    try:
        lines: list[str] = []
        # The attach line comes while libvirt's start is still blocked.
        wait_for(
            lambda: lines.append(run.stderr.readline()) or "waits for gdb" in lines[-1],
            180,
            "the attach line",
        )
        wait_for(lambda: qemu_processes_mentioning(str(work)), 60, "QEMU")
        run.send_signal(signal.SIGTERM)
        run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()

    assert local_libvirt.inactive_xml(name) == before
    assert not qemu_processes_mentioning(str(work))
    local_libvirt.undefine(name)


def test_summary_without_strace_shows_status_stderr_and_output_files(tmp_path):
    from virt_debug.backends.libvirt import outputs

    launch = tmp_path / "20260101-000000-1"
    launch.mkdir()
    (launch / "status").write_text("exit 1\n")
    (launch / "stderr").write_text(
        "qemu-system-x86_64: -sandbox on: There is no option group 'sandbox'\n"
    )
    (launch / "valgrind.42.log").write_text(
        "==42== Memcheck\n==42== ERROR SUMMARY: 3 errors from 2 contexts\n"
    )
    (launch / "perf.data").write_bytes(b"PERFILE2")

    text = outputs.explain(launch)

    assert "QEMU ended: exit 1" in text
    assert "There is no option group 'sandbox'" in text
    assert "valgrind cannot run QEMU's seccomp sandbox" in text
    assert "ERROR SUMMARY: 3 errors from 2 contexts" in text
    assert f"perf report -f -i {launch / 'perf.data'}" in text
