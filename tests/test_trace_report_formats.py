"""The four report formats and the ``analyze`` command, on real QEMU traces."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from virt_debug.cli.analyze import analyze
from virt_debug.cli.main import main
from virt_debug.trace import analyze_paths
from virt_debug.trace.report import render

CORPUS = Path(__file__).parent / "data" / "traces" / "qemu"
SCHEMA = json.loads(
    (
        Path(__file__).parents[1]
        / "src/virt_debug/trace/report/trace-report.schema.json"
    ).read_text()
)
TRACES = sorted(p.name for p in CORPUS.glob("*.strace"))
ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def analyses():
    return {name: analyze_paths([CORPUS / name]) for name in TRACES}


@pytest.mark.parametrize("name", TRACES)
def test_text_fits_80_columns_without_colour(analyses, name):
    text = render(analyses[name], "text", width=80, verbose=True)

    assert not ANSI.search(text)
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert too_wide == []


def test_text_leads_with_the_answer(analyses):
    text = render(analyses["kvm-denied.strace"], "text")

    ended = text.index("How it ended")
    cause = text.index("Likely cause")
    assert ended < cause < text.index("Failed calls")
    assert "QEMU exited with status 1" in text
    assert "| qemu-system-x86_64: -accel kvm: failed to initialize kvm" in text
    assert "1. /dev/kvm permission denied" in text
    assert "kvm-denied.strace:" in text  # evidence names file and line
    assert re.search(r"\d+ expected failures folded \(--verbose lists them\)", text)


def test_text_colour_only_when_asked(analyses):
    assert ANSI.search(render(analyses["vhost.strace"], "text", color=True))


@pytest.mark.parametrize("name", TRACES)
def test_json_matches_the_documented_schema(analyses, name):
    data = json.loads(render(analyses[name], "json"))

    jsonschema.validate(data, SCHEMA)
    assert data["schema_version"] == 1


def test_json_content(analyses):
    data = json.loads(render(analyses["tap-denied.strace"], "json"))

    assert data["ended"]["how"] == "exited" and data["ended"]["code"] == 1
    assert data["hints"][0]["rank"] == 1 and data["hints"][0]["rule"] == "tap-vhost"
    assert data["failures"][0]["request"] == "TUNSETIFF"
    assert data["summary"]["expected_failures"] == sum(
        g["count"] for g in data["expected_failures"]
    )


@pytest.mark.parametrize("name", ["qmp-secret.strace", "vhost.strace"])
def test_perfetto_trace_event_structure(analyses, name):
    a = analyses[name]
    data = json.loads(render(a, "perfetto"))
    events = data["traceEvents"]

    complete = [e for e in events if e["ph"] == "X"]
    assert len(complete) == a.syscalls_total  # small trace: nothing capped
    for e in complete:
        assert {"name", "ts", "dur", "pid", "tid"} <= e.keys()
        assert e["dur"] > 0 and e["ts"] >= 0
    names = {(e["name"], e["args"]["name"]) for e in events if e["ph"] == "M"}
    assert ("process_name", "qemu-system-x86_64") in names
    assert sum(1 for n, _ in names if n == "thread_name") == len(a.threads)
    instants = [e for e in events if e["ph"] == "i"]
    assert all(e["s"] == "t" for e in instants)
    assert any(e["cat"] == "exit" for e in instants)
    tids = {e["tid"] for e in complete}
    assert tids == {t.tid for t in a.threads}


def test_perfetto_marks_failures_and_signals(analyses):
    events = json.loads(render(analyses["vhost.strace"], "perfetto"))["traceEvents"]

    failures = [e for e in events if e["ph"] == "i" and e["cat"] == "failure"]
    assert any("/dev/vhost-net" in e["name"] for e in failures)
    assert any(e["ph"] == "i" and e["name"] == "SIGABRT" for e in events)
    failed_calls = [e for e in events if e["ph"] == "X" and "errno" in e["args"]]
    assert failed_calls


class _Resources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href") and value and not value.startswith("#"):
                self.external.append(f"{tag} {key}={value}")
            if tag == "link":
                self.external.append("link")


@pytest.mark.parametrize("name", TRACES)
def test_html_is_self_contained(analyses, name):
    page = render(analyses[name], "html")

    parser = _Resources()
    parser.feed(page)
    assert parser.external == []
    assert "@import" not in page and "url(" not in page
    assert '<div id="timeline">' in page


def test_cli_writes_each_format_to_a_file(tmp_path):
    runner = CliRunner()
    for fmt in ("text", "json", "html", "perfetto"):
        out = tmp_path / f"report.{fmt}"
        result = runner.invoke(
            analyze,
            [str(CORPUS / "memlock.strace"), "-f", fmt, "-o", str(out)],
        )
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 1000
    assert "locking guest memory failed" in (tmp_path / "report.text").read_text()
    json.loads((tmp_path / "report.perfetto").read_text())


def test_cli_text_to_stdout_not_a_terminal_has_no_colour():
    result = CliRunner().invoke(analyze, [str(CORPUS / "bios-missing.strace")])

    assert result.exit_code == 0
    assert not ANSI.search(result.output)
    assert "could not load PC BIOS" in result.output


def test_cli_reads_a_directory(tmp_path):
    run = tmp_path / "20261203-101500-4242"
    run.mkdir()
    (run / "strace.log").write_bytes((CORPUS / "kvm-denied.strace").read_bytes())
    (run / "argv").write_bytes(b"qemu-system-x86_64\0-accel\0kvm\0")
    (run / "status").write_text("exit 1\n")

    result = CliRunner().invoke(analyze, [str(tmp_path), "-f", "json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["hints"][0]["rule"] == "kvm-device"


@pytest.mark.parametrize(
    "args,message",
    [
        (["analyze", "/nonexistent/trace.strace"], "no such file or directory"),
        (["analyze"], "no trace given"),
    ],
)
def test_cli_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)

    err = capsys.readouterr().err
    assert exit_info.value.code in (2, 5)
    assert message in err
    assert err.startswith("virt-debug: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_cli_empty_trace_is_an_input_error(tmp_path, capsys):
    empty = tmp_path / "empty.strace"
    empty.write_text("")

    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", str(empty)])

    assert exit_info.value.code == 5
    assert "no strace records" in capsys.readouterr().err


def test_cli_unreadable_trace():
    # Root reads any file: run the command as the qemu user (uid 107) instead.
    if os.geteuid() != 0:
        pytest.skip("needs root to run the command as another user")
    work = Path(tempfile.mkdtemp(prefix="virt-debug-perm-"))
    try:
        work.chmod(0o755)
        locked = work / "locked.strace"
        locked.write_text("1 close(3) = 0\n")
        locked.chmod(0)
        result = subprocess.run(
            ["setpriv", "--reuid", "107", "--regid", "107", "--clear-groups",
             sys.executable, "-m", "virt_debug", "analyze", str(locked)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        shutil.rmtree(work)

    assert result.returncode == 5
    assert result.stderr.startswith("virt-debug: error: ")
    assert "Permission denied" in result.stderr and "Traceback" not in result.stderr


def test_cli_help_teaches():
    result = CliRunner().invoke(analyze, ["--help"])

    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "--no-redact" in result.output and "perfetto" in result.output


@pytest.mark.skipif(not shutil.which("script"), reason="needs util-linux script")
def test_cli_colours_only_on_a_terminal():
    command = f"{sys.executable} -m virt_debug analyze {CORPUS / 'vhost.strace'}"
    on_tty = subprocess.run(
        ["script", "-qc", command, "/dev/null"], capture_output=True, text=True
    )
    no_color = subprocess.run(
        ["script", "-qc", command, "/dev/null"],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )

    assert "\x1b[1m" in on_tty.stdout  # bold headings on a terminal
    assert "How it ended" in no_color.stdout and "\x1b[1m" not in no_color.stdout
