"""The Debian package, for real: build the .deb, install it on this machine,
enable it in Debian's own /etc/apache2, verify the units, purge it again.

It changes the system (a package, a system user, /etc/apache2), so it runs
in CI (CI=true, a throwaway machine, as root) and elsewhere only when asked
with APACHE_MD_TEST_DEB=1. It never starts the system Apache (policy-rc.d
denies service starts while it runs); Apache is only asked for `configtest`.
Whatever it enabled it disables again, and the package is purged at the end.
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
from pathlib import Path

import pytest

from apache_md import __version__
from tests.e2e.debpkg import SYS_ENV, installed, no_service_starts, run, why_not

STORE = Path("/etc/apache2/md")
CONF = Path("/etc/apache2/conf-available/apache-md.conf")
UNITS = [Path("/lib/systemd/system") / u for u in
         ("apache-md.service", "apache-md-activate.path", "apache-md-activate.service")]

pytestmark = pytest.mark.skipif(why_not() is not None, reason=why_not() or "")


@pytest.fixture(scope="module")
def system(deb):
    """The package installed for real; afterwards purged and Apache's state restored."""
    if installed("apache-md"):
        # A leftover of an earlier run on this machine (CI machines are reused):
        # only a package we built ourselves is ours to remove.
        assert os.environ.get("CI"), "apache-md is installed already; purge it first"
        run("apt-get", "purge", "-y", "-q", "apache-md")
    mods_before = set(os.listdir("/etc/apache2/mods-enabled"))
    store_existed = STORE.exists()
    with no_service_starts():  # not apache2 on port 80, not the worker
        try:
            run("apt-get", "install", "-y", "-q", "--no-install-recommends", str(deb))
            yield deb
        finally:
            if installed("apache-md") or run("dpkg", "-s", "apache-md", ok=False).returncode == 0:
                run("dpkg", "--purge", "apache-md", ok=False)
            for mod in sorted({m.rsplit(".", 1)[0] for m in
                               set(os.listdir("/etc/apache2/mods-enabled")) - mods_before}):
                run("a2dismod", "-q", "-f", "-p", mod, ok=False)
            if not store_existed and STORE.exists():
                shutil.rmtree(STORE)


def test_install_enable_verify_purge(system):
    # the system user: no login, no home
    pw = pwd.getpwnam("apache-md")
    assert pw.pw_uid < 1000 and pw.pw_dir == "/nonexistent"
    assert pw.pw_shell in ("/usr/sbin/nologin", "/bin/false")
    assert grp.getgrgid(pw.pw_gid).gr_name == "apache-md"
    # the store, owned by the worker's user; mod_md's default place
    st = STORE.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (pw.pw_uid, pw.pw_gid, 0o755)

    # the command, the man page
    assert run("/usr/bin/apache-md", "--help").stdout.startswith("usage: apache-md")
    assert __version__ in run("/usr/bin/apache-md", "--version").stdout
    assert Path("/usr/share/man/man1/apache-md.1.gz").exists()
    man = run("man", "-l", "-P", "cat", "/usr/share/man/man1/apache-md.1.gz",
              env=dict(SYS_ENV, MANWIDTH="80"), ok=False)
    assert man.returncode != 0 or "PRIVILEGE SPLIT" in man.stdout

    # Debian's own Apache: not enabled by the install, a2enconf enables it
    assert CONF.exists()
    assert not Path("/etc/apache2/conf-enabled/apache-md.conf").exists()
    run("a2enmod", "-q", "wsgi", "ssl")
    run("a2enconf", "-q", "apache-md")
    p = run("apache2ctl", "configtest")
    assert "Syntax OK" in p.stdout + p.stderr
    text = CONF.read_text()
    assert "/usr/lib/python3/dist-packages/apache_md/wsgi/app.py" in text
    assert Path("/usr/lib/python3/dist-packages/apache_md/wsgi/app.py").exists()

    # the units, as installed, and enabled by the package
    p = run("systemd-analyze", "verify", *map(str, UNITS))
    assert "apache-md" not in p.stderr, p.stderr
    assert Path("/etc/systemd/system/multi-user.target.wants/apache-md.service").is_symlink()
    assert Path("/etc/systemd/system/paths.target.wants/apache-md-activate.path").is_symlink()

    # the worker as its user, on Debian's real configuration (no MDs yet): sets the store up
    p = run("runuser", "-u", "apache-md", "--", "/usr/bin/apache-md", "worker", "--once")
    assert "Traceback" not in p.stderr
    assert (STORE / "md_store.json").stat().st_uid == pw.pw_uid
    assert stat.S_IMODE((STORE / "domains").stat().st_mode) == 0o700
    run("runuser", "-u", "apache-md", "--", "/usr/bin/apache-md", "check")

    # purge: conf, units, user and the store it created (no certificates in it) are gone
    run("dpkg", "--purge", "apache-md")
    assert not CONF.exists()
    assert not Path("/etc/apache2/conf-enabled/apache-md.conf").exists()
    assert not any(u.exists() for u in UNITS)
    assert not Path("/etc/systemd/system/multi-user.target.wants/apache-md.service").exists()
    with pytest.raises(KeyError):
        pwd.getpwnam("apache-md")
    with pytest.raises(KeyError):
        grp.getgrnam("apache-md")
    assert not STORE.exists()
    assert not Path("/usr/bin/apache-md").exists()
    run("apache2ctl", "configtest")  # Apache is fine without us


def test_purge_keeps_a_store_with_certificates(system):
    """A store with certificates (ours or mod_md's) survives purge, handed back to root."""
    if not installed("apache-md"):
        run("apt-get", "install", "-y", "-q", "--no-install-recommends", str(system))
    d = STORE / "domains" / "example.org"
    d.mkdir(parents=True, exist_ok=True)
    (d / "pubcert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    shutil.chown(d / "pubcert.pem", "apache-md", "apache-md")
    p = run("dpkg", "--purge", "apache-md")
    assert "keeping the certificate store" in p.stderr + p.stdout
    assert (d / "pubcert.pem").exists()
    assert (d / "pubcert.pem").stat().st_uid == 0
    shutil.rmtree(STORE)
