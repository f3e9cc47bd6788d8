"""Reading Apache syntax: includes, conditionals, variables, quoting, errors."""
from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from apache_md.apache import syntax
from apache_md.apache.syntax import (
    debian_envvars,
    if_version,
    logical_lines,
    module_id,
    parse,
    split_args,
)

APACHE2 = "/usr/sbin/apache2"


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def names(result: syntax.ParseResult) -> list[str]:
    return [d.name for d in result.walk()]


def find(result: syntax.ParseResult, name: str) -> list[syntax.Directive]:
    return [d for d in result.walk() if d.lname == name.lower()]


def messages(problems) -> list[str]:
    return [p.message for p in problems]


# --- tokenizing


@pytest.mark.parametrize("line,args", [
    ("a b  c", ["a", "b", "c"]),
    ('"a b" c', ["a b", "c"]),
    ("'a b' \"c d\"", ["a b", "c d"]),
    (r'"say \"hi\"" x', ['say "hi"', "x"]),
    (r"'it\'s'", ["it's"]),
    (r'"back\slash"', [r"back\slash"]),
    (r"unquoted\"x", [r'unquoted\"x']),
    ('""', [""]),
    ('"', [""]),  # a lone quote is an empty word
    ('"a"b', ["a", "b"]),
    (r"a\\b", [r"a\b"]),
    ("a\fb\vc", ["a", "b", "c"]),  # C's isspace
    ("a\u00a0b", ["a\u00a0b"]),  # not Python's
    ("", []),
])
def test_split_args(line, args):
    assert split_args(line) == args


# `Define <text>` as Debian's httpd 2.4 reads it (`apache2 -t -D DUMP_RUN_CFG` lists the
# defines): the value, None for a name alone, "error" when httpd refuses the line. Each
# case runs through our logical_lines, ap_getword_conf and TAKE12 (test_httpd_agrees).
HTTPD_DEFINES = [
    ('A "two words"', {"A": "two words"}),
    ("A 'single quoted'", {"A": "single quoted"}),
    ('A "', {"A": None}),  # a lone quote: an empty second argument, i.e. none
    ('A ""', {"A": None}),
    ('A "unterminated value', {"A": "unterminated value"}),
    (r'A "say \"hi\""', {"A": 'say "hi"'}),
    (r"A 'it\'s'", {"A": "it's"}),
    (r'A "back\\slash"', {"A": "back\\slash"}),
    (r'A "keep\xsingle"', {"A": r"keep\xsingle"}),
    (r"A un\\quoted", {"A": r"un\quoted"}),
    (r'A un\"quoted', {"A": r'un\"quoted'}),
    (r"A '\"'", {"A": r'\"'}),  # only the quote in use is escaped
    (r'A "a\\"', {"A": "a\\"}),
    ('"A"B', {"A": "B"}),  # no space needed after a closing quote
    ("A\fv", {"A": "v"}),
    ("A v\u00a0w", {"A": "v\u00a0w"}),
    ('A "x" ""', "error"),  # a third (empty) argument
    ('A ""x', "error"),
    ('"" v', "error"),  # an empty first argument is a missing one
    ('A "v"#c', "error"),  # `#` starts a comment only at the start of a line
    ('A "one \\\ntwo"', {"A": "one two"}),  # continuation inside quotes
    ("A one\\\r\nx", {"A": "onex"}),
    ("A one\\  \n#x", {"A": "one\\"}),  # a backslash before spaces continues nothing
    ("A v\x00ignored \\\n", {"A": "v"}),  # a NUL ends the line, continuation included
    ("A v\rw", "error"),  # CR is white space inside a line
]


def _ours(text: str):
    r = syntax.parse_text("Define " + text + "\n")
    return "error" if r.errors else r.defines


@pytest.mark.parametrize("text,expected", HTTPD_DEFINES)
def test_words_as_httpd_reads_them(text, expected):
    assert _ours(text) == expected


def _httpd_defines(tmp: Path, text: str):
    conf = tmp / "httpd.conf"
    conf.write_bytes((f"ServerRoot {tmp}\nServerName localhost\nErrorLog {tmp}/error.log\n"
                      "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n"
                      f"Define {text}\n").encode())
    out = subprocess.run([APACHE2, "-d", str(tmp), "-f", str(conf), "-t", "-D", "DUMP_RUN_CFG"],
                         capture_output=True, text=True, errors="replace")
    if out.returncode:
        return "error"
    pairs = [ln[8:].partition("=") for ln in out.stdout.splitlines() if ln.startswith("Define: ")]
    return {n: v if eq else None for n, eq, v in pairs if n != "DUMP_RUN_CFG"}


