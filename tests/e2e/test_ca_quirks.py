"""CA behaviours other than Pebble's default, where RFC 8555 lets CAs differ: Pebble's
other modes (chains of 1 and 5), and a front (tests/harness/quirkfront.py) doing
what other CAs do. Each time from the config to the certificate Apache serves."""
from __future__ import annotations

import json
from email.utils import parsedate_to_datetime

import pytest

from tests.conftest import PORTS
from tests.e2e.mdenv import MDEnv
from tests.harness.client import verify_chain
from tests.harness.quirkfront import QuirkFront


@pytest.fixture(scope="module")
def quirks(pebble):
    with QuirkFront(pebble, PORTS["acme_port"] + 60) as front:
        yield front


@pytest.fixture
def front(quirks):
    quirks.reset()
    yield quirks
    quirks.reset()


@pytest.fixture
def qenv(env, front):
    env.ca_url = front.directory_url
    return env


def issue(env: MDEnv, name: str) -> tuple[str, list]:
    """One MD from config to served certificate: the CLI's output and the chain served."""
    env.write_config(f"MDomain {name}", env.ssl_vhost(name))
    env.start()
    p = env.cli("renew")
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "Traceback" not in out, out
    env.cli_ok("activate", "--reload", env.reload_command())
    serial = env.status(name)["cert"]["rsa"]["serial"]
    return out, env.await_served(name, serial)


def last(env: MDEnv, name: str) -> dict:
    return json.loads((env.store / "staging" / name / "job.json").read_text())["last"]


def test_bare_answers_slow_orders_and_refused_first_tries(qenv, front):
    """Every signed request refused once (badNonce), no optional Location nor `up` link,
    a Retry-After on every poll, the first finalize refused (orderNotReady), the order
    `processing` for three polls after it."""
    front.bad_nonce_first = front.bare_answers = True
    front.poll_retry_after = 1
    front.not_ready_finalizes = 1
    front.processing_polls = 3
    out, chain = issue(qenv, "quirks.test")
    assert verify_chain(chain, qenv.pebble.root_pem_path.read_text(), hostname="quirks.test")
    assert front.seen.get("badNonce", 0) >= 5, front.seen
    assert front.seen["orderNotReady"] == 1 and front.seen["processing"] == 3, front.seen
    assert front.seen["challengeAnswered"] == 1, front.seen  # not again for want of `up`


def test_rate_limited_new_order(qenv, front):
    """429 rateLimited with a short Retry-After on the first newOrder."""
    front.rate_limited_orders = 1
    out, chain = issue(qenv, "limited.test")
    assert front.seen["rateLimited"] == 1, out


def test_chain_by_up_links(qenv, front):
    """The certificate URL gives the leaf alone and `Link: rel="up"` to its issuer: the
    chain is completed by following it, as mod_md does."""
    front.chain_by_up = True
    out, chain = issue(qenv, "up.test")
    assert front.seen["leafOnly"] == 1
    assert len(chain) == 2, out
    assert verify_chain(chain, qenv.pebble.root_pem_path.read_text(), hostname="up.test")


def test_directory_requiring_eab(qenv, front):
    """meta.externalAccountRequired and no MDExternalAccountBinding: said before any
    account is registered."""
    front.eab_in_meta = True
    qenv.write_config("MDomain eabmeta.test", qenv.ssl_vhost("eabmeta.test"))
    qenv.start()
    p = qenv.cli("renew")
    assert "Traceback" not in p.stdout + p.stderr
    assert last(qenv, "eabmeta.test")["problem"] == \
        "urn:ietf:params:acme:error:externalAccountRequired"
    accounts = qenv.store / "accounts"
    assert not accounts.exists() or not list(accounts.iterdir())


@pytest.mark.parametrize("length", [1, 5])
def test_pebble_chain_lengths(env, pebble, length):
    """PEBBLE_CHAIN_LENGTH 1 (Pebble 2.4 makes the default 2 of it: leaf and one
    intermediate) and 5 (leaf and 5 more, as Pebble sends them), the whole chain served."""
    with pebble.configured(extra_env={"PEBBLE_CHAIN_LENGTH": str(length),
                                      "PEBBLE_VA_NOSLEEP": "1"}):
        out, chain = issue(env, f"chain{length}.test")
        assert len(chain) == {1: 2, 5: 6}[length], out
        assert verify_chain(chain, pebble.root_pem_path.read_text(),
                            hostname=f"chain{length}.test")


def test_rate_limited_for_an_hour(qenv, front):
    """rateLimited with Retry-After: 3600: the run ends, the job says why and waits."""
    front.rate_limited_orders = 1
    front.rate_limit_retry_after = 3600
    qenv.write_config("MDomain hour.test", qenv.ssl_vhost("hour.test"))
    qenv.start()
    p = qenv.cli("renew")
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    job = json.loads((qenv.store / "staging" / "hour.test" / "job.json").read_text())
    assert job["last"]["problem"] == "urn:ietf:params:acme:error:rateLimited"
    assert "3600 s (Retry-After)" in job["last"]["detail"]
    assert "too many new orders recently" in job["last"]["detail"]  # the CA's own words
    wait = parsedate_to_datetime(job["next-run"]) - parsedate_to_datetime(job["last-run"])
    assert wait.total_seconds() >= 3599, job
    assert front.seen["rateLimited"] == 1



def test_finalize_refused_by_the_ca_itself(qenv, front):
    """500 serverInternal "enrollment failed" to the finalize, the order invalid from then
    on (acme2certifier when its CA handler fails): no second finalize, and the job, the
    status and the log say what the CA said, not only that the order is invalid."""
    front.enrollment_fails = True
    qenv.write_config("MDomain refused.test", qenv.ssl_vhost("refused.test"))
    qenv.start()
    p = qenv.cli("renew")
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "Traceback" not in out, out
    said = "the CA answered 500 to finalize: enrollment failed"
    assert front.seen["finalize"] == 1, (front.seen, out)
    job = last(qenv, "refused.test")
    assert said in job["detail"] and "order invalid" in job["detail"], job
    assert job["problem"] == "urn:ietf:params:acme:error:serverInternal", job
    assert said in out
    status = qenv.status("refused.test")
    assert said in json.dumps(status), status
    assert not (qenv.store / "staging" / "refused.test" / "order.json").exists()
