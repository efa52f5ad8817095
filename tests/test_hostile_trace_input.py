"""Hostile inputs to ``virt-debug analyze``: paths, permissions, endless and odd files.

Whatever is wrong with the input, the command ends with one line saying so and a
non-zero status, never a traceback; and what it does read it reads once.
"""

import gzip
import math
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from virt_debug.trace import analyze_paths
from virt_debug.trace.parse import iter_events

FORMATS_DIR = Path(__file__).parent / "data" / "traces" / "formats"
PLAIN = FORMATS_DIR / "plain.strace"
QEMU_UID = 107


def cli(*args: str, uid: int | None = None, memory: int | None = None):
    prefix = []
    if uid is not None:
        prefix = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]

    def limit() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(
        [*prefix, sys.executable, "-m", "virt_debug", "analyze", *args],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
    )


def one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_the_same_file_named_twice_is_read_once(tmp_path):
    once = analyze_paths([PLAIN])
    other_spelling = Path(os.path.relpath(PLAIN, Path.cwd()))
    link = tmp_path / "link.strace"
    link.symlink_to(PLAIN)

    twice = analyze_paths([PLAIN, other_spelling, link])

    assert twice.syscalls_total == once.syscalls_total


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to 107")


@needs_root
def test_directory_the_user_cannot_list_says_so(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "strace.log").write_text(PLAIN.read_text())
    folder.chmod(0o700)
    tmp_path.chmod(0o755)

    message = one_line_error(cli(str(folder), uid=QEMU_UID))

    assert "permission denied" in message


@needs_root
def test_unreadable_trace_file_says_so(tmp_path):
    trace = tmp_path / "strace.log"
    trace.write_text(PLAIN.read_text())
    trace.chmod(0o600)
    tmp_path.chmod(0o755)

    message = one_line_error(cli(str(trace), uid=QEMU_UID))

    assert "Permission denied" in message or "permission denied" in message


@needs_root
def test_report_to_a_place_the_user_cannot_write(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)
    tmp_path.chmod(0o755)

    message = one_line_error(
        cli(str(PLAIN), "-o", str(locked / "r.json"), "-f", "json", uid=QEMU_UID)
    )

    assert "cannot write" in message
    assert not (locked / "r.json").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["-f", "xml"],
        ["-o", "/"],
        ["--width", "-3"],
    ],
    ids=["bad-format", "output-is-a-directory", "bad-width"],
)
def test_bad_options_are_one_line_errors(args):
    result = cli(str(PLAIN), *args)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_symlink_loop_in_a_directory_is_not_followed(tmp_path):
    (tmp_path / "strace.log").write_text(PLAIN.read_text())
    (tmp_path / "loop").symlink_to(tmp_path)
    (tmp_path / "self").symlink_to("self")

    once = analyze_paths([PLAIN])
    analysis = analyze_paths([tmp_path])

    assert analysis.syscalls_total == once.syscalls_total


@pytest.mark.parametrize(
    "content",
    [b"", b"\n\n  \n", b"\0" * 4096],
    ids=["empty", "blank-lines", "nul-bytes"],
)
def test_files_with_no_record_are_one_line_errors(tmp_path, content):
    trace = tmp_path / "t.strace"
    trace.write_bytes(content)

    message = one_line_error(cli(str(trace)))

    assert "t.strace" in message


def test_endless_line_is_read_in_bounded_memory(tmp_path):
    zeros = tmp_path / "zeros.strace"
    with open(zeros, "wb") as f:
        # One record (a file of nothing but NULs is rightly "no strace records"),
        # then, sparse, a gigabyte of NUL bytes and no newline.
        f.write(b'100 openat(AT_FDCWD, "/a", O_RDONLY) = 3\n')
        f.truncate(1 << 30)

    result = cli(str(zeros), "-f", "json", memory=600 << 20)

    assert result.returncode == 0, result.stderr[-500:]
    assert "line longer than" in result.stdout


def test_absurd_timestamps_do_not_become_infinite_times(tmp_path):
    trace = tmp_path / "t.strace"
    trace.write_text(
        f'100 {"9" * 400} openat(AT_FDCWD, "/a", O_RDONLY) = 3\n'
        f"100 {'9' * 30}.5 +++ exited with 0 +++\n"
    )

    times = [getattr(e, "time", None) for e in iter_events([trace])]

    assert all(t is None or (math.isfinite(t) and t < 1e11) for t in times)


def test_io_dump_lines_are_not_unreadable(tmp_path):
    trace = tmp_path / "t.strace"
    trace.write_text(
        '100 read(3, "hello, world", 12) = 12\n'
        " | 00000  68 65 6c 6c 6f 2c 20 77  6f 72 6c 64              hello, world |\n"
        "100 +++ exited with 0 +++\n"
    )

    analysis = analyze_paths([trace])

    assert analysis.unparsed_count == 0


def test_report_over_the_trace_itself_is_refused(tmp_path):
    trace = tmp_path / "qemu.strace"
    trace.write_text(PLAIN.read_text())

    message = one_line_error(cli(str(trace), "-o", str(tmp_path / "." / "qemu.strace")))

    assert "qemu.strace" in message
    assert trace.read_text() == PLAIN.read_text()  # the trace is still there


