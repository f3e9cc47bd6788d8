"""Every MD directive, value and context, read by Debian's mod_md and by apache-md.

For each case a small Apache configuration is written twice: once with `LoadModule
md_module` (mod_md), once without (apache-md reads the `<IfModule md_module>` block).
mod_md's verdict is `apache2 -t` (parse-time errors), then a real start on loopback
with a CA URL that does not answer (start-up errors; otherwise its /md-status, which
lists MDs without certificates); apache-md's is `apache-md check` and `status --json`.
A difference is a case one side accepts and the other rejects, or md-status values
that differ (without what apache-md documents as its own additions, and without the
renewal that mod_md's failing first try leaves).

    python -m tests.e2e.directive_sweep [-k SUBSTRING] [-j 4]

prints every difference and exits 1 when there is one; KNOWN lists the ones apache-md
keeps on purpose (README, "Stricter than mod_md").
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.test_side_by_side import differences, ours_only

APACHE = "/usr/sbin/apache2"
MODULES = Path("/usr/lib/apache2/modules")
MOD_MD = MODULES / "mod_md.so"
APACHE_MD = [sys.executable, "-m", "apache_md"]
DEAD_CA = "http://127.0.0.1:9/dir"
MD = "a.test www.a.test"

# -- the cases ------------------------------------------------------------------------------
ON_OFF = ["on", "off", "ON", "Off", "yes", "1", "", "on off"]
WINDOW = ["33%", "0%", "99%", "100%", "-1%", "10", "10d", "10D", "5h", "30mi", "90s",
          "500ms", "1500ms", "86400000ms", "86400s", "24h", "1440mi", "48h", "3600s", "0s", "0", "30days", "10 d", "1y", "5m", "-5d", "36500d", "36501d",
          "2000000000d", "10.5d", "1w", "abc", ""]
SECONDS = ["12h", "1s", "0", "0s", "500ms", "10", "1d", "-1", "36500d", "2000000000d",
           "abc", "", "1 h"]
PATHLESS = "/nonexistent/x.pem"
# directive -> (context class, values); ALL: server, vhost and MD; SRV: server/vhost only;
# MD: only inside <MDomain>
DIRECTIVES: dict[str, tuple[str, list[str]]] = {
    "MDMustStaple": ("ALL", ON_OFF),
    "MDStapling": ("ALL", ON_OFF),
    "MDStapleOthers": ("ALL", ON_OFF[:3] + ["yes"]),
    "MDRenewViaARI": ("ALL", ON_OFF[:3] + ["yes"]),
    "MDProfileMandatory": ("ALL", ON_OFF[:3] + ["yes"]),
    "MDBaseServer": ("SRV", ON_OFF[:3] + ["yes"]),
    "MDServerStatus": ("ALL", ON_OFF[:3] + ["yes"]),
    "MDCertificateStatus": ("ALL", ON_OFF[:3] + ["yes"]),
    "MDRenewMode": ("ALL", ["auto", "automatic", "always", "manual", "stick", "AUTO",
                            "Always", "never", "", "auto manual"]),
    "MDDriveMode": ("ALL", ["always", "manual", "never"]),
    "MDRenewWindow": ("ALL", WINDOW),
    "MDWarnWindow": ("ALL", WINDOW),
    "MDStaplingRenewWindow": ("ALL", ["33%", "0%", "100%", "10d", "5m", "abc"]),
    "MDStaplingKeepResponse": ("ALL", ["7d", "0", "50%", "100%", "abc", "10"]),
    "MDCheckInterval": ("SRV", SECONDS),
    "MDInitialDelay": ("SRV", ["0", "10", "-1", "5mi", "abc", "36501d"]),
    "MDRetryDelay": ("SRV", SECONDS + ["1ms"]),
    "MDRetryFailover": ("SRV", ["13", "0", "1", "-1", "2147483647", "2147483648", "abc",
                                "1.5", "", "07"]),
    "MDActivationDelay": ("SRV", ["0", "1d", "1", "-1d", "12h", "abc", "36501d", "-36501d"]),
    "MDCertificateAgreement": ("ALL", ["accepted", "https://x.test/tos", "ACCEPTED", "",
                                       "accepted accepted", "foo"]),
    "MDContactEmail": ("ALL", ["a@b.test", "mailto:a@b.test", "notanemail", "", "a@b c@d"]),
    "MDPrivateKeys": ("ALL", ["Default", "RSA", "RSA 3072", "rsa4096", "RSA 1024",
                              "RSA 16384", "RSA 16385", "RSA 99999999999", "secp256r1",
                              "P-256", "P-256 p-256", "P-256 secp256r1", "secp256r1 rsa2048",
                              "RSA RSA", "X25519", "P-192", "foo", "Default RSA", "",
                              "RSA abc", "RSA 2048 3072"]),
    "MDRequireHttps": ("ALL", ["off", "temporary", "permanent", "PERMANENT", "on", "",
                               "temporary permanent"]),
    "MDCAChallenges": ("ALL", ["http-01", "dns-01", "tls-alpn-01", "http-01 dns-01", "foo",
                               "HTTP-01", ""]),
    "MDPortMap": ("SRV", ["http:80", "http:5780 https:5781", "80:5780", "https:-", "http:0",
                          "http:65536", "http:abc", "foo", "8080:1", "http:1 https:2 http:3",
                          "HTTP:80", "http:-1", ""]),
    "MDHttpProxy": ("ALL", ["http://proxy.test:3128", "https://p.test", "ftp://p.test",
                            "p.test", "http://", "none", "http://p.test:99999", ""]),
    "MDCertificateAuthority": ("ALL", ["LetsEncrypt", "letsencrypt-test", "Buypass",
                                       "buypass-test", "https://a.test/dir https://b.test/dir",
                                       "ftp://x", "foo", "ZeroSSL", "", "mailto:x@y"]),
    "MDCertificateProtocol": ("ALL", ["ACME", "acme", "FOO"]),
    "MDMessageCmd": ("SRV", ["/bin/true", "/bin/echo a b", ""]),
    "MDNotifyCmd": ("SRV", ["/bin/true", "/bin/echo a b", ""]),
    "MDExternalAccountBinding": ("ALL", ["kid-1 aGVsbG8", "none", "/nonexistent.json",
                                         "a b c", "", "kid"]),
    "MDProfile": ("ALL", ["classic", "", "a b", "shortlived"]),
    "MDMatchNames": ("SRV", ["all", "servernames", "ALL", "foo", ""]),
    "MDStoreLocks": ("SRV", ["on", "off", "5s", "0", "abc", "-1", "10"]),
    "MDChallengeDns01": ("ALL", ["/bin/true", "/bin/x a b", ""]),
    "MDChallengeDns01Version": ("SRV", ["1", "2", "3", "0", "abc", ""]),
    "MDCACertificateFile": ("ALL", ["none", "/etc/ssl/certs/ca-certificates.crt",
                                    "/nonexistent.pem", ""]),
    "MDHttpProxyCACertificateFile": ("ALL", ["none", "/etc/ssl/certs/ca-certificates.crt",
                                             "/nonexistent.pem"]),
    "MDCertificateCheck": ("ALL", ["crt.sh https://crt.sh?q=", "one", "a b c"]),
    "MDCertificateFile": ("MD", [PATHLESS, ""]),
    "MDCertificateKeyFile": ("MD", [PATHLESS, ""]),
    "MDMember": ("MD", ["b.a.test", "auto", "manual", "B.A.TEST", "", "b.a.test auto"]),
    "MDMembers": ("MD", ["auto", "manual", "b.a.test", "foo bar"]),
    "MDomain": ("SRV", ["b.test", "B.TEST www.b.test", "b.test b.test", "b.test manual",
                        "auto", "", "*.b.test", "b.test auto c.b.test"]),
    "MDCertificateMonitor": ("ALL", ["crt.sh https://crt.sh?q="]),  # not a directive
}


@dataclass
class Case:
    name: str
    server: str = ""  # MD block lines at server level
    md: str = ""  # lines inside <MDomain a.test ...>
    vhost: str = ""  # lines inside the SSL vhost
    section: str = "MDomain"  # <MDomain> or <MDomainSet>
    mds: str | None = None  # replaces the MD definitions

    def md_block(self) -> str:
        if self.mds is not None:
            return self.mds
        if self.md:
            return f"<{self.section} {MD}>\n{self.md}\n</{self.section}>\n"
        return f"MDomain {MD}\n"


def cases() -> list[Case]:
    out = []
    for d, (ctx, values) in DIRECTIVES.items():
        for v in values:
            line = f"{d} {v}".rstrip()
            if ctx == "MD":
                out.append(Case(f"{line} [md]", md=line))
                out.append(Case(f"{line} [server]", server=line))
            else:
                out.append(Case(f"{line} [server]", server=line))
        first = f"{d} {values[0]}"
        if ctx != "MD":
            out.append(Case(f"{first} [md]", md=first))
            out.append(Case(f"{first} [vhost]", vhost=first))
            out.append(Case(f"{first} [location]",
                            vhost=f'<Location "/x">\n{first}\n</Location>'))
            out.append(Case(f"{first} [files]", vhost=f'<Files "x">\n{first}\n</Files>'))
            out.append(Case(f"{first} [if]", server=f'<If "true">\n{first}\n</If>'))
        valid = [v for v in values if v][:2]
        if len(valid) == 2:
            out.append(Case(f"{d} {valid[0]} / {d} {valid[1]} [server, twice]",
                            server=f"{d} {valid[0]}\n{d} {valid[1]}"))
            if ctx == "ALL":
                out.append(Case(f"{d} {valid[0]} [server] / {d} {valid[1]} [md]",
                                server=f"{d} {valid[0]}", md=f"{d} {valid[1]}"))
    out += [
        Case("<MDomainSet> container", md="MDRenewWindow 20d", section="MDomainSet"),
        Case("<MDomain> without names", mds="<MDomain>\n</MDomain>\n"),
        Case("<MDomain> with only auto", mds="MDomain a.test www.a.test\n<MDomain auto>\n</MDomain>\n"),
        Case("<MDomain> nested", mds=f"<MDomain {MD}>\n<MDomain b.test>\n</MDomain>\n"
                                     "</MDomain>\n"),
        Case("<MDomain> quoted names", mds='<MDomain "a.test" "www.a.test">\n</MDomain>\n'),
        Case("<MDomain> upper case", mds="<MDomain A.TEST WWW.A.Test>\n</MDomain>\n"),
        Case("two MDs overlapping", mds=f"MDomain {MD}\nMDomain www.a.test\n"),
        Case("same MD twice", mds=f"MDomain {MD}\nMDomain {MD}\n"),
        Case("wildcard MD over a name", mds=f"MDomain {MD}\nMDomain *.a.test\n"),
        Case("wildcard MD before a name", mds=f"MDomain *.a.test\nMDomain {MD}\n"),
        Case("wildcard MD over a name, both used", mds=f"MDomain {MD}\nMDomain *.a.test\n",
             vhost="</VirtualHost>\n<VirtualHost 127.0.0.1:HTTPS>\nServerName x.a.test\n"
                   "SSLEngine on"),
        Case("wildcard MD over a name not listed", mds="MDomain a.test\nMDomain *.a.test\n"),
        Case("overlap with MDMatchNames servernames",
             server="MDMatchNames servernames", mds=f"MDomain {MD}\nMDomain www.a.test\n"),
        Case("MD without a vhost", mds="MDomain a.test www.a.test\nMDomain other.test\n"),
        Case("MD without a vhost, MDRenewMode always",
             mds="MDomain a.test www.a.test\n<MDomain other.test>\nMDRenewMode always\n</MDomain>\n"),
        Case("MDRequireHttps for an MD without SSL vhost",
             mds="MDomain a.test www.a.test\n<MDomain other.test>\nMDRequireHttps permanent\n</MDomain>\n"),
        Case("MDomain inside the vhost", mds="", vhost=f"MDomain {MD}"),
        Case("<MDomain> in <Location>", mds="", vhost=f'<Location "/">\n<MDomain {MD}>\n'
                                                      "</MDomain>\n</Location>"),
        Case("<MDomain> in <If>", mds=f'<If "true">\n<MDomain {MD}>\n</MDomain>\n</If>\n'),
        Case("MDRequireHttps in <If> in <Directory>", vhost='<Directory "/">\n<If "true">\n'
             "MDRequireHttps permanent\n</If>\n</Directory>"),

        Case("cert file without key file", md=f"MDCertificateFile {PATHLESS}"),
        Case("key file without cert file", md=f"MDCertificateKeyFile {PATHLESS}"),
        Case("MDMembers manual, alias not managed", mds="<MDomain a.test>\nMDMembers manual\n"
                                                        "</MDomain>\n"),
        Case("MDomain manual, alias not managed", mds="MDomain a.test manual\n"),
        Case("MD in a vhost within <MDomain>", md="<VirtualHost 127.0.0.1:1>\n"
                                                  "ServerName z.test\n</VirtualHost>"),
        Case("ServerAdmin as contact", server="", vhost="ServerAdmin vh@a.test"),
        Case("MDContactEmail in vhost and MD", vhost="MDContactEmail vh@a.test",
             md="MDContactEmail md@a.test"),
        Case("MDPrivateKeys in vhost and server", vhost="MDPrivateKeys secp384r1",
             server="MDPrivateKeys rsa3072"),
        Case("MDRenewWindow in vhost", vhost="MDRenewWindow 20d", server="MDRenewWindow 30d"),
    ]
    return out


# What each fix of the sweep's findings changed, always in the sample the e2e test runs.
FOUND = ("MDRenewWindow 0 [server]", "MDRenewWindow 1500ms [server]", "MDWarnWindow 500ms [server]",
         "MDCAChallenges HTTP-01 [server]", "MDCertificateProtocol acme [server]",
         "MDCACertificateFile none [md]", "MDHttpProxyCACertificateFile none [md]",
         "wildcard MD over a name", "wildcard MD before a name",
         "wildcard MD over a name not listed", "wildcard MD over a name, both used",
         "MDRequireHttps for an MD without SSL vhost", "MDRenewMode auto [if]",
         "MDRequireHttps off [files]", "MDRequireHttps off [if]", "<MDomain> in <If>",
         "MDRequireHttps in <If> in <Directory>", "MDStapling on [if]")


def sample(every: int = 8) -> list[Case]:
    """Every `every`-th case and the ones FOUND: a quick check that stays broad."""
    return [c for i, c in enumerate(cases()) if i % every == 0 or c.name in FOUND]


# -- the two configurations -----------------------------------------------------------------
def conf_text(root: Path, case: Case, http: int, https: int, mod_md: bool) -> str:
    load = "\n".join(f"LoadModule {m}_module {MODULES}/mod_{m}.so" for m in
                     ("mpm_event", "authz_core", "authz_host", "ssl", "socache_shmcb"))
    if mod_md:
        load += f"\nLoadModule md_module {MOD_MD}"
    store = root / "md"
    vhost = case.vhost.replace("HTTPS>", f"{https}>")  # a second vhost on the https port
    return f"""ServerRoot "{root}"
