"""The Apache configuration -> `model.Config`, as mod_md sees it.

Walks the tree from `syntax`, applies every MD* directive from the table in
`directives` in its context (server, <VirtualHost>, <MDomain>), collects Listen
ports and virtual hosts, computes each Managed Domain's effective settings (MD
section > server level > default), matches vhosts to MDs and reports the
start-up conflicts mod_md would refuse to start with. Nothing here raises for
bad input.
"""
from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from ..core import tailscale
from ..core.model import (
    Config,
    GlobalSettings,
    Location,
    ManagedDomain,
    Problem,
    VHost,
    address_port,
)
from ..store.fs import APACHE, StoreError, safe_name
from . import cluster, syntax
from .directives import (
    ENV,
    GLOBAL,
    MD,
    MD_SECTION,
    PROP,
    SPECIAL,
    SPECS,
    SRV,
    TAKE1,
    VHOST_IGNORED,
    Invalid,
    Spec,
    challenge_type_warnings,
    normalize_name,
    parse_names,
    parse_transitive,
    schemify,
    servable_keys,
    spec_args,
)
from .syntax import (
    AP_MAX_ARGC,
    ARGV,
    ITERATE,
    PRETEND_MODULE,
    Directive,
    module_id,
    take,
)

# Sections whose content is per-directory: MD directives cannot go there.
# per-directory sections: httpd refuses server directives (RSRC_CONF) in them; <If>,
# <ElseIf> and <Else> are per-request ones, refused alike
DIR_SECTIONS = frozenset({"directory", "directorymatch", "location", "locationmatch",
                          "files", "filesmatch", "proxy", "proxymatch", "if", "elseif", "else"})
# httpd's log levels (ap_parse_log_level) as Python's: notice and info are both INFO.
LOG_LEVELS = {"emerg": logging.CRITICAL, "alert": logging.CRITICAL, "crit": logging.CRITICAL,
              "error": logging.ERROR, "warn": logging.WARNING, "notice": logging.INFO,
              "info": logging.INFO, "debug": logging.DEBUG,
              **{f"trace{i}": logging.DEBUG for i in range(1, 9)}}
# mod_md 1.x names, removed in v1.99.5: httpd rejects them as unknown.
REMOVED = frozenset({"manageddomain"})


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
    """Where a directive stands. <MDomain> scopes MD directives only: inside it,
    other directives (and <VirtualHost>) belong to the enclosing server or vhost."""

    kind: str  # "server" | "vhost" | "md"
    props: dict[str, Any]
    md: _MDDraft | None = None
    vhost: VHost | None = None  # the vhost whose directives these are (also around an MD)
    dir_section: str | None = None  # name of an enclosing <Directory>-like section
    dir_path: tuple[str, ...] = ()  # every enclosing one, the innermost last
    within: _MDDraft | None = None  # a <VirtualHost> written inside this <MDomain>

    @property
    def inside_md(self) -> bool:
        """mod_md's inside_md_section(): an <MDomain> anywhere around, as written."""
        return self.kind == "md" or self.within is not None


# MD directives httpd lets into per-directory sections (OR_AUTHCFG); mod_md itself then
# refuses them in <Directory> and <Location> only (md_conf_check_location), elsewhere
# (<Files>, <If>, <Proxy>) they set the server's value as outside
PER_DIR = frozenset({"MDRequireHttps"})


def not_allowed_in(name: str, scope: _Scope) -> str | None:
    """httpd's refusal of an MD directive in a per-directory section (invoke_cmd for
    a server-only one; ap_check_cmd_context, nearest <Directory> first, for PER_DIR),
    or None when it is accepted there."""
    if name not in PER_DIR:
        return f"{name} not allowed in <{(scope.dir_path or (scope.dir_section,))[-1]}> context"
    for kinds in (("directory", "directorymatch"), ("location", "locationmatch")):
        found = [s for s in scope.dir_path if s.lower() in kinds]
        if found:
            return f"{name} cannot occur within <{found[-1]}> section"
    return None


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


def md_module_id(name: str) -> str:
    """The module a LogLevel `name:` means (core's find_module: `md`, `md_module`, `mod_md.c`)."""
    mid = module_id(name)
    return mid if mid == PRETEND_MODULE else module_id(name + "_module")


def server_name_host(value: str) -> str:
    """ServerName `[scheme://]host[:port]` -> lowercased host (IPv6 without brackets)."""
    v = value.split("://", 1)[1] if "://" in value else value
    if v.startswith("["):
        return normalize_name(v[: v.find("]") + 1] if "]" in v else v)
    return normalize_name(v.rsplit(":", 1)[0] if v.count(":") == 1 else v)


