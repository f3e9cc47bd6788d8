"""MDCertificateProtocol tailscale in the configuration: the default socket, what `check`
warns about (with file:line), unknown protocols as mod_md refuses them."""
from __future__ import annotations

from datetime import timedelta

from apache_md.apache.config import load_text
from apache_md.ca import ari
from apache_md.core import tailscale
from apache_md.core.crypto import CertInfo
from apache_md.core.facts import MDFacts
from apache_md.core.job import now_utc

NODE = "node.tailnet-test.ts.net"
SOCK = "file://localhost/run/ts/tailscaled.sock"


def conf(md_body: str, names: str = NODE, server_level: str = "", vhost_names: str = NODE):
    server_name, *aliases = vhost_names.split()
    alias = f"    ServerAlias {' '.join(aliases)}\n" if aliases else ""
    return load_text(f"""MDStoreDir /tmp/md
{server_level}
<MDomain {names}>
{md_body}
</MDomain>
<VirtualHost *:443>
    ServerName {server_name}
{alias}    SSLEngine on
</VirtualHost>
""", path="ts.conf")


def messages(problems) -> list[str]:
    return [str(p) for p in problems]


def test_the_socket_defaults_to_tailscaleds_as_in_mod_md():
    cfg = conf("    MDCertificateProtocol tailscale")
    md = cfg.mds[0]
    assert md.ca_urls == [tailscale.DEFAULT_URL] and tailscale.applies(md)
    assert not cfg.errors and not cfg.warnings
    cfg = conf(f"    MDCertificateProtocol Tailscale\n    MDCertificateAuthority {SOCK}")
    assert cfg.mds[0].ca_urls == [SOCK] and tailscale.applies(cfg.mds[0])
    assert tailscale.socket_path(SOCK) == "/run/ts/tailscaled.sock"
    assert tailscale.socket_path("file:///run/ts/tailscaled.sock") == "/run/ts/tailscaled.sock"


def test_an_acme_ca_for_a_tailscale_md_is_flagged_with_the_fix():
    cfg = conf("    MDCertificateProtocol tailscale", server_level="MDCertificateAuthority letsencrypt")
    (w,) = messages(cfg.warnings)
    assert w.startswith("ts.conf:3: MD node.tailnet-test.ts.net: MDCertificateProtocol tailscale "
                        "needs the daemon's socket as MDCertificateAuthority")
    cfg = conf("    MDCertificateProtocol tailscale\n    MDCertificateAuthority file://host/x.sock")
    assert "non `localhost` URLs not supported" in messages(cfg.warnings)[0]


def test_names_a_tailscale_certificate_cannot_cover_are_flagged():
    cfg = conf("    MDCertificateProtocol tailscale", vhost_names=f"{NODE} www.example.org")
    assert cfg.mds[0].domains == [NODE, "www.example.org"]  # the ServerAlias joined the MD
    text = " | ".join(messages(cfg.warnings))
    assert "ts.conf:3: MD node.tailnet-test.ts.net: a tailscale certificate is for one name" in text
    assert "www.example.org is not a tailnet name (*.ts.net)" in text
    cfg = conf("    MDCertificateProtocol tailscale", names=f"app.{NODE}",
               vhost_names=f"app.{NODE}")
    assert "is below a node name" in messages(cfg.warnings)[0]
    assert f"*.{NODE}" in messages(cfg.warnings)[0]


def test_the_node_name_with_its_wildcard_is_one_certificate():
    cfg = conf("    MDCertificateProtocol tailscale", names=f"{NODE} *.{NODE}",
               vhost_names=f"app.{NODE}")
    md = cfg.mds[0]
    assert not cfg.warnings and tailscale.cert_domain(md) == f"*.{NODE}"


def test_private_keys_are_the_daemons_choice():
    cfg = conf("    MDCertificateProtocol tailscale\n    MDPrivateKeys secp384r1 rsa2048")
    md = cfg.mds[0]
    assert [s.kind for s in md.keyspecs] == ["Default"]  # one set: privkey.pem, as mod_md
    assert "MDPrivateKeys has no effect with tailscale" in messages(cfg.warnings)[0]


def test_an_unknown_protocol_is_an_error_as_mod_md_refuses_to_start():
    cfg = conf("    MDCertificateProtocol tailscal")
    (e,) = messages(cfg.errors)
    assert e == (f"ts.conf:3: AH10172: md[{NODE}]: error syncing to store: [{NODE}] uses unknown "
                 "CA protocol 'tailscal' (known: ACME, tailscale)")
    # Debian's mod_md compares the name exactly: `acme` stops its start too (the sweep)
    assert "unknown CA protocol 'acme'" in messages(conf("    MDCertificateProtocol acme").errors)[0]
    assert not conf("    MDCertificateProtocol ACME").errors


def test_ari_is_the_daemons_business():
    md = conf("    MDCertificateProtocol tailscale").mds[0]
    now = now_utc()
    live = CertInfo(not_before=now - timedelta(days=10), not_after=now + timedelta(days=80),
                    serial="01", sha256="", issuer_name="", issuer_uri=None, ocsp_url=None,
                    ari_cert_id=None, names=(NODE,), must_staple=False, key_type="rsa2048")
    facts = MDFacts(managed=True, active={"rsa": live})
    md.ca_proto = "ACME"
    assert ari.applies(md, facts, now)  # an ACME MD with this certificate would ask its CA
    md.ca_proto = "tailscale"
    assert not ari.applies(md, facts, now)  # tailscaled asks Let's Encrypt's ARI itself
