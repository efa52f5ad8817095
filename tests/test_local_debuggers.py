"""`virt-debug run` with debuggers other than strace, against the private daemon."""

import signal

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


def test_gdbserver_run_shows_how_to_attach_and_honours_duration(
    local_libvirt, guest_xml
):
    # QEMU waits for gdb before it answers libvirt's monitor, so libvirt's start
    # blocks: the run must still say where to attach and stop at --duration.
    work, name, before, run = _start_gdbserver_run(
        local_libvirt, guest_xml, "gdb-duration", "--duration", "3s"
    )
    try:
        stdout, stderr = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()

    assert "QEMU waits for gdb: gdb -ex 'target remote 127.0.0.1:" in stderr
    assert "Traceback" not in stderr
    # Stopped by us at --duration: a plain verdict, no strace analysis, exit 0.
    assert run.returncode == 0, stderr
    assert stdout.startswith("QEMU ran normally and was stopped by virt-debug")
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
    assert f"perf report -i {launch / 'perf.data'}" in text
