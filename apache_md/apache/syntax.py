"""Reading Apache httpd's configuration syntax (no MD semantics here).

The reader behaves like httpd's own config reader where it matters for
apache-md: Include/IncludeOptional are inlined in order, `<IfModule>`,
`<IfDefine>`, `<IfVersion>`, `<IfFile>` are decided while reading (so they see
the LoadModule and Define lines read so far), `${VAR}` is expanded per line
from Defines and then the environment. Lines, continuations, quotes and
backslashes are read exactly as httpd's ap_cfg_getline and ap_getword_conf
read them, and argument counts follow its invoke_cmd. Because apache-md replaces mod_md,
`<IfModule md_module>` is read as if mod_md were loaded.

Bad input never raises: every problem becomes a `model.Problem` with file:line.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..core.model import Location, Problem

# Modules compiled into Debian's apache2 binary (`apache2 -l`).
BUILTIN_MODULES = frozenset({
    "core_module", "so_module", "watchdog_module", "http_module", "log_config_module",
    "logio_module", "version_module", "unixd_module",
})
# Source file names of modules whose id is not simply mod_<x>.c <-> <x>_module.
_SOURCE_NAMES = {
    "core.c": "core_module", "http_core.c": "http_module", "event.c": "mpm_event_module",
    "prefork.c": "mpm_prefork_module", "worker.c": "mpm_worker_module",
}
# apache-md stands in for mod_md, so configs guarded by it are read.
PRETEND_MODULE = "md_module"
CONDITIONALS = frozenset({"ifmodule", "ifdefine", "ifversion", "iffile", "ifdirective", "ifsection"})
DEFAULT_APACHE_VERSION = (2, 4, 62)
MAX_INCLUDE_DEPTH = 128
# Sections inside sections: deeper ones are refused (httpd has no limit, but nobody
# writes 64 levels, and the tree is walked recursively).
MAX_SECTION_DEPTH = 64
INCLUDE_HELP = {  # httpd's help texts, the end of its "takes one argument" messages
    "include": "Name(s) of the config file(s) to be included; fails if the wildcard does "
               "not match at least one file",
    "includeoptional": "Name or pattern of the config file(s) to be included; ignored if the "
                       "file does not exist or the pattern does not match any files",
}

_VAR = re.compile(r"\$\{([^}]*)\}")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass
class Directive:
    """One directive or section as written (after conditionals and includes).

    `args` are unquoted and `${VAR}`-expanded; `raw` is the expanded text after
    the name, still quoted (what httpd hands RAW_ARGS directives such as
    MDMessageCmd). Sections have `children` (a list, maybe empty).
    Include/IncludeOptional stay in the tree, followed by the directives they
    pulled in, with `include_path` = the absolute (possibly wildcard) path.
    """

    name: str
    args: list[str]
    location: Location
    children: list["Directive"] | None = None
    raw: str = ""
    include_path: str | None = None
    md_guarded: bool = False  # inside <IfModule md_module>: Apache without mod_md skips it

    @property
    def lname(self) -> str:
        return self.name.lower()

    @property
    def is_section(self) -> bool:
        return self.children is not None

    def walk(self) -> Iterator["Directive"]:
        """This directive and everything below it, in order."""
        yield self
        for c in self.children or ():
            yield from c.walk()


@dataclass
class ParseResult:
    directives: list[Directive]
    server_root: str
    defines: dict[str, str | None]
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    modules: set[str] = field(default_factory=set)
    module_files: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # every config file read, in order
    env: dict[str, str] = field(default_factory=dict)
    md_module_loaded: Location | None = None  # where the real mod_md is loaded
    # Include of a file that does not exist (yet): (path, the error reported for it)
    missing_includes: list[tuple[str, Problem]] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        """Errors first, then warnings."""
        return self.errors + self.warnings

    def walk(self) -> Iterator[Directive]:
        for d in self.directives:
            yield from d.walk()


# --------------------------------------------------------------------------
# Environment: os.environ plus Debian's envvars


def debian_envvars(path: str, base: dict[str, str], confdir: str) -> dict[str, str]:
    """The variables Debian's `envvars` shell script exports.

    Only `export NAME=value` lines are interpreted, with `$VAR`/`${VAR}`
    expansion; SUFFIX follows Debian's rule for /etc/apache2-<name> instances.
    """
    scope = dict(base)
    scope.setdefault("APACHE_CONFDIR", confdir)
    cd = scope["APACHE_CONFDIR"]
    scope["SUFFIX"] = "-" + cd[len("/etc/apache2-"):] if cd.startswith("/etc/apache2-") else ""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        m = re.match(r"^\s*export\s+([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if not m:
            continue
        value = _shell_value(m.group(2).strip(), scope)
        scope[m.group(1)] = out[m.group(1)] = value
    return out


def _shell_value(text: str, scope: dict[str, str]) -> str:
    """A shell word: single quotes literal, double quotes and bare text expanded."""
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    else:
        text = re.split(r"\s+#|\s*;", text, maxsplit=1)[0]
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)",
                  lambda m: scope.get(m.group(1) or m.group(2), ""), text)


def default_env(main_file: str) -> dict[str, str]:
    env = dict(os.environ)
    confdir = os.path.dirname(os.path.abspath(main_file))
    envvars = os.path.join(confdir, "envvars")
    if os.path.isfile(envvars):
        env.update(debian_envvars(envvars, env, confdir))
    return env


# --------------------------------------------------------------------------
# Apache version, for <IfVersion>

_apache_version: tuple[int, int, int] | None = None


def apache_version() -> tuple[int, int, int]:
    """httpd's version from `apache2 -v` (asked once), else 2.4.62."""
    global _apache_version
    if _apache_version is None:
        _apache_version = DEFAULT_APACHE_VERSION
        for exe in ("apache2", "/usr/sbin/apache2", "httpd", "/usr/sbin/httpd"):
            path = shutil.which(exe)
            if not path:
                continue
            try:
                out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10,
                                     env={**os.environ, "LANG": "C"}).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            m = re.search(r"Apache/(\d+)\.(\d+)\.(\d+)", out)
            if m:
                _apache_version = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
                break
    return _apache_version


