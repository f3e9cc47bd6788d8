"""The MD directives: what each one accepts, with mod_md's semantics and messages.

The directive table (name, context, argument count, where the value goes) and
the value parsers, pure functions from arguments to a value that raise
`Invalid` with mod_md's text. `config` applies them while it walks the tree.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
from dataclasses import dataclass, replace
from typing import Any, Callable
from urllib.parse import urlsplit

from ..core import crypto
from ..core.durations import (
    MAX_DURATION,
    MAX_DURATION_TEXT,
    DurationError,
    OutOfRange,
    Timeslice,
    leading_int,
    parse_duration,
)
from ..core.model import (
    KNOWN_CA_NAMES,
    KNOWN_CAS,
    KeySpec,
    RenewMode,
)
from .syntax import ARGV, RAW, TAKE1, TAKE2, TAKE12, count_message, take

MD_SECTION = "<MDomainSet"  # the name mod_md uses in its messages, also for <MDomain>
RSA_BITS_MIN = 2048
RSA_BITS_MAX = 16384  # OpenSSL's OPENSSL_RSA_MAX_MODULUS_BITS
INT_MAX = 2**31 - 1
STORE_LOCK_WAIT = 5.0
OCSP_KEEP_NORM = 7 * 86400.0  # MDStaplingKeepResponse percentages are of 7 days


class Invalid(Exception):
    """A directive's value is wrong; the text is the message shown to the user."""


# --------------------------------------------------------------------------
# Value parsers: pure functions, (args) -> value or raise Invalid


def is_none(value: str) -> bool:
    """`none` (any case): the value that switches a setting off, as mod_md spells it."""
    return value.lower() == "none"


def parse_on_off(value: str) -> bool:
    v = value.lower()
    if v in ("on", "off"):
        return v == "on"
    raise Invalid(f"unknown '{value}', supported parameter values are 'on' and 'off'")


def parse_transitive(value: str) -> bool | None:
    v = value.lower()
    return True if v == "auto" else False if v == "manual" else None


def normalize_name(name: str) -> str:
    """A DNS name lowercased; an IP address (IPv6 also in brackets) in its canonical form,
    so `[::1]`, `::0001` and `::1` are one name (RFC 8738 identifiers, SAN matching)."""
    n = name.lower()
    bare = n[1:-1] if n.startswith("[") and n.endswith("]") else n
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return n


def parse_names(args: list[str]) -> tuple[list[str], bool | None]:
    """MD names (normalized, deduplicated, in order) and an auto/manual token."""
    names: list[str] = []
    transitive = None
    for a in args:
        t = parse_transitive(a)
        if t is not None:
            transitive = t
        elif a and normalize_name(a) not in names:  # mod_md would make a domain ""
            names.append(normalize_name(a))
    return names, transitive


def _dns_like(host: str) -> bool:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
            return True
        except ValueError:
            return False
    return bool(re.fullmatch(r"[A-Za-z0-9_.-]+", host)) and ".." not in host


def uri_problem(uri: str, http_only: bool = False) -> str | None:
    """mod_md's URI checks: None when `uri` is fine, else its complaint."""
    if any(c.isspace() for c in uri):
        return "whitespace in uri"
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", uri)
    if not m:
        return "missing uri scheme"
    scheme = m.group(1)
    if len(scheme) + 1 >= len(uri):
        return "missing uri identifier"
    if scheme.lower().startswith("http"):
        parts = urlsplit(uri)
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            return "invalid port"
        if not host:
            return "missing hostname"
        if not _dns_like(host):
            return "invalid hostname"
        if port is not None and not 0 < port <= 65535:
            return "invalid port"
    if http_only and scheme.lower() not in ("http", "https"):
        return "uri scheme must be http or https"
    return None


def parse_ca(args: list[str]) -> list[str]:
    urls = []
    for a in args:
        if a.lower() in KNOWN_CAS:
            urls.append(KNOWN_CAS[a.lower()])
            continue
        err = uri_problem(a)
        if err:
            raise Invalid(f"The CA name '{a}' is not known and it is not a URL either ({err}). "
                          f"Known CA names are: {KNOWN_CA_NAMES}.")
        urls.append(a)
    return urls


def schemify(value: str, scheme: str = "mailto") -> str:
    """`admin@x` -> `mailto:admin@x`; values with a scheme stay."""
    return value if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", value) else f"{scheme}:{value}"


