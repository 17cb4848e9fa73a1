"""In charge of form plug-ins as signed wheels (paper §3.2): building, signing (name,
version, file name and SHA-256, by the publisher's user certificate under the federation
PKI), verifying, and installing into the client's private plug-in directory with a local
registry (name, version, location, publisher, SHA-256).

Installing checks, before anything is written: the publisher signature and its chain, as
at the time the publisher's own server stamped it (`stamps`: a signer cannot choose it), that
the publisher is trusted, that the signature names this very wheel (file, name, version,
SHA-256), no downgrade, every zip entry a plain relative path inside the target, and the
wheel's RECORD (every file listed once with its SHA-256 and size, nothing unlisted). Files
are unpacked into a staging folder and moved into place only when all of that passed.

Takeover rules: a form's name, its distribution, the wheel's file name and the METADATA
`Name` are bound together (form `timesheet` comes only from distribution
`wsemail_timesheet`, in a file `wsemail_timesheet-<version>-…whl` whose METADATA says
`Name: wsemail-timesheet` or an equivalent spelling); an installed form is upgraded only by
the same publisher (the address its certificate names) from the same distribution.

Archive limits, read from the central directory before anything is decompressed and
enforced again while reading (in case the directory lies): at most `MAX_ENTRIES` entries,
`MAX_ENTRY` bytes per entry, `MAX_UNPACKED` bytes in all, and, above `RATIO_FLOOR` bytes
unpacked, at most `MAX_RATIO` times the wheel's own size.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import platformdirs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from packaging.version import InvalidVersion, Version

from wsemail.core.forms import stamps
from wsemail.core.forms.approvals import TIME_FORMAT, _address
from wsemail.core.forms.document import WF, FormError, w
from wsemail.pki import TrustStore
from wsemail.protocol.dsig import PrivateKey, Signer, verify_element
from wsemail.protocol.errors import RemoteFault, UsageError
from wsemail.protocol.xmlsafe import XmlLimits, parse_untrusted

# ASCII only and at most 200 bytes: it becomes a file name (with .sig, .part, a folder)
_WHEEL = re.compile(r"^(?=.{1,200}$)([A-Za-z0-9_.]+)-([0-9][A-Za-z0-9_.+]*)-py3-none-any\.whl$")
MAX_WHEEL = 16 << 20  # the wheel file itself
MAX_SIGNATURE = 64 << 10  # its signature file (signature and stamp)
MAX_ENTRY = 16 << 20  # one file inside it, uncompressed
MAX_UNPACKED = 32 << 20  # every file inside it, uncompressed
MAX_ENTRIES = 1000
MAX_RATIO = 100  # unpacked size / wheel size, checked above RATIO_FLOOR
RATIO_FLOOR = 1 << 20


class WheelRefused(UsageError):
    """A wheel or its signature that does not pass verification; nothing was installed."""


def plugin_dir() -> Path:
    env = os.environ.get("WSEMAIL_FORMS_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("wsemail", appauthor=False)) / "forms"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_name(file_name: str) -> tuple[str, str]:
    """(distribution, version) from a pure-Python wheel's file name."""
    match = _WHEEL.match(file_name)
    if not match:
        raise WheelRefused(f"not a pure-Python wheel file name: {file_name[:100]!r}")
    return match.group(1), match.group(2)


# building ------------------------------------------------------------------------------
def build(source: Path, out: Path) -> Path:
    """Build the wheel of a form distribution (pip, no isolation, no dependencies); the
    source folder is copied first so it stays clean."""
    if not (source / "pyproject.toml").is_file():
        raise UsageError(f"{source} has no pyproject.toml")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(
            source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
        )
        dest = Path(tmp) / "dist"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "-q",
                "-w",
                str(dest),
                str(copy),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = sorted(dest.glob("*.whl")) if dest.exists() else []
        if result.returncode != 0 or len(wheels) != 1:
            raise UsageError(f"building {source} failed: {result.stderr.strip()[-500:]}")
        target = out / wheels[0].name
        shutil.copyfile(wheels[0], target)
        return target


