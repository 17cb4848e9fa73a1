"""Issue 24, items 7-9 and `forms sign`, through the real `wsemail` binary against a real
TLS server on loopback: a form plug-in cannot be taken over by another trusted publisher,
by a wheel of another name or with a METADATA Name of its own, or unpack a zip bomb; each
is one line on stderr, nothing is installed, and the server still answers. `forms sign`
never overwrites a WHEEL.sig unless asked to."""

# ruff: noqa: F811  (fixtures imported from test_forms_rejections are arguments here)
from __future__ import annotations

import io
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest
from test_forms_rejections import inbox_size, one_line_error, server, world  # noqa: F401
from test_forms_workflow import World, dist  # noqa: F401  (fixtures)

from wsemail.core.forms import wheels
from wsemail.protocol.errors import UsageError
from wsemail.server.accounts import set_user

from conftest import PASSWORD, wsemail_binary

FORMS = Path(__file__).resolve().parent.parent / "forms"
TIMESHEET = "wsemail_timesheet-1.0.0-py3-none-any.whl"
TWO = "admin@a.test,pat@a.test"  # two trusted publishers


def run(
    world: World, user: str, *args: str, publishers: str = TWO, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = world.env(user)
    env["WSEMAIL_FORM_PUBLISHERS"] = publishers
    try:
        set_user(server(world).controller.server.store, "a.test", user, PASSWORD)
    except UsageError:
        pass  # already there
    result = subprocess.run(
        [wsemail_binary(), *args], capture_output=True, text=True, env=env, timeout=120
    )
    if check:
        assert result.returncode == 0, f"{user}: wsemail {' '.join(args)}: {result.stderr}"
    return result


def forms_dir(world: World, user: str) -> Path:
    return world.tmp / "homes" / user / "forms"


def state(world: World, user: str) -> tuple[str, list[str]]:
    """The user's registry and what lies in the plug-in folder."""
    root = forms_dir(world, user)
    registry = (root / "registry.json").read_text() if (root / "registry.json").exists() else ""
    return registry, sorted(p.name for p in root.iterdir()) if root.exists() else []


def built(world: World, name: str, version: str, dist_name: str = "wsemail-timesheet") -> Path:
    """A timesheet distribution renamed `dist_name` at `version`, built into its own folder."""
    source = world.tmp / f"src-{dist_name}-{version}"
    if not source.exists():
        shutil.copytree(FORMS / "timesheet", source)
        for path in (source / "pyproject.toml", source / "wsemail_timesheet" / "__init__.py"):
            text = path.read_text().replace('"1.0.0"', f'"{version}"')
            path.write_text(text.replace('name = "wsemail-timesheet"', f'name = "{dist_name}"'))
    return wheels.build(source, world.tmp / f"out-{name}")


def signed_copy(world: World, wheel: Path, folder: str, signer: str, data: bytes = b"") -> Path:
    target = world.tmp / folder / wheel.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data or wheel.read_bytes())
    run(world, signer, "forms", "sign", str(target))
    return target