def parse_renew_mode(value: str) -> RenewMode:
    v = value.lower()
    if v in ("auto", "automatic"):
        return RenewMode.AUTO
    if v == "always":
        return RenewMode.ALWAYS
    if v in ("manual", "stick"):
        return RenewMode.MANUAL
    raise Invalid(f"unknown MDDriveMode {value}")


def parse_require_https(value: str) -> str | None:
    v = value.lower()
    if v in ("off", "temporary", "permanent"):
        return None if v == "off" else v
    raise Invalid(f"unknown '{value}', supported parameter values are 'temporary' and 'permanent'")


def _atoi(text: str) -> int | None:
    """C's atoi/apr_atoi64 as mod_md uses them (trailing text ignored), None for
    no number or one beyond 64 bits (where C would return garbage)."""
    lead = leading_int(text)
    return lead[0] if lead else None


def _rsa_bits(text: str) -> int:
    bits = _atoi(text)  # `text` starts with a digit
    if bits is not None and bits < RSA_BITS_MIN:
        raise Invalid(f"must be {RSA_BITS_MIN} or higher in order to be considered safe.")
    if bits is None or bits >= INT_MAX:
        raise Invalid("is too large for an RSA key length.")
    if bits > RSA_BITS_MAX:  # mod_md takes any size below 2^31 and would try to make the key
        raise Invalid(f"RSA {bits} is too large: OpenSSL uses RSA keys of at most "
                      f"{RSA_BITS_MAX} bits (and making one that size takes minutes)")
    return bits


def parse_pkeys(args: list[str]) -> list[KeySpec]:
    """MDPrivateKeys per mod_md: Default | RSA [bits] | RSA<bits> | <curve> ..."""
    if not args:
        raise Invalid("needs to specify the private key type")
    specs: list[KeySpec] = []
    i = 0
    while i < len(args):
        p = args[i]
        if p.lower() == "default":
            if len(args) > 1:
                raise Invalid("'Default' allows no other parameter")
            specs.append(KeySpec("Default"))
        elif len(p) > 3 and p[:3].lower() == "rsa" and p[3].isdigit():
            bits = _rsa_bits(p[3:])
            if any(s.kind == "RSA" for s in specs):
                raise Invalid("two keys of type 'RSA' are not possible.")
            specs.append(KeySpec("RSA", bits=bits))
        elif p.lower() == "rsa":
            bits = 2048
            if i + 1 < len(args) and args[i + 1][:1].isdigit():
                i += 1
                bits = _rsa_bits(args[i])
            if any(s.kind == "RSA" for s in specs):
                raise Invalid("two keys of type 'RSA' are not possible.")
            specs.append(KeySpec("RSA", bits=bits))
        else:
            # Curves are resolved when keys are made; duplicates by name only, as mod_md.
            if any(s.kind == "EC" and s.curve.lower() == p.lower() for s in specs):
                raise Invalid(f"two keys of type '{p}' are not possible.")
            specs.append(KeySpec("EC", curve=p))
        i += 1
    return specs


def _too_long(name: str, value: str, e: OutOfRange) -> Invalid:
    return Invalid(f"{name} {value} {e}")


# What Debian 12's mod_ssl (OpenSSL 3.0, security level 2) does with a server key
# of each kind, tried with a real Apache and `openssl s_client`: RSA from 2048 bits
# and ECDSA on P-256/P-384/P-521 start and serve; a P-192 key stops Apache from
# starting ("ee key too small"); P-224, secp256k1 and brainpool start, but no
# handshake finds a signature algorithm for them; X25519/X448 cannot sign at all.
_AGREEMENT_ONLY = frozenset({"x25519", "x448"})
_REFUSED_CURVES = frozenset({"SECP192R1"})
_FEW_CLIENTS = frozenset({"SECP224R1", "SECP256K1", "BrainpoolP256R1", "BrainpoolP384R1",
                          "BrainpoolP512R1"})


