"""MD directives -> `model.Config`, with mod_md's semantics and messages.

Reads the tree from `syntax`, validates every MD* directive like mod_md
(argument counts, contexts, values), collects Listen ports and virtual hosts,
computes each Managed Domain's effective settings (MD section > server level
> default), matches vhosts to MDs and reports the start-up conflicts mod_md
would refuse to start with. Nothing here raises for bad input.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from ..core import crypto, tailscale
from ..core.durations import DurationError, Timeslice, parse_duration
from ..core.model import (
    KNOWN_CA_NAMES,
    KNOWN_CAS,
    Config,
    GlobalSettings,
    KeySpec,
    Location,
    ManagedDomain,
    Problem,
    RenewMode,
    VHost,
)
from ..store.fs import APACHE
from . import syntax
from .syntax import Directive

MD_SECTION = "<MDomainSet"  # the name mod_md uses in its messages, also for <MDomain>
RSA_BITS_MIN = 2048
INT_MAX = 2**31 - 1
STORE_LOCK_WAIT = 5.0
OCSP_KEEP_NORM = 7 * 86400.0  # MDStaplingKeepResponse percentages are of 7 days
# Sections whose content is per-directory: MD directives cannot go there.
DIR_SECTIONS = frozenset({"directory", "directorymatch", "location", "locationmatch",
                          "files", "filesmatch", "proxy", "proxymatch"})
# mod_md 1.x names, removed in v1.99.5: httpd rejects them as unknown.
REMOVED = frozenset({"manageddomain"})
# Sections that only exist at request time and do not scope server config.
TRANSPARENT_SECTIONS = frozenset({"if", "elseif", "else"})


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
        elif normalize_name(a) not in names:
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


def _leading_int(text: str) -> int:
    m = re.match(r"\s*[+-]?\d+", text)
    return int(m.group(0)) if m else 0


def _rsa_bits(text: str) -> int:
    bits = _leading_int(text)
    if bits < RSA_BITS_MIN:
        raise Invalid(f"must be {RSA_BITS_MIN} or higher in order to be considered safe.")
    if bits >= INT_MAX:
        raise Invalid("is too large for an RSA key length.")
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


def parse_window(name: str, value: str) -> Timeslice:
    try:
        return Timeslice.parse(value, "d")
    except DurationError as e:
        raise Invalid(f"{name} {e}") from None


def parse_keep_response(value: str) -> float:
    """Seconds; a percentage is of mod_md's 7-day norm and may exceed 100%."""
    try:
        secs = parse_duration(value, "d")
    except DurationError:
        secs = -1
    if secs >= 0:
        return secs
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
    if m:
        return OCSP_KEEP_NORM * float(m.group(1)) / 100.0
    raise Invalid("MDStaplingKeepResponse has unrecognized format")


def _duration(value: str, unit: str = "s") -> float:
    try:
        return parse_duration(value, unit)
    except DurationError as e:
        raise Invalid(str(e)) from None


def parse_check_interval(value: str) -> float:
    secs = _duration(value)
    if secs < 1:
        raise Invalid("check interval cannot be less than one second")
    return secs


def parse_initial_delay(value: str) -> float:
    secs = _duration(value)
    if secs < 0:
        raise Invalid("initial delay must not be negative")
    return secs


def parse_retry_delay(value: str) -> float:
    secs = _duration(value)
    if secs <= 0:
        raise Invalid("minimum delay must be greater than 0")
    return secs


def parse_retry_failover(value: str) -> int:
    n = _leading_int(value)
    if n <= 0:
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
    except DurationError:
        raise Invalid("neither 'on', 'off' or a duration specified") from None
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


def _port_map_entry(text: str) -> tuple[int, int | None]:
    if text.startswith("http:"):
        net, rest = 80, text[5:]
    elif text.startswith("https:"):
        net, rest = 443, text[6:]
    else:
        m = re.match(r"[+-]?\d+", text)
        if not m:
            raise Invalid("unable to parse first port number")
        net, rest = int(m.group(0)), text[m.end():]
        if not rest.startswith(":"):
            raise Invalid("no ':' after first port number")
        rest = rest[1:]
    local: int | None
    if rest.startswith("-"):
        local = None
    else:
        m = re.match(r"[+-]?\d+", rest)
        if not m:
            raise Invalid("unable to parse second port number")
        local = int(m.group(0))
        if not 0 < local <= 65535:
            raise Invalid("invalid number for port map, must be in ]0,65535]")
    if net not in (80, 443):
        raise Invalid("mapped port number must be 80 or 443")
    return net, local


