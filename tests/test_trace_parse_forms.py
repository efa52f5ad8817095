"""What the reader makes of each strace form, asserted fact by fact."""

import os
from datetime import datetime
from pathlib import Path

import pytest

from virt_debug.errors import TraceInputError
from virt_debug.trace.model import Exit, Note, Signal, Syscall, Unparsed
from virt_debug.trace.parse import ReadStats, iter_events, trace_files
from virt_debug.trace.track import Tracker

CORPUS = Path(__file__).parent / "data" / "traces" / "formats"


def events(path: Path) -> list:
    tracker = Tracker()
    return [tracker.feed(e) for e in iter_events([path])]


def calls(path: Path, name: str) -> list[Syscall]:
    return [e for e in events(path) if isinstance(e, Syscall) and e.name == name]


def write(tmp_path: Path, text: str, name: str = "strace.log") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_the_wrappers_form_gives_times_durations_and_decorations() -> None:
    found = events(CORPUS / "f_tt_T_yy.strace")

    execve = found[0]
    assert isinstance(execve, Syscall) and execve.name == "execve"
    assert execve.path == "/usr/bin/sh" and execve.retval == 0
    assert execve.duration is not None and execve.duration > 0
    printed = (CORPUS / "f_tt_T_yy.strace").read_text().split()[1]
    assert datetime.fromtimestamp(execve.time).strftime("%H:%M:%S.%f") == printed
    cat = next(e for e in found if isinstance(e, Syscall) and e.path == "/nonexist")
    assert (cat.name, cat.errno, cat.errmsg) == (
        "openat",
        "ENOENT",
        "No such file or directory",
    )


def test_a_trace_without_pid_column_keeps_pid_zero_and_no_times() -> None:
    found = events(CORPUS / "plain.strace")

    assert {e.pid for e in found} == {0}
    assert all(e.time is None for e in found)
    assert isinstance(found[-1], Exit) and found[-1].code == 1


def test_directory_with_an_ff_set_is_one_time_ordered_stream(tmp_path: Path) -> None:
    for f in (CORPUS / "ff_tt").iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "argv").write_bytes(b"qemu\0-S\0")
    (tmp_path / "status").write_text("exit 0\n")
    (tmp_path / "wrapper.log").write_text("started\n")
    (tmp_path / "core.4242").write_bytes(b"\x7fELF\x02\x01\x01\0" * 64)

    found = list(iter_events([tmp_path]))

    assert {Path(e.source).name for e in found} == {
        p.name for p in (CORPUS / "ff_tt").iterdir()
    }
    times = [e.time for e in found]
    assert times == sorted(times)
    pids = {e.pid for e in found}
    assert pids == {int(p.name.split(".")[1]) for p in (CORPUS / "ff_tt").iterdir()}


def test_trace_file_rule() -> None:
    names = ["strace.log", "strace.log.1234", "qemu.strace", "trace.77", "out.12"]
    skipped = ["argv", "status", "wrapper.log", "probes.log", "notes.txt", "x.1b"]
    tmp = Path(__file__).parent  # only names are looked at

    from virt_debug.trace.parse import is_trace_name

    assert all(is_trace_name(n) for n in names)
    assert not any(is_trace_name(n) for n in skipped)
    assert tmp.exists()


def test_missing_input_is_a_trace_input_error(tmp_path: Path) -> None:
    with pytest.raises(TraceInputError, match="no such file"):
        list(iter_events([tmp_path / "nope.log"]))
    (tmp_path / "argv").write_text("x")
    with pytest.raises(TraceInputError, match="no strace output"):
        trace_files([tmp_path])


def test_comm_numbers_and_pointers_are_read_past() -> None:
    found = events(CORPUS / "f_Y_n_i_ttt.strace")

    assert not [e for e in found if isinstance(e, Unparsed)]
    cat = next(e for e in found if isinstance(e, Syscall) and e.path == "/nonexist")
    assert cat.comm == "cat" and cat.errno == "ENOENT"
    assert cat.time > 1.7e9  # epoch seconds as printed


def test_stderr_capture_gets_the_first_process_pid_for_bare_lines() -> None:
    found = events(CORPUS / "stderr_f_tt.strace")
    execve = found[0]
    clone = next(e for e in found if isinstance(e, Syscall) and e.name == "clone")
    attached = [e for e in found if isinstance(e, Note) and e.kind == "attached"]

    assert execve.pid != 0 and execve.pid == clone.pid
    assert attached and attached[0].pid == clone.retval
    assert clone.args.endswith("child_tidptr=" + clone.args.rpartition("=")[2])
    assert not [e for e in found if isinstance(e, Unparsed)]


