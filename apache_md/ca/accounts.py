"""ACME accounts in the store (`accounts/ACME-<host>-NNNN/`, formats §3.7).

One account per CA URL and EAB pair, shared by every MD that uses that pair
and reused across runs. Registration happens under a store-wide lock, so MDs
driven in parallel do not register one account each.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import josepy as jose
from acme import messages
from cryptography.hazmat.primitives.asymmetric import rsa

from ..core import crypto
from ..core.model import ManagedDomain
from ..core.problem import CAProblem
from ..store import broken, keypool
from ..store.accounts import SECRET_MODE, free_id
from ..store.fs import ACCOUNTS, CorruptFile, Store, StoreError
from ..store.locks import Busy, store_lock
from .client import CAConnection

log = logging.getLogger(__name__)
ACCOUNT_KEY_BITS = 3072  # mod_md's MD_ACME_ACCT_PKEY_BITS
# An MD waiting for another thread's registration does its own work meanwhile (obtain's
# `meanwhile`: its keys) once that registration has waited for the CA this long: the CPU
# is idle then, while the account key itself (made before) would only be slowed by it.
MEANWHILE_AFTER = 0.5
_registering = threading.Condition()
# store -> None while a thread of this process holds its account lock, or since when the
# registration under it has waited for the CA (time.monotonic())
_holders: dict[str, float | None] = {}


@dataclass
class Account:
    id: str
    url: str
    key: Any  # cryptography private key
    regr: messages.RegistrationResource
    new: bool = False  # registered by this run
    replaced: list[str] = field(default_factory=list)  # unusable accounts set aside for it

    @property
    def jwk(self) -> jose.JWK:
        return jose.JWKRSA(key=self.key) if isinstance(self.key, rsa.RSAPrivateKey) \
            else jose.JWKEC(key=self.key)


def _eab_matches(stored: dict | None, md: ManagedDomain) -> bool:
    if not md.eab_kid:
        return not stored or not stored.get("kid")
    return bool(stored) and stored.get("kid") == md.eab_kid and stored.get("hmac") == md.eab_hmac


def find(store: Store, md: ManagedDomain, ca_url: str, prefer: str | None = None
         ) -> tuple[Account | None, list[tuple[str, str, str]]]:
    """The account to use at `ca_url` (`prefer`, the MD's own, when it is usable there,
    as mod_md's md->ca_account), and the accounts found unusable as (id, file, problem):
    an account.json that does not parse or lacks the URLs mod_md requires, or, for an
    account that would be used, a missing or undecryptable key."""
    found, unusable = None, []
    names = store.names(ACCOUNTS)
    if prefer in names:
        names.remove(prefer)
        names.insert(0, prefer)
    for acct_id in names:
        try:
            doc = store.read_json(ACCOUNTS, acct_id, "account.json")
        except CorruptFile as e:
            unusable.append((acct_id, "account.json", e.problem))
            continue
        except StoreError as e:  # cannot be read at all: left as it is
            broken.unreadable(store, store.path(ACCOUNTS, acct_id, "account.json"), e,
                              "the account is not used", md.name)
            continue
        if not doc:
            continue  # no account here (set aside before)
        if not isinstance(doc.get("url"), str) or not isinstance(doc.get("ca-url"), str):
            unusable.append((acct_id, "account.json", "no 'url' or 'ca-url'"))
            continue
        if found or doc.get("status") != "valid" or doc.get("ca-url") != ca_url \
                or not _eab_matches(doc.get("eab"), md):
            continue
        try:
            pem = store.read_bytes(ACCOUNTS, acct_id, "account.pem")
            key = crypto.key_from_pem_cached(pem, store.key) if pem else None
        except StoreError as e:
            broken.unreadable(store, store.path(ACCOUNTS, acct_id, "account.pem"), e,
                              "the account is not used", md.name)
            continue
        except (ValueError, TypeError):
            unusable.append((acct_id, "account.pem", "the key does not decrypt with the store's "
                             "key (md_store.json) or is not a private key"))
            continue
        if key is None:
            unusable.append((acct_id, "account.pem", "missing"))
            continue
        regr = messages.RegistrationResource(
            uri=doc["url"], body=messages.Registration.from_json(doc.get("registration") or {}))
        found = Account(acct_id, doc["url"], key, regr)
    return found, unusable


def set_aside(store: Store, acct_id: str, file: str, problem: str, md: ManagedDomain) -> None:
    """Take an unusable account out of use, keeping its files: each is moved next to
    itself (account.json.broken.1, ...), so neither apache-md nor mod_md picks it again."""
    moved = []
    for name in ("account.json", "account.pem"):
        try:
            aside = store.set_aside(store.path(ACCOUNTS, acct_id, name))
        except (OSError, StoreError) as e:
            log.warning("%s: cannot set it aside: %s", store.path(ACCOUNTS, acct_id, name), e)
            continue
        if aside is not None:
            moved.append(aside.name)
    broken.report(store, store.path(ACCOUNTS, acct_id, file), problem,
                  f"account {acct_id} set aside ({', '.join(moved) or 'nothing to move'}); "
                  "a new account is registered", md.name)


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
    key = keypool.take(store, keypool.ACCOUNT_SPEC) \
        or crypto.generate_key_rsa(ACCOUNT_KEY_BITS)
    jwk = jose.JWKRSA(key=key)
    conn.use_account(jwk, None)
    reg = messages.NewRegistration(
        contact=tuple(md.contacts),
        terms_of_service_agreed=bool(md.ca_agreement) or None,
        external_account_binding=_eab_binding(conn, md, jwk))
    _note(store, time.monotonic())
    regr = conn.new_account(reg)
    acct_id = free_id(store, conn.url)
    doc: dict[str, Any] = {
        "status": "valid", "url": regr.uri, "ca-url": conn.url,
        "contact": list(md.contacts),
        "registration": _registration_json(regr.body),
    }
    if md.ca_agreement:
        doc["agreement"] = tos or md.ca_agreement
    if md.eab_kid:
        doc["eab"] = {"kid": md.eab_kid, "hmac": md.eab_hmac}
    pem = crypto.key_to_pem(key, store.key)
    store.write_bytes(ACCOUNTS, acct_id, "account.pem", pem)
    crypto.remember_key(pem, store.key, key)  # the MDs waiting for it find it parsed
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


def _note(store: Store, state: float | None, held: bool = True) -> None:
    """The account lock of `store` is held by this thread (`state`: see _holders), or
    no longer (`held` False)."""
    with _registering:
        if held:
            _holders[str(store.base)] = state
        else:
            _holders.pop(str(store.base), None)
        _registering.notify_all()


def _await(store: Store) -> bool:
    """Wait while another thread holds the account lock, until its registration has
    waited for the CA MEANWHILE_AFTER seconds (True) or it lets go (False)."""
    with _registering:
        while str(store.base) in _holders:
            since = _holders[str(store.base)]
            left = None if since is None else since + MEANWHILE_AFTER - time.monotonic()
            if left is not None and left <= 0:
                return True
            _registering.wait(left)
    return False


def obtain(store: Store, conn: CAConnection, md: ManagedDomain, prefer: str | None = None,
           meanwhile: Callable[[], None] | None = None,
           registering: Callable[[], None] | None = None) -> Account:
    """The account to use for `md` at this CA, registering one if needed (`new` says so);
    `prefer`: the one an order under way was placed with. `meanwhile()` is called when
    this MD waits for another's registration that waits for the CA, `registering()`
    before this MD registers one (its key is made then)."""
    acct, unusable = find(store, md, conn.url, prefer)
    if acct is None or unusable:
        with contextlib.ExitStack() as locked:
            with conn.waiting():  # another MD may be registering: it needs a place to work
                try:
                    locked.enter_context(store_lock(store, ACCOUNTS, timeout=0))
                except Busy:
                    if meanwhile is not None and _await(store):
                        meanwhile()
                    locked.enter_context(store_lock(store, ACCOUNTS))
                _note(store, None)
                locked.callback(_note, store, None, False)
                acct, unusable = find(store, md, conn.url, prefer)
                if acct is not None and not unusable:
                    # registered meanwhile: the lock goes before this MD waits for a
                    # place again, or the MDs behind it would wait for that too
                    locked.close()
            for acct_id, file, problem in unusable:
                set_aside(store, acct_id, file, problem, md)
            if acct is None:
                if registering is not None:
                    registering()
                acct = register(store, conn, md)
                acct.new = True
                acct.replaced = [acct_id for acct_id, _, _ in unusable]
    conn.use_account(acct.jwk, acct.regr)
    return acct