# signing -------------------------------------------------------------------------------
def sign(
    wheel: Path,
    key: PrivateKey,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    countersign: Callable[[etree._Element], etree._Element],
    now: datetime | None = None,
) -> Path:
    """Write `<wheel>.sig`: the publisher's signature over file, name, version, SHA-256,
    and its stamp by the publisher's own server (`countersign` asks for it), together:

        <wf:SignedWheel> <wf:WheelSignature>…</wf:WheelSignature> <wf:Stamp>…</wf:Stamp>
        </wf:SignedWheel>
    """
    data = wheel.read_bytes()
    name, version = parse_name(wheel.name)
    node = etree.Element(w("WheelSignature"), nsmap={"wf": WF})
    for tag, value in (
        ("File", wheel.name),
        ("Name", name),
        ("Version", version),
        ("Sha256", sha256_hex(data)),
        ("Publisher", _address(cert)),
        ("At", (now or datetime.now(UTC)).strftime(TIME_FORMAT)),
        (
            "IssuingCertificate",
            base64.b64encode(issuer.public_bytes(serialization.Encoding.DER)).decode(),
        ),
    ):
        etree.SubElement(node, w(tag)).text = value
    signed = Signer(key, cert).sign_element(node)
    holder = etree.Element(w("SignedWheel"), nsmap={"wf": WF})
    holder.append(signed)
    holder.append(countersign(signed))
    path = wheel.with_name(wheel.name + ".sig")
    path.write_bytes(etree.tostring(holder))
    return path


def claimed_publisher(sig: Path) -> str:
    """Who a signature file says signed it (not verified: for messages only)."""
    try:
        root = parse_untrusted(sig.read_bytes(), XmlLimits(max_bytes=64 << 10))
    except (OSError, RemoteFault):
        return "someone (unreadable)"
    return repr((root.findtext(f"{w('WheelSignature')}/{w('Publisher')}") or "someone")[:100])


@dataclass(frozen=True)
class Verified:
    file: str
    name: str
    version: str
    sha256: str
    publisher: str


def verify(
    file_name: str,
    data: bytes,
    signature: bytes,
    roots: list[x509.Certificate],
    crls: list[x509.CertificateRevocationList],
    publishers: list[str],
) -> Verified:
    """Check the publisher signature and that it names these bytes; WheelRefused if not."""
    if len(data) > MAX_WHEEL:
        raise WheelRefused("wheel too large")
    try:
        holder = parse_untrusted(signature, XmlLimits(max_bytes=MAX_SIGNATURE))
        parts = [c for c in holder if isinstance(c.tag, str)]
        if holder.tag != w("SignedWheel") or [c.tag for c in parts] != [
            w("WheelSignature"),
            w("Stamp"),
        ]:
            raise WheelRefused("the publisher signature is not stamped by its server")
        root, stamp = parts
        clock = stamps.Clock(datetime.now(UTC))
        trust = TrustStore(roots, crls, clock=clock)
        at = stamps.check(stamp, root, clock, trust.verify_server, datetime.now(UTC))
        issuer = stamps.issuing_certificate(root)

        def resolve(cert: x509.Certificate) -> str:
            address = _address(cert)
            trust.verify_user(cert, issuer, address)  # as at the stamp's time
            return address

        _, publisher, signed = verify_element(etree.tostring(root), resolve, at=at)
        stamps.check_own_time(signed, at)
    except (RemoteFault, ValueError, FormError) as exc:
        raise WheelRefused(f"the publisher signature does not verify: {exc}") from exc
    if not _trusted(publisher, publishers):
        raise WheelRefused(f"{publisher} is not a trusted form publisher")
    fields = {
        tag: (signed.findtext(w(tag)) or "").strip()
        for tag in ("File", "Name", "Version", "Sha256", "Publisher")
    }
    name, version = parse_name(file_name)
    if fields["Publisher"] != publisher:
        raise WheelRefused("the signature names another publisher")
    if (fields["File"], fields["Name"], fields["Version"]) != (file_name, name, version):
        raise WheelRefused(f"the signature is for {fields['File']!r}, not {file_name!r}")
    if fields["Sha256"] != sha256_hex(data):
        raise WheelRefused(f"{file_name}: SHA-256 differs from the signed one (tampered?)")
    return Verified(file_name, name, version, fields["Sha256"], publisher)


def _trusted(publisher: str, publishers: list[str]) -> bool:
    domain = publisher.rpartition("@")[2]
    return any(p == publisher or p in (f"@{domain}", domain) for p in publishers)


