"""The [filters] section: defaults, and errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from maild.config import ConfigError, from_dict, load


def filters(**section):
    return from_dict({"hostname": "mx.example.test", "data_dir": "/tmp/maild-unused",
                      "filters": section}, Path("maild.toml")).filters


def test_defaults_scan_nothing_but_attachments():
    settings = filters()
    assert settings.clamd == "" and settings.rspamd_url == ""
    # Issue 15 item 11: what a double-click runs or mounts, .hta to disk images.
    for ext in ("exe", "scr", "com", "pif", "js", "vbs", "bat", "cmd", "jar", "hta", "msi", "lnk",
                "iso", "img", "vhd", "ps1", "wsf", "cpl"):
        assert ext in settings.blocked_extensions
    assert (settings.clamd_on_error, settings.rspamd_on_error) == ("tempfail", "fallback")


def test_the_example_configuration_documents_every_key():
    text = Path(__file__).resolve().parents[2].joinpath("etc", "maild.toml").read_text()
    section = text.split("[filters]", 1)[1].split("\n[", 1)[0]
    for key in filters().__dataclass_fields__:
        assert f"\n{key} = " in section or f"\n#{key} = " in section, key
    assert load(Path(__file__).resolve().parents[2] / "etc" / "maild.toml").filters == filters()


@pytest.mark.parametrize(("section", "message"), [
    ({"clamd": "clamd-host"}, 'filters.clamd: expected "host:port", got \'clamd-host\''),
    ({"clamd": "127.0.0.1:99999"}, "filters.clamd: port 99999 out of range 1-65535"),
    ({"clamd_on_error": "drop"}, "filters.clamd_on_error: expected one of tempfail, accept, got 'drop'"),
    ({"rspamd_on_error": "ignore"},
     "filters.rspamd_on_error: expected one of fallback, tempfail, accept, got 'ignore'"),
    ({"rspamd_url": "127.0.0.1:11333"},
     "filters.rspamd_url: expected an http:// URL, got '127.0.0.1:11333'"),
    ({"dnsbl_zones": "zen.spamhaus.org"}, "filters.dnsbl_zones: expected a list, got 'zen.spamhaus.org'"),
    ({"clamd_timeout": -1}, "filters.clamd_timeout: expected a non-negative number, got -1"),
    ({"rspamd_timeout": 0}, "filters.rspamd_timeout: must be greater than 0, got 0.0"),
    ({"clamd_max_size": 0}, "filters.clamd_max_size: must be greater than 0, got 0"),
    ({"scan_zips": True}, "filters.scan_zips: unknown key"),
])
def test_errors_name_the_key(section, message):
    with pytest.raises(ConfigError) as info:
        filters(**section)
    assert str(info.value) == message


def test_unix_socket_and_tcp_addresses_are_accepted():
    assert filters(clamd="/run/clamav/clamd.ctl").clamd == "/run/clamav/clamd.ctl"
    assert filters(clamd="127.0.0.1:3310").clamd == "127.0.0.1:3310"
