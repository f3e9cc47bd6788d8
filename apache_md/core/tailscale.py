"""Certificates from the local Tailscale daemon (`MDCertificateProtocol tailscale`): the rules.

tailscaled obtains Let's Encrypt certificates for the node's names in the
tailnet (`<machine>.<tailnet>.ts.net`, and `*.<machine>.<tailnet>.ts.net`
where the tailnet enables it) and hands them out over its LocalAPI socket
(ca/tailscale.py talks to it). What that means for an MD: one name (or the
node name with its wildcard), a `file://localhost/<socket>` as
MDCertificateAuthority (mod_md's default when none is given) and a key the
daemon chooses.
"""
from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .model import ManagedDomain

PROTO = "tailscale"
DEFAULT_URL = "file://localhost/var/run/tailscale/tailscaled.sock"  # mod_md's TAILSCALE_DEF_URL
TAILNET_SUFFIX = ".ts.net"


def applies(md: ManagedDomain) -> bool:
    """The MD's certificates come from tailscaled (mod_md spells it `tailscale`)."""
    return md.ca_proto.lower() == PROTO


def socket_path(url: str) -> str:
    """The daemon's socket from a `file://localhost/<path>` URL; ValueError says what is wrong."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "file":
        raise ValueError(f"MDCertificateProtocol tailscale needs the daemon's socket as "
                         f"MDCertificateAuthority (e.g. {DEFAULT_URL}), not `{url}`")
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"non `localhost` URLs not supported, CA URL is `{url}`")
    path = unquote(parts.path)
    if not path.startswith("/") or path == "/":
        raise ValueError(f"no socket path in the CA URL `{url}`")
    return path


def cert_domain(md: ManagedDomain) -> str | None:
    """The name to ask the daemon for, or None when one certificate of its cannot serve the MD.

    The daemon issues for one name; for `*.X` it adds `X` (ipn/ipnlocal cert
    requests), so `X *.X` is one certificate too.
    """
    names = md.domains
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        wild = [n for n in names if n.startswith("*.")]
        if len(wild) == 1 and wild[0][2:] in names:
            return wild[0]
    return None


def name_problem(md: ManagedDomain) -> str | None:
    """Why the daemon can never give this MD a certificate covering its names (None: it may)."""
    if cert_domain(md) is None:
        return (f"a tailscale certificate is for one name (the node's name in the tailnet, "
                f"or `*.<name>` with the name), this MD has {len(md.domains)}: "
                f"{' '.join(md.domains)} (ServerAlias names join the MD unless MDMembers manual)")
    return None


def config_problems(md: ManagedDomain) -> list[str]:
    """What `check` warns about for a tailscale MD (mod_md accepted such configs at start)."""
    out = []
    try:
        socket_path(md.ca_urls[0] if md.ca_urls else DEFAULT_URL)
    except ValueError as e:
        out.append(f"MD {md.name}: {e}")
    if len(md.ca_urls) > 1:
        out.append(f"MD {md.name}: tailscale uses only the first MDCertificateAuthority "
                   f"({md.ca_urls[0]})")
    problem = name_problem(md)
    if problem:
        out.append(f"MD {md.name}: {problem}")
    for n in md.domains:
        base = n[2:] if n.startswith("*.") else n
        if not base.endswith(TAILNET_SUFFIX):
            out.append(f"MD {md.name}: {n} is not a tailnet name (*{TAILNET_SUFFIX}); the daemon "
                       "gives certificates only for this node's name and its Funnel domains")
        elif not n.startswith("*.") and base.count(".") > 3:
            node = base.split(".", 1)[1]
            out.append(f"MD {md.name}: {n} is below a node name; the daemon gives certificates "
                       f"for the node's name ({node}?) and its wildcard (*.{node})")
    if md.pkey_specs:
        out.append(f"MD {md.name}: MDPrivateKeys has no effect with tailscale: the daemon "
                   "chooses the key (ECDSA P-256), stored as privkey.pem like mod_md")
    return out

