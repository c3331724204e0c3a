"""Hostile input for `download`: nothing of the user's lost, bounded time, trust recorded only when earned."""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

import pytest
from helpers import assert_one_line_error
from httpserver import build_tiny_model, make_release, serve_directory, tar_with
from typer.testing import CliRunner

from paddlecls_q.archive import ArchiveBudget, extract_archive
from paddlecls_q.cli import app
from paddlecls_q.download import MIRROR_ENV, HttpSettings, download_model, read_manifest
from paddlecls_q.errors import ConfigError, DownloadError
from paddlecls_q.registry import DEMO_MODEL_DIR

FAST = HttpSettings(connect_timeout_s=1.0, read_timeout_s=1.0, retries=1, backoff_s=0.01)
RESNET_FP32 = "ResNet50_vd_infer.tgz"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release(tmp_path_factory.mktemp("release"), build_tiny_model(tmp_path_factory.mktemp("tiny")))


@pytest.fixture
def server(release: Path):
    with serve_directory(release) as running:
        yield running


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PADDLECLS_Q_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    return tmp_path / "home"


def test_dest_never_deletes_an_existing_folder_without_force(server, tmp_path: Path):
    mine = tmp_path / "D" / "ResNet50_vd_infer" / "mine.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep me")
    with pytest.raises(DownloadError, match="already exists; not replacing it without --force"):
        download_model("ResNet50_vd", dest=tmp_path / "D", mirror=server.url, settings=FAST)
    assert mine.read_text() == "keep me"
    assert [p.name for p in mine.parent.parent.iterdir()] == ["ResNet50_vd_infer"]  # no staging left
    forced = download_model("ResNet50_vd", dest=tmp_path / "D", mirror=server.url, settings=FAST, force=True)
    assert not mine.exists() and (forced.folder / "inference.pdmodel").is_file()


@pytest.mark.parametrize("dest", ["", "   "])
def test_empty_dest_is_refused(server, dest: str):
    with pytest.raises(ConfigError, match="--dest: an empty path is not allowed"):
        download_model("ResNet50_vd", dest=dest, mirror=server.url, settings=FAST)


def test_trust_on_first_use_records_no_hash_for_an_archive_refused_as_unsafe(tmp_path: Path, home: Path):
    host = tmp_path / "host"
    host.mkdir()
    evil = tarfile.TarInfo("../escape.txt")
    evil.size = 3
    tar_with(host / RESNET_FP32, (evil, b"bad"))
    with serve_directory(host) as server:
        with pytest.raises(DownloadError, match="refusing to extract"):
            download_model("ResNet50_vd", mirror=server.url, settings=FAST)
    assert RESNET_FP32 not in read_manifest()
    assert not (home / "downloads" / RESNET_FP32).exists()


def test_a_later_good_download_is_accepted_after_a_refused_one(tmp_path: Path, release: Path, home: Path):
    host = tmp_path / "host"
    host.mkdir()
    (host / RESNET_FP32).write_bytes(b"<html>not a tarball</html>")
    with serve_directory(host) as server:
        with pytest.raises(DownloadError, match="not a readable"):
            download_model("ResNet50_vd", mirror=server.url, settings=FAST)
        (host / RESNET_FP32).write_bytes((release / RESNET_FP32).read_bytes())
        result = download_model("ResNet50_vd", mirror=server.url, settings=FAST)
    assert result.sha256_source == "tofu-recorded" and read_manifest()[RESNET_FP32]["sha256"] == result.sha256


def test_a_trickling_server_trips_the_minimum_rate(server, home: Path):
    server.fail(RESNET_FP32, "slow", "slow", "slow")
    settings = HttpSettings(
        connect_timeout_s=1.0,
        read_timeout_s=1.0,
        retries=2,
        backoff_s=0.01,
        min_rate_bytes_s=10e6,
        min_rate_window_s=0.05,
    )
    with pytest.raises(DownloadError, match="too slow: .* under the minimum"):
        download_model("ResNet50_vd", mirror=server.url, settings=settings)
    assert len(server.requests_for(RESNET_FP32)) == 1  # a trickle is not retried


@pytest.mark.parametrize(
    "bad",
    [{"retries": 1_000_000_000}, {"read_timeout_s": 1e308}, {"backoff_s": float("nan")}, {"connect_timeout_s": 0.0}],
)
def test_unbounded_retry_and_timeout_values_are_refused(bad: dict):
    with pytest.raises(ConfigError):
        HttpSettings(**bad)


def test_httpx_info_log_is_silenced(server, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO):
        download_model("ResNet50_vd", mirror=server.url, settings=FAST)
    assert not [r for r in caplog.records if r.name.startswith("httpx")]


# ---- archive budget ---------------------------------------------------------------------------------


def _zeros_tgz(path: Path, size: int) -> Path:
    import io

    info = tarfile.TarInfo("model/zeros.bin")
    info.size = size
    with tarfile.open(path, "w:gz") as bundle:
        bundle.addfile(info, io.BytesIO(bytes(size)))
    return path


