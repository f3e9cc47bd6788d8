"""The Debian package under test: when the package tests may run, how they run
Debian's tools, and the .deb they install (built once per session)."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from apache_md import __version__

REPO = Path(__file__).resolve().parents[2]
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
# Debian's tools, not a venv's or pyenv's python3 first on PATH.
SYS_ENV = dict(os.environ, PATH="/usr/sbin:/usr/bin:/sbin:/bin", DEBIAN_FRONTEND="noninteractive")


def installed(pkg: str) -> bool:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return p.returncode == 0 and "install ok installed" in p.stdout


def why_not() -> str | None:
    """Why the package tests must not run here, or None."""
    if os.environ.get("CI") == "true":
        return None  # in CI it must run; missing tools are failures
    if os.environ.get("APACHE_MD_TEST_DEB") != "1":
        return ("installs the .deb system-wide: runs in CI, or locally with "
                "APACHE_MD_TEST_DEB=1 (as root, after `make deb-deps`)")
    if os.geteuid() != 0:
        return "needs root to install the package"
    if not shutil.which("dpkg-buildpackage"):
        return "dpkg-buildpackage is missing (`make deb-deps`)"
    if installed("apache-md"):
        return "apache-md is installed on this machine already; not replacing it"
    return None


def run(*cmd: str, ok: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                       env=kw.pop("env", SYS_ENV), **kw)
    if ok:
        assert p.returncode == 0, f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def build(out: Path) -> Path:
    """apache-md_<version>_all.deb in `out`, built from a copy of the work tree,
    lintian-clean of errors (the unit tests ran already: nocheck)."""
    run("make", "-C", str(REPO), "deb", f"DEB_DIR={out}",
        env=dict(SYS_ENV, DEB_BUILD_OPTIONS="nocheck"), timeout=600)
    debs = sorted(out.glob("*.deb"))
    assert [d.name for d in debs] == [f"apache-md_{__version__}_all.deb"]
    return debs[0]


@contextlib.contextmanager
def no_service_starts():
    """policy-rc.d denies every service start (not apache2 on port 80, not the
    worker) while the block runs, as in a container."""
    guard = not POLICY_RC_D.exists()
    if guard:
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        if guard:
            POLICY_RC_D.unlink()
