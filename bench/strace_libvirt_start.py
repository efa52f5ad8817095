"""Start time of a libvirt guest untraced and through the strace wrapper, alternating.

A private session libvirtd (as uid 107 when run as root) starts the demo guest (halting,
so it keeps running) with its emulator set to each wrapper in turn; the time of
``domain.create()`` is what libvirt's start costs. Prints the median per mode and the
ratio to untraced, plus the calls per syscall of one full trace.

    .venv/bin/python bench/strace_libvirt_start.py [--rounds 5] [--set NAME=call,call]
"""

import argparse
import collections
import os
import re
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from virt_debug.backends.libvirt.daemon import SessionDaemon
from virt_debug.debuggers import strace as strace_module
from virt_debug.demo.guest import create_guest
from virt_debug.launch.wrapper import render_wrapper

QEMU = "/usr/bin/qemu-system-x86_64"


def wrapper_for(workdir: Path, mode: str, exclude: tuple[str, ...] | None) -> str:
    if mode == "untraced":
        return QEMU
    saved = strace_module.HOT_CALLS, strace_module.COMMON_OPTIONS
    if exclude is not None:
        strace_module.HOT_CALLS = tuple(c for c in exclude if not c.startswith("-"))
        options = [c for c in exclude if c.startswith("-")]
        if options:
            strace_module.COMMON_OPTIONS = ["-f", *options]
    text = render_wrapper(
        "strace", qemu=QEMU, output=str(workdir / "out" / mode), full=mode == "full"
    )
    strace_module.HOT_CALLS, strace_module.COMMON_OPTIONS = saved
    path = workdir / f"wrapper-{mode}"
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def with_emulator(xml: str, name: str, emulator: str) -> str:
    root = ET.fromstring(xml)
    root.find("name").text = name
    devices = root.find("devices")
    node = devices.find("emulator")
    if node is None:
        node = ET.Element("emulator")
        devices.insert(0, node)
    node.text = emulator
    return ET.tostring(root, encoding="unicode")


def syscall_counts(trace_dir: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    pattern = re.compile(r"^\d+(?:<[^>]*>)?\s+[\d:.]+\s+([a-z_0-9]+)\(")
    for log in trace_dir.glob("*/strace.log"):
        for line in log.open(errors="replace"):
            match = pattern.match(line)
            if match:
                counts[match.group(1)] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="NAME=call,call,-option: a candidate hot set (and strace options)",
    )
    parser.add_argument("--no-full", action="store_true", help="skip --full (slow)")
    args = parser.parse_args()
    candidates: dict[str, tuple[str, ...] | None] = {"untraced": None}
    if not args.no_full:
        candidates["full"] = None
    candidates["default"] = None
    for item in args.set:
        name, _, calls = item.partition("=")
        candidates[name] = tuple(c for c in calls.split(",") if c)

    with tempfile.TemporaryDirectory(prefix="vd-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        daemon = SessionDaemon(workdir / "libvirt")
        guest = create_guest(workdir / "guest", power_off=False)
        (workdir / "out").mkdir()
        if os.geteuid() == 0:
            for path in [workdir, *workdir.rglob("*")]:
                os.lchown(path, daemon.uid, daemon.uid)
        daemon.start()
        try:
            conn = libvirt.open(daemon.direct_uri)
            domains = {}
            for mode, exclude in candidates.items():
                emulator = wrapper_for(workdir, mode, exclude)
                if os.geteuid() == 0:
                    os.lchown(emulator, daemon.uid, daemon.uid)
                xml = with_emulator(guest.xml_path.read_text(), f"b-{mode}", emulator)
                domains[mode] = conn.defineXML(xml)
            if os.geteuid() == 0:
                for path in [workdir / "out", *(workdir / "out").rglob("*")]:
                    os.lchown(path, daemon.uid, daemon.uid)

            times: dict[str, list[float]] = {m: [] for m in candidates}
            for _ in range(args.rounds):
                for mode, domain in domains.items():
                    start = time.monotonic()
                    domain.create()
                    times[mode].append(time.monotonic() - start)
                    domain.destroy()
            base = statistics.median(times["untraced"])
            print(f"libvirt start of the demo guest, {args.rounds} rounds")
            for mode, values in times.items():
                median = statistics.median(values)
                calls = candidates[mode]
                if mode == "default":
                    calls = strace_module.HOT_CALLS
                shown = ",".join(calls or ())
                print(f"{mode:10} {median:7.3f}s  {median / base:5.2f}x  {shown}")
            if args.no_full:
                return
            counts = syscall_counts(workdir / "out" / "full")
            total = sum(counts.values())
            print(f"full traces: {total} calls in {args.rounds} starts")
            for name, count in counts.most_common(12):
                print(f"  {name:20} {count:8}  {100 * count / total:5.1f}%")
        finally:
            daemon.stop()


if __name__ == "__main__":
    sys.exit(main())