ServerName localhost
DefaultRuntimeDir "{root}/run"
PidFile "{root}/run/apache2.pid"
ErrorLog "{root}/logs/error.log"
LogLevel warn
Mutex file:{root}/run default
{load}
User www-data
Group www-data
Listen 127.0.0.1:{http}
Listen 127.0.0.1:{https}
<IfModule md_module>
LogLevel warn md:notice
<Location "/md-status">
    SetHandler md-status
    Require local
</Location>
MDStoreDir {store}
MDCertificateAuthority {DEAD_CA}
MDPortMap http:{http} https:{https}
MDRetryDelay 1h
{case.server}
{case.md_block()}
</IfModule>
<VirtualHost 127.0.0.1:{https}>
ServerName a.test
ServerAlias www.a.test
SSLEngine on
IncludeOptional {store}/apache/a.test.conf
{vhost}
</VirtualHost>
"""


@dataclass
class Verdict:
    ok: bool
    message: str = ""  # why not, or the warnings
    status: dict | None = None  # md-status, when it started
    warnings: list[str] = field(default_factory=list)
    line: int | None = None  # where a refusal at parse time points (`apache2 -t`, check)


def _fresh(base: Path, name: str) -> Path:
    root = base / name
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("logs", "run", "md"):
        (root / sub).mkdir(parents=True)
    shutil.chown(root / "run", "www-data", "www-data")
    os.chmod(root, 0o755)
    return root


SYNTAX_ERROR = re.compile(r"AH00526: Syntax error on line (\d+) of ")


def _syntax_error(text: str) -> tuple[str, int | None]:
    """httpd's refusal at parse time and the line it names."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        m = SYNTAX_ERROR.search(ln)
        if m and i + 1 < len(lines):
            return lines[i + 1], int(m.group(1))
    return (lines[-1] if lines else "?"), None


