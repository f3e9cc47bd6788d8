"""reference/mod_md-formats.md §1 and §2 as assertions: keys, order, types, formats.

`check_md(obj)` fails with the offending key path when an md-status object
deviates from mod_md's; `check_cert(obj, cert)` also compares every value
with the certificate itself, computed here independently of apache-md.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization

RFC1123 = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|"
                     r"Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$")
WINDOW = re.compile(r"^(\d+%|\d+(d|h|mi|s|ms))$")
B64URL = re.compile(r"^[A-Za-z0-9_-]+$")

# §1.3, in mod_md's order; True = always present
MD_KEYS = [("name", True), ("domains", True), ("contacts", True), ("transitive", True),
           ("ca", True), ("privkey", False), ("state", True), ("state-descr", False),
           ("renew-mode", True), ("renew-window", True), ("warn-window", True),
           ("require-https", False), ("must-staple", True), ("proto", True),
           ("cert-files", False), ("pkey-files", False), ("stapling", True),
           ("cmd-dns-01", False), ("proxy-url", False), ("ca-certs", False),
           ("proxy-ca-certs", False), ("eab", False), ("profile", False),
           ("profile-mandatory", True), ("ari-renewals", True),
           ("cert", True), ("renew-at", False), ("watched", True), ("renew", False),
           ("renewal", False), ("error", False)]
# §1.5
JOB_KEYS = [("name", True), ("finished", True), ("notified", True), ("notified-renewed", True),
            ("next-run", False), ("last-run", False), ("valid-from", False), ("errors", True),
            ("last", False), ("log", False), ("cert", True)]
CERT_KEYS = ["issuer-name", "issuer-uri", "valid", "serial", "sha256-fingerprint",
             "ari-cert-id", "ocsp"]
APACHE_MD_EXTRAS = {"activation", "next-check", "last-renewal"}


def assert_mod_md_json_text(body: str) -> None:
    """§0: jansson's 2-space indent, no trailing newline."""
    assert body == json.dumps(json.loads(body), indent=2, ensure_ascii=False), \
        "not mod_md's JSON layout (2-space indent, no trailing newline)"


def check_keys(obj: dict, spec: list[tuple[str, bool]], where: str, extras=()) -> None:
    order = [k for k, _ in spec]
    for key, required in spec:
        assert not required or key in obj, f"{where}: missing key {key!r}"
    known = [k for k in obj if k in order]
    assert known == sorted(known, key=order.index), f"{where}: keys out of order: {known}"
    unknown = [k for k in obj if k not in order]
    assert set(unknown) <= set(extras), f"{where}: unexpected keys {unknown}"
    if unknown:  # extras come after mod_md's keys
        last_known = max(list(obj).index(k) for k in known)
        assert all(list(obj).index(k) > last_known for k in unknown), \
            f"{where}: apache-md keys {unknown} must follow mod_md's keys"


def check_ts(value, where: str) -> None:
    assert isinstance(value, str) and RFC1123.match(value), f"{where}: not an RFC 1123 date: {value!r}"


def check_period(value, where: str) -> None:
    assert isinstance(value, dict) and list(value) == ["from", "until"], f"{where}: {value!r}"
    check_ts(value["from"], f"{where}.from")
    check_ts(value["until"], f"{where}.until")


def check_certs(certs: dict, where: str, ocsp_allowed: bool = True) -> None:
    assert isinstance(certs, dict), where
    for key_type, c in certs.items():
        if key_type == "valid":
            check_period(c, f"{where}.valid")
            continue
        w = f"{where}.{key_type}"
        assert [k for k in c if k in CERT_KEYS] == [k for k in CERT_KEYS if k in c], \
            f"{w}: keys out of order: {list(c)}"
        assert set(c) <= set(CERT_KEYS) - (set() if ocsp_allowed else {"ocsp"}), f"{w}: {list(c)}"
        for key in ("valid", "serial", "sha256-fingerprint"):
            assert key in c, f"{w}: missing {key}"
        check_period(c["valid"], f"{w}.valid")
        assert re.fullmatch(r"[0-9A-F]+", c["serial"]) and not c["serial"].startswith("00"), \
            f"{w}.serial: {c['serial']!r}"
        assert re.fullmatch(r"[0-9a-f]{64}", c["sha256-fingerprint"]), f"{w}.sha256-fingerprint"
        if "ari-cert-id" in c:
            aki, _, serial = c["ari-cert-id"].partition(".")
            assert B64URL.match(aki) and B64URL.match(serial), f"{w}.ari-cert-id"
    if len([k for k in certs if k != "valid"]) and "valid" in certs:
        check_period(certs["valid"], f"{where}.valid")


