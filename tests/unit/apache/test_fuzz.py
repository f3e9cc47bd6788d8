"""A seeded fuzz test of the config reader and the directive layer (issue 12): thousands
of generated configurations (random directives and arguments, quoting, nesting, huge
numbers, odd bytes, unterminated sections, Include loops) must give Problems with
file:line, never a traceback, and a model whose values every computation can use."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from apache_md.apache.config import load_config, load_text
from apache_md.apache.directives import SPECS
from apache_md.core.mdjson import md_to_json
from apache_md.core.schedule import backoff_delay, next_check, ready_at

SEED, CASES = 20261201, 2000
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
WORDS = [
    "on", "off", "auto", "manual", "always", "none", "Default", "RSA", "rsa4096", "P-256",
    "X25519", "secp192r1", "http-01", "dns-01", "a.example", "*.a.example", "[::1]", "ACME",
    "letsencrypt", "https://ca.example/dir", "mailto:a@b", "a@b", "80:8080", "http:-", "443:",
    "02:00-05:00", "1", "0", "-1", "+7", "30", "14d", "12h", "30mi", "10s", "500ms", "33%",
    "100%", "-5%", "33.5%", "30days", "1e9", "9" * 30, "9" * 5000, "-" + "9" * 25, "2000000000d",
    "100000000000000", "9223372036854775807", "99999999999999999999999d", "1000000%", "²", "٣",
    "x\u00a0y", "\u2028", "\x00", "\x0c", "\r", "\\", "\\\\", '"', "'", '""', "''", '"a b"',
    "'a\\'b'", '"unterminated', "a\\", "${X}", "${NOPE}", "${a:b}", "$", "#", ">", "<", "</",
    "\udcff", "ÿ", "*", "?", "[",
]
CORE = ["Listen", "ServerName", "ServerAlias", "ServerAdmin", "SSLEngine", "Protocols", "User",
        "SSLCertificateFile", "SSLCertificateKeyFile", "Define", "UnDefine", "ServerRoot",
        "LoadModule", "Include", "IncludeOptional", "LogLevel", "DocumentRoot", "Bogus"]
SECTIONS = ["VirtualHost", "MDomain", "MDomainSet", "IfModule", "IfDefine", "IfFile", "IfVersion",
            "Directory", "Location", "Files", "If", "Macro", "ManagedDomain", "Foo"]
SPEC_NAMES = [s.name for s in SPECS.values()]


def _args(rnd: random.Random) -> str:
    out = []
    for _ in range(rnd.choice([0, 1, 1, 1, 2, 2, 3, 5, 70])):
        w = rnd.choice(WORDS)
        if rnd.random() < 0.1:
            w = w + rnd.choice(WORDS)
        if rnd.random() < 0.15:
            w = f'"{w}"'
        out.append(w)
    return rnd.choice([" ", "  ", "\t"]).join(out)


def _line(rnd: random.Random, depth: int) -> list[str]:
    r = rnd.random()
    if r < 0.45:
        return [f"{rnd.choice(SPEC_NAMES)} {_args(rnd)}"]
    if r < 0.65:
        name = rnd.choice(CORE)
        if name in ("Include", "IncludeOptional"):
            return [f"{name} {rnd.choice(['a.conf', 'b.conf', 'main.conf', '*.conf', 'nope.conf', 'sub', ''])}"]
        if name == "LogLevel":
            return [f"LogLevel {rnd.choice(['warn', 'md:notice', 'md:bogus', 'md:', 'mod_md.c:debug'])}"]
        return [f"{name} {_args(rnd)}"]
    if r < 0.85 and depth < 4:
        name = rnd.choice(SECTIONS)
        head = rnd.choice([f"<{name} {_args(rnd)}>", f"<{name}>", f"<{name} {_args(rnd)}",
                           f"<{name} md_module>", f"<{name} !nope>", f"<{name} *:443>"])
        body = [ln for _ in range(rnd.randint(0, 4)) for ln in _line(rnd, depth + 1)]
        tail = rnd.choice([f"</{name}>", f"</{name}>", f"</{name} >", "</Other>", ""])
        return [head, *body, tail]
    if r < 0.9:
        return [rnd.choice(["# comment", "", "   ", "\\", "</VirtualHost>", '""', "<>", "</>"])]
    return [f"{rnd.choice(SPEC_NAMES + CORE)} {_args(rnd)} \\", _args(rnd)]  # a continuation


def _text(rnd: random.Random) -> bytes:
    lines = [ln for _ in range(rnd.randint(1, 12)) for ln in _line(rnd, 0)]
    data = rnd.choice(["\n", "\r\n"]).join(lines).encode("utf-8", "surrogateescape")
    if rnd.random() < 0.1:
        data += bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 40)))
    return data


def _check_model(cfg) -> None:
    for p in cfg.errors + cfg.warnings:
        assert p.location is not None or p.md, p
        if p.location:
            assert p.location.file and p.location.line >= 1, p
        str(p)
    s = cfg.settings
    assert NOW + timedelta(seconds=next_check(s.check_interval)) > NOW
    NOW - timedelta(seconds=s.stapling_keep_response + s.activation_interval + s.initial_delay)
    backoff_delay(40, s.retry_delay)
    s.stapling_renew_window.start(NOW, NOW + timedelta(days=7))
    for md in cfg.mds:
        md_to_json(md)
        for nb, na in ((NOW, NOW + timedelta(days=90)), (datetime(1, 1, 2, tzinfo=timezone.utc),) * 2):
            md.renew_window.start(nb, na)
            md.warn_window.start(nb, na)
        ready_at(NOW, {}, True, s.activation_delay, NOW)
        assert md.name and all(md.domains)
        assert all(k.kind != "RSA" or 2048 <= k.rsa_bits <= 16384 for k in md.keyspecs)


def test_config_fuzz(tmp_path):
    rnd = random.Random(SEED)
    (tmp_path / "sub").mkdir()
    for case in range(CASES):
        # the included files (empty, or themselves including) change now and then
        for name in ("a.conf", "b.conf", "sub/c.conf") if case % 20 == 0 else ():
            (tmp_path / name).write_bytes(_text(rnd) if rnd.random() < 0.7 else b"")
        (tmp_path / "main.conf").write_bytes(_text(rnd))
        try:
            cfg = load_config(str(tmp_path / "main.conf"), server_root=str(tmp_path), env={"X": "x"})
            _check_model(cfg)
        except Exception as e:  # noqa: BLE001 - name the case that broke
            raise AssertionError(f"case {case} (files in {tmp_path})") from e


def test_deep_nesting_is_refused_not_a_recursion_error():
    deep = "<Directory />\n" * 600 + "MDomain a.example\n" + "</Directory>\n" * 600
    cfg = load_text("<IfModule md_module>\n" * 2000 + deep + "</IfModule>\n" * 2000)
    assert [p.message for p in cfg.errors] == [
        "<Directory> is nested more than 64 sections deep; its content is not read"]
    assert cfg.mds == []
