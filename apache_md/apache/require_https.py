"""Which host names MDRequireHttps redirects (http) and gives HSTS (https), as mod_md.

mod_md acts in the vhost that handles a request, and only when that vhost is assigned
an MD listing the request's host (md_require_https_maybe, md_get_for_domain): a Host
that is an MD's name but lands on another site's vhost (the default one of its port)
is left alone. apache-md's rules are server-wide `<If>`s on the Host, so the names are
chosen here by routing each name as Apache would, on each port with vhosts: the vhost
whose ServerName or ServerAlias matches, else the port's first one. Addresses are not
told apart (a port's vhosts are taken as one group), and wildcard MD names are not
redirected (no single host to test).
"""
from __future__ import annotations

import re

from ..core.model import Config, ManagedDomain, VHost


def _matches(vh: VHost, host: str) -> bool:
    """httpd's name-based choice: ServerName or a ServerAlias, `*`/`?` patterns too."""
    for name in vh.names:
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if any(c in name for c in "*?"):
            pattern = re.escape(name).replace(r"\*", ".*").replace(r"\?", ".")
            if re.fullmatch(pattern, host):
                return True
    return False


def _by_port(config: Config, skip_address: str | None) -> list[list[VHost]]:
    """Per port, the vhosts Apache chooses from, in configuration order (but those
    bound to `skip_address` alone); the base server (MDBaseServer on) on the Listen
    ports no vhost uses."""
    groups: dict[int, list[VHost]] = {}
    base = [vh for vh in config.vhosts if vh.is_base]
    for vh in config.vhosts:
        own = skip_address and vh.addresses and all(
            a.rsplit(":", 1)[0] == skip_address for a in vh.addresses)
        if not vh.is_base and not own:
            for port in vh.ports:
                groups.setdefault(port, []).append(vh)
    for port in config.listen_ports:
        if port not in groups and base:
            groups[port] = base
    return list(groups.values())


def redirected(config: Config, skip_address: str | None = None
               ) -> dict[str, tuple[list[str], list[str]]]:
    """MD name -> (names redirected on http, names given HSTS on https) for each MD
    with MDRequireHttps; `skip_address`: apache-md's own vhost (the OCSP relay's)."""
    out = {}
    groups = _by_port(config, skip_address)
    for md in config.mds:
        if not md.require_https:
            continue
        http: list[str] = []
        https: list[str] = []
        for host in (d for d in md.domains if not d.startswith("*.")):
            for group in groups:
                vh = next((v for v in group if _matches(v, host)), group[0])
                if _assigned(md, vh):
                    target = https if vh.ssl else http
                    if host not in target:
                        target.append(host)
        out[md.name] = (http, https)
    return out


def _assigned(md: ManagedDomain, vh: VHost) -> bool:
    return any(v is vh for v in md.vhosts)