def test_padded_stderr_prefixes_and_an_end_printed_without_prefix() -> None:
    found = events(CORPUS / "hand" / "stderr_padded.strace")
    wait = next(e for e in found if isinstance(e, Syscall) and e.name == "wait4")

    assert {e.pid for e in found} == {42, 43}
    assert not wait.resumed_only and wait.retval == 43
    assert wait.args.startswith("-1, [{WIFEXITED(s)")


@pytest.mark.parametrize(
    ("sample", "first", "span"),
    [
        ("relative.strace", 0.0, None),
        ("t_seconds.strace", None, None),
        ("ts_unix_ns.strace", 1796323000.0, None),
        ("ts_unix_s.strace", 1796323000.0, None),
        ("ts_time_ms.strace", None, None),
        ("hand/midnight.strace", None, 1.601),
    ],
)
def test_timestamps(sample: str, first: float | None, span: float | None) -> None:
    found = events(CORPUS / sample)
    times = [e.time for e in found]

    assert None not in times
    if first is not None:
        assert abs(times[0] - first) < 1000
    if span is not None:
        assert max(times) - min(times) == pytest.approx(span, abs=0.01)
    assert sorted(times) == times or sample.startswith("hand/midnight")


def test_midnight_wrap_carries_the_day_forward() -> None:
    found = events(CORPUS / "hand" / "midnight.strace")
    before = datetime.fromtimestamp(found[0].time)
    after = datetime.fromtimestamp(found[-1].time)

    assert (after.date() - before.date()).days == 1
    assert after.strftime("%H:%M:%S") == "00:00:01"


def test_time_of_day_takes_the_files_date(tmp_path: Path) -> None:
    path = write(tmp_path, "1  10:00:00.5 getpid() = 1\n")
    noon = datetime(2024, 5, 6, 12, 0).timestamp()
    os.utime(path, (noon, noon))

    (call,) = events(path)

    assert datetime.fromtimestamp(call.time) == datetime(2024, 5, 6, 10, 0, 0, 500000)


def test_stack_frames_attach_to_the_call_before_them() -> None:
    found = events(CORPUS / "stack_k.strace")
    exit_group = next(
        e for e in found if isinstance(e, Syscall) and e.name == "exit_group"
    )

    assert all(e.stack for e in found if isinstance(e, Syscall))
    assert exit_group.stack[0].startswith("/usr/lib/x86_64-linux-gnu/libc.so.6(_exit")
    assert not [e for e in found if isinstance(e, Unparsed)]


def test_injection_notes() -> None:
    found = [e for e in events(CORPUS / "inject.strace") if isinstance(e, Syscall)]
    injected = {(e.name, e.injected, e.retval, e.errno) for e in found if e.injected}

    assert ("getpid", "INJECTED", 42, None) in injected
    assert ("openat", "INJECTED", -1, "ENOENT") in injected
    assert ("read", "DELAYED", 832, None) in injected


def test_signals_and_endings() -> None:
    killed = events(CORPUS / "killed.strace")[-1]
    core = events(CORPUS / "core_dumped.strace")
    segv = events(CORPUS / "segv.strace")

    assert (killed.signal, killed.core_dumped) == ("SIGKILL", False)
    assert (core[-1].signal, core[-1].core_dumped) == ("SIGABRT", True)
    assert isinstance(core[-2], Signal) and core[-2].signal == "SIGABRT"
    assert isinstance(segv[-2], Signal) and "SEGV_MAPERR" in segv[-2].info


def test_superseded_execve_joins_across_the_pid_change() -> None:
    found = events(CORPUS / "superseded.strace")
    note = next(e for e in found if isinstance(e, Note))
    execs = [e for e in found if isinstance(e, Syscall) and e.name == "execve"]
    sleep = next(
        e for e in found if isinstance(e, Syscall) and e.name == "clock_nanosleep"
    )

    assert note.kind == "superseded" and note.other_pid == execs[1].pid
    assert execs[1].retval == 0 and execs[1].path == "/bin/true"
    assert sleep.result == "?" and "<unfinished" not in sleep.args


def test_personality_notes() -> None:
    found = events(CORPUS / "personality_stderr.strace")
    notes = [e for e in found if isinstance(e, Note) and e.kind == "personality"]

    assert len(notes) == 1 and "32 bit mode" in notes[0].text
    x32 = next(e for e in found if isinstance(e, Exit) and e.code == 3)
    assert notes[0].pid == x32.pid


