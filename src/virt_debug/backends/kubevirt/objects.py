"""Pure builders of every object virt-debug creates or patches in a cluster.

Nothing here talks to the API: each function takes plain values and returns the
manifest (a dict) that the cluster code sends, the dry-run prints and the tests
validate against KubeVirt's and Kubernetes' own schemas.

One PVC carries the tools into the virt-launcher pod. The hook sidecar mounts it at
``MOUNT_PATH`` (``volumePath``) and KubeVirt mounts it at the same path in the compute
container (``sharedComputePath``), so every path below is valid in both containers
and in the helper pod that fills the volume.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

SIDECAR_ANNOTATION = "hooks.kubevirt.io/hookSidecars"
MOUNT_PATH = "/var/run/virt-debug"
HOOK_KEY = "onDefineDomain"
# The shim looks the hook up by name on $PATH.
HOOK_PATH = "/usr/bin/onDefineDomain"
QEMU = "/usr/libexec/qemu-kvm"
QEMU_UID = 107

MANAGED_BY = {"app.kubernetes.io/managed-by": "virt-debug"}
VM_LABEL = "virt-debug/vm"
ROLE_LABEL = "virt-debug/role"


@dataclass(frozen=True)
class Layout:
    """Where things live on the tools volume, as seen inside the pods."""

    vm: str
    run_id: str = ""

    @property
    def tool_dir(self) -> str:
        return f"{MOUNT_PATH}/tools"

    @property
    def shell(self) -> str:
        # The bundle ships a static busybox: the compute container may have no /bin/sh.
        return f"{self.tool_dir}/bin/sh"

    @property
    def vm_dir(self) -> str:
        return f"{MOUNT_PATH}/vms/{self.vm}"

    @property
    def emulator(self) -> str:
        """The wrapper script the hook writes into ``<emulator>``."""
        return f"{self.vm_dir}/qemu-kvm-wrapper"

    @property
    def outputs(self) -> str:
        """Every run's traces of this VM."""
        return f"{self.vm_dir}/out"

    @property
    def output(self) -> str:
        """This run's traces: the wrapper makes one directory per QEMU launch here."""
        return f"{self.outputs}/{self.run_id}" if self.run_id else self.outputs


# Kubernetes' own name rules: VM and ConfigMap names are DNS subdomains, namespaces
# and pod volume names DNS labels (KubeVirt names the launcher pod's volumes after
# the hook's ConfigMap and PVC, so those must be labels too).
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(rf"{DNS_LABEL.pattern}(\.{DNS_LABEL.pattern})*")


def name_problem(name: str, *, label: bool = False) -> str:
    """Why ``name`` cannot name an object (a DNS label with ``label``); "" if it can."""
    limit, pattern = (63, DNS_LABEL) if label else (253, DNS_SUBDOMAIN)
    kind = "DNS label" if label else "DNS subdomain"
    if not name:
        return "it is empty"
    if len(name) > limit:
        return f"it is {len(name)} characters long, over the {limit} of a {kind}"
    if not pattern.fullmatch(name):
        return (
            f"it is not a {kind}: lowercase letters, digits and '-'"
            + ("" if label else " or '.'")
            + ", starting and ending with a letter or digit"
        )
    return ""


def size_problem(size: str) -> str:
    """Why ``size`` cannot be a PVC's storage request; "" if it can."""
    if not size:
        return "it is empty"
    # parse_quantity also takes what the API refuses (spaces, "1_000", non-ASCII
    # digits, NaN): a quantity is plain printable ASCII without spaces.
    if all("!" <= ch <= "~" and ch != "_" for ch in size):
        try:
            value: Decimal | None = parse_quantity(size)
        except (ValueError, ArithmeticError):
            value = None
    else:
        value = None
    if value is None or not value.is_finite():
        return "it is not a Kubernetes quantity"
    if value <= 0:
        return "it is not above zero"
    return ""


def image_problem(image: str) -> str:
    """Why ``image`` cannot be a container image reference; "" if it can."""
    if not image:
        return "it is empty"
    for ch in image:
        if ch.isspace() or not ch.isprintable():
            return f"it contains whitespace or a control character ({ch!r})"
    return ""


