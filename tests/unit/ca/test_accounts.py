"""Accounts in the store: unusable ones are named and set aside, never lost."""

from contextlib import contextmanager

import pytest

from apache_md.ca import accounts
from apache_md.core import crypto
from apache_md.core.model import Location, ManagedDomain
from apache_md.store import broken
from apache_md.store.accounts import free_id
from apache_md.store.fs import ACCOUNTS

CA = "https://ca.test/dir"


def md() -> ManagedDomain:
    return ManagedDomain(name="a.test", domains=["a.test"], location=Location("x.conf", 1),
                         ca_urls=[CA])


def put_account(store, acct_id, pem=None, doc=None):
    key = crypto.generate_key_rsa(2048)
    store.write_bytes(ACCOUNTS, acct_id, "account.pem",
                      crypto.key_to_pem(key, store.key) if pem is None else pem)
    store.write_json(ACCOUNTS, acct_id, "account.json", doc or {
        "status": "valid", "url": f"{CA}/acct/{acct_id}", "ca-url": CA, "contact": []})


def test_unusable_accounts_are_named_and_set_aside_good_ones_used(store):
    put_account(store, "ACME-ca.test-0000", pem=b"-----BEGIN garbage")
    put_account(store, "ACME-ca.test-0001")
    store.write_bytes(ACCOUNTS, "ACME-ca.test-0002", "account.json", b"{not json")
    put_account(store, "ACME-other-0000", pem=b"x", doc={
        "status": "valid", "url": "https://other/acct/1", "ca-url": "https://other/dir"})
    acct, unusable = accounts.find(store, md(), CA)
    assert acct.id == "ACME-ca.test-0001"
    # the broken key of an account of another CA is not looked at (mod_md neither)
    assert [(i, f) for i, f, _ in unusable] == [("ACME-ca.test-0000", "account.pem"),
                                                ("ACME-ca.test-0002", "account.json")]
    for acct_id, file, problem in unusable:
        accounts.set_aside(store, acct_id, file, problem, md())
    d = store.dir(ACCOUNTS, "ACME-ca.test-0000")
    assert sorted(p.name for p in d.iterdir()) == ["account.json.broken.1", "account.pem.broken.1"]
    assert (d / "account.pem.broken.1").read_bytes() == b"-----BEGIN garbage"
    assert accounts.find(store, md(), CA) == (acct, [])  # nothing to report any more
    entries = broken.recent(store)
    assert [e["file"] for e in entries] == ["accounts/ACME-ca.test-0002/account.json",
                                           "accounts/ACME-ca.test-0000/account.pem"]
    assert entries[1]["md"] == "a.test" and "does not decrypt" in entries[1]["problem"]
    assert entries[1]["action"] == ("account ACME-ca.test-0000 set aside (account.json.broken.1, "
                                    "account.pem.broken.1); a new account is registered")
    # the id stays taken: a new account gets a fresh one
    assert free_id(store, CA) == "ACME-ca.test-0003"


def test_an_account_without_key_is_unusable(store):
    put_account(store, "ACME-ca.test-0000")
    store.remove(ACCOUNTS, "ACME-ca.test-0000", "account.pem")
    assert accounts.find(store, md(), CA) == (None, [("ACME-ca.test-0000", "account.pem",
                                                      "missing")])


def test_the_account_an_order_under_way_was_placed_with_is_used_when_it_can_be(store):
    for i in range(3):
        put_account(store, f"ACME-ca.test-000{i}")
    assert accounts.find(store, md(), CA)[0].id == "ACME-ca.test-0000"
    assert accounts.find(store, md(), CA, prefer="ACME-ca.test-0002")[0].id == "ACME-ca.test-0002"
    store.remove(ACCOUNTS, "ACME-ca.test-0002", "account.pem")  # unusable: another one
    acct, unusable = accounts.find(store, md(), CA, prefer="ACME-ca.test-0002")
    assert acct.id == "ACME-ca.test-0000" and unusable[0][:2] == ("ACME-ca.test-0002",
                                                                 "account.pem")
    assert accounts.find(store, md(), CA, prefer="ACME-gone-0000")[0].id == "ACME-ca.test-0000"


def test_an_md_waits_for_its_place_back_only_once_the_account_lock_is_let_go(store):
    """20 MDs starting at once wait for the one registering the account; each found it
    and then waited for a place to work while holding the lock, so they went one by one
    (up to 2 s each). Now the lock is let go first."""
    from contextlib import contextmanager

    from apache_md.store.locks import Busy, store_lock

    seen = []

    class Conn:
        url = CA

        @contextmanager
        def waiting(self):
            put_account(store, "ACME-ca.test-0000")  # registered by another MD meanwhile
            yield
            try:  # back: the place is waited for now
                with store_lock(store, ACCOUNTS, timeout=0):
                    seen.append("free")
            except Busy:
                seen.append("held")

        def use_account(self, jwk, regr):
            seen.append(regr.uri)

    acct = accounts.obtain(store, Conn(), md())
    assert acct.id == "ACME-ca.test-0000" and not acct.new
    assert seen == ["free", f"{CA}/acct/ACME-ca.test-0000"]


def _registering_conn(store, asking, answer):
    """A connection whose registration waits for `answer` (set when it is asked)."""
    from acme import messages

    class Conn:
        url, meta = CA, {}

        @contextmanager
        def waiting(self):
            yield

        def use_account(self, jwk, regr):
            pass

        def new_account(self, reg):
            asking.set()
            assert answer.wait(30)
            return messages.RegistrationResource(uri=f"{CA}/acct/1",
                                                 body=messages.Registration())
    return Conn()


@pytest.mark.parametrize("waits", [True, False])
def test_an_md_waiting_for_a_registration_that_waits_for_the_ca_works_meanwhile(
        store, monkeypatch, waits):
    """The MDs behind the one registering the account make their keys while its
    registration waits for the CA (not while it makes the account key: that would slow
    it), and take the account once it is there."""
    import threading

    monkeypatch.setattr(accounts, "MEANWHILE_AFTER", 0 if waits else 3600)
    monkeypatch.setattr(accounts.keypool, "take", lambda *a: crypto.generate_key_rsa(2048))
    asking, answer = threading.Event(), threading.Event()
    conn = _registering_conn(store, asking, answer)
    the_md = md()
    the_md.contacts = ["mailto:admin@a.test"]
    first = threading.Thread(target=accounts.obtain, args=(store, conn, the_md))
    first.start()
    assert asking.wait(30)
    done = []

    def meanwhile():
        done.append("meanwhile")
        answer.set()  # the CA answers the registration while this MD works

    second = threading.Thread(target=lambda: done.append(
        accounts.obtain(store, conn, the_md, meanwhile=meanwhile).id))
    second.start()
    if not waits:  # its registration is answered before it waited long: nothing meanwhile
        answer.set()
    second.join(30)
    first.join(30)
    answer.set()
    acct_id = accounts.find(store, the_md, CA)[0].id
    assert done == (["meanwhile", acct_id] if waits else [acct_id])
