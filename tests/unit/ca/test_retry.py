"""Transient CA trouble: the retry policy, Retry-After per endpoint for every thread, the
messages, and the outages that lift backoff when a CA answers again."""
from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import josepy as jose
import pytest
import requests
from acme import challenges, messages
from cryptography.hazmat.primitives.asymmetric import rsa

from apache_md.ca import client, http, outages, stapler
from apache_md.ca.client import CAConnection
from apache_md.core.job import Job, now_utc
from apache_md.core.model import Location, ManagedDomain
from apache_md.core.problem import CAProblem
from apache_md.store import jobs
from apache_md.store.fs import STAGING, Store


# -- the policy (pure) ------------------------------------------------------------------------
def test_pauses_double_with_jitter_and_stop_after_the_tries():
    p = http.RetryPolicy(tries=4, budget=100, first=1, longest=3)
    rnd = random.Random(7)
    pauses = [p.pause(n, 100, rnd=rnd) for n in (1, 2, 3)]
    for got, base in zip(pauses, (1, 2, 3)):  # 1, 2, then capped at 3
        assert 0.5 * base <= got <= 1.5 * base
    assert p.pause(4, 100) is None


def test_retry_after_is_waited_exactly_unless_it_outlasts_the_budget():
    p = http.RetryPolicy(tries=8, budget=10)
    assert p.pause(1, 10, retry_after=2) == 2
    assert p.pause(1, 1, retry_after=2) is None  # 1 s left of the budget
    assert p.pause(1, 10, retry_after=3600) is None


def test_a_single_5xx_is_retried_soon_and_a_ca_failing_half_a_minute_is_ridden_out():
    class Rnd:
        def __init__(self, x):
            self.x = x

        def random(self):
            return self.x
    p = http.DEFAULT_POLICY
    assert p.pause(1, 60, rnd=Rnd(1.0)) < 0.2  # one replica's 5xx: at once, nearly
    pauses = [p.pause(n, 60, rnd=Rnd(0.5)) for n in range(1, p.tries)]
    assert None not in pauses and sum(pauses) >= 25 and p.pause(p.tries, 60) is None


def test_waits_for_retry_after_do_not_lengthen_the_next_pause():
    p = http.RetryPolicy(tries=8, first=1, longest=100)
    # the sixth try failed, but only its failure came without a Retry-After: a first pause
    assert 0.5 <= p.pause(6, 100, backoffs=1) <= 1.5
    assert 16 <= p.pause(6, 100) <= 48  # every failure counted


def test_what_is_transient():
    class R:  # a response as far as `transient` looks
        def __init__(self, status, retry_after=None):
            self.status_code = status
            self.headers = {"Retry-After": retry_after} if retry_after else {}
    assert http.transient(Exception(), R(502)).what == "answered 502 Bad Gateway"
    t = http.transient(Exception(), R(429, "2"))
    assert (t.kind, t.status, t.retry_after) == ("http", 429, 2.0)
    assert http.transient(Exception(), R(400)) is None  # a problem with the request itself
    assert http.transient(requests.exceptions.ConnectionError("reset by peer"), None).kind \
        == "reset"
    assert http.transient(requests.exceptions.ReadTimeout(), None).kind == "timeout"
    refused = requests.exceptions.ConnectionError("[Errno 111] Connection refused")
    assert http.transient(refused, None) is None and http.unreachable(refused)
    assert http.transient(requests.exceptions.SSLError("bad cert"), None) is None


def test_gate_holds_an_endpoint_for_every_thread_and_gives_up_past_a_deadline():
    class R:
        status_code, headers = 429, {"Retry-After": "0.2"}
    gate, stop = http.Gate(), threading.Event()
    gate.answered("https://ca.test/new-order", R())
    assert gate.held_for("https://ca.test/authz/1") == 0  # another endpoint: not held
    start = time.monotonic()
    gate.wait("https://ca.test/new-order", stop)
    assert time.monotonic() - start >= 0.19
    R.headers = {"Retry-After": "30"}
    gate.answered("https://ca.test/new-order", R())
    with pytest.raises(http.Held) as e:
        gate.wait("https://ca.test/new-order", stop, deadline=time.monotonic() + 1)
    assert e.value.seconds > 29
    assert http.gate_for("https://ca.test/dir") is http.gate_for("https://CA.test/acme/new")