def _shortened(text: str, limit: int, changed: bool) -> str:
    # A hash of the original keeps shortened or rewritten names apart.
    if len(text) <= limit and not changed:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    keep = limit - len(digest) - 1
    head = re.sub(r"[^a-z0-9]+$", "", text[:keep].replace(".", "-"))
    return f"{head}-{digest}" if head else digest


def object_name(vm: str, suffix: str, limit: int = 63) -> str:
    """``virt-debug-<vm>-<suffix>`` as a DNS label, shortened with a hash if needed.

    Dots of a VM name become dashes (volume names cannot have them), with the hash
    telling ``a.b`` and ``a-b`` apart.
    """
    name = f"virt-debug-{vm}-{suffix}" if suffix else f"virt-debug-{vm}"
    return _shortened(name, limit, "." in name)


def label_value(vm: str) -> str:
    """The VM's name as a label value (at most 63 characters)."""
    return _shortened(vm, 63, False)


@dataclass(frozen=True)
class Names:
    """The names of the objects one traced VM owns."""

    vm: str
    pvc: str = ""

    @property
    def volume(self) -> str:
        return self.pvc or object_name(self.vm, "")

    @property
    def hook_configmap(self) -> str:
        return object_name(self.vm, "hook")

    @property
    def record_configmap(self) -> str:
        return object_name(self.vm, "record")

    def helper_pod(self, token: str) -> str:
        return object_name(self.vm, f"helper-{token}")


def labels(vm: str, role: str) -> dict[str, str]:
    return {**MANAGED_BY, VM_LABEL: label_value(vm), ROLE_LABEL: role}


def pvc(
    name: str,
    namespace: str,
    vm: str,
    *,
    size: str = "1Gi",
    storage_class: str | None = None,
    access_mode: str = "ReadWriteOnce",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [access_mode],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": size}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(vm, "tools"),
        },
        "spec": spec,
    }


def hook_configmap(name: str, namespace: str, vm: str, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(vm, "hook"),
        },
        "data": {HOOK_KEY: script},
    }


RECORD_KEY = "record.json"


def record_configmap(
    name: str, namespace: str, vm: str, record: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(vm, "record"),
            "annotations": {
                "virt-debug/purpose": (
                    "what virt-debug changed on this VM; "
                    f"`virt-debug kubevirt detach {vm}` undoes it"
                )
            },
        },
        "data": {RECORD_KEY: json.dumps(record, indent=1, sort_keys=True)},
    }


def restricted_security_context() -> dict[str, Any]:
    """Container settings of Pod Security "restricted", as uid 107 like QEMU."""
    return {
        "runAsUser": QEMU_UID,
        "runAsGroup": QEMU_UID,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


HELPER_CONTAINER = "helper"


def helper_pod(
    name: str,
    namespace: str,
    vm: str,
    *,
    image: str,
    claim: str,
    node: str | None = None,
    lifetime: int = 3600,
) -> dict[str, Any]:
    """A short-lived pod that holds the tools volume open for tar over exec.

    It only sleeps; the transfer runs as ``kubectl exec``-style commands. The deadline
    removes it even if virt-debug dies before it can.
    """
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": lifetime,
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsUser": QEMU_UID,
            "runAsGroup": QEMU_UID,
            "fsGroup": QEMU_UID,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": HELPER_CONTAINER,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                # python3 is what the transfer commands need, so it is all we rely on.
                "command": ["python3", "-c", f"import time; time.sleep({lifetime})"],
                "securityContext": restricted_security_context(),
                "resources": {
                    "requests": {"cpu": "10m", "memory": "32Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"},
                },
                "volumeMounts": [{"name": "tools", "mountPath": MOUNT_PATH}],
            }
        ],
        "volumes": [{"name": "tools", "persistentVolumeClaim": {"claimName": claim}}],
    }
    if node:
        # A ReadWriteOnce volume in use can only be mounted on the node that uses it.
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(vm, "helper"),
        },
        "spec": spec,
    }