def with_files(data: bytes, change: dict[str, bytes], dist_info: str) -> bytes:
    """The wheel `data` with `change`d entries, RECORD listing each with its true hash."""
    src = zipfile.ZipFile(io.BytesIO(data))
    files = {i.filename: src.read(i) for i in src.infolist()}
    files.update(change)
    record = f"{dist_info}/RECORD"
    rows = [f"{n},{wheels._b64_digest(c)},{len(c)}" for n, c in files.items() if n != record]
    files[record] = ("\n".join([*rows, f"{record},,"]) + "\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            z.writestr(name, content)
    return out.getvalue()


def test_another_trusted_publisher_cannot_replace_an_installed_form(world: World) -> None:
    user = "erin@a.test"
    run(world, user, "forms", "install", str(world.tmp / "dist" / TIMESHEET))
    before = state(world, user)
    newer = built(world, "newer", "1.1.0")
    by_pat = signed_copy(world, newer, "by-pat", "pat@a.test")
    one_line_error(
        run(world, user, "forms", "install", str(by_pat), check=False),
        "published by admin@a.test, not pat@a.test",
    )
    assert state(world, user) == before  # nothing installed, the registry unchanged
    assert inbox_size(world, user) >= 0  # the server still answers
    # the same wheel from the installed one's publisher is an upgrade
    by_admin = signed_copy(world, newer, "by-admin", "admin@a.test")
    out = run(world, user, "forms", "install", str(by_admin)).stdout
    assert "installed timesheet 1.1.0 (published by admin@a.test)" in out


def test_a_wheel_of_another_name_cannot_take_over_a_form(world: World) -> None:
    user = "fred@a.test"
    run(world, user, "forms", "install", str(world.tmp / "dist" / TIMESHEET))
    before = state(world, user)
    evil = signed_copy(world, built(world, "evil", "9.0.0", "wsemail-evil"), "evil", "admin@a.test")
    assert evil.name == "wsemail_evil-9.0.0-py3-none-any.whl"
    one_line_error(
        run(world, user, "forms", "install", str(evil), check=False),
        "form 'timesheet' comes only from distribution 'wsemail_timesheet'",
    )
    assert state(world, user) == before
    # nor where no timesheet is installed yet
    one_line_error(
        run(world, "gina@a.test", "forms", "install", str(evil), check=False),
        "comes only from distribution",
    )
    assert state(world, "gina@a.test") == ("", [])


def test_a_metadata_name_other_than_the_file_name_is_refused(world: World) -> None:
    good = world.tmp / "dist" / TIMESHEET
    dist_info = "wsemail_timesheet-1.0.0.dist-info"
    metadata = zipfile.ZipFile(good).read(f"{dist_info}/METADATA")
    lying = metadata.replace(b"Name: wsemail-timesheet", b"Name: wsemail-evil")
    assert lying != metadata
    data = with_files(good.read_bytes(), {f"{dist_info}/METADATA": lying}, dist_info)
    wheel = signed_copy(world, good, "metadata", "admin@a.test", data)
    one_line_error(
        run(world, "hank@a.test", "forms", "install", str(wheel), check=False),
        "METADATA names 'wsemail-evil'",
    )
    assert state(world, "hank@a.test") == ("", [])


def test_a_zip_bomb_is_refused_before_anything_is_unpacked(world: World) -> None:
    good = world.tmp / "dist" / TIMESHEET
    dist_info = "wsemail_timesheet-1.0.0.dist-info"
    # 8 x 10 MiB of zeros, each under the per-file cap: about 80 KB compressed
    bomb = {f"wsemail_timesheet/data{n}.bin": bytes(10 << 20) for n in range(8)}
    data = with_files(good.read_bytes(), bomb, dist_info)
    assert len(data) < 200_000
    wheel = signed_copy(world, good, "bomb", "admin@a.test", data)
    one_line_error(
        run(world, "ivan@a.test", "forms", "install", str(wheel), check=False),
        "unpacks to more than",
    )
    assert state(world, "ivan@a.test") == ("", [])  # no staging folder left either
    assert inbox_size(world, "ivan@a.test") >= 0


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in entries.items():
            z.writestr(name, content)
    return out.getvalue()


def test_archive_limits_on_entries_ratio_and_lying_sizes() -> None:
    with pytest.raises(wheels.WheelRefused, match="more than 1000 entries"):
        wheels.check_contents(_zip({f"f{n}": b"" for n in range(1001)}), "x", "1")
    with pytest.raises(wheels.WheelRefused, match="times its size"):
        wheels.check_contents(_zip({"a": bytes(2 << 20)}), "x", "1")  # ~2 KB → 2 MiB
    # the central directory says 100 bytes; the entry holds 300 KB of random-ish data
    data = bytearray(_zip({"a": bytes(range(256)) * 1200}))
    at = data.rfind(b"PK\x01\x02")
    data[at + 24 : at + 28] = struct.pack("<I", 100)  # uncompressed size
    with pytest.raises(wheels.WheelRefused, match="larger than it says|not a readable"):
        wheels.check_contents(bytes(data), "x", "1")


def test_forms_sign_never_overwrites_a_signature_silently(world: World) -> None:
    wheel = world.tmp / "resign" / TIMESHEET
    wheel.parent.mkdir()
    shutil.copyfile(world.tmp / "dist" / TIMESHEET, wheel)
    sig = wheel.with_name(wheel.name + ".sig")
    shutil.copyfile(world.tmp / "dist" / (TIMESHEET + ".sig"), sig)
    before = sig.read_bytes()
    one_line_error(
        run(world, "carol@a.test", "forms", "sign", str(wheel), check=False),
        "exists (signed by 'admin@a.test'); pass --replace",
    )
    assert sig.read_bytes() == before
    replaced = run(world, "carol@a.test", "forms", "sign", "--replace", str(wheel))
    assert "replacing the signature by 'admin@a.test'" in replaced.stderr
    assert b"carol@a.test" in sig.read_bytes()
