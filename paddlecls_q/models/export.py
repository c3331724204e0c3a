"""Export a paddle.nn classifier as a PaddleClas inference-model folder, and build seeded reference models."""

from __future__ import annotations

import argparse
from pathlib import Path
from collections.abc import Callable
from typing import Any

import paddle  # paddlecls_q/__init__.py ran first and turned the PIR API off
import yaml

from paddlecls_q.errors import ConfigError
from paddlecls_q.registry import IMAGENET_LABEL_FILE

LABEL_FILE = "label_list.txt"
REFERENCE_ARCHS = ("ResNet50_vd", "MobileNetV1")

# PaddleClas's ImageNet deploy preprocessing (deploy/configs/inference_cls.yaml).
IMAGENET_TRANSFORM_OPS: list[dict[str, Any]] = [
    {"ResizeImage": {"resize_short": 256}},
    {"CropImage": {"size": 224}},
    {
        "NormalizeImage": {
            "scale": 0.00392157,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "order": "",
            "channel_num": 3,
        }
    },
    {"ToCHWImage": None},
]


def make_inference_cls_yaml(transform_ops: list[dict[str, Any]], topk: int = 5) -> dict[str, Any]:
    """An `inference_cls.yaml` in PaddleClas's deploy layout: Global, PreProcess, PostProcess.Topk."""
    return {
        "Global": {
            "inference_model_dir": ".",
            "batch_size": 1,
            "use_gpu": False,
            "enable_mkldnn": True,
            "cpu_num_threads": 1,
            "enable_benchmark": False,
            "use_fp16": False,
            "ir_optim": True,
            "use_tensorrt": False,
            "gpu_mem": 8000,
            "enable_profile": False,
        },
        "PreProcess": {"transform_ops": transform_ops},
        "PostProcess": {"main_indicator": "Topk", "Topk": {"topk": topk}},
    }


def export_inference_model(
    layer: paddle.nn.Layer,
    out_dir: Path,
    input_shape: tuple[int, int, int, int],
    inference_cls_yaml: dict[str, Any],
    label_lines: list[str] | None = None,
) -> Path:
    """Save `layer` as `inference.pdmodel/.pdiparams` + `inference_cls.yaml` (+ `label_list.txt`) in `out_dir`.

    `input_shape` is NCHW; the batch dimension is exported as dynamic. `label_lines` are
    PaddleClas label lines (`"<id> <name>"`); when given, Topk.class_id_map_file points at them.
    """
    if "PreProcess" not in inference_cls_yaml:
        raise ConfigError("inference_cls_yaml: missing key 'PreProcess'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layer.eval()
    _, channels, height, width = input_shape
    spec = paddle.static.InputSpec([None, channels, height, width], "float32", name="x")
    paddle.jit.save(layer, str(out_dir / "inference"), input_spec=[spec])
    # Holds dygraph parameter names for paddle.jit.load only; inference engines never read it.
    (out_dir / "inference.pdiparams.info").unlink(missing_ok=True)

    config = {**inference_cls_yaml}
    post = dict(config.get("PostProcess") or {})
    topk = dict(post.get("Topk") or {})
    if label_lines is not None:
        (out_dir / LABEL_FILE).write_text("".join(line.rstrip("\n") + "\n" for line in label_lines), encoding="utf-8")
        topk["class_id_map_file"] = LABEL_FILE
    post["Topk"] = topk
    config["PostProcess"] = post
    (out_dir / "inference_cls.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out_dir


def settle_batch_norm(layer: paddle.nn.Layer, images: paddle.Tensor) -> None:
    """Set every BatchNorm's running mean/variance to its statistics on `images` (one train-mode pass).

    Random-init weights with PaddleClas's default BN stats (mean 0, var 1) blow up through ResNet50_vd
    in eval mode (logits ~±800, the same one-hot softmax for every image); after this they don't.
    """
    norms = [sub for sub in layer.sublayers() if isinstance(sub, (paddle.nn.BatchNorm, paddle.nn.BatchNorm2D))]
    momenta = [norm._momentum for norm in norms]
    for norm in norms:
        norm._momentum = 0.0  # running = batch statistics, in one pass
    layer.train()
    with paddle.no_grad():
        layer(images)
    for norm, momentum in zip(norms, momenta):
        norm._momentum = momentum
    layer.eval()


def _smooth_noise(batch: int, size: int) -> paddle.Tensor:
    """Image-like random input: low-resolution noise upsampled, about unit variance like normalized photos."""
    coarse = paddle.randn([batch, 3, size // 16, size // 16])
    return paddle.nn.functional.interpolate(coarse, size=[size, size], mode="bilinear") * 1.5


def build_model(arch: str, class_num: int = 1000) -> paddle.nn.Layer:
    """A PaddleClas architecture by name, randomly initialized."""
    from paddlecls_q.models.mobilenet_v1 import MobileNetV1
    from paddlecls_q.models.resnet_vd import ResNet50_vd

    builders: dict[str, Callable[..., paddle.nn.Layer]] = {"ResNet50_vd": ResNet50_vd, "MobileNetV1": MobileNetV1}
    if arch not in builders:
        raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(builders)}")
    return builders[arch](class_num=class_num)


def make_reference_model(arch: str, out_dir: Path, seed: int = 0) -> Path:
    """A full-size 1000-class `arch` with seeded random weights, exported with ImageNet preprocessing and labels.

    Weights are random (no ImageNet-pretrained model exists offline), so its top-1 means nothing;
    BN running stats are settled on seeded image-like noise so outputs depend on the input. Like
    PaddleClas's export (ExportModel, `infer_add_softmax` on by default) the model ends in a softmax,
    so it outputs probabilities as the published inference models do.
    """
    paddle.seed(seed)
    model = build_model(arch)
    settle_batch_norm(model, _smooth_noise(8, 224))
    model = paddle.nn.Sequential(model, paddle.nn.Softmax(axis=-1))
    labels = IMAGENET_LABEL_FILE.read_text(encoding="utf-8").splitlines()
    return export_inference_model(
        model, Path(out_dir), (1, 3, 224, 224), make_inference_cls_yaml(IMAGENET_TRANSFORM_OPS, 5), labels
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m paddlecls_q.models.export ARCH OUT_DIR`: build a seeded reference model folder."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("arch", choices=REFERENCE_ARCHS)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_reference_model(args.arch, args.out_dir, args.seed))


if __name__ == "__main__":
    main()
