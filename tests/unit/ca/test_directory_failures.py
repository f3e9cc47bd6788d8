"""A directory the CA cannot give, in mod_md's words (md_acme.c update_directory,
md_acme_setup, md_curl.c curl_status): what md-status shows of each."""
from __future__ import annotations

import pytest

from apache_md.ca import http
from apache_md.ca.client import CAConnection
from apache_md.core.problem import CAProblem
from tests.harness.canned import canned

UNSUCCESSFUL = "Unsuccessful in contacting ACME server at <{}>. If this problem persists"
UNDERSTAND = ("Unable to understand ACME server response from <{}>. Wrong ACME protocol "
              "version or link?")
DIRECTORY = (b'{"newNonce": "http://127.0.0.1:1/n", "newAccount": "http://127.0.0.1:1/a",'
             b' "newOrder": "http://127.0.0.1:1/o"}')
ANSWERS = {  # path: (status, content type, body)
    "/html": (200, "text/html", b"<html>hello</html>"),
    "/garbled": (200, "application/json", b"{not json"),
    "/empty": (200, "application/json", b"{}"),
    "/list": (200, "application/json", b"[1, 2]"),
    "/string": (200, "application/json", b'"dir"'),
    "/no-nonce": (200, "application/json",
                  b'{"newAccount": "http://127.0.0.1:1/a", "newOrder": "http://127.0.0.1:1/o"}'),
    "/numbers": (200, "application/json",
                 b'{"newNonce": 1, "newAccount": 2, "newOrder": 3}'),
    "/e500": (500, "application/problem+json",
              b'{"type": "urn:ietf:params:acme:error:serverInternal", "detail": "db down"}'),
    "/e503": (503, "text/plain", b"maintenance"),
    "/e404": (404, "application/problem+json",
              b'{"type": "urn:ietf:params:acme:error:malformed", "detail": "no such"}'),
    "/ok": (200, "application/json", DIRECTORY),
}


@pytest.fixture(scope="module")
def ca():
    with canned({path.lstrip("/"): a for path, a in ANSWERS.items()}) as url:
        yield url


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(http, "DEFAULT_POLICY", http.RetryPolicy(tries=2, first=0.01))
    yield
    http._gates.clear()  # noqa: SLF001


def failure(url: str) -> CAProblem:
    with pytest.raises(CAProblem) as e:
        CAConnection(url).directory  # noqa: B018
    return e.value


@pytest.mark.parametrize("path, status, description", [
    ("/html", 2, "No such file or directory"), ("/garbled", 22, "Invalid argument")])
def test_a_body_that_is_no_json_cannot_be_read(ca, path, status, description):
    p = failure(ca + path)
    assert (p.status, p.description, p.problem) == (status, description, None)
    assert p.detail.startswith(UNSUCCESSFUL.format(ca + path))


@pytest.mark.parametrize("path", ["/empty", "/list", "/string", "/no-nonce", "/numbers"])
def test_json_that_is_no_acme_v2_directory_is_not_understood(ca, path):
    p = failure(ca + path)
    assert (p.status, p.description, p.problem) == (22, "Invalid argument", None)
    assert p.detail == UNDERSTAND.format(ca + path)


def test_503_is_maintenance(ca):
    p = failure(ca + "/e503")
    assert (p.status, p.description, p.problem) == (11, "Resource temporarily unavailable", None)
    assert p.detail == (f"The ACME server at <{ca}/e503> reports that Service is Unavailable "
                        "(503). This may happen during maintenance for short periods of time.")


@pytest.mark.parametrize("path, status", [("/e500", 500), ("/e404", 404)])
def test_an_error_status_reads_as_one_whatever_the_body(ca, path, status, caplog):
    p = failure(ca + path)
    assert (p.status, p.description, p.problem) == (11, "Resource temporarily unavailable", None)
    assert p.detail == (f"The ACME server at <{ca}{path}> responded with HTTP status {status}. "
                        "This is unusual. Please verify that the URL is correct and that you "
                        "can indeed make request from the server to it by other means, e.g. "
                        "invoking curl/wget.")
    assert ("db down" if status == 500 else "no such") in caplog.text  # the CA's words: log


def test_a_name_that_does_not_resolve_is_refused_at_once(caplog):
    p = failure("https://nosuchhost.invalid/dir")
    assert (p.status, p.description) == (111, "Connection refused")
    assert p.detail.startswith(UNSUCCESSFUL.format("https://nosuchhost.invalid/dir"))
    assert p.ca_trouble == "unreachable"
    assert "resolve" in caplog.text and "tries" not in caplog.text


def test_a_directory_is_read(ca):
    assert CAConnection(ca + "/ok").directory["newOrder"] == "http://127.0.0.1:1/o"
