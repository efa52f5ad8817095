"""The analysis on real QEMU traces: each shows one way a start fails (see
tests/data/traces/qemu/make-traces.sh) and expected.json says what must be found."""

import json
from pathlib import Path

import pytest

from virt_debug.trace import analyze_paths

CORPUS = Path(__file__).parent / "data" / "traces" / "qemu"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
TRACES = sorted(name for name in EXPECTED if not name.startswith("_"))


@pytest.fixture(scope="module")
def analyses():
    return {name: analyze_paths([CORPUS / name]) for name in TRACES}


@pytest.mark.parametrize("name", TRACES)
def test_how_qemu_ended(analyses, name):
    want = EXPECTED[name]
    ended = analyses[name].ended

    assert ended.program == "/usr/bin/qemu-system-x86_64"
    assert (ended.how, ended.code, ended.signal, ended.core_dumped) == (
        want["how"],
        want["code"],
        want["signal"],
        want["core_dumped"],
    )
    assert ended.evidence is not None and "+++" in ended.evidence.text
    assert ended.last_calls, "the last calls of the thread that ended QEMU"


@pytest.mark.parametrize("name", TRACES)
def test_top_hint_names_the_cause(analyses, name):
    want = EXPECTED[name]
    hints = analyses[name].hints

    if want["hint"] is None:
        assert hints == []
        return
    top = hints[0]
    assert top.rule == want["hint"], [h.title for h in hints]
    for word in want["title"]:
        assert word in top.title
    assert top.evidence, "a hint always shows the lines it rests on"
    for evidence in top.evidence:
        assert evidence.source.endswith(name) and evidence.line > 0 and evidence.text
    for rule in want.get("also", []):
        assert rule in [h.rule for h in hints]


@pytest.mark.parametrize("name", TRACES)
def test_qemu_stderr_and_failures(analyses, name):
    want = EXPECTED[name]
    a = analyses[name]

    assert want["stderr"] in a.qemu_stderr
    assert a.unparsed_count == 0
    assert a.expected_count > 0, "every QEMU start has expected failures to fold"
    if want["failure"]:
        syscall, errno, path = want["failure"]
        assert any(
            g.syscall == syscall
            and g.errno == errno
            and (g.path or "").startswith(path or "")
            for g in a.failures
        ), [(g.syscall, g.errno, g.path) for g in a.failures]


def test_image_hint_is_confirmed_by_qemu_and_quotes_its_message(analyses):
    hint = analyses["disk-missing.strace"].hints[0]

    assert hint.confirmed
    stderr_lines = [e for e in hint.evidence if e.text.startswith("QEMU stderr")]
    assert stderr_lines and "Could not open" in stderr_lines[0].text


def test_vhost_failure_ranks_above_the_crash_it_caused(analyses):
    rules = [h.rule for h in analyses["vhost.strace"].hints]

    assert rules.index("tap-vhost") < rules.index("crash")


def test_expected_noise_is_folded_not_lost(analyses):
    a = analyses["qmp-secret.strace"]

    assert a.failures == []
    reasons = {(g.syscall, g.path): g.expected for g in a.expected}
    assert reasons[("access", "/etc/ld.so.preload")]
    assert sum(g.count for g in a.expected) == a.expected_count


def test_bios_search_miss_is_not_folded_when_argv_names_the_file(analyses):
    a = analyses["bios-missing.strace"]

    assert [g.path for g in a.failures] == ["/nonexistent/OVMF_CODE.fd"]


def test_thread_that_ended_qemu(analyses):
    seccomp = analyses["seccomp.strace"].ended
    crash = analyses["crash-segv.strace"].ended

    # seccomp's kill is process-wide: the thread with the last finished call did it
    assert "clone" in seccomp.last_calls[-1].text
    # the SIGSEGV was delivered to the main thread
    assert crash.tid == analyses["crash-segv.strace"].qemu_pid


def test_threads_syscalls_and_files(analyses):
    a = analyses["qmp-secret.strace"]

    assert len(a.threads) == 4
    main = [t for t in a.threads if t.tid == a.qemu_pid][0]
    assert main.ended == "exited with 0" and main.execs[-1].endswith(
        "qemu-system-x86_64"
    )
    assert all(t.tgid == a.qemu_pid for t in a.threads)
    assert a.has_durations
    stats = {s.name: s for s in a.syscalls}
    assert stats["recvmsg"].calls == 153 and stats["recvmsg"].seconds > 0
    files = {f.path: f for f in a.files}
    assert files["/dev/sgx_vepc"].failed == 1
    assert files["/tmp/vdt2/master-key.aes"].ok == 1
