"""Server configuration from TOML, overridden by flags; bad files are one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from wsemail.protocol.errors import UsageError
from wsemail.server.config import ServerConfig, load_config
from wsemail.server.pipeline import PluginSpec

from conftest import wsemail_binary


def test_first_run_writes_a_commented_template_that_changes_nothing(tmp_path: Path) -> None:
    ServerConfig(data_dir=tmp_path).prepare()
    template = (tmp_path / "server.toml").read_text()
    assert "# [limits]" in template and "# max_request_bytes = 4194304" in template
    assert load_config(None, tmp_path) == ServerConfig(data_dir=tmp_path)


def test_config_file_values_and_flag_overrides(tmp_path: Path) -> None:
    (tmp_path / "server.toml").write_text(
        'domain = "example.org"\nport = 9025\n[limits]\nmax_depth = 20\n'
        '[security]\nfailures_per_user = 5\n[tls]\ncert = "c.pem"\nkey = "k.pem"\n'
        '[[plugins]]\nref = "size-limit"\npriority = 7\noptions = { max_bytes = 1000 }\n'
    )
    config = load_config(None, tmp_path, port=9999)
    assert config.domain == "example.org" and config.port == 9999
    assert config.max_depth == 20 and config.failures_per_user == 5
    assert config.tls_cert == tmp_path / "c.pem"
    assert config.plugins == [PluginSpec("size-limit", 7, {"max_bytes": 1000})]


@pytest.mark.parametrize(
    "text", ["domain = ", "port = 'eighty'", "[[plugins]]\npriority = 1\n", "limits = 3"]
)
def test_bad_config_is_a_usage_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError):
        load_config(path, tmp_path)
    result = subprocess.run(
        [wsemail_binary(), "serve", "--config", str(path), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stderr.startswith("wsemail: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "named", "line"),
    [
        ('domain = "a.test"\nprot = 9025\n', "'prot'", 2),
        ('domain = "a.test"\n\n[limits]\nmax_depth = 20\nmax_dept = 10\n', "'limits.max_dept'", 5),
        ('[security]\nfailures_per_user = 5\n[tsl]\ncert = "c.pem"\n', "'tsl'", 3),
        ('[[plugins]]\nref = "size-limit"\npriorty = 7\n', "'plugins.priorty'", 3),
        ('dns.nameserver = ["127.0.0.1"]\n', "'dns.nameserver'", 1),
    ],
)
def test_unknown_or_misspelled_keys_are_refused_with_name_and_line(
    tmp_path: Path, text: str, named: str, line: int
) -> None:
    path = tmp_path / "server.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as refused:
        load_config(path, tmp_path)
    assert str(refused.value) == f"{path}:{line}: unknown key {named} in the server config"
    result = subprocess.run(
        [wsemail_binary(), "serve", "--config", str(path), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == f"wsemail: {refused.value}\n"
    assert not (tmp_path / "wsemail.db").exists()  # refused before anything was set up


def test_every_key_of_the_template_is_known(tmp_path: Path) -> None:
    """The first-run template, uncommented, loads: the key check knows what is documented."""
    ServerConfig(data_dir=tmp_path).prepare()
    lines = (tmp_path / "server.toml").read_text().splitlines()[1:]
    text = "\n".join(line.removeprefix("#").strip() for line in lines) + "\n"
    (tmp_path / "server.toml").write_text(text)
    config = load_config(None, tmp_path)
    assert config.domain == "example.org" and config.failure_window == 60