def parse_port_map(args: list[str]) -> dict[int, int | None]:
    return dict(_port_map_entry(a) for a in args)


def parse_activation_interval(value: str) -> float:
    try:
        secs = parse_duration(value, "s")
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
TAKE1, TAKE2, TAKE12, ARGV, RAW = "TAKE1", "TAKE2", "TAKE12", "ARGV", "RAW"
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
    Spec("MDCAChallenges", ALL, ARGV, PROP, "challenges", lambda a, r: list(a) or None,
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
    Spec("MDActivationDelay", SRV, TAKE1, GLOBAL, "activation_delay", _one(lambda v: _duration(v, "d")),
         "how long to delay activation of new certificates"),
    Spec("MDMessageCmd", SRV, RAW, GLOBAL, "message_cmd", lambda a, r: a[0],
         "the command run for messages about a domain"),
    Spec("MDNotifyCmd", SRV, RAW, GLOBAL, "notify_cmd", lambda a, r: a[0],
         "the command run after a renewal"),
    Spec("MDChallengeDns01Version", SRV, TAKE1, GLOBAL, "dns01_version", _one(parse_dns01_version),
         "1 or 2"),
    Spec("MDActivationInterval", SRV, TAKE1, GLOBAL, "activation_interval",
         _one(parse_activation_interval), "minimum time between reloads that activate certificates"),
    Spec("MDActivationWindow", SRV, TAKE1, GLOBAL, "activation_window", _one(parse_activation_window),
         "daily time window HH:MM-HH:MM in which certificates are activated"),
]
SPECS: dict[str, Spec] = {s.name.lower(): s for s in _SPECS}

# MD properties set in a <VirtualHost> that mod_md ignores for MDs (worth a warning).
_VHOST_IGNORED = frozenset({"ca_urls", "ca_proto", "ca_agreement", "eab", "pkey_specs", "renew_window",
                            "warn_window", "renew_mode", "require_https", "must_staple",
                            "challenges", "profile", "profile_mandatory", "ari_renewals", "transitive"})


def arg_count_problem(spec: Spec, args: list[str], raw: str) -> str | None:
    """httpd core's messages for a wrong number of arguments."""
    n = len(args)
    if spec.nargs == TAKE1 and n != 1:
        return f"{spec.name} takes one argument, {spec.help}"
    if spec.nargs == TAKE2 and n != 2:
        return f"{spec.name} takes two arguments, {spec.help}"
    if spec.nargs == TAKE12 and not 1 <= n <= 2:
        return f"{spec.name} takes 1-2 arguments, {spec.help}"
    if spec.nargs == RAW and not raw:
        return f"{spec.name} needs a command line, {spec.help}"
    return None


# --------------------------------------------------------------------------
# Reading the tree


@dataclass
class _MDDraft:
    names: list[str]
    location: Location
    transitive: bool | None = None  # auto/manual on the MDomain line
    props: dict[str, Any] = field(default_factory=dict)
    cert_files: list[str] = field(default_factory=list)
    key_files: list[str] = field(default_factory=list)


@dataclass
class _Scope:
    kind: str  # "server" | "vhost" | "md"
    props: dict[str, Any]
    md: _MDDraft | None = None
    vhost: VHost | None = None
    dir_section: str | None = None  # name of an enclosing <Directory>-like section


