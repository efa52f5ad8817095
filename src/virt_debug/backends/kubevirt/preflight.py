"""What must hold before we touch a VM, each check with a message that says what to do.

The pure functions take the objects as read from the API (dicts); ``inspect`` reads
them and returns one ``Preflight`` that the flows and the dry-run share.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from virt_debug.backends.kubevirt import client as api
from virt_debug.backends.kubevirt.client import ApiError, Kube
from virt_debug.backends.kubevirt.objects import (
    SIDECAR_ANNOTATION,
    feature_gate_patch,
    image_problem,
    name_problem,
    parse_sidecars,
    size_problem,
    template_annotations,
)
from virt_debug.errors import KubernetesError, UsageError

log = logging.getLogger(__name__)

SIDECAR_GATE = "Sidecar"
# configMap and pvc in hookSidecars exist from v1.2.0.
MINIMUM = (1, 2, 0)
# From v1.3.0 an empty image means the release's own sidecar-shim.
DEFAULT_IMAGE_FROM = (1, 3, 0)
HOOK_VERSIONS = (((1, 1, 0), "v1alpha3"), ((0, 0, 0), "v1alpha2"))


@dataclass(frozen=True)
class Version:
    numbers: tuple[int, int, int]
    text: str

    def __str__(self) -> str:
        return self.text


def parse_version(text: str | None) -> Version | None:
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text or "")
    if not match:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return Version((major, minor, patch), text or "")


def hook_version(version: Version | None) -> str:
    """The highest hook API version the release speaks."""
    numbers = version.numbers if version else (99, 0, 0)
    return next(name for since, name in HOOK_VERSIONS if numbers >= since)


def check_version(version: Version | None) -> None:
    if version is not None and version.numbers < MINIMUM:
        raise KubernetesError(
            f"KubeVirt {version} is too old: hook sidecars take a ConfigMap and a PVC "
            "only from v1.2.0",
            hint="upgrade KubeVirt to v1.2.0 or later",
        )


def needs_image(version: Version | None) -> bool:
    """Whether our sidecar entry must name the shim image itself."""
    return version is not None and version.numbers < DEFAULT_IMAGE_FROM


def sidecar_shim_image(cr: dict[str, Any]) -> str:
    """The cluster's own sidecar-shim image: virt-launcher's registry and tag."""
    spec, status = cr.get("spec") or {}, cr.get("status") or {}
    registry = status.get("observedKubeVirtRegistry") or spec.get("imageRegistry")
    tag = status.get("observedKubeVirtVersion") or spec.get("imageTag")
    prefix = ""
    try:
        deployed = json.loads(status.get("observedDeploymentConfig") or "{}")
        prefix = deployed.get("imagePrefix") or ""
    except ValueError:
        pass
    registry = (registry or "quay.io/kubevirt").rstrip("/")
    return f"{registry}/{prefix}sidecar-shim:{tag or 'latest'}"


def feature_gates(cr: dict[str, Any]) -> list[str]:
    config = ((cr.get("spec") or {}).get("configuration") or {}).get(
        "developerConfiguration"
    ) or {}
    return list(config.get("featureGates") or [])


def gate_command(cr: dict[str, Any]) -> str:
    """The exact kubectl command that turns the Sidecar gate on."""
    meta = cr.get("metadata") or {}
    patch = json.dumps(feature_gate_patch(feature_gates(cr)), separators=(",", ":"))
    return (
        f"kubectl patch kubevirt {meta.get('name', 'kubevirt')} "
        f"-n {meta.get('namespace', 'kubevirt')} --type merge -p {shlex.quote(patch)}"
    )


def direct_child_warnings(template_spec: dict[str, Any]) -> list[str]:
    """Features for which virt-handler expects QEMU as the launcher's direct child."""
    domain = template_spec.get("domain") or {}
    devices = domain.get("devices") or {}
    cpu = domain.get("cpu") or {}
    found = []
    if devices.get("hostDevices"):
        found.append("host devices (VFIO passthrough)")
    if devices.get("gpus"):
        found.append("GPUs (VFIO passthrough)")
    if any("sriov" in (i or {}) for i in devices.get("interfaces") or []):
        found.append("SR-IOV interfaces (VFIO)")
    if cpu.get("dedicatedCpuPlacement"):
        found.append("dedicated CPUs (dedicatedCpuPlacement)")
    if cpu.get("isolateEmulatorThread"):
        found.append("an isolated emulator thread")
    if cpu.get("realtime") is not None:
        found.append("realtime vCPUs")
    if (domain.get("launchSecurity") or {}).get("sev") is not None:
        found.append("SEV memory encryption (memory locking)")
    return found


@dataclass
class Preflight:
    """What we learnt about the cluster and the VM before changing anything."""

    namespace: str
    vm_name: str
    kubevirt: dict[str, Any]
    version: Version | None
    vm: dict[str, Any] | None
    vmi: dict[str, Any] | None
    gate_on: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def standalone_vmi(self) -> bool:
        return self.vm is None and self.vmi is not None

    @property
    def shim_image(self) -> str:
        return sidecar_shim_image(self.kubevirt)

    @property
    def vm_running(self) -> bool:
        phase = ((self.vmi or {}).get("status") or {}).get("phase")
        return self.vmi is not None and phase not in ("Succeeded", "Failed")