@pytest.mark.skipif(not os.access(APACHE2, os.X_OK), reason="no apache2 here")
def test_httpd_agrees(tmp_path):
    """The table above is httpd's behaviour: ask the real one."""
    assert {t: _httpd_defines(tmp_path, t) for t, _ in HTTPD_DEFINES} == dict(HTTPD_DEFINES)


@pytest.mark.parametrize("how,words,args", [
    (syntax.TAKE1, ["a"], ["a"]), (syntax.TAKE1, [""], None), (syntax.TAKE1, ["a", "b"], None),
    (syntax.TAKE2, ["a", ""], None), (syntax.TAKE12, ["a", ""], ["a"]),
    (syntax.TAKE12, ["", "b"], None), (syntax.ITERATE, ["a", "", "b"], ["a"]),
    (syntax.ITERATE, [""], None), (syntax.ARGV, ["a", ""], ["a"]), (syntax.ARGV, ["", "a"], ["", "a"]),
    (syntax.ARGV, [], []), (syntax.ARGV, [str(i) for i in range(70)], [str(i) for i in range(64)]),
])
def test_take_counts_arguments_as_invoke_cmd(how, words, args):
    assert syntax.take(how, words) == args


def test_logical_lines_continuations_take_the_last_line_number():
    # httpd: "Syntax error on line 4" for a directive on lines 2-4
    text = "A 1\nB 2 \\\n  3 \\\n 4\n\nC\n"
    assert list(logical_lines(text)) == [(1, "A 1"), (4, "B 2   3  4"), (5, ""), (6, "C")]


@pytest.mark.parametrize("name,mid", [
    ("ssl_module", "ssl_module"), ("mod_ssl.c", "ssl_module"), ("mod_md.c", "md_module"),
    ("core.c", "core_module"), ("prefork.c", "mpm_prefork_module"), ("mod_wsgi.c", "wsgi_module"),
])
def test_module_id(name, mid):
    assert module_id(name) == mid


@pytest.mark.parametrize("args,expected", [
    ([">=", "2.4"], True), (["<", "2.4"], False), (["2.4.62"], True), (["=", "2.4"], False),
    (["!=", "2.2.0"], True), (["~", r"^2\.4"], True), (["/^2\\.2/"], False), (["!~", "^2"], False),
    ([">", "2.4.61"], True), (["<=", "2.4.62"], True),
])
def test_if_version(args, expected):
    assert if_version(args, (2, 4, 62)) is expected


def test_if_version_errors():
    assert isinstance(if_version([], (2, 4, 62)), str)
    assert isinstance(if_version(["?", "2.4"], (2, 4, 62)), str)
    assert isinstance(if_version([">=", "two"], (2, 4, 62)), str)


# --- includes


def test_include_glob_dir_and_order(tmp_path):
    write(tmp_path, "main.conf", """\
        A 1
        Include conf.d/*.conf
        Include dir
        IncludeOptional missing/*.conf
        IncludeOptional nothing.conf
        Z 9
    """)
    write(tmp_path, "conf.d/b.conf", "B 2\n")
    write(tmp_path, "conf.d/a.conf", "AA 1\n")
    write(tmp_path, "conf.d/skip.txt", "NO 0\n")
    write(tmp_path, "dir/2", "D2 x\n")
    write(tmp_path, "dir/1", "D1 x\n")
    write(tmp_path, "dir/sub/3", "D3 x\n")
    r = parse(str(tmp_path / "main.conf"), env={})
    assert r.errors == []
    assert names(r) == ["A", "Include", "AA", "B", "Include", "D1", "D2", "D3",
                        "IncludeOptional", "IncludeOptional", "Z"]
    inc = find(r, "include")[0]
    assert inc.include_path == str(tmp_path / "conf.d/*.conf")
    assert find(r, "b")[0].location == syntax.Location(str(tmp_path / "conf.d/b.conf"), 1)


def test_include_missing_file_is_error_with_location(tmp_path):
    write(tmp_path, "main.conf", "X 1\nInclude nope.conf\nInclude gone/*.conf\nInclude empty/*.conf\n")
    (tmp_path / "empty").mkdir()
    r = parse(str(tmp_path / "main.conf"), env={})
    msgs = [str(p) for p in r.errors]
    assert msgs[0] == (f"{tmp_path}/main.conf:2: Could not open configuration file "
                       f"{tmp_path}/nope.conf: No such file or directory")
    assert "Could not open config directory" in msgs[1] and ":3:" in msgs[1]
    assert "No matches for the wildcard '*.conf'" in msgs[2] and ":4:" in msgs[2]


