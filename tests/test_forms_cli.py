"""The `wsemail forms` commands through the real binary."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

from conftest import Cli, Running, wsemail_binary

FORMS = Path(__file__).resolve().parent.parent / "forms"


def test_forms_build_makes_a_wheel_of_a_first_party_form(tmp_path: Path) -> None:
    result = subprocess.run(
        [wsemail_binary(), "forms", "build", str(FORMS / "requisition"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    wheels = list(tmp_path.glob("*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
    assert any(n.endswith("entry_points.txt") for n in names)
    assert any(n.endswith("RECORD") for n in names)


def test_send_form_with_an_uninstalled_plugin_is_a_clear_error(
    cli: Cli, server: Running, tmp_path: Path
) -> None:
    draft = tmp_path / "draft.json"
    draft.write_text(json.dumps({"form": "no-such-form", "data": {}}))
    result = cli("send", "--form", str(draft), "--to", "bob@localhost", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "not installed" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert server.stored()[0] == 0
