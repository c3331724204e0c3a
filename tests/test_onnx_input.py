"""ONNX FP32 model folders (`inference.onnx` + `inference_cls.yaml`) in infer, eval and bench, and every bad ONNX file.

The ONNX models are the bundled demo model exported by paddle2onnx (runtime/convert.py; it outputs
logits) and the same graph with a Softmax appended (it outputs probabilities); bad ones are edits of
small hand-built graphs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from helpers import assert_one_line_error
from paddlecls_q.cli import app
from paddlecls_q.datasets import write_fashion_mnist
from paddlecls_q.errors import PaddleClsQError
from paddlecls_q.model_files import find_model_files
from paddlecls_q.runtime.convert import onnx_model_for, paddle_to_onnx
from test_real_models import IMAGENET_SAMPLE, MODEL_DIR, needs_data, needs_model

runner = CliRunner()
ONNX_BACKENDS = ["ort", "openvino"]


def make_onnx_folder(folder: Path, model: onnx.ModelProto | bytes, source: Path, name: str = "inference.onnx") -> Path:
    """A model folder: the ONNX file plus the preprocessing yaml (and labels) of the Paddle model `source`."""
    folder.mkdir(parents=True)
    for extra in ("inference_cls.yaml", "label_list.txt"):
        if (source / extra).is_file():
            shutil.copy(source / extra, folder / extra)
    (folder / name).write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return folder


def with_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph ending in Softmax over the classes: it outputs probabilities."""
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    output = edited.graph.output[0].name
    for node in edited.graph.node:
        node.output[:] = [f"{output}_logits" if name == output else name for name in node.output]
    edited.graph.node.append(helper.make_node("Softmax", [f"{output}_logits"], [output], axis=1))
    onnx.checker.check_model(edited)
    return edited


