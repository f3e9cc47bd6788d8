"""A store with MDs in the states the status code tells apart, and calling the WSGI
application the way mod_wsgi does: shared by the status and wsgi unit tests."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from apache_md.core import crypto, model
from apache_md.core.job import Job
from apache_md.store import jobs
from apache_md.store.fs import DOMAINS, STAGING, Store
from apache_md.wsgi import app

CA = "https://ca.test/dir"


def make_md(name: str, **kw) -> model.ManagedDomain:
    md = model.ManagedDomain(name=name, domains=[name, f"www.{name}"],
                             location=model.Location("x.conf", 1),
                             ca_urls=[CA], contacts=["mailto:a@b.test"], **kw)
    md.vhosts = [model.VHost(server_name=name, aliases=[], ssl=True,
                             location=model.Location("x.conf", 2))] \
        if "vhosts" not in kw else md.vhosts
    return md


def put_cert(store: Store, group: str, md: model.ManagedDomain,
             spec: model.KeySpec = model.KeySpec("Default")):
    key = crypto.generate_key(spec)
    store.write_bytes(group, md.name, spec.file_name("pubcert"),
                      crypto.self_signed(key, md.domains, days=90))
    store.write_bytes(group, md.name, spec.file_name("privkey"), crypto.key_to_pem(key),
                      mode=0o600)


def sample_config(store: Store) -> model.Config:
    """active.test, staged.test (a renewed set staged), new.test (no certificate) and
    failing.test (its renewal failed, with markup in the error)."""
    active, staged, new, failing = (make_md(n) for n in ("active.test", "staged.test",
                                                          "new.test", "failing.test"))
    put_cert(store, DOMAINS, active)
    put_cert(store, DOMAINS, staged)
    put_cert(store, STAGING, staged)
    store.write_json(STAGING, staged.name, "md.json", {"name": staged.name})
    job = Job(staged.name)
    job.start_run()
    job.succeed(datetime.now(timezone.utc), "renewed")
    job.notified = job.notified_renewed = True
    jobs.save(store, STAGING, job)
    job = Job(failing.name)
    job.start_run()
    job.fail(20014, "General error", "urn:ietf:params:acme:error:rejectedIdentifier",
             "<b>no</b> & \"never\"")
    job.next_run = datetime.now(timezone.utc) + timedelta(minutes=5)
    jobs.save(store, STAGING, job)
    return model.Config(main_file="x.conf", server_root="/", settings=model.GlobalSettings(
        store_dir=str(store.base)), mds=[staged, new, failing, active])


def call(environ: dict) -> tuple[str, dict, bytes]:
    out = {}

    def start_response(st, headers):
        out["status"], out["headers"] = st, dict(headers)
    body = b"".join(app.application(environ, start_response))
    return out["status"], out["headers"], body


def env(store: Store, path: str, method: str = "GET", accept: str = "*/*", host: str = "x",
        query: str = "") -> dict:
    return {"APACHE_MD_STORE": str(store.base), "SCRIPT_NAME": path, "PATH_INFO": "",
            "REQUEST_METHOD": method, "HTTP_ACCEPT": accept, "HTTP_HOST": host,
            "QUERY_STRING": query}
