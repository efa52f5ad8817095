"""The tools volume: create the PVC, fill it and read it back through helper pods.

A helper pod mounts the PVC and only sleeps; the files travel as a tar stream over
exec (``virt_debug.launch.transfer``): the pod runs ``upload_command`` or
``fetch_command``, this machine packs or unpacks the same format.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import time
from pathlib import Path

from virt_debug.backends.kubevirt import client as api
from virt_debug.backends.kubevirt.client import Kube
from virt_debug.backends.kubevirt.objects import (
    HELPER_CONTAINER,
    Layout,
    helper_pod,
    pvc,
)
from virt_debug.backends.kubevirt.record import Changes
from virt_debug.backends.kubevirt.transport import PodExec
from virt_debug.errors import KubernetesError
from virt_debug.launch import transfer

log = logging.getLogger(__name__)


def ensure_pvc(
    changes: Changes,
    *,
    size: str,
    storage_class: str | None,
    access_mode: str,
) -> bool:
    """Create the tools PVC unless it exists (then it is used as it is).

    True if it was created here.
    """
    record = changes.record
    name = record.names.volume
    existing = changes.kube.get(
        api.core(record.namespace, "persistentvolumeclaims", name)
    )
    if existing is not None:
        log.info("using the existing PVC %s/%s", record.namespace, name)
        return False
    changes.create(
        pvc(
            name,
            record.namespace,
            record.vm,
            size=size,
            storage_class=storage_class,
            access_mode=access_mode,
        )
    )
    return True


def node_using_claim(kube: Kube, namespace: str, claim: str) -> str | None:
    """The node of a live pod (not ours) that mounts ``claim``, if any.

    A ReadWriteOnce volume can only be mounted there while that pod runs.
    """
    for pod in kube.list(api.core(namespace, "pods")):
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get("virt-debug/role") == "helper":
            continue
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        claims = [
            (v.get("persistentVolumeClaim") or {}).get("claimName")
            for v in spec.get("volumes") or []
        ]
        if claim in claims and spec.get("nodeName"):
            return str(spec["nodeName"])
    return None


class Helper:
    """A helper pod for the life of a ``with`` block."""

    def __init__(
        self,
        changes: Changes,
        image: str,
        *,
        node: str | None = None,
        start_timeout: float = 300,
        poll: float = 1.0,
    ) -> None:
        self.changes = changes
        record = changes.record
        self.name = record.names.helper_pod(secrets.token_hex(3))
        self.manifest = helper_pod(
            self.name,
            record.namespace,
            record.vm,
            image=image,
            claim=record.names.volume,
            node=node,
        )
        self.start_timeout = start_timeout
        self.poll = poll

    def __enter__(self) -> Helper:
        try:
            self.changes.create(self.manifest)
            if not self.changes.dry_run:
                self._wait_running()
        except BaseException:
            # __exit__ does not run when __enter__ fails. A create the client saw
            # fail (a cut connection, Ctrl-C) may still have made the pod.
            try:
                self.changes.delete("Pod", self.name)
            except Exception as e:
                log.warning("could not delete helper pod %s: %s", self.name, e)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.changes.delete("Pod", self.name)

    def _wait_running(self) -> None:
        kube, ns = self.changes.kube, self.changes.namespace
        deadline = time.monotonic() + self.start_timeout
        while True:
            pod = kube.get(api.core(ns, "pods", self.name)) or {}
            status = pod.get("status") or {}
            if status.get("phase") == "Running":
                return
            problem = _container_problem(status)
            if status.get("phase") in ("Failed", "Succeeded") or problem:
                raise KubernetesError(
                    f"helper pod {ns}/{self.name} did not start: "
                    f"{problem or status.get('phase')}",
                    hint="if the image cannot be pulled, pass --helper-image with one "
                    "that has python3 and that the nodes can pull",
                )
            if time.monotonic() > deadline:
                raise KubernetesError(
                    f"helper pod {ns}/{self.name} is not running after "
                    f"{self.start_timeout:.0f}s (phase {status.get('phase')})",
                    hint="`kubectl describe pod` tells why; a ReadWriteOnce PVC in use "
                    "on another node keeps it pending",
                )
            time.sleep(self.poll)


def _container_problem(status: dict) -> str:
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in (
            "ErrImagePull",
            "ImagePullBackOff",
            "InvalidImageName",
            "CreateContainerConfigError",
            "CreateContainerError",
        ):
            return f"{waiting['reason']}: {waiting.get('message', '')}".strip()
    return ""


def _check(result, what: str) -> None:
    if result.returncode != 0:
        reason = transfer.refusal(result.stderr) or result.stderr.strip()[-300:]
        raise KubernetesError(f"{what} failed in the helper pod: {reason}")


def upload(
    changes: Changes,
    pod_exec: PodExec,
    helper: Helper,
    layout: Layout,
    bundle: Path,
    files: dict[str, tuple[bytes, int]],
) -> None:
    """Put the bundle into the tool directory and ``files`` into the VM's directory."""
    if changes.dry_run:
        return
    ns = changes.namespace
    result = pod_exec.run(
        helper.name,
        ns,
        HELPER_CONTAINER,
        transfer.upload_command(layout.tool_dir),
        stdin=transfer.pack_directory(bundle),
    )
    _check(result, "unpacking the tool bundle")

    # Only the named files are replaced in the VM's directory: old traces stay.
    with tempfile.TemporaryDirectory(prefix="virt-debug-") as empty:
        result = pod_exec.run(
            helper.name,
            ns,
            HELPER_CONTAINER,
            transfer.upload_command(layout.vm_dir),
            stdin=transfer.pack_directory(Path(empty), extra=files),
        )
    _check(result, "unpacking the wrapper")


def fetch(
    changes: Changes, pod_exec: PodExec, helper: Helper, source: str, dest: Path
) -> transfer.TransferSummary:
    """Copy ``source`` (a directory on the PVC) into ``dest`` here."""
    with tempfile.TemporaryFile(prefix="virt-debug-fetch-") as spool:
        result = pod_exec.run(
            helper.name,
            changes.namespace,
            HELPER_CONTAINER,
            transfer.fetch_command(source),
            stdout=spool,
        )
        if result.returncode != 0:
            reason = transfer.refusal(result.stderr) or result.stderr.strip()[-300:]
            raise KubernetesError(
                f"nothing to fetch from {source}: {reason}",
                hint="the VM may not have started with the hook yet; "
                "`virt-debug kubevirt status` shows what was traced",
            )
        spool.seek(0)
        return transfer.unpack_stream(iter(lambda: spool.read(1 << 16), b""), dest)
