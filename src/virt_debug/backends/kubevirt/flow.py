"""The KubeVirt flows: setup, attach, run, fetch, detach, each one restorable.

``Session`` ties one VM to a cluster connection, an exec transport and a record of
changes. Every step writes the record before it changes anything, so whatever stops
a flow midway (an API error, a failed start, Ctrl-C) is followed by ``restore``,
which undoes exactly what the record holds, and ``detach`` can do the same later
from the record kept on the cluster.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from virt_debug.backends.kubevirt import attach as attaching
from virt_debug.backends.kubevirt import client as api
from virt_debug.backends.kubevirt import power, restore, volume
from virt_debug.backends.kubevirt import preflight as checks
from virt_debug.backends.kubevirt.client import Kube
from virt_debug.backends.kubevirt.objects import QEMU, feature_gate_patch, label_value
from virt_debug.backends.kubevirt.record import PLURALS, Changes, Planned, Record, load
from virt_debug.backends.kubevirt.transport import PodExec
from virt_debug.errors import Interrupted, KubernetesError, UsageError
from virt_debug.launch import transfer

log = logging.getLogger(__name__)


@dataclass
class Options:
    """What the CLI flags choose; the defaults are the CLI's."""

    debugger: str = "strace"
    claim: str = ""
    size: str = "1Gi"
    storage_class: str | None = None
    access_mode: str = "ReadWriteOnce"
    helper_image: str | None = None
    enable_sidecar_gate: bool = False
    recreate_vmi: bool = False
    full: bool = False
    # Seconds to trace once QEMU runs; None with until_stopped waits for the guest.
    duration: float | None = 30.0
    until_stopped: bool = False
    start_timeout: float = 300.0
    stop_timeout: float = 180.0
    delete_pvc: bool = False
    dry_run: bool = False
    poll: float = 1.0


