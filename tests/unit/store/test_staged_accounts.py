"""store/accounts: an account that comes staged with a set (mod_md's) is saved at activation."""
import os

from apache_md.store.accounts import save_staged
from apache_md.store.fs import ACCOUNTS, STAGING

CA = "https://ca.test/dir"


def stage(store, url, **extra):
    store.write_json(STAGING, "a.test", "account.json",
                     {"status": "valid", "url": url, "ca-url": CA, **extra})
    store.write_bytes(STAGING, "a.test", "account.pem", b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_a_staged_account_is_saved_under_a_free_id_or_the_one_of_its_url(store):
    assert save_staged(store, "a.test") is None  # nothing staged
    store.write_json(ACCOUNTS, "ACME-ca.test-0000", "account.json",
                     {"status": "valid", "url": f"{CA}/acct/1", "ca-url": CA})
    stage(store, f"{CA}/acct/2", eab={"kid": "k", "hmac": "secret"})
    assert save_staged(store, "a.test") == "ACME-ca.test-0001"
    saved = store.dir(ACCOUNTS, "ACME-ca.test-0001")
    assert store.read_json(ACCOUNTS, "ACME-ca.test-0001", "account.json")["url"] == f"{CA}/acct/2"
    assert (saved / "account.pem").read_bytes() == b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
    assert oct(os.stat(saved / "account.json").st_mode & 0o777) == "0o600"  # the hmac
    stage(store, f"{CA}/acct/1")  # known already: nothing written
    assert save_staged(store, "a.test") == "ACME-ca.test-0000"
    assert store.names(ACCOUNTS) == ["ACME-ca.test-0000", "ACME-ca.test-0001"]
    store.write_bytes(STAGING, "a.test", "account.json", b"{broken")
    assert save_staged(store, "a.test") is None
    assert (store.dir(STAGING, "a.test") / "account.json.broken.1").exists()
