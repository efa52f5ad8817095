"""The exec seam: how a command runs in a helper pod, with bytes in and out.

Everything that moves files through a helper pod goes through ``PodExec.run``. Two
implementations keep the same contract:

- ``KubeExec`` runs the command in the pod over the API server's exec websocket
  (``kubernetes.stream``), the real-cluster path;
- ``LocalExec`` runs the very same argv as a local process, with the pod's volume
  mount mapped to a local directory standing in for the PVC. The tests use it with
  a local API server, so both ends of every transfer run for real; it is also handy
  to check a transfer without a cluster.

Nothing else in the backend knows which one it talks to.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from virt_debug.backends.kubevirt import client as api
from virt_debug.backends.kubevirt.client import Kube
from virt_debug.backends.kubevirt.objects import MOUNT_PATH
from virt_debug.errors import KubernetesError

log = logging.getLogger(__name__)


@dataclass
class ExecResult:
    returncode: int
    stderr: str
    stdout: bytes = b""


class PodExec(Protocol):
    def run(
        self,
        pod: str,
        namespace: str,
        container: str,
        argv: list[str],
        *,
        stdin: Iterable[bytes] | None = None,
        stdout: BinaryIO | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the container; feed ``stdin`` chunks, then close it.

        Standard output goes to ``stdout`` when given, else into the result.
        """
        ...


class KubeExec:
    """Exec through the API server (what ``kubectl exec -i`` does)."""

    def __init__(self, kube: Kube, poll: float = 1.0) -> None:
        self.kube = kube
        self.poll = poll

    def run(self, pod, namespace, container, argv, *, stdin=None, stdout=None):
        ws = self._connect(pod, namespace, container, argv, stdin is not None)
        out = bytearray()
        err = bytearray()

        def drain(timeout: float = 0) -> None:
            ws.update(timeout=timeout)
            if ws.peek_stdout():
                data = ws.read_stdout()
                stdout.write(data) if stdout else out.extend(data)
            if ws.peek_stderr():
                err.extend(ws.read_stderr())

        try:
            for chunk in _frames(stdin or ()):
                drain()
                ws.write_stdin(chunk)
            if stdin is not None:
                self._end_stdin(ws)
            while ws.is_open():
                drain(self.poll)
            drain()
            try:
                code = ws.returncode
            except (TypeError, KeyError, IndexError, ValueError):
                # The connection closed without an exit status (a proxy cut it).
                code = None
        finally:
            ws.close()
        return ExecResult(
            code if code is not None else 1, err.decode(errors="replace"), bytes(out)
        )

    def _connect(self, pod, namespace, container, argv, with_stdin: bool):
        # The websocket client of kubernetes.stream, called directly: the generated
        # CoreV1Api costs seconds to import, and its wrapper would keep a copy of all
        # the output in memory (capture_all).
        from kubernetes.stream import ws_client

        client = self.kube.api_client
        query = [("command", a) for a in argv] + [
            ("container", container),
            ("stdin", "true" if with_stdin else "false"),
            ("stdout", "true"),
            ("stderr", "true"),
            ("tty", "false"),
        ]
        _, url, headers, _, _ = client.param_serialize(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods/{pod}/exec",
            query_params=query,
            header_params={},
            auth_settings=["BearerToken"],
        )
        try:
            return ws_client.websocket_call(
                client.configuration,
                "GET",
                url,
                headers=headers,
                _preload_content=False,
                capture_all=False,
                binary=True,
            )
        except Exception as e:
            raise KubernetesError(
                f"cannot exec in pod {namespace}/{pod}: {e}",
                hint="exec needs the pods/exec permission and a running container",
            ) from e

    @staticmethod
    def _end_stdin(ws) -> None:
        if ws.subprotocol == V5_PROTOCOL:
            ws.close_channel(0)
            return
        # Before Kubernetes 1.30 (exec protocol v4) stdin cannot be closed. The
        # helper reads the archive in whole tar records, so the end of the stream
        # could wait forever: zeros after it complete the last read, and the reader
        # stops at the archive's end marker without needing end-of-file.
        ws.write_stdin(b"\0" * V4_PADDING)


def _frames(chunks: Iterable[bytes], size: int = 1 << 18) -> Iterator[bytes]:
    """Chunks joined into frames of ``size`` bytes: one frame costs a round of
    masking and a syscall, and a gzip stream yields many tiny or empty chunks."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        if len(pending) >= size:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)


V5_PROTOCOL = "v5.channel.k8s.io"
V4_PADDING = 1 << 16


class LocalExec:
    """Run the pod's command here, its tools volume being a local directory.

    ``volumes`` maps a PVC name to the directory that stands for it. The pod is read
    from the API to learn which claim it mounts, so a command can only reach the
    volume its pod really has. ``python`` replaces ``python3`` in the argv (the
    sidecar-shim image has python3.9; pass one to check the helper runs on it).
    """

    def __init__(self, kube: Kube, volumes: dict[str, Path], python: str = "") -> None:
        self.kube = kube
        self.volumes = volumes
        self.python = python or sys.executable
        self.calls: list[list[str]] = []

    def _volume(self, pod: str, namespace: str) -> Path:
        manifest = self.kube.get(api.core(namespace, "pods", pod))
        if manifest is None:
            raise KubernetesError(f"pod {namespace}/{pod} does not exist")
        for volume in (manifest.get("spec") or {}).get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim in self.volumes:
                return self.volumes[claim]
        raise KubernetesError(f"pod {namespace}/{pod} mounts no known volume")

    def run(self, pod, namespace, container, argv, *, stdin=None, stdout=None):
        root = self._volume(pod, namespace)
        local = [
            str(root) + a[len(MOUNT_PATH) :] if a.startswith(MOUNT_PATH) else a
            for a in argv
        ]
        if local and local[0] == "python3":
            local[0] = self.python
        self.calls.append(list(argv))
        proc = subprocess.Popen(
            local,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out = bytearray()
        err = bytearray()

        def pump(source, sink) -> None:
            for block in iter(lambda: source.read(1 << 16), b""):
                sink(block)

        readers = [
            threading.Thread(
                target=pump, args=(proc.stdout, stdout.write if stdout else out.extend)
            ),
            threading.Thread(target=pump, args=(proc.stderr, err.extend)),
        ]
        for reader in readers:
            reader.start()
        try:
            for chunk in stdin or ():
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        finally:
            if proc.stdin:
                proc.stdin.close()
            code = proc.wait()
            for reader in readers:
                reader.join()
        return ExecResult(code, err.decode(errors="replace"), bytes(out))
