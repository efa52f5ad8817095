"""Restart (or start) the VM so the hook applies, follow its VMI, and put it back.

KubeVirt applies hook sidecars when it creates the virt-launcher pod, so the VM has
to start anew. We remember whether we restarted a running VM or started a stopped
one, and undo exactly that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from virt_debug.backends.kubevirt import client as api
from virt_debug.backends.kubevirt.client import ApiError, Kube
from virt_debug.backends.kubevirt.preflight import Preflight
from virt_debug.backends.kubevirt.record import Changes

log = logging.getLogger(__name__)

Report = Callable[[str], None]
FINAL = ("Succeeded", "Failed")


def bring_up(changes: Changes, pre: Preflight) -> str:
    """Restart the VM if it runs, start it if not; returns the old VMI's uid."""
    record, ns, name = changes.record, pre.namespace, pre.vm_name
    old_uid = ((pre.vmi or {}).get("metadata") or {}).get("uid", "")
    spec = (pre.vm or {}).get("spec") or {}
    record.run_strategy_before = spec.get("runStrategy")
    record.running_before = spec.get("running")
    action = "restart" if pre.vm_running else "start"
    record.power = "restarted" if pre.vm_running else "started"
    changes.save()
    try:
        changes.act(api.vm_subresource(ns, name, action), f"{action} VM {ns}/{name}")
    except ApiError:
        # Refused outright: nothing happened to the VM, so there is nothing to undo.
        record.power = ""
        changes.save()
        raise
    return old_uid


def put_back(changes: Changes, report: Report) -> None:
    """Undo ``bring_up``: restart once more (without the hook), or stop again."""
    record, ns, name = changes.record, changes.namespace, changes.record.vm
    if record.power == "restarted":
        report(f"restarting {name} without the hook")
        changes.act(api.vm_subresource(ns, name, "restart"), f"restart VM {ns}/{name}")
    elif record.power == "started":
        report(f"stopping {name} again, as it was")
        changes.act(api.vm_subresource(ns, name, "stop"), f"stop VM {ns}/{name}")
        _restore_run_strategy(changes)
    record.power = ""
    changes.save()


def _restore_run_strategy(changes: Changes) -> None:
    # start/stop may rewrite runStrategy (Halted <-> Always) or spec.running.
    record = changes.record
    path = api.kubevirt(changes.namespace, "virtualmachines", record.vm)
    vm = changes.kube.get(path) if not changes.dry_run else None
    if vm is None:
        return
    spec = vm.get("spec") or {}
    patch: dict[str, Any] = {}
    if spec.get("runStrategy") != record.run_strategy_before:
        patch["runStrategy"] = record.run_strategy_before
    if spec.get("running") != record.running_before:
        patch["running"] = record.running_before
    if patch:
        changes.patch(path, {"spec": patch}, vm)


@dataclass
class Outcome:
    """How the traced start went."""

    running: bool
    vmi: dict[str, Any] | None = None
    pod: dict[str, Any] | None = None
    reason: str = ""
    details: list[str] = field(default_factory=list)

    @property
    def node(self) -> str:
        return str(((self.vmi or {}).get("status") or {}).get("nodeName") or "")


def launcher_pod(kube: Kube, namespace: str, vmi: dict[str, Any]) -> dict | None:
    uid = (vmi.get("metadata") or {}).get("uid")
    for pod in kube.list(
        api.core(namespace, "pods"), label_selector=f"kubevirt.io/created-by={uid}"
    ):
        if ((pod.get("metadata") or {}).get("labels") or {}).get(
            "kubevirt.io/created-by"
        ) == uid:
            return pod
    return None