def test_include_recursion_is_reported(tmp_path):
    write(tmp_path, "main.conf", "Include a.conf\n")
    write(tmp_path, "a.conf", "Include main.conf\n")
    r = parse(str(tmp_path / "main.conf"), env={})
    assert len(r.errors) == 1 and "recursion" in r.errors[0].message
    assert r.errors[0].location.file.endswith("a.conf")


def test_include_inside_section_stays_in_tree(tmp_path):
    write(tmp_path, "main.conf", """\
        <VirtualHost *:443>
          ServerName a.example
          IncludeOptional md/apache/a.example.conf
          Include extra.conf
        </VirtualHost>
    """)
    write(tmp_path, "extra.conf", "SSLEngine on\n")
    r = parse(str(tmp_path / "main.conf"), env={})
    vh = r.directives[0]
    assert [c.name for c in vh.children] == ["ServerName", "IncludeOptional", "Include", "SSLEngine"]
    assert vh.children[1].include_path == str(tmp_path / "md/apache/a.example.conf")


def test_server_root_directive_and_argument(tmp_path):
    other = tmp_path / "other"
    write(other, "x.conf", "FromOther 1\n")
    write(tmp_path, "etc/main.conf", f'ServerRoot "{other}"\nInclude x.conf\n')
    r = parse(str(tmp_path / "etc/main.conf"), env={})
    assert r.errors == [] and r.server_root == str(other)
    assert find(r, "fromother")
    r = parse(str(tmp_path / "etc/main.conf"), server_root=str(tmp_path), env={})
    assert r.server_root == str(other)
    write(tmp_path, "etc/main2.conf", "Include x.conf\n")
    r = parse(str(tmp_path / "etc/main2.conf"), server_root=str(other), env={})
    assert r.errors == [] and find(r, "fromother")


def test_unreadable_main_file(tmp_path):
    r = parse(str(tmp_path / "nope.conf"), env={})
    assert r.directives == [] and "Could not open configuration file" in r.errors[0].message


# --- variables


def test_define_and_variables(tmp_path):
    write(tmp_path, "main.conf", """\
        Define NAME example.org
        Define FLAG
        ServerName www.${NAME}
        Dir ${HOME_DIR}/x
        Unknown ${NOPE}
        UnDefine NAME
        After ${NAME}
    """)
    r = parse(str(tmp_path / "main.conf"), env={"HOME_DIR": "/home/x", "NAME": "fromenv"})
    assert find(r, "servername")[0].args == ["www.example.org"]
    assert find(r, "dir")[0].args == ["/home/x/x"]
    assert find(r, "unknown")[0].args == ["${NOPE}"]
    assert find(r, "after")[0].args == ["fromenv"]
    assert messages(r.warnings) == ["Config variable ${NOPE} is not defined"]
    assert r.warnings[0].location.line == 5
    assert "FLAG" in r.defines and "NAME" not in r.defines


def test_variable_with_spaces_splits_arguments():
    r = syntax.parse_text("ServerAlias ${ALIASES}\n", env={"ALIASES": "a.example b.example"})
    assert r.directives[0].args == ["a.example", "b.example"]


def test_debian_envvars(tmp_path):
    write(tmp_path, "envvars", """\
        unset HOME
        if [ "${APACHE_CONFDIR##/etc/apache2-}" != "${APACHE_CONFDIR}" ] ; then
        \tSUFFIX="-${APACHE_CONFDIR##/etc/apache2-}"
        else
        \tSUFFIX=
        fi
        export APACHE_RUN_USER=www-data
        export APACHE_RUN_DIR=/var/run/apache2$SUFFIX
        export APACHE_LOG_DIR="/var/log/apache2${SUFFIX}"
        export QUOTED='$literal'
    """)
    write(tmp_path, "apache2.conf", "User ${APACHE_RUN_USER}\nLog ${APACHE_LOG_DIR}/error.log\n")
    r = parse(str(tmp_path / "apache2.conf"))
    assert r.errors == [] and r.warnings == []
    assert find(r, "user")[0].args == ["www-data"]
    assert find(r, "log")[0].args == ["/var/log/apache2/error.log"]
    assert debian_envvars(str(tmp_path / "envvars"), {}, "/etc/apache2-web")["APACHE_RUN_DIR"] \
        == "/var/run/apache2-web"
    assert debian_envvars(str(tmp_path / "envvars"), {}, "/etc/apache2")["QUOTED"] == "$literal"


