"""An MD as mod_md's JSON (`md.json`, and the base of each md-status object)."""
from __future__ import annotations

from typing import Any

from .jsonfmt import put
from .model import ManagedDomain, MDState, RenewMode


# md.json keys of the settings mod_md shows only when set inside the MD's section
_ENV_KEYS = (("cmd-dns-01", "dns01_cmd"), ("proxy-url", "proxy_url"), ("ca-certs", "ca_certs"),
             ("proxy-ca-certs", "proxy_ca_certs"))


def md_to_json(md: ManagedDomain, *, ca_url: str | None = None, account: str | None = None,
               state: MDState = MDState.UNKNOWN, state_descr: str | None = None,
               public: bool = False) -> dict[str, Any]:
    """Keys in mod_md's order (formats §1.3). `public` masks the EAB hmac."""
    ca: dict[str, Any] = {}
    put(ca, "account", account)
    ca["proto"] = md.ca_proto
    put(ca, "url", ca_url or None)  # mod_md's ca_effective: only the CA a certificate came from
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
    # mod_md (state_init): certificate files are renewed only when asked for "always"
    manual = md.is_static and md.renew_mode == RenewMode.AUTO
    obj["renew-mode"] = int(RenewMode.MANUAL if manual else md.renew_mode)
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
    for key, name in _ENV_KEYS:
        if name in md.own_env:  # an MD's own `MDCACertificateFile none` is shown as written
            value = getattr(md, name)
            obj[key] = "none" if value is None else value
    if md.eab_kid:
        obj["eab"] = {"kid": md.eab_kid, "hmac": "***" if public else md.eab_hmac}
    put(obj, "profile", md.profile)
    obj["profile-mandatory"] = md.profile_mandatory
    obj["ari-renewals"] = md.ari_renewals
    return obj
