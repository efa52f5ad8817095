"""Hostile traces against the reports: what a trace holds must not break an output.

Control characters and escape sequences must not reach the terminal, file names that
are not UTF-8 must not break an encoder, absurd timestamps must not make invalid JSON
or crash the clock, and one line of ten megabytes must stay one line's worth of work.
"""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from virt_debug.trace import analyze_paths
from virt_debug.trace.report import FORMATS, render

QEMU = (
    '100 execve("/usr/bin/qemu-system-x86_64", ["qemu-system-x86_64", "-name", '
    '"\\33]0;pwned\\7x"], 0x7ffd /* 20 vars */) = 0\n'
)
ESCAPES = QEMU + (
    '100 openat(AT_FDCWD, "/tmp/\\33[2J\\33[31mdisk.qcow2", O_RDONLY) = -1 ENOENT '
    "(No such file or directory)\n"
    '100 write(2, "qemu: \\33[2J\\33]0;evil\\7 bad\\0 \\302\\233 disk\\r\\n", 40)'
    " = 40\n"
    "100 exit_group(1) = ?\n"
    "100 +++ exited with 1 +++\n"
)


def write(path: Path, text: str | bytes) -> Path:
    data = text if isinstance(text, bytes) else text.encode()
    path.write_bytes(data)
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "virt_debug", "analyze", *args],
        capture_output=True,
        timeout=300,
    )


def controls(text: str) -> set[str]:
    """Characters a terminal would act on: C0 but newline, DEL, C1."""
    return {
        c for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0
    }  # fmt: skip


@pytest.mark.parametrize("verbose", [False, True])
def test_text_report_never_passes_terminal_controls_from_the_trace(tmp_path, verbose):
    trace = write(tmp_path / "esc.strace", ESCAPES)

    text = render(analyze_paths([trace]), "text", verbose=verbose)

    assert controls(text) == set()
    # still readable: the escape shows as text
    assert "disk.qcow2" in text
    assert "\\x1b" in text


def test_text_report_keeps_colour_but_drops_the_traces_escapes(tmp_path):
    trace = write(tmp_path / "esc.strace", ESCAPES)

    text = render(analyze_paths([trace]), "text", color=True)

    # rich's own colours (ESC [ ... m) stay; no other escape sequence does
    leftover = text.replace("\x1b[", "")
    assert "\x1b" not in leftover
    assert "\x07" not in text and "\x00" not in text and "\x9b" not in text


def test_raw_control_bytes_in_unreadable_lines_are_shown_escaped(tmp_path):
    trace = write(
        tmp_path / "bin.strace",
        b"\x00\x01\x1b]0;x\x07\x9b\xc2\x9b junk\n100 +++ exited with 0 +++\n",
    )

    text = render(analyze_paths([trace]), "text")

    assert controls(text) == set()
    assert "junk" in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_trace_file_name_that_is_not_utf8(tmp_path, fmt):
    name = b"bad\xff\xfe<img src=x onerror=alert(1)>.strace"
    trace = tmp_path.joinpath(name.decode("utf-8", "surrogateescape"))
    write(trace, ESCAPES)
    out = tmp_path / "report"

    result = cli(str(trace), "-f", fmt, "-o", str(out))
    stdout = cli(str(trace), "-f", fmt)

    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr + stdout.stderr
    for data in (out.read_bytes(), stdout.stdout):
        text = data.decode("utf-8")  # valid UTF-8
        if fmt in ("json", "perfetto"):
            json.loads(text)
        if fmt == "html":
            assert "<img src=x" not in text
        assert "bad\\xff\\xfe" in text.replace("\\\\", "\\")


SCHEMA = json.loads(
    (
        Path(__file__).parents[1]
        / "src/virt_debug/trace/report/trace-report.schema.json"
    ).read_text()
)
HUGE = "9" * 400  # a "timestamp" float() makes infinite


@pytest.mark.parametrize(
    "stamp", [HUGE, "9" * 30, "99999999999999999999"], ids=["inf", "1e30", "1e20"]
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_absurd_timestamps_keep_every_format_whole(tmp_path, stamp, fmt):
    trace = write(
        tmp_path / "t.strace",
        f'100 {stamp} openat(AT_FDCWD, "/a", O_RDONLY) = -1 EACCES (Permission '
        f"denied)\n100 {stamp} +++ exited with 1 +++\n",
    )

    out = render(analyze_paths([trace]), fmt)

    if fmt in ("json", "perfetto"):

        def reject(constant: str) -> None:
            raise ValueError(f"{constant} is not JSON")

        data = json.loads(out, parse_constant=reject)
        if fmt == "json":
            jsonschema.validate(data, SCHEMA)
    assert "EACCES" in out or fmt == "perfetto"


@pytest.mark.parametrize("fmt", ["json", "perfetto"])
def test_infinite_duration_is_not_written_as_infinity(tmp_path, fmt):
    trace = write(
        tmp_path / "t.strace",
        '100 1700000000.000001 openat(AT_FDCWD, "/a", O_RDONLY) = -1 EACCES '
        f"(Permission denied) <{HUGE}.0>\n100 1700000001.0 +++ exited with 1 +++\n",
    )

    out = render(analyze_paths([trace]), fmt)

    assert "Infinity" not in out and "NaN" not in out
    json.loads(out)


def test_ten_megabyte_line_stays_a_bounded_report(tmp_path):
    big = "a" * (10 * 1024 * 1024)
    trace = write(
        tmp_path / "long.strace",
        f'100 openat(AT_FDCWD, "/{big}", O_RDONLY) = -1 ENOENT (No such file or '
        f'directory)\n100 write(2, "{big}", 99) = 99\n100 +++ exited with 1 +++\n',
    )

    analysis = analyze_paths([trace])

    # the finding is there, but no output carries the megabytes over and over
    assert analysis.failures[0].errno == "ENOENT"
    for fmt in FORMATS:
        assert len(render(analysis, fmt)) < 1024 * 1024, fmt


def test_unreadable_lines_of_ten_megabytes_are_kept_short(tmp_path):
    junk = ("x" * (1024 * 1024) + "\n") * 10
    trace = write(tmp_path / "junk.strace", junk + "100 +++ exited with 0 +++\n")

    analysis = analyze_paths([trace])

    assert analysis.unparsed_count == 10
    assert all(len(e.text) < 4096 for e in analysis.unparsed)
    assert len(render(analysis, "json")) < 100 * 1024
