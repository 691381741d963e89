"""Tests for llm_from_scratch.assets: downloads against a local HTTP server, offline copies from a tiny wheel.

Nothing here touches the internet: the HTTP server runs on 127.0.0.1 inside the test,
and pip is pointed at a folder with a wheel built by the test (PIP_NO_INDEX).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import socket
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llm_from_scratch import assets
from llm_from_scratch.assets import (
    AssetUnavailableError,
    DownloadError,
    PackageSourceError,
    Source,
    VerificationError,
    cache_dir,
    download,
    fetch_from_package,
    load_from_sources,
    offline_mode,
)

PAYLOAD = bytes(range(256)) * 40  # 10 240 bytes, every byte value, so off-by-one errors show
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder and the default (online) mode."""
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LLMFS_OFFLINE", raising=False)


# --------------------------------------------------------------------------------------
# A tiny HTTP server that supports Range requests (and can misbehave on purpose)
# --------------------------------------------------------------------------------------


@dataclass
class ServerState:
    payload: bytes = PAYLOAD
    honour_range: bool = True  # False: behave like servers that ignore Range
    cut_after: int | None = None  # send only this many body bytes, then hang up
    range_headers: list[str | None] = field(default_factory=list)  # one entry per request


def make_handler(state: ServerState) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the name http.server expects
            range_header = self.headers.get("Range")
            state.range_headers.append(range_header)
            if self.path != "/file.bin":
                self.send_error(404, "Not Found")
                return
            payload = state.payload
            if range_header and state.honour_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
                if start >= len(payload):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(payload)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = payload[start:]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
            else:
                body = payload
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_after is not None:
                body = body[: state.cut_after]
                self.close_connection = True
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    return Handler


@pytest.fixture
def server():
    state = ServerState()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/file.bin"
    yield state
    httpd.shutdown()
    httpd.server_close()


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------


def test_cache_dir_follows_env_and_creates_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path / "elsewhere"))
    path = cache_dir("a", "b")
    assert path == tmp_path / "elsewhere" / "a" / "b"
    assert path.is_dir()


