"""Shims for the library versions Debian 12 (bookworm) ships.

apache-md runs on Debian's own python3-* packages: python3-cryptography 38,
python3-acme 2.1, python3-josepy 1.13, python3-filelock 3.9,
python3-sdnotify 0.3. Newer APIs are used when present, older ones otherwise,
so the same code runs from a PyPI venv and from the .deb.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

from .lazy import Lazy

x509 = Lazy("cryptography.x509")  # imported when first used

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)


def load_pem_x509_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates of a PEM bundle, in order (cryptography >= 39 has it built in).

    Like the built-in one: ValueError when there is no certificate at all or
    one of them does not parse.
    """
    native = getattr(x509, "load_pem_x509_certificates", None)
    if native is not None:
        return native(data)
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise ValueError("Unable to load PEM file. No certificates found.")
    return [x509.load_pem_x509_certificate(b) for b in blocks]


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt


def not_valid_before(cert: x509.Certificate) -> datetime:
    """notBefore as an aware UTC datetime (`not_valid_before_utc` in cryptography >= 42)."""
    try:
        return cert.not_valid_before_utc
    except AttributeError:
        return _aware(cert.not_valid_before)


def not_valid_after(cert: x509.Certificate) -> datetime:
    """notAfter as an aware UTC datetime (`not_valid_after_utc` in cryptography >= 42)."""
    try:
        return cert.not_valid_after_utc
    except AttributeError:
        return _aware(cert.not_valid_after)


def _filelock_has_mode() -> bool:
    import inspect

    from filelock import FileLock
    try:
        return "mode" in inspect.signature(FileLock).parameters
    except (TypeError, ValueError):
        return False


_FILELOCK_MODE = _filelock_has_mode()


def file_lock(path: str, mode: int = 0o644):
    """A `filelock.FileLock` whose file gets `mode` (the `mode=` argument needs filelock >= 3.10).

    Older filelock creates the file with 0o666 & ~umask; we create it first, with
    `mode`, so the permissions are the same whichever filelock is installed.
    """
    import os

    from filelock import FileLock
    if _FILELOCK_MODE:
        return FileLock(path, mode=mode)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        pass
    else:
        try:
            os.fchmod(fd, mode)  # whatever the umask
        finally:
            os.close(fd)
    return FileLock(path)


def begin_finalization(client, orderr):
    """POST the order's CSR to its finalize URL without waiting for the certificate.

    `ClientV2.begin_finalization` exists from acme 2.3 on; acme 2.1 only has the
    blocking `finalize_order` (1 s sleeps), and wants the CSR as a pyOpenSSL object
    wrapped in `josepy.ComparableX509`. Returns the updated OrderResource; a CA
    error (e.g. orderNotReady) raises `acme.messages.Error` as with the new API.
    """
    native = getattr(client, "begin_finalization", None)
    if native is not None:
        return native(orderr)
    import josepy as jose
    import OpenSSL.crypto
    from acme import messages
    csr = OpenSSL.crypto.load_certificate_request(OpenSSL.crypto.FILETYPE_PEM, orderr.csr_pem)
    wrapped = messages.CertificateRequest(csr=jose.ComparableX509(csr))
    res = client._post(orderr.body.finalize, wrapped)  # noqa: SLF001
    return orderr.update(body=messages.Order.from_json(res.json()))


def network_cause(e: BaseException) -> BaseException:
    """The `requests` exception behind `e`, when acme 2.1 (Debian 12) hides it.

    acme 2.1's ClientNetwork turns a failed connection (requests ConnectionError,
    ...) into a bare ValueError("Requesting host/path: Connection refused") raised
    while handling it; newer acme lets the requests exception through. Returns the
    original exception in the first case and `e` itself otherwise.
    """
    import requests
    cause = e.__context__
    if (type(e) is ValueError and isinstance(cause, requests.exceptions.RequestException)
            and str(e).startswith("Requesting ")):
        return cause
    return e