# --- conditionals


def test_ifmodule_follows_loadmodule_order(tmp_path):
    write(tmp_path, "main.conf", """\
        <IfModule ssl_module>
          Before 1
        </IfModule>
        LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so
        <IfModule mod_ssl.c>
          After 1
          <IfModule !ssl_module>
            Never 1
            <Nested>
            </Nested>
          </IfModule>
        </IfModule>
        <IfModule log_config_module>
          Builtin 1
        </IfModule>
    """)
    r = parse(str(tmp_path / "main.conf"), env={})
    assert r.errors == []
    assert names(r) == ["LoadModule", "After", "Builtin"]
    assert "ssl_module" in r.modules and "core_module" in r.modules
    assert r.module_files["ssl_module"] == "/usr/lib/apache2/modules/mod_ssl.so"


def test_md_module_is_pretended(tmp_path):
    write(tmp_path, "main.conf", """\
        <IfModule md_module>
          MDomain a.example
        </IfModule>
        <IfModule !mod_md.c>
          Skipped 1
        </IfModule>
    """)
    r = parse(str(tmp_path / "main.conf"), env={})
    assert r.errors == [] and names(r) == ["MDomain"]
    assert "md_module" not in r.modules and r.md_module_loaded is None


def test_real_mod_md_is_an_error(tmp_path):
    write(tmp_path, "mods/md.load", "LoadModule md_module /usr/lib/apache2/modules/mod_md.so\n")
    write(tmp_path, "main.conf", "IncludeOptional mods/*.load\n")
    r = parse(str(tmp_path / "main.conf"), env={})
    assert len(r.errors) == 1
    err = r.errors[0]
    assert err.location.file.endswith("mods/md.load") and err.location.line == 1
    assert "a2dismod md" in err.message and "mod_md is loaded" in err.message


def test_ifdefine_with_command_line_defines(tmp_path):
    write(tmp_path, "main.conf", """\
        <IfDefine SSL>
          WithSSL 1
        </IfDefine>
        <IfDefine !SSL>
          WithoutSSL 1
        </IfDefine>
        Define LATER
        <IfDefine LATER>
          Later 1
        </IfDefine>
    """)
    assert names(parse(str(tmp_path / "main.conf"), defines=["SSL"], env={})) == \
        ["WithSSL", "Define", "Later"]
    assert names(parse(str(tmp_path / "main.conf"), env={})) == ["WithoutSSL", "Define", "Later"]


def test_iffile_ifversion_ifdirective(tmp_path, monkeypatch):
    monkeypatch.setattr(syntax, "_apache_version", (2, 4, 62))
    write(tmp_path, "present", "")
    write(tmp_path, "main.conf", """\
        <IfFile present>
          F1 1
        </IfFile>
        <IfFile !/no/such/file>
          F2 1
        </IfFile>
        <IfVersion >= 2.4>
          V1 1
        </IfVersion>
        <IfVersion < 2.4>
          V2 1
        </IfVersion>
        <IfDirective ServerName>
          D1 1
        </IfDirective>
        <IfSection !VirtualHost>
          D2 1
        </IfSection>
    """)
    r = parse(str(tmp_path / "main.conf"), env={})
    assert r.errors == [] and names(r) == ["F1", "F2", "V1", "D1"]


def test_skipped_sections_are_not_expanded(tmp_path):
    write(tmp_path, "main.conf", "<IfDefine NOPE>\n  X ${UNDEFINED}\n  Include missing.conf\n</IfDefine>\n")
    r = parse(str(tmp_path / "main.conf"), env={})
    assert r.errors == [] and r.warnings == [] and r.directives == []


# --- syntax


def test_comments_case_and_sections(tmp_path):
    write(tmp_path, "main.conf", """\
        # a comment
           # indented comment
        servername A.example # not a comment
        <virtualhost *:443 [::1]:443>
          SSLEngine on
          <Directory "/var/www">
            Require all granted
          </directory>
        </VIRTUALHOST>
    """)
    r = parse(str(tmp_path / "main.conf"), env={})
    assert r.errors == []
    sn, vh = r.directives
    assert sn.args == ["A.example", "#", "not", "a", "comment"]
    assert vh.name == "virtualhost" and vh.args == ["*:443", "[::1]:443"] and vh.location.line == 4
    assert vh.children[1].args == ["/var/www"] and vh.children[1].children[0].name == "Require"


