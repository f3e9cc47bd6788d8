"""Unit tests run in any environment, including Debian's package build, which sets
http_proxy to an unreachable address: tests that talk to local servers must not
inherit proxy settings (tests about proxies set them explicitly)."""
import pytest

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
               "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_inherited_proxies(monkeypatch):
    for var in _PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def store(tmp_path):
    """A fresh initialised store."""
    from apache_md.store.fs import Store
    s = Store(tmp_path / "md")
    s.init()
    return s