def check_job(job: dict, where: str, with_log: bool) -> None:
    check_keys(job, JOB_KEYS, where, extras={"ca-url"})
    for key in ("finished", "notified", "notified-renewed"):
        assert isinstance(job[key], bool), f"{where}.{key}"
    for key in ("next-run", "last-run", "valid-from"):
        if key in job:
            check_ts(job[key], f"{where}.{key}")
    assert isinstance(job["errors"], int) and not isinstance(job["errors"], bool)
    if "last" in job:
        last = job["last"]
        assert isinstance(last.get("status"), int), f"{where}.last.status"
        for key in ("status-description", "problem", "detail", "activity"):
            assert key not in last or isinstance(last[key], str), f"{where}.last.{key}"
    if with_log:
        entries = job.get("log", {}).get("entries", [])
        assert entries, f"{where}: no log"
        for i, e in enumerate(entries):
            assert list(e)[:2] == ["when", "type"], f"{where}.log[{i}]: {e}"
            check_ts(e["when"], f"{where}.log[{i}].when")
            assert set(e) <= {"when", "type", "status", "detail"}, f"{where}.log[{i}]: {e}"
            assert all(isinstance(e[k], str) for k in e), f"{where}.log[{i}]: {e}"
        from email.utils import parsedate_to_datetime
        times = [parsedate_to_datetime(e["when"]) for e in entries]
        assert times == sorted(times, reverse=True), f"{where}: log is not newest first"
    else:
        assert "log" not in job, f"{where}: the list form carries no job log"
    check_certs(job["cert"], f"{where}.cert", ocsp_allowed=False)


def check_md(obj: dict, with_log: bool) -> None:
    where = obj.get("name", "?")
    check_keys(obj, MD_KEYS, where, extras=APACHE_MD_EXTRAS)
    assert isinstance(obj["name"], str)
    assert all(isinstance(d, str) and d == d.lower() for d in obj["domains"])
    assert len(set(obj["domains"])) == len(obj["domains"])
    assert all(isinstance(c, str) for c in obj["contacts"])
    assert obj["transitive"] in (0, 1) and not isinstance(obj["transitive"], bool)
    ca = obj["ca"]
    assert [k for k in ca] == [k for k in ("account", "proto", "url", "urls", "agreement",
                                          "challenges") if k in ca], f"{where}.ca: {list(ca)}"
    assert ca["proto"] == "ACME"
    for key in ("state", "renew-mode"):
        assert isinstance(obj[key], int) and not isinstance(obj[key], bool), f"{where}.{key}"
    for key in ("renew-window", "warn-window"):
        assert WINDOW.match(obj[key]), f"{where}.{key}: {obj[key]!r}"
    for key in ("must-staple", "stapling", "profile-mandatory", "ari-renewals", "watched"):
        assert isinstance(obj[key], bool), f"{where}.{key}"
    assert isinstance(obj["proto"], dict) and isinstance(obj["proto"].get("acme-tls/1"), list)
    check_certs(obj["cert"], f"{where}.cert")
    if "renew-at" in obj:
        check_ts(obj["renew-at"], f"{where}.renew-at")
    if "renew" in obj:
        assert obj["renew"] is True, f"{where}.renew is only ever true"
    if "renewal" in obj:
        check_job(obj["renewal"], f"{where}.renewal", with_log)


def oneline(name: x509.Name) -> str:
    """OpenSSL's X509_NAME_oneline form, e.g. /C=US/O=Let's Encrypt/CN=R11."""
    short = {"countryName": "C", "organizationName": "O", "commonName": "CN",
             "organizationalUnitName": "OU", "stateOrProvinceName": "ST", "localityName": "L"}
    return "".join(f"/{short.get(a.oid._name, a.oid.dotted_string)}={a.value}"
                   for rdn in name.rdns for a in rdn)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def expected_cert_json(cert: x509.Certificate) -> dict:
    """The §1.4 values for `cert`, computed without apache-md."""
    serial = cert.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 7) // 8 or 1, "big")
    out = {"issuer-name": oneline(cert.issuer),
           "serial": format(serial, "X") if len(format(serial, "X")) % 2 == 0
           else "0" + format(serial, "X"),
           "sha256-fingerprint": hashlib.sha256(
               cert.public_bytes(serialization.Encoding.DER)).hexdigest()}
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        out["ari-cert-id"] = f"{_b64(aki.key_identifier)}.{_b64(serial_bytes)}"
    except x509.ExtensionNotFound:
        pass
    return out


def check_cert_values(entry: dict, cert: x509.Certificate) -> None:
    from email.utils import format_datetime
    want = expected_cert_json(cert)
    for key, value in want.items():
        if key == "ari-cert-id":
            # RFC 9773 uses the DER INTEGER content (a 0x00 byte when the top bit is set);
            # mod_md drops it. Either form names the same certificate.
            aki, _, ser = entry[key].partition(".")
            assert aki == value.partition(".")[0]
            raw = base64.urlsafe_b64decode(ser + "=" * (-len(ser) % 4))
            assert int.from_bytes(raw, "big") == cert.serial_number
            continue
        assert entry[key] == value, f"{key}: {entry[key]!r} != {value!r}"
    assert entry["valid"] == {
        "from": format_datetime(cert.not_valid_before_utc, usegmt=True),
        "until": format_datetime(cert.not_valid_after_utc, usegmt=True)}