def test_a_compression_bomb_is_refused_before_writing(tmp_path: Path):
    archive = _zeros_tgz(tmp_path / "bomb.tgz", 20 << 20)
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError, match=r"unpacks to \d+x its size.*--max-ratio"):
        extract_archive(archive, tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())
    extract_archive(archive, tmp_path / "out", ArchiveBudget(max_ratio=1e6))  # the flag raises the cap
    assert (tmp_path / "out" / "model" / "zeros.bin").stat().st_size == 20 << 20


def test_total_size_cap(tmp_path: Path):
    archive = _zeros_tgz(tmp_path / "big.tgz", 3 << 20)
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError, match="more than the limit of 2097152 .--max-unpacked-mb"):
        extract_archive(archive, tmp_path / "out", ArchiveBudget(max_total_bytes=2 << 20, max_ratio=1e9))


def test_too_many_members_is_refused(tmp_path: Path):
    archive = tmp_path / "many.tar"
    with tarfile.open(archive, "w") as bundle:
        for index in range(ArchiveBudget().max_members + 5):
            bundle.addfile(tarfile.TarInfo(f"m/{index}"))
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError, match="members, more than the limit of 10000 .--max-members"):
        extract_archive(archive, tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())


# ---- the cache itself: its manifest, its archives, its folder -------------------------------------------------

runner = CliRunner()


def cli_download(server, *args: str):
    return runner.invoke(app, ["download", "ResNet50_vd", "--mirror", server.url, *args])


@pytest.mark.parametrize("sha256", [123, None, ["0" * 64], "0" * 63, "z" * 64])
def test_a_bad_sha256_in_the_manifest_is_one_line(server, home: Path, sha256):
    home.mkdir(parents=True)
    entry = {"sha256": sha256, "size_bytes": 1, "url": "http://x"}
    (home / "manifest.json").write_text(json.dumps({"version": 1, "artifacts": {RESNET_FP32: entry}}))
    result = cli_download(server)
    assert_one_line_error(result, 2, f"key 'artifacts.{RESNET_FP32}.sha256'")
    assert "the download manifest; repair or delete it" in result.output
    assert not (home / "models" / "ResNet50_vd_infer").exists()


def test_a_manifest_that_is_not_json_is_one_line(server, home: Path):
    home.mkdir(parents=True)
    (home / "manifest.json").write_text("{not json")
    assert_one_line_error(cli_download(server), 2, "unreadable download manifest")


def test_a_cached_archive_that_is_a_folder_is_one_line(server, home: Path):
    (home / "downloads" / RESNET_FP32).mkdir(parents=True)
    assert_one_line_error(cli_download(server), 2, "the cached archive is not a regular file; remove it")


def test_a_home_that_is_a_file_is_one_line(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fashion_image):
    blocker = tmp_path / "home-file"
    blocker.write_text("mine")
    for home in (blocker, blocker / "sub"):
        monkeypatch.setenv("PADDLECLS_Q_HOME", str(home))
        expected = f"$PADDLECLS_Q_HOME {home}: {blocker} is not a folder"
        assert_one_line_error(cli_download(server), 2, expected)
        infer = ["infer", "--model-dir", str(DEMO_MODEL_DIR), "--image", str(fashion_image), "--backend", "ort"]
        assert_one_line_error(runner.invoke(app, infer), 2, expected)
    assert blocker.read_text() == "mine"


def test_a_read_only_home_is_one_line(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from test_download import tmpfs

    readonly = tmp_path / "readonly"
    with tmpfs(readonly, "ro,size=64k"):
        monkeypatch.setenv("PADDLECLS_Q_HOME", str(readonly / "home"))
        result = cli_download(server)
    assert_one_line_error(result, 2, f"$PADDLECLS_Q_HOME {readonly / 'home'}: {readonly} is not writable")


def test_a_home_under_proc_is_one_line_before_any_download(server, monkeypatch: pytest.MonkeyPatch):
    # root passes os.access on /proc, yet nothing can be made there: the probe folder says so up front.
    monkeypatch.setenv("PADDLECLS_Q_HOME", "/proc/paddlecls-q-home")
    assert_one_line_error(cli_download(server), 2, "$PADDLECLS_Q_HOME /proc/paddlecls-q-home: /proc is not writable")
    assert server.requests == []


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        ("size: 30000", "CropImage size must be between 1 and 8192"),
        ("size: 224", "the preprocessing makes 224x224 images but the input of"),
    ],
)
def test_a_tarball_with_a_hostile_yaml_is_refused_and_nothing_installed(tmp_path: Path, home: Path, crop: str, message: str):
    from httpserver import INFERENCE_CLS_YAML_TEXT, pack

    model = build_tiny_model(tmp_path / "model")
    (model / "inference_cls.yaml").write_text(INFERENCE_CLS_YAML_TEXT.replace("size: 32", crop))
    host = tmp_path / "host"
    host.mkdir()
    pack(host / RESNET_FP32, model, "ResNet50_vd_infer")
    with serve_directory(host) as server:
        with pytest.raises(DownloadError, match=f"unpacks to an unusable inference_cls.yaml .*{message}"):
            download_model("ResNet50_vd", mirror=server.url, settings=FAST)
    assert not (home / "models" / "ResNet50_vd_infer").exists() and list((home / "models").iterdir()) == []
    assert RESNET_FP32 not in read_manifest()
