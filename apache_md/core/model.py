"""The configuration model: what the Apache config says about managed domains.

`directives` builds these objects from the parsed Apache configuration;
everything downstream (planning, the ACME driver, generated config, status)
reads them and never looks at Apache syntax again. All values here are
*effective* values: an MD carries its own setting, else the global one, else
mod_md's default.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .durations import Timeslice

DEFAULT_CA = "https://acme-v02.api.letsencrypt.org/directory"
KNOWN_CAS = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-test": "https://acme-staging-v02.api.letsencrypt.org/directory",
    "buypass": "https://api.buypass.com/acme/directory",
    "buypass-test": "https://api.test4.buypass.no/acme/directory",
}
KNOWN_CA_NAMES = "LetsEncrypt LetsEncrypt-Test Buypass Buypass-Test"



class MDState(IntEnum):
    """mod_md's md_state_t: `state` in md.json and md-status."""

    UNKNOWN = 0
    INCOMPLETE = 1
    COMPLETE = 2
    EXPIRED = 3
    ERROR = 4


class RenewMode(IntEnum):
    """mod_md's md_renew_mode_t: MDRenewMode, `renew-mode` in md.json."""

    MANUAL = 0
    AUTO = 1
    ALWAYS = 2


def name_of(kind: type[IntEnum], value: Any) -> str:
    """`value`'s lowercase name in `kind` ("auto"), "?" for anything else (JSON read back)."""
    try:
        return kind(value).name.lower()
    except (ValueError, TypeError):
        return "?"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a directive stands: used in every message a user sees."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Problem:
    """A configuration error or warning, printed as `file:line: message`."""

    message: str
    location: Location | None = None
    md: str | None = None

    def __str__(self) -> str:
        where = str(self.location) if self.location else (f"MD {self.md}" if self.md else "")
        return f"{where}: {self.message}" if where else self.message


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One MDPrivateKeys entry. `kind` is "Default", "RSA" or "EC"."""

    kind: str
    bits: int = 0
    curve: str = ""

    @property
    def name(self) -> str:
        """mod_md's key-type name: "rsa", or the curve as configured."""
        return self.curve if self.kind == "EC" else "rsa"

    @property
    def rsa_bits(self) -> int:
        return self.bits or 2048

    @property
    def label(self) -> str:
        """As mod_md names the spec of an order: "default", "rsa-2048", "ec-secp256r1"."""
        if self.kind == "Default":
            return "default"
        return f"rsa-{self.rsa_bits}" if self.kind == "RSA" else f"ec-{self.curve}"

    def file_name(self, base: str) -> str:
        """`privkey` -> privkey.pem / privkey.secp256r1.pem (lowercased, as mod_md)."""
        if self.name.lower() == "rsa":
            return f"{base}.pem"
        return f"{base}.{self.name}.pem".lower()

    def to_json(self) -> dict[str, Any]:
        if self.kind == "Default":
            return {"type": "Default"}
        if self.kind == "RSA":
            return {"type": "RSA", "bits": self.rsa_bits}
        return {"type": "EC", "curve": self.curve}


DEFAULT_KEYSPEC = KeySpec("Default")


@dataclass(slots=True)
class VHost:
    """A <VirtualHost> (or the base server when `is_base`)."""

    location: Location
    addresses: list[str] = field(default_factory=list)  # as written: "*:443", "[::1]:443"
    server_name: str | None = None
    aliases: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)  # ports of the addresses ("*" -> Listen ports)
    ssl: bool = False  # SSLEngine on
    server_admin: str | None = None
    protocols: list[str] = field(default_factory=list)
    cert_files: list[str] = field(default_factory=list)  # SSLCertificateFile (absolute)
    key_files: list[str] = field(default_factory=list)  # SSLCertificateKeyFile (absolute)
    includes: list[str] = field(default_factory=list)  # absolute paths Include'd inside
    md_contact: str | None = None  # MDContactEmail inside the vhost
    stapling: bool | None = None  # MDStapling inside the vhost (non-MD certs)
    is_base: bool = False

    @property
    def names(self) -> list[str]:
        return ([self.server_name] if self.server_name else []) + self.aliases

    @property
    def label(self) -> str:
        return f"{self.server_name or '(no ServerName)'}:{','.join(map(str, self.ports))}"