def mod_md(base: Path, case: Case, slot: int, ports: tuple[int, int]) -> Verdict:
    root = _fresh(base, f"mod_md-{slot}")
    conf = root / "httpd.conf"
    conf.write_text(conf_text(root, case, *ports, mod_md=True))
    try:
        t = subprocess.run([APACHE, "-f", str(conf), "-t"], capture_output=True, text=True,
                           timeout=30)
    except subprocess.TimeoutExpired:
        return Verdict(False, "HANG: apache2 -t did not end within 30 s")
    if t.returncode:
        message, line = _syntax_error(t.stderr + t.stdout)
        return Verdict(False, message, line=line - 1 if line else None)  # the LoadModule
    p = subprocess.Popen([APACHE, "-f", str(conf), "-D", "FOREGROUND"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    status = None
    try:
        deadline = time.monotonic() + 60  # RSA 4096 fallback keys take a while
        while p.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/md-status",
                                            timeout=2) as r:
                    status = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.1)
    finally:
        if p.poll() is None:
            p.terminate()
        _, err = p.communicate(timeout=30)
    log = (root / "logs/error.log").read_text(errors="replace").splitlines()
    if status is None:
        bad = [_log_message(ln) for ln in log
               if re.search(r"\[(md|ssl|core|):(emerg|alert|crit|error)\]", ln)]
        return Verdict(False, bad[0] if bad else (err.strip() or "no answer"))
    warnings = [_log_message(ln) for ln in log if "[md:warn]" in ln]
    return Verdict(True, status=status, warnings=warnings)


