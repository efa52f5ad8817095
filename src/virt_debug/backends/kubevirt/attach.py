"""Attach our hook sidecar to a VM and detach it again, leaving other sidecars alone."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any

from virt_debug.backends.kubevirt import client as api
from virt_debug.backends.kubevirt.client import ApiError
from virt_debug.backends.kubevirt.objects import (
    SIDECAR_ANNOTATION,
    annotation_patch,
    hook_configmap,
    merge_sidecar,
    remove_sidecar,
    sidecar_entry,
    template_annotations,
)
from virt_debug.backends.kubevirt.preflight import (
    Preflight,
    hook_version,
    needs_image,
)
from virt_debug.backends.kubevirt.record import Changes, Planned
from virt_debug.errors import KubernetesError, UsageError

log = logging.getLogger(__name__)


def our_entry(pre: Preflight, changes: Changes) -> dict[str, Any]:
    names = changes.record.names
    return sidecar_entry(
        configmap=names.hook_configmap,
        claim=names.volume,
        hook_version=hook_version(pre.version),
        image=pre.shim_image if needs_image(pre.version) else None,
    )


def ensure_hook_configmap(changes: Changes, script: str) -> None:
    """Create the ConfigMap holding the hook script, or bring its script up to date."""
    record = changes.record
    name = record.names.hook_configmap
    manifest = hook_configmap(name, record.namespace, record.vm, script)
    current = (
        None
        if changes.dry_run
        else changes.kube.get(api.core(record.namespace, "configmaps", name))
    )
    if current is None:
        changes.create(manifest)
    elif (current.get("data") or {}) != manifest["data"]:
        path = api.core(record.namespace, "configmaps", name)
        changes.patch(path, {"data": manifest["data"]}, current)


def attach(
    changes: Changes, pre: Preflight, script: str, *, recreate_vmi=False
) -> None:
    """Put our sidecar into the VM's template; takes effect at the next start."""
    ensure_hook_configmap(changes, script)
    if pre.standalone_vmi:
        _attach_standalone(changes, pre, recreate_vmi)
        return

    record = changes.record
    entry = our_entry(pre, changes)
    # The value we found is ours to restore, unless an earlier attach found one.
    first = not record.attached

    def merged(current: str | None) -> str | None:
        try:
            value = merge_sidecar(current, entry, record.names.hook_configmap)
        except ValueError as e:
            raise KubernetesError(
                f"VM {pre.vm_name}: {e}", hint="fix the annotation by hand first"
            ) from e
        if value != current and first:
            # Written down before the change (again if a conflict made us read
            # the VM anew): a crash can then restore the exact old value.
            record.annotation_before = current
            record.attached = True
            changes.save()
        return value

    pre.vm = _patch_annotation(changes, pre.vm or {}, merged)


def detach(changes: Changes, vm: dict[str, Any] | None) -> bool:
    """Take our sidecar out of the VM's template; True if the VM changed."""
    record = changes.record
    if record.kind == "VirtualMachineInstance":
        return False
    if vm is None:
        log.warning("VM %s is gone; nothing to detach", record.vm)
        return False
    before = record.annotation_before if record.attached else None

    def removed(current: str | None) -> str | None:
        try:
            return remove_sidecar(current, record.names.hook_configmap, before)
        except ValueError as e:
            if not record.attached:
                # We never wrote it: an unreadable value holds nothing of ours.
                return current
            raise KubernetesError(
                f"VM {record.vm}: {e}",
                hint="remove our entry from the annotation by hand",
            ) from e

    after = _patch_annotation(changes, vm, removed)
    changed = after is not vm
    record.attached = False
    changes.save()
    return changed


def _patch_annotation(
    changes: Changes,
    vm: dict[str, Any],
    compute: Callable[[str | None], str | None],
    tries: int = 5,
) -> dict[str, Any]:
    """Set the annotation to ``compute(current)``, read again on a conflict.

    The patch carries the resourceVersion we read, so a VM changed meanwhile (its
    controller updates it during restarts) is read again rather than overwritten.
    """
    meta = vm.get("metadata") or {}
    path = api.kubevirt(changes.namespace, "virtualmachines", meta.get("name", ""))
    for attempt in range(tries):
        current = template_annotations(vm).get(SIDECAR_ANNOTATION)
        value = compute(current)
        if value == current:
            return vm
        rv = (vm.get("metadata") or {}).get("resourceVersion")
        try:
            return changes.patch(path, annotation_patch(value, rv), vm)
        except ApiError as e:
            if e.status != 409 or attempt == tries - 1:
                raise
            log.info("VM %s changed meanwhile; reading it again", meta.get("name"))
            vm = changes.kube.get(path) or vm
    return vm


def clean_vmi_manifest(vmi: dict[str, Any]) -> dict[str, Any]:
    """A VMI as it can be created again: no status, no server-set metadata."""
    meta = vmi.get("metadata") or {}
    keep = {
        k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta
    }
    annotations = {
        k: v
        for k, v in (keep.get("annotations") or {}).items()
        if not k.startswith("kubevirt.io/")
        or k == "kubevirt.io/storage-observed-api-version"
    }
    keep["annotations"] = annotations
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": keep,
        "spec": copy.deepcopy(vmi.get("spec") or {}),
    }


def _attach_standalone(changes: Changes, pre: Preflight, recreate: bool) -> None:
    if not recreate:
        raise UsageError(
            f"{pre.vm_name} is a VirtualMachineInstance without a VirtualMachine: "
            "KubeVirt reads hook sidecars only when it creates the launcher pod, so a "
            "running VMI cannot take one. virt-debug can delete it and create it again "
            "with the hook (the guest restarts; detach recreates it without)",
            hint="add --recreate-vmi to do that",
        )
    record = changes.record
    original = clean_vmi_manifest(pre.vmi or {})
    current = (original["metadata"].get("annotations") or {}).get(SIDECAR_ANNOTATION)
    value = merge_sidecar(current, our_entry(pre, changes), record.names.hook_configmap)
    traced = copy.deepcopy(original)
    traced["metadata"].setdefault("annotations", {})[SIDECAR_ANNOTATION] = value

    record.kind = "VirtualMachineInstance"
    record.vmi_manifest = original
    record.attached = True
    changes.save()
    recreate_vmi(changes, traced, f"recreate VMI {pre.vm_name} with the hook sidecar")


def recreate_vmi(changes: Changes, manifest: dict[str, Any], note: str) -> None:
    """Delete a standalone VMI and create it from ``manifest``."""
    ns, name = changes.namespace, manifest["metadata"]["name"]
    if changes.dry_run:
        changes.planned.append(Planned("replace", manifest, note))
        return
    path = api.kubevirt(ns, "virtualmachineinstances", name)
    changes.kube.delete(path)
    _wait_gone(changes, path)
    changes.kube.create(api.kubevirt(ns, "virtualmachineinstances"), manifest)


def _wait_gone(changes: Changes, path: str, tries: int = 600) -> None:
    for _ in range(tries):
        if changes.kube.get(path) is None:
            return
        time.sleep(0.5)
    raise KubernetesError(f"{path} is still there after 5 minutes of deleting")
