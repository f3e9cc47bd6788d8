"""MD directives: validation messages, effective values, vhost matching."""
from __future__ import annotations

import itertools
import json
import logging
import os
import random
import subprocess
import textwrap
from pathlib import Path

import pytest

from apache_md.apache.config import (
    NameIndex,
    link,
    load_config,
    load_text,
    overlap,
    vhost_mds,
)
from apache_md.apache.directives import Invalid, parse_pkeys, uri_problem
from apache_md.core import model
from apache_md.core.durations import Timeslice
from apache_md.core.mdjson import md_to_json
from apache_md.core.model import (
    Config,
    GlobalSettings,
    KeySpec,
    Location,
    ManagedDomain,
    VHost,
)

LE = model.KNOWN_CAS["letsencrypt"]
APACHE2 = "/usr/sbin/apache2"


def load(tmp_path: Path, text: str, **kw) -> model.Config:
    main = tmp_path / "main.conf"
    main.write_text(textwrap.dedent(text))
    return load_config(str(main), server_root=str(tmp_path), env=kw.pop("env", {}), **kw)


def errors(cfg: model.Config) -> list[str]:
    return [p.message for p in cfg.errors]


def warnings(cfg: model.Config) -> list[str]:
    return [p.message for p in cfg.warnings]


def only_error(tmp_path: Path, text: str) -> model.Problem:
    cfg = load(tmp_path, text)
    assert len(cfg.errors) == 1, cfg.errors
    return cfg.errors[0]


# --- §3.1 parse-time messages


CA_MSG = ("The CA name '{}' is not known and it is not a URL either (missing uri scheme). "
          "Known CA names are: LetsEncrypt LetsEncrypt-Test Buypass Buypass-Test.")


@pytest.mark.parametrize("line,message", [
    ("MDCertificateFile /x.pem", "MDCertificateFile is only valid inside a '<MDomainSet' context, not here"),
    ("MDCertificateKeyFile /x.pem",
     "MDCertificateKeyFile is only valid inside a '<MDomainSet' context, not here"),
    ("MDMember a.example b.example", "MDMember is only valid inside a '<MDomainSet' context, not here"),
    ("MDMembers sometimes", 'unknown value, use "auto|manual"'),
    ("MDomain auto", "needs at least one domain name"),
    ("MDomain", "needs at least one domain name"),
    ("<MDomain>\n</MDomain>", "<MDomainSet > section must specify a unique domain name"),
    ("<MDomain a.example\n</MDomain>", "<MDomainSet> directive missing closing '>'"),
    ("MDMustStaple yes", "unknown 'yes', supported parameter values are 'on' and 'off'"),
    ("MDStapling 1", "unknown '1', supported parameter values are 'on' and 'off'"),
    ("MDStapleOthers x", "unknown 'x', supported parameter values are 'on' and 'off'"),
    ("MDRenewViaARI x", "unknown 'x', supported parameter values are 'on' and 'off'"),
    ("MDProfileMandatory x", "unknown 'x', supported parameter values are 'on' and 'off'"),
    ("MDBaseServer x", "unknown 'x', supported parameter values are 'on' and 'off'"),
    ("MDServerStatus x", "unknown 'x', supported parameter values are 'on' and 'off'"),
    ("MDCertificateStatus x", "unknown 'x', supported parameter values are 'on' and 'off'"),
    ("MDRenewMode sometimes", "unknown MDDriveMode sometimes"),
    ("MDDriveMode x", "unknown MDDriveMode x"),
    ("MDRequireHttps yes", "unknown 'yes', supported parameter values are 'temporary' and 'permanent'"),
    ("MDCertificateAuthority lets-encrypt", CA_MSG.format("lets-encrypt")),
    ("MDCertificateAuthority LetsEncrypt nope", CA_MSG.format("nope")),
    ("MDRenewWindow dec-31", "MDRenewWindow has unrecognized format"),
    ("MDRenewWindow 1y", "MDRenewWindow has unrecognized format"),
    ("MDRenewWindow 5m", "MDRenewWindow has unrecognized format"),
    ("MDRenewWindow -10%", "MDRenewWindow percent must be less than 100"),
    ("MDRenewWindow 100%", "MDRenewWindow a length of 100% or more is not allowed."),
    ("MDWarnWindow 101%", "MDWarnWindow a length of 100% or more is not allowed."),
    ("MDStaplingRenewWindow 100%", "MDStaplingRenewWindow with a length of 100% or more is not allowed."),
    ("MDStaplingKeepResponse 3w", "MDStaplingKeepResponse has unrecognized format"),
    ("MDInitialDelay soon", "unrecognized duration format"),
    ("MDInitialDelay -1", "initial delay must not be negative"),
    ("MDCheckInterval 500ms", "check interval cannot be less than one second"),
    ("MDCheckInterval x", "unrecognized duration format"),
    ("MDRetryDelay 0", "minimum delay must be greater than 0"),
    ("MDActivationDelay 1w", "unrecognized duration format"),
    ("MDRetryFailover 0", "invalid argument, must be a number > 0"),
    ("MDRetryFailover many", "invalid argument, must be a number > 0"),
    ("MDStoreLocks maybe", "neither 'on', 'off' or a duration specified"),
    ("MDMatchNames some", "invalid argument, must be a 'all' or 'servernames'"),
    ("MDChallengeDns01Version 3", "Only versions `1` and `2` are supported"),
    ("MDPortMap x:80", "no ':' after first port number"),  # strtoi64: 0, no error
    ("MDPortMap 99999999999999999999:1", "unable to parse first port number"),
    ("MDPortMap 80-8080", "no ':' after first port number"),
    ("MDPortMap 80:x", "invalid number for port map, must be in ]0,65535]"),
    ("MDPortMap 80:0", "invalid number for port map, must be in ]0,65535]"),
    ("MDPortMap 80:65536", "invalid number for port map, must be in ]0,65535]"),
    ("MDPortMap 8080:80", "mapped port number must be 80 or 443"),
    ("MDPortMap http:80 https:x", "invalid number for port map, must be in ]0,65535]"),
    ("MDPrivateKeys", "needs to specify the private key type"),
    ("MDPrivateKeys Default RSA", "'Default' allows no other parameter"),
    ("MDPrivateKeys RSA 1024", "must be 2048 or higher in order to be considered safe."),
    ("MDPrivateKeys rsa1024", "must be 2048 or higher in order to be considered safe."),
    ("MDPrivateKeys RSA 9999999999", "is too large for an RSA key length."),
    ("MDPrivateKeys RSA rsa4096", "two keys of type 'RSA' are not possible."),
    ("MDPrivateKeys p-256 P-256", "two keys of type 'P-256' are not possible."),
    ("MDHttpProxy proxy.local:3128", "uri scheme must be http or https"),
    ("MDHttpProxy proxy", "missing uri scheme"),
    ("MDHttpProxy http:", "missing uri identifier"),
    ("MDHttpProxy http://", "missing hostname"),
    ("MDHttpProxy http://bad!host", "invalid hostname"),
    ("MDHttpProxy http://host:0", "invalid port"),
    ("MDHttpProxy http://host:99999", "invalid port"),
    ("MDHttpProxy ftp://host", "uri scheme must be http or https"),
    ('MDHttpProxy "http://a b"', "whitespace in uri"),
    # httpd's words, with mod_md's help text of the directive
    ("MDHttpProxy", "MDHttpProxy takes one argument, URL of a HTTP(S) proxy to use for outgoing "
                    "connections"),
    ("MDRenewWindow 10 d", "MDRenewWindow takes one argument, Time length for renewal before "
                           "certificate expires (defaults to days)."),
    ("MDMustStaple", "MDMustStaple takes one argument, Enable/Disable the Must-Staple flag for new "
                     "certificates."),
    ("MDCertificateCheck crt.sh", "MDCertificateCheck takes two arguments, Set name and URL pattern "
                                  "for a certificate monitoring site."),
    ("MDExternalAccountBinding a b c", "MDExternalAccountBinding takes 1-2 arguments, Set the external "
                                       "account binding keyid and hmac values to use at CA"),
    ("MDPortMap", "MDPortMap takes 1-2 arguments, Declare the mapped ports 80 and 443 on the local "
                  "server. E.g. 80:8000 to indicate that the server port 8000 is reachable as port 80 "
                  "from the internet. Use 80:- to indicate that port 80 is not reachable from the "
                  "outside."),
    ("MDKeyPool", "MDKeyPool takes one argument, private keys of each kind kept ready for new "
                  "certificates"),  # apache-md's own directive, its own text
    ("ManagedDomain a.example", "Invalid command 'ManagedDomain', perhaps misspelled or defined by a module "
                                "not included in the server configuration"),
    ("MDCertificateMonitor a b", "Invalid command 'MDCertificateMonitor', perhaps misspelled or defined by "
                                 "a module not included in the server configuration"),
    ("MDActivationWindow 2-5", "MDActivationWindow '2-5' must look like HH:MM-HH:MM, e.g. 02:00-05:00"),
    ("MDActivationWindow 02:00-02:00", "MDActivationWindow must not be empty (start and end are equal)"),
    ("MDActivationInterval x", "MDActivationInterval: unrecognized duration format"),
    # httpd's ap_getword_conf: a lone quote is an empty argument, and an empty one is missing
    ('MDContactEmail "', "MDContactEmail takes one argument, Email address used for account "
                         "registration"),
    ('MDStoreDir "', "MDStoreDir takes one argument, the directory for file system storage of "
                     "managed domain data."),
    ('MDCertificateCheck crt.sh ""', "MDCertificateCheck takes two arguments, Set name and URL "
                                     "pattern for a certificate monitoring site."),
    ('MDomain ""', "needs at least one domain name"),
])
def test_parse_time_messages(tmp_path, line, message):
    err = only_error(tmp_path, f"# first\n{line}\n")
    assert err.message == message
    assert err.location == model.Location(str(tmp_path / "main.conf"), 2)


