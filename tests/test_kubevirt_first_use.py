"""A first try of the ``kubevirt`` commands, without a cluster or with a wrong
one: each mistake ends in one short line that says what to do, and ``--help``
offers only options that do something, each explained."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest
import yaml

from kube_server import KUBEVIRT, VM, KubeServer
from kubevirt_fake import example_vm, kubevirt_cr
from virt_debug.cli import main as cli_main
from virt_debug.cli.kubevirt import kubevirt as kubevirt_group

COMMANDS = ["run", "setup", "attach", "detach", "fetch", "status"]
CHANGING = ["run", "setup", "attach", "detach", "fetch"]


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        cli_main.main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def kubeconfig(path: Path, server: str, *, contexts=("a", "b"), ca: str = "") -> str:
    cluster = {"server": server}
    if ca:
        cluster["certificate-authority"] = ca
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": name, "context": {"cluster": "c", "user": "u"}}
            for name in contexts
        ],
        "current-context": contexts[0],
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def terminal(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The command in its own process, as a user's terminal shows it: the logging
    set up by the CLI, not by pytest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["HOME"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "virt_debug", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The connection.


def test_connection_refused_is_one_short_line_without_retry_warnings(tmp_path):
    server = f"https://127.0.0.1:{free_port()}"
    config = kubeconfig(tmp_path / "kc.yaml", server)
    done = terminal(tmp_path, "kubevirt", "status", "myvm", "--kubeconfig", config)
    assert done.returncode == 4
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"virt-debug: error: cannot reach the API server at {server}: connection "
        "refused (check the cluster is up and the kubeconfig's server address)"
    ]


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
def test_an_untrusted_certificate_says_tls_verify_failed(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        # The handshake fails on the client's side; nothing more to answer.
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except OSError:
                continue
            try:
                context.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        server = f"https://127.0.0.1:{listener.getsockname()[1]}"
        config = kubeconfig(tmp_path / "kc.yaml", server)
        done = terminal(tmp_path, "kubevirt", "status", "vm1", "--kubeconfig", config)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert done.returncode == 4
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        f"virt-debug: error: cannot reach the API server at {server}: "
        "TLS verify failed (self-signed certificate)"
    )
    assert "certificate-authority" in line and len(line) < 250


def test_no_kubeconfig_outside_a_pod_says_where_it_looked(tmp_path):
    done = terminal(tmp_path, "kubevirt", "status", "myvm")
    assert done.returncode == 4
    assert done.stderr.splitlines() == [
        "virt-debug: error: no kubeconfig found (~/.kube/config or $KUBECONFIG) "
        "and not running in a pod: pass --kubeconfig FILE or set KUBECONFIG"
    ]


def test_an_unknown_context_lists_the_contexts_there(tmp_path, capsys):
    config = kubeconfig(tmp_path / "kc.yaml", "http://127.0.0.1:1")
    code, _, err = invoke(
        capsys, "kubevirt", "status", "vm1", "--kubeconfig", config, "--context", "nope"
    )
    assert code == 4
    assert err.splitlines() == [
        f"virt-debug: error: context 'nope' is not in {config}; contexts there: a, b"
    ]


def test_a_missing_kubeconfig_file_is_named(tmp_path, capsys):
    missing = str(tmp_path / "none.yaml")
    code, _, err = invoke(capsys, "kubevirt", "status", "vm1", "--kubeconfig", missing)
    assert code == 4
    assert f"{missing} does not exist" in err and "KUBECONFIG" not in err


# The debugger.


@pytest.mark.parametrize("args", [["run", "gdbserver", "vm1"], ["setup", "vm1"]])
def test_an_unwired_debugger_is_refused_with_the_scope(tmp_path, capsys, args):
    if args[0] == "setup":
        args = [*args, "--debugger", "gdbserver"]
    code, _, err = invoke(capsys, "kubevirt", *args)
    assert code == 2
    assert "{strace}" not in err
    assert "gdbserver is not supported on KubeVirt yet: only strace is" in err
    assert "'DEBUGGER'" in err or "'--debugger'" in err


def test_run_help_names_debugger_and_says_what_is_wired(capsys):
    code, out, _ = invoke(capsys, "kubevirt", "run", "--help")
    assert code == 0
    assert "run [OPTIONS] DEBUGGER VM" in out
    assert "only strace runs on KubeVirt so far" in out
    assert "gdbserver" in out


# The options.


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_of_every_command_has_help(name):
    command = kubevirt_group.commands[name]
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"{name} {param.opts}"


@pytest.mark.parametrize(
    "command, option",
    [
        ("attach", ["--pvc-size", "2Gi"]),
        ("attach", ["--storage-class", "fast"]),
        ("attach", ["--access-mode", "ReadWriteMany"]),
        ("attach", ["--helper-image", "busybox"]),
        ("attach", ["--pvc", "other"]),
        ("setup", ["--recreate-vmi"]),
        ("status", ["--dry-run"]),
    ],
)
def test_options_that_would_do_nothing_are_not_offered(capsys, command, option):
    code, out, _ = invoke(capsys, "kubevirt", command, "--help")
    assert code == 0 and f"{option[0]} " not in out
    code, _, err = invoke(capsys, "kubevirt", command, "vm1", *option)
    assert code == 2 and f"No such option '{option[0]}'" in err


@pytest.mark.parametrize("command", CHANGING)
def test_o_is_the_output_format_and_never_the_traces_directory(capsys, command):
    code, out, _ = invoke(capsys, "kubevirt", command, "--help")
    assert code == 0
    assert "-o, --output-format [yaml|json]" in out
    assert "--dry-run" in out
    assert "-o, --output " not in out
    assert ("--output DIR" in out) == (command in ("run", "fetch"))


def test_a_directory_given_to_o_points_at_output(capsys):
    code, _, err = invoke(capsys, "kubevirt", "run", "strace", "vm1", "-o", "./traces")
    assert code == 2
    assert "-o is --output-format here (the traces' directory is --output DIR)" in err


def test_fetch_reads_the_pvc_named_with_pvc(tmp_path, capsys):
    # After `run --pvc tools` nothing is recorded: fetch must be told the PVC.
    with KubeServer() as server:
        server.put(KUBEVIRT, "kubevirt", kubevirt_cr("v1.3.0"))
        server.put(VM, "ns1", example_vm("vm1", "ns1", running=False))
        config = str(server.kubeconfig(tmp_path / "kc", namespace="ns1"))
        code, out, err = invoke(
            capsys,
            "kubevirt",
            "fetch",
            "vm1",
            "--kubeconfig",
            config,
            "--pvc",
            "tools",
            "--dry-run",
        )
        assert not server.errors
    assert code == 0, err
    (pod,) = yaml.safe_load_all(out)
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]]
    assert claims == ["tools"]
