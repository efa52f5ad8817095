"""What a new user reads first: one report per launch, the answer on top, QEMU's
message once, a healthy run called healthy, the monitor's missing half explained,
paths kept whole, and a hint when the guest's RAM cannot be allocated.

The launches are real: two runs of ``make demo`` (a healthy one, stopped by libvirt,
and ``--broken``) as the wrapper left them (tests/data/traces/launches/README.md).
"""

import gzip
import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from virt_debug.cli.analyze import analyze
from virt_debug.cli.main import main
from virt_debug.trace import analyze_launches, analyze_paths
from virt_debug.trace.report import HEALTHY, render

DATA = Path(__file__).parent / "data" / "traces"
CORPUS = DATA / "qemu"
HEALTHY_LAUNCH = "demo-20261203-194750/20261203-194759-20500"
BROKEN_LAUNCH = "demo-20261203-194807/20261203-194807-20674"
SCHEMA = json.loads(
    (
        Path(__file__).parents[1]
        / "src/virt_debug/trace/report/trace-report.schema.json"
    ).read_text()
)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """A copy of ``virt-debug-out/`` with both launches, traces unpacked."""
    root = tmp_path_factory.mktemp("findings") / "virt-debug-out"
    shutil.copytree(DATA / "launches", root)
    (root / "README.md").unlink()
    for packed in root.rglob("strace.log.gz"):
        packed.with_suffix("").write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
    return root


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(analyze, list(args))
    return result.exit_code, result.output


# 1. a folder of several launches


def test_a_folder_of_two_launches_gets_a_report_for_each(out):
    code, text = _cli(str(out), "--width", "80")

    assert code == 0, text
    assert text.count("How it ended") == 2
    first, second = text.index(HEALTHY_LAUNCH), text.index(BROKEN_LAUNCH)
    assert first < second
    assert "Launch 1 of 2: " + HEALTHY_LAUNCH in text
    assert "Launch 2 of 2: " + BROKEN_LAUNCH in text
    healthy, broken = text[:second], text[second:]
    assert HEALTHY in healthy and "disk image" not in healthy
    assert "exited with status 1" in broken and "disk image" in broken
    # evidence names the launch, relative to the folder given
    assert f"{BROKEN_LAUNCH}/strace.log:609" in broken
    assert re.search(r"^\s+strace\.log:\d+", text, re.M) is None


def test_a_domain_folder_names_evidence_by_launch_directory(out, tmp_path):
    domain = tmp_path / "demo"
    for launch in (HEALTHY_LAUNCH, BROKEN_LAUNCH):
        shutil.copytree(out / launch, domain / launch.split("/")[1])

    code, text = _cli(str(domain), "--width", "100")

    assert code == 0, text
    assert "20261203-194807-20674/strace.log:609" in text


def test_json_of_several_launches_is_a_documented_list(out):
    code, text = _cli(str(out), "-f", "json")

    assert code == 0, text
    data = json.loads(text)
    jsonschema.validate(data, SCHEMA)
    assert [r["label"] for r in data["launches"]] == [HEALTHY_LAUNCH, BROKEN_LAUNCH]
    assert [r["ended"]["code"] for r in data["launches"]] == [0, 1]
    assert data["launches"][0]["hints"] == []
    assert data["launches"][1]["hints"][0]["rule"] == "image"


def test_one_launch_keeps_the_single_report(out):
    (launch,) = analyze_launches([out / BROKEN_LAUNCH])
    data = json.loads(render(launch.analysis, "json"))

    jsonschema.validate(data, SCHEMA)
    assert "launches" not in data and data["ended"]["code"] == 1