@pytest.mark.parametrize("text,message,line", [
    ("<ManagedDomain a.example>\n</ManagedDomain>", "Invalid command '<ManagedDomain', perhaps misspelled "
                                                    "or defined by a module not included in the server "
                                                    "configuration", 1),
    ("<MDomain a.example>\n  MDomain b.example\n</MDomain>",
     "MDomain is not allowed inside an '<MDomainSet' context", 2),
    ("<MDomain a.example>\n  MDStoreDir /x\n</MDomain>",
     "MDStoreDir is not allowed inside an '<MDomainSet' context", 2),
    ("<MDomain a.example>\n  MDPortMap 80:8080\n</MDomain>",
     "MDPortMap is not allowed inside an '<MDomainSet' context", 2),
    ("<MDomain a.example>\n  <MDomain b.example>\n  </MDomain>\n</MDomain>",
     "<MDomain is not allowed inside an '<MDomainSet' context", 2),  # mod_md's words
    ("<Directory /var/www>\n  MDRequireHttps permanent\n</Directory>",
     "MDRequireHttps cannot occur within <Directory> section", 2),
    ("<VirtualHost *:443>\n  <Location /x>\n    MDStapling on\n  </Location>\n</VirtualHost>",
     "MDStapling not allowed in <Location> context", 3),  # httpd's words (invoke_cmd)
    ("<Files x>\n  MDomain a.example\n</Files>", "MDomain not allowed in <Files> context", 2),
    ('<If "true">\n  MDRenewMode manual\n</If>', "MDRenewMode not allowed in <If> context", 2),
    ('<Location />\n  <If "true">\n    MDomain a.example\n  </If>\n</Location>',
     "MDomain not allowed in <If> context", 3),
    ('<If "true">\n  <MDomain a.example>\n  </MDomain>\n</If>',
     "<MDomain not allowed in <If> context", 2),
    ('<Directory />\n  <If "true">\n    MDRequireHttps permanent\n  </If>\n</Directory>',
     "MDRequireHttps cannot occur within <Directory> section", 3),
])
def test_context_messages(tmp_path, text, message, line):
    err = only_error(tmp_path, text + "\n")
    assert err.message == message and err.location.line == line


@pytest.mark.parametrize("section", ['If "%{HTTP_HOST} == \'a.example\'"', "Files x.html"])
def test_require_https_in_if_and_files_is_the_servers(tmp_path, section):
    """MDRequireHttps alone may stand there (OR_AUTHCFG); mod_md sets the server's."""
    cfg = load(tmp_path, f"""\
        MDomain a.example
        <{section}>
          MDRequireHttps permanent
        </{section.split()[0]}>
    """)
    assert cfg.errors == [] and cfg.mds[0].require_https == "permanent"


def test_eab_forms_and_file_errors(tmp_path):
    (tmp_path / "eab.json").write_text(json.dumps({"kid": "kid-1", "hmac": "c2VjcmV0"}))
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "nokid.json").write_text(json.dumps({"hmac": "x"}))
    (tmp_path / "nohmac.json").write_text(json.dumps({"kid": "k", "hmac": ""}))
    for f in ("eab.json", "bad.json", "nokid.json", "nohmac.json"):
        os.chmod(tmp_path / f, 0o640)  # group may read (the worker's group), others not
    cfg = load(tmp_path, """\
        MDExternalAccountBinding kid-0 aG1hYw
        MDomain a.example
        <MDomain b.example>
          MDExternalAccountBinding eab.json
        </MDomain>
        <MDomain c.example>
          MDExternalAccountBinding none
        </MDomain>
    """)
    assert cfg.errors == []
    a, b, c = cfg.mds
    assert (a.eab_kid, a.eab_hmac) == ("kid-0", "aG1hYw")
    assert (b.eab_kid, b.eab_hmac) == ("kid-1", "c2VjcmV0")
    assert (c.eab_kid, c.eab_hmac) == (None, None)
    for name, msg in [
        ("missing.json", f"MDExternalAccountBinding: file not found: {tmp_path}/missing.json"),
        ("bad.json", f"MDExternalAccountBinding: error reading JSON file {tmp_path}/bad.json"),
        ("nokid.json", "MDExternalAccountBinding: JSON does not contain 'kid' element in file "
                       f"{tmp_path}/nokid.json"),
        ("nohmac.json", "MDExternalAccountBinding: JSON does not contain 'hmac' element in file "
                        f"{tmp_path}/nohmac.json"),
    ]:
        assert only_error(tmp_path, f"MDExternalAccountBinding {name}\n").message == msg


# --- MD definitions and effective values


