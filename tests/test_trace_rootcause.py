"""Root-cause rules and analysis edge cases on small hand-written traces.

The real traces in tests/data/traces/qemu/ cover every rule as QEMU 7.2 shows it
here; these cover the forms that host cannot produce (a seccomp policy that traps
with SIGSYS instead of killing, a missing /dev/kvm, libvirt's JSON -blockdev) and the
caps of the analysis."""

from pathlib import Path

from virt_debug.trace import analyze_paths
from virt_debug.trace.report import render

QEMU_EXEC = (
    '100 10:00:00.000001 execve("/usr/libexec/qemu-kvm", ["/usr/libexec/qemu-kvm", '
    '"-name", "guest=vm1", {extra}], 0x7ffd0 /* 4 vars */) = 0 <0.000300>\n'
)


def trace(tmp_path: Path, body: str, extra: str = '"-S"') -> Path:
    path = tmp_path / "qemu.strace"
    path.write_text(QEMU_EXEC.format(extra=extra) + body)
    return path


def stderr_write(line: str, text: str) -> str:
    return f'100 {line} write(2, "{text}\\n", {len(text) + 1}) = {len(text) + 1}\n'


def test_seccomp_trap_signal_is_the_evidence(tmp_path):
    # Hand-written: QEMU 7.2 here kills the process outright (see seccomp.strace);
    # policies with the trap action deliver SIGSYS with si_code=SYS_SECCOMP first.
    body = (
        "100 10:00:00.100000 clone(child_stack=NULL, flags=SIGCHLD) = ?\n"
        "100 10:00:00.100100 --- SIGSYS {si_signo=SIGSYS, si_code=SYS_SECCOMP, "
        "si_call_addr=0x7f0000001234, si_syscall=__NR_clone, "
        "si_arch=AUDIT_ARCH_X86_64} ---\n"
        "100 10:00:00.100200 +++ killed by SIGSYS (core dumped) +++\n"
    )
    a = analyze_paths([trace(tmp_path, body, '"-sandbox", "on,spawn=deny"')])

    hint = a.hints[0]
    assert hint.rule == "seccomp"
    assert "-sandbox on,spawn=deny" in hint.title
    assert any("SYS_SECCOMP" in e.text for e in hint.evidence)
    assert a.ended.signal == "SIGSYS" and a.ended.core_dumped
    assert a.ended.tid == 100  # the thread the signal was delivered to


def test_kvm_missing(tmp_path):
    body = (
        '100 10:00:00.100000 openat(AT_FDCWD, "/dev/kvm", O_RDWR|O_CLOEXEC) = -1 '
        "ENOENT (No such file or directory) <0.000010>\n"
        + stderr_write(
            "10:00:00.100100",
            "Could not access KVM kernel module: No such file or directory",
        )
        + "100 10:00:00.100200 exit_group(1) = ?\n"
        "100 10:00:00.100300 +++ exited with 1 +++\n"
    )
    a = analyze_paths([trace(tmp_path, body)])

    hint = a.hints[0]
    assert (hint.rule, hint.confirmed) == ("kvm-device", True)
    assert "/dev/kvm not found" in hint.title
    assert "kvm_intel" in hint.advice


def test_libvirt_json_blockdev_image_denied(tmp_path):
    blockdev = (
        '"-blockdev", "{\\"driver\\":\\"file\\",\\"filename\\":'
        '\\"/var/lib/libvirt/images/vm1.qcow2\\",\\"node-name\\":\\"libvirt-1\\"}"'
    )
    body = (
        '100 10:00:00.100000 openat(AT_FDCWD, "/var/lib/libvirt/images/vm1.qcow2", '
        "O_RDONLY|O_CLOEXEC) = -1 EACCES (Permission denied)\n"
        "100 10:00:00.100300 +++ exited with 1 +++\n"
    )
    a = analyze_paths([trace(tmp_path, body, blockdev)])

    assert a.hints[0].rule == "image"
    assert "/var/lib/libvirt/images/vm1.qcow2 permission denied" in a.hints[0].title
    assert not a.hints[0].confirmed  # QEMU said nothing here
    assert [g.path for g in a.failures] == ["/var/lib/libvirt/images/vm1.qcow2"]


def test_qemu_error_fallback_when_no_rule_matches(tmp_path):
    body = stderr_write(
        "10:00:00.1", "qemu-kvm: -machine q99: unsupported machine type"
    ) + ("100 10:00:00.2 exit_group(1) = ?\n100 10:00:00.3 +++ exited with 1 +++\n")
    a = analyze_paths([trace(tmp_path, body)])

    assert [h.rule for h in a.hints] == ["qemu-error"]
    assert "unsupported machine type" in a.hints[0].title
    assert "status 1" in a.hints[0].title


def test_not_qemu_the_first_process_stands_in(tmp_path):
    path = tmp_path / "ls.strace"
    path.write_text(
        'execve("/bin/ls", ["ls", "/nope"], 0x7ffd /* 3 vars */) = 0\n'
        'statx(AT_FDCWD, "/nope", AT_STATX_SYNC_AS_STAT, STATX_MODE, 0x7ffd) = -1 '
        "ENOENT (No such file or directory)\n"
        "write(2, \"ls: cannot access '/nope': No such file or directory\\n\", 52)"
        " = 52\n"
        "exit_group(2) = ?\n"
        "+++ exited with 2 +++\n"
    )
    a = analyze_paths([path])

    assert a.qemu_pid is None and a.ended.code == 2
    assert a.ended.program == "/bin/ls"
    assert any("no execve of a qemu program" in note for note in a.notes)
    assert a.start_time is None  # no timestamps
    render(a, "text")
    render(a, "html")
    render(a, "perfetto")


def test_failed_read_names_its_file_without_y(tmp_path):
    body = (
        '100 10:00:00.1 openat(AT_FDCWD, "/run/vm1/pipe", O_RDONLY) = 7\n'
        "100 10:00:00.2 read(7, 0x7ffd, 16) = -1 EIO (Input/output error)\n"
    )
    a = analyze_paths([trace(tmp_path, body)])

    assert [(g.syscall, g.errno, g.path) for g in a.failures] == [
        ("read", "EIO", "/run/vm1/pipe")
    ]
    assert a.ended.how == "running"


def test_caps_keep_memory_bounded_and_say_so(tmp_path):
    lines = [
        f'100 10:00:{n // 100000:02d}.{n % 100000:06d} openat(AT_FDCWD, "/x/{n % 7}", '
        "O_RDONLY) = -1 EACCES (Permission denied)\n"
        for n in range(5000)
    ]
    a = analyze_paths([trace(tmp_path, "".join(lines))])

    lane = [lane for lane in a.timeline if lane.tid == 100][0]
    assert len(lane.calls) == 2000 and lane.omitted == 5001 - 2000
    assert any("calls left out" in note for note in a.notes)
    assert all(len(g.examples) <= 3 for g in a.failures)
    assert sum(g.count for g in a.failures) == 5000
    assert len(lane.marks) <= 301


def test_many_short_processes_stay_bounded(tmp_path):
    path = tmp_path / "busy.strace"
    path.write_text(
        "".join(f"{1000 + n} 10:00:00.{n:06d} close(3) = 0\n" for n in range(5000))
    )

    a = analyze_paths([path])

    assert len(a.timeline) == 4096
    assert any("not on the timeline" in note for note in a.notes)
    assert a.syscalls_total == 5000