@pytest.mark.parametrize(
    "data",
    [b"not gzip at all", gzip.compress(PLAIN.read_bytes())[:200], b"\x1f\x8b\x08junk"],
    ids=["not-gzip", "truncated", "bad-header"],
)
def test_broken_gzip_traces_are_one_line_errors(tmp_path, data):
    trace = tmp_path / "qemu.strace.gz"
    trace.write_bytes(data)

    result = cli(str(trace))

    message = one_line_error(result)
    assert result.returncode == 5  # a trace input error, not an interruption
    assert "qemu.strace.gz" in message
    assert "None" not in message


def test_ff_set_with_more_files_than_the_fd_limit(tmp_path):
    for n in range(1, 301):
        (tmp_path / f"trace.{n}").write_text(
            f'1700000000.{n:06d} openat(AT_FDCWD, "/f{n}", O_RDONLY) = -1 ENOENT '
            "(No such file or directory)\n"
        )

    def few_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    result = subprocess.run(
        [sys.executable, "-m", "virt_debug", "analyze", str(tmp_path), "-f", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=few_fds,
    )

    assert result.returncode == 0, result.stderr


def test_report_over_a_trace_inside_a_named_directory_is_refused(tmp_path):
    launch = tmp_path / "launch"
    launch.mkdir()
    (launch / "strace.log").write_text(PLAIN.read_text())
    (launch / "status").write_text("exit 1\n")

    message = one_line_error(cli(str(launch), "-o", str(launch / "strace.log")))

    assert "strace.log" in message
    assert (launch / "strace.log").read_text() == PLAIN.read_text()


def test_fifos_in_a_directory_are_skipped_not_waited_on(tmp_path):
    # Opening a FIFO nobody writes blocks for ever: a trace beside it is still read.
    (tmp_path / "a.strace").write_text(PLAIN.read_text())
    os.mkfifo(tmp_path / "b.strace")
    os.mkfifo(tmp_path / "stderr")
    (tmp_path / "status").write_text("exit 0\n")

    result = cli(str(tmp_path), "--format", "json")

    assert result.returncode == 0, result.stderr
    assert '"a.strace"' in result.stdout or "a.strace" in result.stdout
    assert "b.strace" not in result.stdout


def test_a_device_is_refused_not_read_for_ever():
    message = one_line_error(cli("/dev/zero"))
    assert "/dev/zero is a device" in message


def test_a_gzipped_trace_in_a_directory_is_read(tmp_path):
    (tmp_path / "strace.log.gz").write_bytes(gzip.compress(PLAIN.read_bytes()))

    from_dir = cli(str(tmp_path), "--format", "json")
    from_file = cli(str(PLAIN), "--format", "json")

    assert from_dir.returncode == 0, from_dir.stderr
    calls = '"calls": '
    assert calls in from_dir.stdout
    count = from_dir.stdout.split(calls)[1].split(",")[0]
    assert count == from_file.stdout.split(calls)[1].split(",")[0]
    assert int(count) > 0


@pytest.mark.parametrize("name", ["x[/]y.txt", "a[bold]b.txt", "e\x1b]0;T\a.txt"])
def test_report_path_is_shown_as_written_not_as_markup(tmp_path, name):
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)

    result = cli(str(PLAIN), "-o", str(target))

    assert result.returncode == 0, result.stderr
    assert target.is_file()
    assert "Traceback" not in result.stderr and "\x1b" not in result.stderr
    assert f"report to {tmp_path}" in result.stderr
    if "[" in name:
        assert name in result.stderr


@pytest.mark.parametrize(
    "kind",
    ["long-bodies", "endless-stack", "endless-dump"],
)
def test_memory_stays_bounded_whatever_repeats(tmp_path, kind):
    # Each of these once grew with the input: long call bodies all kept in the
    # reader's cache, and one call's -k frames or -e read= dump lines all kept.
    path = tmp_path / f"{kind}.strace"
    with path.open("w") as f:
        if kind == "long-bodies":
            for n in range(120):
                f.write(f'100 write(5, "{"X" * (2 << 20)}{n}", 2097153) = 2097153\n')
        else:
            f.write('100 openat(AT_FDCWD, "/x", O_RDONLY) = -1 EACCES (Denied)\n')
            line = (
                " > /lib/x86_64-linux-gnu/libc.so.6(open+0x1234) [0x7f0000001234]\n"
                if kind == "endless-stack"
                else " | 00000  41 41 41 41 41 41 41 41  41 41 41 41 41 41 41 41  "
                "AAAAAAAAAAAAAAAA |\n"
            )
            f.write(line * 3_000_000)
        f.write("100 exit_group(1) = ?\n100 +++ exited with 1 +++\n")

    # 400 MB of address space is far more than the reader needs; the inputs
    # (240 MB, ~200 MB) would exceed it kept whole, with Python's overhead.
    result = cli(str(path), "--format", "json", memory=400 << 20)

    assert result.returncode == 0, result.stderr[-2000:]
    assert '"unparsed_lines": 0' in result.stdout or '"unparsed": []' in result.stdout


def test_a_trace_on_standard_input(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "virt_debug", "analyze", "-", "--format", "json"],
        input=PLAIN.read_text(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    from_file = cli(str(PLAIN), "--format", "json")

    assert result.returncode == 0, result.stderr
    calls = '"calls": '
    assert result.stdout.split(calls)[1][:12] == from_file.stdout.split(calls)[1][:12]