@dataclass
class _Collected:
    """Everything read from the tree, before effective values are computed."""

    server_root: str
    settings: GlobalSettings
    global_props: dict[str, Any] = field(default_factory=dict)
    module_env: dict[str, Any] = field(default_factory=dict)
    mds: list[_MDDraft] = field(default_factory=list)
    vhosts: list[VHost] = field(default_factory=list)
    listen_ports: list[int] = field(default_factory=list)
    listens: list[str] = field(default_factory=list)
    server_name: str | None = None
    server_name_loc: Location | None = None
    server_admin: str | None = None
    base_ssl: bool = False
    base_protocols: list[str] = field(default_factory=list)
    base_cert_files: list[str] = field(default_factory=list)
    base_key_files: list[str] = field(default_factory=list)
    user: str | None = None
    group: str | None = None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def server_name_host(value: str) -> str:
    """ServerName `[scheme://]host[:port]` -> lowercased host (IPv6 without brackets)."""
    v = value.split("://", 1)[1] if "://" in value else value
    if v.startswith("["):
        return normalize_name(v[: v.find("]") + 1] if "]" in v else v)
    return normalize_name(v.rsplit(":", 1)[0] if v.count(":") == 1 else v)


def address_port(addr: str) -> int | None:
    """The port of a Listen/VirtualHost address, None when it has none (or `*`)."""
    host_port = addr.rsplit("]", 1)[1] if addr.startswith("[") else addr
    if ":" not in host_port:
        return int(host_port) if host_port.isdigit() and not addr.startswith("[") else None
    port = host_port.rsplit(":", 1)[1]
    return int(port) if port.isdigit() else None


