"""`paddlecls_q.download` and `paddlecls-q download` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from httpserver import build_tiny_model, make_release, pack, serve_directory, tar_with
from typer.testing import CliRunner

from paddlecls_q.archive import extract_archive
from paddlecls_q.cli import app
from paddlecls_q.download import MIRROR_ENV, HttpSettings, download_model, manifest_path, read_manifest, resolve_url
from paddlecls_q.errors import DownloadError
from paddlecls_q.model_files import INFERENCE_CLS_YAML, find_model_files
from paddlecls_q.registry import DEFAULT_HOST, model_dir

FAST = HttpSettings(connect_timeout_s=1.0, read_timeout_s=1.0, retries=2, backoff_s=0.01)
RESNET_FP32 = "ResNet50_vd_infer.tgz"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    return make_release(tmp_path_factory.mktemp("release"), tiny_model)


@pytest.fixture(scope="session")
def big_release(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """Archives of ~200 kB, bigger than the 64 kB disks of the disk-full tests."""
    return make_release(tmp_path_factory.mktemp("big_release"), tiny_model, padding_bytes=200_000)


@pytest.fixture
def server(release: Path):
    with serve_directory(release) as running:
        yield running


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PADDLECLS_Q_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    return tmp_path / "home"


def get(server, name: str = "ResNet50_vd", **options):
    return download_model(name, mirror=server.url, settings=FAST, **options)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@contextmanager
def tmpfs(path: Path, options: str):
    """Mount a small tmpfs (needs root and CAP_SYS_ADMIN); skip the test where that is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
    mounted = subprocess.run(command, check=False, capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs in this sandbox: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


# ---- normal use -----------------------------------------------------------------------------------


def test_download_unpacks_into_the_cache_and_second_run_is_a_verified_no_op(server, home: Path, release: Path):
    result = get(server)
    assert result.folder == model_dir("ResNet50_vd") == home / "models" / "ResNet50_vd_infer"
    assert result.action == "downloaded"
    find_model_files(result.folder)
    assert (result.folder / INFERENCE_CLS_YAML).is_file()
    assert result.archive.read_bytes() == (release / RESNET_FP32).read_bytes()
    assert result.sha256_source == "tofu-recorded"
    assert read_manifest()[RESNET_FP32]["sha256"] == result.sha256 == sha256(release / RESNET_FP32)
    assert tree(home / "models") == tree(result.folder.parent) and os.listdir(home / "models") == ["ResNet50_vd_infer"]
    assert os.listdir(home / "downloads") == [RESNET_FP32]

    again = get(server)
    assert (again.action, again.sha256_source) == ("cached", "tofu-verified")
    assert len(server.requests_for(RESNET_FP32)) == 1

    forced = get(server, force=True)
    assert forced.action == "downloaded"
    assert len(server.requests_for(RESNET_FP32)) == 2
    find_model_files(forced.folder)


def test_dest_puts_the_folder_under_the_given_directory(server, tmp_path: Path, home: Path):
    result = get(server, dest=tmp_path / "elsewhere")
    assert result.folder == tmp_path / "elsewhere" / "ResNet50_vd_infer"
    find_model_files(result.folder)
    assert not (home / "models" / "ResNet50_vd_infer").exists()


def test_removed_folder_is_unpacked_again_from_the_verified_archive(server):
    first = get(server)
    shutil.rmtree(first.folder)
    again = get(server)
    assert again.action == "unpacked"
    find_model_files(again.folder)
    assert len(server.requests_for(RESNET_FP32)) == 1


# ---- network faults -------------------------------------------------------------------------------


def test_dropped_connection_is_resumed_with_range(server, release: Path):
    server.fail(RESNET_FP32, "drop")
    result = get(server)
    first, second = server.requests_for(RESNET_FP32)
    half = len((release / RESNET_FP32).read_bytes()) // 2
    assert "range" not in first
    assert second["range"] == f"bytes={half}-"
    assert result.archive.read_bytes() == (release / RESNET_FP32).read_bytes()


def test_server_ignoring_range_makes_the_download_start_over(server, release: Path):
    server.fail(RESNET_FP32, "drop", "ignore_range")
    result = get(server)
    assert "range" in server.requests_for(RESNET_FP32)[1]
    assert result.archive.read_bytes() == (release / RESNET_FP32).read_bytes()


def test_body_shorter_than_content_length_is_resumed(server, release: Path):
    server.fail(RESNET_FP32, "truncate")
    result = get(server)
    assert len(server.requests_for(RESNET_FP32)) == 2
    assert result.archive.read_bytes() == (release / RESNET_FP32).read_bytes()


def test_server_that_always_cuts_the_body_fails_clearly(server, home: Path):
    server.fail(RESNET_FP32, "empty", "empty", "empty")
    with pytest.raises(DownloadError, match=rf"{server.url}/{RESNET_FP32}: .*gave up after 3 attempts"):
        get(server)
    assert not (home / "models" / "ResNet50_vd_infer").exists()
    assert not (home / "downloads" / RESNET_FP32).exists()


def test_404_fails_at_once(server):
    server.fail(RESNET_FP32, 404)
    with pytest.raises(DownloadError, match=rf"{RESNET_FP32}: HTTP 404"):
        get(server)
    assert len(server.requests_for(RESNET_FP32)) == 1


def test_500_is_retried_then_fails(server, home: Path):
    server.fail(RESNET_FP32, 500, 500, 500)
    with pytest.raises(DownloadError, match=r"HTTP 500 .*gave up after 3 attempts"):
        get(server)
    assert len(server.requests_for(RESNET_FP32)) == 3
    assert not (home / "models" / "ResNet50_vd_infer").exists()


def test_500_then_success(server):
    server.fail(RESNET_FP32, 500)
    find_model_files(get(server).folder)
    assert len(server.requests_for(RESNET_FP32)) == 2


def test_stalled_server_times_out_quickly(server, home: Path):
    server.fail(RESNET_FP32, "stall", "stall", "stall")
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"timed out \(connect 1 s, read 1 s\).*run again to resume"):
        get(server)
    assert time.monotonic() - started < 10
    assert not (home / "models" / "ResNet50_vd_infer").exists()


