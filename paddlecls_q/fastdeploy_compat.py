"""FastDeploy's compress configs of every era, translated into our QuantizeConfig layout.

FastDeploy's classification quantize configs changed shape three times (checked against
PaddlePaddle/FastDeploy at commit cc8d1f3c9):

- `tools/quantization/` (Sept 2022): `Global.arch`, `Global.input_name`, `Global.preprocess`,
  and a `Quantization:` section;
- `tools/quantization/` → `tools/auto_compression/` (Oct-Nov 2022): `Global.input_list`,
  `qat_preprocess`/`ptq_preprocess`, still `Quantization:` (and `Global.arch` until early Nov);
- `tools/common_tools/auto_compression/` (Dec 2022 on): `QuantAware:` instead of `Quantization:`,
  `qat_image_path`/`ptq_image_path` — the layout our own configs extend.

`translate` maps the old keys onto the new ones, drops keys that change nothing here (named in one
warning), and turns what can't be honoured into one clear ConfigError. `FASTDEPLOY_CALIBRATION`
is what FastDeploy's own PTQ does (fd_auto_compress.py: a DataLoader of batch 1, `batch_nums=10`,
and quant_post_static's default op types).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from paddlecls_q.errors import ConfigError

# Keys FastDeploy's configs carry that change nothing in paddlecls-q: why each is harmless.
IGNORED_KEYS = {
    "Global.arch": "an architecture label FastDeploy's tool never read",
}

# FastDeploy's preprocess functions (fd_auto_compress/dataset.py) for models that are not classifiers.
NON_CLASSIFIER_PREPROCESS = {
    "yolo_image_preprocess": "YOLO detection",
    "ppyoloe_withNMS_image_preprocess": "PP-YOLOE detection",
    "ppyoloe_plus_withNMS_image_preprocess": "PP-YOLOE+ detection",
    "ppseg_cityscapes_ptq_preprocess": "PaddleSeg segmentation",
    "ppseg_cityscapes_qat_preprocess": "PaddleSeg segmentation",
}
CLASSIFIER_PREPROCESS = "cls_image_preprocess"

FASTDEPLOY_CALIBRATION = {
    "calibration_images": 10,
    "batch_size": 1,
    "quantize_op_types": ["conv2d", "depthwise_conv2d", "mul"],
}
CALIBRATION_PRESETS = ("paddlecls-q", "fastdeploy")


def calibration_summary(preset: str, ptq: dict[str, Any]) -> str:
    """One line saying which calibration choices a run used."""
    count = ptq["calibration_images"]
    images = "every image of the folder" if count is None else f"{count} images"
    return (
        f"calibration: {preset} choices ({images} in batches of {ptq['batch_size']}, "
        f"op types {', '.join(ptq['quantize_op_types'])})"
    )


def _check_preprocess(name: Any, key: str, source: str) -> None:
    if name is None or name in ("cls_image_preprocess", "inference_cls_yaml"):
        return
    if name in NON_CLASSIFIER_PREPROCESS:
        raise ConfigError(
            f"{source}: key {key!r}: unknown preprocess {name!r}: it is FastDeploy's {NON_CLASSIFIER_PREPROCESS[name]} preprocessing; "
            f"paddlecls-q quantizes classifiers: use {CLASSIFIER_PREPROCESS!r} (the model's inference_cls.yaml)"
        )
    raise ConfigError(
        f"{source}: key {key!r}: unknown preprocess {name!r}; FastDeploy eval()s a Python "
        f"function of that name, paddlecls-q never runs code from a config: use {CLASSIFIER_PREPROCESS!r} and put "
        "the ops in the model's inference_cls.yaml"
    )


def translate(
    data: dict[str, Any],
    source: str,
    on_warning: Callable[[str], None] | None = None,
    calibration: str = "paddlecls-q",
) -> dict[str, Any]:
    """Map a FastDeploy config of any era (or ours, unchanged) onto the QuantizeConfig layout."""
    data = {**data}
    ignored: list[str] = []
    if "Quantization" in data:
        if "QuantAware" in data:
            raise ConfigError(f"{source}: has both 'Quantization' (FastDeploy before Dec 2022) and 'QuantAware'; keep one")
        data["QuantAware"] = data.pop("Quantization")
    settings = data.get("Global")
    if isinstance(settings, dict):
        settings = {**settings}
        for key in IGNORED_KEYS:
            section, name = key.split(".")
            if section == "Global" and name in settings:
                settings.pop(name)
                ignored.append(key)
        if "input_name" in settings:
            if "input_list" in settings:
                raise ConfigError(f"{source}: has both 'Global.input_name' and 'Global.input_list'; keep one")
            settings["input_list"] = [settings.pop("input_name")]
        if "preprocess" in settings:
            preprocess = settings.pop("preprocess")
            _check_preprocess(preprocess, "Global.preprocess", source)
            for name in ("qat_preprocess", "ptq_preprocess"):
                if settings.setdefault(name, preprocess) != preprocess:
                    raise ConfigError(f"{source}: 'Global.preprocess' and 'Global.{name}' disagree; keep one")
        for name in ("qat_preprocess", "ptq_preprocess"):
            _check_preprocess(settings.get(name), f"Global.{name}", source)
        fmt = settings.get("format")
        if isinstance(fmt, str):
            # FastDeploy quotes it in some configs ("'onnx'"); QuantizeGlobal decides what each format can do.
            settings["format"] = fmt.strip().strip("'\"").lower()
        data["Global"] = settings
    if calibration == "fastdeploy":
        given = data.get("PTQ")
        ptq: dict[str, Any] = given if isinstance(given, dict) else {}
        data["PTQ"] = {**ptq, **FASTDEPLOY_CALIBRATION}
    elif calibration != "paddlecls-q":
        raise ConfigError(f"unknown calibration preset {calibration!r}; choose from {', '.join(CALIBRATION_PRESETS)}")
    if ignored and on_warning is not None:
        on_warning(f"{source}: ignoring {', '.join(ignored)} ({'; '.join(IGNORED_KEYS[k] for k in ignored)})")
    return data
