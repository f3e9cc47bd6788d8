"""worker.config_stamp: how the worker notices an edited Apache configuration by itself."""
from __future__ import annotations

import os

from apache_md.apache.config import load_config
from apache_md.worker import config_stamp


def test_config_stamp_sees_edits_and_new_files_but_not_our_own(tmp_path):
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    store = tmp_path / "md"
    (store / "apache").mkdir(parents=True)
    (store / "apache" / "a.test.conf").write_text("# generated\n")
    main = tmp_path / "apache2.conf"
    main.write_text(f"MDStoreDir {store}\nIncludeOptional {conf_d}/*.conf\n"
                    f"<VirtualHost *:443>\n  ServerName a.test\n"
                    f"  IncludeOptional {store}/apache/a.test.conf\n</VirtualHost>\n")
    (conf_d / "10-md.conf").write_text("<IfModule md_module>\nMDomain a.test\n</IfModule>\n")
    config = load_config(str(main), server_root=str(tmp_path), env={})
    stamp = config_stamp(config)
    (store / "apache" / "a.test.conf").write_text("# rewritten by the worker\n")
    assert config_stamp(config) == stamp
    (conf_d / "20-new.conf").write_text("# a2enconf\n")
    assert config_stamp(config) != stamp
    stamp = config_stamp(config)
    (conf_d / "10-md.conf").write_text("<IfModule md_module>\nMDomain b.test\n</IfModule>\n")
    os.utime(conf_d / "10-md.conf", ns=(1, 1))
    assert config_stamp(config) != stamp
