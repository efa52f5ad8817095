"""Hostile inputs to the strace reader itself: odd sets, names, times and lines."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from virt_debug.errors import TraceInputError
from virt_debug.trace import lines, parse, syntax
from virt_debug.trace.model import Exit, Syscall, Unparsed
from virt_debug.trace.parse import iter_events
from virt_debug.trace.records import ReadStats

OPEN = 'openat(AT_FDCWD, "/f{n}", O_RDONLY) = -1 ENOENT (No such file or directory)'


def write_set(folder: Path, count: int) -> None:
    # Times interleave across the files, so a merge that loses order shows.
    for n in range(1, count + 1):
        lines = [
            f"1700000000.{step * 1000 + n:06d} " + OPEN.format(n=n) + "\n"
            for step in range(3)
        ]
        (folder / f"trace.{n}").write_text("".join(lines))


def test_large_set_merged_in_passes_keeps_the_order_of_one_merge(tmp_path, monkeypatch):
    write_set(tmp_path, 40)
    at_once = [(e.source, e.line_no) for e in iter_events([tmp_path])]

    monkeypatch.setattr(parse, "_fan_in", lambda: 3)  # 40 files: three passes
    in_passes = [(e.source, e.line_no) for e in iter_events([tmp_path])]

    assert in_passes == at_once
    assert len(at_once) == 120
    times = [e.time for e in iter_events([tmp_path])]
    assert times == sorted(times)


def test_dangling_member_of_a_set_is_skipped_and_shown(tmp_path, caplog):
    write_set(tmp_path, 3)
    (tmp_path / "trace.9").symlink_to(tmp_path / "gone")

    events = list(iter_events([tmp_path]))

    calls = [e for e in events if type(e) is Syscall]
    skipped = [e for e in events if type(e) is Unparsed]
    assert len(calls) == 9
    assert [e.source for e in skipped] == [str(tmp_path / "trace.9")]
    assert "skipped" in skipped[0].reason
    assert "trace.9" in caplog.text


def test_vanished_single_file_names_the_cause(tmp_path):
    link = tmp_path / "qemu.strace"
    link.symlink_to(tmp_path / "gone")

    with pytest.raises(TraceInputError) as raised:
        list(iter_events([link]))

    assert "qemu.strace" in str(raised.value)
    assert "permission" not in str(raised.value)


def request_cleanup(folder: Path) -> None:
    import atexit

    atexit.register(shutil.rmtree, folder, True)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to 107")


@needs_root
def test_subdirectory_that_cannot_be_listed_is_reported(tmp_path):
    # pytest's own folders are private to root: use one user 107 can reach.
    top = Path(tempfile.mkdtemp(prefix="vd-walk-"))
    request_cleanup(top)
    top.chmod(0o755)
    hidden = top / "private"
    hidden.mkdir()
    (hidden / "strace.log").write_text("100 " + OPEN.format(n=1) + "\n")
    hidden.chmod(0o700)

    result = subprocess.run(
        ["setpriv", "--reuid=107", "--regid=107", "--clear-groups"]
        + [sys.executable, "-m", "virt_debug", "analyze", str(top)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "permission denied" in result.stderr
    assert "private" in result.stderr


@pytest.mark.parametrize(
    "comm", ["CPU 0/KVM", "a<b", "x>y", "<>", "q> openat"], ids=str
)
def test_thread_names_with_brackets_and_spaces(tmp_path, comm):
    trace = tmp_path / "t.strace"
    trace.write_text(
        f"12510<{comm}> 1700000000.5 ioctl(3, KVM_RUN, 0) = 0\n"
        f'[pid 12511<{comm}>] 1700000001.5 read(3, "", 1) = 0\n'
    )

    events = list(iter_events([trace]))

    assert [(type(e), e.pid, e.comm) for e in events] == [
        (Syscall, 12510, comm),
        (Syscall, 12511, comm),
    ]


def test_absurd_pid_column_gives_no_infinite_time(tmp_path):
    trace = tmp_path / "t.strace"
    trace.write_text(
        "12345678901234567890 " + OPEN.format(n=1) + "\n"
        "1234567890 1700000000.25 " + OPEN.format(n=2) + "\n"
        "1700000000 " + OPEN.format(n=3) + "\n"
    )

    events = list(iter_events([trace]))

    assert all(getattr(e, "time", None) is None or e.time < 1e11 for e in events), (
        events
    )
    assert (events[1].pid, events[1].time) == (1234567890, 1700000000.25)
    assert events[2].time == 1700000000.0  # seconds-only -ttt, not a pid


def test_set_mixing_epoch_and_time_of_day_has_one_time_base(tmp_path):
    epoch = 1700000000.25  # the -ttt member's first time
    (tmp_path / "trace.1").write_text(f"{epoch} " + OPEN.format(n=1) + "\n")
    from datetime import datetime

    tod = datetime.fromtimestamp(epoch + 5).strftime("%H:%M:%S.500000")
    member = tmp_path / "trace.2"
    member.write_text(f"{tod} " + OPEN.format(n=2) + "\n")
    os.utime(member, (0, 0))  # an mtime that says nothing about the day

    times = [e.time for e in iter_events([tmp_path])]

    assert max(times) - min(times) < 60, times


def test_io_dump_lines_belong_to_their_call(tmp_path):
    dump = " | 00000  68 65 6c 6c 6f                                   hello |"
    trace = tmp_path / "t.strace"
    trace.write_text(f'{dump}\n100 read(3, "hello", 5) = 5\n{dump}\n{dump}\n')
    stats = ReadStats()

    events = list(iter_events([trace], stats=stats))

    assert [type(e) for e in events] == [Unparsed, Syscall]
    assert events[0].reason == "data dump without a call"
    assert events[1].dump == [dump, dump]
    assert (stats.lines, stats.records, stats.joined, stats.unparsed) == (4, 1, 2, 1)


def test_over_long_line_is_cut_counted_and_the_rest_read(tmp_path, monkeypatch):
    monkeypatch.setattr(parse, "LONGEST", 64)
    monkeypatch.setattr(lines, "LONGEST", 64)
    trace = tmp_path / "t.strace"
    trace.write_text(
        "100 " + OPEN.format(n=1) + "x" * 500 + "\n100 +++ exited with 0 +++\n"
    )
    stats = ReadStats()

    events = list(iter_events([trace], stats=stats))

    assert [(type(e), e.line_no) for e in events] == [(Unparsed, 1), (Exit, 2)]
    assert "longer than" in events[0].reason
    assert (stats.lines, stats.unparsed, stats.records) == (2, 1, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('write(1, "a\\"b", 3)', 'a\\"b'),
        ('write(1, "a\\\\", 3) "x"', "a\\\\"),
        ('write(1, "a\\\\\\"b", 3)', 'a\\\\\\"b'),
        ('write(1, "open', None),
        ("no quotes", None),
        ('""', ""),
    ],
)
def test_first_quoted_string_with_escapes(text, expected):
    assert syntax.first_quoted(text) == expected
    assert syntax.first_quoted("x" * 1_000_000 + text) == expected