@pytest.fixture(scope="module")
def exported(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    files = find_model_files(demo_model_dir)
    return onnx.load(paddle_to_onnx(files.program, files.params, tmp_path_factory.mktemp("export") / "demo.onnx"))


@pytest.fixture(scope="module")
def variants(exported: onnx.ModelProto, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx_models")
    return {
        "logits": make_onnx_folder(root / "logits", exported, demo_model_dir),
        "softmax": make_onnx_folder(root / "softmax", with_softmax(exported), demo_model_dir, name="model.onnx"),
    }


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 real Fashion-MNIST test images with their val_list.txt."""
    return write_fashion_mnist(tmp_path_factory.mktemp("data") / "fashion", "test", limit=24).folder


def run_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, *(["--format", "json"] if args[0] == "bench" else ["--json"])])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def paddle_predictions(demo_model_dir: Path, fashion: Path) -> list[dict]:
    return run_json("infer", "--model-dir", str(demo_model_dir), "--image", str(fashion / "images"), "--backend",
                    "paddle", "--topk", "10")["predictions"]


# ---- what the folder is -------------------------------------------------------------------------------------


def test_model_files_say_the_format_and_hash_the_onnx_file(variants: dict[str, Path], demo_model_dir: Path) -> None:
    logits, softmax = find_model_files(variants["logits"]), find_model_files(variants["softmax"])
    assert (logits.format, softmax.format, find_model_files(demo_model_dir).format) == ("onnx", "onnx", "paddle")
    assert logits.program == logits.params == variants["logits"] / "inference.onnx"
    assert softmax.program.name == "model.onnx"
    assert not logits.is_quantized and not logits.legacy_format
    assert logits.content_hash() == find_model_files(variants["logits"]).content_hash() != softmax.content_hash()
    for backend in ("ort", "openvino", "trt"):  # every ONNX engine, TensorRT included, reads the same file
        assert onnx_model_for(logits, backend) == logits.program


def test_the_two_variants_really_differ(variants: dict[str, Path]) -> None:
    import onnxruntime as ort

    batch = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    sums = {}
    for name, folder in variants.items():
        session = ort.InferenceSession(str(find_model_files(folder).program))
        sums[name] = session.run(None, {session.get_inputs()[0].name: batch})[0].sum(axis=1)
    assert np.allclose(sums["softmax"], 1, atol=1e-5)
    assert not np.allclose(sums["logits"], 1, atol=1e-2)


# ---- infer, eval, bench -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["logits", "softmax"])
@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_infer_scores_are_the_paddle_models_probabilities(
    variants: dict[str, Path], fashion: Path, paddle_predictions: list[dict], backend: str, variant: str
) -> None:
    ours = run_json("infer", "--model-dir", str(variants[variant]), "--image", str(fashion / "images"), "--backend",
                    backend, "--topk", "10")["predictions"]
    assert len(ours) == len(paddle_predictions) == 24
    for mine, reference in zip(ours, paddle_predictions):
        assert mine["image"] == reference["image"]
        assert mine["class_ids"][0] == reference["class_ids"][0]
        by_class = dict(zip(reference["class_ids"], reference["scores"]))
        assert max(abs(score - by_class[c]) for c, score in zip(mine["class_ids"], mine["scores"])) <= 1e-5
        assert abs(sum(mine["scores"]) - 1) <= 1e-5
        assert mine["labels"][0] == reference["labels"][0] != ""


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_eval_top1_equals_the_paddle_models(variants: dict[str, Path], demo_model_dir: Path, fashion: Path,
                                            backend: str) -> None:
    data = str(fashion / "val_list.txt")
    reference = run_json("eval", "--data", data, "--model-dir", str(demo_model_dir), "--backend", "paddle")["model"]
    for folder in variants.values():
        model = run_json("eval", "--data", data, "--model-dir", str(folder), "--backend", backend)["model"]
        assert (model["count"], model["correct_top1"]) == (24, reference["correct_top1"])
        assert model["correct_top1"] >= 18  # the demo model is ~90 % right on Fashion-MNIST


def test_bench_runs_the_onnx_engines_and_says_why_not_paddle(variants: dict[str, Path]) -> None:
    document = run_json("bench", "--model-dir", str(variants["softmax"]), "--iters", "3", "--warmup", "1",
                        "--modes", "fp32")
    cells = {cell["backend"]: cell for cell in document["results"][0]["cells"]}
    assert cells["paddle"]["status"] == "n/a"
    assert "is an ONNX model" in cells["paddle"]["reason"]
    for backend in ONNX_BACKENDS:
        assert (cells[backend]["status"], cells[backend]["runtime_ms"]["count"]) == ("ok", 3), cells[backend]
        assert cells[backend]["engine"]["model"] == str(variants["softmax"] / "model.onnx")
    assert cells["ort"]["top1_class"] == cells["openvino"]["top1_class"]
    assert abs(cells["ort"]["top1_score"] - cells["openvino"]["top1_score"]) <= 1e-5


# ---- what can't run, and bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(("backend", "device"), [("paddle", "cpu"), ("paddle-trt", "gpu")])
def test_paddle_backends_refuse_an_onnx_model(variants: dict[str, Path], fashion_image: Path, backend: str,
                                              device: str) -> None:
    result = runner.invoke(app, ["infer", "--model-dir", str(variants["logits"]), "--image", str(fashion_image),
                                 "--backend", backend, "--device", device])
    assert_one_line_error(result, 2, "is an ONNX model; use --backend ort|openvino|trt")
    assert "inference.onnx" in result.output


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed: test_gpu.py runs it")
def test_trt_without_tensorrt_is_one_line(variants: dict[str, Path], fashion_image: Path) -> None:
    result = runner.invoke(app, ["infer", "--model-dir", str(variants["logits"]), "--image", str(fashion_image),
                                 "--backend", "trt"])
    assert_one_line_error(result, 2, "TensorRT")


def tiny_model(
    input_shape: list | None = None,
    input_type: int = TensorProto.FLOAT,
    output_shape: list | None = None,
    opset: int = 13,
    second_input: bool = False,
) -> onnx.ModelProto:
    """A one-node classifier-shaped graph (checker-valid); each argument breaks one rule."""
    inputs = [helper.make_tensor_value_info("x", input_type, input_shape or ["N", 3, 32, 32])]
    node = helper.make_node("Identity", ["x"], ["y"])
    if second_input:
        inputs.append(helper.make_tensor_value_info("mask", input_type, ["N", 3, 32, 32]))
        node = helper.make_node("Add", ["x", "mask"], ["y"])
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape or ["N", 10])
    model = helper.make_model(helper.make_graph([node], "tiny", inputs, [output]),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def without_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    del model.graph.output[:]
    return model


def test_the_tiny_model_itself_is_accepted(tmp_path: Path, demo_model_dir: Path) -> None:
    assert find_model_files(make_onnx_folder(tmp_path / "m", tiny_model(), demo_model_dir)).format == "onnx"


BAD_MODELS = {
    "not ONNX": (lambda exported: b"Global:\n  model_dir: this is a yaml file\n", "not an ONNX model"),
    "empty": (lambda exported: b"", "empty file"),
    "truncated": (lambda exported: exported.SerializeToString()[:300_000], "not an ONNX model, or a truncated one"),
    "two inputs": (lambda exported: tiny_model(second_input=True), "one image input, this model has 2 ('x', 'mask')"),
    "3-D input": (lambda exported: tiny_model(input_shape=["N", 3, 32]), "shape [N, 3, 32]; a classifier takes NCHW"),
    "NHWC input": (lambda exported: tiny_model(input_shape=["N", 32, 32, 3]), "shape [N, 32, 32, 3]"),
    "uint8 input": (lambda exported: tiny_model(input_type=TensorProto.UINT8), "input 'x' is uint8"),
    "opset 30": (lambda exported: tiny_model(opset=30), "has opset 30; the engines here load opsets 7.."),
    "opset 6": (lambda exported: tiny_model(opset=6), "has opset 6"),
    "4-D output": (lambda exported: tiny_model(output_shape=["N", 10, 1, 1]), "outputs [N, classes]"),
    "no output": (lambda exported: without_outputs(tiny_model()), "the graph has no output"),
    "unknown input type": (lambda exported: tiny_model(input_type=99), "input 'x' is element type 99"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
@pytest.mark.parametrize("command", ["infer", "eval", "bench"])
def test_bad_onnx_model_is_one_line_exit_2_and_writes_nothing(
    case: str, command: str, exported: onnx.ModelProto, demo_model_dir: Path, fashion: Path, fashion_image: Path,
    tmp_path: Path,
) -> None:
    build, message = BAD_MODELS[case]
    folder = make_onnx_folder(tmp_path / "bad", build(exported), demo_model_dir)
    before = sorted(tmp_path.rglob("*"))
    arguments = {
        "infer": ["--image", str(fashion_image)],
        "eval": ["--data", str(fashion / "val_list.txt")],
        "bench": ["--iters", "2", "--warmup", "0", "--modes", "fp32", "--output", str(tmp_path / "bench.md")],
    }[command]
    result = runner.invoke(app, [command, "--model-dir", str(folder), *arguments])
    assert_one_line_error(result, 2, message)
    assert str(folder / "inference.onnx") in " ".join(result.output.split())
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(("backend", "message"), [("ort", "Mystery"), ("openvino", "com.example.Mystery")])
def test_an_op_the_engine_lacks_is_one_line(demo_model_dir: Path, fashion_image: Path, tmp_path: Path, backend: str,
                                            message: str) -> None:
    model = tiny_model()
    model.graph.node[0].CopyFrom(helper.make_node("Mystery", ["x"], ["y"], domain="com.example"))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    folder = make_onnx_folder(tmp_path / "custom", model, demo_model_dir)
    result = runner.invoke(app, ["infer", "--model-dir", str(folder), "--image", str(fashion_image), "--backend", backend])
    assert_one_line_error(result, 2, "could not")
    assert message in result.output and str(folder / "inference.onnx") in " ".join(result.output.split())


def test_every_truncation_of_a_real_model_is_refused(exported: onnx.ModelProto, demo_model_dir: Path,
                                                     tmp_path: Path) -> None:
    data = exported.SerializeToString()
    folder = make_onnx_folder(tmp_path / "cut", b"", demo_model_dir)
    for cut in [1, 16, 100, *range(1000, len(data), len(data) // 40), len(data) - 8, len(data) - 1]:
        (folder / "inference.onnx").write_bytes(data[:cut])
        with pytest.raises(PaddleClsQError, match="inference.onnx"):
            find_model_files(folder)


def test_external_weights_are_refused(exported: onnx.ModelProto, demo_model_dir: Path, tmp_path: Path) -> None:
    folder = make_onnx_folder(tmp_path / "external", b"", demo_model_dir)
    model = onnx.ModelProto()
    model.CopyFrom(exported)  # saving with external data edits the model it is given
    onnx.save_model(model, folder / "inference.onnx", save_as_external_data=True, location="weights.bin",
                    size_threshold=0, convert_attribute=True)
    assert (folder / "weights.bin").stat().st_size > 800_000
    with pytest.raises(PaddleClsQError, match="external data files are not supported"):
        find_model_files(folder)


def test_eval_label_beyond_the_models_classes_is_one_line(variants: dict[str, Path], fashion: Path) -> None:
    lines = (fashion / "val_list.txt").read_text().splitlines()[:3]
    val_list = fashion / "bad_labels.txt"
    val_list.write_text("".join(f"{line.split()[0]} {label}\n" for line, label in zip(lines, (1, 10, 2))))
    result = runner.invoke(app, ["eval", "--data", str(val_list), "--model-dir", str(variants["logits"])])
    assert_one_line_error(result, 2, "label 10 is out of range: the model has 10 classes")
    assert "bad_labels.txt" in result.output


# ---- the real ImageNet MobileNetV2 as an ONNX folder -------------------------------------------------------


@pytest.mark.slow
@needs_model
@needs_data
def test_real_mobilenet_v2_as_onnx_keeps_its_top1(tmp_path: Path) -> None:
    files = find_model_files(MODEL_DIR)
    folder = tmp_path / "MobileNetV2_onnx"
    folder.mkdir()
    paddle_to_onnx(files.program, files.params, folder / "inference.onnx")
    for extra in ("inference_cls.yaml", "label_list.txt"):
        if (MODEL_DIR / extra).is_file():
            shutil.copy(MODEL_DIR / extra, folder / extra)
    for backend in ONNX_BACKENDS:
        model = run_json("eval", "--data", str(IMAGENET_SAMPLE / "val_list.txt"), "--model-dir", str(folder),
                         "--backend", backend, "--threads", "2")["model"]
        assert (backend, model["count"], model["correct_top1"]) == (backend, 900, 746)  # 82.89, as the Paddle model


# ---- quantize an ONNX model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized_onnx(variants: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`quantize` (PTQ, the minimal config) of the logits ONNX folder on 64 Fashion-MNIST train images."""
    import yaml

    root = tmp_path_factory.mktemp("onnx_ptq")
    images = write_fashion_mnist(root / "train", "train", limit=64).folder / "images"
    config = root / "quantize.yaml"
    config.write_text(yaml.safe_dump({"Global": {"model_dir": str(variants["logits"]), "ptq_image_path": str(images),
                                                 "output_dir": str(root / "int8")}}))
    result = runner.invoke(app, ["quantize", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return root / "int8"


def test_quantize_ptq_of_an_onnx_model_keeps_its_top1_on_both_engines(
    quantized_onnx: Path, variants: dict[str, Path], fashion: Path
) -> None:
    files = find_model_files(quantized_onnx)
    assert files.format == "onnx" and files.is_quantized
    report = json.loads((quantized_onnx / "quantize_report.json").read_text())
    assert report["images_used"] == 64 and "paddle" not in report["encodings"]
    assert report["encodings"]["ort"]["quantizer"].startswith("onnxruntime")
    assert report["encodings"]["trt"]["activations"] == "int8 symmetric per-tensor"
    for name in ("inference.ort.onnx", "inference.openvino.onnx", "inference.trt.onnx", "inference_cls.yaml"):
        assert (quantized_onnx / name).is_file()
    for backend in ONNX_BACKENDS:
        data = str(fashion / "val_list.txt")
        fp32 = run_json("eval", "--data", data, "--model-dir", str(variants["logits"]), "--backend", backend)["model"]
        int8 = run_json("eval", "--data", data, "--model-dir", str(quantized_onnx), "--backend", backend)["model"]
        assert int8["count"] == 24 and abs(fp32["correct_top1"] - int8["correct_top1"]) <= 2


def test_an_onnx_model_is_not_trained_with_qat_and_the_int8_folder_refuses_paddle(
    quantized_onnx: Path, variants: dict[str, Path], tmp_path: Path, fashion_image: Path
) -> None:
    config = tmp_path / "qat.yaml"
    config.write_text(f"Global:\n  model_dir: {variants['logits']}\n  qat_image_path: {fashion_image.parent}\n")
    result = runner.invoke(app, ["quantize", "--config", str(config), "--method", "qat"])
    assert_one_line_error(result, 2, "QAT trains a Paddle program")
    result = runner.invoke(app, ["infer", "--model-dir", str(quantized_onnx), "--image", str(fashion_image),
                                 "--backend", "paddle"])
    assert_one_line_error(result, 2, "is an ONNX model")
