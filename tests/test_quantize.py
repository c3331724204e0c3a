"""`quantize`: PaddleSlim PTQ and distillation QAT from one YAML config, on the bundled demo model, real engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from paddlecls_q.cli.app import app
from paddlecls_q.config import load_quantize_config
from paddlecls_q.errors import AccuracyBudgetError, ConfigError
from paddlecls_q.model_files import find_model_files
from paddlecls_q.quantize.onnx_ptq import layer_name
from quantize_support import partials, ptq_config, write_config

runner = CliRunner()
# The shared fixtures (demo_model, fashion, bad_input) live in tests/quantize_support.py.
pytest_plugins = ["quantize_support"]
REPO = Path(__file__).resolve().parents[1]

# FastDeploy's tools/common_tools/auto_compression/configs/classification/mobilenetv1_ssld_quant.yaml,
# verbatim apart from the three paths.
FASTDEPLOY_CONFIG = """\
Global:
  model_dir: {model_dir}
  format: 'paddle'
  model_filename: inference.pdmodel
  params_filename: inference.pdiparams
  qat_image_path: {images}
  ptq_image_path: {images}
  input_list: ['input']
  qat_preprocess: cls_image_preprocess
  ptq_preprocess: cls_image_preprocess
  qat_batch_size: 32

Distillation:
  alpha: 1.0
  loss: l2
  node:
  - softmax_0.tmp_0


QuantAware:
  use_pact: true
  activation_bits: 8
  is_full_quantize: false
  onnx_format: True
  activation_quantize_type: moving_average_abs_max
  weight_quantize_type: channel_wise_abs_max
  not_quant_pattern:
  - skip_quant
  quantize_op_types:
  - conv2d
  - depthwise_conv2d
  weight_bits: 8


TrainConfig:
  train_iter: 5000
  learning_rate:
    type: CosineAnnealingDecay
    learning_rate: 0.015
    T_max: 8000
  optimizer_builder:
    optimizer:
      type: Momentum
    weight_decay: 0.00002
  origin_metric: 0.70898


PTQ:
  calibration_method: 'avg'   # option: avg, abs_max, hist, KL, mse
  skip_tensor_list: None
"""


@pytest.fixture(scope="module")
def ptq_run(demo_model: Path, fashion: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One real PTQ run with accuracy on all three CPU engines, shared by the checks below."""
    from paddlecls_q.quantize import quantize

    work = tmp_path_factory.mktemp("ptq")
    data = ptq_config(
        demo_model,
        fashion / "images" / "train",
        work / "int8",
        accuracy={"eval_list": str(fashion / "val_list.txt"), "max_drop": 100.0, "limit": 200},
    )
    report = quantize(load_quantize_config(write_config(work, data)))
    return work / "int8", report.to_dict()


# ---- PTQ end to end -----------------------------------------------------------------------------


@pytest.mark.slow
def test_ptq_writes_a_complete_deployable_folder(ptq_run: tuple[Path, dict[str, Any]], demo_model: Path) -> None:
    output, report = ptq_run
    assert sorted(p.name for p in output.iterdir()) == [
        "inference.openvino.onnx",
        "inference.ort.onnx",
        "inference.pdiparams",
        "inference.pdmodel",
        "inference.trt.onnx",
        "inference_cls.yaml",
        "label_list.txt",
        "quantize_report.json",
    ]
    # The FP32 folder's preprocessing config and labels are copied, byte for byte.
    assert (output / "inference_cls.yaml").read_bytes() == (demo_model / "inference_cls.yaml").read_bytes()
    assert (output / "label_list.txt").read_bytes() == (demo_model / "label_list.txt").read_bytes()
    files = find_model_files(output)
    assert files.is_quantized and files.legacy_format
    assert partials(output) == []
    on_disk = json.loads((output / "quantize_report.json").read_text())
    assert on_disk["schema"] == "paddlecls-q/quantize-report" and on_disk["method"] == "ptq"
    assert on_disk["images_used"] == 64 and on_disk["images_found"] == 400
    assert on_disk["packages"]["paddleslim"] == "2.6.0"
    assert on_disk["wall_seconds"] > 0 and on_disk["stage_seconds"]["ptq"] > 0
    assert on_disk["sizes_bytes"]["int8_params"] < on_disk["sizes_bytes"]["fp32_params"] / 2
    assert on_disk["config"]["PTQ"]["calibration_images"] == 64
    # ONNX Runtime's quantizer writes the ONNX engines' file: every conv and fc of the demo model.
    assert on_disk["quantized_layers"] == on_disk["encodings"]["ort"]["quantized_layers"] >= 27
    assert on_disk["encodings"]["ort"]["quantizer"].startswith("onnxruntime")
    assert on_disk["encodings"]["ort"]["weight_range_reason"].startswith("auto: this CPU")