def test_names_lowercased_dedup_and_member_modes(tmp_path):
    cfg = load(tmp_path, """\
        MDomain Example.ORG www.example.org example.org manual
        <MDomain "B.example" auto>
          MDMember c.example "B.EXAMPLE"
          MDMembers manual d.example
        </MDomain>
        MDMembers manual
        MDomain e.example
    """)
    assert cfg.errors == []
    a, b, e = cfg.mds
    assert (a.name, a.domains, a.transitive) == ("example.org", ["example.org", "www.example.org"], False)
    assert (b.name, b.domains, b.transitive) == ("b.example", ["b.example", "c.example", "d.example"], False)
    assert e.transitive is False  # from the global MDMembers
    assert a.location == model.Location(str(tmp_path / "main.conf"), 1)
    assert b.location.line == 2


def test_defaults(tmp_path):
    cfg = load(tmp_path, "MDomain a.example\n")
    md, s = cfg.mds[0], cfg.settings
    assert cfg.errors == []
    assert md.ca_urls == [model.DEFAULT_CA] and not md.ca_urls_configured
    assert md.renew_mode == model.RenewMode.AUTO and md.transitive
    assert md.renew_window == Timeslice(percent=33) and md.warn_window == Timeslice(percent=10)
    assert md.pkey_specs == [] and md.keyspecs == [KeySpec("Default")]
    assert md.require_https is None and not md.must_staple and not md.stapling
    assert md.challenges is None and md.contacts == [] and md.ari_renewals
    assert s.store_dir == str(tmp_path / "md") and s.port_map == {80: 80, 443: 443}
    assert s.retry_delay == 30 and s.retry_failover == 13 and s.check_interval == 12 * 3600
    assert s.match_names == "all" and not s.base_server and s.store_locks is None


def test_md_section_overrides_global(tmp_path):
    cfg = load(tmp_path, """\
        MDCertificateAuthority letsencrypt-test
        MDCertificateAgreement accepted
        MDRenewWindow 14
        MDWarnWindow 20%
        MDPrivateKeys RSA 4096
        MDRequireHttps permanent
        MDMustStaple on
        MDCAChallenges http-01
        MDRenewMode always
        MDProfile shortlived
        MDRenewViaARI off
        MDStapling on
        MDomain g.example
        <MDomain s.example>
          MDCertificateAuthority https://acme.example/dir Buypass
          MDRenewWindow 10%
          MDPrivateKeys secp384r1 rsa3072
          MDRequireHttps off
          MDMustStaple off
          MDCAChallenges dns-01 http-01
          MDRenewMode manual
          MDProfileMandatory on
          MDStapling off
        </MDomain>
    """)
    assert cfg.errors == []
    g, s = cfg.mds
    assert g.ca_urls == [model.KNOWN_CAS["letsencrypt-test"]] and g.ca_urls_configured
    assert g.ca_agreement == "accepted" and s.ca_agreement == "accepted"
    assert g.renew_window == Timeslice(seconds=14 * 86400) and s.renew_window == Timeslice(percent=10)
    assert g.warn_window == s.warn_window == Timeslice(percent=20)
    assert g.pkey_specs == [KeySpec("RSA", bits=4096)]
    assert s.pkey_specs == [KeySpec("EC", curve="secp384r1"), KeySpec("RSA", bits=3072)]
    assert (g.require_https, s.require_https) == ("permanent", None)
    assert (g.must_staple, s.must_staple) == (True, False)
    assert (g.challenges, s.challenges) == (["http-01"], ["dns-01", "http-01"])
    assert (g.renew_mode, s.renew_mode) == (model.RenewMode.ALWAYS, model.RenewMode.MANUAL)
    assert s.ca_urls == ["https://acme.example/dir", model.KNOWN_CAS["buypass"]]
    assert (g.profile, s.profile, g.profile_mandatory, s.profile_mandatory) == \
        ("shortlived", "shortlived", False, True)
    assert not g.ari_renewals and (g.stapling, s.stapling) == (True, False)


def test_global_settings(tmp_path):
    cfg = load(tmp_path, """\
        MDStoreDir state/md
        MDPortMap http:8080 443:-
        MDCheckInterval 1h
        MDInitialDelay 30
        MDRetryDelay 100ms
        MDRetryFailover 2
        MDActivationDelay 2
        MDStoreLocks on
        MDMessageCmd /usr/bin/msg "two words"
        MDNotifyCmd /usr/bin/notify
        MDChallengeDns01Version 2
        MDMatchNames servernames
        MDBaseServer on
        MDServerStatus off
        MDCertificateStatus off
        MDCertificateCheck Example https://example.org?q=
        MDStaplingKeepResponse 2d
        MDStaplingRenewWindow 50%
        MDStapleOthers off
        MDActivationInterval 10mi
        MDActivationWindow 22:30-04:00
    """)
    s = cfg.settings
    assert cfg.errors == []
    assert s.store_dir == str(tmp_path / "state/md") and s.port_map == {80: 8080, 443: None}
    assert (s.check_interval, s.initial_delay, s.retry_delay, s.retry_failover) == (3600, 30, 0.1, 2)
    assert s.activation_delay == 2 * 86400 and s.store_locks == 5.0
    assert s.message_cmd == '/usr/bin/msg "two words"' and s.notify_cmd == "/usr/bin/notify"
    assert s.dns01_version == 2 and s.match_names == "servernames" and s.base_server
    assert not s.server_status and not s.certificate_status and not s.staple_others
    assert s.certificate_check == ("Example", "https://example.org?q=")
    assert s.stapling_keep_response == 2 * 86400 and s.stapling_renew_window == Timeslice(percent=50)
    assert s.activation_interval == 600 and s.activation_window == (22 * 60 + 30, 240)


def test_store_locks_duration_and_keep_percent(tmp_path):
    s = load(tmp_path, "MDStoreLocks 10s\nMDStaplingKeepResponse 50%\n").settings
    assert s.store_locks == 10 and s.stapling_keep_response == 3.5 * 86400
    assert load(tmp_path, "MDStoreLocks 0\n").settings.store_locks is None


def test_key_pool_size(tmp_path):
    assert load(tmp_path, "").settings.key_pool == 16
    assert load(tmp_path, "MDKeyPool 0\n").settings.key_pool == 0
    assert load(tmp_path, "MDKeyPool 200\n").settings.key_pool == 200
    for bad in ("-1", "lots", "1001", "²"):
        c = load(tmp_path, f"MDKeyPool {bad}\n")
        assert c.settings.key_pool == 16
        assert any("MDKeyPool" in str(e) for e in c.errors), bad


def test_module_global_env_values(tmp_path):
    cfg = load(tmp_path, """\
        <VirtualHost *:443>
          MDHttpProxy http://proxy.local:3128
          MDChallengeDns01 /usr/bin/dns01 --quiet
          MDCACertificateFile ca.pem
        </VirtualHost>
        MDHttpProxyCACertificateFile /etc/proxy-ca.pem
        MDomain a.example
        <MDomain b.example>
          MDHttpProxy https://other:8443
          MDChallengeDns01 /opt/dns "x y"
          MDCACertificateFile none
        </MDomain>
    """)
    assert cfg.errors == []
    a, b = cfg.mds
    assert a.proxy_url == "http://proxy.local:3128" and b.proxy_url == "https://other:8443"
    assert a.dns01_cmd == "/usr/bin/dns01 --quiet" and "dns01_cmd" not in a.own_env
    assert b.dns01_cmd == '/opt/dns "x y"' and "dns01_cmd" in b.own_env
    assert a.ca_certs == str(tmp_path / "ca.pem") and b.ca_certs is None
    assert a.proxy_ca_certs == b.proxy_ca_certs == "/etc/proxy-ca.pem"
    # md.json and md-status show only what the MD's section set (mod_md keeps the
    # server-level values in its module env)
    ja, jb = md_to_json(a), md_to_json(b)
    assert not {"cmd-dns-01", "proxy-url", "ca-certs", "proxy-ca-certs"} & ja.keys()
    assert jb["proxy-url"] == "https://other:8443" and jb["cmd-dns-01"] == '/opt/dns "x y"'
    assert "proxy-ca-certs" not in jb