class _Walker:
    def __init__(self, server_root: str, md_loaded: bool = False):
        self.md_loaded = md_loaded  # the real mod_md is loaded (an error of its own)
        self.c = _Collected(server_root=server_root,
                            settings=GlobalSettings(store_dir=os.path.join(server_root, "md")))
        self.any_port: set[int] = set()  # ids of vhosts with an address without port
        self.nested: list[tuple[VHost, _MDDraft]] = []  # <VirtualHost> written inside <MDomain>
        self.global_locs: dict[str, Location] = {}  # setting -> its directive (messages)

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
            elif d.lname == "loglevel":
                self.log_level(d, scope)
            elif d.lname == "sethandler":
                self.set_handler(d)
            elif d.lname.startswith("md") or d.lname in REMOVED:
                self.invalid_command(d.name, d.location)
            elif scope.dir_section is None:
                self.core_directive(d, scope)

    # --- sections

    def section(self, d: Directive, scope: _Scope) -> None:
        ln = d.lname
        if ln in ("mdomain", "mdomainset"):
            self.md_section(d, scope)
        elif ln.startswith("md") or ln in REMOVED:
            self.invalid_command("<" + d.name, d.location)
        elif ln == "virtualhost":
            if scope.vhost or scope.dir_section:
                where = scope.dir_section or "VirtualHost"
                self.error(f"<VirtualHost> cannot occur within <{where}> section", d.location)
                return
            self.virtual_host(d, scope.md)
        elif ln in DIR_SECTIONS:
            self.walk(d.children or [], _Scope(scope.kind, scope.props, scope.md, scope.vhost,
                                               scope.dir_section or d.name,
                                               (*scope.dir_path, d.name)))
        elif ln == "macro":
            return  # a template, not configuration (mod_macro expands it at use)
        else:  # <Limit>, unknown module sections: no scope of their own for us
            self.walk(d.children or [], scope)

    def md_section(self, d: Directive, scope: _Scope) -> None:
        if scope.inside_md:
            self.error(f"<{d.name} is not allowed inside an '{MD_SECTION}' context", d.location)
            return
        if scope.dir_section:
            self.error(not_allowed_in(f"<{d.name}", scope), d.location)
            return
        if not d.raw:
            self.error(f"{MD_SECTION} > section must specify a unique domain name", d.location)
            return
        # md_config_sec_start takes the first word as a name, whatever it says.
        first, (names, transitive) = d.args[:1], parse_names(d.args[1:])
        if parse_transitive(d.args[0]) is not None:
            self.warn(f"<{d.name} {d.args[0]} ...>: the first word is a domain name here (as for "
                      f"mod_md), so '{d.args[0]}' is managed as one; put auto/manual after the "
                      "names", d.location)
        names = [n for n in dict.fromkeys(normalize_name(a) for a in first + names) if n]
        if not names:
            self.error("needs at least one domain name", d.location)
            return
        md = _MDDraft(names, d.location, transitive)
        self.c.mds.append(md)
        self.walk(d.children or [], _Scope("md", md.props, md=md, vhost=scope.vhost))

    def virtual_host(self, d: Directive, within: _MDDraft | None) -> None:
        vh = VHost(location=d.location, addresses=list(d.args))
        for a in d.args:
            p = address_port(a)
            if p is None:
                self.any_port.add(id(vh))  # every Listen port, known only at the end
            elif p not in vh.ports:
                vh.ports.append(p)
        self.c.vhosts.append(vh)
        if within:
            self.nested.append((vh, within))
        self.walk(d.children or [], _Scope("vhost", {}, vhost=vh, within=within))

    # --- plain httpd directives we need

    def core_directive(self, d: Directive, scope: _Scope) -> None:
        ln, args, vh = d.lname, d.args, scope.vhost
        root = self.c.server_root
        if ln == "listen" and not vh and args:
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

    def log_level(self, d: Directive, scope: _Scope) -> None:
        """`md:<level>` (also md_module:, mod_md.c:) sets apache-md's own log level,
        inside <IfModule md_module>; outside, Apache without mod_md refuses to start."""
        for arg in take(ITERATE, d.args) or []:
            module, sep, level = arg.rpartition(":")
            if not sep or md_module_id(module) != PRETEND_MODULE or self.md_loaded:
                continue
            if not d.md_guarded:
                self.error(f"LogLevel {arg}: Apache refuses to start with this while mod_md is not "
                           f"loaded (\"Cannot find module {module}\"); put that LogLevel inside "
                           "<IfModule md_module>", d.location)
            elif level.lower() not in LOG_LEVELS:
                self.error(f"{arg}: Log level keyword must be one of emerg/alert/crit/error/"
                           "warn/notice/info/debug/trace1/.../trace8", d.location)
            elif not scope.vhost and not scope.dir_section:
                self.c.settings.log_level = LOG_LEVELS[level.lower()]

    def set_handler(self, d: Directive) -> None:
        """mod_md's md-status handler, as its documentation mounts it: without mod_md,
        Apache hands the request to no handler, and at /md-status serves the file
        apache-md's WSGIScriptAlias maps it to (the handler's source) as text."""
        if d.args[:1] == ["md-status"] and not d.md_guarded and not self.md_loaded:
            self.warn("SetHandler md-status is mod_md's handler: without mod_md, Apache answers "
                      "this location with no handler at all (at /md-status: the text of "
                      "apache-md's handler script), so apache-md's /md-status does not answer "
                      "there; put it inside <IfModule md_module>", d.location)

    # --- MD directives

    def md_directive(self, spec: Spec, d: Directive, scope: _Scope) -> None:
        try:
            args = spec_args(spec, d.args, d.raw)
        except Invalid as e:
            self.error(str(e), d.location)
            return
        dropped = len(d.args) - AP_MAX_ARGC - (d.args[-1:] == [""]) if spec.nargs == ARGV else 0
        if dropped > 0:
            self.warn(f"{spec.name}: httpd hands a directive at most {AP_MAX_ARGC} arguments; the "
                      f"{dropped} after the {AP_MAX_ARGC}th are ignored (by mod_md too)", d.location)
        if scope.within and (spec.ctx == MD or spec.name in ("MDMember", "MDMembers")):
            # mod_md lets these pass and then aborts on an assertion (no MD is being defined)
            self.error(f"{spec.name} inside a <VirtualHost> has no Managed Domain to go to, not even "
                       f"within <MDomain {scope.within.names[0]}>; put it directly inside the "
                       "<MDomain> section", d.location)
            return
        if spec.name in ("MDMember", "MDMembers"):
            self.members(spec, args, d, scope)
            return
        if spec.ctx == MD and scope.kind != "md":
            self.error(f"{spec.name} is only valid inside a '{MD_SECTION}' context, not here", d.location)
            return
        if spec.ctx == SRV and scope.inside_md:
            self.error(f"{spec.name} is not allowed inside an '{MD_SECTION}' context", d.location)
            return
        if scope.dir_section and (refused := not_allowed_in(spec.name, scope)):
            self.error(refused, d.location)
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
            value, notes = servable_keys(value)
            for msg in notes:
                self.warn(msg, d.location)
            if not value:
                self.warn("MDPrivateKeys: no key type is left; the directive is ignored", d.location)
                return
        self.store(spec, value, d, scope)

    def members(self, spec: Spec, args: list[str], d: Directive, scope: _Scope) -> None:
        if scope.kind != "md":
            if len(args) == 1:
                t = parse_transitive(args[0])
                if t is None:
                    self.error('unknown value, use "auto|manual"', d.location)
                elif scope.dir_section:
                    self.error(not_allowed_in(spec.name, scope), d.location)
                else:
                    self.store(replace(spec, nargs=TAKE1, store=PROP, key="transitive"), t, d, scope)
                return
            self.error(f"{spec.name} is only valid inside a '{MD_SECTION}' context, not here", d.location)
            return
        assert scope.md is not None
        for a in args:
            t = parse_transitive(a)
            if t is not None:
                scope.props["transitive"] = t
            elif a and normalize_name(a) not in scope.md.names:
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
            self.global_locs[spec.key] = d.location
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
            elif spec.key in VHOST_IGNORED and scope.within:
                self.warn(f"{spec.name} inside <VirtualHost> has no effect on Managed Domains, also "
                          f"within <MDomain {scope.within.names[0]}> (as with mod_md); put it "
                          "directly inside the <MDomain> section", d.location)
            elif spec.key in VHOST_IGNORED:
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
    kw["own_env"] = tuple(k for k in _ENV_FIELDS if k in p)
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

    def literal(self, name: str) -> set[int]:
        """Indexes of the MDs that list `name` itself."""
        return self.exact.get(name, set()) | self.exact.get(name.lower().rstrip("."), set())


