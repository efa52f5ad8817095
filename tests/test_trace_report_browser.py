"""The HTML report in a real headless Chromium: it renders, draws the timeline with
its failure marks, and logs no console error."""

import shutil
from pathlib import Path

import pytest

from virt_debug.trace import analyze_paths
from virt_debug.trace.report import render

CORPUS = Path(__file__).parent / "data" / "traces" / "qemu"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium"),
]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def open_report(browser, tmp_path, name, **kwargs):
    page_file = tmp_path / f"{name}.html"
    page_file.write_text(render(analyze_paths([CORPUS / name], **kwargs), "html"))
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "request",
        lambda r: None if r.url.startswith("file:") else problems.append(r.url),
    )
    page.goto(page_file.as_uri())
    page.wait_for_selector("#timeline[data-rendered]")
    return page, problems


@pytest.mark.parametrize(
    "name", ["vhost.strace", "qmp-secret.strace", "seccomp.strace", "crash-segv.strace"]
)
def test_report_renders_without_console_errors(browser, tmp_path, name):
    page, problems = open_report(browser, tmp_path, name)

    lanes = int(page.get_attribute("#timeline", "data-rendered"))
    assert lanes >= 2
    assert page.locator("#timeline svg rect.call").count() > 100
    assert page.locator("#timeline svg path.mark.exit").count() >= 1
    assert page.locator("#ended").inner_text().strip()
    assert problems == []
    page.close()


def test_timeline_marks_the_failure_and_shows_it_on_hover(browser, tmp_path):
    page, problems = open_report(browser, tmp_path, "vhost.strace")

    marks = page.locator("#timeline svg path.mark.failure")
    assert marks.count() == 1
    marks.first.hover()
    tip = page.locator("#tip")
    assert tip.is_visible()
    assert "/dev/vhost-net" in tip.inner_text()
    assert "vhost-net" in page.locator("#hints .hint").first.inner_text()
    assert problems == []
    page.close()


def test_redacted_report_in_the_browser_shows_no_secret(browser, tmp_path):
    page, problems = open_report(browser, tmp_path, "qmp-secret.strace")

    body = page.locator("body").inner_text()
    assert "hunter2-SECRET" not in body and "vd-MASTER-KEY" not in body
    assert '"data": "<redacted>"' in page.locator("#monitor").inner_text()
    assert problems == []
    page.close()


def test_trace_without_timestamps_and_capped_timeline(browser, tmp_path):
    # Laid out by line number; one thread past the timeline cap.
    trace = tmp_path / "plain.strace"
    trace.write_text(
        'execve("/usr/bin/qemu-system-x86_64", ["qemu-system-x86_64"], '
        "0x7ffd /* 3 vars */) = 0\n"
        + "".join(
            f'openat(AT_FDCWD, "/x/{n % 5}", O_RDONLY) = -1 EACCES (Denied)\n'
            for n in range(3000)
        )
        + "+++ exited with 1 +++\n"
    )
    page_file = tmp_path / "plain.html"
    page_file.write_text(render(analyze_paths([trace]), "html"))
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    page.goto(page_file.as_uri())
    page.wait_for_selector("#timeline[data-rendered]")

    assert page.locator("#timeline svg rect.call").count() == 2000
    assert page.locator("#timeline svg rect.call.failed").count() == 1999
    assert "left out" in page.locator("#timeline svg").inner_html()
    assert problems == []
    page.close()