class _Walker:
    def __init__(self, server_root: str):
        self.c = _Collected(server_root=server_root,
                            settings=GlobalSettings(store_dir=os.path.join(server_root, "md")))
        self.any_port: set[int] = set()  # ids of vhosts with an address without port

    def error(self, msg: str, loc: Location | None, md: str | None = None) -> None:
        self.c.errors.append(Problem(msg, loc, md))

    def warn(self, msg: str, loc: Location | None, md: str | None = None) -> None:
        self.c.warnings.append(Problem(msg, loc, md))

    def invalid_command(self, name: str, loc: Location) -> None:
        self.error(f"Invalid command '{name}', perhaps misspelled or defined by a module "
                   "not included in the server configuration", loc)

    def walk(self, directives: list[Directive], scope: _Scope) -> None:
        for d in directives:
            if d.is_section:
                self.section(d, scope)
            elif d.lname in SPECS:
                self.md_directive(SPECS[d.lname], d, scope)
            elif d.lname.startswith("md") or d.lname in REMOVED:
                self.invalid_command(d.name, d.location)
            elif scope.dir_section is None and scope.kind != "md":
                self.core_directive(d, scope)

    # --- sections

    def section(self, d: Directive, scope: _Scope) -> None:
        ln = d.lname
        if ln in ("mdomain", "mdomainset"):
            self.md_section(d, scope)
        elif ln.startswith("md") or ln in REMOVED:
            self.invalid_command("<" + d.name, d.location)
        elif ln == "virtualhost":
            if scope.kind != "server" or scope.dir_section:
                where = scope.dir_section or ("VirtualHost" if scope.kind == "vhost" else "MDomainSet")
                self.error(f"<VirtualHost> cannot occur within <{where}> section", d.location)
                return
            self.virtual_host(d)
        elif ln in DIR_SECTIONS:
            self.walk(d.children or [], _Scope(scope.kind, scope.props, scope.md, scope.vhost,
                                               scope.dir_section or d.name))
        elif ln == "macro":
            return  # a template, not configuration (mod_macro expands it at use)
        else:  # <If>, <Limit>, unknown module sections: no scope of their own for us
            self.walk(d.children or [], scope)

    def md_section(self, d: Directive, scope: _Scope) -> None:
        if scope.kind == "md":
            self.error(f"<{d.name}> is not allowed inside an '{MD_SECTION}' context", d.location)
            return
        if scope.dir_section:
            self.error(f"<{d.name}> cannot occur within <{scope.dir_section}> section", d.location)
            return
        names, transitive = parse_names(d.args)
        if not d.args:
            self.error(f"{MD_SECTION} > section must specify a unique domain name", d.location)
            return
        if not names:
            self.error("needs at least one domain name", d.location)
            return
        md = _MDDraft(names, d.location, transitive)
        self.c.mds.append(md)
        self.walk(d.children or [], _Scope("md", md.props, md=md))

    def virtual_host(self, d: Directive) -> None:
        vh = VHost(location=d.location, addresses=list(d.args))
        for a in d.args:
            p = address_port(a)
            if p is None:
                self.any_port.add(id(vh))  # every Listen port, known only at the end
            elif p not in vh.ports:
                vh.ports.append(p)
        self.c.vhosts.append(vh)
        self.walk(d.children or [], _Scope("vhost", {}, vhost=vh))

    # --- plain httpd directives we need

    def core_directive(self, d: Directive, scope: _Scope) -> None:
        ln, args, vh = d.lname, d.args, scope.vhost
        root = self.c.server_root
        if ln == "listen" and scope.kind == "server" and args:
            p = address_port(args[0])
            if p is not None and p not in self.c.listen_ports:
                self.c.listen_ports.append(p)
            self.c.listens.append(args[0])
        elif ln == "servername" and args:
            if vh:
                vh.server_name = server_name_host(args[0])
            else:
                self.c.server_name, self.c.server_name_loc = server_name_host(args[0]), d.location
        elif ln == "serveralias" and vh:
            for a in args:
                if normalize_name(a) not in vh.aliases:
                    vh.aliases.append(normalize_name(a))
        elif ln == "serveradmin" and args:
            if vh:
                vh.server_admin = args[0]
            else:
                self.c.server_admin = args[0]
        elif ln == "user" and args and not vh:
            self.c.user = args[0]
        elif ln == "group" and args and not vh:
            self.c.group = args[0]
        elif ln == "sslengine" and args:
            on = args[0].lower() == "on"
            if vh:
                vh.ssl = on
            else:
                self.c.base_ssl = on
        elif ln == "protocols":
            if vh:
                vh.protocols = list(args)
            else:
                self.c.base_protocols = list(args)
        elif ln in ("sslcertificatefile", "sslcertificatekeyfile") and args:
            path = os.path.normpath(os.path.join(root, args[0]))
            if vh:
                (vh.cert_files if ln == "sslcertificatefile" else vh.key_files).append(path)
            else:
                (self.c.base_cert_files if ln == "sslcertificatefile" else self.c.base_key_files).append(path)
        elif ln in ("include", "includeoptional") and vh and d.include_path:
            vh.includes.append(d.include_path)

    # --- MD directives

    def md_directive(self, spec: Spec, d: Directive, scope: _Scope) -> None:
        args = [d.raw] if spec.nargs == RAW else d.args
        problem = arg_count_problem(spec, d.args, d.raw)
        if problem:
            self.error(problem, d.location)
            return
        in_md = scope.kind == "md"
        if spec.name in ("MDMember", "MDMembers"):
            self.members(spec, d, scope)
            return
        if spec.ctx == MD and not in_md:
            self.error(f"{spec.name} is only valid inside a '{MD_SECTION}' context, not here", d.location)
            return
        if spec.ctx == SRV and in_md:
            self.error(f"{spec.name} is not allowed inside an '{MD_SECTION}' context", d.location)
            return
        if scope.dir_section:
            self.error(f"{spec.name} cannot occur within <{scope.dir_section}> section", d.location)
            return
        try:
            value = spec.parse(args, self.c.server_root)
        except Invalid as e:
            self.error(str(e), d.location)
            return
        if spec.key == "challenges":
            for msg in challenge_type_warnings(value or []):
                self.warn(msg, d.location)
        elif spec.key == "pkey_specs":
            for ks in value:
                if ks.kind == "EC" and crypto.curve(ks.curve) is None:
                    # mod_md accepts it here and fails each renewal with this text
                    self.warn(f"MDPrivateKeys: ec curve unknown: {ks.curve} (renewals will "
                              "fail); use e.g. P-256, P-384 or secp521r1", d.location)
        self.store(spec, value, d, scope)

    def members(self, spec: Spec, d: Directive, scope: _Scope) -> None:
        if scope.kind != "md":
            if len(d.args) == 1:
                t = parse_transitive(d.args[0])
                if t is None:
                    self.error('unknown value, use "auto|manual"', d.location)
                elif scope.dir_section:
                    self.error(f"{spec.name} cannot occur within <{scope.dir_section}> section", d.location)
                else:
                    self.store(Spec(spec.name, ALL, TAKE1, PROP, "transitive", _one(str), ""), t, d, scope)
                return
            self.error(f"{spec.name} is only valid inside a '{MD_SECTION}' context, not here", d.location)
            return
        assert scope.md is not None
        for a in d.args:
            t = parse_transitive(a)
            if t is not None:
                scope.props["transitive"] = t
            elif normalize_name(a) not in scope.md.names:
                scope.md.names.append(normalize_name(a))

    def store(self, spec: Spec, value: Any, d: Directive, scope: _Scope) -> None:
        if spec.name == "MDomain":
            names, transitive = value
            if not names:
                self.error("needs at least one domain name", d.location)
            else:
                self.c.mds.append(_MDDraft(names, d.location, transitive))
        elif spec.store == SPECIAL:  # MDCertificateFile / MDCertificateKeyFile
            assert scope.md is not None
            getattr(scope.md, spec.key).append(value)
        elif spec.store == GLOBAL:
            if spec.key == "port_map":
                self.c.settings.port_map = {**self.c.settings.port_map, **value}
            elif spec.key == "staple_others" and scope.kind != "server":
                pass  # per-vhost stapling of non-MD certs: nothing apache-md can do there
            else:
                setattr(self.c.settings, spec.key, value)
        elif spec.store == ENV:
            if scope.kind == "md":
                scope.props[spec.key] = value
            else:
                self.c.module_env[spec.key] = value  # module-global, even inside a vhost
        elif scope.kind == "vhost":
            vh = scope.vhost
            assert vh is not None
            if spec.key == "contact":
                vh.md_contact = value
            elif spec.key == "stapling":
                vh.stapling = value
            elif spec.key in _VHOST_IGNORED:
                self.warn(f"{spec.name} inside <VirtualHost> has no effect on Managed Domains "
                          "(as with mod_md); set it at server level or inside <MDomain>", d.location)
        else:
            scope.props[spec.key] = value