def test_unreachable_host_fails_clearly():
    settings = HttpSettings(connect_timeout_s=1.0, read_timeout_s=1.0, retries=1, backoff_s=0.01)
    with pytest.raises(DownloadError, match=r"http://127.0.0.1:9/ResNet50_vd_infer.tgz: network error"):
        download_model("ResNet50_vd", mirror="http://127.0.0.1:9", settings=settings)


# ---- integrity ------------------------------------------------------------------------------------


def test_sha256_mismatch_deletes_the_download_and_fails(server, home: Path):
    with pytest.raises(DownloadError, match=r"sha256 mismatch \(expected 0{64}"):
        get(server, sha256="0" * 64)
    assert os.listdir(home / "downloads") == []
    assert not (home / "models" / "ResNet50_vd_infer").exists()


def test_pinned_sha256_is_accepted(server, release: Path):
    result = get(server, sha256=sha256(release / RESNET_FP32).upper())
    assert result.sha256_source == "pinned"


def test_tofu_detects_a_tampered_cached_archive(server, home: Path):
    first = get(server)
    with first.archive.open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(DownloadError, match=r"cached file does not match the recorded \(trust on first use\) sha256"):
        get(server)
    assert not first.archive.exists()
    again = get(server)  # fetched again and checked against the recorded hash
    assert (again.action, again.sha256_source, again.sha256) == ("downloaded", "tofu-verified", first.sha256)


def test_tofu_detects_a_changed_file_on_the_server(tmp_path: Path, release: Path, home: Path):
    shutil.copytree(release, tmp_path / "host")
    with serve_directory(tmp_path / "host") as server:
        get(server)
        with (tmp_path / "host" / RESNET_FP32).open("ab") as handle:
            handle.write(b"\0" * 512)
        with pytest.raises(DownloadError, match="sha256 mismatch"):
            get(server, force=True)
    assert not (home / "downloads" / (RESNET_FP32 + ".part")).exists()
    # --force deletes the verified cached archive only once a new one has verified: it is still there.
    assert sha256(home / "downloads" / RESNET_FP32) == read_manifest()[RESNET_FP32]["sha256"]