def _alias_pattern(alias: str) -> re.Pattern | None:
    """A ServerAlias with `*`/`?` as httpd matches it (ap_strcasecmp_match), or None."""
    if not any(c in alias for c in "*?"):
        return None
    return re.compile(re.escape(alias.lower()).replace(r"\*", ".*").replace(r"\?", "."))


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
    # mod_md's link_md_to_servers: an MD name matches the ServerName, also by the MD's
    # wildcard, or an alias literally (or the alias' own wildcard matches it): a `*.x`
    # MD does not take a vhost whose alias alone it covers.
    found = set(index.covering(vh.server_name)) if vh.server_name else set()
    for alias in vh.aliases:
        found |= index.literal(alias)
        pattern = _alias_pattern(alias)
        if pattern:
            found |= {i for i, md in enumerate(mds) if any(pattern.fullmatch(d) for d in md.domains)}
    return [mds[i] for i in sorted(found)]


def overlap(a: ManagedDomain, b: ManagedDomain) -> str | None:
    """The first name of the later MD `b` that the earlier `a` lists or covers by a
    wildcard, or None. One way only, as mod_md's md_common_name(later, earlier): a
    wildcard MD after one of its subdomains' MDs is no overlap, before it is."""
    for n in b.domains:
        if a.covers(n) or n in a.domains:
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
    if md.ca_proto not in ("ACME", tailscale.PROTO):  # as mod_md: `acme` is unknown too
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
    w = _Walker(parsed.server_root, md_loaded=parsed.md_module_loaded is not None)
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
    # An MD is a directory of the store by its name: one that cannot be (a slash in it)
    # is left out, rather than stopping every MD at the store (mod_md starts with it,
    # and it never gets a certificate either)
    kept = []
    for d in c.mds:
        try:
            safe_name(d.names[0])
        except StoreError as e:
            c.warnings.append(Problem(f"MDomain {d.names[0]}: {e}; the MD is left out",
                                      d.location, d.names[0]))
            continue
        kept.append(d)
    c.mds[:] = kept
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
    c.settings.listens = list(c.listens)
    link(config, config.errors, config.warnings)
    cluster.check(c.settings, w.global_locs, config.errors, config.warnings)
    mds = dict(zip(map(id, c.mds), config.mds))
    for vh, draft in w.nested:
        md = mds[id(draft)]
        if all(v is not vh for v in md.vhosts):
            config.warnings.append(Problem(
                f"<VirtualHost> {vh.label} is written inside <MDomain {md.name}> but does not belong "
                "to it: its names are none of the MD's, and <MDomain> does not make a vhost use it "
                "(as with mod_md)", vh.location, md.name))
    return config


