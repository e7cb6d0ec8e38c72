"""The local cluster's certificates, keys, tokens and kubeconfigs (made once, then reused)."""

from __future__ import annotations

import base64
import secrets
import tempfile
from pathlib import Path
from typing import Any

import yaml

from stronghold_testbed import node_net, paths, procs

# The node is named by its address: a kubelet takes an IP given as its hostname as the
# node's InternalIP without asking that the host own it (the address is in the node's
# network namespace, node_net), which a --node-ip must.
NODE_NAME = node_net.NODE_ADDR
APISERVER_URL = "https://127.0.0.1:6443"

# Token identities: name -> (user, groups). Static tokens keep the local cluster simple;
# ServiceAccounts get real tokens from the TokenRequest API (see cluster.sa_kubeconfig).
IDENTITIES: dict[str, tuple[str, str]] = {
    "admin": ("stronghold-admin", "system:masters"),
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
}

KUBELET_SANS = f"IP:{node_net.NODE_ADDR},IP:127.0.0.1"
METRICS_SANS = "IP:127.0.0.1,DNS:localhost,DNS:metrics-server.kube-system.svc"
_SERVER_SANS = (
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
    "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
)


def _openssl(*args: str) -> None:
    procs.run(["openssl", *args])


def _ca(name: str, cn: str, d: Path | None = None) -> None:
    d = d or paths.pki_dir()
    if (d / f"{name}.crt").exists():
        return
    _openssl(
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-newkey",
        "rsa:2048",
        "-sha256",
        "-days",
        "3650",
        "-keyout",
        str(d / f"{name}.key"),
        "-out",
        str(d / f"{name}.crt"),
        "-subj",
        f"/CN={cn}",
    )


def _leaf(name: str, ca: str, cn: str, sans: str | None, usage: str, d: Path | None = None) -> None:
    d = d or paths.pki_dir()
    crt = d / f"{name}.crt"
    if crt.exists():
        if sans is None or _sans(crt) == set(sans.split(",")):
            return
        crt.unlink()  # made by an older testbed with other names: make it again
    ext = [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if sans:
        ext.append(f"subjectAltName={sans}")
    with tempfile.TemporaryDirectory() as tmp:
        csr = Path(tmp) / "req.csr"
        extfile = Path(tmp) / "ext.cnf"
        extfile.write_text("\n".join(ext) + "\n")
        _openssl(
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(csr),
            "-subj",
            f"/CN={cn}",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(d / f"{ca}.crt"),
            "-CAkey",
            str(d / f"{ca}.key"),
            "-CAcreateserial",
            "-sha256",
            "-days",
            "3650",
            "-out",
            str(d / f"{name}.crt"),
            "-extfile",
            str(extfile),
        )


def _sans(crt: Path) -> set[str]:
    text = procs.run(["openssl", "x509", "-in", str(crt), "-noout", "-ext", "subjectAltName"])
    names = text.splitlines()[-1].strip().split(", ") if "Alternative" in text else []
    return {n.replace("IP Address:", "IP:") for n in names}


def _tokens() -> dict[str, str]:
    d = paths.pki_dir()
    f = d / "tokens.csv"
    tokens: dict[str, str] = {}
    if f.exists():
        for line in f.read_text().splitlines():
            token, user = line.split(",")[:2]
            for key, (u, _) in IDENTITIES.items():
                if u == user:
                    tokens[key] = token
    if set(tokens) != set(IDENTITIES):
        tokens = {key: secrets.token_hex(24) for key in IDENTITIES}
        lines = [
            f'{tokens[k]},{u},{u},"{g}"' if g else f"{tokens[k]},{u},{u}"
            for k, (u, g) in IDENTITIES.items()
        ]
        f.write_text("\n".join(lines) + "\n")
        f.chmod(0o600)
    return tokens


def kubeconfig(token: str, user: str, server: str = APISERVER_URL) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "stronghold",
                "cluster": {
                    "server": server,
                    "certificate-authority": str(paths.pki_dir() / "ca.crt"),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "stronghold", "context": {"cluster": "stronghold", "user": user}}],
        "current-context": "stronghold",
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.rename(path)
    return path


# The operator's admission webhook: loopback (the operator as a local process, the local
# overlay's host network) and the Service of manifests/components/webhook.
WEBHOOK_SANS = (
    "IP:127.0.0.1,DNS:localhost,DNS:stronghold-operator-webhook.stronghold-system.svc,"
    "DNS:stronghold-operator-webhook.stronghold-system.svc.cluster.local"
)


def webhook_tls(dest: Path, sans: str = WEBHOOK_SANS) -> Path:
    """A CA of its own and the webhook's serving certificate in ``dest``, laid out as
    cert-manager writes its Secret (tls.crt, tls.key, ca.crt; ca.key for nothing else)."""
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o700)
    _ca("ca", "stronghold-webhook-ca", dest)
    _leaf("tls", "ca", "stronghold-operator-webhook", sans, "serverAuth", dest)
    return dest


def webhook_secret(
    dest: Path, name: str = "stronghold-operator-webhook-tls", namespace: str = "stronghold-system"
) -> dict[str, Any]:
    """The Secret manifests/components/webhook mounts, made from :func:`webhook_tls`'s files."""
    data = {k: base64.b64encode((dest / k).read_bytes()).decode() for k in _SECRET_KEYS}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


_SECRET_KEYS = ("tls.crt", "tls.key", "ca.crt")


def ensure() -> dict[str, Path]:
    """Create whatever is missing; return the kubeconfig path of each identity."""
    d = paths.pki_dir()
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    _ca("ca", "stronghold-ca")
    _ca("front-proxy-ca", "stronghold-front-proxy-ca")
    _leaf("apiserver", "ca", "kube-apiserver", _SERVER_SANS, "serverAuth")
    _leaf("front-proxy-client", "front-proxy-ca", "front-proxy-client", None, "clientAuth")
    # The apiserver verifies an aggregated API server by the Service name it proxies through.
    _leaf("metrics-server", "ca", "metrics-server", METRICS_SANS, "serverAuth")
    # apiserver -> kubelet (logs, exec, port-forward): both ends verified, as on a real node.
    _leaf("kubelet-server", "ca", NODE_NAME, KUBELET_SANS, "serverAuth")
    _leaf("apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client", None, "clientAuth")
    if not (d / "sa.key").exists():
        _openssl("genrsa", "-out", str(d / "sa.key"), "2048")
        _openssl("rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub"))
    tokens = _tokens()
    out: dict[str, Path] = {}
    for key, (user, _) in IDENTITIES.items():
        path = paths.admin_kubeconfig() if key == "admin" else d / f"{key}.kubeconfig"
        out[key] = write_kubeconfig(path, kubeconfig(tokens[key], user))
    return out
