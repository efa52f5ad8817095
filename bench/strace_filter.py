"""How much a strace trace set slows a QEMU start driven over QMP the way libvirt does.

Starts QEMU (KVM when usable) through the emulator wrapper, connects to its QMP socket,
sends the monitor traffic of a libvirt start (capabilities, then a burst of queries and
object/device commands), and quits; prints the median wall time per mode, its ratio to
untraced, and for a full trace the calls per syscall.

    .venv/bin/python bench/strace_filter.py [--rounds 5] [--commands 400]
"""

import argparse
import collections
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from virt_debug.debuggers import strace as strace_module
from virt_debug.launch.wrapper import render_wrapper

QEMU = "/usr/bin/qemu-system-x86_64"
ACCEL = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"
# A mix like libvirt's start: many queries with large JSON answers, some setters.
QUERIES = [
    "query-version",
    "query-commands",
    "query-events",
    "query-status",
    "query-cpus-fast",
    "query-chardev",
    "query-block",
    "query-machines",
    "query-qmp-schema",
    "qom-list-types",
    "query-migrate-capabilities",
]


def qmp_session(path: Path, commands: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(path))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    reader = sock.makefile("rb")
    reader.readline()

    def call(execute: str, **arguments: object) -> None:
        message = {"execute": execute}
        if arguments:
            message["arguments"] = arguments
        sock.sendall(json.dumps(message).encode())
        while True:
            reply = json.loads(reader.readline())
            if "return" in reply or "error" in reply:
                return

    call("qmp_capabilities")
    for index in range(commands):
        name = QUERIES[index % len(QUERIES)]
        if index % 7 == 0:
            call("qom-set", path="/machine", property="graphics", value=False)
        else:
            call(name)
    sock.sendall(b'{"execute":"quit"}')
    reader.read()
    sock.close()


def launch(wrapper: Path | None, workdir: Path, commands: int) -> float:
    sock = workdir / f"qmp-{time.monotonic_ns()}.sock"
    argv = [
        str(wrapper) if wrapper else QEMU,
        "-name",
        "guest=bench,debug-threads=on",
        "-machine",
        f"q35,accel={ACCEL}",
        "-m",
        "64",
        "-smp",
        "2",
        "-display",
        "none",
        "-nodefaults",
        "-S",
        "-qmp",
        f"unix:{sock},server=on,wait=off",
    ]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    qmp_session(sock, commands)
    proc.wait(60)
    return time.monotonic() - start


def wrapper_for(workdir: Path, mode: str, exclude: tuple[str, ...] | None) -> Path:
    if exclude is not None:
        strace_module.HOT_CALLS = exclude
    text = render_wrapper(
        "strace", qemu=QEMU, output=str(workdir / mode), full=mode == "full"
    )
    path = workdir / f"wrapper-{mode}"
    path.write_text(text)
    path.chmod(0o755)
    return path


def syscall_counts(trace_dir: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    pattern = re.compile(r"^\d+(?:<[^>]*>)?\s+[\d:.]+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]")
    for log in trace_dir.glob("*/strace.log"):
        for line in log.open(errors="replace"):
            match = pattern.match(line)
            if match and "resumed>" not in line:
                counts[match.group(1)] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--commands", type=int, default=400)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="NAME=call,call: a candidate hot set to measure (repeatable)",
    )
    args = parser.parse_args()
    candidates = {"default": strace_module.HOT_CALLS}
    for item in args.set:
        name, _, calls = item.partition("=")
        candidates[name] = tuple(c for c in calls.split(",") if c)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        modes: dict[str, Path | None] = {"untraced": None}
        modes["full"] = wrapper_for(workdir, "full", None)
        for name, calls in candidates.items():
            modes[name] = wrapper_for(workdir, name, calls)
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode, wrapper in modes.items():
                times[mode].append(launch(wrapper, workdir, args.commands))

        base = statistics.median(times["untraced"])
        print(f"accel={ACCEL} commands={args.commands} rounds={args.rounds}")
        for mode, values in times.items():
            median = statistics.median(values)
            calls = candidates.get(mode, ())
            print(f"{mode:10} {median:7.3f}s  {median / base:5.2f}x  {','.join(calls)}")
        counts = syscall_counts(workdir / "full")
        total = sum(counts.values())
        print(f"full trace, {total} calls over {args.rounds} launches:")
        for name, count in counts.most_common(15):
            print(f"  {name:20} {count:8}  {100 * count / total:5.1f}%")


if __name__ == "__main__":
    sys.exit(main())
