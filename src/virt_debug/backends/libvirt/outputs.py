"""A launch of a debugger other than strace: how QEMU ended and where the output is.

Without ``strace.log`` there is nothing for the trace analysis to read, so the summary
comes from the wrapper's own files (``status``, ``forwarded``, ``stderr``, ``note``)
and lists the debugger's output files with how to open them.
"""

from pathlib import Path

from virt_debug.backends.libvirt import collect

_MAX_STDERR_LINES = 6
_SANDBOX_REFUSED = "no option group 'sandbox'"


def forwarded(launch: Path) -> str | None:
    """The signal the wrapper passed on to QEMU (``TERM``), if it did."""
    try:
        return (launch / "forwarded").read_text().strip() or None
    except OSError:
        return None


def qemu_stderr(launch: Path) -> list[str]:
    """QEMU's (and the debugger's) last lines on stderr, as the wrapper copied them."""
    try:
        text = (launch / "stderr").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return lines[-_MAX_STDERR_LINES:]


def explain(launch: Path) -> str:
    """The summary of one launch that has no strace output."""
    status = collect.read_status(launch) or "unknown (no status file)"
    sent = forwarded(launch)
    ended = f"  QEMU ended: {status}"
    if sent:
        ended += f" (after the wrapper forwarded SIG{sent})"
    lines = [ended]

    said = qemu_stderr(launch)
    if said:
        lines.append("  QEMU said (its stderr):")
        lines += [f"    {line}" for line in said]
    if any(_SANDBOX_REFUSED in line for line in said):
        lines += [
            "  hint: valgrind cannot run QEMU's seccomp sandbox: set",
            "    seccomp_sandbox = 0 in qemu.conf, or use a wrapper from this",
            "    virt-debug (it drops -sandbox for valgrind, see wrapper.log)",
        ]

    files = _output_files(launch)
    if files:
        lines.append("  debugger output:")
        lines += files
    return "\n".join(lines)


def _output_files(launch: Path) -> list[str]:
    lines = []
    ltrace = launch / "ltrace.log"
    if ltrace.is_file():
        lines.append(f"    {ltrace} ({ltrace.stat().st_size} bytes)")
    perf = launch / "perf.data"
    if perf.is_file():
        lines.append(f"    {perf}")
        # -f: the file is QEMU's user's (uid 107), perf refuses another's without it.
        lines.append(f"      read it with: perf report -f -i {perf}")
    for log in sorted(launch.glob("valgrind.*.log")):
        lines.append(f"    {log}")
        summary = _valgrind_errors(log)
        if summary:
            lines.append(f"      {summary}")
    note = launch / "note"
    if note.is_file():
        first = note.read_text(encoding="utf-8", errors="replace").splitlines()
        lines.append(f"    {note}: {first[0] if first else ''}")
    return lines


def _valgrind_errors(log: Path) -> str:
    found = ""
    with log.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if "ERROR SUMMARY:" in line:
                found = "ERROR SUMMARY:" + line.split("ERROR SUMMARY:", 1)[1].rstrip()
    return found