def servable_keys(specs: list[KeySpec]) -> tuple[list[KeySpec], list[str]]:
    """The key specs mod_ssl can serve a certificate for, and a message for each
    that is left out (mod_md accepts them and fails every renewal, or Apache
    would not start) or that few clients can use."""
    kept, notes = [], []
    for ks in specs:
        if ks.kind != "EC":
            kept.append(ks)
            continue
        c = crypto.curve(ks.curve)
        if ks.curve.lower() in _AGREEMENT_ONLY:
            notes.append(f"MDPrivateKeys: {ks.curve} is a key-agreement key: no certificate can "
                         "be made for it (mod_md accepts it and fails every renewal); left out")
        elif c is None:
            notes.append(f"MDPrivateKeys: ec curve unknown: {ks.curve} (mod_md accepts it and "
                         "fails every renewal); left out; use e.g. P-256, P-384 or secp521r1")
        elif c.__name__ in _REFUSED_CURVES:
            notes.append(f"MDPrivateKeys: Apache would not start with a {ks.curve} key (OpenSSL's "
                         "security level refuses it: \"ee key too small\"); left out")
        else:
            kept.append(ks)
            if c.__name__ in _FEW_CLIENTS:
                notes.append(f"MDPrivateKeys: a {ks.curve} certificate is served, but TLS clients "
                             "sign with ECDSA on P-256, P-384 and P-521 only: most will not "
                             "connect with it (and CAs may not issue it)")
    return kept, notes


def parse_window(name: str, value: str) -> Timeslice:
    try:
        return Timeslice.parse(value, "d")
    except OutOfRange as e:
        raise _too_long(name, value, e) from None
    except DurationError as e:
        text = str(e)
        if name != "MDStaplingRenewWindow":  # mod_md words the two checks of its own apart
            text = text.removeprefix("with ")
        raise Invalid(f"{name} {text}") from None


def parse_keep_response(value: str) -> float:
    """Seconds; a percentage is of mod_md's 7-day norm and may exceed 100%."""
    name = "MDStaplingKeepResponse"
    try:
        ts = Timeslice.parse(value, "d", whole=True)
    except OutOfRange as e:
        raise _too_long(name, value, e) from None
    except DurationError:
        raise Invalid(f"{name} has unrecognized format") from None
    if ts.percent is None:
        return ts.seconds or 0.0
    secs = OCSP_KEEP_NORM * ts.percent / 100.0
    if secs > MAX_DURATION:
        raise Invalid(f"{name} {value} is out of range: at most "
                      f"{int(MAX_DURATION * 100 / OCSP_KEEP_NORM)}% (of 7 days, {MAX_DURATION_TEXT})")
    return secs


def _duration(name: str, value: str, unit: str = "s") -> float:
    """Seconds: mod_md's message when malformed, the name and value when too long."""
    try:
        return parse_duration(value, unit)
    except OutOfRange as e:
        raise _too_long(name, value, e) from None
    except DurationError as e:
        raise Invalid(str(e)) from None


def parse_check_interval(value: str) -> float:
    secs = _duration("MDCheckInterval", value)
    if secs < 1:
        raise Invalid("check interval cannot be less than one second")
    return secs


def parse_initial_delay(value: str) -> float:
    secs = _duration("MDInitialDelay", value)
    if secs < 0:
        raise Invalid("initial delay must not be negative")
    return secs


def parse_retry_delay(value: str) -> float:
    secs = _duration("MDRetryDelay", value)
    if secs <= 0:
        raise Invalid("minimum delay must be greater than 0")
    return secs


def parse_activation_delay(value: str) -> float:
    """Days by default; negative values move activation earlier (mod_md)."""
    return _duration("MDActivationDelay", value, "d")


def parse_retry_failover(value: str) -> int:
    n = _atoi(value)
    if n is not None and n > INT_MAX:  # C's atoi would wrap it
        raise Invalid(f"MDRetryFailover {value} is out of range: at most {INT_MAX}")
    if n is None or n <= 0:
        raise Invalid("invalid argument, must be a number > 0")
    return n


def parse_store_locks(value: str) -> float | None:
    v = value.lower()
    if v == "off":
        return None
    if v == "on":
        return STORE_LOCK_WAIT
    try:
        secs = parse_duration(value, "s")
    except OutOfRange as e:
        raise _too_long("MDStoreLocks", value, e) from None
    except DurationError:
        raise Invalid("neither 'on', 'off' or a duration specified") from None
    if secs < 0:  # mod_md would turn locks on with a negative wait
        raise Invalid("MDStoreLocks: the time to wait for the lock must not be negative")
    return secs if secs else None


def parse_match_names(value: str) -> str:
    v = value.lower()
    if v in ("all", "servernames"):
        return v
    raise Invalid("invalid argument, must be a 'all' or 'servernames'")


def parse_dns01_version(value: str) -> int:
    if value in ("1", "2"):
        return int(value)
    raise Invalid("Only versions `1` and `2` are supported")


def _strtoi64(text: str) -> tuple[int, str] | None:
    """apr_strtoi64 as mod_md's set_port_map reads it: without digits 0 and all of `text`
    (no error), None only beyond 64 bits (ERANGE)."""
    return leading_int(text) if re.match(r"\s*[+-]?\d", text) else (0, text)