def test_archive_that_is_not_a_model_leaves_nothing_that_looks_complete(tmp_path: Path, tiny_model: Path, home: Path):
    host = tmp_path / "host"
    host.mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README").write_text("no model here")
    pack(host / RESNET_FP32, tmp_path / "empty", "ResNet50_vd_infer")
    (host / "MobileNetV1_ssld_infer.tgz").write_bytes(b"not a tarball at all")
    with serve_directory(host) as server:
        with pytest.raises(DownloadError, match="does not unpack to a loadable model"):
            get(server)
        with pytest.raises(DownloadError, match="not a readable .tar, .tgz or .zip archive"):
            get(server, "MobileNetV1_ssld")
    assert os.listdir(home / "models") == []


# ---- safe extraction ------------------------------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info


def _malicious(kind: str, folder: Path) -> Path:
    outside = folder / "outside"
    if kind == "zip-dotdot":
        with zipfile.ZipFile(folder / "evil.zip", "w") as bundle:
            bundle.writestr("model/ok.txt", "fine")
            bundle.writestr("../evil.txt", "escaped")
        return folder / "evil.zip"
    members = {
        "dotdot": [(_member("model/../../evil.txt"), b"escaped")],
        "absolute": [(_member(str(outside / "abs-evil.txt")), b"escaped")],
        "symlink-escape": [
            (_member("model/link", tarfile.SYMTYPE, "../../outside"), None),
            (_member("model/link/evil.txt"), b"escaped"),
        ],
        "symlink-absolute": [(_member("model/link", tarfile.SYMTYPE, str(outside)), None)],
        "hardlink-escape": [(_member("model/hard", tarfile.LNKTYPE, "../outside/victim.txt"), None)],
        "device": [(_member("model/null", tarfile.CHRTYPE), None)],
    }[kind]
    return tar_with(folder / "evil.tar", (_member("model/ok.txt"), b"fine"), *members)


@pytest.mark.parametrize(
    "kind", ["dotdot", "absolute", "symlink-escape", "symlink-absolute", "hardlink-escape", "device", "zip-dotdot"]
)
def test_malicious_archives_are_refused_and_write_nothing(tmp_path: Path, kind: str):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.txt").write_text("keep me")
    archive = _malicious(kind, tmp_path)
    destination = tmp_path / "dest" / "a" / "b"
    destination.mkdir(parents=True)
    before = tree(tmp_path)
    with pytest.raises(DownloadError, match=rf"{archive}: refusing to extract member"):
        extract_archive(archive, destination)
    assert tree(tmp_path) == before
    assert list(destination.iterdir()) == []
    assert (tmp_path / "outside" / "victim.txt").read_text() == "keep me"


