"""ACME accounts in the store (`accounts/ACME-<host>-NNNN/`, formats §3.7).

One account per CA URL and EAB pair, shared by every MD that uses that pair
and reused across runs. Registration happens under a store-wide lock, so MDs
driven in parallel do not register one account each.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import josepy as jose
from acme import messages
from cryptography.hazmat.primitives.asymmetric import rsa

from ..core import crypto
from ..core.model import ManagedDomain
from ..store.fs import ACCOUNTS, Store, StoreError
from ..store.locks import store_lock
from .client import CAConnection, CAProblem

ACCOUNT_KEY_BITS = 3072  # mod_md's MD_ACME_ACCT_PKEY_BITS
SECRET_MODE = 0o600  # files that hold an EAB hmac


@dataclass
class Account:
    id: str
    url: str
    key: Any  # cryptography private key
    regr: messages.RegistrationResource

    @property
    def jwk(self) -> jose.JWK:
        return jose.JWKRSA(key=self.key) if isinstance(self.key, rsa.RSAPrivateKey) \
            else jose.JWKEC(key=self.key)


def _id_prefix(ca_url: str) -> str:
    host = urlparse(ca_url).hostname or "unknown"
    return f"ACME-{host[-16:]}-"


def _eab_matches(stored: dict | None, md: ManagedDomain) -> bool:
    if not md.eab_kid:
        return not stored or not stored.get("kid")
    return bool(stored) and stored.get("kid") == md.eab_kid and stored.get("hmac") == md.eab_hmac


def find(store: Store, md: ManagedDomain, ca_url: str) -> Account | None:
    for acct_id in store.names(ACCOUNTS):
        try:
            doc = store.read_json(ACCOUNTS, acct_id, "account.json")
        except StoreError:
            continue  # a corrupt account is skipped, a new one registered
        if not doc or doc.get("status") != "valid" or doc.get("ca-url") != ca_url \
                or not doc.get("url") or not _eab_matches(doc.get("eab"), md):
            continue
        pem = store.read_bytes(ACCOUNTS, acct_id, "account.pem")
        if not pem:
            continue
        try:
            key = crypto.key_from_pem_cached(pem, store.key)
        except (ValueError, TypeError):
            continue
        regr = messages.RegistrationResource(
            uri=doc["url"], body=messages.Registration.from_json(doc.get("registration") or {}))
        return Account(acct_id, doc["url"], key, regr)
    return None


def _eab_binding(conn: CAConnection, md: ManagedDomain, jwk: jose.JWK) -> dict | None:
    if not md.eab_kid:
        return None
    try:
        jose.b64.b64decode(md.eab_hmac or "")
    except (ValueError, TypeError):
        raise CAProblem(22, "Invalid argument", "apache:eab-hmac-invalid",
                        "the hmac of the external account binding is not base64url") from None
    try:
        return messages.ExternalAccountBinding.from_data(
            account_public_key=jwk.public_key(), kid=md.eab_kid, hmac_key=md.eab_hmac,
            directory=conn.directory)
    except Exception as e:  # noqa: BLE001
        raise CAProblem(22, "Invalid argument", "apache:eab-hmac-fail", str(e)) from None


def register(store: Store, conn: CAConnection, md: ManagedDomain) -> Account:
    meta = conn.meta
    tos = meta.get("termsOfService")
    if tos and not md.ca_agreement:
        raise CAProblem(
            22, "Invalid argument", "urn:ietf:params:acme:error:userActionRequired",
            f"the CA requires you to accept the terms-of-service as specified in <{tos}>. "
            "Please read the document that you find at that URL and, if you agree to the "
            "conditions, configure \"MDCertificateAgreement accepted\" in your Apache. "
            "Then (graceful) restart the server to activate.")
    if not md.contacts:
        raise CAProblem(
            22, "Invalid argument", None,
            f"No contact information is available for MD {md.name}. Configure one using the "
            "MDContactEmail or ServerAdmin directive.")
    if meta.get("externalAccountRequired") and not md.eab_kid:
        raise CAProblem(
            22, "Invalid argument", "urn:ietf:params:acme:error:externalAccountRequired",
            "the CA requires 'External Account Binding' which is not configured. This means "
            "you need to obtain a 'Key ID' and a 'HMAC' from the CA and configure that using "
            "the MDExternalAccountBinding directive in your server.")
    key = crypto.generate_key_rsa(ACCOUNT_KEY_BITS)
    jwk = jose.JWKRSA(key=key)
    conn.use_account(jwk, None)
    reg = messages.NewRegistration(
        contact=tuple(md.contacts),
        terms_of_service_agreed=bool(md.ca_agreement) or None,
        external_account_binding=_eab_binding(conn, md, jwk))
    regr = conn.call(conn.client.new_account, reg)
    acct_id = _free_id(store, conn.url)
    doc: dict[str, Any] = {
        "status": "valid", "url": regr.uri, "ca-url": conn.url,
        "contact": list(md.contacts),
        "registration": _registration_json(regr.body),
    }
    if md.ca_agreement:
        doc["agreement"] = tos or md.ca_agreement
    if md.eab_kid:
        doc["eab"] = {"kid": md.eab_kid, "hmac": md.eab_hmac}
    store.write_bytes(ACCOUNTS, acct_id, "account.pem", crypto.key_to_pem(key, store.key))
    # mod_md leaves account.json 0644 with the hmac in clear; only the worker reads it.
    store.write_json(ACCOUNTS, acct_id, "account.json", doc,
                     mode=SECRET_MODE if "eab" in doc else None)
    return Account(acct_id, regr.uri, key, regr)


def _plain(obj: Any) -> Any:
    """josepy objects (frozendicts, nested fields) as plain JSON values."""
    if hasattr(obj, "to_partial_json"):
        return _plain(obj.to_partial_json())
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _registration_json(body: messages.Registration) -> dict[str, Any]:
    """The account object as registered; the EAB JWS stays out of the store."""
    doc = _plain(body)
    doc.pop("externalAccountBinding", None)
    return doc


def _free_id(store: Store, ca_url: str) -> str:
    prefix = _id_prefix(ca_url)
    taken = set(store.names(ACCOUNTS))
    for n in range(1000):
        cand = f"{prefix}{n:04d}"
        if cand not in taken:
            return cand
    raise StoreError(f"no free account id for {ca_url}")


def obtain(store: Store, conn: CAConnection, md: ManagedDomain) -> Account:
    """The account to use for `md` at this CA, registering one if needed."""
    acct = find(store, md, conn.url)
    if acct is None:
        with store_lock(store, ACCOUNTS):
            acct = find(store, md, conn.url) or register(store, conn, md)
    conn.use_account(acct.jwk, acct.regr)
    return acct
