"""An MD as mod_md's JSON (`md.json`, and the base of each md-status object)."""
from __future__ import annotations

from typing import Any

from .jsonfmt import put
from .model import ManagedDomain, MDState


def md_to_json(md: ManagedDomain, *, ca_url: str | None = None, account: str | None = None,
               state: MDState = MDState.UNKNOWN, state_descr: str | None = None,
               public: bool = False) -> dict[str, Any]:
    """Keys in mod_md's order (formats §1.3). `public` masks the EAB hmac."""
    ca: dict[str, Any] = {}
    put(ca, "account", account)
    ca["proto"] = md.ca_proto
    put(ca, "url", ca_url or (md.ca_urls[0] if md.ca_urls else None))
    if md.ca_urls:
        ca["urls"] = list(md.ca_urls)
    put(ca, "agreement", md.ca_agreement)
    if md.challenges is not None:
        ca["challenges"] = list(md.challenges)
    obj: dict[str, Any] = {
        "name": md.name,
        "domains": list(md.domains),
        "contacts": list(md.contacts),
        "transitive": 1 if md.transitive else 0,
        "ca": ca,
    }
    if md.pkey_specs:
        specs = [s.to_json() for s in md.pkey_specs]
        obj["privkey"] = specs[0] if len(specs) == 1 else specs
    obj["state"] = int(state)
    put(obj, "state-descr", state_descr)
    obj["renew-mode"] = int(md.renew_mode)
    obj["renew-window"] = md.renew_window.format()
    obj["warn-window"] = md.warn_window.format()
    put(obj, "require-https", md.require_https)
    obj["must-staple"] = md.must_staple
    obj["proto"] = {"acme-tls/1": []}  # tls-alpn-01 needs a C hook; never offered
    if md.cert_files:
        obj["cert-files"] = list(md.cert_files)
    if md.key_files:
        obj["pkey-files"] = list(md.key_files)
    obj["stapling"] = md.stapling
    put(obj, "cmd-dns-01", md.dns01_cmd_md)
    put(obj, "proxy-url", md.proxy_url)
    put(obj, "ca-certs", md.ca_certs)
    put(obj, "proxy-ca-certs", md.proxy_ca_certs)
    if md.eab_kid:
        obj["eab"] = {"kid": md.eab_kid, "hmac": "***" if public else md.eab_hmac}
    put(obj, "profile", md.profile)
    obj["profile-mandatory"] = md.profile_mandatory
    obj["ari-renewals"] = md.ari_renewals
    return obj