def test_odd_results() -> None:
    found = events(CORPUS / "hand" / "odd_results.strace")
    by_line = {e.line_no: e for e in found}

    assert by_line[3].name == "syscall_0x1b6" and by_line[3].errno == "ENOSYS"
    assert (by_line[5].args, by_line[5].result) == ("0, ", "? <unavailable>")
    assert by_line[6].result == "? <unavailable>" and by_line[6].retval is None
    assert by_line[9].resumed_only and by_line[9].errno == "ERESTARTNOHAND"
    errnos = [by_line[n].errno for n in (10, 12, 13)]
    assert errnos == ["ERESTART_RESTARTBLOCK", "ERESTARTSYS", "ERESTARTNOINTR"]
    assert isinstance(by_line[11], Signal) and by_line[11].signal == "SIGSTOP"
    assert by_line[14].retval == 3 and by_line[15].fd_path == "/tmp/a) = b"
    assert by_line[17].fd_path == "/tmp/old>style"
    assert (
        by_line[19].fd_path == "socket:[1234]" and by_line[19].path == "/run/qmp.sock"
    )
    assert by_line[21].injected == "INJECTED" and by_line[21].errno == "ENOMEM"
    assert by_line[26].args == "0" and by_line[26].result == "?"
    assert [(e.line_no, e.reason) for e in found if isinstance(e, Unparsed)] == [
        (30, "not a strace record"),
        (31, "call without a readable result"),
        (32, "call without a readable result"),
    ]


def test_resumed_without_space_and_without_start() -> None:
    found = events(CORPUS / "hand" / "resumed_nospace.strace")
    read, write, close = (e for e in found if isinstance(e, Syscall))

    assert (read.args, read.retval, read.resumed_only) == ('3, "abc", 4096', 3, False)
    assert write.retval == 6
    assert close.resumed_only and close.line_no == 5


def test_colour_crlf_and_bytes_that_are_not_utf8() -> None:
    colour = events(CORPUS / "hand" / "colour.strace")
    crlf = events(CORPUS / "hand" / "crlf.strace")
    raw = events(CORPUS / "hand" / "non_utf8.strace")

    assert colour[0].path == "/etc/qemu.conf" and colour[-1].core_dumped
    assert crlf[0].errno == "EACCES" and crlf[-1].code == 1
    assert crlf[0].duration == pytest.approx(0.00002)
    assert raw[1].fd_path == "/tmp/caf\\xe9\\xff\\xfe"
    assert [e.line_no for e in raw if isinstance(e, Unparsed)] == [4]


def test_attach_note_in_the_middle_of_a_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "vfork(strace: Process 9 attached\n"
        '[pid     9] execve("/bin/true", ["true"], 0x7ffd <unfinished ...>\n'
        "[pid     8] <... vfork resumed>) = 9\n"
        "[pid     9] <... execve resumed>) = 0\n",
    )
    stats = ReadStats()

    found = list(iter_events([path], stats=stats))

    assert [type(e).__name__ for e in found] == ["Note", "Syscall", "Syscall"]
    vfork = next(e for e in found if getattr(e, "name", "") == "vfork")
    assert (vfork.pid, vfork.retval, vfork.resumed_only) == (8, 9, False)
    assert stats.unparsed == 0 and stats.lines == 4


def test_unfinished_calls_at_the_end_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "5 read(0,  <unfinished ...>\n5 +++ killed by SIGKILL +++\n")

    read, killed = events(path)

    assert read.result == "<unfinished ...>" and read.retval is None
    assert killed.signal == "SIGKILL"


def test_whole_program_output_lines_are_unparsed_not_dropped(tmp_path: Path) -> None:
    path = write(tmp_path, "hello\n\n1 getpid() = 1\n\x00\x01\n")

    found = events(path)

    assert [(type(e).__name__, e.line_no) for e in found] == [
        ("Unparsed", 1),
        ("Syscall", 3),
        ("Unparsed", 4),
    ]


def test_gzipped_trace_reads_like_the_plain_one(tmp_path: Path) -> None:
    import gzip

    plain = CORPUS / "f_tt_T_yy.strace"
    packed = tmp_path / "strace.log.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))

    names = [getattr(e, "name", None) for e in iter_events([packed])]

    assert names == [getattr(e, "name", None) for e in iter_events([plain])]


def test_a_directory_groups_sets_and_keeps_other_traces_apart(tmp_path: Path) -> None:
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "strace.log").write_text("1 getpid() = 1\n")
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / "qemu.7").write_text("12:00:00.2 getpid() = 7\n")
    (tmp_path / "run2" / "qemu.8").write_text("12:00:00.1 gettid() = 8\n")

    groups = trace_files([tmp_path])

    assert [[p.name for p in g] for g in groups] == [
        ["strace.log"],
        ["qemu.7", "qemu.8"],
    ]
    found = [(e.pid, e.name) for e in iter_events([tmp_path])]
    assert found == [(1, "getpid"), (8, "gettid"), (7, "getpid")]


def test_attach_by_pid_names_the_bare_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "strace: Process 77 attached\n"
        'read(0, "q", 1) = 1\n'
        "--- SIGTERM {si_signo=SIGTERM, si_code=SI_USER, si_pid=1, si_uid=0} ---\n"
        "+++ killed by SIGTERM +++\n",
    )

    found = list(iter_events([path]))

    assert [e.pid for e in found] == [77, 77, 77, 77]
