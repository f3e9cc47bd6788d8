"""What the directive sweep (tests/e2e/directive_sweep.py) found Debian's mod_md 2.6.10 to
do, as unit-level expectations: each was a difference apache-md had."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from apache_md.apache import require_https
from apache_md.apache.config import load_config
from apache_md.apache.includes import global_conf
from apache_md.core.mdjson import md_to_json


def load(tmp_path: Path, text: str):
    main = tmp_path / "main.conf"
    main.write_text(textwrap.dedent(text))
    return load_config(str(main), server_root=str(tmp_path), env={})


def md_json(tmp_path: Path, inside: str, outside: str = "") -> dict:
    cfg = load(tmp_path, f"{outside}\n<MDomain a.test>\n{inside}\n</MDomain>\n")
    assert cfg.errors == [], cfg.errors
    return md_to_json(cfg.mds[0])


@pytest.mark.parametrize("value,shown", [("0", "0d"), ("500ms", "0d"), ("1500ms", "500ms"),
                                         ("86400s", "1d"), ("48h", "2d"), ("90s", "90s")])
def test_windows_read_back_as_mod_md_formats_them(tmp_path, value, shown):
    got = md_json(tmp_path, f"MDRenewWindow {value}\nMDWarnWindow {value}")
    assert (got["renew-window"], got["warn-window"]) == (shown, shown)


def test_challenge_types_are_lowercased(tmp_path):
    assert md_json(tmp_path, "MDCAChallenges HTTP-01 Dns-01")["ca"]["challenges"] == \
        ["http-01", "dns-01"]


def test_an_mds_own_none_for_ca_files_is_shown(tmp_path):
    got = md_json(tmp_path, "MDCACertificateFile none\nMDHttpProxyCACertificateFile none",
                  outside="MDCACertificateFile /etc/ssl/certs/ca-certificates.crt")
    assert (got["ca-certs"], got["proxy-ca-certs"]) == ("none", "none")
    assert "ca-certs" not in md_to_json(load(tmp_path, "MDCACertificateFile none\n"
                                             "MDomain a.test\n").mds[0])


def test_the_protocol_name_is_case_sensitive(tmp_path):
    (e,) = load(tmp_path, "<MDomain a.test>\nMDCertificateProtocol acme\n</MDomain>\n").errors
    assert "unknown CA protocol 'acme'" in e.message


VHOSTS = """\
    Listen 80
    Listen 443
    <VirtualHost 127.0.0.2:80>
        ServerName apache-md-relay
    </VirtualHost>
    <VirtualHost *:80>
        ServerName default.test
    </VirtualHost>
    <VirtualHost *:80>
        ServerName a.test
    </VirtualHost>
    <VirtualHost *:443>
        ServerName a.test
        ServerAlias www.a.test
        SSLEngine on
    </VirtualHost>
    <VirtualHost *:443>
        ServerName b.test
        SSLEngine on
    </VirtualHost>
"""


def test_wildcard_md_after_its_subdomains_md_is_no_overlap(tmp_path):
    """md_common_name(later, earlier): only the later MD's names are looked up."""
    cfg = load(tmp_path, VHOSTS + "MDomain a.test www.a.test\nMDomain *.a.test\n")
    assert cfg.errors == []
    assert [vh.server_name for vh in cfg.mds[0].vhosts] == ["a.test", "a.test"]
    assert cfg.mds[1].vhosts == []  # *.a.test covers the alias only: not its vhost
    (e,) = load(tmp_path, VHOSTS + "MDomain *.a.test\nMDomain a.test www.a.test\n").errors
    assert "AH10038" in e.message and "'www.a.test'" in e.message


def test_require_https_acts_in_the_mds_vhosts_only(tmp_path):
    """http: a.test has its vhost; www.a.test lands on default.test's, b.test too (no
    http vhost): mod_md redirects neither. https: a.test and www.a.test (their vhost)."""
    cfg = load(tmp_path, VHOSTS + "MDRequireHttps permanent\nMDomain a.test www.a.test\n"
                                  "MDomain b.test\n")
    assert cfg.errors == []
    assert require_https.redirected(cfg) == {"a.test": (["a.test"], ["a.test", "www.a.test"]),
                                             "b.test": ([], ["b.test"])}
    text = global_conf(cfg)  # apache-md's relay vhost on 127.0.0.2 is nobody's default
    assert "in {'a.test'} &&" in text and "in {'a.test', 'www.a.test'} &&" in text
    assert "Redirect 301" in text and text.count("<If \"%{HTTPS} != 'on'") == 1


def test_require_https_on_the_default_vhost_of_the_md(tmp_path):
    """The MD's http vhost is its port's first: mod_md redirects www.a.test there too."""
    cfg = load(tmp_path, """\
        Listen 80
        <VirtualHost 127.0.0.2:80>
            ServerName apache-md-relay
        </VirtualHost>
        <VirtualHost *:80>
            ServerName a.test
        </VirtualHost>
        MDRequireHttps temporary
        MDomain a.test www.a.test
    """)
    assert require_https.redirected(cfg, skip_address="127.0.0.2") == {
        "a.test": (["a.test", "www.a.test"], [])}