def test_html_of_several_launches_asks_for_one(out, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", str(out), "-f", "html"])

    err = capsys.readouterr().err
    assert exit_info.value.code != 0
    assert (
        err.startswith("virt-debug: error: 2 launches found") and err.count("\n") == 1
    )
    assert "name one launch directory" in err


# 2. guest RAM that cannot be allocated


def test_guest_ram_enomem_names_the_size_and_the_mmap():
    a = analyze_paths([CORPUS / "guest-ram-enomem.strace"])
    text = render(a, "text", width=80)

    top = a.hints[0]
    assert top.rule == "guest-ram" and top.confirmed
    assert "64 TiB" in top.title and "mmap" in top.title
    assert any(e.line == 641 and "70368744177664" in e.text for e in top.evidence), (
        top.evidence
    )
    assert "lower the" in top.advice and "overcommit" in top.advice
    assert "no known cause matched" not in text


def test_guest_memory_message_alone_still_gives_the_hint(tmp_path):
    # A trace without the mmap (or with a small one): QEMU's own words suffice.
    trace = tmp_path / "q.strace"
    trace.write_text(
        '10 execve("/usr/bin/qemu-system-x86_64", ["qemu-system-x86_64", "-m", '
        '"64T"], 0x0 /* 1 var */) = 0\n'
        "10 write(2, \"qemu-system-x86_64: cannot set up guest memory 'pc.ram': "
        'Cannot allocate memory\\n", 80) = 80\n'
        "10 +++ exited with 1 +++\n"
    )

    hints = analyze_paths([trace]).hints

    assert [h.rule for h in hints] == ["guest-ram"]
    assert (
        hints[0].evidence and "cannot set up guest memory" in hints[0].evidence[0].text
    )


# 3. a healthy run


def test_healthy_run_stopped_by_libvirt_says_so(out):
    a = analyze_paths([out / HEALTHY_LAUNCH])
    text = render(a, "text", width=80)
    page = render(a, "html")

    assert HEALTHY in text
    assert "Likely cause" not in text and "no known cause matched" not in text
    assert HEALTHY in page and "No known cause matched" not in page
    assert "Failed calls: 0 in 0 groups" not in page
    assert "No failed call that matters" in page and "No failed call" in text


def test_healthy_corpus_run_says_so():
    text = render(analyze_paths([CORPUS / "kvm-ok.strace"]), "text")

    assert HEALTHY in text


def test_a_failed_start_is_not_called_healthy():
    for name in ("disk-missing.strace", "crash-segv.strace", "kvm-create-vm.strace"):
        assert HEALTHY not in render(analyze_paths([CORPUS / name]), "text"), name


# 4. order, QEMU's message once, quiet last calls


def test_answer_first_then_message_failures_last_calls(out):
    text = render(analyze_paths([out / BROKEN_LAUNCH]), "text", width=80)

    order = [
        text.index("How it ended"),
        text.index("Likely cause"),
        text.index("QEMU said"),
        text.index("Failed calls"),
        text.index("Last calls"),
    ]
    assert order == sorted(order)
    assert text.count("Permission denied") <= 3  # the message once, the two calls
    assert text.count("Could not open") == 1
    last = text[text.index("Last calls") :]
    last = last[: last.index("\n\n")]
    assert "rt_sigprocmask" not in last and "mmap(" not in last
    assert "EACCES" in last and "exit_group(1)" in last


def test_a_qemu_error_hint_does_not_agree_with_itself():
    a = analyze_paths([CORPUS / "qemu-error.strace"])
    text = render(a, "text")
    page = render(a, "html")

    assert a.hints[0].rule == "qemu-error"
    assert "1. QEMU exited with status 1; no known cause matched\n" in text
    assert "agrees" not in text and "agrees" not in page
    # QEMU's message once: not in the hint, not again among the last calls
    assert text.count("unsupported machine type") == 1
    last = text[text.index("Last calls") :]
    assert "write(2" not in last[: last.index("\n\n")]


# 5. the monitor's missing half


def test_monitor_section_says_the_commands_were_not_traced(out):
    a = analyze_paths([out / HEALTHY_LAUNCH])
    text = render(a, "text", width=80)
    page = render(a, "html")

    assert {m.direction for m in a.monitor} == {"out"}
    section = text[text.index("Monitor messages") :]
    assert "commands from libvirt are not in this trace" in section
    assert "recvmsg/read were not traced; use --full" in " ".join(section.split())
    assert "-> QEMU received it" in section and "<- QEMU sent it" in section
    assert "commands from libvirt are not in this trace" in page


def test_monitor_with_both_directions_has_no_such_line():
    text = render(analyze_paths([CORPUS / "qmp-secret.strace"]), "text")

    assert "Monitor messages" in text and "not in this trace" not in text


# 6. paths in tables are never split


def test_table_paths_stay_whole_or_shortened_in_the_middle(out):
    text = render(analyze_paths([out / BROKEN_LAUNCH]), "text", width=80)
    disk = "/tmp/newuser/main/virt-debug-out/demo-20261203-194807/guest/disk.img"

    failures = text[text.index("Failed calls") : text.index("Last calls")]
    assert disk in failures.splitlines()[4]
    files = text[text.index("Files opened") :].splitlines()
    assert any(line.rstrip().endswith(disk) for line in files)
    narrow = render(analyze_paths([out / BROKEN_LAUNCH]), "text", width=60)
    table = narrow[narrow.index("Failed calls") : narrow.index("Last calls")]
    (row,) = [line for line in table.splitlines() if "disk.img" in line]
    assert row.strip().startswith("/tmp/") and "…" in row
    assert not any(
        line.strip().startswith("est/disk.img") for line in table.splitlines()
    )
    assert all(len(line) <= 60 for line in narrow.splitlines())


# 7. the help shows the real layout


def test_help_example_matches_the_output_layout():
    code, text = _cli("--help")

    assert code == 0
    assert re.search(r"virt-debug-out/\w+-\d{8}-\d{6}/\d{8}-\d{6}-\d+/", text)
    assert "mydomain/20261203" not in text


@pytest.mark.parametrize(
    "signal,after,healthy",
    [("SIGTERM", 5.0, True), ("SIGTERM", 0.1, False), ("SIGKILL", 5.0, False)],
)
def test_killed_by_a_stop_signal_after_a_run_is_healthy(
    tmp_path, signal, after, healthy
):
    trace = tmp_path / "q.strace"
    trace.write_text(
        '10 1700000000.0 execve("/usr/bin/qemu-system-x86_64", '
        '["qemu-system-x86_64"], 0x0 /* 1 var */) = 0\n'
        f"10 {1700000000.0 + after:.6f} --- {signal} {{si_signo={signal}, "
        "si_code=SI_USER, si_pid=1, si_uid=0} ---\n"
        f"10 {1700000000.0 + after:.6f} +++ killed by {signal} +++\n"
    )

    text = render(analyze_paths([trace]), "text")

    assert (HEALTHY in text) is healthy


def test_json_says_whether_qemu_ran_normally(out):
    code, text = _cli(str(out), "-f", "json")

    assert code == 0
    runs = json.loads(text)["launches"]
    assert [r["summary"]["ran_normally"] for r in runs] == [True, False]


@pytest.mark.parametrize("room", [12, 20, 33, 40, 67])
def test_fit_shortens_in_the_middle_and_keeps_both_ends(room):
    from virt_debug.trace.report.terminal import fit

    path = "/tmp/newuser/main/virt-debug-out/demo-20261203-194807/guest/disk.img"
    short = fit(path, room)

    head, _, tail = short.partition("…")
    assert len(short) <= room and short.count("…") == 1
    assert path.startswith(head) and path.endswith(tail) and tail.endswith("disk.img")
