"""Static checks of what users install: kustomize output of manifests/ and the CRDs.

Renders with ``kubectl kustomize`` (no cluster involved).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.podsecurity import violations

REPO = Path(__file__).resolve().parents[2]


def render(path: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is needed to render manifests/ (Debian: kubernetes-client)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / path)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("variant", ["manifests", "manifests/overlays/namespaced"])
def test_operator_pod_is_restricted(variant: str) -> None:
    (deploy,) = by_kind(render(variant), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert violations(pod) == []
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "memory" in container["resources"]["limits"]


@pytest.mark.parametrize("variant", ["manifests", "manifests/overlays/namespaced"])
def test_two_replicas_elect_a_leader_and_roll_without_a_gap(variant: str) -> None:
    docs = render(variant)
    (deploy,) = by_kind(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert "--leader-elect" in container["args"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    # The Lease: its own namespace only, no list or watch.
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader")]
    assert role["metadata"]["namespace"] == deploy["metadata"]["namespace"]
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]


def test_the_pdb_component_covers_the_operator_pods() -> None:
    docs = render("examples/kustomize-pdb")
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    (deploy,) = by_kind(docs, "Deployment")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]


def test_local_overlay_is_one_replica_on_the_host_network() -> None:
    (deploy,) = by_kind(render("manifests/overlays/local"), "Deployment")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in deploy["spec"]["template"]["spec"]["containers"][0]["args"]


def test_local_overlay_differs_only_by_host_network_and_loopback() -> None:
    (deploy,) = by_kind(render("manifests/overlays/local"), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert violations(pod, allow_host_network=True) == []
    args = " ".join(pod["containers"][0]["args"])
    assert "127.0.0.1" in args and "0.0.0.0" not in args


@pytest.mark.parametrize("variant", ["manifests", "manifests/overlays/namespaced"])
def test_rbac_is_least_privilege(variant: str) -> None:
    docs = render(variant)
    roles = by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            if "secrets" in rule["resources"]:
                assert rule["verbs"] == ["get"], rule
            assert "escalate" not in rule["verbs"] and "bind" not in rule["verbs"]
    # Every Role is bound to the operator's ServiceAccount and nothing else.
    for binding in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": "stronghold-operator",
                "namespace": "stronghold-system",
            }
        ]


def test_network_policy_admits_only_metrics_and_liveness() -> None:
    (np,) = by_kind(render("manifests"), "NetworkPolicy")
    ports = sorted(p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"])
    assert ports == [8080, 9090]
    assert np["spec"]["policyTypes"] == ["Ingress"]


def test_every_crd_is_structural_with_status_and_category() -> None:
    files = sorted((REPO / "crds").glob("*.yaml"))
    assert files, "crds/ is empty"
    for f in files:
        crd = yaml.safe_load(f.read_text())
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert crd["spec"]["group"] == "ops.stronghold.io"
        assert "stronghold" in crd["spec"]["names"]["categories"]
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1"
        assert version["subresources"]["status"] == {}
        assert version["additionalPrinterColumns"]
        schema = version["schema"]["openAPIV3Schema"]
        assert "status" in schema["properties"]
        _check_described(schema["properties"]["spec"], f"{f.name}:spec")
        # 1.20 has no CEL: a rule would be silently dropped.
        assert "x-kubernetes-validations" not in f.read_text()


def _check_described(node: dict[str, Any], where: str) -> None:
    """Every field carries a description, so `kubectl explain` helps the user."""
    assert node.get("description"), f"{where} has no description"
    for name, child in (node.get("properties") or {}).items():
        _check_described(child, f"{where}.{name}")
    items = node.get("items")
    if isinstance(items, dict) and items.get("properties"):
        for name, child in items["properties"].items():
            _check_described(child, f"{where}[].{name}")


def test_webhook_overlay_keeps_the_pod_restricted() -> None:
    (deploy,) = by_kind(render("manifests/overlays/webhook"), "Deployment")
    assert violations(deploy["spec"]["template"]["spec"]) == []


def test_webhook_component_matches_the_operator() -> None:
    """The configuration calls each kind's handler, on the port the operator serves, with the
    certificate the Deployment mounts, and cert-manager issues it for the Service's name."""
    from stronghold_operator.models.admission import DEFAULT_CERT_DIR
    from stronghold_operator.services.admission import CHECKS

    docs = render("manifests/overlays/webhook")
    (vwc,) = by_kind(docs, "ValidatingWebhookConfiguration")
    (deploy,) = by_kind(docs, "Deployment")
    (np,) = by_kind(docs, "NetworkPolicy")
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("webhook"))
    certs = {c["metadata"]["name"]: c for c in by_kind(docs, "Certificate")}
    handlers = (REPO / "operator/stronghold_operator/handlers/admission.py").read_text()

    paths = set()
    for hook in vwc["webhooks"]:
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"  # so `kubectl apply --dry-run=server` calls it
        assert hook["failurePolicy"] == "Fail"  # argued in docs/admission.md
        assert hook["timeoutSeconds"] <= 5
        (rule,) = hook["rules"]
        assert rule["apiGroups"] == ["ops.stronghold.io"]
        assert rule["operations"] == ["CREATE", "UPDATE"]  # never DELETE: no stuck deletes
        (plural,) = rule["resources"]  # the object only: status writes never go through it
        client = hook["clientConfig"]["service"]
        assert client["path"] == f"/validate-{plural}"
        assert f'id="validate-{plural}"' in handlers
        assert (client["name"], client["port"]) == (service["metadata"]["name"], 443)
        paths.add(plural)
    assert paths == set(CHECKS)

    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--webhook-port=9443" in container["args"]
    assert {"name": "webhook", "containerPort": 9443} in container["ports"]
    # Only the leader serves it: Ready = listening on it, so the Service skips followers.
    assert container["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "webhook-tls")
    assert mount["mountPath"] == DEFAULT_CERT_DIR and mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert (
        volume["secret"]["secretName"] == certs["stronghold-operator-webhook"]["spec"]["secretName"]
    )
    assert 9443 in [p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]]

    svc = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert svc in certs["stronghold-operator-webhook"]["spec"]["dnsNames"]
    annotation = vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert annotation == "stronghold-system/stronghold-operator-webhook"
    # The testbed's certificate (the local path) names the same Service.
    from stronghold_testbed.pki import WEBHOOK_SANS

    assert f"DNS:{svc}" in WEBHOOK_SANS.split(",")


@pytest.mark.parametrize(
    "variant", ["manifests/rbac/remediation", "manifests/rbac/remediation-namespaced"]
)
def test_the_remediation_rbac_component_is_optional_and_only_patches_workloads(
    variant: str,
) -> None:
    docs = render(variant)
    (role,) = by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["patch"]}
    ]
    (binding,) = by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")
    assert binding["subjects"][0]["name"] == "stronghold-operator"
    # Not part of the default install: the operator's own roles never patch workloads.
    for default in ("manifests", "manifests/overlays/namespaced"):
        for r in by_kind(render(default), "ClusterRole") + by_kind(render(default), "Role"):
            for rule in r["rules"]:
                if {"deployments", "statefulsets"} & set(rule["resources"]):
                    assert "patch" not in rule["verbs"], (r["metadata"]["name"], rule)