def find_kubevirt(kube: Kube) -> dict[str, Any]:
    try:
        items = kube.list(api.KUBEVIRTS_ALL)
    except ApiError as e:
        if e.status == 404:
            raise KubernetesError(
                "KubeVirt is not installed in this cluster (no kubevirt.io/v1 API)",
                hint="install KubeVirt, or check --context points at the right cluster",
            ) from e
        raise
    if not items:
        raise KubernetesError(
            "no KubeVirt custom resource found in any namespace",
            hint="KubeVirt's operator is installed but not deployed: create its CR",
        )
    return items[0]


def inspect(kube: Kube, vm_name: str, namespace: str) -> Preflight:
    """Read the KubeVirt CR, its version and gates, the VM and its VMI."""
    cr = find_kubevirt(kube)
    version = parse_version((cr.get("status") or {}).get("observedKubeVirtVersion"))
    if version is None:
        log.warning("KubeVirt's version is unknown; assuming a recent release")
    check_version(version)

    vm = kube.get(api.kubevirt(namespace, "virtualmachines", vm_name))
    vmi = kube.get(api.kubevirt(namespace, "virtualmachineinstances", vm_name))
    if vm is None and vmi is None:
        raise UsageError(
            f"no VirtualMachine or VirtualMachineInstance {vm_name!r} "
            f"in namespace {namespace!r}",
            hint="check the name and -n; `kubectl get vms -A` lists them",
        )

    source = (vm or {}).get("spec", {}).get("template", {}).get("spec") or (
        vmi or {}
    ).get("spec", {})
    found = direct_child_warnings(source)
    warnings = (
        [
            f"{vm_name} uses {', '.join(found)}: virt-handler expects QEMU to be the "
            "launcher's direct child for these, and the debugger sits in between; "
            "the VM may fail to start or lose the feature while traced"
        ]
        if found
        else []
    )
    return Preflight(
        namespace=namespace,
        vm_name=vm_name,
        kubevirt=cr,
        version=version,
        vm=vm,
        vmi=vmi,
        gate_on=SIDECAR_GATE in feature_gates(cr),
        warnings=warnings,
    )


def gate_off_error(cr: dict[str, Any]) -> KubernetesError:
    return KubernetesError(
        "the Sidecar feature gate is off in the KubeVirt CR, so KubeVirt would refuse "
        "the hook sidecar. Turn it on with:\n  "
        + gate_command(cr)
        + "\nor let virt-debug do it: add --enable-sidecar-gate"
    )


def kubevirt_path(cr: dict[str, Any]) -> str:
    meta = cr.get("metadata") or {}
    return (
        f"/apis/kubevirt.io/v1/namespaces/{meta.get('namespace')}"
        f"/kubevirts/{meta.get('name')}"
    )


def check_names(vm: str, namespace: str | None, claim: str = "") -> None:
    """Refuse names the API would not hold: they end up in request paths.

    A namespace of None (not given yet, the kubeconfig's to come) is not checked.
    """
    for what, name, label in (
        ("VM name", vm, False),
        ("namespace", namespace, True),
        ("--pvc", claim, True),
    ):
        if name is None or (what == "--pvc" and not claim):
            continue
        problem = name_problem(name, label=label)
        if problem:
            raise UsageError(
                f"{what} {name!r} is not valid: {problem}",
                hint="`kubectl get vms -A` lists the VMs and their namespaces",
            )


def check_options(
    *,
    size: str | None = None,
    storage_class: str | None = None,
    helper_image: str | None = None,
    seconds: dict[str, float | None] | None = None,
) -> None:
    """Refuse option values the objects could not carry; None is "not given".

    ``seconds`` maps an option's name to its duration, which must be above zero.
    """
    checks = (
        (
            "--pvc-size",
            size,
            size_problem,
            "give a size above zero as a Kubernetes quantity: 1Gi, 500Mi, 10G",
        ),
        (
            "--storage-class",
            storage_class,
            name_problem,
            "`kubectl get storageclass` lists the names; leave the option out "
            "for the cluster's default",
        ),
        (
            "--helper-image",
            helper_image,
            image_problem,
            "give an image reference such as registry.example.com/tools:1.0; "
            "leave the option out for the cluster's sidecar-shim image",
        ),
    )
    for what, value, problem_of, hint in checks:
        problem = "" if value is None else problem_of(value)
        if problem:
            raise UsageError(f"{what} {value!r} is not valid: {problem}", hint=hint)
    for what, duration in (seconds or {}).items():
        if duration is not None and not 0 < duration < math.inf:
            raise UsageError(
                f"{what} {duration!r} is not valid: it is not a number of seconds "
                "above zero",
                hint="give seconds, or a number with s, m or h: 90, 30s, 5m, 1h",
            )


def check_sidecars(pre: Preflight) -> None:
    """Refuse a hookSidecars annotation KubeVirt could not read, before any change."""
    annotations: dict | None
    if pre.vm is not None:
        annotations = template_annotations(pre.vm)
    else:
        annotations = ((pre.vmi or {}).get("metadata") or {}).get("annotations")
    try:
        parse_sidecars((annotations or {}).get(SIDECAR_ANNOTATION))
    except ValueError as e:
        raise KubernetesError(
            f"VM {pre.vm_name}: {e}",
            hint="fix the annotation by hand first; KubeVirt cannot read it either",
        ) from e
