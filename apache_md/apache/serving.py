"""What Apache serves: the certificate files each MD's include points mod_ssl at.

The include of an MD names its live set in domains/, the files of
MDCertificateFile, or, before there is a certificate, a self-signed fallback
(mod_md's `fallback-*.pem`, answered with 503). `write_includes` writes the
per-MD includes and global.conf from apache/includes' text.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from ..core import crypto
from ..core.job import now_utc
from ..core.model import Config, ManagedDomain
from ..store import credentials
from ..store.fs import APACHE, DOMAINS, Store, atomic_write
from . import includes

FALLBACK_MIN_LEFT = timedelta(days=2)


# One fallback key per key type for all MDs of this process. The key guards
# nothing (its self-signed certificate only ever answers 503), and making one
# RSA key per MD cost seconds before Apache could start with many new MDs.
_fallback_keys: dict[tuple, object] = {}


def _fallback_key(spec):
    ident = (spec.kind, spec.rsa_bits if spec.kind != "EC" else spec.curve.lower())
    key = _fallback_keys.get(ident)
    if key is None:
        key = _fallback_keys[ident] = crypto.generate_key(spec)
    return key


def ensure_fallback(store: Store, md: ManagedDomain, spec) -> tuple[str, str]:
    """The self-signed stand-in for a key type without a certificate yet."""
    cert_f = store.path(DOMAINS, md.name, "fallback-" + spec.file_name("pubcert"))
    key_f = store.path(DOMAINS, md.name, "fallback-" + spec.file_name("privkey"))
    ok = False
    if cert_f.exists() and key_f.exists():
        try:
            info = crypto.cert_info(crypto.load_chain(cert_f.read_bytes())[0])
            ok = (info.not_after - now_utc() > FALLBACK_MIN_LEFT
                  and all(crypto.covers(list(info.names), d) for d in md.domains))
        except (OSError, crypto.CryptoError, IndexError):
            ok = False
    if not ok:
        key = _fallback_key(spec)
        store.write_bytes(DOMAINS, md.name, key_f.name, crypto.key_to_pem(key), mode=0o600)
        store.write_bytes(DOMAINS, md.name, cert_f.name, crypto.self_signed(key, md.domains))
    return str(cert_f), str(key_f)


def cert_pairs(store: Store, md: ManagedDomain) -> tuple[list[tuple[str, str]], bool]:
    """What the MD's include points mod_ssl at, and whether that is the fallback."""
    if not credentials.uses_managed(store, md):
        return list(zip(md.cert_files, md.key_files)), False
    pairs = []
    for spec in md.keyspecs:
        cert = store.path(DOMAINS, md.name, spec.file_name("pubcert"))
        key = store.path(DOMAINS, md.name, spec.file_name("privkey"))
        if cert.exists() and key.exists():
            pairs.append((str(cert), str(key)))
    if pairs:
        return pairs, False
    return [ensure_fallback(store, md, spec) for spec in md.keyspecs], True


def write_if_changed(path: Path, text: str) -> bool:
    data = text.encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data, 0o644)
    return True


def write_includes(store: Store, config: Config) -> bool:
    """Every MD's include and the global file; True when any file changed."""
    changed = False
    apache_dir = store.dir(APACHE)
    apache_dir.mkdir(parents=True, exist_ok=True)
    setup = includes.relay_setup(config)  # once, not per MD: it walks every vhost
    for md in config.mds:
        pairs, fallback = cert_pairs(store, md)
        responder = any(i and i.ocsp_url for i in credentials.active(store, md).values())
        stapling = includes.md_stapling(config, md, fallback, responder, setup)
        changed |= write_if_changed(apache_dir / includes.include_file(md.name),
                                    includes.md_include(md, pairs, fallback, stapling))
    changed |= write_if_changed(apache_dir / "global.conf", includes.global_conf(config))
    # Includes of MDs removed from the config stay: a vhost may still include them.
    return changed