# -- the client against a local server ---------------------------------------------------------
class FlakyCA:
    """Answers the directory; `script` lists the statuses of the next answers (and their
    headers, and a JSON body instead of the directory's or an HTML error page; an X-Delay
    header holds the answer back that many seconds);
    every 200 comes with a fresh nonce, as an ACME CA's."""

    def __init__(self):
        self.script: list[tuple] = []
        self.times: list[float] = []
        self.requests: list[str] = []  # "METHOD /path"
        self.bodies: list[bytes] = []  # of the POSTs
        ca = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                ca.times.append(time.monotonic())
                ca.requests.append(f"{self.command} {self.path}")
                status, headers, *problem = ca.script.pop(0) if ca.script else (200, {})
                headers = dict(headers)
                time.sleep(float(headers.pop("X-Delay", 0)))  # an answer held up on its way
                body = json.dumps(problem[0]).encode() if problem \
                    else json.dumps({"newNonce": ca.url + "nonce", "newAccount": ca.url + "acct",
                                     "newOrder": ca.url + "order"}).encode() \
                    if status == 200 else b"<html>down</html>"
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if status == 200 else
                                 "application/problem+json" if problem else "text/html")
                if status == 200:
                    self.send_header("Replay-Nonce", jose.encode_b64jose(os.urandom(8)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_POST(self):
                ca.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.do_GET()

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky(monkeypatch):
    monkeypatch.setattr(http, "DEFAULT_POLICY", http.RetryPolicy(tries=3, first=0.01))
    ca = FlakyCA()
    yield ca
    ca.close()
    http._gates.clear()  # noqa: SLF001 - its Retry-After holds nobody else


def test_5xx_is_retried_in_place(flaky):
    flaky.script = [(502, {}), (503, {})]
    conn = CAConnection(flaky.url + "dir")
    assert conn.directory["newOrder"] == flaky.url + "order"
    assert len(flaky.times) == 3


def test_a_ca_that_keeps_failing_is_named_with_the_step_and_the_tries(flaky, caplog):
    """In the log; the renewal's error reads as mod_md's (md_acme_setup)."""
    flaky.script = [(502, {})] * 3
    with pytest.raises(CAProblem) as e:
        CAConnection(flaky.url + "dir").directory  # noqa: B018
    p = e.value
    assert "the CA answered 502 Bad Gateway to directory, 3 tries" in caplog.text
    assert p.detail == (f"The ACME server at <{flaky.url}dir> responded with HTTP status 502. "
                        "This is unusual. Please verify that the URL is correct and that you "
                        "can indeed make request from the server to it by other means, e.g. "
                        "invoking curl/wget.")
    assert p.ca_trouble == "failing"
    assert (p.status, p.description) == (11, "Resource temporarily unavailable")


def test_a_ca_that_keeps_failing_later_is_named_with_the_step_and_the_tries(flaky):
    conn = CAConnection(flaky.url + "dir")
    conn.directory  # noqa: B018
    flaky.script = [(502, {})] * 3
    with pytest.raises(CAProblem) as e:
        conn.call(conn.net.get, flaky.url + "order", step="new-order")
    p = e.value
    assert p.detail.startswith("the CA answered 502 Bad Gateway to new-order, 3 tries"), p
    assert "<Response" not in p.detail and p.ca_trouble == "failing"
    assert p.description == "Bad Gateway"


def test_retry_after_holds_back_that_endpoint_for_every_connection_and_no_other(flaky):
    flaky.script = [(429, {"Retry-After": "1"})]
    CAConnection(flaky.url + "dir").directory  # noqa: B018
    assert flaky.times[1] - flaky.times[0] >= 0.95
    # a long Retry-After fails the step at once, saying how long the CA wants
    flaky.script = [(429, {"Retry-After": "3600"})]
    conn = CAConnection(flaky.url + "other/dir")
    with pytest.raises(CAProblem) as e:
        conn.directory  # noqa: B018
    assert e.value.retry_after == 3600
    assert "the CA asks to wait 3600 s (Retry-After) before directory" in e.value.detail
    again = CAConnection(flaky.url + "other/dir")  # the same endpoint, another connection
    with pytest.raises(CAProblem) as e:
        again.directory  # noqa: B018
    assert e.value.retry_after > 3500
    assert len(flaky.times) == 3  # nothing was sent to it while held
    # another endpoint of the same server is asked at once: a 429 is that endpoint's
    assert CAConnection(flaky.url + "third/dir").directory["newOrder"]
    assert len(flaky.times) == 4


def test_a_503_with_retry_after_to_the_directory_holds_the_whole_server(flaky):
    flaky.script = [(503, {"Retry-After": "3600"})]
    with pytest.raises(CAProblem):
        CAConnection(flaky.url + "dir").directory  # noqa: B018
    with pytest.raises(CAProblem) as e:  # the service is out: every endpoint waits
        CAConnection(flaky.url + "other/dir").directory  # noqa: B018
    assert e.value.retry_after > 3500
    assert len(flaky.times) == 1


def posting(flaky) -> CAConnection:
    """A connection with its directory, ready to POST (a fresh key, no account)."""
    conn = CAConnection(flaky.url + "dir")
    conn.directory  # noqa: B018
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    conn.net.key = jose.JWKRSA(key=key)
    flaky.requests.clear()
    flaky.bodies.clear()
    return conn


def post(conn: CAConnection, flaky) -> None:
    conn.call(conn.net.post, flaky.url + "order", messages.NewOrder(identifiers=()),
              new_nonce_url=flaky.url + "nonce")


def test_a_nonce_is_fetched_as_a_request_of_its_own(flaky, monkeypatch):
    monkeypatch.setattr(client, "NONCE_RESERVE", 0)
    conn = posting(flaky)
    flaky.script = [(502, {})] * 3  # new-nonce fails: the POST is not sent, nor named
    with pytest.raises(CAProblem) as e:
        post(conn, flaky)
    assert e.value.detail.startswith("the CA answered 502 Bad Gateway to new-nonce, 3 tries")
    assert flaky.requests == ["HEAD /nonce"] * 3
    # it failed twice, then the POST fails once: the POST has its three tries still (and
    # the nonce of the one that failed: it never reached the CA)
    flaky.script = [(502, {}), (502, {}), (200, {}), (502, {}), (200, {})]
    flaky.requests.clear()
    post(conn, flaky)
    assert flaky.requests == ["HEAD /nonce"] * 3 + ["POST /order"] * 2


def _nonce_of(body: bytes) -> str:
    protected = json.loads(jose.decode_b64jose(json.loads(body)["protected"]))
    return protected["nonce"]


def test_the_nonce_of_a_post_that_never_reached_the_ca_is_sent_again(flaky, monkeypatch):
    """An error without Replay-Nonce (a load balancer's 5xx, a reset): the next try takes
    the same nonce instead of asking new-nonce. Used after all, the CA says badNonce with
    a fresh one, and that try goes at once."""
    monkeypatch.setattr(client, "NONCE_RESERVE", 0)
    conn = posting(flaky)
    pauses = []
    monkeypatch.setattr(conn.net, "wait", pauses.append)
    bad = {"type": "urn:ietf:params:acme:error:badNonce", "detail": "used"}
    fresh = jose.encode_b64jose(b"fresh")
    flaky.script = [(200, {}), (503, {}), (400, {"Replay-Nonce": fresh}, bad), (200, {})]
    post(conn, flaky)
    assert flaky.requests == ["HEAD /nonce"] + ["POST /order"] * 3
    first, again, third = (_nonce_of(b) for b in flaky.bodies)
    assert first == again and third == fresh
    assert len(pauses) == 2 and pauses[0] > 0 and pauses[1] == 0  # the badNonce: at once
    # badNonces in a row go at once up to BAD_NONCES_AT_ONCE (CAs reject nonces at random),
    # then pause: a CA that rejects every nonce is not asked as fast as it answers
    n = client.BAD_NONCES_AT_ONCE
    conn.net._policy = http.RetryPolicy(tries=n + 3, first=0.01)  # noqa: SLF001 - tries for them

    def rejected(k: int) -> list[tuple]:  # each with a fresh nonce of its own
        return [(400, {"Replay-Nonce": jose.encode_b64jose(os.urandom(8))}, bad)
                for _ in range(k)]
    for script, want in [
            (rejected(n), [0.0] * n),  # at once, each
            (rejected(n + 1), [0.0] * n + [None]),  # then a pause
            (rejected(n) + [(503, {})] + rejected(1), [0.0] * n + [None, 0.0])]:  # at once again
        flaky.script = script + [(200, {})]
        flaky.requests.clear()
        pauses.clear()
        post(conn, flaky)
        assert flaky.requests == ["POST /order"] * (len(script) + 1)
        assert len(pauses) == len(want)
        assert all(p == w if w is not None else p > 0 for p, w in zip(pauses, want))


def test_an_md_waiting_for_anothers_directory_fetch_does_its_own_work_meanwhile(
        flaky, monkeypatch):
    """That fetch waits for the CA (here: the lock held by the test): the MD behind it
    makes its keys meanwhile (CAConnection.meanwhile), then goes on with the directory."""
    monkeypatch.setattr(client, "MEANWHILE_AFTER", 0.01)
    conn = CAConnection(flaky.url + "dir")
    worked = threading.Event()
    conn.meanwhile = worked.set
    shared = conn.net._shared  # noqa: SLF001
    with shared.directory_lock:
        behind = threading.Thread(target=lambda: conn.directory)
        behind.start()
        assert worked.wait(10)
    behind.join(10)
    assert conn.raw_directory["newOrder"] == flaky.url + "order"
    assert flaky.requests == ["GET /dir"]


def test_a_request_on_its_way_gives_the_drives_place_to_another_md(flaky):
    """The place to work (ca/drive) is for CPU: while a request waits for the CA's
    answer, another MD may use it."""
    conn = CAConnection(flaky.url + "dir")
    seen = []

    @contextlib.contextmanager
    def idle():
        seen.append(("away", list(flaky.requests)))
        yield
        seen.append(("back", list(flaky.requests)))
    conn.idle = idle
    conn.directory  # noqa: B018
    assert seen == [("away", []), ("back", ["GET /dir"])]


def test_a_post_does_not_wait_for_new_nonce_held_by_its_retry_after(flaky, monkeypatch):
    """new-nonce answers 429 with a long Retry-After: the POST goes with a nonce the CA
    never issued, and the CA's badNonce answer brings a fresh one for the next try, at
    once. new-nonce is not asked again while it is held."""
    monkeypatch.setattr(client, "NONCE_RESERVE", 0)
    conn = posting(flaky)
    pauses = []
    monkeypatch.setattr(conn.net, "wait", pauses.append)
    bad = {"type": "urn:ietf:params:acme:error:badNonce", "detail": "unknown"}
    fresh = jose.encode_b64jose(b"fresh")
    flaky.script = [(429, {"Retry-After": "3600"}), (400, {"Replay-Nonce": fresh}, bad),
                    (200, {})]
    post(conn, flaky)
    assert flaky.requests == ["HEAD /nonce", "POST /order", "POST /order"]
    assert _nonce_of(flaky.bodies[0]) == jose.encode_b64jose(client.STAND_IN_NONCE)
    assert _nonce_of(flaky.bodies[1]) == fresh
    assert pauses == [0]
    flaky.script = [(400, {"Replay-Nonce": fresh}, bad), (200, {})]
    flaky.requests.clear()
    conn.net._nonces.clear()  # noqa: SLF001
    post(conn, flaky)  # new-nonce still held: not asked
    assert flaky.requests == ["POST /order", "POST /order"]


def test_the_nonce_of_an_error_serves_the_next_try(flaky, monkeypatch):
    monkeypatch.setattr(client, "NONCE_RESERVE", 0)
    conn = posting(flaky)
    bad = {"type": "urn:ietf:params:acme:error:badNonce", "detail": "stale"}
    flaky.script = [(200, {}), (400, {"Replay-Nonce": jose.encode_b64jose(b"fresh")}, bad)]
    post(conn, flaky)
    assert flaky.requests == ["HEAD /nonce", "POST /order", "POST /order"]  # no second HEAD


def test_a_reserve_of_nonces_is_kept_while_they_are_asked_for(flaky):
    conn = posting(flaky)
    post(conn, flaky)  # its nonce was fetched, and the reserve is filled beside it
    shared = conn.net._shared  # noqa: SLF001
    deadline = time.monotonic() + 10
    while shared.refilling and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(shared.nonces) == client.NONCE_RESERVE
    other = CAConnection(flaky.url + "dir")  # another MD's connection takes from it
    other.net.key = conn.net.key
    flaky.requests.clear()
    post(other, flaky)
    assert flaky.requests == ["POST /order"]


# -- a copy of a request held up: only of one safe to repeat -------------------------------------
def _jws(conn: CAConnection, obj, url: str) -> str:
    """The body the library would POST for `obj` (None: a POST-as-GET)."""
    return conn.net._wrap_in_jws(obj, b"nonce", url)  # noqa: SLF001


def test_only_a_request_safe_to_repeat_is_ever_sent_twice(flaky):
    conn = posting(flaky)
    url = flaky.url + "acme/order/1"
    assert http.repeatable("GET", "directory", None)
    assert http.repeatable("HEAD", "new-nonce", None)
    assert http.repeatable("POST", None, _jws(conn, None, url))  # POST-as-GET: a read
    # new-account for a key registered already answers with that account (RFC 8555 7.3.1)
    reg = messages.NewRegistration(contact=("mailto:a@example.test",))
    assert http.repeatable("POST", "new-account", _jws(conn, reg, flaky.url + "acct"))
    # what changes something at the CA, never: a second order, a second finalization...
    order = messages.NewOrder(identifiers=(messages.Identifier(
        typ=messages.IDENTIFIER_FQDN, value="a.test"),))
    assert not http.repeatable("POST", "new-order", _jws(conn, order, flaky.url + "order"))
    finalize = client._RawJSON({"csr": "MIIB"})  # noqa: SLF001
    assert not http.repeatable("POST", None, _jws(conn, finalize, url + "/finalize"))
    challenge_answer = _jws(conn, challenges.HTTP01Response(), flaky.url + "chall/1")
    assert json.loads(challenge_answer)["payload"] == "e30"  # "{}": it starts validation
    assert not http.repeatable("POST", None, challenge_answer)
    for body in (None, "", "not json", "[]", '{"payload": null}'):
        assert not http.repeatable("POST", None, body)
    assert not http.repeatable("PUT", None, _jws(conn, None, url))


@pytest.fixture
def impatient(flaky, monkeypatch):
    """A CA whose usual answer is quick: a repeatable request waits 0.3 s at first."""
    monkeypatch.setattr(client, "PATIENCE_LEAST", 0.3)
    monkeypatch.setattr(client, "PATIENCE_SAMPLES", 1)
    monkeypatch.setattr(client, "NONCE_RESERVE", 0)  # no requests beside the test's
    conn = posting(flaky)  # its directory fetch showed what is usual
    assert conn.net._shared.patience() == 0.3  # noqa: SLF001
    return conn


def test_a_read_held_up_gets_a_copy_beside_it_and_the_first_good_answer_counts(
        impatient, flaky):
    """A late read is not given up: a copy goes beside it with a nonce of its own, and the
    answer that comes first counts, the first try's too."""
    url = flaky.url + "acme/order/1"
    flaky.script = [(200, {}),  # new-nonce
                    (200, {"X-Delay": "2"}, {"which": "first"}),
                    (200, {}),  # new-nonce for the copy: the first's went with the first
                    (200, {}, {"which": "copy"})]
    r = impatient.call(impatient.client._post_as_get, url)  # noqa: SLF001
    assert r.json() == {"which": "copy"}
    assert flaky.requests == ["HEAD /nonce", "POST /acme/order/1"] * 2
    assert _nonce_of(flaky.bodies[0]) != _nonce_of(flaky.bodies[1])
    time.sleep(2)  # the first try's answer, which nobody waits for, has come
    flaky.requests.clear()
    flaky.script = [(200, {"X-Delay": "1"}, {"which": "first"}), (200, {}),
                    (200, {"X-Delay": "5"}, {"which": "copy"})]
    r = impatient.call(impatient.client._post_as_get, url)  # noqa: SLF001 - the last nonce
    assert r.json() == {"which": "first"}
    assert flaky.requests == ["POST /acme/order/1", "HEAD /nonce", "POST /acme/order/1"]


def test_a_copy_whose_nonce_request_fails_goes_with_the_stand_in(impatient, flaky):
    """The copy's new-nonce answers 502: the copy goes with the stand-in nonce, its badNonce
    answer brings a fresh one, and the retry goes with that at once, while the late first
    try's answer is still on its way."""
    url = flaky.url + "acme/order/1"
    bad = {"type": "urn:ietf:params:acme:error:badNonce", "detail": "unknown"}
    fresh = jose.encode_b64jose(b"fresh")
    flaky.script = [(200, {}),  # new-nonce
                    (200, {"X-Delay": "3"}, {"which": "first"}),
                    (502, {}),  # new-nonce for the copy
                    (400, {"Replay-Nonce": fresh}, bad),  # the copy
                    (200, {}, {"which": "retry"})]
    r = impatient.call(impatient.client._post_as_get, url)  # noqa: SLF001
    assert r.json() == {"which": "retry"}
    assert flaky.requests == ["HEAD /nonce", "POST /acme/order/1", "HEAD /nonce",
                              "POST /acme/order/1", "POST /acme/order/1"]
    assert _nonce_of(flaky.bodies[1]) == jose.encode_b64jose(client.STAND_IN_NONCE)
    assert _nonce_of(flaky.bodies[2]) == fresh


def test_no_copy_goes_to_an_endpoint_a_retry_after_holds(impatient, flaky):
    url = flaky.url + "acme/order/1"
    flaky.script = [(200, {}), (200, {"X-Delay": "1.5"}, {"which": "first"})]
    held = requests.Response()
    held.status_code, held.headers["Retry-After"] = 429, "3600"
    # another MD's request to it is answered 429 while this one's answer is on its way
    timer = threading.Timer(0.1, http.gate_for(url).answered, (url, held))
    timer.start()
    r = impatient.call(impatient.client._post_as_get, url)  # noqa: SLF001
    timer.join()
    assert r.json() == {"which": "first"}
    assert flaky.requests == ["HEAD /nonce", "POST /acme/order/1"]


def test_which_try_of_a_hedged_read_counts():
    """ca/hedge.race: the first good answer; the copy's outcome when the first fails; the
    copy's failure when it fails first (the retry policy's); the first when no copy went."""
    from concurrent.futures import Future

    from apache_md.ca import hedge

    class Now:  # runs each task at once, or leaves it pending
        def __init__(self, pending=()):
            self.pending, self.n = pending, 0

        def submit(self, fn):
            f, self.n = Future(), self.n + 1
            if self.n not in self.pending:
                try:
                    f.set_result(fn())
                except Exception as e:  # noqa: BLE001
                    f.set_exception(e)
            return f

    def fails():
        raise requests.exceptions.ConnectionError("reset")

    def notsent():
        raise hedge.NotSent("held")

    good = bool
    f, is_copy = hedge.race(Now(), lambda: 1, lambda: lambda: 2, 0, good)
    assert (f.result(), is_copy) == (1, False)  # the first in time: no copy asked
    f, is_copy = hedge.race(Now({1}), lambda: 1, lambda: lambda: 2, 0, good)
    assert (f.result(), is_copy) == (2, True)
    f, is_copy = hedge.race(Now({1}), lambda: 1, lambda: fails, 0, good)
    assert is_copy and isinstance(f.exception(), requests.exceptions.ConnectionError)
    f, is_copy = hedge.race(Now(), fails, lambda: lambda: 2, 0, good)
    assert not is_copy and f.exception()  # it failed before its patience ran out
    for copy in (lambda: notsent, lambda: None):  # no copy went: the first is waited for
        pool = Now({1})
        orig = pool.submit

        def submit(fn, pool=pool, orig=orig):
            f = orig(fn)
            if pool.n == 1:  # its answer comes later
                threading.Timer(0.3, f.set_result, (1,)).start()
            return f
        pool.submit = submit
        f, is_copy = hedge.race(pool, lambda: 1, copy, 0, good)
        assert (f.result(), is_copy) == (1, False)


def test_a_request_that_changes_something_is_waited_for_however_long(impatient, flaky):
    flaky.script = [(200, {}), (200, {"X-Delay": "1"})]  # new-nonce, then an account update
    impatient.call(impatient.net.post, flaky.url + "acct/1",
                   messages.UpdateRegistration(contact=()), new_nonce_url=flaky.url + "nonce")
    assert flaky.requests == ["HEAD /nonce", "POST /acct/1"]


def test_a_late_new_order_gets_a_copy_unless_it_replaces_a_certificate(impatient, flaky):
    """A second order is left pending (the CA expires it): new-order's late answer gets a
    copy as a read's does. Not with ARI's `replaces` (the CA may refuse a second one)."""
    flaky.script = [(200, {}), (200, {"X-Delay": "2"}, {"which": "first"}),
                    (200, {}),  # new-nonce for the copy
                    (200, {}, {"which": "copy"})]
    r = impatient.call(impatient.net.post, flaky.url + "order",
                       messages.NewOrder(identifiers=()), new_nonce_url=flaky.url + "nonce")
    assert r.json() == {"which": "copy"}
    assert flaky.requests == ["HEAD /nonce", "POST /order"] * 2
    assert _nonce_of(flaky.bodies[0]) != _nonce_of(flaky.bodies[1])
    order = client._RawJSON({"identifiers": [], "replaces": "abc.def"})  # noqa: SLF001
    assert http.hedgeable("POST", "new-order", _jws(impatient, order, flaky.url + "order"))\
        is False
    assert http.hedgeable("POST", "new-order", _jws(impatient, messages.NewOrder(
        identifiers=()), flaky.url + "order"))
    assert not http.hedgeable("POST", None, _jws(impatient, messages.NewOrder(
        identifiers=()), flaky.url + "order"))  # a payload to another URL: never


def test_a_late_new_nonce_held_meanwhile_gives_way_to_the_stand_in(impatient, flaky):
    """Another MD's request to new-nonce is answered 429 while this one's answer is on its
    way: no copy may go, and rather than waiting out the late answer the POST goes with the
    stand-in nonce, whose badNonce answer brings a fresh one."""
    url = flaky.url + "nonce"
    bad = {"type": "urn:ietf:params:acme:error:badNonce", "detail": "unknown"}
    fresh = jose.encode_b64jose(b"fresh")
    flaky.script = [(200, {"X-Delay": "3"}), (400, {"Replay-Nonce": fresh}, bad), (200, {})]
    held = requests.Response()
    held.status_code, held.headers["Retry-After"] = 429, "3600"
    timer = threading.Timer(0.1, http.gate_for(url).answered, (url, held))
    timer.start()
    post(impatient, flaky)
    timer.join()
    assert flaky.requests == ["HEAD /nonce", "POST /order", "POST /order"]
    assert _nonce_of(flaky.bodies[0]) == jose.encode_b64jose(client.STAND_IN_NONCE)
    assert _nonce_of(flaky.bodies[1]) == fresh


def test_a_finalization_held_up_is_read_from_the_order_and_never_sent_twice(
        impatient, flaky):
    """finalize (or a challenge answer) is sent once; when its answer is late the order's
    state, read beside it, says whether the CSR arrived: then its answer is not waited
    for; if not (yet), it is, however long: the finalize is not sent again."""
    from apache_md.core import crypto
    url = flaky.url + "acme/order/1"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    order = messages.OrderResource(uri=url, body=messages.Order(
        status=messages.STATUS_READY, finalize=url + "/finalize"))

    def state(status: str) -> dict:
        return {"status": status, "finalize": url + "/finalize",
                "certificate": flaky.url + "cert/1"}
    flaky.script = [(200, {}),  # new-nonce
                    (200, {"X-Delay": "1.5"}, state("processing")),  # finalize, held up
                    (200, {}),  # new-nonce: the finalize's answer was not waited for
                    (200, {}, state("valid")), (200, {}, state("valid"))]  # the order
    csr = crypto.make_csr(key, ["a.test"], False)
    assert impatient.finalize(order, csr) == flaky.url + "cert/1"
    assert flaky.requests == ["HEAD /nonce", "POST /acme/order/1/finalize", "HEAD /nonce",
                              "POST /acme/order/1", "POST /acme/order/1"]
    # the order is still ready: the CSR has not arrived yet, the finalize's answer counts
    flaky.requests.clear()
    flaky.script = [(200, {"X-Delay": "1.5"}, state("processing")), (200, {}),
                    (200, {}, state("ready")), (200, {}, state("valid"))]
    assert impatient.finalize(order, csr, timeout=10) == flaky.url + "cert/1"
    assert flaky.requests == ["POST /acme/order/1/finalize", "HEAD /nonce",
                              "POST /acme/order/1", "POST /acme/order/1"]


def test_a_refused_connection_is_not_retried_and_marks_the_ca_unreachable(flaky):
    url = flaky.url + "dir"
    flaky.close()
    p = CAConnection(url).reachable()
    assert p is not None and p.ca_trouble == "unreachable"
    assert p.description == "Connection refused"


def test_an_ocsp_responders_retry_after_holds_back_the_next_fetch(flaky):
    flaky.script = [(503, {"Retry-After": "120"})]
    with pytest.raises(stapler.Unreachable) as e:
        stapler.http_fetch(flaky.url + "ocsp", b"request")
    assert e.value.retry_after == 120
    with pytest.raises(stapler.Unreachable, match="asked to wait"):
        stapler.http_fetch(flaky.url + "ocsp", b"request")
    assert len(flaky.times) == 1


# -- outages ----------------------------------------------------------------------------------
def md(name: str) -> ManagedDomain:
    return ManagedDomain(name=name, domains=[name], location=Location("t", 1))


def backing_off(store: Store, name: str) -> None:
    job = Job(name)
    job.errors = 3
    job.next_run = now_utc().replace(year=now_utc().year + 1)
    jobs.save(store, STAGING, job)


def test_a_ca_seen_down_lifts_the_backoff_once_it_answers(store, monkeypatch):
    answers = []
    monkeypatch.setattr(outages, "_probe", lambda url, m, stop: answers.pop(0))
    monkeypatch.setattr(outages, "PROBE_FIRST", 0.0)
    watch = outages.Outages()
    for name in ("a.test", "b.test"):
        backing_off(store, name)
    backing_off(store, "own-fault.test")
    watch.failed(md("a.test"), "https://ca/dir", "failing")
    watch.failed(md("b.test"), "https://ca/dir", "failing")
    answers.append(CAProblem(111, "Connection refused"))  # the probe: still down
    assert watch.revive(store) == []
    assert watch.next_probe() is not None
    watch._down["https://ca/dir"].next_probe = 0  # noqa: SLF001 - due now
    answers.append(None)  # back
    assert watch.revive(store) == ["a.test", "b.test"]
    assert jobs.load(store, STAGING, "a.test").next_run is None
    assert "answers again" in jobs.load(store, STAGING, "a.test").log[0]["detail"]
    assert jobs.load(store, STAGING, "own-fault.test").next_run is not None
    assert watch.next_probe() is None


def test_a_ca_that_answers_but_keeps_failing_keeps_the_backoff(store, monkeypatch):
    monkeypatch.setattr(outages, "_probe", lambda url, m, stop: None)
    monkeypatch.setattr(outages, "PROBE_FIRST", 0.0)
    watch = outages.Outages()
    backing_off(store, "a.test")
    watch.failed(md("a.test"), "https://ca/dir", "failing")
    assert watch.revive(store) == []  # nobody saw it down
    assert jobs.load(store, STAGING, "a.test").next_run is not None
    watch.failed(md("a.test"), "https://ca/dir", "unreachable")  # refused: down for sure
    assert watch.revive(store) == ["a.test"]