def sidecar_entry(
    *, configmap: str, claim: str, hook_version: str, image: str | None
) -> dict[str, Any]:
    """Our element of the ``hooks.kubevirt.io/hookSidecars`` list."""
    entry: dict[str, Any] = {
        "args": ["--version", hook_version],
        "configMap": {"name": configmap, "key": HOOK_KEY, "hookPath": HOOK_PATH},
        "pvc": {
            "name": claim,
            "volumePath": MOUNT_PATH,
            "sharedComputePath": MOUNT_PATH,
        },
    }
    if image:
        entry["image"] = image
    return entry


def parse_sidecars(value: str | None) -> list[dict[str, Any]]:
    """The sidecar list of an annotation value; empty when absent or blank."""
    if value is None or not value.strip():
        return []
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise ValueError(f"{SIDECAR_ANNOTATION} is not valid JSON: {e}") from e
    if not isinstance(parsed, list):
        raise ValueError(f"{SIDECAR_ANNOTATION} is not a JSON list")
    for index, item in enumerate(parsed):
        if not isinstance(item, dict):
            # KubeVirt could not read such a list either: the VM would not start.
            raise ValueError(
                f"{SIDECAR_ANNOTATION} entry {index} is {json.dumps(item)}, "
                "not a JSON object"
            )
    return parsed


def is_ours(entry: Any, configmap: str) -> bool:
    cm = entry.get("configMap") if isinstance(entry, dict) else None
    return isinstance(cm, dict) and cm.get("name") == configmap


def merge_sidecar(value: str | None, entry: dict[str, Any], configmap: str) -> str:
    """The annotation value with our entry in it, every other sidecar kept.

    Our entry is recognised by its ConfigMap name and replaced in place, so attaching
    twice gives the same value as attaching once.
    """
    sidecars = parse_sidecars(value)
    ours = [i for i, item in enumerate(sidecars) if is_ours(item, configmap)]
    if ours and sidecars[ours[0]] == entry and len(ours) == 1:
        return value or ""
    kept = [item for item in sidecars if not is_ours(item, configmap)]
    position = ours[0] if ours else len(kept)
    kept.insert(position, entry)
    return json.dumps(kept)


def remove_sidecar(
    value: str | None, configmap: str, before: str | None = None
) -> str | None:
    """The annotation value without our entry; None means: remove the annotation.

    ``before`` is the value we found when we attached, if we know it: when the result
    is the same list, that exact text comes back (formatting and all).
    """
    sidecars = parse_sidecars(value)
    kept = [item for item in sidecars if not is_ours(item, configmap)]
    if before is not None:
        # The others are as we found them: the exact old text comes back, with
        # whatever named our ConfigMap then (a leftover, a look-alike) too.
        try:
            old = parse_sidecars(before)
        except ValueError:
            old = None
        if old is not None and [i for i in old if not is_ours(i, configmap)] == kept:
            return before
    if not kept:
        return None
    if len(kept) == len(sidecars):
        return value
    return json.dumps(kept)


def template_annotations(vm: dict[str, Any]) -> dict[str, str]:
    spec = vm.get("spec") or {}
    template = spec.get("template") or {}
    return dict((template.get("metadata") or {}).get("annotations") or {})


def annotation_patch(
    value: str | None, resource_version: str | None = None
) -> dict[str, Any]:
    """A JSON merge patch setting (or, with None, removing) our annotation."""
    patch: dict[str, Any] = {
        "spec": {"template": {"metadata": {"annotations": {SIDECAR_ANNOTATION: value}}}}
    }
    if resource_version:
        # The API refuses the patch if someone changed the VM since we read it.
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def feature_gate_patch(gates: list[str], add: str = "Sidecar") -> dict[str, Any]:
    """The merge patch turning a feature gate on in the KubeVirt CR.

    The list is atomic, so the patch carries all of it.
    """
    merged = list(gates) + ([add] if add not in gates else [])
    return {
        "spec": {"configuration": {"developerConfiguration": {"featureGates": merged}}}
    }