def _port_map_entry(text: str) -> tuple[int, int | None]:
    if text.startswith("http:"):
        net, rest = 80, text[5:]
    elif text.startswith("https:"):
        net, rest = 443, text[6:]
    else:
        lead = _strtoi64(text)
        if lead is None:
            raise Invalid("unable to parse first port number")
        net, rest = lead
        if not rest.startswith(":"):
            raise Invalid("no ':' after first port number")
        rest = rest[1:]
    local: int | None
    if rest.startswith("-"):
        local = None
    else:
        lead = _strtoi64(rest)
        if lead is None:
            raise Invalid("unable to parse second port number")
        local = lead[0]
        if not 0 < local <= 65535:
            raise Invalid("invalid number for port map, must be in ]0,65535]")
    if net not in (80, 443):
        raise Invalid("mapped port number must be 80 or 443")
    return net, local


def parse_port_map(args: list[str]) -> dict[int, int | None]:
    return dict(_port_map_entry(a) for a in args)


KEY_POOL_MAX = 1000


def parse_key_pool(value: str) -> int:
    """MDKeyPool: keys of each kind kept ready (store/keypool), 0 for none."""
    if not (value.isascii() and value.isdigit()) or int(value) > KEY_POOL_MAX:
        raise Invalid(f"MDKeyPool '{value}': a number of keys from 0 to {KEY_POOL_MAX}")
    return int(value)


def parse_activation_interval(value: str) -> float:
    try:
        secs = parse_duration(value, "s")
    except OutOfRange as e:
        raise _too_long("MDActivationInterval", value, e) from None
    except DurationError as e:
        raise Invalid(f"MDActivationInterval: {e}") from None
    if secs < 0:
        raise Invalid("MDActivationInterval must not be negative")
    return secs


def parse_activation_window(value: str) -> tuple[int, int]:
    """`HH:MM-HH:MM` -> minutes of day [from, to); may wrap over midnight."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", value.strip())
    if m:
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 <= 24 and h2 <= 24 and m1 < 60 and m2 < 60:
            start, end = (h1 * 60 + m1) % 1440, (h2 * 60 + m2) % 1440
            if start != end:
                return start, end
            raise Invalid("MDActivationWindow must not be empty (start and end are equal)")
    raise Invalid(f"MDActivationWindow '{value}' must look like HH:MM-HH:MM, e.g. 02:00-05:00")


def parse_etcd_endpoints(args: list[str]) -> list[str]:
    """MDClusterEtcd: etcd client URLs; `host:port` means http://host:port."""
    out = []
    for a in args:
        url = a if "://" in a else f"http://{a}"
        m = re.fullmatch(r"(https?)://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?/?", url)
        if not m:
            raise Invalid(f"MDClusterEtcd: '{a}' is not an etcd endpoint like "
                          "https://10.0.0.1:2379 or 127.0.0.1:2379")
        port = int(m.group(3) or 2379)
        if not 0 < port <= 65535:
            raise Invalid(f"MDClusterEtcd: port {port} of '{a}' is out of range")
        out.append(f"{m.group(1)}://{m.group(2)}:{port}")
    if not out:
        raise Invalid("MDClusterEtcd needs at least one endpoint")
    return out