def _log_message(line: str) -> str:
    return re.sub(r"^(\[[^]]*\] )+", "", line).strip()


def apache_md(base: Path, case: Case, slot: int, ports: tuple[int, int]) -> Verdict:
    root = _fresh(base, f"apache-md-{slot}")
    conf = root / "httpd.conf"
    conf.write_text(conf_text(root, case, *ports, mod_md=False))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    try:
        c = subprocess.run(APACHE_MD + ["-f", str(conf), "check"], capture_output=True,
                           text=True, timeout=30, env=env)
    except subprocess.TimeoutExpired:
        return Verdict(False, "HANG: apache-md check did not end within 30 s")
    lines = [ln for ln in c.stderr.splitlines() if ln.strip()]
    if "Traceback" in c.stderr:
        return Verdict(False, "TRACEBACK " + lines[-1])
    warnings = [ln.removeprefix("warning: ") for ln in lines if ln.startswith("warning: ")]
    errors = [ln for ln in lines if not ln.startswith(("warning: ", "note: "))]
    if errors:
        m = re.match(rf"{re.escape(str(conf))}:(\d+): (.*)", errors[0])
        return Verdict(False, m.group(2) if m else errors[0], warnings=warnings,
                       line=int(m.group(1)) if m else None)
    try:
        s = subprocess.run(APACHE_MD + ["-f", str(conf), "status", "--json"],
                           capture_output=True, text=True, timeout=30, env=env)
    except subprocess.TimeoutExpired:
        return Verdict(False, "HANG: apache-md status did not end within 30 s")
    try:
        status = json.loads(s.stdout)
    except ValueError:
        return Verdict(False, f"status --json: {s.stderr.strip()[-300:]}", warnings=warnings)
    return Verdict(True, status=status, warnings=warnings)