# --------------------------------------------------------------------------
# Tokenizing, as httpd's server/util.c and server/config.c do it

SPACE = " \t\n\v\f\r"  # apr_isspace: C's isspace, not Python's (no NBSP, no U+2028)
# How httpd's invoke_cmd hands a directive its arguments (http_config.h cmd_how).
TAKE1, TAKE2, TAKE12, ITERATE, ARGV, RAW = "TAKE1", "TAKE2", "TAKE12", "ITERATE", "ARGV", "RAW"
AP_MAX_ARGC = 64  # TAKE_ARGV reads this many arguments and silently drops the rest
_COUNT_TEXT = {TAKE1: "takes one argument", TAKE2: "takes two arguments",
               TAKE12: "takes 1-2 arguments", ITERATE: "requires at least one argument"}


def _unescape(text: str, quote: str) -> str:
    r"""substring_conf: `\\` stands for `\`, and inside quotes `\"` (`\'`) for the quote."""
    if "\\" not in text:
        return text
    out, i, n = [], 0, len(text)
    while i < n:
        if text[i] == "\\" and i + 1 < n and (text[i + 1] == "\\" or (quote and text[i + 1] == quote)):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def getword_conf(line: str, pos: int = 0) -> tuple[str, int]:
    """httpd's ap_getword_conf: the word at `pos` and where the next one starts.

    A word in double or single quotes ends at the same quote (a backslash
    escapes the quote and itself), or at the end of the line when the quote is
    not closed: a lone `"` is an empty word. Any other word ends at white space.
    The white space after a word is skipped.
    """
    n = len(line)
    while pos < n and line[pos] in SPACE:
        pos += 1
    if pos >= n:
        return "", pos
    quote = line[pos]
    if quote in "\"'":
        end = pos + 1
        while end < n and line[end] != quote:
            end += 2 if line[end] == "\\" and line[end + 1:end + 2] in (quote, "\\") else 1
        word = _unescape(line[pos + 1:end], quote)
        if end < n:
            end += 1  # the closing quote
    else:
        end = pos
        while end < n and line[end] not in SPACE:
            end += 1
        word = _unescape(line[pos:end], "")
    while end < n and line[end] in SPACE:
        end += 1
    return word, end


def split_args(text: str) -> list[str]:
    """Every word of `text` as ap_getword_conf reads them one after the other
    (empty words included: `""` is one)."""
    words, pos, n = [], 0, len(text.rstrip(SPACE))
    while pos < n:
        word, pos = getword_conf(text, pos)
        words.append(word)
    return words