@dataclass(slots=True)
class ManagedDomain:
    """One MD with effective settings (MD section > global > default)."""

    name: str
    domains: list[str]
    location: Location
    transitive: bool = True  # MDMembers auto
    ca_urls: list[str] = field(default_factory=lambda: [DEFAULT_CA])
    ca_urls_configured: bool = False
    ca_proto: str = "ACME"
    ca_agreement: str | None = None
    contacts: list[str] = field(default_factory=list)  # "mailto:..."
    eab_kid: str | None = None
    eab_hmac: str | None = None
    pkey_specs: list[KeySpec] = field(default_factory=list)  # empty: not configured (RSA 2048)
    renew_mode: RenewMode = RenewMode.AUTO
    renew_window: Timeslice = field(default_factory=lambda: Timeslice(percent=33))
    warn_window: Timeslice = field(default_factory=lambda: Timeslice(percent=10))
    require_https: str | None = None  # "temporary" | "permanent"
    must_staple: bool = False
    stapling: bool = False
    challenges: list[str] | None = None  # MDCAChallenges, None = automatic
    dns01_cmd: str | None = None  # effective (MD or global)
    proxy_url: str | None = None
    ca_certs: str | None = None  # MDCACertificateFile
    proxy_ca_certs: str | None = None
    # Which of dns01_cmd, proxy_url, ca_certs, proxy_ca_certs were set inside the MD's
    # section: mod_md keeps the server-level ones in its module env, not in the MD, so
    # only these appear in md.json and md-status.
    own_env: tuple[str, ...] = ()
    profile: str | None = None
    profile_mandatory: bool = False
    ari_renewals: bool = True
    cert_files: list[str] = field(default_factory=list)  # MDCertificateFile (absolute)
    key_files: list[str] = field(default_factory=list)
    vhosts: list[VHost] = field(default_factory=list)  # vhosts matched to this MD

    @property
    def keyspecs(self) -> list[KeySpec]:
        """The specs certificates are made for (RSA 2048 when none configured)."""
        return self.pkey_specs or [DEFAULT_KEYSPEC]

    @property
    def is_static(self) -> bool:
        return bool(self.cert_files)

    @property
    def ssl_vhosts(self) -> list[VHost]:
        return [v for v in self.vhosts if v.ssl]

    def covers(self, name: str) -> bool:
        """True when `name` is one of the MD's names, wildcards included."""
        return domain_matches(self.domains, name)

    @property
    def will_renew(self) -> bool:
        """Driven by the worker (mod_md md_will_renew_cert + check_usage)."""
        if self.renew_mode == RenewMode.MANUAL:
            return False
        if self.renew_mode == RenewMode.ALWAYS:
            return True
        return bool(self.vhosts) and not self.is_static

    @property
    def is_watched(self) -> bool:
        """Supervised for renewal or expiry warnings (mod_md init_cert_watch_status)."""
        if self.renew_mode == RenewMode.MANUAL or self.is_static:
            return True  # still watched for `expiring`
        return bool(self.vhosts) or self.renew_mode == RenewMode.ALWAYS


