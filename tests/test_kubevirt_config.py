"""Finding the cluster as kubectl does: --kubeconfig, $KUBECONFIG, --context, the
context's namespace, -n, and the pod's in-cluster service account."""

from __future__ import annotations

import pytest
import yaml
from kubernetes.config import incluster_config

from virt_debug.backends.kubevirt import client
from virt_debug.backends.kubevirt.client import Connection, connect
from virt_debug.errors import KubernetesError


def write_kubeconfig(path, current="one"):
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "a", "cluster": {"server": "http://127.0.0.1:1"}},
            {"name": "b", "cluster": {"server": "http://127.0.0.2:2"}},
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {
                "name": "one",
                "context": {"cluster": "a", "user": "u", "namespace": "ns-a"},
            },
            {"name": "two", "context": {"cluster": "b", "user": "u"}},
        ],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_current_context_and_its_namespace(tmp_path):
    kube = connect(Connection(kubeconfig=write_kubeconfig(tmp_path / "k")))
    assert kube.host == "http://127.0.0.1:1"
    assert kube.namespace == "ns-a"


def test_context_flag_and_default_namespace(tmp_path):
    kube = connect(
        Connection(kubeconfig=write_kubeconfig(tmp_path / "k"), context="two")
    )
    assert kube.host == "http://127.0.0.2:2"
    assert kube.namespace == "default"


def test_namespace_flag_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path / "k"))
    assert connect(Connection(namespace="mine")).namespace == "mine"


def test_in_cluster_service_account(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("not empty")
    (tmp_path / "namespace").write_text("pod-ns\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(
        incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token")
    )
    monkeypatch.setattr(
        incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt")
    )
    monkeypatch.setattr(
        client, "SERVICE_ACCOUNT_NAMESPACE", str(tmp_path / "namespace")
    )
    kube = connect(Connection())
    assert kube.host == "https://10.0.0.1:443"
    assert kube.namespace == "pod-ns"


def test_nothing_to_connect_to_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(KubernetesError, match="--kubeconfig"):
        connect(Connection())


def test_unreachable_server_is_a_clear_error(tmp_path):
    kube = connect(Connection(kubeconfig=write_kubeconfig(tmp_path / "k")))
    kube.timeout = 2
    with pytest.raises(KubernetesError, match="cannot reach the API server"):
        kube.get("/api/v1/namespaces/x/pods/y")
