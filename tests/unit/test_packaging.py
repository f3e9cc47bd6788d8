"""The Debian packaging stays in step with the code, and the compat shims work
with whatever library versions are installed (Debian 12's or PyPI's)."""
from __future__ import annotations

import configparser
import datetime as dt
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509

from apache_md import __version__
from apache_md.apache import includes
from apache_md.core import compat, crypto
from apache_md.core.model import Config, GlobalSettings, KeySpec

REPO = Path(__file__).resolve().parents[2]
DEBIAN_STORE = "/etc/apache2/md"  # mod_md's default MDStoreDir for ServerRoot /etc/apache2
DEBIAN_WSGI = "/usr/lib/python3/dist-packages/apache_md/wsgi/app.py"


def _directives(text: str) -> list[str]:
    """Directive lines without comments, blank lines and line continuations."""
    text = re.sub(r"\\\n\s*", " ", text)
    return [" ".join(line.split()) for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_changelog_version_is_the_package_version():
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    version = re.match(r"apache-md \(([^)]+)\)", first).group(1)
    assert version.split("-")[0] == __version__


def test_conf_available_mounts_what_apache_conf_prints():
    """conf-available/apache-md.conf is `apache-md apache-conf` with Debian's paths.

    Two deliberate differences: no `Error` when mod_wsgi is missing (Debian's
    policy: a conf-available file may turn into a no-op, never break start-up),
    and no python-home (mod_wsgi's own /usr/bin/python3 has the package).
    """
    config = Config(main_file="/etc/apache2/apache2.conf", server_root="/etc/apache2",
                    settings=GlobalSettings(store_dir=DEBIAN_STORE), user="www-data",
                    group="www-data")
    snippet = includes.handler_snippet(config, python_home="/usr")
    snippet = snippet.replace(str(includes.WSGI_SCRIPT), DEBIAN_WSGI)
    snippet = snippet.replace(str(includes.WSGI_SCRIPT.parent), os.path.dirname(DEBIAN_WSGI))
    snippet = re.sub(r"<IfModule !wsgi_module>.*?</IfModule>\n", "", snippet, flags=re.S)
    snippet = snippet.replace(" python-home=/usr", "")
    conf = (REPO / "conf-available" / "apache-md.conf").read_text()
    assert _directives(conf) == _directives(snippet)
    assert "# Depends: wsgi" in conf  # a2enconf checks the module


def _unit(name: str) -> configparser.ConfigParser:
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str
    p.read(REPO / "systemd" / name)
    return p


def test_units_agree_on_the_store_and_the_activation_request():
    worker = _unit("apache-md.service")["Service"]
    assert worker["Type"] == "notify" and worker["User"] == "apache-md"
    assert worker["ReadWritePaths"] == DEBIAN_STORE
    assert worker["ProtectSystem"] == "strict" and worker["NoNewPrivileges"] == "yes"
    assert worker["CapabilityBoundingSet"] == ""
    path = _unit("apache-md-activate.path")["Path"]
    assert path["PathChanged"] == f"{DEBIAN_STORE}/status/activation/activation-requested"
    activate = _unit("apache-md-activate.service")["Service"]
    assert "User" not in activate  # root: moves keys into place, reloads Apache
    assert activate["ExecStart"].startswith("/usr/bin/apache-md activate --respect-window --reload")
    # the worker's request file, as the store names it
    from apache_md.store import state
    assert "/".join(state.ACTIVATION_REQUEST) == "status/activation/activation-requested"


def test_maintainer_scripts_are_executable_and_strict():
    for name in ("apache-md.postinst", "apache-md.prerm", "apache-md.postrm"):
        p = REPO / "debian" / name
        assert p.stat().st_mode & stat.S_IXUSR
        text = p.read_text()
        assert text.startswith("#!/bin/sh\nset -e\n") and "#DEBHELPER#" in text


# -- compat ---------------------------------------------------------------------------
def _cert(name: str) -> bytes:
    key = crypto.generate_key(KeySpec("EC", curve="P-256"))
    return crypto.self_signed(key, [name])


def test_load_pem_x509_certificates_keeps_order_and_rejects_garbage():
    bundle = _cert("a.test") + b"\n" + _cert("b.test")
    certs = compat.load_pem_x509_certificates(bundle)
    assert [crypto.cert_names(c) for c in certs] == [["a.test"], ["b.test"]]
    with pytest.raises(ValueError):
        compat.load_pem_x509_certificates(b"no certificate here")


def test_validity_is_timezone_aware_utc():
    cert = x509.load_pem_x509_certificate(_cert("a.test"))
    before, after = compat.not_valid_before(cert), compat.not_valid_after(cert)
    assert before.tzinfo is not None and after.tzinfo is not None
    now = dt.datetime.now(dt.timezone.utc)
    assert before < now < after


def test_file_lock_gets_its_mode_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        lock = compat.file_lock(str(tmp_path / "x.lock"), mode=0o644)
        with lock:
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.lock").stat().st_mode) == 0o644


def test_network_cause_unwraps_acme_2_1_value_errors():
    import requests
    try:
        try:
            raise requests.exceptions.ConnectionError("Connection refused")
        except requests.exceptions.RequestException:
            raise ValueError("Requesting localhost/dir:Connection refused")
    except ValueError as e:
        assert isinstance(compat.network_cause(e), requests.exceptions.ConnectionError)
    plain = ValueError("other")
    assert compat.network_cause(plain) is plain