def follow(
    kube: Kube,
    namespace: str,
    name: str,
    old_uid: str,
    report: Report,
    *,
    timeout: float = 300,
    poll: float = 1.0,
    known_events: set[str] | None = None,
) -> Outcome:
    """Follow the new VMI until it runs, fails, or ``timeout`` passes."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    known_events = set() if known_events is None else known_events

    def once(step: str) -> None:
        if step not in seen:
            seen.add(step)
            report(step)

    while True:
        vmi = kube.get(api.kubevirt(namespace, "virtualmachineinstances", name))
        uid = ((vmi or {}).get("metadata") or {}).get("uid")
        if vmi is None or uid == old_uid:
            once("waiting for the new VMI")
            refused = _refusal(kube, namespace, name, known_events)
            if refused:
                return failed(kube, namespace, vmi, None, refused)
        else:
            status = vmi.get("status") or {}
            phase = status.get("phase") or "Pending"
            once(f"VMI {phase.lower()}")
            pod = launcher_pod(kube, namespace, vmi)
            if pod is not None:
                node = (pod.get("spec") or {}).get("nodeName")
                once(f"launcher pod {pod['metadata']['name']} on node {node}")
                for container in (pod.get("status") or {}).get(
                    "containerStatuses"
                ) or []:
                    if container.get("name", "").startswith("hook-sidecar") and (
                        "running" in (container.get("state") or {})
                    ):
                        once("hook sidecar started")
            if phase == "Running":
                once("domain defined, QEMU running under the debugger")
                return Outcome(True, vmi, pod)
            if phase == "Succeeded":
                # The guest ran and shut down between two polls: a traced start.
                once("the guest ran and has stopped already")
                return Outcome(True, vmi, pod)
            if phase in FINAL:
                return failed(kube, namespace, vmi, pod, f"the VMI ended: {phase}")
            problem = _pod_problem(pod)
            if problem:
                return failed(kube, namespace, vmi, pod, problem)
        if time.monotonic() > deadline:
            pod = launcher_pod(kube, namespace, vmi) if vmi else None
            return failed(
                kube, namespace, vmi, pod, f"not running after {timeout:.0f}s"
            )
        time.sleep(poll)


def _vm_events(name: str) -> str:
    return f"involvedObject.kind=VirtualMachine,involvedObject.name={name}"


def event_names(kube: Kube, namespace: str, vm: str) -> set[str]:
    """The VM's events there are now, to tell the new ones apart later."""
    events = kube.list(api.core(namespace, "events"), field_selector=_vm_events(vm))
    return {e["metadata"]["name"] for e in events}


def _refusal(kube: Kube, namespace: str, name: str, known: set[str]) -> str:
    # The VM controller reports a VMI it could not create (admission refused it)
    # as an event on the VM; without it we would wait for the whole timeout.
    events = kube.list(api.core(namespace, "events"), field_selector=_vm_events(name))
    for event in events:
        involved = event.get("involvedObject") or {}
        if (
            event["metadata"]["name"] not in known
            and involved.get("kind") == "VirtualMachine"
            and involved.get("name") == name
            and event.get("reason") == "FailedCreate"
        ):
            return f"KubeVirt refused the new VMI: {event.get('message')}"
    return ""


def _pod_problem(pod: dict[str, Any] | None) -> str:
    status = (pod or {}).get("status") or {}
    if status.get("phase") == "Failed":
        return (
            f"launcher pod failed: {status.get('reason') or status.get('message', '')}"
        )
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in (
            "ErrImagePull",
            "ImagePullBackOff",
            "CrashLoopBackOff",
            "CreateContainerError",
            "CreateContainerConfigError",
        ):
            return f"container {container.get('name')}: {waiting['reason']}"
        if (state.get("terminated") or {}).get("exitCode"):
            term = state["terminated"]
            return f"container {container.get('name')} exited {term.get('exitCode')}"
    return ""


def failed(kube, namespace, vmi, pod, reason: str) -> Outcome:
    from virt_debug.backends.kubevirt.diagnose import explain

    return Outcome(False, vmi, pod, reason, explain(kube, namespace, vmi, pod))


def wait_stopped(
    kube: Kube,
    namespace: str,
    name: str,
    uid: str,
    *,
    poll: float = 1.0,
    timeout: float | None = None,
) -> bool:
    """Wait until the traced VMI (``uid``) is gone or final; False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        vmi = kube.get(api.kubevirt(namespace, "virtualmachineinstances", name))
        meta, status = (
            (vmi or {}).get("metadata") or {},
            (vmi or {}).get("status") or {},
        )
        if vmi is None or meta.get("uid") != uid or status.get("phase") in FINAL:
            return True
        time.sleep(poll)
    return False