# --------------------------------------------------------------------------
# Effective values


# MD properties stored under the name of their ManagedDomain field.
_MD_FIELDS = ("ca_proto", "ca_agreement", "pkey_specs", "renew_mode", "renew_window",
              "warn_window", "require_https", "must_staple", "stapling", "challenges", "profile",
              "profile_mandatory", "ari_renewals")
# mod_md's module env (MDHttpProxy & co.): the MD's own value, else the module-global one.
_ENV_FIELDS = ("dns01_cmd", "proxy_url", "ca_certs", "proxy_ca_certs")


def effective_md(draft: _MDDraft, c: _Collected) -> ManagedDomain:
    """The MD with its own settings, else the server level's; the rest are the model's defaults."""
    p, env = draft.props, c.module_env
    merged = {**c.global_props, **p}
    kw: dict[str, Any] = {k: copy.copy(merged[k]) for k in _MD_FIELDS if k in merged}  # own lists
    kw.update({k: p[k] if k in p else env[k] for k in _ENV_FIELDS if k in p or k in env})
    kw["dns01_cmd_md"] = p.get("dns01_cmd")
    if merged.get("ca_urls"):
        kw["ca_urls"] = list(merged["ca_urls"])
    kw["ca_urls_configured"] = "ca_urls" in merged
    if "transitive" in p:  # MDMembers auto|manual inside the section
        kw["transitive"] = p["transitive"]
    elif draft.transitive is not None:  # auto|manual on the MDomain line
        kw["transitive"] = draft.transitive
    elif "transitive" in merged:  # MDMembers auto|manual at server level
        kw["transitive"] = merged["transitive"]
    if "eab" in merged:
        kw["eab_kid"], kw["eab_hmac"] = merged["eab"]
    contact = merged.get("contact") or (schemify(c.server_admin) if c.server_admin else None)
    if contact:
        kw["contacts"] = [contact]
    return ManagedDomain(name=draft.names[0], domains=list(draft.names), location=draft.location,
                         cert_files=list(draft.cert_files), key_files=list(draft.key_files), **kw)


# --------------------------------------------------------------------------
# Vhosts <-> MDs