@dataclass
class GlobalSettings:
    """Module-wide (SRV) settings."""

    store_dir: str = ""  # absolute
    port_map: dict[int, int | None] = field(default_factory=lambda: {80: 80, 443: 443})
    check_interval: float = 12 * 3600.0
    initial_delay: float = 0.0
    retry_delay: float = 30.0
    retry_failover: int = 13
    activation_delay: float = 0.0
    message_cmd: str | None = None
    notify_cmd: str | None = None
    dns01_version: int = 1
    match_names: str = "all"
    base_server: bool = False
    server_status: bool = True
    certificate_status: bool = True
    certificate_check: tuple[str, str] = ("crt.sh", "https://crt.sh?q=")
    stapling_keep_response: float = 7 * 86400.0
    stapling_renew_window: Timeslice = field(default_factory=lambda: Timeslice(percent=33))
    store_locks: float | None = None  # None = off, else wait seconds
    staple_others: bool = True
    # From Listen + MDPortMap (mod_md's can_http): http-01 is possible. With no Listen
    # known (a config snippet) only the port map decides.
    can_http: bool = True
    listen_ports: list[int] = field(default_factory=list)
    listens: list[str] = field(default_factory=list)  # Listen arguments (pre-flight address)
    stapling: bool = False  # MDStapling at server level (certificates of no MD: MDStapleOthers)
    proxy_url: str | None = None  # MDHttpProxy outside any MD (OCSP of other certificates)
    proxy_ca_certs: str | None = None
    # apache-md's own additions (documented in the README)
    activation_interval: float = 0.0  # MDActivationInterval: min seconds between reloads
    activation_window: tuple[int, int] | None = None  # MDActivationWindow: minutes of day [from, to)
    log_level: int | None = None  # `LogLevel md:<level>` in <IfModule md_module>, as Python's
    key_pool: int = 16  # MDKeyPool: keys of each kind the worker keeps ready (store/keypool)
    # MDCluster*: a fleet coordinated by etcd (docs/cluster.md); no endpoints = a single server
    cluster_etcd: list[str] = field(default_factory=list)  # endpoint URLs
    cluster_node: str = ""  # MDClusterNode, else the host name
    cluster_prefix: str = "/apache-md"
    cluster_key_file: str | None = None  # the fleet key (32 bytes, 0600)
    cluster_etcd_ca: str | None = None
    cluster_etcd_cert: str | None = None
    cluster_etcd_key: str | None = None
    cluster_lease_ttl: float = 15.0  # seconds a dead node's locks outlive it

    @property
    def clustered(self) -> bool:
        return bool(self.cluster_etcd)


def address_port(addr: str) -> int | None:
    """The port of a Listen/VirtualHost address, None when it has none (or `*`)."""
    host_port = addr.rpartition("]")[2] if addr.startswith("[") else addr
    if ":" not in host_port:
        port = "" if addr.startswith("[") else host_port
    else:
        port = host_port.rsplit(":", 1)[1]
    return int(port) if re.fullmatch(r"[0-9]{1,5}", port) else None  # not '²', not 5000 digits


def listen_host(listens: list[str], port: int) -> str | None:
    """An address of `Listen ... port` to connect to; None for an IPv4 wildcard."""
    for addr in listens:
        if address_port(addr) != port:
            continue
        host = addr.rsplit(":", 1)[0] if ":" in addr else "*"
        if host in ("*", "0.0.0.0"):
            return None
        return "[::1]" if host == "[::]" else host
    return None


@dataclass
class Config:
    """Everything apache-md needs from one Apache configuration."""

    main_file: str
    server_root: str
    settings: GlobalSettings
    mds: list[ManagedDomain] = field(default_factory=list)
    vhosts: list[VHost] = field(default_factory=list)
    listen_ports: list[int] = field(default_factory=list)
    listens: list[str] = field(default_factory=list)  # Listen arguments as written, e.g. "80"
    modules: set[str] = field(default_factory=set)  # loaded module ids, e.g. "ssl_module"
    server_admin: str | None = None
    user: str | None = None  # Apache's User (children / WSGI default)
    group: str | None = None
    files: list[str] = field(default_factory=list)  # every config file read
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def md_by_name(self, name: str) -> ManagedDomain | None:
        for md in self.mds:
            if md.name == name:
                return md
        return None

    def md_for_domain(self, name: str) -> ManagedDomain | None:
        """The MD covering a DNS name: exact names first, then wildcards."""
        name = name.lower().rstrip(".")
        for md in self.mds:
            if md.name == name or name in md.domains:
                return md
        for md in self.mds:
            if md.covers(name):
                return md
        return None


def domain_matches(patterns: list[str], name: str) -> bool:
    """`name` equals a pattern or is covered by a `*.x` pattern (one label)."""
    name = name.lower().rstrip(".")
    for p in patterns:
        if p == name:
            return True
        if p.startswith("*.") and "." in name and name.split(".", 1)[1] == p[2:]:
            return True
    return False