# -- comparing ------------------------------------------------------------------------------
def comparable(status: dict) -> list[dict]:
    """md-status without the version, apache-md's additions and the renewal attempt."""
    out = []
    for m in status.get("managed-domains", []):
        m = ours_only(m)
        for key in ("renewal", "renew", "renew-at"):
            m.pop(key, None)
        out.append(m)
    return out


def _shape(message: str) -> str:
    """A message without the case's own paths, to compare or list."""
    return re.sub(r"/\S*/(mod_md|apache-md)-\d+/", "<root>/", message)


def compare(case: Case, theirs: Verdict, ours: Verdict) -> list[str]:
    if theirs.ok != ours.ok:
        word = {True: "accepts", False: "rejects"}
        return [f"mod_md {word[theirs.ok]}{': ' + _shape(theirs.message) if not theirs.ok else ''}"
                f"; apache-md {word[ours.ok]}"
                f"{': ' + _shape(ours.message) if not ours.ok else ''}"]
    if not theirs.ok:
        if theirs.line is None:  # refused at its start: its log's words are its own
            return []
        if (_shape(ours.message), ours.line) != (_shape(theirs.message), theirs.line):
            return [f"mod_md refuses at line {theirs.line}: {_shape(theirs.message)}; apache-md "
                    f"at line {ours.line}: {_shape(ours.message)}"]
        return []
    a, b = comparable(ours.status), comparable(theirs.status)
    if len(a) != len(b):
        return [f"MDs: apache-md {[m['name'] for m in a]}, mod_md {[m['name'] for m in b]}"]
    return [d for x, y in zip(a, b) for d in differences(x, y, f"/{y['name']}")]