class Session:
    """One VM, one cluster connection, one exec transport: the commands as methods.

    ``report`` receives one short line per step, for the progress display.
    """

    def __init__(
        self,
        kube: Kube,
        pod_exec: PodExec,
        vm: str,
        namespace: str | None = None,
        options: Options | None = None,
        report: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.kube = kube
        self.pod_exec = pod_exec
        self.vm = vm
        self.namespace = namespace or kube.namespace
        self.options = options or Options()
        checks.check_names(self.vm, self.namespace, self.options.claim)
        opts = self.options
        checks.check_options(
            size=opts.size,
            storage_class=opts.storage_class,
            helper_image=opts.helper_image,
            seconds={
                "--duration": opts.duration,
                "--start-timeout": opts.start_timeout,
                "stop timeout": opts.stop_timeout,
                "--poll": opts.poll,
            },
        )
        self.report = report
        self.outcome: power.Outcome | None = None
        self.known_events: set[str] = set()

    # Reading.

    def preflight(self) -> checks.Preflight:
        pre = checks.inspect(self.kube, self.vm, self.namespace)
        for warning in pre.warnings:
            self.report(f"warning: {warning}")
        checks.check_sidecars(pre)
        if not pre.gate_on and not self.options.enable_sidecar_gate:
            if not self.options.dry_run:
                raise checks.gate_off_error(pre.kubevirt)
            self.report(
                "warning: the Sidecar feature gate is off; "
                "--enable-sidecar-gate would turn it on"
            )
        return pre

    def _changes(self, *, resume: bool) -> Changes:
        existing = load(self.kube, self.namespace, self.vm)
        # A record of `setup` alone (tools on the PVC) is fine to go on from.
        busy = bool(
            existing and (existing.attached or existing.power or existing.vmi_manifest)
        )
        if existing and busy and not resume and not self.options.dry_run:
            raise UsageError(
                f"an earlier virt-debug run left {self.namespace}/{self.vm} changed "
                f"(record {existing.names.record_configmap}, began {existing.began})",
                hint=f"undo it first: virt-debug kubevirt detach {self.vm} "
                f"-n {self.namespace}",
            )
        record = existing or Record(self.vm, self.namespace, claim=self.options.claim)
        changes = Changes(self.kube, record, dry_run=self.options.dry_run)
        changes.saved = existing is not None
        return changes

    # Steps, each recorded before it acts.

    def _gate(self, changes: Changes, pre: checks.Preflight) -> None:
        if pre.gate_on or not self.options.enable_sidecar_gate:
            return
        gates = checks.feature_gates(pre.kubevirt)
        changes.record.gate_before = gates
        changes.save()
        self.report("turning the Sidecar feature gate on")
        changes.patch(
            checks.kubevirt_path(pre.kubevirt), feature_gate_patch(gates), pre.kubevirt
        )

    def _setup(self, changes: Changes, pre: checks.Preflight) -> None:
        from virt_debug.launch import hook_script
        from virt_debug.launch.bundle import build_bundle
        from virt_debug.launch.wrapper import render_wrapper

        opts, layout = self.options, changes.record.layout
        created = volume.ensure_pvc(
            changes,
            size=opts.size,
            storage_class=opts.storage_class,
            access_mode=opts.access_mode,
        )
        wrapper = render_wrapper(
            opts.debugger,
            qemu=QEMU,
            output=layout.output,
            full=opts.full,
            tool_dir=layout.tool_dir,
            shell=layout.shell,
        )
        files = {
            "qemu-kvm-wrapper": (wrapper.encode(), 0o755),
            "onDefineDomain": (hook_script(layout.emulator).encode(), 0o755),
        }
        image = opts.helper_image or pre.shim_image
        node = volume.node_using_claim(
            self.kube, self.namespace, changes.record.names.volume
        )
        if created and not node and pre.vm_running:
            # A new volume bound where its first pod runs (WaitForFirstConsumer)
            # should be where the VM runs, so the VM can come back on its node.
            node = ((pre.vmi or {}).get("status") or {}).get("nodeName")
        with tempfile.TemporaryDirectory(prefix="virt-debug-bundle-") as tmp:
            bundle = Path(tmp) / "tools"
            if not opts.dry_run:
                self.report(f"building the portable {opts.debugger} bundle")
                build_bundle(bundle, opts.debugger)
            with volume.Helper(changes, image, node=node, poll=opts.poll) as helper:
                self.report(f"uploading the tools to PVC {changes.record.names.volume}")
                volume.upload(changes, self.pod_exec, helper, layout, bundle, files)
        changes.record.uploaded = True
        changes.save()

    def _attach(self, changes: Changes, pre: checks.Preflight) -> None:
        from virt_debug.launch import hook_script

        script = hook_script(changes.record.layout.emulator)
        attaching.attach(changes, pre, script, recreate_vmi=self.options.recreate_vmi)

    def _bring_up(self, changes: Changes, pre: checks.Preflight) -> str:
        if not changes.dry_run:
            self.known_events = power.event_names(self.kube, self.namespace, self.vm)
        if changes.record.kind == "VirtualMachineInstance":
            return ((pre.vmi or {}).get("metadata") or {}).get("uid", "")
        return power.bring_up(changes, pre)

    def _trace(self, changes: Changes, old_uid: str) -> None:
        opts = self.options
        self.report("following the VMI")
        outcome = power.follow(
            self.kube,
            self.namespace,
            self.vm,
            old_uid,
            self.report,
            timeout=opts.start_timeout,
            poll=opts.poll,
            known_events=self.known_events,
        )
        self._remember(changes, outcome)
        if not outcome.running:
            self.report(f"the traced start failed: {outcome.reason}")
            for line in outcome.details:
                self.report(f"  {line}")
            return
        uid = (outcome.vmi or {}).get("metadata", {}).get("uid", "")
        if opts.until_stopped:
            self.report("tracing until the guest stops (Ctrl-C ends it early)")
            power.wait_stopped(self.kube, self.namespace, self.vm, uid, poll=opts.poll)
        elif opts.duration:
            self.report(f"tracing for {opts.duration:g}s (Ctrl-C ends it early)")
            power.wait_stopped(
                self.kube,
                self.namespace,
                self.vm,
                uid,
                poll=opts.poll,
                timeout=opts.duration,
            )

    def _remember(self, changes: Changes, outcome: power.Outcome) -> None:
        # Where the traced VMI ran: a ReadWriteOnce PVC is read there afterwards.
        self.outcome = outcome
        uid = ((outcome.vmi or {}).get("metadata") or {}).get("uid", "")
        changes.record.traced_node = outcome.node
        changes.record.traced_uid = uid
        if not changes.dry_run:
            changes.save()

    # The restore: undo what the record holds, in reverse order.

    def restore(
        self,
        changes: Changes,
        *,
        keep_pvc: bool = True,
        forget: bool = True,
        restart_back: bool = True,
    ) -> None:
        with restore.deferred_interrupt(self.report):
            self.report(f"restoring {self.namespace}/{self.vm}")
            restore.undo(
                changes,
                self.report,
                keep_pvc=keep_pvc,
                forget=forget,
                restart_back=restart_back,
                poll=self.options.poll,
                stop_timeout=self.options.stop_timeout,
            )

    @contextlib.contextmanager
    def _restoring(self, changes: Changes) -> Iterator[None]:
        """Run the steps; on any failure or Ctrl-C, restore before raising."""
        try:
            yield
        except KeyboardInterrupt as e:
            self.restore(changes, keep_pvc=not self.options.delete_pvc)
            raise Interrupted(
                "interrupted; the VM and the cluster are as they were"
            ) from e
        except BaseException:
            try:
                self.restore(changes, keep_pvc=not self.options.delete_pvc)
            except Exception as again:
                log.error("restoring failed too: %s", again)
                self.report(
                    f"restoring failed too ({again}); the record stays on the cluster: "
                    f"run `virt-debug kubevirt detach {self.vm} -n {self.namespace}`"
                )
            raise

    # The commands.

    def setup(self) -> list[Planned]:
        pre = self.preflight()
        changes = self._changes(resume=True)
        # Outside the restore: a record we could not write means nothing changed,
        # and one written by another run meanwhile is not ours to undo.
        changes.save()
        with self._restoring(changes):
            self._gate(changes, pre)
            self._setup(changes, pre)
        return changes.plan()

    def attach(self, *, restart: bool = False) -> list[Planned]:
        pre = self.preflight()
        changes = self._changes(resume=True)
        if not changes.record.uploaded and not changes.dry_run:
            # Without the wrapper on the PVC the hooked VM could not start at all.
            raise UsageError(
                f"the tools are not on the PVC for {self.vm} yet",
                hint=f"run `virt-debug kubevirt setup {self.vm} -n {self.namespace}` "
                "first",
            )
        # Outside the restore: a record we could not write means nothing changed,
        # and one written by another run meanwhile is not ours to undo.
        changes.save()
        with self._restoring(changes):
            self._gate(changes, pre)
            self._attach(changes, pre)
            if restart:
                old = self._bring_up(changes, pre)
                if not changes.dry_run:
                    self._trace_start_only(changes, old)
        return changes.plan()

    def _trace_start_only(self, changes: Changes, old_uid: str) -> None:
        outcome = power.follow(
            self.kube,
            self.namespace,
            self.vm,
            old_uid,
            self.report,
            timeout=self.options.start_timeout,
            poll=self.options.poll,
            known_events=self.known_events,
        )
        self._remember(changes, outcome)
        for line in outcome.details:
            self.report(f"  {line}")

    def run(self, output: Path | None = None) -> tuple[list[Planned], Path | None]:
        """Trace the VM's next start; returns the plan (dry-run) or the output."""
        dest = output or default_output(self.vm)
        if not self.options.dry_run:
            transfer.check_destination(dest)
        pre = self.preflight()
        changes = self._changes(resume=False)
        # Outside the restore: a record we could not write means nothing changed,
        # and one written by another run meanwhile is not ours to undo.
        changes.save()
        with self._restoring(changes):
            self._gate(changes, pre)
            self._setup(changes, pre)
            self._attach(changes, pre)
            old_uid = self._bring_up(changes, pre)
            if changes.dry_run:
                return changes.plan(), None
            self._trace(changes, old_uid)
            self.restore(changes, forget=False)
        try:
            self._fetch(changes, changes.record.layout.output, dest)
        finally:
            if self.options.delete_pvc:
                for name in changes.record.created_names("PersistentVolumeClaim"):
                    changes.delete("PersistentVolumeClaim", name)
            changes.forget()
        self.report(f"{self.namespace}/{self.vm} is as it was")
        if not self.options.delete_pvc:
            self.report(
                f"PVC {changes.record.names.volume} keeps the tools and traces; "
                f"`virt-debug kubevirt detach {self.vm} --delete-pvc` removes it"
            )
        return [], dest

    def fetch(
        self, output: Path | None = None, *, every_run: bool = False
    ) -> tuple[list[Planned], Path]:
        """Copy the traces here: this run's if one is recorded, else every run's."""
        changes = self._changes(resume=True)
        changes.persist = changes.saved
        record = changes.record
        ongoing = changes.saved and not every_run
        source = record.layout.output if ongoing else record.layout.outputs
        dest = output or default_output(self.vm)
        if not self.options.dry_run:
            transfer.check_destination(dest)
        self._fetch(changes, source, dest)
        return changes.plan(), dest

    def _fetch(self, changes: Changes, source: str, dest: Path) -> None:
        record = changes.record
        claim = api.core(self.namespace, "persistentvolumeclaims", record.names.volume)
        if not changes.dry_run and self.kube.get(claim) is None:
            # A helper pod for a missing claim would only sit in Pending.
            raise KubernetesError(
                f"there is no PVC {record.names.volume} in {self.namespace}: "
                f"nothing to fetch for {self.vm}",
                hint=f"`virt-debug kubevirt run strace {self.vm}` makes both",
            )
        node = (
            volume.node_using_claim(self.kube, self.namespace, record.names.volume)
            or record.traced_node
            or None
        )
        image = self.options.helper_image or checks.sidecar_shim_image(
            checks.find_kubevirt(self.kube)
        )
        self.report(f"fetching {source} into {dest}")
        with volume.Helper(changes, image, node=node, poll=self.options.poll) as helper:
            if changes.dry_run:
                return
            summary = volume.fetch(changes, self.pod_exec, helper, source, dest)
        self.report(f"fetched {summary.files} files, {summary.bytes} bytes")

    def detach(self, *, restart_back: bool = True) -> list[Planned]:
        changes = self._changes(resume=True)
        if not changes.saved:
            # No record: take our entry out by name and our objects by label.
            changes.persist = False
            pre = checks.inspect(self.kube, self.vm, self.namespace)
            attaching.detach(changes, pre.vm)
            roles = {"helper": "Pod", "hook": "ConfigMap"}
            if self.options.delete_pvc:
                roles["tools"] = "PersistentVolumeClaim"
            vm_label = label_value(self.vm)
            for role, kind in roles.items():
                for item in self.kube.list(
                    api.core(self.namespace, PLURALS[kind]),
                    label_selector=f"virt-debug/vm={vm_label},virt-debug/role={role}",
                ):
                    labels = item["metadata"].get("labels") or {}
                    if labels.get("virt-debug/vm") == vm_label and (
                        labels.get("virt-debug/role") == role
                    ):
                        changes.delete(kind, item["metadata"]["name"])
            return changes.plan()
        self.restore(
            changes, keep_pvc=not self.options.delete_pvc, restart_back=restart_back
        )
        return changes.plan()


def default_output(vm: str) -> Path:
    return Path("virt-debug-out") / f"{vm}-{time.strftime('%Y%m%d-%H%M%S')}"
