"""Shared pytest fixtures: one Pebble per session, a fresh Apache per test.

Everything product-specific (running `apache-md`) belongs in the tests or in a
later conftest layer; this file only knows about the harness.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

# `tests.harness` must be importable however pytest was started (tests/ has
# no __init__.py, so pytest itself only puts tests/ on sys.path).
_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.harness import Apache, Pebble  # noqa: E402
from tests.harness._util import make_tmp_dir  # noqa: E402

E2E_DIR = Path(__file__).resolve().parent / "e2e"
# Ports: the mod_md test suite's defaults. E2E_PORT_OFFSET shifts all of them,
# so two checkouts on one machine can run their e2e tests at the same time.
_OFF = int(os.environ.get("E2E_PORT_OFFSET", "0"))
PORTS = {name: port + _OFF for name, port in {
    "http_port": 5002, "https_port": 5001, "acme_port": 14000, "mgmt_port": 15000,
    "dns_port": 8053, "challtestsrv_port": 8055}.items()}
# Forward proxies of the network tests (mod_md's suite uses 5003 for its proxy).
PROXY_PORTS = (5003 + _OFF, 5004 + _OFF)
# etcd of the fleet tests: one member on ETCD_PORT (client) and +1 (peer); the
# 3-member cluster of the member-loss test on ETCD_PORT+10 ...
ETCD_PORT = 23790 + _OFF
HTTP_PORT = PORTS["http_port"]
HTTPS_PORT = PORTS["https_port"]
E2E_TOOLS = ("/usr/sbin/apache2", "/usr/bin/pebble", "/usr/bin/pebble-challtestsrv",
             "/usr/bin/openssl", "/usr/bin/curl")


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end-to-end tests with real Apache and Pebble")
    # Turn SIGTERM (CI timeout, `kill`) into an interrupt so fixture teardown
    # and the harness's atexit hooks stop Apache and Pebble.
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        def _term(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")
        signal.signal(signal.SIGTERM, _term)


def pytest_collection_modifyitems(config, items):
    missing = [t for t in E2E_TOOLS if not os.path.exists(t)]
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
            # Outside CI a machine without the tools skips e2e; in CI it must fail.
            if missing and not os.environ.get("CI"):
                item.add_marker(pytest.mark.skip(reason=f"missing {', '.join(missing)} "
                                                 "(run `make deps`)"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Remember each phase's outcome so fixtures can keep logs of failed tests.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _failed(request) -> bool:
    return any(getattr(request.node, f"rep_{w}", None) is not None
               and getattr(request.node, f"rep_{w}").failed for w in ("setup", "call"))


@pytest.fixture(scope="session")
def pebble():
    """The session's Pebble + challtestsrv (started on first use). Tests that
    change its config use pebble.restart(...) and should restore it."""
    p = Pebble(**PORTS)
    p.start()
    yield p
    p.stop()
    shutil.rmtree(p.work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd():
    """A one-member etcd for the session (Debian's etcd-server); tests keep apart by
    key prefix. Skipped only where the binary is not installed."""
    from tests.harness.etcd import ETCD_BIN, EtcdCluster
    if not os.path.exists(ETCD_BIN):
        if os.environ.get("CI"):
            pytest.fail(f"{ETCD_BIN} is missing: CI installs etcd-server with `make deps`")
        pytest.skip(f"{ETCD_BIN} is missing (run `make deps`: etcd-server)")
    cluster = EtcdCluster(ETCD_PORT, 1).start()
    yield cluster
    cluster.remove()


@pytest.fixture
def etcd_prefix(request):
    """A key prefix of the test's own in the session's etcd."""
    return "/t/" + "".join(c if c.isalnum() else "-" for c in request.node.name)[:80]


@pytest.fixture
def apache(request):
    """A fresh, not yet started Apache in its own ServerRoot: write_conf() then
    start(). Stopped at teardown; its root is kept (and named) if the test failed."""
    a = Apache(http_port=HTTP_PORT, https_port=HTTPS_PORT)
    yield a
    a.stop()
    if _failed(request):
        sys.stderr.write(f"\n[harness] Apache root kept: {a.root} "
                         f"(error log {a.error_log_path})\n")
    else:
        shutil.rmtree(a.root, ignore_errors=True)


@pytest.fixture
def store_dir(request):
    """A fresh empty directory under /tmp, mode 0755 (pytest's tmp_path is
    0700, which Apache's www-data children cannot enter)."""
    d = make_tmp_dir("md-store-")
    yield d
    if _failed(request):
        sys.stderr.write(f"\n[harness] store kept: {d}\n")
    else:
        shutil.rmtree(d, ignore_errors=True)
