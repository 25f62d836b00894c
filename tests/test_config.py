"""Configuration: every error names the file and the key; nothing touches data on error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maild import config

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = 'hostname = "mx.example.test"\ndata_dir = "{data}"\n'
NO_LISTENERS = ("[smtp]\nlisten = []\n[submission]\nlisten = []\ntls_listen = []\n[imap]\nlisten = []\n"
                "tls_listen = []\n[pop3]\nlisten = []\ntls_listen = []\n")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "maild.toml"
    path.write_text(text.replace("{data}", str(tmp_path / "data")))
    return path


def test_example_config_is_valid_and_documents_every_key() -> None:
    cfg = config.load(ROOT / "etc" / "maild.toml")
    assert cfg.imap.listen[0].port == 2143 and cfg.store.shards == 4
    text = (ROOT / "etc" / "maild.toml").read_text()
    import dataclasses
    for section, cls in config._SECTIONS.items():
        for f in dataclasses.fields(cls):
            if section == "submission" and f.name not in ("listen", "tls_listen"):
                continue  # documented once under [smtp]
            assert f"{f.name} =" in text or f"# {f.name} =" in text, f"{section}.{f.name} undocumented"


@pytest.mark.parametrize("text, message", [
    (MINIMAL + "bogus = 1\n", "bogus: unknown key"),
    (MINIMAL + "[imap]\nnope = 1\n", "imap.nope: unknown key"),
    (MINIMAL + "[imap]\nlisten = [\"127.0.0.1:70000\"]\n", "imap.listen[0]: port 70000 out of range"),
    (MINIMAL + "[imap]\nlisten = [\"127.0.0.1\"]\n", "imap.listen[0]: expected \"host:port\""),
    (MINIMAL + "[store]\nshards = \"four\"\n", "store.shards: expected an integer"),
    (MINIMAL + "[store]\nshards = 0\n", "store.shards: must be greater than 0"),
    (MINIMAL + "[store]\ngroup_commit = 1\n", "store.group_commit: expected true or false"),
    ('data_dir = "x"\n', "hostname: missing required key"),
    (MINIMAL + "[imap]\nlisten = [\"127.0.0.1:2143\"]\n", "tls.cert_file: required when"),
    (MINIMAL + "this is not toml", "not valid TOML"),
])
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_cli_check_exits_non_zero_with_one_line_and_touches_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[store]\nshards = -1\n")
    proc = subprocess.run([sys.executable, "-m", "maild.cli", "-c", str(path), "user", "list"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"maild: {path}: store.shards: must be greater than 0, got -1"]
    assert not (tmp_path / "data").exists()


def test_empty_listeners_start_nothing(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MINIMAL + NO_LISTENERS))
    assert not any(getattr(cfg, s).enabled for s in ("smtp", "submission", "imap", "pop3", "api"))