# the wheel's contents ----------------------------------------------------------------------
def _b64_digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _check_sizes(infos: list[zipfile.ZipInfo], packed: int) -> None:
    """The archive limits from the central directory, before anything is decompressed."""
    if len(infos) > MAX_ENTRIES:
        raise WheelRefused(f"the wheel has more than {MAX_ENTRIES} entries")
    total = 0
    for info in infos:
        if info.file_size > MAX_ENTRY:
            raise WheelRefused(f"zip entry larger than {MAX_ENTRY} bytes: {info.filename[:100]!r}")
        total += info.file_size
    if total > MAX_UNPACKED:
        raise WheelRefused(f"the wheel unpacks to more than {MAX_UNPACKED} bytes")
    if total > RATIO_FLOOR and total > MAX_RATIO * max(packed, 1):
        raise WheelRefused(f"the wheel unpacks to more than {MAX_RATIO} times its size")


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """One entry, at most its declared size and what is left of the budget."""
    limit = min(info.file_size, budget)
    chunks, size = [], 0
    with archive.open(info) as stream:
        while chunk := stream.read(64 << 10):
            size += len(chunk)
            if size > limit:
                raise WheelRefused(f"zip entry larger than it says: {info.filename[:100]!r}")
            chunks.append(chunk)
    return b"".join(chunks)


