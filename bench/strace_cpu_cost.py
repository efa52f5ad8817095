"""CPU time strace adds to a QEMU start, per option set: a measure that load on a
shared machine does not blur the way wall time does.

QEMU starts paused with a QMP socket, answers 100 monitor commands and quits; the
rusage of the waited-for process (strace and the QEMU it reaped, or QEMU alone) is
compared with untraced QEMU.

    .venv/bin/python bench/strace_cpu_cost.py [--rounds 7]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from virt_debug.debuggers.strace import COMMON_OPTIONS, HOT_CALLS  # noqa: E402
from wrapper_harness import QMP  # noqa: E402

QEMU = "/usr/bin/qemu-system-x86_64"
ACCEL = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"


def cpu_seconds(prefix: list[str], sock: Path) -> float:
    sock.unlink(missing_ok=True)
    argv = [*prefix, QEMU, "-name", "guest=t,debug-threads=on"]
    argv += ["-machine", f"q35,accel={ACCEL}", "-m", "64", "-smp", "2"]
    argv += ["-display", "none", "-nodefaults", "-S"]
    argv += ["-qmp", f"unix:{sock},server=on,wait=off"]
    proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    qmp = QMP(sock)
    for _ in range(100):
        qmp.command("query-status")
    qmp.quit()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = f"{tmp}/strace.log"
        hot = "trace=!" + ",".join(HOT_CALLS)
        seccomp = ["strace", "-f", "--seccomp-bpf", "-e", hot, "-o", log]
        variants = {
            "untraced": [],
            "seccomp, no options": seccomp,
            "default": [*seccomp, *COMMON_OPTIONS[1:]],
            "full": ["strace", *COMMON_OPTIONS, "-o", log],
        }
        results: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, prefix in variants.items():
                results[name].append(cpu_seconds(prefix, Path(tmp) / "qmp.sock"))
    base = statistics.median(results["untraced"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:22} cpu {median:.3f} s  (+{median - base:.3f} s)")


if __name__ == "__main__":
    sys.exit(main())