def test_cache_dir_default_is_in_home(monkeypatch, tmp_path):
    monkeypatch.delenv("LLMFS_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "llm-from-scratch"


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_offline_mode_reads_env(monkeypatch, value, expected):
    monkeypatch.setenv("LLMFS_OFFLINE", value)
    assert offline_mode() is expected


# --------------------------------------------------------------------------------------
# download()
# --------------------------------------------------------------------------------------


def test_download_writes_verified_file_and_no_part_file(server, tmp_path):
    dest = tmp_path / "out" / "file.bin"
    result = download(server.url, dest, sha256=PAYLOAD_SHA256, expected_size=len(PAYLOAD))
    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("file.bin.part").exists()
    assert server.range_headers == [None]


def test_download_is_instant_when_file_exists_and_verifies(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(PAYLOAD)
    download(server.url, dest, sha256=PAYLOAD_SHA256)
    assert server.range_headers == []  # the server was never asked


def test_download_replaces_an_existing_file_that_fails_its_check(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"old version")
    download(server.url, dest, sha256=PAYLOAD_SHA256)
    assert dest.read_bytes() == PAYLOAD


def test_sha256_mismatch_deletes_the_file_and_says_so(server, tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(VerificationError, match="sha256 is .* expected 0+.*deleted"):
        download(server.url, dest, sha256="0" * 64)
    assert not dest.exists()
    assert not dest.with_name("file.bin.part").exists()


def test_size_mismatch_is_an_error(server, tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(VerificationError, match=f"size is {len(PAYLOAD)} bytes, expected 5"):
        download(server.url, dest, expected_size=5)
    assert not dest.exists()


def test_partial_file_is_resumed_with_a_range_request(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD[:1000])
    download(server.url, dest, sha256=PAYLOAD_SHA256)
    assert server.range_headers == ["bytes=1000-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_that_ignores_range_makes_us_start_over(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD[:1000])
    download(server.url, dest, sha256=PAYLOAD_SHA256)
    assert server.range_headers == ["bytes=1000-"]  # we asked, it sent everything
    assert dest.read_bytes() == PAYLOAD  # and we did not append the whole file to the partial


def test_resumed_file_that_fails_verification_is_downloaded_again(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(b"x" * 1000)  # a partial of some other file
    download(server.url, dest, sha256=PAYLOAD_SHA256)
    assert server.range_headers == ["bytes=1000-", None]
    assert dest.read_bytes() == PAYLOAD


def test_interrupted_download_keeps_the_part_and_the_next_run_resumes(server, tmp_path):
    dest = tmp_path / "file.bin"
    part = dest.with_name("file.bin.part")
    server.cut_after = 3000
    with pytest.raises(DownloadError, match="run again to resume"):
        download(server.url, dest, sha256=PAYLOAD_SHA256)
    assert not dest.exists()  # never a half-written file under the real name
    assert part.read_bytes() == PAYLOAD[:3000]

    server.cut_after = None
    download(server.url, dest, sha256=PAYLOAD_SHA256)
    assert server.range_headers[-1] == "bytes=3000-"
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()


def test_complete_part_file_is_finished_without_downloading_again(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD)
    download(server.url, dest, sha256=PAYLOAD_SHA256, expected_size=len(PAYLOAD))
    assert server.range_headers == []
    assert dest.read_bytes() == PAYLOAD


def test_http_error_names_status_and_url(server, tmp_path):
    missing_url = server.url.replace("file.bin", "missing.bin")
    with pytest.raises(DownloadError, match=r"HTTP 404 .*missing\.bin"):
        download(missing_url, tmp_path / "missing.bin")
    assert not (tmp_path / "missing.bin").exists()


def test_unreachable_server_is_a_download_error(tmp_path):
    with socket.socket() as probe:  # find a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot reach"):
        download(f"http://127.0.0.1:{port}/file.bin", tmp_path / "file.bin", timeout=5)


# --------------------------------------------------------------------------------------
# load_from_sources() and AssetUnavailableError
# --------------------------------------------------------------------------------------


def _fail(message: str):
    def load():
        raise OSError(message)

    return load


def test_first_working_source_wins():
    calls = []
    sources = [
        Source("broken", _fail("nope")),
        Source("works", lambda: calls.append("works") or "value"),
        Source("never tried", lambda: calls.append("never")),
    ]
    assert load_from_sources("thing", sources, how_to_fix=[]) == "value"
    assert calls == ["works"]


def test_offline_mode_skips_online_sources(monkeypatch):
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    sources = [
        Source("web", lambda: "from the web", online_only=True),
        Source("copy", lambda: "offline copy"),
    ]
    assert load_from_sources("thing", sources, how_to_fix=[]) == "offline copy"


def test_unavailable_error_lists_every_attempt_and_the_fixes(monkeypatch):
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    sources = [Source("the web", lambda: "x", online_only=True), Source("a package", _fail("pip said no"))]
    with pytest.raises(AssetUnavailableError) as caught:
        load_from_sources("the demo file", sources, how_to_fix=["set DEMO_PATH"])
    message = str(caught.value)
    assert "Could not get the demo file" in message
    assert "1. the web" in message and "skipped because LLMFS_OFFLINE=1" in message
    assert "2. a package" in message and "OSError: pip said no" in message
    assert "set DEMO_PATH" in message
    assert isinstance(caught.value, RuntimeError)
    assert [source for source, _ in caught.value.attempts] == ["the web", "a package"]


# --------------------------------------------------------------------------------------
# fetch_from_package()
# --------------------------------------------------------------------------------------


def build_wheel(folder: Path, name: str = "llmfs_demo_asset", version: str = "1.0") -> Path:
    """A minimal but valid wheel carrying one data file."""
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "")
        archive.writestr(f"{name}/data/hello.txt", "hello from a wheel\n")
        archive.writestr(
            f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        archive.writestr(
            f"{dist_info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return wheel


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """Make pip look only in a local folder (holding our wheel) instead of PyPI."""
    links = tmp_path / "links"
    links.mkdir()
    build_wheel(links)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # ignore machine-wide pip settings
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def test_fetch_from_package_extracts_member_with_pip(local_index):
    path = fetch_from_package("llmfs-demo-asset==1.0", "llmfs_demo_asset/data/hello.txt")
    assert path.read_text() == "hello from a wheel\n"
    assert (
        path == cache_dir("package-files", "llmfs_demo_asset-1.0") / "llmfs_demo_asset" / "data" / "hello.txt"
    )
    assert (cache_dir("packages") / "llmfs_demo_asset-1.0-py3-none-any.whl").is_file()


def test_fetch_from_package_is_cached(local_index, monkeypatch):
    first = fetch_from_package("llmfs-demo-asset==1.0", "llmfs_demo_asset/data/hello.txt")

    def pip_must_not_run(*args, **kwargs):
        raise AssertionError("pip ran although the archive is cached")

    monkeypatch.setattr(assets.subprocess, "run", pip_must_not_run)
    assert fetch_from_package("llmfs-demo-asset==1.0", "llmfs_demo_asset/data/hello.txt") == first
    first.unlink()  # the archive is cached even when the extracted file is gone
    assert (
        fetch_from_package("llmfs-demo-asset==1.0", "llmfs_demo_asset/data/hello.txt").read_text()
        == "hello from a wheel\n"
    )


def test_missing_member_error_shows_what_the_archive_has(local_index):
    with pytest.raises(
        PackageSourceError, match=r"no file 'llmfs_demo_asset/hello.txt'.*llmfs_demo_asset/data/hello.txt"
    ):
        fetch_from_package("llmfs-demo-asset==1.0", "llmfs_demo_asset/hello.txt")


def test_pip_failure_is_explained(local_index):
    with pytest.raises(PackageSourceError) as caught:
        fetch_from_package("llmfs-no-such-package==9.9", "x.txt")
    message = str(caught.value)
    assert "pip download llmfs-no-such-package==9.9" in message
    assert "No matching distribution" in message or "Could not find" in message
    assert str(cache_dir("packages")) in message  # tells where to put the archive by hand
    assert not any(cache_dir("packages").iterdir())  # nothing half-written left behind


def test_sdist_member_is_found_below_its_top_folder():
    sdist = cache_dir("packages") / "demo-sdist-2.0.tar.gz"
    data = b"inside an sdist"
    with tarfile.open(sdist, "w:gz") as archive:
        info = tarfile.TarInfo("demo-sdist-2.0/pkg/data.bin")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    # Already in the cache, so pip is not needed.
    path = fetch_from_package("demo-sdist==2.0", "pkg/data.bin")
    assert path.read_bytes() == data
    assert path == cache_dir("package-files", "demo-sdist-2.0") / "pkg" / "data.bin"


def test_member_path_may_not_escape_the_cache():
    with pytest.raises(ValueError, match="relative path"):
        fetch_from_package("anything==1.0", "../../etc/passwd")
