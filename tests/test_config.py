"""Configuration: every error names the file and the key; nothing touches data on error."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
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


def test_example_config_is_generated_from_the_declaration() -> None:
    text = (ROOT / "etc" / "maild.toml").read_text()
    assert text == config.render_example(), "etc/maild.toml is stale: run `maild config-example > etc/maild.toml`"
    cfg = config.load(ROOT / "etc" / "maild.toml")
    assert cfg.imap.listen[0].port == 2143 and cfg.store.shards == 4


_LINE = re.compile(r"^(#?)([a-z_0-9]+) = (.*?)\s+# (.*)$")


def test_every_key_value_and_comment_of_the_example_matches_the_declaration() -> None:
    """Read etc/maild.toml line by line, without the renderer, against the dataclasses."""
    sections = {f.name: f for f in dataclasses.fields(config.Config)}
    seen: set[tuple[str, str]] = set()
    current = ""
    for line in (ROOT / "etc" / "maild.toml").read_text().splitlines():
        if line.startswith("["):
            current = line.split("]")[0][1:]
            assert line.split("# ", 1)[1] == sections[current].metadata["section"].doc
            continue
        match = _LINE.match(line)
        if match is None:
            assert not line or line.startswith("# "), f"not a key, a comment or blank: {line!r}"
            continue
        commented, name, value_text, comment = match.groups()
        shown = tomllib.loads(f"v = {value_text}")["v"]
        if not current:
            spec = sections[name].metadata["key"]
            assert (shown, comment) == (spec.example, spec.doc), name
            seen.add(("", name))
            continue
        fields = {f.name: f for f in dataclasses.fields(config._SECTIONS[current])}
        assert name in fields, f"{current}.{name}: in etc/maild.toml, not declared"
        spec = fields[name].metadata["key"]
        section_spec = sections[current].metadata["section"]
        default = config.default_of(current, name)
        expected = section_spec.examples.get(name, default if spec.example is config._UNSET else spec.example)
        assert shown == expected, f"{current}.{name}"
        assert bool(commented) == spec.commented, f"{current}.{name}"
        suffix = "" if shown == default or commented else \
            f" (default: {'unset' if default is None else config.toml_value(default)})"
        assert comment == spec.doc + suffix, f"{current}.{name}"
        assert type(shown) is type(expected) and "\n" not in spec.doc
        if not commented and name != "path":
            loaded = getattr(getattr(config.load(ROOT / "etc" / "maild.toml"), current), name)
            assert config.toml_value(config._toml_form(loaded)).replace(str(Path.cwd()) + "/", "") == \
                config.toml_value(shown), f"{current}.{name} as loaded"
        seen.add((current, name))
    declared = {("", f.name) for f in dataclasses.fields(config.Config) if "key" in f.metadata}
    for name, cls in config._SECTIONS.items():
        only = sections[name].metadata["section"].only
        declared |= {(name, f.name) for f in dataclasses.fields(cls) if only is None or f.name in only}
    assert seen == declared


def test_every_field_is_declared_with_key() -> None:
    """A field added as a plain ``name: int = 5`` would be an unknown key to the loader."""
    plain = [f"{name}.{f.name}" for name, cls in config._SECTIONS.items() for f in dataclasses.fields(cls)
             if "key" not in f.metadata]
    assert plain == [], "declare these with key(default, doc, ...): see the top of maild/config.py"


def test_every_default_passes_its_own_checks() -> None:
    raw: dict[str, object] = {"hostname": "mx.example.test", "data_dir": "/tmp/maild-unused"}
    for name, cls in config._SECTIONS.items():
        raw[name] = {f.name: config.default_of(name, f.name) for f in dataclasses.fields(cls)
                     if config.default_of(name, f.name) not in ("", None)}
    assert config.from_dict(raw, Path("maild.toml")) == config.from_dict(
        {"hostname": "mx.example.test", "data_dir": "/tmp/maild-unused"}, Path("maild.toml"))


def test_config_example_command_prints_the_example() -> None:
    proc = subprocess.run([sys.executable, "-m", "maild.cli", "config-example"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == (ROOT / "etc" / "maild.toml").read_text()


SEVERAL = MINIMAL + """\
colour = "blue"
[smtp]
max_connections = 0
max_recipients = "lots"
[imap]
listen = ["127.0.0.1:99999", "127.0.0.1:2143"]
[store]
shards = -1
grup_commit = true
[outbound]
tls_policy = "sometimes"
port = 0
[filters]
rspamd_url = "localhost:11333"
"""
SEVERAL_ERRORS = [
    "colour: unknown key",
    "smtp.max_recipients: expected an integer, got 'lots'",
    "smtp.max_connections: must be greater than 0, got 0",
    "imap.listen[0]: port 99999 out of range 1-65535",
    "store.grup_commit: unknown key",
    "store.shards: must be greater than 0, got -1",
    "filters.rspamd_url: expected an http:// URL, got 'localhost:11333'",
    "outbound.port: 0 out of range 1-65535",
    "outbound.tls_policy: expected one of none, opportunistic, required, got 'sometimes'",
]


def test_several_mistakes_are_reported_at_once_each_naming_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, SEVERAL)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert sorted(info.value.errors) == sorted(f"{path}: {e}" for e in SEVERAL_ERRORS)
    assert str(info.value).splitlines() == info.value.errors
    proc = subprocess.run([sys.executable, "-m", "maild.cli", "-c", str(path), "check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert sorted(proc.stderr.splitlines()) == sorted(f"maild: {path}: {e}" for e in SEVERAL_ERRORS)
    assert not (tmp_path / "data").exists()


def test_a_bad_key_does_not_hide_a_cross_key_problem(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[pop3]\nlisten = ["127.0.0.1:2110"]\nidle_timeout = "long"\n')
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert info.value.errors == [f"{path}: pop3.idle_timeout: expected a non-negative number, got 'long'",
                                 f"{path}: tls.cert_file: required when pop3 is enabled"]


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
