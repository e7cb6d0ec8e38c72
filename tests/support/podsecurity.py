"""The restricted Pod Security Standard, checked on a pod spec (1.20 has no PodSecurity
admission to do it for us). Returns the violations, empty when the spec complies.

Follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted).
``allow_host_network`` exists for the local testbed overlay only, which must use the host
network because the testbed has no pod network.
"""

from __future__ import annotations

from typing import Any

_ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def violations(pod: dict[str, Any], *, allow_host_network: bool = False) -> list[str]:
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    if pod.get("hostNetwork") and not allow_host_network:
        out.append("hostNetwork")
    for key in ("hostPID", "hostIPC"):
        if pod.get(key):
            out.append(key)
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= _ALLOWED_VOLUMES:
            out.append(f"volume {vol['name']}: {sorted(kinds - _ALLOWED_VOLUMES)}")
    containers = (pod.get("initContainers") or []) + (pod.get("containers") or [])
    if not containers:
        out.append("no containers")
    for c in containers:
        out += _container_violations(c, psc)
    return out


def _container_violations(c: dict[str, Any], psc: dict[str, Any]) -> list[str]:
    """One container, with the pod's securityContext as the default."""
    out: list[str] = []
    sc = c.get("securityContext") or {}
    name = c.get("name", "?")
    if sc.get("privileged"):
        out.append(f"{name}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{name}: allowPrivilegeEscalation must be false")
    if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
        out.append(f"{name}: runAsNonRoot must be true")
    if sc.get("runAsUser", psc.get("runAsUser")) == 0:
        out.append(f"{name}: runAsUser 0")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{name}: capabilities.drop must include ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        out.append(f"{name}: adds capabilities {caps.get('add')}")
    for port in c.get("ports") or []:
        if port.get("hostPort"):
            out.append(f"{name}: hostPort")
    return out
