"""What virt-debug has changed on a VM, and how the VM is doing, as one dict."""

from __future__ import annotations

from typing import Any

from virt_debug.backends.kubevirt import client as api
from virt_debug.backends.kubevirt.client import Kube
from virt_debug.backends.kubevirt.objects import (
    SIDECAR_ANNOTATION,
    Names,
    is_ours,
    label_value,
    parse_sidecars,
    template_annotations,
)
from virt_debug.backends.kubevirt.power import launcher_pod
from virt_debug.backends.kubevirt.record import load


def describe(kube: Kube, namespace: str, vm_name: str) -> dict[str, Any]:
    record = load(kube, namespace, vm_name)
    names = record.names if record else Names(vm_name)
    vm = kube.get(api.kubevirt(namespace, "virtualmachines", vm_name))
    vmi = kube.get(api.kubevirt(namespace, "virtualmachineinstances", vm_name))

    try:
        sidecars = parse_sidecars(
            template_annotations(vm or {}).get(SIDECAR_ANNOTATION)
        )
    except ValueError as e:
        sidecars = [{"unreadable": str(e)}]
    ours = [s for s in sidecars if is_ours(s, names.hook_configmap)]
    claim = kube.get(api.core(namespace, "persistentvolumeclaims", names.volume))
    helpers = [
        p["metadata"]["name"]
        for p in kube.list(
            api.core(namespace, "pods"),
            label_selector=f"virt-debug/vm={label_value(vm_name)}",
        )
        if (p["metadata"].get("labels") or {}).get("virt-debug/role") == "helper"
    ]
    pod = launcher_pod(kube, namespace, vmi) if vmi else None
    return {
        "vm": f"{namespace}/{vm_name}",
        "exists": vm is not None,
        "attached": bool(ours),
        "otherSidecars": len(sidecars) - len(ours),
        "hookConfigMap": names.hook_configmap
        if kube.get(api.core(namespace, "configmaps", names.hook_configmap))
        else None,
        "pvc": {
            "name": names.volume,
            "phase": ((claim or {}).get("status") or {}).get("phase"),
        }
        if claim
        else None,
        "helperPods": helpers,
        "vmi": {
            "phase": (vmi.get("status") or {}).get("phase"),
            "node": (vmi.get("status") or {}).get("nodeName"),
            "launcherPod": (pod or {}).get("metadata", {}).get("name"),
        }
        if vmi
        else None,
        "record": record.to_json() if record else None,
    }