class NameIndex:
    """Which MDs claim a name, literally or by a `*.` wildcard, as
    ManagedDomain.covers() decides: vhosts find their MDs, and overlaps are
    found, by lookup rather than by comparing every MD with every other (a
    million comparisons at each configuration load with a thousand MDs)."""

    def __init__(self, mds: list[ManagedDomain]):
        self.exact: dict[str, set[int]] = {}
        self.wild: dict[str, set[int]] = {}
        for i, md in enumerate(mds):
            for p in md.domains:
                self.exact.setdefault(p, set()).add(i)
                if p.startswith("*."):
                    self.wild.setdefault(p[2:], set()).add(i)

    def covering(self, name: str) -> list[int]:
        """Indexes (ascending) of the MDs that cover `name` or list it literally."""
        norm = name.lower().rstrip(".")
        found = self.exact.get(name, set()) | self.exact.get(norm, set())
        if "." in norm:
            found = found | self.wild.get(norm.split(".", 1)[1], set())
        return sorted(found)


def vhost_mds(vh: VHost, mds: list[ManagedDomain], match_names: str,
              index: NameIndex | None = None) -> list[ManagedDomain]:
    """The MDs a vhost belongs to, in MD order (mod_md's matching)."""
    index = index or NameIndex(mds)
    if match_names == "servernames":
        if not vh.server_name:
            return []
        found = [mds[i] for i in index.covering(vh.server_name)]
        exact = [md for md in found if vh.server_name in md.domains]
        return exact or found  # a specific MD pre-empts a wildcard MD
    return [mds[i] for i in sorted({i for n in vh.names for i in index.covering(n)})]


def overlap(a: ManagedDomain, b: ManagedDomain) -> str | None:
    """A name both MDs claim (wildcards included), or None."""
    for n in b.domains:
        if a.covers(n) or n in a.domains:
            return n
    for n in a.domains:
        if b.covers(n):
            return n
    return None


def _loc_text(loc: Location) -> str:
    return f"{loc.file}(line {loc.line})"


def link(config: Config, errors: list[Problem], warnings: list[Problem]) -> None:
    """Assign vhosts, add auto members, and check what mod_md checks at start."""
    s = config.settings
    index = NameIndex(config.mds)
    if s.match_names == "all":
        # Only pairs sharing a name can overlap; overlap() then names it as before.
        pairs = {(min(i, j), max(i, j)) for j, md in enumerate(config.mds)
                 for n in md.domains for i in index.covering(n) if i != j}
        for i, j in sorted(pairs):
            a, b = config.mds[i], config.mds[j]
            n = overlap(a, b)
            if n:
                errors.append(Problem(
                    f"AH10038: two Managed Domains have an overlap in domain '{n}', first definition "
                    f"in {_loc_text(a.location)}, second in {_loc_text(b.location)}", b.location, b.name))
    only_md: dict[int, list[VHost]] = {}  # id(md) -> SSL vhosts that match it alone
    for vh in config.vhosts:
        mds = vhost_mds(vh, config.mds, s.match_names, index)
        for md in mds:
            md.vhosts.append(vh)
        if vh.ssl and len(mds) > 1:
            errors.append(Problem(f"AH10042: conflict: {len(mds)} MDs match to SSL VirtualHost "
                                  f"{vh.server_name or vh.label}, there can at most be one.", vh.location))
        if vh.ssl and len(mds) == 1:
            only_md.setdefault(id(mds[0]), []).append(vh)
    for md in config.mds:
        for vh in only_md.get(id(md), []):
            for n in vh.names:
                if md.covers(n):
                    continue
                if md.transitive:
                    md.domains.append(n)
                else:
                    warnings.append(Problem(
                        f"AH10040: Virtual Host {vh.label} matches Managed Domain '{md.name}', but the "
                        f"name/alias {n} itself is not managed. A requested MD certificate will not "
                        "match ServerName.", vh.location, md.name))
        if not md.contacts:
            for vh in md.vhosts:
                contact = vh.md_contact or vh.server_admin
                if contact:
                    md.contacts = [schemify(contact)]
                    break
        if len(md.cert_files) != len(md.key_files):
            msg = (f"AH10171: The Managed Domain '{md.name}' has MDCertificateKeyFile(s) but no "
                   "MDCertificateFile." if not md.cert_files else
                   f"AH10170: The Managed Domain '{md.name}' needs one MDCertificateKeyFile for each "
                   "MDCertificateFile.")
            errors.append(Problem(msg, md.location, md.name))
        complete_protocol(md, errors, warnings)
        if not md.vhosts:
            warnings.append(Problem(f"AH10045: No VirtualHost matches Managed Domain {md.name}",
                                    md.location, md.name))
        elif md.require_https and not md.ssl_vhosts:
            warnings.append(Problem(
                f"AH10105: MD {md.name} does not match any VirtualHost with 'SSLEngine on', but is "
                "configured to require https. This cannot work.", md.location, md.name))


