"""`eval` on real engines and real Fashion-MNIST images: agreement with `infer`, compare, and every bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import assert_one_line_error
from paddlecls_q.cli import app
from paddlecls_q.config import RuntimeOptions
from paddlecls_q.datasets import load_dataset, write_fashion_mnist
from paddlecls_q.errors import ConfigError, InputError
from paddlecls_q.evaluate import EvalResult, compare, default_workers, engine_batch_size, evaluate_model
from paddlecls_q.infer import Classifier

runner = CliRunner()
ENTRY_POINT = str(Path(sys.executable).parent / "paddlecls-q")


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 real Fashion-MNIST test images as a PaddleClas folder (val_list.txt + images/test/)."""
    return write_fashion_mnist(tmp_path_factory.mktemp("eval") / "fashion", "test", limit=200).folder


@pytest.fixture(scope="module")
def tree(fashion: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 200 images as class sub-folders c0..c9 (sorted names = Fashion-MNIST ids)."""
    root = tmp_path_factory.mktemp("tree")
    for line in (fashion / "val_list.txt").read_text().splitlines():
        relative, label = line.split()
        (root / f"c{label}").mkdir(exist_ok=True)
        shutil.copy(fashion / relative, root / f"c{label}" / Path(relative).name)
    return root


def eval_cli(*args: str):
    return runner.invoke(app, ["eval", *args])


def write_list(folder: Path, lines: list[str], name: str) -> Path:
    path = folder / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


# ---- accuracy is right -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["paddle", "ort", "openvino"])
def test_eval_top1_agrees_with_infer(demo_model_dir, fashion, backend):
    dataset = load_dataset(fashion, limit=48)
    options = RuntimeOptions(backend=backend)
    result = evaluate_model(demo_model_dir, dataset, options, batch_size=16, topk=5)
    classified = Classifier(demo_model_dir, options).classify([image for image, _ in dataset.items], topk=5)
    labels = [label for _, label in dataset.items]
    assert result.predictions == [prediction.class_ids[0] for prediction in classified]
    assert result.count == 48 and result.unreadable == []
    assert result.top1 == pytest.approx(100 * np.mean([p.class_ids[0] == y for p, y in zip(classified, labels)]))
    assert result.top5 == pytest.approx(100 * np.mean([y in p.class_ids for p, y in zip(classified, labels)]))
    assert result.top1 >= 50  # trained on Fashion-MNIST: far above chance (10 %)
    assert result.engine["backend"] == backend and result.engine["batch_size"] == 16
    assert result.images_per_s > 0


def test_batch_size_does_not_change_predictions(demo_model_dir, fashion):
    dataset = load_dataset(fashion, limit=37)  # 37: the last batch is padded
    options = RuntimeOptions(backend="ort")
    one = evaluate_model(demo_model_dir, dataset, options, batch_size=1)
    many = evaluate_model(demo_model_dir, dataset, options, batch_size=8, workers=2)
    assert one.predictions == many.predictions and one.top1 == many.top1


def test_list_and_class_folders_give_the_same_accuracy(demo_model_dir, fashion, tree):
    options = RuntimeOptions(backend="ort")
    listed = evaluate_model(demo_model_dir, load_dataset(fashion), options, batch_size=32)
    foldered = evaluate_model(demo_model_dir, load_dataset(tree), options, batch_size=32)
    assert listed.count == foldered.count == 200
    assert listed.correct_top1 == foldered.correct_top1 and listed.correct_topk == foldered.correct_topk


# ---- the CLI -----------------------------------------------------------------------------------------


def test_cli_json_compare_same_model_twice_has_no_drop(demo_model_dir, fashion):
    model = str(demo_model_dir)
    result = eval_cli(
        "--model-dir",
        model,
        "--compare",
        model,
        "--data",
        str(fashion / "val_list.txt"),
        "--backend",
        "ort",
        "--limit",
        "100",
        "--batch-size",
        "16",
        "--json",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema"] == "paddlecls-q/eval" and document["version"] == 1
    assert document["data"] == {
        "path": str(fashion / "val_list.txt"),
        "layout": "list",
        "images": 100,
        "num_classes": 10,
    }
    assert document["model"]["count"] == document["compare"]["count"] == 100
    assert document["model"]["top1"] == document["compare"]["top1"]
    assert "predictions" not in document["model"]
    assert document["comparison"]["top1_drop"] == 0 and document["comparison"]["top5_drop"] == 0
    assert document["comparison"]["changed"] == [] and document["comparison"]["changed_count"] == 0
    assert document["model"]["engine"]["engine"].startswith("onnxruntime")


def test_cli_table_output(demo_model_dir, tree):
    model = str(demo_model_dir)
    result = eval_cli("--model-dir", model, "--compare", model, "--data", str(tree), "--limit", "30", "--topk", "3")
    assert result.exit_code == 0, result.output
    assert "top-1 %" in result.output and "top-3 %" in result.output
    assert "top-1 drop: +0.00 points" in result.output and "changed on 0 images" in result.output


def test_cli_registry_model_name(demo_model_dir, fashion):
    result = eval_cli("--model", "demo", "--data", str(fashion), "--limit", "10", "--backend", "openvino", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["compare"] is None


def test_installed_entry_point(demo_model_dir, fashion):
    completed = subprocess.run(
        [ENTRY_POINT, "eval", "--model-dir", str(demo_model_dir), "--data", str(fashion), "--limit", "20", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["model"]["count"] == 20


# ---- bad input -----------------------------------------------------------------------------------------


def test_label_beyond_the_model_classes_is_an_error(demo_model_dir, fashion):
    listing = write_list(fashion, ["images/test/00000.png 9", "", "images/test/00001.png 10"], "too_many_classes.txt")
    result = eval_cli("--model-dir", str(demo_model_dir), "--data", str(listing))
    assert_one_line_error(result, 2, f"{listing}:3: label 10 is out of range: the model has 10 classes (0..9)")


def test_more_class_folders_than_model_classes_is_an_error(demo_model_dir, fashion, tmp_path):
    for index in range(11):
        (tmp_path / f"class{index:02d}").mkdir()
        shutil.copy(fashion / "images/test/00000.png", tmp_path / f"class{index:02d}" / "a.png")
    result = eval_cli("--model-dir", str(demo_model_dir), "--data", str(tmp_path))
    assert_one_line_error(result, 2, "11 class sub-folders but the model has 10 classes")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["images/test/00000.png 9", "images/test/nope.png 1"], ":2: image 'images/test/nope.png' not found"),
        (["images/test/00000.png x"], ":1: label 'x' is not an integer"),
        (["images/test/00000.png -3"], ":1: label -3 is negative"),
        (["../eval0/x.png 1"], ":1: image path '../eval0/x.png' escapes the list's folder"),
        (["/tmp/x.png 1"], ":1: absolute image path '/tmp/x.png'"),
        (["", "  "], ": empty data set"),
    ],
)
def test_bad_list_is_a_one_line_error(demo_model_dir, fashion, lines, message):
    listing = write_list(fashion, lines, "bad.txt")
    assert_one_line_error(eval_cli("--model-dir", str(demo_model_dir), "--data", str(listing)), 2, message)


def test_unreadable_images_are_counted_and_strict_makes_them_fatal(demo_model_dir, fashion):
    (fashion / "images/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (fashion / "images/empty.png").write_bytes(b"")
    listing = write_list(
        fashion,
        ["images/test/00000.png 9", "images/broken.png 1", "images/test/00001.png 2", "images/empty.png 3"],
        "with_unreadable.txt",
    )
    dataset = load_dataset(listing)
    result = evaluate_model(demo_model_dir, dataset, RuntimeOptions(backend="ort"), batch_size=3)
    assert result.count == 2 and len(result.unreadable) == 2
    assert result.predictions[1] == -1 and result.predictions[3] == -1 and min(result.predictions[::2]) >= 0
    assert "broken.png" in result.unreadable[0] and "empty.png" in result.unreadable[1]

    shown = eval_cli("--model-dir", str(demo_model_dir), "--data", str(listing), "--json")
    assert shown.exit_code == 0, shown.output
    assert len(json.loads(shown.stdout)["model"]["unreadable"]) == 2

    strict = eval_cli("--model-dir", str(demo_model_dir), "--data", str(listing), "--strict")
    assert_one_line_error(strict, 2, "broken.png")
    assert "(--strict)" in strict.output

    only_broken = write_list(fashion, ["images/broken.png 1"], "only_unreadable.txt")
    result = eval_cli("--model-dir", str(demo_model_dir), "--data", str(only_broken))
    assert_one_line_error(result, 2, "none of its 1 images could be read")


def test_bad_options_and_paths(demo_model_dir, fashion, tmp_path):
    model = str(demo_model_dir)
    assert_one_line_error(eval_cli("--model-dir", model, "--data", str(tmp_path / "no")), 2, "data set not found")
    assert_one_line_error(
        eval_cli("--model-dir", str(tmp_path), "--data", str(fashion)), 2, "no Paddle inference model"
    )
    assert_one_line_error(
        eval_cli("--model-dir", model, "--data", str(fashion), "--backend", "onnx"), 2, "unknown backend"
    )
    assert_one_line_error(eval_cli("--model-dir", model, "--data", str(fashion), "--batch-size", "0"), 2, "--batch-size")
    assert_one_line_error(eval_cli("--model-dir", model, "--data", str(fashion), "--topk", "0"), 2, "--topk")


# ---- helpers -------------------------------------------------------------------------------------------


def test_batch_size_follows_the_model_and_the_backend():
    assert engine_batch_size((-1, 3, 32, 32), 32, "ort") == 32
    assert engine_batch_size((1, 3, 224, 224), 32, "openvino") == 1  # fixed batch of 1
    assert engine_batch_size((8, 3, 224, 224), 32, "paddle") == 8
    assert engine_batch_size((-1, 3, 224, 224), 64, "trt") == 32
    assert engine_batch_size((-1, 3, 224, 224), 64, "paddle-trt") == 1
    with pytest.raises(ConfigError):
        engine_batch_size((-1, 3, 32, 32), 0, "ort")


def test_default_workers_leave_the_engine_its_cores():
    assert default_workers(threads=1, cores=2) == 1
    assert default_workers(threads=2, cores=2) == 1
    assert default_workers(threads=1, cores=4) == 3
    assert default_workers(threads=4, cores=8) == 4
    assert default_workers(threads=1, cores=16) == 4  # capped: the workers share the GIL
    assert default_workers(threads=7, cores=8) == 1


def test_compare_lists_the_images_whose_top1_changed(fashion):
    dataset = load_dataset(fashion, limit=4)  # labels 9, 2, 1, 1

    def result(predictions: list[int]) -> EvalResult:
        labels = [label for _, label in dataset.items]
        readable = [(p, y) for p, y in zip(predictions, labels) if p >= 0]
        top1 = 100 * sum(p == y for p, y in readable) / len(readable)
        return EvalResult("m", top1, 100.0, len(readable), [], predictions, 1.0, {})

    reference, candidate = result([9, 2, 1, 0]), result([9, 3, -1, 1])
    comparison = compare(reference, candidate, dataset)
    assert comparison.top1_drop == pytest.approx(75 - 200 / 3)
    assert [(Path(c.image).name, c.label, c.reference, c.candidate) for c in comparison.changed] == [
        ("00001.png", 2, 2, 3),
        ("00003.png", 1, 0, 1),
    ]
    assert (comparison.now_wrong, comparison.now_right) == (1, 1)
    with pytest.raises(ValueError):
        compare(reference, result([9]), dataset)
    with pytest.raises(InputError):
        load_dataset(fashion / "missing_list.txt")


# ---- decoding in processes (engines that keep the GIL) --------------------------------------------------


def test_paddle_decodes_in_processes_with_the_same_results(demo_model_dir, fashion, monkeypatch):
    from paddlecls_q import evaluate

    (fashion / "images/truncated.png").write_bytes((fashion / "images/test/00002.png").read_bytes()[:40])
    lines = (fashion / "val_list.txt").read_text().splitlines()[:70]
    listing = write_list(fashion, [*lines[:5], "images/truncated.png 4", *lines[5:]], "with_truncated.txt")
    dataset = load_dataset(listing)
    options = RuntimeOptions(backend="paddle")
    in_threads = evaluate_model(demo_model_dir, dataset, options, batch_size=16)
    monkeypatch.setattr(evaluate, "PROCESS_MIN_IMAGES", 1)
    in_processes = evaluate_model(demo_model_dir, dataset, options, batch_size=16)
    assert in_threads.engine["decode_in"] == "threads" and in_processes.engine["decode_in"] == "processes"
    assert in_processes.predictions == in_threads.predictions and in_processes.predictions[5] == -1
    assert in_processes.unreadable == in_threads.unreadable and "truncated.png" in in_processes.unreadable[0]
    assert (in_processes.top1, in_processes.top5, in_processes.count) == (in_threads.top1, in_threads.top5, 70)
    with pytest.raises(InputError, match=r"truncated.png.*\(--strict\)"):
        evaluate_model(demo_model_dir, dataset, options, batch_size=16, strict=True)


def test_greyscale_pngs_decode_as_one_plane_with_the_same_tensor(demo_model_dir, fashion):
    from paddlecls_q.preprocess import read_image

    classifier = Classifier(demo_model_dir, RuntimeOptions(backend="ort"))
    for image, _ in load_dataset(fashion, limit=20).items:
        grey, rgb = read_image(image, grey=True), read_image(image)
        assert grey.ndim == 2 and rgb.shape == (*grey.shape, 3)
        assert np.array_equal(classifier.preprocess(grey), classifier.preprocess(rgb))


def test_models_with_different_preprocessing_get_their_own_pass(demo_model_dir, fashion, tmp_path):
    from paddlecls_q.evaluate import evaluate_models

    nearest = tmp_path / "nearest"
    shutil.copytree(demo_model_dir, nearest)
    config = (nearest / "inference_cls.yaml").read_text()
    (nearest / "inference_cls.yaml").write_text(config.replace("size: 32", "size: 32\n      interpolation: nearest"))
    dataset = load_dataset(fashion, limit=40)
    results = evaluate_models([demo_model_dir, nearest], dataset, RuntimeOptions(backend="ort"), batch_size=8)
    assert [r.engine["models_per_decode"] for r in results] == [1, 1]
    assert results[0].predictions == evaluate_model(demo_model_dir, dataset, RuntimeOptions(backend="ort")).predictions
    assert results[1].count == 40


def test_recycled_batch_arrays_do_not_mix_images(demo_model_dir, fashion):
    """Batch arrays are reused once the engine is done with them: 50 batches of 4 through a few arrays."""
    dataset = load_dataset(fashion)
    options = RuntimeOptions(backend="ort")
    result = evaluate_model(demo_model_dir, dataset, options, batch_size=4)
    classified = Classifier(demo_model_dir, options).classify([image for image, _ in dataset.items], topk=1)
    assert result.predictions == [prediction.class_ids[0] for prediction in classified]


def test_scores_counted_in_small_chunks_give_the_same_accuracy(demo_model_dir, fashion, monkeypatch):
    from paddlecls_q import evaluate

    dataset = load_dataset(fashion, limit=100)
    options = RuntimeOptions(backend="ort")
    whole = evaluate_model(demo_model_dir, dataset, options, batch_size=8, topk=3)
    monkeypatch.setattr(evaluate, "SCORES_CHUNK_BYTES", 1)  # one batch per chunk
    chunked = evaluate_model(demo_model_dir, dataset, options, batch_size=8, topk=3)
    assert chunked.predictions == whole.predictions
    assert (chunked.correct_top1, chunked.correct_topk) == (whole.correct_top1, whole.correct_topk)
    assert whole.correct_top1 < whole.correct_topk < 100  # top-3 counted, and not trivially


@pytest.mark.parametrize("total, batch, most", [(1, 4, 8), (100, 4, 8), (10_000, 32, 4), (65, 32, 1)])
def test_decoding_tasks_cover_every_item_once_starting_small(total, batch, most):
    from paddlecls_q.decoding import task_spans

    spans = list(task_spans(batch, total, most))
    assert spans[0] == (0, batch)
    assert [start for start, _ in spans] == [0, *np.cumsum([count for _, count in spans])[:-1]]
    assert spans[-1][0] < total <= spans[-1][0] + spans[-1][1]
    assert max(count for _, count in spans) <= most * batch
    assert [count for _, count in spans][:3] == [batch * min(2**i, most) for i in range(3)][: len(spans)]
