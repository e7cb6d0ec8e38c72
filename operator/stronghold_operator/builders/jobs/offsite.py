"""Off-site copies to S3-compatible object storage, run by the backup Job (standard library).

The Job runs in a user-chosen image: a client such as boto3 or rclone may not be there, so
the few S3 calls it needs (PUT, HEAD, DELETE, ListObjectsV2) are signed here with AWS
Signature Version 4 over ``http.client``. Python 3.7 syntax, like the helper beside it.

Integrity, one sha256 from the dump to the copy: every PUT carries the archive's sha256 from
its manifest twice, as ``x-amz-content-sha256`` (part of the signature) and as
``x-amz-checksum-sha256``; the server hashes what it receives and refuses the object when
either differs (a file that changed on disk since it was verified never lands). A HEAD with
``x-amz-checksum-mode: ENABLED`` then reads the server's stored checksum, which must equal
the local one; only then is the copy reported, with the time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import os
import ssl
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import IO, Any

from stronghold_operator.logic.retention import Archive, file_time, plan_retention

TIMEOUT = 30.0
MANIFEST = ".manifest.json"
MAX_PUT = 5 << 30  # S3's limit for one PUT (multipart uploads are not implemented)
MAX_REPORTED = 12  # copies named in the termination message (< 4 KiB with the rest)


class OffsiteError(Exception):
    """An S3 call failed: ``reason`` is the CamelCase word the status shows."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _utc() -> datetime:
    return datetime.now(timezone.utc)  # noqa: UP017 (datetime.UTC needs Python 3.11)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _quote(s: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(s, safe=safe)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_sha256: str,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    when: datetime,
) -> dict[str, str]:
    """The request's headers with ``x-amz-date``, ``x-amz-content-sha256`` and SigV4
    ``Authorization`` added. ``path`` is already URI-encoded; every header given is signed."""
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    out = {k.lower(): str(v).strip() for k, v in headers.items()}
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_sha256
    names = sorted(out)
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
    canonical = "\n".join(
        [
            method,
            path,
            canonical_query,
            "".join(f"{n}:{out[n]}\n" for n in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(
        _hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), day), region), "s3"), "aws4_request"
    )
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _tag(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> str:
    for c in el:
        if _tag(c) == name:
            return c.text or ""
    return ""


def _reason(status: int, code: str) -> str:
    if code in ("BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"):
        return "OffsiteChecksumMismatch"
    if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied") or status == 403:
        return "OffsiteAuthFailed"
    if code == "NoSuchBucket":
        return "OffsiteBucketMissing"
    return "OffsiteCopyFailed"


class Store:
    """One bucket on an S3-compatible endpoint, path-style (``<endpoint>/<bucket>/<key>``)."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        region: str,
        access_key: str,
        secret_key: str,
        clock: Callable[[], datetime] = _utc,
    ) -> None:
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise OffsiteError("OffsiteCopyFailed", f"endpoint {endpoint!r} is not an http(s) URL")
        self.https = url.scheme == "https"
        self.host = url.hostname
        self.port = url.port or (443 if self.https else 80)
        self.netloc = url.netloc
        self.base = url.path.rstrip("/")
        self.bucket = bucket
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self.clock = clock

    def _path(self, key: str = "") -> str:
        p = f"{self.base}/{_quote(self.bucket)}"
        return p + "/" + _quote(key, safe="-_.~/") if key else p

    def request(
        self,
        method: str,
        key: str = "",
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: IO[bytes] | None = None,
        payload_sha256: str = EMPTY_SHA256,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-case headers, body); a refused or failed call is OffsiteError."""
        q = dict(query or {})
        hdrs = dict(headers or {})
        hdrs["host"] = self.netloc
        signed = sign(
            method,
            self._path(key),
            q,
            hdrs,
            payload_sha256,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            when=self.clock(),
        )
        url = self._path(key) + (
            "?" + urllib.parse.urlencode(q, quote_via=urllib.parse.quote) if q else ""
        )
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=TIMEOUT, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        try:
            conn.request(method, url, body=body, headers=signed)
            resp = conn.getresponse()
            data = resp.read()
            got = {k.lower(): v for k, v in resp.getheaders()}
        except (OSError, http.client.HTTPException) as exc:
            # Refused, reset, timed out, name unknown: the store cannot be reached now.
            raise OffsiteError("OffsiteUnreachable", f"{self.host}:{self.port}: {exc}") from None
        finally:
            conn.close()
        if resp.status >= 300 and not (method == "HEAD" and resp.status == 404):
            code, msg = "", ""
            try:
                root = ET.fromstring(data) if data else None
                if root is not None:
                    code, msg = _child(root, "Code"), _child(root, "Message")
            except ET.ParseError:
                pass
            what = f"{method} {self.bucket}/{key}".rstrip("/")
            raise OffsiteError(
                _reason(resp.status, code), f"{what}: HTTP {resp.status} {code} {msg}".strip()
            )
        return resp.status, got, data

    def list(self, prefix: str, page: int = 1000) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under ``prefix``, following ListObjectsV2 pages."""
        token = ""
        while True:
            q = {"list-type": "2", "prefix": prefix, "max-keys": str(page)}
            if token:
                q["continuation-token"] = token
            _, _, data = self.request("GET", query=q)
            root = ET.fromstring(data)
            for el in root:
                if _tag(el) == "Contents":
                    yield _child(el, "Key"), int(_child(el, "Size") or 0)
            token = _child(root, "NextContinuationToken")
            if _child(root, "IsTruncated") != "true" or not token:
                return

    def put_file(self, key: str, path: str, sha256_hex: str, content_type: str) -> None:
        size = os.path.getsize(path)
        if size > MAX_PUT:
            raise OffsiteError(
                "OffsiteTooLarge", f"{key}: {size} bytes; one PUT takes at most 5 GiB"
            )
        headers = {
            "content-length": str(size),
            "content-type": content_type,
            "x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(sha256_hex)).decode(),
            "x-amz-meta-sha256": sha256_hex,
        }
        with open(path, "rb") as f:
            self.request("PUT", key, headers=headers, body=f, payload_sha256=sha256_hex)

    def stored_sha256(self, key: str) -> str | None:
        """The server's own sha256 of the object (hex), None if it does not exist."""
        status, headers, _ = self.request("HEAD", key, headers={"x-amz-checksum-mode": "ENABLED"})
        if status == 404:
            return None
        b64 = headers.get("x-amz-checksum-sha256", "")
        if not b64:
            raise OffsiteError(
                "OffsiteChecksumUnavailable",
                f"{self.bucket}/{key}: the server returns no x-amz-checksum-sha256",
            )
        return base64.b64decode(b64).hex()

    def delete(self, key: str) -> None:
        self.request("DELETE", key)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _copy(store: Store, local: str, key: str, sha: str, content_type: str) -> None:
    """Upload unless the server already holds these bytes; then prove it holds them."""
    if store.stored_sha256(key) != sha:
        store.put_file(key, local, sha, content_type)
        got = store.stored_sha256(key)
        if got != sha:
            raise OffsiteError(
                "OffsiteChecksumMismatch",
                f"{store.bucket}/{key}: server sha256 {str(got)[:16]}, local {sha[:16]}",
            )


def sync(
    dest: str,
    verified: Mapping[str, str],
    store: Store,
    prefix: str,
    days: int,
    min_keep: int,
    now: datetime,
) -> dict[str, Any]:
    """Copy every verified local archive (file -> sha256) missing off-site, then apply the
    local retention rules to the bucket. Returns the report's ``offsite`` object."""
    report: dict[str, Any] = {"bucket": store.bucket, "prefix": prefix}
    copies: dict[str, str] = {}
    missing: list[str] = []
    error: OffsiteError | None = None
    for name in sorted(verified, reverse=True):  # newest first: it matters most
        try:
            _copy(
                store,
                os.path.join(dest, name),
                prefix + name,
                verified[name],
                "application/octet-stream",
            )
            man = os.path.join(dest, name + MANIFEST)
            _copy(store, man, prefix + name + MANIFEST, sha256_file(man), "application/json")
            copies[name] = _iso(_utc())
        except OffsiteError as exc:
            missing.append(name)
            error = error or exc
            if exc.reason in ("OffsiteUnreachable", "OffsiteAuthFailed", "OffsiteBucketMissing"):
                missing += [
                    n
                    for n in sorted(verified, reverse=True)
                    if n not in copies and n not in missing
                ]
                break
    pruned: list[str] = []
    if error is None:
        try:
            pruned = _prune(store, prefix, days, min_keep, now)
        except OffsiteError as exc:
            error = exc
    report["copies"] = dict(sorted(copies.items(), reverse=True)[:MAX_REPORTED])
    report["copiedCount"] = len(copies)
    report["missing"] = missing[:MAX_REPORTED]
    report["pruned"] = pruned[:MAX_REPORTED]
    report["prunedCount"] = len(pruned)
    if error is not None:
        report["reason"], report["message"] = error.reason, error.message[:300]
    return report


def _prune(store: Store, prefix: str, days: int, min_keep: int, now: datetime) -> list[str]:
    """The local rules on the bucket: an archive counts as verified there when its manifest
    was copied too (the last step of a copy whose checksum was compared)."""
    keys = {k[len(prefix) :] for k, _ in store.list(prefix)}
    found = []
    for name in keys:
        taken = file_time(name)
        if taken is not None:
            found.append(Archive(name, taken, name + MANIFEST in keys))
    plan = plan_retention(found, now, days, min_keep)
    for name in plan.delete:
        store.delete(prefix + name)
        if name + MANIFEST in keys:
            store.delete(prefix + name + MANIFEST)
    return list(plan.delete)


def _key(name: str) -> str:
    """One credential from the mounted Secret (``OFFSITE_KEYS``), without its line end."""
    path = os.path.join(os.environ.get("OFFSITE_KEYS", "/var/run/stronghold/offsite"), name)
    try:
        with open(path) as f:
            return f.read().rstrip("\r\n")
    except OSError as exc:
        raise OffsiteError("OffsiteCredentialsUnreadable", f"{name}: {exc.strerror}") from None


def configured() -> bool:
    return bool(os.environ.get("OFFSITE_ENDPOINT"))


def run(dest: str, verified: Mapping[str, str]) -> dict[str, Any]:
    """:func:`sync` with the Job's environment (credentials from the mounted Secret)."""
    e = os.environ
    prefix = e.get("OFFSITE_PREFIX", "")
    secret = ""
    try:
        secret = _key("secret-access-key")
        store = Store(
            e["OFFSITE_ENDPOINT"],
            e["OFFSITE_BUCKET"],
            e.get("OFFSITE_REGION") or "us-east-1",
            _key("access-key-id"),
            secret,
        )
        report = sync(
            dest,
            verified,
            store,
            prefix,
            int(e.get("RETENTION_DAYS", "30")),
            int(e.get("MIN_KEEP", "3")),
            _utc(),
        )
    except (OffsiteError, OSError, ValueError, ET.ParseError) as exc:
        reason = exc.reason if isinstance(exc, OffsiteError) else "OffsiteCopyFailed"
        report = {
            "bucket": e.get("OFFSITE_BUCKET", ""),
            "prefix": prefix,
            "copies": {},
            "missing": sorted(verified, reverse=True)[:MAX_REPORTED],
            "reason": reason,
            "message": str(exc)[:300],
        }
    if secret and "message" in report:  # never echo the key, whatever a server said
        report["message"] = report["message"].replace(secret, "******")
    return report