def test_malicious_tarball_from_the_server_leaves_no_model(tmp_path: Path, home: Path):
    host = tmp_path / "host"
    host.mkdir()
    tar_with(host / RESNET_FP32, (_member("ResNet50_vd_infer/../../evil.txt"), b"escaped"))
    with serve_directory(host) as server, pytest.raises(DownloadError, match="refusing to extract member"):
        get(server)
    assert os.listdir(home / "models") == []
    assert not (home / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("suffix", [".tar", ".tgz", ".tar.gz", ".zip"])
def test_every_archive_format_unpacks(tmp_path: Path, tiny_model: Path, suffix: str):
    archive = pack(tmp_path / f"model{suffix}", tiny_model, "model")
    (tmp_path / "dest").mkdir()
    extract_archive(archive, tmp_path / "dest")
    find_model_files(tmp_path / "dest" / "model")


def test_links_inside_the_archive_are_allowed(tmp_path: Path):
    archive = tar_with(
        tmp_path / "ok.tar",
        (_member("model/labels.txt"), b"0 a\n"),
        (_member("model/sub/labels.txt", tarfile.SYMTYPE, "../labels.txt"), None),
        (_member("model/copy.txt", tarfile.LNKTYPE, "model/labels.txt"), None),
    )
    (tmp_path / "dest").mkdir()
    extract_archive(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "model" / "sub" / "labels.txt").read_text() == "0 a\n"
    assert (tmp_path / "dest" / "model" / "copy.txt").read_text() == "0 a\n"


# ---- the local disk -------------------------------------------------------------------------------


def test_destination_under_a_regular_file_fails_clearly(server, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DownloadError, match=rf"{blocker}/models: cannot create folder: Not a directory"):
        get(server, dest=blocker / "models")


def test_read_only_destination_fails_clearly(server, tmp_path: Path):
    readonly = tmp_path / "readonly"
    with tmpfs(readonly, "ro,size=64k"), pytest.raises(DownloadError, match=rf"{readonly}: cannot write: Read-only"):
        get(server, dest=readonly)


def test_disk_full_while_downloading(big_release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with tmpfs(tmp_path / "small", "size=64k") as small, serve_directory(big_release) as server:
        monkeypatch.setenv("PADDLECLS_Q_HOME", str(small))
        with pytest.raises(DownloadError, match=rf"{RESNET_FP32}.part failed: No space left on device"):
            get(server)
        assert os.listdir(small / "downloads") == []  # the partial file is removed to give the space back
        assert os.listdir(small / "models") == []


def test_disk_full_while_unpacking(big_release: Path, tmp_path: Path):
    with tmpfs(tmp_path / "small", "size=64k") as small, serve_directory(big_release) as server:
        with pytest.raises(DownloadError, match=r"extracting into .* failed: No space left on device"):
            get(server, dest=small)
        assert os.listdir(small) == []  # no half-unpacked model folder


def test_file_size_limit_fails_clearly(big_release: Path, home: Path):
    """Disk full without a mount: RLIMIT_FSIZE in a subprocess makes writes fail with EFBIG."""
    code = textwrap.dedent(
        """
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        from paddlecls_q.download import HttpSettings, download_model
        from paddlecls_q.errors import DownloadError
        try:
            download_model("ResNet50_vd", mirror=sys.argv[1], settings=HttpSettings(1, 1, 0, 0))
        except DownloadError as error:
            print(error, file=sys.stderr)
            sys.exit(error.exit_code)
        """
    )
    with serve_directory(big_release) as server:
        done = subprocess.run(
            [sys.executable, "-c", code, server.url], check=False, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 4, done.stderr
    assert "File too large" in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(home / "models") == []


# ---- concurrency ----------------------------------------------------------------------------------


def test_concurrent_downloads_of_one_model_do_not_corrupt_the_cache(server, release: Path, home: Path):
    server.fail(RESNET_FP32, "slow")
    start = threading.Barrier(2)
    results, errors = [], []

    def worker() -> None:
        start.wait()
        try:
            results.append(get(server))
        except Exception as error:  # noqa: BLE001  (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(r.action for r in results) == ["cached", "downloaded"]
    assert len(server.requests_for(RESNET_FP32)) == 1
    assert (home / "downloads" / RESNET_FP32).read_bytes() == (release / RESNET_FP32).read_bytes()
    find_model_files(home / "models" / "ResNet50_vd_infer")
    assert os.listdir(home / "models") == ["ResNet50_vd_infer"]
    assert json.loads(manifest_path().read_text())["artifacts"][RESNET_FP32]["sha256"] == results[0].sha256


# ---- mirrors and the quantized config -------------------------------------------------------------


def test_resolve_url_replaces_only_the_default_host(tmp_path: Path):
    url = f"{DEFAULT_HOST}/ResNet50_vd_infer.tgz"
    assert resolve_url(url, "http://mirror.local/models/") == "http://mirror.local/models/ResNet50_vd_infer.tgz"
    assert resolve_url(url, str(tmp_path)) == f"{tmp_path.as_uri()}/ResNet50_vd_infer.tgz"
    assert resolve_url("https://example.com/x.tgz", "http://mirror.local") == "https://example.com/x.tgz"
    assert resolve_url(url) == url


def test_mirror_from_the_environment_with_a_file_url(release: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(MIRROR_ENV, release.as_uri())
    result = download_model("MobileNetV1_ssld")
    assert result.url == f"{release.as_uri()}/MobileNetV1_ssld_infer.tgz"
    assert result.folder == model_dir("MobileNetV1_ssld")
    find_model_files(result.folder)


def test_missing_file_on_a_file_mirror(tmp_path: Path):
    with pytest.raises(DownloadError, match=r"file://.*/ResNet50_vd_infer.tgz: file not found"):
        download_model("ResNet50_vd", mirror=tmp_path.as_uri())


def test_quantized_folder_gets_inference_cls_yaml_from_the_fp32_tarball(server):
    result = get(server, quantized=True)
    fp32_folder = model_dir("ResNet50_vd")
    assert result.folder == model_dir("ResNet50_vd", quantized=True)
    assert result.copied_from_fp32 == (INFERENCE_CLS_YAML, "labels.txt")
    assert (result.folder / INFERENCE_CLS_YAML).read_bytes() == (fp32_folder / INFERENCE_CLS_YAML).read_bytes()
    assert (result.folder / "labels.txt").read_bytes() == (fp32_folder / "labels.txt").read_bytes()
    assert len(server.requests_for(RESNET_FP32)) == 1
    assert get(server, quantized=True).action == "cached"


def test_quantized_folder_with_its_own_yaml_does_not_fetch_fp32(server):
    result = get(server, "MobileNetV1_ssld", quantized=True)
    assert result.copied_from_fp32 == ()
    assert server.requests_for("MobileNetV1_ssld_infer.tgz") == []


# ---- the command line -----------------------------------------------------------------------------


def test_cli_download_json(server, home: Path):
    result = CliRunner().invoke(app, ["download", "MobileNetV1_ssld", "--all", "--mirror", server.url, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["schema"], document["version"]) == ("paddlecls-q/download", 1)
    assert [(m["variant"], m["action"]) for m in document["models"]] == [
        ("fp32", "downloaded"),
        ("quantized", "downloaded"),
    ]
    assert document["models"][1]["folder"] == str(model_dir("MobileNetV1_ssld", quantized=True))
    assert all(m["trust_on_first_use"] for m in document["models"])


def test_cli_human_summary_says_trust_on_first_use(server):
    result = CliRunner().invoke(app, ["download", "ResNet50_vd", "--quantized", "--mirror", server.url])
    assert result.exit_code == 0, result.output
    assert "trust on first use" in result.stdout
    assert "copied inference_cls.yaml, labels.txt from the FP32 model" in result.stdout


def test_cli_error_is_one_line_with_exit_code_4(server):
    server.fail(RESNET_FP32, 404)
    result = CliRunner().invoke(app, ["download", "ResNet50_vd", "--mirror", server.url, "--retries", "0"])
    assert result.exit_code == 4
    assert result.stderr.strip() == f"error: {server.url}/{RESNET_FP32}: HTTP 404 Not Found"


def test_cli_rejects_two_variant_flags():
    result = CliRunner().invoke(app, ["download", "ResNet50_vd", "--fp32", "--quantized"])
    assert result.exit_code == 2
    assert "choose one of --quantized, --fp32, --all" in result.stderr


def test_entry_point_exit_code(server):
    server.fail(RESNET_FP32, 500)
    command = [sys.executable, "-m", "paddlecls_q", "download", "ResNet50_vd", "--mirror", server.url, "--retries", "0"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stderr
    assert "HTTP 500" in done.stderr and "Traceback" not in done.stderr


def test_download_then_infer_finds_the_cached_quantized_model(server, home: Path):
    runner = CliRunner()
    downloaded = runner.invoke(app, ["download", "ResNet50_vd", "--quantized", "--mirror", server.url, "--json"])
    assert downloaded.exit_code == 0, downloaded.output
    photo = Path(__file__).parent / "data" / "images" / "ILSVRC2012_val_00000010.jpeg"
    result = runner.invoke(
        app, ["infer", "--model", "ResNet50_vd", "--quantized", "--image", str(photo), "--backend", "ort", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["model_dir"] == str(model_dir("ResNet50_vd", quantized=True))
    prediction = document["predictions"][0]
    # The yaml (copied from the FP32 tarball) names labels.txt, whose names the prediction carries.
    assert len(prediction["class_ids"]) == 5 and prediction["labels"][0] == f"class_{prediction['class_ids'][0]}"
