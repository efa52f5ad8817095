"""Undo what a record holds, step by step, going on past a step that fails.

A restore that stops at its first error leaves more changed than it must: each step
runs even if an earlier one failed, the failures are reported together at the end,
and the record stays on the cluster (for ``detach``) until every step succeeded.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
from collections.abc import Callable, Iterator

from virt_debug.backends.kubevirt import attach as attaching
from virt_debug.backends.kubevirt import client as api
from virt_debug.backends.kubevirt import power
from virt_debug.backends.kubevirt import preflight as checks
from virt_debug.backends.kubevirt.record import Changes
from virt_debug.errors import KubernetesError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def deferred_interrupt(report: Callable[[str], None]) -> Iterator[None]:
    """Hold Ctrl-C back while we restore: a half-restored VM is the worst outcome."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []

    def remember(signum, frame) -> None:
        pressed.append(signum)
        report("restoring the VM first; it takes a moment")

    previous = signal.signal(signal.SIGINT, remember)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        # Held back, not forgotten: the user still wants to stop.
        raise KeyboardInterrupt


def undo(
    changes: Changes,
    report: Callable[[str], None],
    *,
    keep_pvc: bool = True,
    forget: bool = True,
    restart_back: bool = True,
    poll: float = 1.0,
    stop_timeout: float = 180.0,
) -> None:
    record, kube, ns = changes.record, changes.kube, changes.namespace
    traced_uid = record.traced_uid if record.power else ""
    failures: list[str] = []

    def step(what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as e:
            log.debug("restore step failed: %s", what, exc_info=True)
            failures.append(f"{what}: {e}")
            report(f"could not {what}: {e}")

    if record.kind == "VirtualMachineInstance" and record.vmi_manifest:
        step("recreate the VMI without the hook", lambda: _recreate(changes))
    step(
        "remove our sidecar from the VM",
        lambda: attaching.detach(
            changes, kube.get(api.kubevirt(ns, "virtualmachines", record.vm))
        ),
    )
    if restart_back and record.power:
        step("put the VM's power state back", lambda: power.put_back(changes, report))
    for name in record.created_names("Pod"):
        step(f"delete pod {name}", functools.partial(changes.delete, "Pod", name))
    for name in record.created_names("ConfigMap"):
        step(
            f"delete ConfigMap {name}",
            functools.partial(changes.delete, "ConfigMap", name),
        )
    if record.gate_before is not None:
        step(
            "turn the Sidecar feature gate off again",
            lambda: _gate_back(changes, report),
        )
    if traced_uid and not changes.dry_run and not failures:
        # The wrapper writes QEMU's end status as the traced VMI goes away.
        power.wait_stopped(
            kube, ns, record.vm, traced_uid, poll=poll, timeout=stop_timeout
        )
    if not keep_pvc:
        for name in record.created_names("PersistentVolumeClaim"):
            step(
                f"delete PVC {name}",
                functools.partial(changes.delete, "PersistentVolumeClaim", name),
            )

    if failures:
        raise KubernetesError(
            "restoring left something changed: " + "; ".join(failures),
            hint=f"the record stays on the cluster; fix the cause and run "
            f"`virt-debug kubevirt detach {record.vm} -n {ns}`",
        )
    if forget:
        changes.forget()


def _recreate(changes: Changes) -> None:
    record = changes.record
    attaching.recreate_vmi(
        changes, record.vmi_manifest or {}, f"recreate VMI {record.vm} without the hook"
    )
    record.vmi_manifest = None
    changes.save()


def _gate_back(changes: Changes, report: Callable[[str], None]) -> None:
    cr = checks.find_kubevirt(changes.kube)
    gates = changes.record.gate_before
    patch = {
        "spec": {"configuration": {"developerConfiguration": {"featureGates": gates}}}
    }
    report("turning the Sidecar feature gate off again")
    changes.patch(checks.kubevirt_path(cr), patch, cr)
    changes.record.gate_before = None
    changes.save()
