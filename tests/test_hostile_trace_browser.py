"""A hostile trace's HTML report in a real headless Chromium: markup from the trace
stays text, absurd times do not break the timeline, nothing runs but the page's own
script."""

import shutil

import pytest

from virt_debug.trace import analyze_paths
from virt_debug.trace.report import render

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
INJECT = "</script><script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
HUGE = "9" * 400  # no time: the line is unreadable and shown as it is

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium"),
]


def test_hostile_trace_report_renders_as_text(tmp_path):
    trace = tmp_path / "x.strace"
    escaped = INJECT.replace('"', '\\"')
    trace.write_text(
        f'100 1700000000.5 execve("/usr/bin/qemu-kvm", ["qemu-kvm", "{escaped}"], '
        "0x0 /* 1 var */) = 0\n"
        f'100 1700000000.6 openat(AT_FDCWD, "/tmp/{escaped}.qcow2", O_RDONLY) = -1 '
        "ENOENT (No such file or directory)\n"
        f'100 1700000000.7 write(2, "{escaped}\\n", 90) = 90\n'
        f"100<x</script> {HUGE} +++ exited with 1 +++\n"
    )
    page_file = tmp_path / "report.html"
    page_file.write_text(render(analyze_paths([trace]), "html"))

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        problems: list[str] = []
        page.on(
            "console", lambda m: problems.append(m.text) if m.type == "error" else None
        )
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda d: problems.append(f"dialog {d.message}"))
        page.goto(page_file.as_uri())
        page.wait_for_selector("#timeline[data-rendered]")

        pwned = page.evaluate("window.pwned")
        stderr = page.locator("#stderr").inner_text()
        browser.close()

    assert pwned is None
    assert "window.pwned=1" in stderr  # shown, as text
    assert problems == []
