"""The record of what virt-debug changed on a VM, kept in memory and on the cluster.

Each change is written down before it is made, in a ConfigMap next to the VM, so that
``virt-debug kubevirt detach`` can undo a run that crashed or was killed. The same
object drives the restore at the end of a run, on failure and on Ctrl-C.

``Changes`` is the one place that writes to the cluster: with ``dry_run`` it writes
nothing and collects the objects it would have sent, for ``--dry-run -o yaml``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from virt_debug.backends.kubevirt import client as api
from virt_debug.backends.kubevirt.client import ApiError, Kube
from virt_debug.backends.kubevirt.objects import (
    RECORD_KEY,
    Layout,
    Names,
    apply_merge_patch,
    record_configmap,
)
from virt_debug.errors import KubernetesError, UsageError

log = logging.getLogger(__name__)

SERVER_SET = (
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
)
PLURALS = {
    "ConfigMap": "configmaps",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Pod": "pods",
}


@dataclass
class Record:
    """What we changed, enough to put it back."""

    vm: str
    namespace: str
    claim: str = ""
    kind: str = "VirtualMachine"
    # The exact annotation value before we attached; None when it was absent.
    annotation_before: str | None = None
    attached: bool = False
    created: list[dict[str, str]] = field(default_factory=list)
    # "restarted" (it was running) or "started" (it was stopped), or "".
    power: str = ""
    run_strategy_before: str | None = None
    running_before: bool | None = None
    gate_before: list[str] | None = None
    vmi_manifest: dict[str, Any] | None = None
    # The tools, wrapper and hook are on the PVC (setup done).
    uploaded: bool = False
    traced_node: str = ""
    traced_uid: str = ""
    run_id: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("run-%Y%m%d-%H%M%S")
    )
    began: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def names(self) -> Names:
        return Names(self.vm, self.claim)

    @property
    def layout(self) -> Layout:
        return Layout(self.vm, self.run_id)

    def created_names(self, kind: str) -> list[str]:
        return [c["name"] for c in self.created if c["kind"] == kind]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_configmap(cls, cm: dict[str, Any]) -> Record:
        try:
            data = json.loads((cm.get("data") or {})[RECORD_KEY])
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            return cls(**known)
        except (KeyError, TypeError, ValueError) as e:
            name = (cm.get("metadata") or {}).get("name")
            raise KubernetesError(
                f"the record ConfigMap {name} is unreadable: {e}",
                hint="check it with kubectl; delete it once the VM is as it was",
            ) from e


@dataclass
class Planned:
    """One change as the dry-run prints it."""

    verb: str
    manifest: dict[str, Any] | None
    note: str = ""


class Changes:
    """Writes to the cluster, keeping the record up to date, or plans in dry-run."""

    def __init__(self, kube: Kube, record: Record, *, dry_run: bool = False) -> None:
        self.kube = kube
        self.record = record
        self.dry_run = dry_run
        self.planned: list[Planned] = []
        self.record_manifest: dict[str, Any] | None = None
        self.saved = False
        # False for a command that only reads (fetch with no run going on): its
        # short-lived helper is not worth a record on the cluster.
        self.persist = True

    def plan(self) -> list[Planned]:
        """What a dry-run would have done, the record ConfigMap first."""
        head = [Planned("create", self.record_manifest)] if self.record_manifest else []
        return head + self.planned

    @property
    def namespace(self) -> str:
        return self.record.namespace

    def save(self) -> None:
        """Write the record to its ConfigMap (create on first use)."""
        if not self.persist:
            return
        name = self.record.names.record_configmap
        cm = record_configmap(
            name, self.namespace, self.record.vm, self.record.to_json()
        )
        if self.dry_run:
            self.record_manifest = cm
            return
        path = api.core(self.namespace, "configmaps", name)
        if self.saved:
            self.kube.merge_patch(path, {"data": cm["data"]})
            return
        try:
            self.kube.create(api.core(self.namespace, "configmaps"), cm)
        except ApiError as e:
            if e.status != 409:
                raise
            # It was not there when we looked: another run began on this VM.
            vm, ns = self.record.vm, self.namespace
            raise UsageError(
                f"another virt-debug run began on {ns}/{vm} meanwhile "
                f"(record {name}); nothing was changed",
                hint=f"let it finish, or: virt-debug kubevirt detach {vm} -n {ns}",
            ) from e
        self.saved = True

    def forget(self) -> None:
        """Delete the record: everything in it has been undone."""
        name = self.record.names.record_configmap
        if self.dry_run:
            self.record_manifest = None
            return
        self.kube.delete(api.core(self.namespace, "configmaps", name))
        self.saved = False

    def create(self, manifest: dict[str, Any], *, track: bool = True) -> dict[str, Any]:
        """Create a core object; recorded first, so a crash still finds it."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if track:
            self.record.created.append({"kind": kind, "name": name})
            self.save()
        if self.dry_run:
            self.planned.append(Planned("create", manifest))
            return manifest
        log.info("creating %s %s/%s", kind, self.namespace, name)
        return self.kube.create(api.core(self.namespace, PLURALS[kind]), manifest)

    def delete(self, kind: str, name: str) -> None:
        if self.dry_run:
            self.planned.append(Planned("delete", None, f"{kind} {name}"))
        else:
            log.info("deleting %s %s/%s", kind, self.namespace, name)
            self.kube.delete(api.core(self.namespace, PLURALS[kind], name))
        entry = {"kind": kind, "name": name}
        if entry in self.record.created:
            self.record.created.remove(entry)
            self.save()

    def patch(
        self, path: str, patch: dict[str, Any], current: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch an object; the dry-run shows the object as it would become."""
        if self.dry_run:
            after = apply_merge_patch(current, patch)
            # As a manifest to review or apply: no status, nothing the server sets.
            after.pop("status", None)
            for key in SERVER_SET:
                after.get("metadata", {}).pop(key, None)
            self.planned.append(Planned("patch", after))
            return after
        return self.kube.merge_patch(path, patch)

    def act(self, path: str, note: str) -> None:
        """PUT a KubeVirt subresource (restart, start, stop)."""
        if self.dry_run:
            self.planned.append(Planned("action", None, note))
            return
        log.info("%s", note)
        self.kube.put(path)


def load(kube: Kube, namespace: str, vm: str) -> Record | None:
    cm = kube.get(api.core(namespace, "configmaps", Names(vm).record_configmap))
    return Record.from_configmap(cm) if cm else None