# Kept on purpose (README, "Stricter than mod_md"): (a pattern searched in the case's
# name and its difference, why). A difference matched here is listed, not counted.
KNOWN: list[tuple[str, str]] = [
    (r"apache-md rejects: .* is out of range: at most 36500d",
     "durations beyond 100 years are refused (mod_md overflows)"),
    (r"Window -\d+d \[.*apache-md rejects",
     "a negative window is refused (mod_md would renew or warn only after the end)"),
    (r"^MDStoreLocks -1 .*must not be negative", "a negative lock wait is refused"),
    (r"^MDPrivateKeys (X25519|P-192|foo|RSA abc|RSA 2048 3072) \[.*mod_md rejects",
     "key types mod_ssl cannot serve are left out with a warning; mod_md fails to start"),
    (r"^MDPrivateKeys RSA 16384 \[.*mod_md rejects: no answer",
     "an RSA fallback is RSA 2048 (mod_md makes an RSA 16384 key: a minute or more)"),
    (r"^MDHttpProxy http://(p.test:99999)? \[.*apache-md rejects",
     "a proxy URL without host or with an impossible port is refused"),
    (r"^(MDMessageCmd|MDNotifyCmd|MDChallengeDns01) \[.*apache-md rejects: .*needs a command",
     "an empty command line is refused (mod_md would fail to run it)"),
    (r"^MDRetryFailover 2147483648 .*is out of range",
     "a number beyond 32 bits is named as such (mod_md: 'must be a number > 0' after it wraps)"),
]


def known(case: Case, diffs: list[str]) -> str | None:
    text = " | ".join([case.name, *diffs])
    return next((why for pattern, why in KNOWN if re.search(pattern, text)), None)


def run(selected: list[Case], jobs: int, offset: int, quiet: bool = False) -> dict[str, list]:
    base = Path(tempfile.mkdtemp(prefix="md-sweep-"))
    os.chmod(base, 0o755)
    results: dict[str, list] = {}

    def one(i_case):
        i, case = i_case
        slot = i % jobs
        ports = (offset + 80 + 2 * slot, offset + 81 + 2 * slot)
        theirs = mod_md(base, case, slot, ports)
        ours = apache_md(base, case, slot, ports)
        return case, theirs, ours, compare(case, theirs, ours)

    # a slot is one worker's ports and directories: case i runs in slot i % jobs, and the
    # pool hands each worker every jobs-th case in order only per chunk, so chunk by slot
    chunks = [[(i, c) for i, c in enumerate(selected) if i % jobs == s] for s in range(jobs)]
    with ThreadPoolExecutor(jobs) as pool:
        for batch in pool.map(lambda ch: [one(x) for x in ch], chunks):
            for case, theirs, ours, diffs in batch:
                results[case.name] = [theirs, ours, diffs]
    shutil.rmtree(base, ignore_errors=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-k", default="", help="only cases whose name contains this")
    p.add_argument("-j", type=int, default=4)
    p.add_argument("-v", action="store_true", help="every case, also the ones alike")
    args = p.parse_args(argv)
    offset = int(os.environ.get("E2E_PORT_OFFSET", "0")) + 5000
    selected = [c for c in cases() if args.k in c.name]
    results = run(selected, args.j, offset)
    count = 0
    for case in selected:
        theirs, ours, diffs = results[case.name]
        why = known(case, diffs)
        if diffs and not why:
            count += 1
        if diffs or args.v:
            tag = "KNOWN " if (diffs and why) else ("DIFF  " if diffs else "same  ")
            print(f"{tag}{case.name}")
            for d in diffs:
                print(f"        {d}")
            if why and diffs:
                print(f"        (kept: {why})")
        if args.v and not diffs:
            print(f"        mod_md {'ok' if theirs.ok else _shape(theirs.message)}")
    print(f"\n{len(selected)} cases, {count} differences", file=sys.stderr)
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main())