@pytest.mark.slow
def test_ptq_accuracy_is_measured_on_every_cpu_engine(ptq_run: tuple[Path, dict[str, Any]]) -> None:
    _, report = ptq_run
    accuracy = report["accuracy"]
    assert [row["engine"] for row in accuracy["engines"]] == ["paddle", "ort", "openvino"]
    for row in accuracy["engines"]:
        assert row["count"] == 200
        assert row["fp32_top1"] > 70
        assert abs(row["drop"]) <= 3.0, row
    assert accuracy["within_budget"] and accuracy["int8_engine_spread"] <= 3.0


@pytest.mark.slow
def test_each_engine_gets_its_encoding_and_the_runtime_picks_it_up(ptq_run: tuple[Path, dict[str, Any]]) -> None:
    import onnx
    from onnx import numpy_helper

    from paddlecls_q.config import RuntimeOptions
    from paddlecls_q.runtime import create_runtime

    output, report = ptq_run
    # PTQ: ONNX Runtime's quantizer writes the file of both ONNX engines (ORT's copy sums its last residual Add
    # in float, onnx_ptq.write_onnx_runtime_file): uint8 asymmetric activations,
    # int8 per-channel weights, 7-bit on a CPU without VNNI (auto).
    reduced = "7-bit range" in report["encodings"]["ort"]["weights"]
    for engine in ("ort", "openvino"):
        model = onnx.load(str(output / f"inference.{engine}.onnx"))
        initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        quantizers = [node for node in model.graph.node if node.op_type == "QuantizeLinear"]
        assert quantizers and {str(initializers[n.input[2]].dtype) for n in quantizers} == {"uint8"}
        # Weights are int8 initializers read by a DequantizeLinear, not float weights behind a QuantizeLinear.
        assert all(node.input[0] not in initializers for node in quantizers)
        weights = [
            initializers[n.input[0]]
            for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in initializers and initializers[n.input[0]].ndim == 4
        ]
        assert len(weights) == 27 and all(w.dtype == np.int8 for w in weights)
        # 7-bit except the depthwise convs (one input channel per group), which cannot saturate.
        dense = [w for w in weights if w.shape[1] > 1]
        assert dense and max(int(np.abs(w.astype(np.int32)).max()) for w in dense) <= (64 if reduced else 127)
        assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights if w.shape[1] == 1) > 64
        files = find_model_files(output)
        runtime = create_runtime(files, RuntimeOptions(backend=engine))
        assert Path(runtime.onnx_path) == output / f"inference.{engine}.onnx"
    assert report["encodings"]["openvino"]["quantizer"] == report["encodings"]["ort"]["quantizer"]


