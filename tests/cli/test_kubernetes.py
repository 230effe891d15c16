"""deploy/kubernetes/: the manifests are valid Kubernetes objects and the sidecar configuration inside passes check.

Validation is offline, against the OpenAPI schemas of a released Kubernetes that the
`kubernetes-validate` package ships (strict: an unknown field is an error, as `kubectl apply
--validate=strict` would say).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .test_packaging import ADMIN_TOKEN, _env, write_demo_pki

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest release still widely run; every field used exists there and after


def _documents(name: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all((KUBERNETES / name).read_text()) if document]


def _by_kind(name: str) -> dict[str, dict[str, Any]]:
    return {document["kind"]: document for document in _documents(name)}


@pytest.mark.parametrize("name", ["edge.yaml", "pod.yaml"])
@pytest.mark.parametrize("version", [KUBERNETES_VERSION, kubernetes_validate.latest_version()])
def test_manifests_are_valid_kubernetes_objects(name: str, version: str) -> None:
    for document in _documents(name):
        kubernetes_validate.validate(document, version, strict=True)  # raises ValidationError


def test_validation_catches_a_mistake() -> None:
    deployment = _by_kind("edge.yaml")["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_edge_config_passes_check(tmp_path: Path) -> None:
    configmap = _by_kind("edge.yaml")["ConfigMap"]
    secret = _by_kind("edge.yaml")["Secret"]
    for file_name, text in configmap["data"].items():  # /etc/sidecar in the pod
        (tmp_path / file_name).write_text(text)
    write_demo_pki(tmp_path / "pki")  # the Secret's files: /etc/sidecar/pki in the pod
    (tmp_path / "pki" / "admin.token").write_text(ADMIN_TOKEN)
    for key in secret["stringData"]:
        assert (tmp_path / "pki" / key).exists(), f"the test PKI lacks {key}"
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["reload"]["watch"] is True  # the kubelet's file swaps are picked up by themselves
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "check", "-c", str(tmp_path / "config.yaml")],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_edge_fleet_shape() -> None:
    objects = _by_kind("edge.yaml")
    config = yaml.safe_load(objects["ConfigMap"]["data"]["config.yaml"])
    deployment, service = objects["Deployment"], objects["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    # Behind a balancer that speaks PROXY protocol, and only from its addresses.
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"] == "*"
    assert all(listener["accept_proxy"] for listener in config["listeners"])
    assert service["spec"]["selector"] == labels
    # Probes are httpGet on the admin port, which answers them without the token.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert config["admin"]["health_without_token"] is True
    assert str(config["admin"]["listen"]).endswith(f":{ports['admin']}")
    # The balancer health-checks /readyz too: a draining pod gets no new partner.
    annotations = service["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"] == "/readyz"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"] == str(ports["admin"])
    # A fleet: spread, protected from voluntary disruptions, scaled on CPU; drains finish in time.
    assert pod["affinity"]["podAntiAffinity"]
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["minReplicas"] == deployment["spec"]["replicas"]
    assert "cpu" in container["resources"]["requests"]  # the HPA's utilisation is of the request
    assert config["limits"]["drain_timeout"] < pod["terminationGracePeriodSeconds"]