def parse_cluster_node(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
        raise Invalid(f"MDClusterNode '{value}': a node name is 1-63 letters, digits, '.', '_' "
                      "or '-', starting with a letter or digit")
    return value


def parse_cluster_prefix(value: str) -> str:
    prefix = value.rstrip("/")
    if not prefix.startswith("/") or not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", prefix):
        raise Invalid(f"MDClusterPrefix '{value}' must be a key path like /apache-md "
                      "(letters, digits, '.', '_', '-' between slashes)")
    return prefix


def parse_lease_ttl(value: str) -> float:
    secs = _duration("MDClusterLeaseTTL", value)
    if not 2 <= secs <= 3600:
        raise Invalid(f"MDClusterLeaseTTL {value}: must be between 2s and 1h (how long a "
                      "dead node's locks outlive it)")
    return secs


def parse_eab(args: list[str], server_root: str) -> tuple[str | None, str | None]:
    """(kid, hmac) from `kid hmac`, a JSON file relative to ServerRoot, or (None, None)
    for `none` (which overrides a global value).

    The file holds a secret: like an SSH key it is refused when others may read
    it (mod_md reads it as root and does not check; apache-md's `check` and
    worker read it as the worker's user, so group access is fine).
    """
    if len(args) == 2:
        return args[0], args[1]
    arg = args[0]
    if is_none(arg):
        return None, None
    if not arg or "\0" in arg:
        raise Invalid(f"MDExternalAccountBinding: Invalid file path {arg}")
    path = os.path.normpath(os.path.join(server_root, arg))
    try:
        st = os.stat(path)
    except PermissionError:
        raise Invalid(f"MDExternalAccountBinding: cannot access {path} (permission denied); "
                      "the user running apache-md needs read access to it, e.g. through "
                      "its group") from None
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise Invalid(f"MDExternalAccountBinding: file not found: {path}")
    if st.st_mode & 0o007:
        raise Invalid(f"MDExternalAccountBinding: {path} holds a secret (the EAB hmac) but is "
                      f"accessible by others (mode {stat.S_IMODE(st.st_mode):04o}); make it "
                      f"private, e.g. chmod o-rwx {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except PermissionError:
        raise Invalid(f"MDExternalAccountBinding: cannot read {path} (permission denied); "
                      "the user running apache-md needs read access to it, e.g. through "
                      "its group") from None
    except (OSError, ValueError):
        raise Invalid(f"MDExternalAccountBinding: error reading JSON file {path}") from None
    values = []
    for key in ("kid", "hmac"):
        v = data.get(key) if isinstance(data, dict) else None
        if not isinstance(v, str) or not v:
            raise Invalid(f"MDExternalAccountBinding: JSON does not contain '{key}' element in file {path}")
        values.append(v)
    return values[0], values[1]


def challenge_type_warnings(types: list[str]) -> list[str]:
    """MDCAChallenges values apache-md will not use (mod_md accepts any string here)."""
    out = []
    for t in types:
        if t == "tls-alpn-01":
            out.append("MDCAChallenges: tls-alpn-01 is never used by apache-md: answering it "
                       "needs a hook into mod_ssl's TLS handshake, which only a C module "
                       "(mod_md) has. Use http-01 (port 80 reachable) and/or dns-01 "
                       "(MDChallengeDns01).")
        elif t not in ("http-01", "dns-01"):
            out.append(f"MDCAChallenges: unknown challenge type '{t}' is ignored; "
                       "known types are http-01 and dns-01")
    return out


def parse_proxy(value: str) -> str:
    err = uri_problem(value, http_only=True)
    if err:
        raise Invalid(err)
    return value


# --------------------------------------------------------------------------
# The directive table

ALL, SRV, MD = "ALL", "SRV", "MD"
# Where a value goes: an MD property (per scope), a module-global setting, or
# mod_md's module "env" table (proxy & co.: per MD inside a section, else global).
PROP, GLOBAL, ENV, SPECIAL = "prop", "global", "env", "special"

Parser = Callable[[list[str], str], Any]  # (args, server_root) -> value


@dataclass(frozen=True)
class Spec:
    name: str
    ctx: str
    nargs: str
    store: str
    key: str
    parse: Parser
    help: str


def _one(f: Callable[[str], Any]) -> Parser:
    return lambda args, root: f(args[0])


def _path_or_none(args: list[str], root: str) -> str | None:
    """A path relative to ServerRoot, or None for `none` (which overrides a global value)."""
    return None if is_none(args[0]) else os.path.normpath(os.path.join(root, args[0]))


def _abs_path(args: list[str], root: str) -> str:
    return os.path.normpath(os.path.join(root, args[0]))


_SPECS = [
    Spec("MDomain", SRV, ARGV, SPECIAL, "", lambda a, r: parse_names(a),
         "a group of server names sharing one certificate"),
    Spec("MDMember", ALL, ARGV, SPECIAL, "", lambda a, r: a, "domain names of the Managed Domain"),
    Spec("MDMembers", ALL, ARGV, SPECIAL, "", lambda a, r: a, "domain names of the Managed Domain"),
    Spec("MDCertificateAuthority", ALL, ARGV, PROP, "ca_urls", lambda a, r: parse_ca(a),
         "URL(s) or known name(s) of the CA"),
    Spec("MDCertificateProtocol", ALL, TAKE1, PROP, "ca_proto", _one(str),
         "the protocol to obtain certificates (ACME)"),
    Spec("MDCertificateAgreement", ALL, TAKE1, PROP, "ca_agreement", _one(str),
         "'accepted' or the URL of the CA's terms of service"),
    Spec("MDContactEmail", ALL, TAKE1, PROP, "contact", _one(schemify),
         "the email address for the ACME account"),
    Spec("MDExternalAccountBinding", ALL, TAKE12, PROP, "eab", lambda a, r: parse_eab(a, r),
         "key id and hmac, a JSON file with both, or 'none'"),
    Spec("MDPrivateKeys", ALL, ARGV, PROP, "pkey_specs", lambda a, r: parse_pkeys(a),
         "the type(s) of private keys"),
    Spec("MDRenewWindow", ALL, TAKE1, PROP, "renew_window",
         _one(lambda v: parse_window("MDRenewWindow", v)),
         "remaining lifetime at which renewal starts (default unit days, or N%)"),
    Spec("MDWarnWindow", ALL, TAKE1, PROP, "warn_window",
         _one(lambda v: parse_window("MDWarnWindow", v)),
         "remaining lifetime at which to warn (default unit days, or N%)"),
    Spec("MDRenewMode", ALL, TAKE1, PROP, "renew_mode", _one(parse_renew_mode),
         "auto, always or manual"),
    Spec("MDDriveMode", ALL, TAKE1, PROP, "renew_mode", _one(parse_renew_mode),
         "deprecated name of MDRenewMode"),
    Spec("MDRequireHttps", ALL, TAKE1, PROP, "require_https", _one(parse_require_https),
         "off, temporary or permanent"),
    Spec("MDMustStaple", ALL, TAKE1, PROP, "must_staple", _one(parse_on_off), "on or off"),
    Spec("MDStapling", ALL, TAKE1, PROP, "stapling", _one(parse_on_off), "on or off"),
    Spec("MDStapleOthers", ALL, TAKE1, GLOBAL, "staple_others", _one(parse_on_off), "on or off"),
    # mod_md lowercases the types (md-status shows `http-01` for `HTTP-01`) and uses them so
    Spec("MDCAChallenges", ALL, ARGV, PROP, "challenges",
         lambda a, r: [x.lower() for x in a] or None,
         "the challenge types to use, in order"),
    Spec("MDProfile", ALL, TAKE1, PROP, "profile", _one(str), "the ACME order profile"),
    Spec("MDProfileMandatory", ALL, TAKE1, PROP, "profile_mandatory", _one(parse_on_off), "on or off"),
    Spec("MDRenewViaARI", ALL, TAKE1, PROP, "ari_renewals", _one(parse_on_off), "on or off"),
    Spec("MDHttpProxy", ALL, TAKE1, ENV, "proxy_url", _one(parse_proxy),
         "the http(s) URL of a proxy for outgoing connections"),
    Spec("MDCACertificateFile", ALL, TAKE1, ENV, "ca_certs", _path_or_none,
         "trusted roots for connections to the CA, or 'none'"),
    Spec("MDHttpProxyCACertificateFile", ALL, TAKE1, ENV, "proxy_ca_certs", _path_or_none,
         "trusted roots for connections to the proxy, or 'none'"),
    Spec("MDChallengeDns01", ALL, RAW, ENV, "dns01_cmd", lambda a, r: a[0],
         "the command to set up and tear down dns-01 challenges"),
    Spec("MDCertificateFile", MD, TAKE1, SPECIAL, "cert_files", _abs_path,
         "a static certificate (chain) file for this domain"),
    Spec("MDCertificateKeyFile", MD, TAKE1, SPECIAL, "key_files", _abs_path,
         "the private key file of a static certificate"),
    Spec("MDServerStatus", ALL, TAKE1, GLOBAL, "server_status", _one(parse_on_off), "on or off"),
    Spec("MDCertificateStatus", ALL, TAKE1, GLOBAL, "certificate_status", _one(parse_on_off), "on or off"),
    Spec("MDCertificateCheck", ALL, TAKE2, GLOBAL, "certificate_check", lambda a, r: (a[0], a[1]),
         "the name and URL prefix of a certificate monitoring site"),
    Spec("MDStaplingKeepResponse", ALL, TAKE1, GLOBAL, "stapling_keep_response", _one(parse_keep_response),
         "how long to keep OCSP responses"),
    Spec("MDStaplingRenewWindow", ALL, TAKE1, GLOBAL, "stapling_renew_window",
         _one(lambda v: parse_window("MDStaplingRenewWindow", v)),
         "remaining OCSP response lifetime at which to renew it"),
    Spec("MDBaseServer", SRV, TAKE1, GLOBAL, "base_server", _one(parse_on_off), "on or off"),
    Spec("MDMatchNames", SRV, TAKE1, GLOBAL, "match_names", _one(parse_match_names), "all or servernames"),
    Spec("MDPortMap", SRV, TAKE12, GLOBAL, "port_map", lambda a, r: parse_port_map(a),
         "mapped ports, e.g. 80:8080 443:8443 (or 80:- when not reachable)"),
    Spec("MDStoreDir", SRV, TAKE1, GLOBAL, "store_dir", _abs_path, "the directory of the store"),
    Spec("MDStoreLocks", SRV, TAKE1, GLOBAL, "store_locks", _one(parse_store_locks),
         "on, off or how long to wait for the lock"),
    Spec("MDCheckInterval", SRV, TAKE1, GLOBAL, "check_interval", _one(parse_check_interval),
         "time between certificate checks"),
    Spec("MDInitialDelay", SRV, TAKE1, GLOBAL, "initial_delay", _one(parse_initial_delay),
         "delay before the first check"),
    Spec("MDRetryDelay", SRV, TAKE1, GLOBAL, "retry_delay", _one(parse_retry_delay),
         "delay of the first retry, doubled on every further error"),
    Spec("MDRetryFailover", SRV, TAKE1, GLOBAL, "retry_failover", _one(parse_retry_failover),
         "number of errors before switching to the next CA"),
    Spec("MDActivationDelay", SRV, TAKE1, GLOBAL, "activation_delay", _one(parse_activation_delay),
         "how long to delay activation of new certificates"),
    Spec("MDMessageCmd", SRV, RAW, GLOBAL, "message_cmd", lambda a, r: a[0],
         "the command run for messages about a domain"),
    Spec("MDNotifyCmd", SRV, RAW, GLOBAL, "notify_cmd", lambda a, r: a[0],
         "the command run after a renewal"),
    Spec("MDChallengeDns01Version", SRV, TAKE1, GLOBAL, "dns01_version", _one(parse_dns01_version),
         "1 or 2"),
    Spec("MDKeyPool", SRV, TAKE1, GLOBAL, "key_pool", _one(parse_key_pool),
         "private keys of each kind kept ready for new certificates"),
    Spec("MDActivationInterval", SRV, TAKE1, GLOBAL, "activation_interval",
         _one(parse_activation_interval), "minimum time between reloads that activate certificates"),
    Spec("MDActivationWindow", SRV, TAKE1, GLOBAL, "activation_window", _one(parse_activation_window),
         "daily time window HH:MM-HH:MM in which certificates are activated"),
    Spec("MDClusterEtcd", SRV, ARGV, GLOBAL, "cluster_etcd", lambda a, r: parse_etcd_endpoints(a),
         "the etcd endpoints of the fleet"),
    Spec("MDClusterNode", SRV, TAKE1, GLOBAL, "cluster_node", _one(parse_cluster_node),
         "this node's name in the fleet"),
    Spec("MDClusterPrefix", SRV, TAKE1, GLOBAL, "cluster_prefix", _one(parse_cluster_prefix),
         "the etcd key prefix of the fleet"),
    Spec("MDClusterKeyFile", SRV, TAKE1, GLOBAL, "cluster_key_file", _abs_path,
         "the file with the fleet key"),
    Spec("MDClusterEtcdCA", SRV, TAKE1, GLOBAL, "cluster_etcd_ca", _abs_path,
         "the CA certificates that etcd's server certificate must chain to"),
    Spec("MDClusterEtcdCert", SRV, TAKE1, GLOBAL, "cluster_etcd_cert", _abs_path,
         "the client certificate for etcd"),
    Spec("MDClusterEtcdKey", SRV, TAKE1, GLOBAL, "cluster_etcd_key", _abs_path,
         "the private key of the client certificate for etcd"),
    Spec("MDClusterLeaseTTL", SRV, TAKE1, GLOBAL, "cluster_lease_ttl", _one(parse_lease_ttl),
         "how long the locks of a node that stopped answering last"),
]
# httpd's complaint about a directive's arguments ends with its help text: mod_md's own
# (mod_md_config.c), word for word, for the directives it has
MOD_MD_HELP = {
    'MDCertificateAuthority': 'URL(s) or known name(s) of CA issuing the certificates',
    'MDCertificateAgreement': "either 'accepted' or the URL of CA Terms-of-Service agreement you accept",
    'MDCAChallenges': 'A list of challenge types to be used.',
    'MDCertificateProtocol': 'Protocol used to obtain/renew certificates',
    'MDContactEmail': 'Email address used for account registration',
    'MDDriveMode': 'deprecated, older name for MDRenewMode',
    'MDRenewMode': 'Controls how renewal of Managed Domain certificates shall be handled.',
    'MDomain': 'A group of server names with one certificate',
    'MDMember': "Define domain name(s) part of the Managed Domain. Use 'auto' or 'manual' to enable/disable auto adding names from virtual hosts.",
    'MDMembers': "Define domain name(s) part of the Managed Domain. Use 'auto' or 'manual' to enable/disable auto adding names from virtual hosts.",
    'MDMustStaple': 'Enable/Disable the Must-Staple flag for new certificates.',
    'MDPortMap': 'Declare the mapped ports 80 and 443 on the local server. E.g. 80:8000 to indicate that the server port 8000 is reachable as port 80 from the internet. Use 80:- to indicate that port 80 is not reachable from the outside.',
    'MDPrivateKeys': 'set the type and parameters for private key generation',
    'MDHttpProxy': 'URL of a HTTP(S) proxy to use for outgoing connections',
    'MDStoreDir': 'the directory for file system storage of managed domain data.',
    'MDRenewWindow': 'Time length for renewal before certificate expires (defaults to days).',
    'MDRequireHttps': 'Redirect non-secure requests to the https: equivalent.',
    'MDNotifyCmd': 'Set the command to run when signup/renew of domain is complete.',
    'MDBaseServer': 'Allow managing of base server outside virtual hosts.',
    'MDChallengeDns01': 'Set the command for setup/teardown of dns-01 challenges',
    'MDChallengeDns01Version': 'Set the type of arguments to call `MDChallengeDns01` with',
    'MDCertificateFile': 'set the static certificate (chain) file to use for this domain.',
    'MDCertificateKeyFile': 'set the static private key file to use for this domain.',
    'MDServerStatus': 'On to see Managed Domains in server-status.',
    'MDCertificateStatus': 'On to see Managed Domain expose /.httpd/certificate-status.',
    'MDWarnWindow': 'When less time remains for a certificate, send our/log a warning (defaults to days)',
    'MDMessageCmd': 'Set the command run when a message about a domain is issued.',
    'MDStapling': 'Enable/Disable OCSP Stapling for this/all Managed Domain(s).',
    'MDStapleOthers': 'Enable/Disable OCSP Stapling for certificates not in Managed Domains.',
    'MDStaplingKeepResponse': 'The amount of time to keep an OCSP response in the store.',
    'MDStaplingRenewWindow': 'Time length for renewal before OCSP responses expire (defaults to days).',
    'MDCertificateCheck': 'Set name and URL pattern for a certificate monitoring site.',
    'MDActivationDelay': 'How long to delay activation of new certificates',
    'MDCACertificateFile': 'Set the CA file to use for connections',
    'MDExternalAccountBinding': 'Set the external account binding keyid and hmac values to use at CA',
    'MDRetryDelay': 'Time length for first retry, doubled on every consecutive error.',
    'MDRetryFailover': 'The number of errors before a failover to another CA is triggered.',
    'MDStoreLocks': 'Configure locking of store for updates.',
    'MDMatchNames': 'Determines how DNS names are matched to vhosts.',
    'MDInitialDelay': 'How long to delay the first certificate check.',
    'MDCheckInterval': 'Time between certificate checks.',
    'MDProfile': 'The name of an CA profile to order certificates for.',
    'MDProfileMandatory': 'Determines if a configured CA profile is mandatory.',
    'MDRenewViaARI': 'Enable/Disable ACME ARI (RFC 9773) to trigger renewals.',
}
_SPECS = [replace(s, help=MOD_MD_HELP.get(s.name, s.help)) for s in _SPECS]
SPECS: dict[str, Spec] = {s.name.lower(): s for s in _SPECS}

# MD properties set in a <VirtualHost> that mod_md ignores for MDs (worth a warning).
VHOST_IGNORED = frozenset({"ca_urls", "ca_proto", "ca_agreement", "eab", "pkey_specs", "renew_window",
                            "warn_window", "renew_mode", "require_https", "must_staple",
                            "challenges", "profile", "profile_mandatory", "ari_renewals", "transitive"})


def spec_args(spec: Spec, words: list[str], raw: str) -> list[str]:
    """The arguments httpd hands the directive (RAW: its line as written), or
    Invalid with httpd core's message when their number is wrong."""
    if spec.nargs == RAW:
        if not raw:
            raise Invalid(f"{spec.name} needs a command line, {spec.help}")
        return [raw]
    args = take(spec.nargs, words)
    if args is None:
        raise Invalid(count_message(spec.name, spec.nargs, spec.help))
    return args