def test_vhost_md_settings_are_ignored_with_warning(tmp_path):
    cfg = load(tmp_path, """\
        MDomain a.example
        <VirtualHost *:443>
          ServerName a.example
          SSLEngine on
          MDRenewWindow 1d
          MDStapling on
        </VirtualHost>
    """)
    assert cfg.errors == []
    assert cfg.mds[0].renew_window == Timeslice(percent=33)
    assert any("MDRenewWindow inside <VirtualHost> has no effect" in w for w in warnings(cfg))
    assert cfg.vhosts[0].stapling is True


def test_static_files(tmp_path):
    cfg = load(tmp_path, """\
        <MDomain a.example>
          MDCertificateFile certs/a.pem
          MDCertificateKeyFile /keys/a.key
        </MDomain>
        <MDomain b.example>
          MDCertificateFile b.pem
        </MDomain>
        <MDomain c.example>
          MDCertificateKeyFile c.key
        </MDomain>
    """)
    a = cfg.mds[0]
    assert a.cert_files == [str(tmp_path / "certs/a.pem")] and a.key_files == ["/keys/a.key"]
    assert a.is_static
    assert errors(cfg) == [
        "AH10170: The Managed Domain 'b.example' needs one MDCertificateKeyFile for each MDCertificateFile.",
        "AH10171: The Managed Domain 'c.example' has MDCertificateKeyFile(s) but no MDCertificateFile.",
    ]


@pytest.mark.parametrize("args,specs", [
    (["Default"], [KeySpec("Default")]),
    (["RSA"], [KeySpec("RSA", bits=2048)]),
    (["rsa", "3072"], [KeySpec("RSA", bits=3072)]),
    (["RSA4096", "P-256"], [KeySpec("RSA", bits=4096), KeySpec("EC", curve="P-256")]),
    (["secp256r1", "RSA", "P-384"],
     [KeySpec("EC", curve="secp256r1"), KeySpec("RSA", bits=2048), KeySpec("EC", curve="P-384")]),
    (["P-256", "secp256r1"], [KeySpec("EC", curve="P-256"), KeySpec("EC", curve="secp256r1")]),
    (["X25519"], [KeySpec("EC", curve="X25519")]),
])
def test_key_specs(args, specs):
    assert parse_pkeys(args) == specs


def test_known_ca_names_case_insensitive(tmp_path):
    cfg = load(tmp_path, "MDCertificateAuthority LETSENCRYPT buypass-test ftp://odd.example/x\nMDomain a.x\n")
    assert cfg.errors == []
    assert cfg.mds[0].ca_urls == [LE, model.KNOWN_CAS["buypass-test"], "ftp://odd.example/x"]


@pytest.mark.parametrize("uri,problem", [
    ("https://acme.example/dir", None), ("http://[::1]:8080", None), ("http://127.0.0.1", None),
    ("urn:x", None), ("nope", "missing uri scheme"),
])
def test_uri_problem(uri, problem):
    assert uri_problem(uri) == problem


# --- Listen, vhosts, matching


def test_listen_and_vhost_ports(tmp_path):
    cfg = load(tmp_path, """\
        Listen 80
        Listen 1.2.3.4:8080
        Listen [::1]:443 https
        Listen 443
        <VirtualHost *:443 [::1]:8443>
          ServerName WWW.Example.org:443
          ServerAlias Alias.example.org other.example.org
          ServerAdmin admin@example.org
          SSLEngine on
          Protocols h2 http/1.1
          SSLCertificateFile certs/x.pem
          SSLCertificateKeyFile /keys/x.key
          IncludeOptional md/apache/www.example.org.conf
        </VirtualHost>
        <VirtualHost _default_:80>
          ServerName https://plain.example.org
        </VirtualHost>
        <VirtualHost *>
        </VirtualHost>
    """)
    assert cfg.listen_ports == [80, 8080, 443]
    v1, v2, v3 = cfg.vhosts
    assert v1.ports == [443, 8443] and v1.ssl and v1.protocols == ["h2", "http/1.1"]
    assert v1.server_name == "www.example.org" and v1.aliases == ["alias.example.org", "other.example.org"]
    assert v1.server_admin == "admin@example.org"
    assert v1.cert_files == [str(tmp_path / "certs/x.pem")] and v1.key_files == ["/keys/x.key"]
    assert v1.includes == [str(tmp_path / "md/apache/www.example.org.conf")]
    assert v1.location.line == 5
    assert v2.ports == [80] and v2.server_name == "plain.example.org" and not v2.ssl
    assert v3.ports == [80, 8080, 443]


def test_debian_user_group_and_servername(tmp_path):
    cfg = load(tmp_path, "User ${RUN_USER}\nGroup www-data\nServerName main.example\n",
               env={"RUN_USER": "www-data"})
    assert (cfg.user, cfg.group) == ("www-data", "www-data")


VHOSTS = """\
    <VirtualHost *:443>
      ServerName a.example.org
      ServerAlias www.a.example.org
      SSLEngine on
    </VirtualHost>
    <VirtualHost *:80>
      ServerName a.example.org
      ServerAlias plain.a.example.org
    </VirtualHost>
"""


def test_auto_members_from_ssl_vhosts(tmp_path):
    cfg = load(tmp_path, "MDomain a.example.org\n" + VHOSTS)
    assert cfg.errors == []
    md = cfg.mds[0]
    assert md.domains == ["a.example.org", "www.a.example.org"]  # not the http-only alias
    assert [v.location.line for v in md.vhosts] == [2, 7] and len(md.ssl_vhosts) == 1


def test_manual_members_warn_about_unmanaged_alias(tmp_path):
    cfg = load(tmp_path, "MDomain a.example.org manual\n" + VHOSTS)
    md = cfg.mds[0]
    assert md.domains == ["a.example.org"]
    assert warnings(cfg) == [
        "AH10040: Virtual Host a.example.org:443 matches Managed Domain 'a.example.org', but the "
        "name/alias www.a.example.org itself is not managed. A requested MD certificate will not "
        "match ServerName."]


def test_unused_md_and_require_https_warnings(tmp_path):
    cfg = load(tmp_path, """\
        MDomain nothing.example
        <MDomain plain.example>
          MDRequireHttps temporary
        </MDomain>
        <VirtualHost *:80>
          ServerName plain.example
        </VirtualHost>
    """)
    assert cfg.errors == []
    assert warnings(cfg) == [
        "AH10045: No VirtualHost matches Managed Domain nothing.example",
        "AH10105: MD plain.example does not match any VirtualHost with 'SSLEngine on', but is configured "
        "to require https. This cannot work."]
    assert cfg.warnings[0].md == "nothing.example"