# Run by load_config_apart() in a fresh interpreter: the configuration, pickled to stdout.
# (The environment as the parent has it: Apache's ${VARIABLES} come from it.)
_APART = ("import os, pickle, sys\n"
          "*a, path = pickle.loads(sys.stdin.buffer.read())\n"
          "os.environ.pop('PYTHONPATH', None) if path is None else "
          "os.environ.update(PYTHONPATH=path)\n"
          "from apache_md.apache.config import load_config\n"
          "sys.stdout.buffer.write(pickle.dumps(load_config(*a), protocol=pickle.HIGHEST_PROTOCOL))\n")


def load_config_apart(main_file: str = "/etc/apache2/apache2.conf",
                      server_root: str | None = None,
                      defines: tuple[str, ...] | list[str] = ()) -> Config:
    """load_config() in a child process, for a long-lived one (the worker): reading
    10,000 vhosts and their includes peaks at three times what the result keeps, and a
    process keeps its peak (Python frees its memory to itself, not to the system). The
    same result, pickled; in this process when the child fails."""
    import pickle
    import subprocess
    import sys

    from ..core.apart import child_env

    args = (os.path.abspath(main_file), server_root, tuple(defines))
    env = child_env()
    try:
        p = subprocess.run([sys.executable, "-c", _APART],
                           input=pickle.dumps(args + (os.environ.get("PYTHONPATH"),)),
                           stdout=subprocess.PIPE, env=env, timeout=600)
        if p.returncode == 0:
            config = pickle.loads(p.stdout)
            if isinstance(config, Config):
                return config
    except (OSError, subprocess.SubprocessError, pickle.UnpicklingError, EOFError,
            AttributeError, ImportError):
        pass
    return load_config(*args)


def load_config(main_file: str = "/etc/apache2/apache2.conf", server_root: str | None = None,
                defines: tuple[str, ...] | list[str] = (), env: dict[str, str] | None = None) -> Config:
    """Read the Apache configuration and return apache-md's model of it."""
    main_file = os.path.abspath(main_file)
    parsed = syntax.parse(main_file, server_root=server_root, defines=defines, env=env)
    config = build_config(parsed, main_file)
    # apache-md's own includes are rewritten from the store at every activation: one
    # broken (by hand, a restore, a full disk) must not stop the check, the worker and
    # the activation that write it again. Read once more without them; Apache would
    # not start with it, so the worker's next wake-up (or `check`) repairs it at once.
    generated = os.path.join(config.settings.store_dir, APACHE) + os.sep
    broken = [p for p in parsed.errors if p.location and p.location.file.startswith(generated)]
    if broken:
        parsed = syntax.parse(main_file, server_root=server_root, defines=defines, env=env,
                              passed_over=generated)
        config = build_config(parsed, main_file)
        config.warnings.extend(Problem(
            f"{p.message} (in apache-md's own generated file: it is written again)",
            p.location) for p in broken)
    return config


def load_text(text: str, path: str = "test.conf", server_root: str = "/",
              defines: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Config:
    """Interpret configuration text directly (tests, snippets)."""
    parsed = syntax.parse_text(text, path, server_root, defines, env)
    return build_config(parsed, path)