def complete_protocol(md: ManagedDomain, errors: list[Problem], warnings: list[Problem]) -> None:
    """mod_md's store sync: an unknown MDCertificateProtocol is fatal (AH10172), and the
    protocol completes the MD (tailscale: its socket as default CA, the daemon's key)."""
    if md.ca_proto.lower() not in ("acme", tailscale.PROTO):
        errors.append(Problem(f"AH10172: md[{md.name}]: error syncing to store: [{md.name}] uses "
                              f"unknown CA protocol '{md.ca_proto}' (known: ACME, tailscale)",
                              md.location, md.name))
    elif tailscale.applies(md):
        if not md.ca_urls_configured:
            md.ca_urls = [tailscale.DEFAULT_URL]
        warnings.extend(Problem(m, md.location, md.name) for m in tailscale.config_problems(md))
        md.pkey_specs = []


# --------------------------------------------------------------------------
# Entry points


def build_config(parsed: syntax.ParseResult, main_file: str) -> Config:
    """Interpret a parsed Apache configuration."""
    w = _Walker(parsed.server_root)
    c = w.c
    w.walk(parsed.directives, _Scope("server", c.global_props))
    if "stapling" in c.global_props:
        c.settings.stapling = c.global_props["stapling"]
    for key in ("proxy_url", "proxy_ca_certs"):
        if key in c.module_env:
            setattr(c.settings, key, c.module_env[key])
    listen = c.listen_ports
    for vh in c.vhosts:
        if id(vh) in w.any_port:
            vh.ports = list(dict.fromkeys(vh.ports + listen))
    vhosts = list(c.vhosts)
    if c.settings.base_server and c.server_name:
        base = VHost(location=c.server_name_loc or Location(main_file, 1), server_name=c.server_name,
                     ports=list(listen), ssl=c.base_ssl, server_admin=c.server_admin,
                     protocols=list(c.base_protocols), cert_files=list(c.base_cert_files),
                     key_files=list(c.base_key_files), is_base=True)
        vhosts.insert(0, base)
    # Includes of apache-md's own generated files may not exist before the first
    # `apache-md activate`; that is expected, not an error.
    generated = os.path.join(c.settings.store_dir, APACHE) + os.sep
    ours = {id(p) for path, p in parsed.missing_includes if path.startswith(generated)}
    config = Config(
        main_file=main_file, server_root=parsed.server_root, settings=c.settings,
        mds=[effective_md(d, c) for d in c.mds], vhosts=vhosts, listen_ports=list(listen),
        listens=list(c.listens),
        modules=set(parsed.modules), server_admin=c.server_admin, user=c.user, group=c.group,
        files=list(parsed.files),
        errors=[p for p in parsed.errors if id(p) not in ours] + c.errors,
        warnings=list(parsed.warnings) + c.warnings,
    )
    # mod_md's can_http: public port 80 is mapped to a local port Apache listens on.
    local_80 = c.settings.port_map.get(80)
    c.settings.can_http = local_80 is not None and (not listen or local_80 in listen)
    c.settings.listen_ports = list(listen)
    link(config, config.errors, config.warnings)
    return config


def load_config(main_file: str = "/etc/apache2/apache2.conf", server_root: str | None = None,
                defines: tuple[str, ...] | list[str] = (), env: dict[str, str] | None = None) -> Config:
    """Read the Apache configuration and return apache-md's model of it."""
    main_file = os.path.abspath(main_file)
    parsed = syntax.parse(main_file, server_root=server_root, defines=defines, env=env)
    return build_config(parsed, main_file)


def load_text(text: str, path: str = "test.conf", server_root: str = "/",
              defines: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Config:
    """Interpret configuration text directly (tests, snippets)."""
    parsed = syntax.parse_text(text, path, server_root, defines, env)
    return build_config(parsed, path)