def test_overlap_errors(tmp_path):
    cfg = load(tmp_path, """\
        MDomain a.example b.example
        MDomain c.example B.example
        MDomain *.wild.example
        MDomain www.wild.example
        MDomain x.example www.x.example
        MDomain *.x.example
    """)
    main = tmp_path / "main.conf"
    assert errors(cfg) == [
        f"AH10038: two Managed Domains have an overlap in domain 'b.example', first definition in "
        f"{main}(line 1), second in {main}(line 2)",
        f"AH10038: two Managed Domains have an overlap in domain 'www.wild.example', first definition in "
        f"{main}(line 3), second in {main}(line 4)",
    ]
    assert cfg.errors[0].location.line == 2  # a wildcard after its subdomain's MD is none


def test_servernames_mode_skips_overlap_and_prefers_specific(tmp_path):
    cfg = load(tmp_path, """\
        MDMatchNames servernames
        MDomain *.example.org
        MDomain www.example.org
        <VirtualHost *:443>
          ServerName www.example.org
          ServerAlias other.example.net
          SSLEngine on
        </VirtualHost>
        <VirtualHost *:443>
          ServerName mail.example.org
          SSLEngine on
        </VirtualHost>
    """)
    assert cfg.errors == []
    wild, www = cfg.mds
    assert [v.server_name for v in www.vhosts] == ["www.example.org"]
    assert [v.server_name for v in wild.vhosts] == ["mail.example.org"]
    assert www.domains == ["www.example.org", "other.example.net"]


def test_conflict_two_mds_one_ssl_vhost(tmp_path):
    cfg = load(tmp_path, """\
        MDomain a.example
        MDomain b.example
        <VirtualHost *:443>
          ServerName a.example
          ServerAlias b.example
          SSLEngine on
        </VirtualHost>
        <VirtualHost *:80>
          ServerName a.example
          ServerAlias b.example
        </VirtualHost>
    """)
    assert errors(cfg) == ["AH10042: conflict: 2 MDs match to SSL VirtualHost a.example, "
                           "there can at most be one."]
    assert cfg.errors[0].location.line == 3
    assert cfg.mds[0].domains == ["a.example"]  # no auto members from a conflicting vhost


def test_wildcard_md_covers_vhost(tmp_path):
    cfg = load(tmp_path, """\
        MDomain *.example.org
        <VirtualHost *:443>
          ServerName www.example.org
          SSLEngine on
        </VirtualHost>
    """)
    assert cfg.errors == [] and cfg.mds[0].domains == ["*.example.org"]
    assert len(cfg.mds[0].vhosts) == 1


def test_base_server(tmp_path):
    text = "ServerName base.example\nSSLEngine on\nListen 443\nMDomain base.example\n"
    cfg = load(tmp_path, text)
    assert cfg.vhosts == [] and cfg.mds[0].vhosts == []
    cfg = load(tmp_path, text + "MDBaseServer on\n")
    base = cfg.vhosts[0]
    assert base.is_base and base.ssl and base.ports == [443] and base.server_name == "base.example"
    assert cfg.mds[0].vhosts == [base] and cfg.warnings == []


# --- contacts


def test_contact_precedence(tmp_path):
    cfg = load(tmp_path, """\
        ServerAdmin webmaster@localhost
        MDomain a.example
        <MDomain b.example>
          MDContactEmail b@example.org
        </MDomain>
    """)
    assert cfg.mds[0].contacts == ["mailto:webmaster@localhost"]
    assert cfg.mds[1].contacts == ["mailto:b@example.org"]
    cfg = load(tmp_path, "ServerAdmin admin@x\nMDContactEmail global@example.org\nMDomain a.example\n")
    assert cfg.mds[0].contacts == ["mailto:global@example.org"]


def test_contact_from_vhost(tmp_path):
    cfg = load(tmp_path, """\
        MDomain a.example
        MDomain b.example
        <VirtualHost *:443>
          ServerName a.example
          ServerAdmin admin@a.example
          MDContactEmail md@a.example
        </VirtualHost>
        <VirtualHost *:443>
          ServerName b.example
          ServerAdmin mailto:admin@b.example
        </VirtualHost>
    """)
    assert cfg.mds[0].contacts == ["mailto:md@a.example"]
    assert cfg.mds[1].contacts == ["mailto:admin@b.example"]
    assert cfg.vhosts[0].md_contact == "mailto:md@a.example"


# --- whole files


def test_mod_md_loaded_is_reported(tmp_path):
    cfg = load(tmp_path, "LoadModule md_module /usr/lib/apache2/modules/mod_md.so\nMDomain a.example\n")
    assert len(cfg.errors) == 1 and "a2dismod md" in cfg.errors[0].message
    assert "md_module" in cfg.modules


