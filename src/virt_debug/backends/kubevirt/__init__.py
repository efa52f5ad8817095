"""The KubeVirt backend: trace a VM's QEMU inside its virt-launcher pod.

No image is built: a PVC carries a portable debugger bundle, the emulator wrapper and
the hook script; a hook sidecar (KubeVirt's sidecar-shim running our standalone
``onDefineDomain`` from a ConfigMap) points the domain's ``<emulator>`` at the wrapper,
and the PVC is shared into the compute container where libvirt starts QEMU.

Modules, one concern each:

- ``client``: the connection (kubeconfig, context, namespace, in-cluster) and plain
  JSON requests;
- ``preflight``: the KubeVirt CR, its version and Sidecar gate, the VM, warnings;
- ``objects``: pure builders of every manifest and of the annotation merge;
- ``record``: the record of changes (in memory and as a ConfigMap) and ``Changes``,
  the one writer, which also plans for ``--dry-run``;
- ``attach``, ``power``, ``volume``: the sidecar entry, restart and watch, the PVC and
  its helper pods;
- ``transport``: the exec seam (``KubeExec`` over the API server, ``LocalExec`` as a
  local process);
- ``restore``: undo a record, step by step;
- ``flow``: ``Session``, the commands (setup, attach, run, fetch, detach);
- ``status``: what is changed and how the VM is doing.

Start from ``flow.Session``. Nothing is imported here, so the pure modules load
without the Kubernetes client.
"""