def test_continuation_location_is_the_last_line_as_in_httpd(tmp_path):
    write(tmp_path, "main.conf", "One 1\nServerAlias a \\\n  b \\\n  c\nTwo 2\n")
    r = parse(str(tmp_path / "main.conf"), env={})
    alias = find(r, "serveralias")[0]
    assert alias.args == ["a", "b", "c"] and alias.location.line == 4
    assert find(r, "two")[0].location.line == 5


@pytest.mark.parametrize("text,message,line", [
    ("<VirtualHost *:80>\nServerName x\n", "<VirtualHost> was not closed.", 1),
    ("<VirtualHost *:80>\n<Directory />\n</VirtualHost>\n",
     "Expected </Directory> but saw </VirtualHost>", 3),
    ("</VirtualHost>\n", "</VirtualHost> without matching <VirtualHost> section", 1),
    ("<MDomain example.org\n</MDomain>\n", "<MDomainSet> directive missing closing '>'", 1),
    ("<VirtualHost *:80\n</VirtualHost>\n", "<VirtualHost> directive missing closing '>'", 1),
    ("<IfModule nope>\n<A>\n</B>\n</IfModule>\n", "Expected </A> but saw </B>", 3),
    ("<IfModule nope>\nX\n", "Expected </IfModule> before end of configuration", 1),
    # httpd 2.4's own words for these (apache2 -t)
    ("<VirtualHost *:80>\n</VirtualHost >\n", "</VirtualHost> directive missing closing '>'", 2),
    ("</VirtualHost >\n", "</VirtualHost without matching <VirtualHost section", 1),
    ("<IfModule>\n</IfModule>\n", "<IfModule> directive requires additional arguments", 1),
    ("<IfModule nope>\n<Foo>\n", "Expected </Foo> before end of configuration", 2),
])
def test_section_errors(tmp_path, text, message, line):
    write(tmp_path, "main.conf", text)
    r = parse(str(tmp_path / "main.conf"), env={})
    assert message in messages(r.errors)
    p = r.errors[messages(r.errors).index(message)]
    assert p.location == syntax.Location(str(tmp_path / "main.conf"), line)


def test_sections_must_close_in_their_file(tmp_path):
    write(tmp_path, "main.conf", "<VirtualHost *:80>\nInclude a.conf\n</VirtualHost>\n")
    write(tmp_path, "a.conf", "<Directory />\n")
    r = parse(str(tmp_path / "main.conf"), env={})
    assert [str(p) for p in r.errors] == [f"{tmp_path}/a.conf:1: <Directory> was not closed."]


def test_binary_garbage_does_not_raise(tmp_path):
    (tmp_path / "main.conf").write_bytes(b"\xff\xfe<\x00>\n\x00\x00 bad \\\n")
    parse(str(tmp_path / "main.conf"), env={})


def test_debian_default_config_parses():
    if not os.path.exists("/etc/apache2/apache2.conf"):
        pytest.skip("no Debian apache2")
    r = parse("/etc/apache2/apache2.conf")
    assert r.errors == [] and r.warnings == []
    assert "mpm_event_module" in r.modules or "mpm_prefork_module" in r.modules
    assert find(r, "user")[0].args != ["${APACHE_RUN_USER}"]


def test_conditions_read_their_first_word_only(tmp_path):
    # start_cond_section: `<IfModule a b>` tests `a`; `!` negates only right after the name
    write(tmp_path, "main.conf", """\
        <IfModule md_module ignored words>
          A 1
        </IfModule>
        <IfModule ! nope_module>
          B 2
        </IfModule>
        <IfModule "!nope_module">
          C 3
        </IfModule>
    """)
    r = parse(str(tmp_path / "main.conf"), env={})
    assert r.errors == [] and names(r) == ["A", "B"]


def test_variables_with_a_colon_are_not_warned_about(tmp_path):
    # ap_resolve_env keeps `${x:y}` quietly (mod_rewrite and mod_macro spell such things)
    write(tmp_path, "main.conf", "A ${x:y}\nB ${nope}\n")
    r = parse(str(tmp_path / "main.conf"), env={})
    assert messages(r.warnings) == ["Config variable ${nope} is not defined"]
