"""The worker reads the configuration in a child process (apache/config.load_config_apart):
the same result as in the process itself, and that one when the child fails."""
import sys

from apache_md.apache import config as config_mod
from apache_md.apache.config import load_config, load_config_apart

CONF = """ServerRoot {root}
Listen 8080
<IfDefine WITH_MD>
MDomain a.test b.test
MDStoreDir {root}/md
</IfDefine>
<VirtualHost *:8080>
    ServerName a.test
    ServerAlias ${{MD_ALIAS}}
    SSLEngine on
</VirtualHost>
"""


def test_the_child_reads_what_this_process_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("MD_ALIAS", "b.test")
    main = tmp_path / "apache2.conf"
    main.write_text(CONF.format(root=tmp_path))
    here = load_config(str(main), defines=["WITH_MD"])
    apart = load_config_apart(str(main), defines=["WITH_MD"])
    assert here.mds and here.mds[0].vhosts
    assert apart == here
    assert apart.mds[0].vhosts[0] is apart.vhosts[0]  # shared, as in one process


def test_a_failing_child_leaves_it_to_this_process(tmp_path, monkeypatch):
    main = tmp_path / "apache2.conf"
    main.write_text(CONF.format(root=tmp_path))
    want = load_config(str(main), defines=["WITH_MD"])
    monkeypatch.setattr(config_mod, "_APART", "raise SystemExit(3)")
    assert load_config_apart(str(main), defines=["WITH_MD"]) == want
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert load_config_apart(str(main), defines=["WITH_MD"]) == want
