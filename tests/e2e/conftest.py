"""Fixtures shared by the apache-md end-to-end tests."""
from __future__ import annotations

import pwd
import subprocess
import time

import pytest

from tests.conftest import _OFF
from tests.e2e import debpkg
from tests.e2e.mdenv import MDEnv


@pytest.fixture
def env(apache, pebble):
    """apache-md on a fresh private Apache, pointed at the session's Pebble.
    Modules that need another CA set-up (e.g. OCSP) override this fixture."""
    e = MDEnv(apache, pebble)
    yield e
    e.stop_workers()


@pytest.fixture
def service_user():
    """An unprivileged system user, as the Debian package makes `apache-md`."""
    name = f"apache-md-e2e{_OFF}"
    for _ in range(20):  # other test runs may hold the passwd lock for a moment
        p = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                           capture_output=True, text=True)
        if p.returncode in (0, 9):  # 9: exists (left by a killed run)
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"useradd {name}: {p.stderr}")
    yield pwd.getpwnam(name)
    subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture(scope="session")
def deb(tmp_path_factory):
    """The .deb the package tests install, built once per session."""
    return debpkg.build(tmp_path_factory.mktemp("deb"))