def check_contents(data: bytes, name: str, version: str) -> dict[str, bytes]:
    """Every entry of the wheel, after the size, path and RECORD checks; WheelRefused if
    not. Nothing is decompressed before the central directory passed `_check_sizes`."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
        _check_sizes(infos, len(data))
        files: dict[str, bytes] = {}
        budget = MAX_UNPACKED
        for info in infos:
            path = PurePosixPath(info.filename)
            mode = info.external_attr >> 16
            if (
                info.filename.startswith("/")
                or "\\" in info.filename
                or ":" in info.filename
                or any(part in ("..", "") for part in path.parts)
                or not path.parts
                or (mode & 0o170000) == 0o120000
            ):
                raise WheelRefused(f"zip entry escapes the target folder: {info.filename[:100]!r}")
            if info.is_dir():
                continue
            if info.filename in files:
                raise WheelRefused(f"zip entry twice: {info.filename[:100]!r}")
            files[info.filename] = _read(archive, info, budget)
            budget -= len(files[info.filename])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, zlib.error) as exc:
        raise WheelRefused(f"not a readable wheel: {exc}") from exc
    dist_info = f"{name}-{version}.dist-info"
    record_name = f"{dist_info}/RECORD"
    if record_name not in files or f"{dist_info}/METADATA" not in files:
        raise WheelRefused(f"the wheel has no {dist_info} with METADATA and RECORD")
    listed: dict[str, tuple[str, str]] = {}
    for row in csv.reader(io.StringIO(files[record_name].decode("utf-8", "replace"))):
        if not row:
            continue
        if len(row) != 3 or row[0] in listed:
            raise WheelRefused("RECORD is malformed")
        listed[row[0]] = (row[1], row[2])
    for file_name, content in files.items():
        if file_name == record_name:
            continue
        entry = listed.get(file_name)
        if entry is None:
            raise WheelRefused(f"RECORD mismatch: {file_name!r} is not listed")
        if entry != (_b64_digest(content), str(len(content))):
            raise WheelRefused(f"RECORD mismatch: {file_name!r} differs from its hash")
    if set(listed) - set(files) - {record_name}:
        raise WheelRefused("RECORD mismatch: listed files are missing")
    return files


# installing and the registry -------------------------------------------------------------
@dataclass(frozen=True)
class Installed:
    name: str  # the form's name (entry point in group wsemail.forms)
    distribution: str
    version: str
    location: str
    publisher: str
    sha256: str
    path: str
    target: str  # module:attribute


def _registry_path(root: Path) -> Path:
    return root / "registry.json"


def registry(root: Path | None = None) -> dict[str, Installed]:
    path = _registry_path(root or plugin_dir())
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {k: Installed(**v) for k, v in raw.items()}
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"the form registry {path} is unreadable: {exc}") from exc


def _write_registry(root: Path, entries: dict[str, Installed]) -> None:
    path = _registry_path(root)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({k: asdict(v) for k, v in sorted(entries.items())}, indent=2), encoding="utf-8"
    )
    os.replace(tmp, path)


def normalized(name: str) -> str:
    """A distribution name as wheel file names spell it (PEP 427/503): runs of -_. become _,
    lower case."""
    return re.sub(r"[-_.]+", "_", name).lower()


def distribution_for(form_name: str) -> str:
    """The one distribution that may provide form `form_name`: `wsemail_<form>`."""
    return normalized(f"wsemail_{form_name}")


def _metadata_name(files: dict[str, bytes], dist_info: str) -> str:
    text = files[f"{dist_info}/METADATA"].decode("utf-8", "replace")
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first empty line
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() == "name":
            return value.strip()
    raise WheelRefused("the wheel's METADATA names no distribution")


def _check_names(checked: Verified, files: dict[str, bytes], form_name: str) -> None:
    """Form name ⇔ distribution ⇔ file name ⇔ METADATA Name (see the module doc)."""
    dist_info = f"{checked.name}-{checked.version}.dist-info"
    declared = _metadata_name(files, dist_info)
    if normalized(declared) != normalized(checked.name) or checked.name != normalized(checked.name):
        raise WheelRefused(
            f"the wheel's METADATA names {declared[:64]!r}, its file name {checked.name!r}"
        )
    if normalized(checked.name) != distribution_for(form_name):
        raise WheelRefused(
            f"form {form_name!r} comes only from distribution {distribution_for(form_name)!r},"
            f" not {checked.name!r}"
        )


def _check_upgrade(old: Installed, checked: Verified) -> None:
    """An installed form is replaced only by its own publisher and distribution."""
    if old.publisher != checked.publisher:
        raise WheelRefused(
            f"{old.name} was published by {old.publisher}, not {checked.publisher}:"
            " refusing to replace it"
        )
    if normalized(old.distribution) != normalized(checked.name):
        raise WheelRefused(f"{old.name} comes from {old.distribution}, not {checked.name}")


def _entry_point(files: dict[str, bytes], dist_info: str) -> tuple[str, str]:
    text = files.get(f"{dist_info}/entry_points.txt", b"").decode("utf-8", "replace")
    section = ""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]").strip()
        elif "=" in line and section == "wsemail.forms":
            key, _, value = line.partition("=")
            found.append((key.strip(), value.strip()))
    if len(found) != 1 or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", found[0][1]):
        raise WheelRefused("the wheel must register exactly one wsemail.forms entry point")
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", found[0][0]):
        raise WheelRefused(f"not a form name: {found[0][0][:64]!r}")
    return found[0]


def install(
    file_name: str,
    data: bytes,
    signature: bytes,
    *,
    roots: list[x509.Certificate],
    crls: list[x509.CertificateRevocationList],
    publishers: list[str],
    location: str = "",
    root: Path | None = None,
) -> Installed:
    """Verify, then install into the private plug-in folder and record it."""
    root = root or plugin_dir()
    checked = verify(file_name, data, signature, roots, crls, publishers)
    try:
        Version(checked.version)
    except InvalidVersion as exc:
        raise WheelRefused(f"bad version {checked.version!r}") from exc
    files = check_contents(data, checked.name, checked.version)
    dist_info = f"{checked.name}-{checked.version}.dist-info"
    form_name, target = _entry_point(files, dist_info)
    _check_names(checked, files, form_name)
    entries = registry(root)
    old = entries.get(form_name)
    if old is not None:
        _check_upgrade(old, checked)
    if old is not None and Version(checked.version) <= Version(old.version):
        if Version(checked.version) == Version(old.version) and old.sha256 == checked.sha256:
            return old
        raise WheelRefused(
            f"{form_name} {checked.version} is not newer than the installed {old.version}"
        )
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{checked.name}-{checked.version}"
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        for rel, content in files.items():
            dest = (staging / rel).resolve()
            if not dest.is_relative_to(staging.resolve()):
                raise WheelRefused(f"zip entry escapes the target folder: {rel!r}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    record = Installed(
        form_name,
        checked.name,
        checked.version,
        location,
        checked.publisher,
        checked.sha256,
        str(final),
        target,
    )
    entries[form_name] = record
    _write_registry(root, entries)
    return record


def check_installed(record: Installed) -> None:
    """Re-check an installed plug-in's files against its RECORD before importing them."""
    base = Path(record.path)
    dist_info = f"{record.distribution}-{record.version}.dist-info"
    try:
        rows = list(csv.reader(io.StringIO((base / dist_info / "RECORD").read_text("utf-8"))))
        for row in rows:
            if not row or row[0] == f"{dist_info}/RECORD":
                continue
            content = (base / row[0]).read_bytes()
            if (_b64_digest(content), str(len(content))) != (row[1], row[2]):
                raise WheelRefused(f"installed file {row[0]} changed since it was verified")
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise WheelRefused(f"installed plug-in {record.name} is damaged: {exc}") from exc