@pytest.mark.slow
def test_paddle_runs_a_cnns_classifier_in_fp32(ptq_run: tuple[Path, dict[str, Any]], fashion: Path, tmp_path: Path) -> None:
    """oneDNN runs every op type it can in INT8 except a CNN's one dense layer, the classifier (its output is the
    logits); a model with more dense layers keeps them all in INT8. Our op list is exactly oneDNN's default."""
    import paddle
    from paddle import inference

    from paddlecls_q.config import RuntimeOptions
    from paddlecls_q.datasets import load_dataset
    from paddlecls_q.infer import Classifier
    from paddlecls_q.preprocess import read_image
    from paddlecls_q.runtime.paddle_backend import ONEDNN_DENSE_OPS, ONEDNN_INT8_OPS, onednn_int8_ops

    output, _ = ptq_run
    files = find_model_files(output)
    assert files.dense_layers == 1 and onednn_int8_ops(files) == ONEDNN_INT8_OPS - ONEDNN_DENSE_OPS
    classifier = Classifier(output, RuntimeOptions(backend="paddle", threads=1))
    assert classifier.runtime.engine_info()["int8_ops"] == "all but the classifier (fc in FP32)"
    images = [read_image(path) for path, _ in load_dataset(fashion).items[:64]]
    batch = classifier.preprocess.batch(images)

    def predictor_scores(ops: set[str] | None) -> np.ndarray:
        config = inference.Config(str(files.program), str(files.params))
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(1)
        config.disable_glog_info()
        if ops is None:
            config.enable_mkldnn_int8()
        else:
            config.enable_mkldnn_int8(ops)
        predictor = inference.create_predictor(config)
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(batch.shape)
        handle.copy_from_cpu(batch)
        predictor.run()
        return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

    ours = classifier.runtime.infer(batch)
    assert np.array_equal(ours, predictor_scores(set(onednn_int8_ops(files) or ())))
    assert np.array_equal(predictor_scores(set(ONEDNN_INT8_OPS)), predictor_scores(None))  # the list is complete
    assert not np.array_equal(ours, predictor_scores(None))  # the fc did change: it no longer runs in INT8
    classifier.runtime.close()

    paddle.enable_static()
    try:
        program, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(program, startup):
            image = paddle.static.data("x", [-1, 3, 8, 8], "float32")
            hidden = paddle.static.nn.fc(paddle.flatten(image, 1), 16)
            logits = paddle.static.nn.fc(hidden, 4)
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup)
        paddle.static.save_inference_model(str(tmp_path / "two_fc" / "inference"), [image], [logits], executor, program=program)
    finally:
        paddle.disable_static()
    two = find_model_files(tmp_path / "two_fc")
    assert two.dense_layers == 2 and onednn_int8_ops(two) is None


@pytest.mark.slow
def test_paddle_weights_of_convs_with_signed_input_are_even_without_vnni(
    ptq_run: tuple[Path, dict[str, Any]], demo_model: Path
) -> None:
    """Without VNNI oneDNN halves the int8 weights of a conv whose input is signed: PTQ rounds those weights
    once from FP32 to even integers (±127 at each channel's maximum); the other convs keep PaddleSlim's."""
    import paddle

    from paddlecls_q.environment import vnni_flags

    output, report = ptq_run
    encoding = report["encodings"]["paddle"]
    assert encoding["weights"].startswith("int8 per-channel") and encoding["weight_range_reason"].startswith("auto: ")
    if vnni_flags():
        assert encoding["even_grid_layers"] == []
        return
    paddle.enable_static()
    executor = paddle.static.Executor(paddle.CPUPlace())
    scopes = {}
    for name, folder in (("fp32", demo_model), ("int8", output)):
        scopes[name] = paddle.static.Scope()
        with paddle.static.scope_guard(scopes[name]):
            program, _, _ = paddle.static.load_inference_model(str(folder / "inference"), executor)
    paddle.disable_static()
    ops = program.global_block().ops
    first_conv = next(op for op in ops if op.type == "conv2d")
    even = encoding["even_grid_layers"]
    assert first_conv.input("Filter")[0].startswith(tuple(even))  # it reads the image: signed
    for op in ops:
        if op.type not in ("conv2d", "depthwise_conv2d"):
            continue
        dequantize = next(o for o in ops if op.input("Filter")[0] in o.output_arg_names)
        name = dequantize.input("X")[0]
        integers = np.array(scopes["int8"].find_var(name).get_tensor()).astype(np.int64)
        if name in even:
            assert np.all((integers % 2 == 0) | (np.abs(integers) == 127)), name
            weights = np.array(scopes["fp32"].find_var(name).get_tensor())
            scale = np.array(scopes["int8"].find_var(dequantize.input("Scale")[0]).get_tensor()).reshape(-1, 1, 1, 1)
            # one rounding: at most half a 7-bit step from the FP32 weight
            assert np.all(np.abs(weights - integers * scale / 127) <= scale / 127 + 1e-6)
        else:
            assert np.any(integers % 2 == 1), name  # PaddleSlim's 8-bit integers, untouched
    assert len(even) < sum(op.type in ("conv2d", "depthwise_conv2d") for op in ops)