def test_md_directives_in_ifmodule_and_included_files(tmp_path):
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites/a.conf").write_text(textwrap.dedent("""\
        <IfModule md_module>
          <MDomain a.example>
            MDRenewWindow 7d
          </MDomain>
        </IfModule>
        <IfModule mod_ssl.c>
          Never here
        </IfModule>
    """))
    cfg = load(tmp_path, "IncludeOptional sites/*.conf\n")
    assert cfg.errors == []
    md = cfg.mds[0]
    assert md.renew_window == Timeslice(seconds=7 * 86400)
    assert md.location == model.Location(str(tmp_path / "sites/a.conf"), 2)


def test_problem_str_is_file_line_message(tmp_path):
    cfg = load(tmp_path, "MDRenewWindow soon\n")
    assert str(cfg.errors[0]) == f"{tmp_path}/main.conf:1: MDRenewWindow has unrecognized format"


def test_debian_default_config_loads():
    if not os.path.exists("/etc/apache2/apache2.conf"):
        pytest.skip("no Debian apache2")
    cfg = load_config("/etc/apache2/apache2.conf")
    assert cfg.errors == []
    assert cfg.server_root == "/etc/apache2" and cfg.settings.store_dir == "/etc/apache2/md"
    assert 80 in cfg.listen_ports and cfg.vhosts


def test_invalid_helper_is_an_exception():
    with pytest.raises(Invalid):
        parse_pkeys([])


def test_mdomain_inside_vhost_is_global(tmp_path):
    cfg = load(tmp_path, """\
        <VirtualHost *:443>
          ServerName a.example
          SSLEngine on
          MDomain a.example
          <MDomain b.example>
            MDRenewMode always
          </MDomain>
        </VirtualHost>
    """)
    assert cfg.errors == []
    a, b = cfg.mds
    assert a.vhosts == cfg.vhosts and b.renew_mode == model.RenewMode.ALWAYS
    assert [w for w in warnings(cfg) if "b.example" in w] == [
        "AH10045: No VirtualHost matches Managed Domain b.example"]


def test_member_mode_in_section_beats_tokens(tmp_path):
    cfg = load(tmp_path, "<MDomain a.example manual>\n  MDMembers auto\n</MDomain>\n")
    assert cfg.errors == [] and cfg.mds[0].transitive is True


def test_eab_file_readable_by_others_is_refused(tmp_path):
    f = tmp_path / "eab.json"
    f.write_text(json.dumps({"kid": "kid-1", "hmac": "c2VjcmV0"}))
    for mode in (0o644, 0o604, 0o601):
        os.chmod(f, mode)
        p = only_error(tmp_path, "<MDomain a.example>\n  MDExternalAccountBinding eab.json\n"
                                 "</MDomain>\n")
        assert p.location.line == 2
        assert p.message == (f"MDExternalAccountBinding: {f} holds a secret (the EAB hmac) but "
                             f"is accessible by others (mode {mode:04o}); make it private, "
                             f"e.g. chmod o-rwx {f}")
    os.chmod(f, 0o600)
    assert load(tmp_path, "MDExternalAccountBinding eab.json\n").errors == []
    (tmp_path / "dir.json").mkdir()
    assert only_error(tmp_path, "MDExternalAccountBinding dir.json\n").message == \
        f"MDExternalAccountBinding: file not found: {tmp_path}/dir.json"


def test_ip_names_are_normalized(tmp_path):
    cfg = load(tmp_path, """\
        Listen 443
        MDomain 127.0.0.1 [::1] 0:0::2
        <VirtualHost *:443>
          ServerName [::1]:443
          ServerAlias 127.0.0.1 [0::2]
          SSLEngine on
        </VirtualHost>
    """)
    assert cfg.errors == []
    md, = cfg.mds
    assert md.domains == ["127.0.0.1", "::1", "::2"]
    assert cfg.vhosts[0].names == ["::1", "127.0.0.1", "::2"]
    assert md.vhosts == [cfg.vhosts[0]]


def test_challenge_and_curve_warnings(tmp_path):
    cfg = load(tmp_path, """\
        <MDomain a.example>
          MDCAChallenges tls-alpn-01 http-01 magic-01
          MDPrivateKeys secp256r1 X25519 brainpoolP256r1
        </MDomain>
    """)
    assert cfg.errors == []
    w = [(p.location.line, p.message) for p in cfg.warnings if p.location]
    assert (2, "MDCAChallenges: tls-alpn-01 is never used by apache-md: answering it needs a "
               "hook into mod_ssl's TLS handshake, which only a C module (mod_md) has. Use "
               "http-01 (port 80 reachable) and/or dns-01 (MDChallengeDns01).") in w
    assert (2, "MDCAChallenges: unknown challenge type 'magic-01' is ignored; known types are "
               "http-01 and dns-01") in w
    assert (3, "MDPrivateKeys: X25519 is a key-agreement key: no certificate can be made for it "
               "(mod_md accepts it and fails every renewal); left out") in w
    assert not [m for _, m in w if "secp256r1" in m]
    assert cfg.mds[0].pkey_specs == [KeySpec("EC", curve="secp256r1"), KeySpec("EC", curve="brainpoolP256r1")]


# Key types by what Debian 12's mod_ssl does with them (tests/e2e/test_key_types.py
# starts a real Apache with each): (spec, kept, the warning's distinctive words or None).
KEY_TYPES = [
    ("rsa2048", True, None), ("RSA 16384", True, None), ("P-256", True, None),
    ("secp384r1", True, None), ("P-521", True, None),
    ("X25519", False, "key-agreement key"), ("x448", False, "key-agreement key"),
    ("P-192", False, "Apache would not start"), ("prime192v1", False, "Apache would not start"),
    ("Ed25519", False, "ec curve unknown"), ("nonsense", False, "ec curve unknown"),
    ("P-224", True, "most will not connect"), ("secp256k1", True, "most will not connect"),
    ("brainpoolP384r1", True, "most will not connect"),
]


@pytest.mark.parametrize("spec,kept,words", KEY_TYPES)
def test_key_types_mod_ssl_cannot_serve_are_left_out(tmp_path, spec, kept, words):
    cfg = load(tmp_path, f"MDPrivateKeys P-384 {spec}\nMDomain a.example\n")
    assert cfg.errors == []
    ours = [w for w in cfg.warnings if w.message.startswith("MDPrivateKeys")]
    assert [w.location.line for w in ours] == ([1] if words else [])
    assert all(words in w.message for w in ours)
    assert len(cfg.mds[0].pkey_specs) == (2 if kept else 1)


def test_key_types_none_left_means_the_directive_is_not_there(tmp_path):
    cfg = load(tmp_path, """\
        MDPrivateKeys secp384r1
        <MDomain a.example>
          MDPrivateKeys X25519
        </MDomain>
    """)
    assert cfg.mds[0].pkey_specs == [KeySpec("EC", curve="secp384r1")]  # the global one
    assert "MDPrivateKeys: no key type is left; the directive is ignored" in warnings(cfg)


@pytest.mark.parametrize("text,can_http", [
    ("Listen 80\nListen 443\n", True),
    ("Listen 8080\nMDPortMap http:8080\n", True),
    ("Listen 80\nMDPortMap 80:8080\n", False),  # mapped to a port nobody listens on
    ("Listen 80\nMDPortMap http:-\n", False),
    ("", True),  # no Listen known (a snippet): only the port map decides
])
def test_can_http_from_listen_and_port_map(tmp_path, text, can_http):
    cfg = load(tmp_path, text)
    assert cfg.errors == [] and cfg.settings.can_http is can_http


def test_name_index_agrees_with_pairwise_matching():
    """The index that replaces comparing every MD with every other finds the same MDs."""
    rnd = random.Random(7)
    labels = ["a", "b", "www", "mail", "*"]
    bases = ["x.test", "y.test", "x.y.test"]

    def name():
        return f"{rnd.choice(labels)}.{rnd.choice(bases)}"
    loc = Location("t.conf", 1)
    mds = [ManagedDomain(f"md{i}", list(dict.fromkeys(name() for _ in range(3))), loc)
           for i in range(40)]
    index = NameIndex(mds)
    for n in [f"{lb}.{b}" for lb in labels for b in bases] + ["X.Test.", "x.test", "test"]:
        assert [mds[i] for i in index.covering(n)] == \
            [m for m in mds if m.covers(n) or n in m.domains], n
    pairs = [(a.name, b.name, overlap(a, b)) for a, b in itertools.combinations(mds, 2)]
    assert sum(1 for p in pairs if p[2]) > 10
    cfg = Config("t.conf", "/", GlobalSettings(), mds=mds)
    errs: list = []
    link(cfg, errs, [])
    assert [e.message.split("'")[1] for e in errs if "AH10038" in e.message] == \
        [n for _, _, n in pairs if n]
    for mode in ("all", "servernames"):
        vh = VHost(loc, server_name="www.x.test", aliases=["b.y.test"])
        brute = ([m for m in mds if m.covers("www.x.test") or "b.y.test" in m.domains]
                 if mode == "all" else
                 ([m for m in mds if m.covers("www.x.test") and "www.x.test" in m.domains]
                  or [m for m in mds if m.covers("www.x.test")]))
        assert vhost_mds(vh, mds, mode) == brute


def test_argument_lists_as_httpd_hands_them_over(tmp_path):
    names = " ".join(f"n{i}.example" for i in range(66))
    cfg = load(tmp_path, f"""\
        MDomain {names}
        MDPortMap http:8080 ""
        MDCAChallenges dns-01 "" http-01
    """)
    assert errors(cfg) == []
    assert cfg.mds[0].domains == [f"n{i}.example" for i in range(64)]  # TAKE_ARGV: 64 at most
    assert ("MDomain: httpd hands a directive at most 64 arguments; the 2 after the 64th are "
            "ignored (by mod_md too)") in warnings(cfg)
    assert cfg.settings.port_map[80] == 8080  # TAKE12: an empty second argument is none
    assert cfg.mds[0].challenges == ["dns-01", "", "http-01"]  # TAKE_ARGV keeps inner empty ones


# --- numbers and durations: range checks (issue 12.3)
#
# (line, mod_md 2.6's verdict with Debian's httpd (`apache2 -t`, test_mod_md_agrees),
#  apache-md's error or None when accepted). Where the two differ, mod_md accepts a value
# it then computes garbage from (apr_time_t or C int overflow); apache-md refuses it.
OOR = "is out of range: at most 36500d (100 years)"
RANGES = [
    ("MDCheckInterval 100000000000000", "Syntax OK", f"MDCheckInterval 100000000000000 {OOR}"),
    ("MDCheckInterval 2000000000d", "Syntax OK", f"MDCheckInterval 2000000000d {OOR}"),
    ("MDCheckInterval 9223372036854775808", "unrecognized duration format",
     "unrecognized duration format"),
    ("MDCheckInterval 999ms", "check interval cannot be less than one second",
     "check interval cannot be less than one second"),
    ('MDCheckInterval "10 s"', "unrecognized duration format", "unrecognized duration format"),
    ("MDCheckInterval 10sec", "Syntax OK", None),  # mod_md reads a unit by its first letters
    ("MDInitialDelay 36501d", "Syntax OK", f"MDInitialDelay 36501d {OOR}"),
    ("MDRetryDelay 1ms", "Syntax OK", None),
    ("MDRetryDelay 36501d", "Syntax OK", f"MDRetryDelay 36501d {OOR}"),
    ("MDActivationDelay -1d", "Syntax OK", None),
    ("MDActivationDelay -36501d", "Syntax OK", f"MDActivationDelay -36501d {OOR}"),
    ("MDRenewWindow 999999999999999999999999999999", "MDRenewWindow has unrecognized format",
     "MDRenewWindow has unrecognized format"),
    ("MDRenewWindow 2000000000d", "Syntax OK", f"MDRenewWindow 2000000000d {OOR}"),
    ("MDRenewWindow 30days", "Syntax OK", None),
    ("MDRenewWindow 33.5%", "MDRenewWindow has unrecognized format",
     "MDRenewWindow has unrecognized format"),
    ("MDWarnWindow 36501", "Syntax OK", f"MDWarnWindow 36501 {OOR}"),
    ("MDStaplingRenewWindow 40000d", "Syntax OK", f"MDStaplingRenewWindow 40000d {OOR}"),
    ("MDStaplingKeepResponse 99999999999999999999999d", "MDStaplingKeepResponse has unrecognized format",
     "MDStaplingKeepResponse has unrecognized format"),
    ("MDStaplingKeepResponse 36501d", "Syntax OK", f"MDStaplingKeepResponse 36501d {OOR}"),
    ("MDStaplingKeepResponse 1000000%", "Syntax OK", "MDStaplingKeepResponse 1000000% is out of "
                                                     "range: at most 521428% (of 7 days, 36500d (100 years))"),
    ("MDStaplingKeepResponse 200%", "Syntax OK", None),
    ("MDRetryFailover 999999999999999999999999999999", "invalid argument, must be a number > 0",
     "invalid argument, must be a number > 0"),
    ("MDRetryFailover 4294967297", "Syntax OK", "MDRetryFailover 4294967297 is out of range: "
                                                "at most 2147483647"),
    ("MDStoreLocks 99999999999999999999", "neither 'on', 'off' or a duration specified",
     "neither 'on', 'off' or a duration specified"),
    ("MDStoreLocks 36501d", "Syntax OK", f"MDStoreLocks 36501d {OOR}"),
    ("MDStoreLocks -5", "Syntax OK", "MDStoreLocks: the time to wait for the lock must not be negative"),
    ("MDPortMap 99999999999999999999:80", "unable to parse first port number",
     "unable to parse first port number"),
    ("MDPortMap 80:99999999999999999999", "unable to parse second port number",
     "unable to parse second port number"),
    ("MDPortMap http:99999", "invalid number for port map, must be in ]0,65535]",
     "invalid number for port map, must be in ]0,65535]"),
    ("MDPrivateKeys RSA 2147483647", "is too large for an RSA key length.",
     "is too large for an RSA key length."),
    ("MDPrivateKeys RSA 99999999999", "Syntax OK", "is too large for an RSA key length."),
    ("MDPrivateKeys rsa16385", "Syntax OK", "RSA 16385 is too large: OpenSSL uses RSA keys of at "
                                            "most 16384 bits (and making one that size takes minutes)"),
    ("MDPrivateKeys RSA 16384", "Syntax OK", None),
]


@pytest.mark.parametrize("line,mod_md,message", RANGES)
def test_numbers_are_range_checked(tmp_path, line, mod_md, message):
    cfg = load(tmp_path, f"{line}\n")
    assert errors(cfg) == ([message] if message else [])
    if message:
        assert cfg.errors[0].location == model.Location(str(tmp_path / "main.conf"), 1)


def test_accepted_extremes_compute_without_overflow():
    from datetime import datetime, timedelta, timezone

    from apache_md.core.schedule import backoff_delay, next_check, ready_at
    cfg = load_text("MDCheckInterval 36500d\nMDRetryDelay 36500d\nMDActivationDelay -36500d\n"
                    "MDRenewWindow 36500d\nMDStaplingKeepResponse 521428%\nMDomain a.example\n")
    assert cfg.errors == []
    s, md = cfg.settings, cfg.mds[0]
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert now + timedelta(seconds=next_check(s.check_interval)) > now
    assert backoff_delay(99, s.retry_delay) > 0
    assert ready_at(now, {}, True, s.activation_delay, now) == now
    assert now - timedelta(seconds=s.stapling_keep_response) < now
    old = datetime(30, 1, 1, tzinfo=timezone.utc)  # a window reaching back before year 1
    assert md.renew_window.start(old, old + timedelta(days=90)) == datetime.min.replace(tzinfo=timezone.utc)


def _mod_md_says(tmp: Path, line: str) -> str:
    mods = "/usr/lib/apache2/modules"
    conf = tmp / "httpd.conf"
    (tmp / "md").mkdir(exist_ok=True)
    conf.write_text(f"ServerRoot {tmp}\nServerName localhost\nErrorLog {tmp}/error.log\n"
                    f"LoadModule mpm_event_module {mods}/mod_mpm_event.so\n"
                    f"LoadModule ssl_module {mods}/mod_ssl.so\n"
                    f"LoadModule md_module {mods}/mod_md.so\nMDStoreDir {tmp}/md\n{line}\n")
    out = subprocess.run([APACHE2, "-d", str(tmp), "-f", str(conf), "-t"],
                         capture_output=True, text=True, errors="replace")
    return (out.stderr + out.stdout).strip().splitlines()[-1]


@pytest.mark.skipif(not os.path.exists("/usr/lib/apache2/modules/mod_md.so"), reason="no mod_md")
def test_mod_md_agrees(tmp_path):
    """The middle column of RANGES is what the real mod_md says."""
    assert [(line, _mod_md_says(tmp_path, line)) for line, _, _ in RANGES] == \
        [(line, verdict) for line, verdict, _ in RANGES]


# --- sections inside <MDomain> (issue 11.10): it scopes MD directives only

NESTED = [  # (inside <MDomain a.example>, mod_md's verdict (test_mod_md_agrees_on_nesting), ours)
    ("<VirtualHost *:443>\n ServerName a.example\n</VirtualHost>", "Syntax OK", None),
    ("<VirtualHost *:443>\n ServerName a.example\n MDRenewMode always\n</VirtualHost>", "Syntax OK", None),
    ("<VirtualHost *:443>\n MDStoreDir /x\n</VirtualHost>",
     "MDStoreDir is not allowed inside an '<MDomainSet' context",
     "MDStoreDir is not allowed inside an '<MDomainSet' context"),
    ("<VirtualHost *:443>\n <MDomain b.example>\n </MDomain>\n</VirtualHost>",
     "<MDomain is not allowed inside an '<MDomainSet' context",
     "<MDomain is not allowed inside an '<MDomainSet' context"),
    ("<VirtualHost *:443>\n MDCertificateFile /x.pem\n</VirtualHost>",
     "apache2: mod_md_config.c:1147: md_config_add_cert_file: Assertion `sc->current' failed.",
     "MDCertificateFile inside a <VirtualHost> has no Managed Domain to go to, not even within "
     "<MDomain a.example>; put it directly inside the <MDomain> section"),
    ("ServerAdmin admin@a.example", "Syntax OK", None),
]


@pytest.mark.parametrize("inner,mod_md,message", NESTED)
def test_sections_nested_in_mdomain(tmp_path, inner, mod_md, message):
    cfg = load(tmp_path, f"<MDomain a.example>\n{inner}\n</MDomain>\n")
    assert errors(cfg) == ([message] if message else [])


@pytest.mark.skipif(not os.path.exists("/usr/lib/apache2/modules/mod_md.so"), reason="no mod_md")
def test_mod_md_agrees_on_nesting(tmp_path):
    assert [_mod_md_says(tmp_path, f"<MDomain a.example>\n{inner}\n</MDomain>") for inner, _, _ in NESTED] \
        == [verdict for _, verdict, _ in NESTED]


def test_vhost_inside_mdomain_is_a_normal_vhost(tmp_path):
    cfg = load(tmp_path, """\
        <MDomain a.example>
          MDRenewMode always
          ServerAdmin admin@a.example
          <VirtualHost *:443>
            ServerName a.example
            ServerAlias www.a.example
            SSLEngine on
            MDPrivateKeys secp384r1
          </VirtualHost>
          <VirtualHost *:443>
            ServerName other.example
          </VirtualHost>
        </MDomain>
    """)
    assert errors(cfg) == []
    md = cfg.mds[0]
    assert md.renew_mode == model.RenewMode.ALWAYS and md.pkey_specs == []  # the vhost's is not the MD's
    assert [v.server_name for v in md.vhosts] == ["a.example"]
    assert md.domains == ["a.example", "www.a.example"]  # auto members from the SSL vhost
    assert md.contacts == ["mailto:admin@a.example"]  # ServerAdmin in <MDomain> is the server's
    w = [(p.location.line, p.message) for p in cfg.warnings]
    assert (8, "MDPrivateKeys inside <VirtualHost> has no effect on Managed Domains, also within "
               "<MDomain a.example> (as with mod_md); put it directly inside the <MDomain> section") in w
    assert (10, "<VirtualHost> other.example:443 is written inside <MDomain a.example> but does not "
                "belong to it: its names are none of the MD's, and <MDomain> does not make a vhost "
                "use it (as with mod_md)") in w


def test_mdomain_section_reads_its_first_word_as_a_name(tmp_path):
    # md_config_sec_start: the first word is a domain, auto/manual only count after it
    cfg = load(tmp_path, "<MDomain auto a.example manual>\n</MDomain>\n")
    assert errors(cfg) == [] and cfg.mds[0].domains == ["auto", "a.example"]
    assert not cfg.mds[0].transitive
    assert ("<MDomain auto ...>: the first word is a domain name here (as for mod_md), so 'auto' "
            "is managed as one; put auto/manual after the names") in warnings(cfg)


# --- LogLevel md:... (issue 11.11)

LOGLEVEL_MSG = ("LogLevel md:notice: Apache refuses to start with this while mod_md is not loaded "
                "(\"Cannot find module md\"); put that LogLevel inside <IfModule md_module>")


def test_md_loglevel_outside_ifmodule_is_flagged(tmp_path):
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites/a.conf").write_text("<VirtualHost *:443>\n  LogLevel info mod_md.c:debug\n"
                                           "</VirtualHost>\n")
    cfg = load(tmp_path, """\
        LogLevel warn md:notice
        <IfModule md_module>
          LogLevel md_module:trace2
          Include sites/a.conf
        </IfModule>
        <IfModule ssl_module>
          LogLevel md:debug
        </IfModule>
        LogLevel ssl:warn core:info
    """)
    assert [(p.location.line, p.message) for p in cfg.errors] == [(1, LOGLEVEL_MSG)]
    assert cfg.settings.log_level == logging.DEBUG  # md_module:trace2; the vhost's is its own


@pytest.mark.parametrize("text,level,problem", [
    ("LogLevel warn md:notice", logging.INFO, None),
    ("LogLevel md:warn", logging.WARNING, None),
    ("LogLevel md:Error", logging.ERROR, None),
    ("LogLevel md:crit", logging.CRITICAL, None),
    ("LogLevel info", None, None),
    ("LogLevel md:verbose", None, "md:verbose: Log level keyword must be one of "
                                  "emerg/alert/crit/error/warn/notice/info/debug/trace1/.../trace8"),
])
def test_md_loglevel_is_apache_mds_own(tmp_path, text, level, problem):
    cfg = load(tmp_path, f"<IfModule md_module>\n  {text}\n</IfModule>\n")
    assert errors(cfg) == ([problem] if problem else [])
    assert cfg.settings.log_level == level


def test_md_loglevel_with_mod_md_loaded_is_not_flagged(tmp_path):
    cfg = load(tmp_path, "LoadModule md_module /usr/lib/apache2/modules/mod_md.so\nLogLevel md:debug\n")
    assert len(cfg.errors) == 1 and "a2dismod md" in cfg.errors[0].message


# --- mod_md's md-status handler, left in a configuration that no longer loads it

STATUS_LOCATION = '<Location "/md-status">\n  SetHandler md-status\n  Require local\n</Location>\n'


def test_md_status_handler_outside_ifmodule_md_module_is_flagged(tmp_path):
    cfg = load(tmp_path, STATUS_LOCATION)
    assert [(p.location.line, p.message[:45]) for p in cfg.warnings] == \
        [(2, "SetHandler md-status is mod_md's handler: wit")]
    assert "put it inside <IfModule md_module>" in cfg.warnings[0].message
    assert warnings(load(tmp_path, f"<IfModule md_module>\n{STATUS_LOCATION}</IfModule>\n")) == []
    cfg = load(tmp_path, "LoadModule md_module /usr/lib/apache2/modules/mod_md.so\n"
               + STATUS_LOCATION)
    assert warnings(cfg) == []  # mod_md loaded: an error of its own


@pytest.mark.skipif(not os.access(APACHE2, os.X_OK), reason="no apache2 here")
def test_httpd_without_mod_md_refuses_md_loglevel(tmp_path):
    """The fact behind LOGLEVEL_MSG, from the real httpd (mod_md not loaded)."""
    def says(text: str) -> str:
        conf = tmp_path / "httpd.conf"
        conf.write_text(f"ServerRoot {tmp_path}\nServerName localhost\nErrorLog {tmp_path}/e.log\n"
                        "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n"
                        f"{text}\n")
        out = subprocess.run([APACHE2, "-d", str(tmp_path), "-f", str(conf), "-t"],
                             capture_output=True, text=True)
        return (out.stderr + out.stdout).strip().splitlines()[-1]
    assert says("LogLevel warn md:notice") == "Cannot find module md"
    assert says("<IfModule md_module>\nLogLevel warn md:notice\n</IfModule>") == "Syntax OK"