def take(how: str, words: list[str]) -> list[str] | None:
    """The arguments httpd passes a directive of kind `how`, or None when it
    refuses their number. An empty word counts as missing for TAKE1/TAKE2 and
    as absent in TAKE12's second place; ITERATE stops at the first one;
    TAKE_ARGV drops a trailing one and everything after 64 arguments."""
    if how == TAKE1:
        return words if len(words) == 1 and words[0] else None
    if how == TAKE2:
        return words if len(words) == 2 and all(words) else None
    if how == TAKE12:
        if not 1 <= len(words) <= 2 or not words[0]:
            return None
        return words if all(words) else words[:1]
    if how == ITERATE:
        first_empty = words.index("") if "" in words else len(words)
        return words[:first_empty] or None
    if how == ARGV:
        return (words[:-1] if words and not words[-1] else words)[:AP_MAX_ARGC]
    return words


def count_message(name: str, how: str, help_text: str = "") -> str:
    """httpd's complaint about the number of arguments ("X takes one argument, ...")."""
    text = f"{name} {_COUNT_TEXT[how]}"
    return f"{text}, {help_text}" if help_text else text


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) as httpd's ap_varbuf_cfg_getline reads them.

    Lines end at LF only. A backslash right before the LF (or CR LF) joins the
    next line; one followed by white space does not. A NUL ends the line's
    text. The joined line is trimmed of white space. The number is that of the
    last physical line, as in httpd's "Syntax error on line N".
    """
    parts = text.split("\n")
    buf: list[str] = []
    for no, seg in enumerate(parts, 1):
        last = no == len(parts)  # no LF after it (or the empty rest after the final LF)
        if last and not seg and not buf:
            return
        if "\0" in seg:
            seg, cont = seg[:seg.index("\0")], False
        else:
            body = seg[:-1] if seg.endswith("\r") else seg
            cont = not last and body.endswith("\\")
            if cont:
                seg = body[:-1]
        buf.append(seg)
        if not cont:
            yield no, "".join(buf).strip(SPACE)
            buf = []
    if buf:
        yield len(parts), "".join(buf).strip(SPACE)


def module_id(name: str) -> str:
    """`ssl_module` stays, `mod_ssl.c` becomes `ssl_module`."""
    if name in _SOURCE_NAMES:
        return _SOURCE_NAMES[name]
    if name.endswith(".c"):
        base = name[:-2]
        return (base[4:] if base.startswith("mod_") else base) + "_module"
    return name


def _version_tuple(text: str) -> tuple[int, int, int] | None:
    m = re.fullmatch(r"([0-9]{1,9})(?:\.([0-9]{1,9}))?(?:\.([0-9]{1,9}))?", text)
    if not m:
        return None
    return tuple(int(g or 0) for g in m.groups())  # type: ignore[return-value]


def if_version(args: list[str], version: tuple[int, int, int]) -> bool | str:
    """<IfVersion [[!]op] version|/regex/>: the decision, or an error message."""
    if not args or len(args) > 2:
        return "<IfVersion> takes one or two arguments"
    op, ver = ("=", args[0]) if len(args) == 1 else (args[0], args[1])
    neg = op.startswith("!")
    op = op[1:] if neg else op
    vstr = ".".join(map(str, version))
    if ver.startswith("/") and ver.endswith("/") and len(ver) > 1 and op in ("=", "==", "~"):
        op, ver = "~", ver[1:-1]
    if op == "~":
        try:
            res = re.search(ver, vstr) is not None
        except re.error:
            return f"<IfVersion> has an invalid regular expression '{ver}'"
        return res != neg
    want = _version_tuple(ver)
    if want is None:
        return f"<IfVersion> cannot parse version '{ver}'"
    cmp = {"=": version == want, "==": version == want, ">": version > want,
           ">=": version >= want, "<": version < want, "<=": version <= want}.get(op)
    if cmp is None:
        return f"<IfVersion> has an unknown operator '{op}'"
    return cmp != neg


# --------------------------------------------------------------------------
# The reader


@dataclass
class _Frame:
    """An open section while reading one file."""

    name: str
    location: Location
    out: list[Directive]  # where the section's content goes
    directive: Directive | None  # None for a conditional that was true (content inlined)
    md_guard: bool = False  # an <IfModule md_module> true only because apache-md stands in


class _Reader:
    def __init__(self, server_root: str, defines: Iterable[str], env: dict[str, str],
                 passed_over: str | None = None):
        self.server_root = server_root
        self.passed_over = passed_over  # files under it are not read (see parse)
        self.defines: dict[str, str | None] = {}
        for d in defines:
            name, eq, value = d.partition("=")
            self.defines[name] = value if eq else None
        self.env = env
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.modules: set[str] = set(BUILTIN_MODULES)
        self.module_files: dict[str, str] = {}
        self.files: list[str] = []
        self.reading: list[str] = []  # include stack, for the recursion guard
        self.stacks: list[list[_Frame]] = []  # open sections of each file being read
        self.missing_includes: list[tuple[str, Problem]] = []
        self.md_loaded: Location | None = None

    # --- helpers

    def error(self, msg: str, loc: Location | None) -> None:
        self.errors.append(Problem(msg, loc))

    def warn(self, msg: str, loc: Location | None) -> None:
        self.warnings.append(Problem(msg, loc))

    def relative(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.server_root, path))

    def expand(self, line: str, loc: Location) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if self.defines.get(name) is not None:
                return self.defines[name]  # type: ignore[return-value]
            if name in self.env:
                return self.env[name]
            if ":" not in name:
                self.warn(f"Config variable ${{{name}}} is not defined", loc)
            return m.group(0)

        return _VAR.sub(sub, line) if "${" in line else line

    def module_loaded(self, name: str) -> bool:
        mid = module_id(name)
        return mid == PRETEND_MODULE or mid in self.modules

    # --- files

    def read_file(self, path: str, out: list[Directive], via: Location | None) -> None:
        if self.passed_over and os.path.abspath(path).startswith(self.passed_over):
            return
        real = os.path.realpath(path)
        if real in self.reading:
            self.error(f"Include recursion: {path} is already being read", via)
            return
        if len(self.reading) >= MAX_INCLUDE_DEPTH:
            self.error(f"Exceeded the maximum include nesting level of {MAX_INCLUDE_DEPTH}", via)
            return
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
        except OSError as e:
            self.error(f"Could not open configuration file {path}: {e.strerror or e}", via)
            return
        self.files.append(path)
        self.reading.append(real)
        try:
            self.read_text(text, path, out)
        finally:
            self.reading.pop()

    def md_guarded(self) -> bool:
        return any(f.md_guard for stack in self.stacks for f in stack)

    def read_text(self, text: str, path: str, out: list[Directive]) -> None:
        stack: list[_Frame] = []
        self.stacks.append(stack)
        try:
            self._read_lines(text, path, out, stack)
        finally:
            self.stacks.pop()

    def _read_lines(self, text: str, path: str, out: list[Directive], stack: list[_Frame]) -> None:
        skip: list[tuple[str, Location]] = []  # sections inside a false conditional
        for lineno, line in logical_lines(text):
            if not line or line.startswith("#"):
                continue
            loc = Location(path, lineno)
            if skip:
                self._soak(line, loc, skip)
                continue
            line = self.expand(line, loc)
            # ap_build_config_sub: the first word names the directive, and a '>'
            # ending it is dropped (`<VirtualHost>` and even `Listen>`).
            name, pos = getword_conf(line)
            if not name:
                continue  # a line of `""`: httpd ignores it
            current = stack[-1].out if stack else out
            if name.startswith("</"):
                self._close(name, loc, stack)
                continue
            if name.endswith(">") and name[1:2] != "/":
                name = name[:-1]
            if name.startswith("<"):
                self._open(name[1:], line[pos:] or ">", loc, stack, skip, current)
            else:
                self._directive(name, line[pos:], loc, current)
        for frame in reversed(stack):
            self.error(f"<{frame.name}> was not closed.", frame.location)
        if skip:
            name, sloc = skip[-1]
            self.error(f"Expected </{name}> before end of configuration", sloc)

    # --- sections

    def _soak(self, line: str, loc: Location, skip: list[tuple[str, Location]]) -> None:
        """ap_soak_end_container: inside a false conditional only sections count."""
        name, pos = getword_conf(line)
        if not name.startswith("<"):
            return
        if name[1:2] == "/":
            inner = name[2:-1]  # httpd drops the last character, '>' or not
            top = skip.pop()
            if inner.lower() != top[0].lower():
                self.error(f"Expected </{top[0]}> but saw </{inner}>", loc)
        else:
            if pos >= len(line) and name.endswith(">"):
                name = name[:-1]
            skip.append((name[1:], loc))

    def _close(self, name: str, loc: Location, stack: list[_Frame]) -> None:
        if not stack:
            self.error(f"{name} without matching <{name[2:]} section", loc)
            return
        if not name.endswith(">"):
            self.error(f"{name}> directive missing closing '>'", loc)
        inner = name[2:-1] if name.endswith(">") else name[2:]
        if stack[-1].name.lower() == inner.lower():
            stack.pop()
            return
        self.error(f"Expected </{stack[-1].name}> but saw </{inner}>", loc)
        # Recover: close up to a matching outer section, if there is one.
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].name.lower() == inner.lower():
                del stack[i:]
                return

    def _open(self, name: str, rest: str, loc: Location, stack: list[_Frame],
              skip: list[tuple[str, Location]], current: list[Directive]) -> None:
        """A section's start: `rest` is what follows `<name` (httpd makes it ">"
        when nothing does); its argument is what stands before the last '>'."""
        end = rest.rfind(">")
        if end < 0:
            shown = "MDomainSet" if name.lower() in ("mdomain", "mdomainset") else name
            self.error(f"<{shown}> directive missing closing '>'", loc)
            inner = rest.strip(SPACE)
        else:
            inner = rest[:end].strip(SPACE)
        lname = name.lower()
        if lname in CONDITIONALS:
            decision, guard = self._condition(lname, name, inner, loc) if end >= 0 else (False, False)
            if decision:
                stack.append(_Frame(name, loc, current, None, guard))
            else:
                skip.append((name, loc))
            return
        if sum(1 for st in self.stacks for f in st if f.directive) >= MAX_SECTION_DEPTH:
            self.error(f"<{name}> is nested more than {MAX_SECTION_DEPTH} sections deep; "
                       "its content is not read", loc)
            skip.append((name, loc))
            return
        d = Directive(name, split_args(inner), loc, children=[], raw=inner, md_guarded=self.md_guarded())
        current.append(d)
        stack.append(_Frame(name, loc, d.children, d))  # type: ignore[arg-type]

    def _condition(self, lname: str, name: str, arg: str, loc: Location) -> tuple[bool, bool]:
        """Whether the section's content counts, and whether only because apache-md
        stands in for mod_md (`<IfModule md_module>` without LoadModule md_module)."""
        if lname == "ifversion":
            res = if_version(split_args(arg), apache_version())
            if isinstance(res, str):
                self.error(res, loc)
                return False, False
            return res, False
        # start_cond_section: `!` right at the start negates; only the first word counts.
        neg = arg.startswith("!")
        word, _ = getword_conf(arg[1:] if neg else arg)
        if not word:
            self.error(f"<{name}> directive requires additional arguments", loc)
            return False, False
        guard = (lname == "ifmodule" and not neg and module_id(word) == PRETEND_MODULE
                 and PRETEND_MODULE not in self.modules)
        if lname == "ifmodule":
            res = self.module_loaded(word)
        elif lname == "ifdefine":
            res = word in self.defines
        elif lname == "iffile":
            res = os.path.exists(self.relative(word))
        else:  # IfDirective / IfSection: everything we may meet is known
            res = True
        return res != neg, guard

    # --- plain directives

    def _directive(self, name: str, raw: str, loc: Location, current: list[Directive]) -> None:
        words = split_args(raw)
        d = Directive(name, words, loc, raw=raw, md_guarded=self.md_guarded())
        current.append(d)
        lname = name.lower()
        if lname == "define":
            args = take(TAKE12, words)
            if args is None:
                self.error(count_message("Define", TAKE12, "Define a variable, optionally to a value.  "
                                         "Same as passing -D to the command line."), loc)
            elif ":" in args[0]:
                self.error(f"Variable name must not contain ':': {args[0]}", loc)
            else:
                self.defines[args[0]] = args[1] if len(args) > 1 else None
        elif lname == "undefine":
            args = take(TAKE1, words)
            if args is None:
                self.error(count_message("UnDefine", TAKE1, "Undefine the existence of a variable. "
                                         "Undo a Define."), loc)
            else:
                self.defines.pop(args[0], None)
        elif lname == "serverroot":
            args = take(TAKE1, words)
            if args is None:
                self.error(count_message("ServerRoot", TAKE1, "Common directory of server-related "
                                         "files (logs, confs, etc.)"), loc)
            elif not os.path.isdir(self.relative(args[0])):
                self.error("ServerRoot must be a valid directory", loc)
            else:
                self.server_root = self.relative(args[0])
        elif lname == "loadmodule":
            self._load_module(take(TAKE2, words), loc)
        elif lname in ("include", "includeoptional"):
            args = take(TAKE1, words)
            if args is None:
                self.error(count_message(name, TAKE1, INCLUDE_HELP[lname]), loc)
                return
            d.include_path = self.relative(args[0])
            self.include(d.include_path, lname == "includeoptional", current, loc)

    def _load_module(self, args: list[str] | None, loc: Location) -> None:
        if args is None:
            self.error("LoadModule takes two arguments, a module name and the name of a "
                       "shared object file to load it from", loc)
            return
        mid, path = args
        if mid == PRETEND_MODULE:
            self.md_loaded = loc
            self.error(f"mod_md is loaded ({loc}); apache-md and mod_md cannot manage certificates "
                       "together: disable it with 'a2dismod md' and reload Apache", loc)
        self.modules.add(mid)
        self.module_files[mid] = self.relative(path)

    def include(self, pattern: str, optional: bool, out: list[Directive], loc: Location) -> None:
        if not _GLOB_CHARS.search(pattern):
            if os.path.isdir(pattern):
                self._include_dir(pattern, out, loc)
            elif os.path.exists(pattern):
                self.read_file(pattern, out, loc)
            elif not optional:
                self.error(f"Could not open configuration file {pattern}: No such file or directory", loc)
                self.missing_includes.append((pattern, self.errors[-1]))
            return
        matches = sorted(glob.glob(pattern))
        if not matches:
            if not optional:
                head, tail = os.path.split(pattern)
                if not _GLOB_CHARS.search(head) and not os.path.isdir(head):
                    self.error(f"Could not open config directory {head}: No such file or directory", loc)
                else:
                    self.error(f"No matches for the wildcard '{tail}' in '{head}', failing", loc)
                # e.g. a wildcard MD's generated include, `<store>/apache/*.example.org.conf`
                self.missing_includes.append((pattern, self.errors[-1]))
            return
        for path in matches:
            if os.path.isdir(path):
                self._include_dir(path, out, loc)
            else:
                self.read_file(path, out, loc)

    def _include_dir(self, path: str, out: list[Directive], loc: Location) -> None:
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            self.error(f"Could not open config directory {path}: {e.strerror or e}", loc)
            return
        for n in names:
            p = os.path.join(path, n)
            if os.path.isdir(p):
                self._include_dir(p, out, loc)
            else:
                self.read_file(p, out, loc)


def parse(main_file: str, server_root: str | None = None, defines: Iterable[str] = (),
          env: dict[str, str] | None = None, passed_over: str | None = None) -> ParseResult:
    """Read `main_file` and everything it includes, but for included files under the
    directory `passed_over` (apache-md's own generated includes, when one is broken)."""
    main_file = os.path.abspath(main_file)
    root = os.path.abspath(server_root) if server_root else os.path.dirname(main_file)
    if env is None:
        env = default_env(main_file)
    r = _Reader(root, defines, env, passed_over)
    top: list[Directive] = []
    r.read_file(main_file, top, None)
    return ParseResult(directives=top, server_root=r.server_root, defines=r.defines,
                       errors=r.errors, warnings=r.warnings, modules=r.modules,
                       module_files=r.module_files, files=r.files, env=env,
                       md_module_loaded=r.md_loaded, missing_includes=r.missing_includes)


def parse_text(text: str, path: str = "<text>", server_root: str = "/",
               defines: Iterable[str] = (), env: dict[str, str] | None = None) -> ParseResult:
    """Parse configuration text directly (for tests and generated snippets)."""
    r = _Reader(server_root, defines, env if env is not None else {})
    top: list[Directive] = []
    r.read_text(text, path, top)
    return ParseResult(directives=top, server_root=r.server_root, defines=r.defines,
                       errors=r.errors, warnings=r.warnings, modules=r.modules,
                       module_files=r.module_files, files=r.files, env=r.env,
                       md_module_loaded=r.md_loaded, missing_includes=r.missing_includes)