@pytest.mark.slow
def test_full_range_weights_warn_on_a_cpu_without_vnni(
    ptq_run: tuple[Path, dict[str, Any]], demo_model: Path, fashion: Path, fashion_image: Path, tmp_path: Path
) -> None:
    """A folder quantized for a VNNI CPU (`PTQ.weight_range: full`, what `auto` picks there) warns in one line when
    an engine loads it on a CPU without VNNI, where its weights saturate or are rounded again; `auto` never warns."""
    import warnings

    from paddlecls_q.config import RuntimeOptions
    from paddlecls_q.environment import vnni_flags
    from paddlecls_q.infer import Classifier

    output = tmp_path / "full"
    config = write_config(
        tmp_path,
        ptq_config(demo_model, fashion / "images" / "train", output, PTQ={"weight_range": "full", "calibration_images": 32}),
    )
    result = CliRunner().invoke(app, ["quantize", "--config", str(config)])
    assert result.exit_code == 0, result.output
    encodings = json.loads((output / "quantize_report.json").read_text())["encodings"]
    default_folder, default_report = ptq_run
    for engine in ("paddle", "ort", "openvino"):
        assert encodings[engine]["full_range_weights"] is True
        assert default_report["encodings"][engine]["full_range_weights"] is bool(vnni_flags())
        for folder, expected in ((output, not vnni_flags()), (default_folder, False)):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                Classifier(folder, RuntimeOptions(backend=engine, threads=1)).runtime.close()
            texts = [str(w.message) for w in caught if "full-range int8 weights" in str(w.message)]
            assert len(texts) == int(expected), (engine, folder, texts)
            assert all(f"encodings.{engine}" in text and "PTQ.weight_range: reduced" in text for text in texts)
    cli = subprocess.run(
        [sys.executable, "-m", "paddlecls_q", "infer", "--model-dir", str(output), "--image", str(fashion_image), "--backend", "ort"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    warned = [line for line in cli.stderr.splitlines() if "full-range int8 weights" in line]
    assert len(warned) == int(not vnni_flags()) and all(line.startswith("warning: ") for line in warned)


def test_the_tensorrt_file_quantizes_only_layer_inputs_and_computes_the_same_model(
    ptq_run: tuple[Path, dict[str, Any]], fashion: Path
) -> None:
    """inference.trt.onnx (TensorRT's Q/DQ placement) on the real PTQ output, run by ONNX Runtime with
    Q/DQ as written: its top classes agree with the ORT file's on real images."""
    import onnx
    import onnxruntime as ort

    from paddlecls_q.qdq_tensorrt import LAYER_OPS

    output, report = ptq_run
    model = onnx.load(str(output / "inference.trt.onnx"))
    producers = {name: node for node in model.graph.node for name in node.output}
    initializers = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear",) and node.input[0] not in initializers:
            assert any(c.op_type == "DequantizeLinear" for c in model.graph.node if node.output[0] in c.input)
    # Layers with quantized weights (the demo's classifier MatMul stays float in every file).
    layers = [
        node
        for node in model.graph.node
        if node.op_type in LAYER_OPS and node.input[1] in producers and producers[node.input[1]].op_type == "DequantizeLinear"
    ]
    float_inputs = [(node.op_type, node.input[0]) for node in layers if producers[node.input[0]].op_type != "DequantizeLinear"]
    assert float_inputs == [], float_inputs
    assert all(producers.get(name) is None or producers[name].op_type != "DequantizeLinear" for name in [o.name for o in model.graph.output])
    summary = report["encodings"]["trt"]
    assert summary["layer_input_qdq"] == len(layers) == summary["per_channel_weights"] == 27 and not summary["problems"]
    from paddlecls_q.config import load_inference_cls_yaml
    from paddlecls_q.preprocess import build_preprocessor, read_image

    preprocess = build_preprocessor(load_inference_cls_yaml(output / "inference_cls.yaml"))
    images = sorted((fashion / "images" / "test").glob("*.png"))[:64]
    batch = preprocess.batch([read_image(path) for path in images])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # Q/DQ as written, as TensorRT reads them
    results = []
    for engine in ("openvino", "trt"):
        session = ort.InferenceSession(str(output / f"inference.{engine}.onnx"), options, providers=["CPUExecutionProvider"])
        results.append(session.run(None, {session.get_inputs()[0].name: batch})[0])
    generic, tensorrt = results
    cosine = (generic * tensorrt).sum(1) / np.linalg.norm(generic, axis=1) / np.linalg.norm(tensorrt, axis=1)
    assert cosine.mean() > 0.999 and cosine.min() > 0.99
    assert (generic.argmax(1) == tensorrt.argmax(1)).mean() >= 0.95


@pytest.mark.slow
def test_uint8_and_int8_encodings_compute_the_same_model(ptq_run: tuple[Path, dict[str, Any]], fashion: Path) -> None:
    """Symmetric int8 (s, 0) and uint8 (s, 128) are one grid: run on ONNX Runtime itself, the two files
    (which differ only in how the signed image input is encoded) compute the same logits."""
    import onnxruntime as ort

    from paddlecls_q.config import load_inference_cls_yaml
    from paddlecls_q.preprocess import build_preprocessor, read_image

    output, _ = ptq_run
    preprocess = build_preprocessor(load_inference_cls_yaml(output / "inference_cls.yaml"))
    images = sorted((fashion / "images" / "test").glob("*.png"))[:64]
    batch = preprocess.batch([read_image(path) for path in images])
    results = []
    for engine in ("ort", "openvino"):
        session = ort.InferenceSession(str(output / f"inference.{engine}.onnx"), providers=["CPUExecutionProvider"])
        results.append(session.run(None, {session.get_inputs()[0].name: batch})[0])
    uint8, int8 = results
    cosine = (uint8 * int8).sum(1) / np.linalg.norm(uint8, axis=1) / np.linalg.norm(int8, axis=1)
    assert cosine.mean() > 0.999 and cosine.min() > 0.99
    assert (uint8.argmax(1) == int8.argmax(1)).mean() >= 0.95


# ---- QAT ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_qat_distills_into_a_complete_folder(demo_model: Path, fashion: Path, tmp_path: Path) -> None:
    import onnx
    from paddle.base.proto import framework_pb2

    from paddlecls_q import qdq_onnx
    from paddlecls_q.quantize import quantize

    data = {
        "Global": {
            "model_dir": str(demo_model),
            "qat_image_path": str(fashion / "images" / "train"),
            "qat_batch_size": 16,
            "output_dir": str(tmp_path / "qat"),
            "keep_fp32_layers": ["conv2d_0.w_0"],
        },
        "Distillation": {"loss": "l2"},
        "QuantAware": {"use_pact": False},
        "TrainConfig": {"train_iter": 4, "train_images": 64, "learning_rate": 0.0001},
    }
    report = quantize(load_quantize_config(write_config(tmp_path, data)))
    output = tmp_path / "qat"
    assert report.method == "qat" and report.train_iterations == 4 and report.images_used == 64
    assert report.final_distillation_loss is not None and np.isfinite(report.final_distillation_loss)
    assert {"inference.pdmodel", "inference_cls.yaml", "inference.ort.onnx", "inference.openvino.onnx"} <= {
        p.name for p in output.iterdir()
    }
    assert (output / "inference_cls.yaml").read_bytes() == (demo_model / "inference_cls.yaml").read_bytes()
    files = find_model_files(output)
    assert files.is_quantized
    # BatchNorm was folded into the convs before training: nothing left to drift in train mode.
    program = framework_pb2.ProgramDesc.FromString(files.program.read_bytes())
    assert not [op for op in program.blocks[0].ops if op.type == "batch_norm"]
    # The layer kept in FP32 has float weights in the Paddle program and in every ONNX file.
    first = next(op for op in program.blocks[0].ops if "conv2d_0.w_0" in [a for s in op.inputs for a in s.arguments])
    assert first.type == "conv2d"
    assert report.quantized_layers == 26
    for engine in ("ort", "openvino"):
        layers = qdq_onnx.quantized_layers(onnx.load(str(output / f"inference.{engine}.onnx")))
        assert len(layers) == 26 and "conv2d_0.w_0" not in layers


# ---- FastDeploy's config format ------------------------------------------------------------------


@pytest.mark.slow
def test_a_fastdeploy_config_runs_unchanged(
    demo_model: Path, fashion: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mobilenetv1_ssld_quant.yaml"
    path.write_text(
        FASTDEPLOY_CONFIG.format(model_dir=demo_model, images=fashion / "images" / "train"), encoding="utf-8"
    )
    config = load_quantize_config(path)
    assert config.PTQ.skip_tensor_list == () and config.TrainConfig.learning_rate.type == "CosineAnnealingDecay"
    with pytest.raises(ConfigError, match="pass --method"):
        config.resolve_method(None)

    # PTQ with FastDeploy's spelling of the method; with no PTQ.calibration_images every image in the folder is used.
    result = runner.invoke(
        app, ["quantize", "--config", str(path), "--method", "PTQ", "--output", str(tmp_path / "ptq")]
    )
    assert result.exit_code == 0, result.output
    assert "input_list names 'input'" in result.output
    assert "calibrating on all 400 images" in result.output
    assert json.loads((tmp_path / "ptq" / "quantize_report.json").read_text())["images_used"] == 400

    # QAT with the same file: PACT, cosine schedule, Momentum, weight decay, a distillation node that the
    # model lacks (it falls back to the last layer). Only the iteration count is cut, for the test's sake.
    import paddleslim.auto_compression.compressor as compressor

    from paddlecls_q.quantize import quantize

    # PaddleSlim's quant-aware rewrite drops the program's LR scheduler; quantize re-attaches it.
    schedulers: list[str] = []
    start_train = compressor.AutoCompression._start_train

    def spy(self: Any, train: Any, test: Any, strategy: Any, train_config: Any) -> Any:
        program = getattr(train.program, "_program", train.program)
        schedulers.append(type(getattr(program, "lr_scheduler", None)).__name__)
        return start_train(self, train, test, strategy, train_config)

    monkeypatch.setattr(compressor.AutoCompression, "_start_train", spy)
    short = config.model_copy(update={"TrainConfig": config.TrainConfig.model_copy(update={"train_iter": 2})})
    report = quantize(short, "QAT", tmp_path / "qat")
    assert schedulers == ["CosineAnnealingDecay"]
    assert report.train_iterations == 2
    assert any("Distillation.node" in warning for warning in report.warnings)
    assert find_model_files(tmp_path / "qat").is_quantized


# ---- atomicity ----------------------------------------------------------------------------------


def _start_cli(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "paddlecls_q", "quantize", "--config", str(config), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
        # Ctrl-C as a terminal delivers it: under `nohup ... &` (a background CI job) SIGINT arrives ignored, the
        # CLI rightly leaves an ignored SIGINT alone, and the interrupt test would wait for a run of 100,000 steps.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_until_working(process: subprocess.Popen[str], output: Path, timeout: float = 120.0) -> None:
    """Until the run is training inside its hidden temporary folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        if any((partial / "work0" / "qat").exists() for partial in partials(output)):
            time.sleep(2.0)
            return
        time.sleep(0.2)
    process.kill()
    pytest.fail("quantize never started training")


@pytest.fixture()
def long_qat_config(demo_model: Path, fashion: Path, tmp_path: Path) -> tuple[Path, Path]:
    output = tmp_path / "int8"
    data = {
        "Global": {
            "model_dir": str(demo_model),
            "qat_image_path": str(fashion / "images" / "train"),
            "qat_batch_size": 16,
            "output_dir": str(output),
        },
        "TrainConfig": {"train_iter": 100000, "learning_rate": 0.0001},
    }
    return write_config(tmp_path, data), output


@pytest.mark.slow
@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_nothing(long_qat_config: tuple[Path, Path], sent: signal.Signals) -> None:
    config, output = long_qat_config
    process = _start_cli(config)
    _wait_until_working(process, output)
    process.send_signal(sent)
    limit = 300
    try:
        text, _ = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack, to see where it hangs
        try:
            text = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            text = process.communicate()[0]
        pytest.fail(f"still running {limit} s after {sent.name}:\n{text[-6000:]}")
    assert process.returncode == 130, text
    assert "interrupted" in text
    assert not output.exists() and partials(output) == []


@pytest.mark.slow
def test_a_killed_run_leaves_no_output_and_the_next_run_cleans_up(
    long_qat_config: tuple[Path, Path], demo_model: Path, fashion: Path
) -> None:
    config, output = long_qat_config
    process = _start_cli(config)
    _wait_until_working(process, output)
    process.kill()
    process.wait(timeout=60)
    assert not output.exists()
    stale = partials(output)
    assert len(stale) == 1 and not (stale[0] / "inference.pdmodel").exists()
    # The next run into the same folder removes the dead run's temporary folder.
    from paddlecls_q.quantize import quantize

    fast = write_config(config.parent, ptq_config(demo_model, fashion / "images" / "train", output), "ptq.yaml")
    quantize(load_quantize_config(fast))
    assert (output / "inference.pdmodel").is_file() and partials(output) == []


def test_an_exception_mid_run_leaves_nothing(
    demo_model: Path, fashion: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from paddlecls_q.quantize import pipeline

    def failing_ptq(plan: Any, images: Any, work: Path, keep: list[str], progress: Any, device: str) -> Path:
        (work / "ptq").mkdir(parents=True)
        (work / "ptq" / "inference.pdmodel").write_bytes(b"half written")
        raise RuntimeError("calibration crashed")

    monkeypatch.setattr(pipeline, "run_ptq", failing_ptq)
    output = tmp_path / "int8"
    config = load_quantize_config(write_config(tmp_path, ptq_config(demo_model, fashion / "images" / "train", output)))
    with pytest.raises(RuntimeError, match="calibration crashed"):
        pipeline.quantize(config)
    assert not output.exists() and partials(output) == []


# ---- accuracy budget and sensitivity -------------------------------------------------------------


def _fake_accuracy(drops: list[float]) -> Any:
    """A stand-in for the engine evaluation that reports the given worst drop on successive calls."""
    calls: list[Path] = []

    def measure(plan: Any, folder: Path, fp32: Any, progress: bool, engines: Any = None) -> tuple[dict[str, Any], Any]:
        drop = drops[min(len(calls), len(drops) - 1)]
        calls.append(folder)
        rows = [
            {
                "engine": e,
                "fp32_top1": 87.0,
                "int8_top1": 87.0 - drop,
                "drop": drop,
                "count": 100,
                "int8_images_per_s": 1.0,
                "fp32_images_per_s": 1.0,
            }
            for e in ("paddle", "ort", "openvino")
        ]
        budget = plan.config.accuracy.max_drop
        return {
            "eval_list": str(plan.eval_list),
            "images": 100,
            "max_drop": budget,
            "engines": rows,
            "worst_drop": drop,
            "int8_engine_spread": 0.0,
            "within_budget": drop <= budget,
        }, {}

    measure.calls = calls  # type: ignore[attr-defined]
    return measure


@pytest.mark.slow
def test_over_budget_exits_3_and_publishes_nothing_at_the_output(
    demo_model: Path, fashion: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from paddlecls_q.quantize import pipeline

    monkeypatch.setattr(pipeline, "measure_accuracy", _fake_accuracy([1.5]))
    output = tmp_path / "int8"
    data = ptq_config(
        demo_model,
        fashion / "images" / "train",
        output,
        accuracy={"eval_list": str(fashion / "val_list.txt"), "max_drop": 0.3},
    )
    result = runner.invoke(app, ["quantize", "--config", str(write_config(tmp_path, data))])
    assert result.exit_code == AccuracyBudgetError.exit_code == 3, result.output
    assert "dropped 1.50 points" in result.output and "max_drop 0.30" in result.output
    assert "--sensitivity" in result.output
    assert not output.exists() and partials(output) == []
    rejected = tmp_path / "int8.rejected"
    assert json.loads((rejected / "quantize_report.json").read_text())["accuracy"]["within_budget"] is False


@pytest.mark.slow
def test_sensitivity_keeps_the_worst_layers_in_fp32_until_the_budget_holds(
    demo_model: Path, fashion: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    from paddlecls_q import qdq_onnx
    from paddlecls_q.quantize import pipeline

    fake = _fake_accuracy([0.8, 0.5, 0.2])
    monkeypatch.setattr(pipeline, "measure_accuracy", fake)
    output = tmp_path / "int8"
    data = ptq_config(
        demo_model,
        fashion / "images" / "train",
        output,
        accuracy={"eval_list": str(fashion / "val_list.txt"), "max_drop": 0.3, "sensitivity_images": 32},
    )
    report = pipeline.quantize(load_quantize_config(write_config(tmp_path, data)), sensitivity=True)
    ranking = report.sensitivity["ranking"]
    assert len(ranking) == report.quantized_layers + 2 and ranking[0]["kl_gain"] >= ranking[-1]["kl_gain"]
    assert report.keep_fp32_layers == [ranking[0]["layer"], ranking[1]["layer"]]
    assert [step["worst_drop"] for step in report.sensitivity["history"]] == [0.8, 0.5, 0.2]
    # The published model really runs those two layers in float, on every engine's file.
    for engine in ("ort", "openvino"):
        layers = qdq_onnx.quantized_layers(onnx.load(str(output / f"inference.{engine}.onnx")))
        assert len(layers) == len(ranking) - 2 and not set(report.keep_fp32_layers) & {layer_name(n) for n in layers}
    assert json.loads((output / "quantize_report.json").read_text())["keep_fp32_layers"] == report.keep_fp32_layers


@pytest.mark.slow
def test_fp32_and_int8_share_one_decoding_pass(ptq_run: tuple[Path, dict[str, Any]], demo_model: Path, fashion: Path):
    from paddlecls_q.config import RuntimeOptions
    from paddlecls_q.datasets import load_dataset
    from paddlecls_q.evaluate import evaluate_model, evaluate_models

    output, _ = ptq_run
    dataset = load_dataset(fashion / "val_list.txt", limit=150)
    options = RuntimeOptions(backend="ort")
    together = evaluate_models([demo_model, output], dataset, options, batch_size=16)
    apart = [evaluate_model(folder, dataset, options, batch_size=16) for folder in (demo_model, output)]
    for shared, alone in zip(together, apart):
        assert shared.predictions == alone.predictions and (shared.top1, shared.top5) == (alone.top1, alone.top5)
        assert shared.engine["models_per_decode"] == 2 and alone.engine["models_per_decode"] == 1
    assert together[0].engine["quantized"] is False and together[1].engine["quantized"] is True
    assert together[0].images_per_s == together[1].images_per_s > 0
