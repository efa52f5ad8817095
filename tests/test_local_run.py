"""`virt-debug run strace` against a private libvirt session daemon as uid 107.

Each test is one of the facts in the design's facts file, asserted the way a user would
see it: the command's output, the files it leaves, the domain's definition afterwards,
the processes left on the machine.
"""

import re
import signal
import time
from pathlib import Path

import pytest

from virt_debug.backends.libvirt.collect import launch_dirs
from virt_debug.backends.libvirt.daemon import qemu_processes_mentioning

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

SMBIOS = "Acme Corp  Two Spaces"
THREAD = re.compile(r"^(\d+)[<\s]")


def traced_threads(launch: Path) -> set[int]:
    with (launch / "strace.log").open(errors="replace") as f:
        return {int(m.group(1)) for line in f if (m := THREAD.match(line))}


def running(local_libvirt, name: str) -> bool:
    import libvirt

    conn = local_libvirt.connect()
    try:
        return conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_two_runs_give_two_traces_of_every_thread_and_restore_the_definition(
    local_libvirt, guest_xml
):
    work = local_libvirt.workdir("two-runs")
    name = local_libvirt.define(guest_xml(work / "guest", "vd-two-runs"))
    before = local_libvirt.inactive_xml(name)
    output = work / "out"
    # Options no other test uses: a wrapper libvirt has never probed.
    args = ["run", "strace", name, "--duration", "2s", "--output", str(output)]
    args.append("--debugger-arg=-s257")

    probes = []
    for _ in range(2):
        # The guard timeout is generous: a hung probe would block the define forever.
        done = local_libvirt.virt_debug(args, cwd=work, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert local_libvirt.inactive_xml(name) == before
        probes.append((output / "probes.log").read_text().count("probe by pid"))

    # libvirt probed the new wrapper once, untraced, and cached the result.
    assert probes[0] >= 1 and probes[1] == probes[0]
    # Each launch has its own trace.
    launches = launch_dirs(output)
    assert len(launches) == 2
    for launch in launches:
        assert (launch / "status").read_text().strip()
        assert len(traced_threads(launch)) > 1
    # This run's part of libvirt's domain log: QEMU's command line at least.
    assert f"guest={name}" in (output / "libvirt-qemu.log").read_text()
    local_libvirt.undefine(name)


def test_interrupt_mid_trace_keeps_arguments_environment_and_definition(
    local_libvirt, guest_xml
):
    work = local_libvirt.workdir("interrupt")
    xml = guest_xml(work / "guest", "vd-interrupt", smbios=SMBIOS)
    name = local_libvirt.define(xml)
    before = local_libvirt.inactive_xml(name)
    output = work / "out"

    run = local_libvirt.start_virt_debug(
        ["run", "strace", name, "--output", str(output)], cwd=work
    )
    try:
        # Tracing has begun once a launch has a trace and QEMU is running.
        wait_for(lambda: launch_dirs(output), 240, "the traced launch")
        wait_for(lambda: running(local_libvirt, name), 120, "the guest to run")
        pids = wait_for(lambda: qemu_processes_mentioning(str(work)), 60, "QEMU")
        qemu = Path(f"/proc/{pids[0]}")
        argv = qemu.joinpath("cmdline").read_bytes().split(b"\0")
        environ = qemu.joinpath("environ").read_bytes().split(b"\0")
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()

    # An SMBIOS value with two spaces arrives as one argument, unchanged.
    assert any(f"manufacturer={SMBIOS}".encode() in arg for arg in argv)
    # No debugger library path leaks into QEMU's environment.
    assert not [v for v in environ if v.startswith((b"LD_LIBRARY_PATH", b"LD_PRELOAD"))]
    assert run.returncode == 0, stderr
    assert "interrupted" in stdout
    # A healthy guest we stopped reads as one.
    assert stdout.startswith("QEMU ran normally and was stopped by virt-debug")
    assert local_libvirt.inactive_xml(name) == before
    assert not qemu_processes_mentioning(str(work))
    local_libvirt.undefine(name)


def test_virsh_destroy_of_a_traced_guest_leaves_no_qemu(local_libvirt, guest_xml):
    work = local_libvirt.workdir("destroy")
    name = local_libvirt.define(guest_xml(work / "guest", "vd-destroy"))
    before = local_libvirt.inactive_xml(name)
    output = work / "out"

    run = local_libvirt.start_virt_debug(
        ["run", "strace", name, "--output", str(output)], cwd=work
    )
    try:
        wait_for(lambda: launch_dirs(output), 240, "the traced launch")
        wait_for(lambda: running(local_libvirt, name), 120, "the guest to run")
        wait_for(lambda: qemu_processes_mentioning(str(work)), 60, "QEMU")
        destroyed = local_libvirt.virsh("destroy", name)
        assert destroyed.returncode == 0, destroyed.stderr
        # libvirt's destroy returns once the process it started is gone; QEMU, the
        # wrapper's grandchild, must be gone with it.
        assert not qemu_processes_mentioning(str(work))
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()

    assert run.returncode == 0, stderr
    assert "the guest stopped" in stdout
    assert local_libvirt.inactive_xml(name) == before
    local_libvirt.undefine(name)


def test_failed_start_is_explained_and_the_definition_restored(
    local_libvirt, guest_xml
):
    work = local_libvirt.workdir("failed-start")
    xml = guest_xml(work / "guest", "vd-failed", broken=True)
    name = local_libvirt.define(xml)
    before = local_libvirt.inactive_xml(name)
    disk = work / "guest" / "disk.img"

    done = local_libvirt.virt_debug(
        ["run", "strace", name, "--output", str(work / "out")], cwd=work
    )

    assert done.returncode == 6, done.stderr
    assert "the start failed" in done.stdout
    assert "EACCES" in done.stdout and str(disk) in done.stdout
    assert local_libvirt.inactive_xml(name) == before
    local_libvirt.undefine(name)


def test_start_libvirt_refuses_before_qemu_runs_is_a_libvirt_error(
    local_libvirt, guest_xml
):
    # A disk that does not exist: libvirt refuses the start before it runs the
    # emulator, so no QEMU failed and the exit code says libvirt (3), not QEMU (6).
    work = local_libvirt.workdir("missing-disk")
    xml = guest_xml(work / "guest", "vd-missing-disk")
    xml = xml.replace(str(work / "guest" / "disk.img"), str(work / "no-such.img"))
    name = local_libvirt.define(xml)
    before = local_libvirt.inactive_xml(name)

    done = local_libvirt.virt_debug(
        ["run", "strace", name, "--output", str(work / "out")], cwd=work
    )

    assert done.returncode == 3, done.stderr
    assert f"libvirt could not start {name}" in done.stderr
    assert "the start failed" in done.stdout
    assert "no-such.img" in done.stdout
    assert local_libvirt.inactive_xml(name) == before
    local_libvirt.undefine(name)


@pytest.mark.parametrize(
    ("written", "name"),
    [(" vd-spaced ", " vd-spaced "), ("vd-mark<x/>up", "vd-markup")],
    ids=["spaces", "markup"],
)
def test_domain_file_name_is_read_as_libvirt_reads_it(
    local_libvirt, guest_xml, written, name
):
    # Any other reading looked up (and restored) another domain than the one
    # libvirt defined: the guest was left defined and running.
    work = local_libvirt.workdir(f"name-{name.strip()}")
    xml = guest_xml(work / "guest", "vd-placeholder")
    xml_file = work / "guest.xml"
    xml_file.write_text(
        xml.replace("<name>vd-placeholder</name>", f"<name>{written}</name>")
    )
    xml_file.chmod(0o644)
    before = local_libvirt.domain_names()

    done = local_libvirt.virt_debug(
        [
            "run",
            "strace",
            str(xml_file),
            "--duration",
            "1s",
            "--output",
            str(work / "out"),
        ],
        cwd=work,
    )

    assert done.returncode == 0, done.stderr
    assert local_libvirt.domain_names() == before
    assert not qemu_processes_mentioning(str(work))


def test_unknown_domain_is_one_line_error(local_libvirt):
    work = local_libvirt.workdir("unknown")
    output = work / "out"
    done = local_libvirt.virt_debug(
        ["run", "strace", "no-such-domain", "--output", str(output)], cwd=work
    )

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-domain" in lines[0]
    # A refused run leaves no output directory behind.
    assert not output.exists()


def test_invalid_xml_file_is_one_line_error_and_defines_nothing(local_libvirt):
    work = local_libvirt.workdir("invalid-xml")
    bad = work / "broken.xml"
    bad.write_text("<domain type='kvm'><name>vd-invalid</name><devices>\n")
    bad.chmod(0o644)
    before = local_libvirt.domain_names()

    done = local_libvirt.virt_debug(["run", "strace", str(bad)], cwd=work)

    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.xml" in lines[0]
    assert local_libvirt.domain_names() == before


def test_domain_libvirt_rejects_is_one_line_error_and_defines_nothing(local_libvirt):
    work = local_libvirt.workdir("rejected-xml")
    rejected = work / "rejected.xml"
    # Well-formed, so it passes our check and the hook, but libvirt refuses it.
    rejected.write_text(
        "<domain type='qemu'><name>vd-rejected</name>"
        "<memory unit='MiB'>lots</memory><os><type>hvm</type></os>"
        "<devices/></domain>\n"
    )
    rejected.chmod(0o644)
    before = local_libvirt.domain_names()

    done = local_libvirt.virt_debug(
        ["run", "strace", str(rejected), "--output", str(work / "out")], cwd=work
    )

    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [x for x in done.stderr.splitlines() if x.startswith("virt-debug: error")]
    assert len(errors) == 1 and "cannot define vd-rejected" in errors[0]
    assert local_libvirt.domain_names() == before


def test_a_killed_run_is_undone_by_the_next_one(local_libvirt, guest_xml):
    work = local_libvirt.workdir("killed")
    name = local_libvirt.define(guest_xml(work / "guest", "vd-killed"))
    before = local_libvirt.inactive_xml(name)

    # SIGKILL cannot be caught: the definition keeps the wrapper as its emulator.
    run = local_libvirt.start_virt_debug(
        ["run", "strace", name, "--output", str(work / "first")], cwd=work
    )
    try:
        wait_for(lambda: running(local_libvirt, name), 240, "the guest to run")
    finally:
        run.kill()
        run.communicate(timeout=60)
    assert local_libvirt.inactive_xml(name) != before
    assert local_libvirt.virsh("destroy", name).returncode == 0

    done = local_libvirt.virt_debug(
        ["run", "strace", name, "--duration", "1s", "--output", str(work / "second")],
        cwd=work,
    )

    assert done.returncode == 0, done.stderr
    assert "interrupted run" in done.stderr + done.stdout
    assert local_libvirt.inactive_xml(name) == before
    local_libvirt.undefine(name)
