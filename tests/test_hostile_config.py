"""Hostile config files: bounded YAML, bounded values, short error lines, regular files only."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from paddlecls_q.config import QuantizeConfig, load_inference_cls_yaml, load_quantize_config, load_yaml
from paddlecls_q.errors import ConfigError, InputError
from paddlecls_q.fsutil import checked_path, read_bounded

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

MODEL_YAML = """\
PreProcess:
  transform_ops:
    - ResizeImage:
        {resize}
    - CropImage:
        size: 32
    - NormalizeImage: {{}}
    - ToCHWImage:
PostProcess:
  Topk:
    topk: 5
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_alias_bomb_is_refused_with_a_short_line(tmp_path: Path):
    with pytest.raises(ConfigError, match="aliases expand to more than") as caught:
        load_yaml(write(tmp_path / "bomb.yaml", BOMB))
    assert len(str(caught.value)) < 300


def test_alias_bomb_in_a_quantize_config_value(tmp_path: Path):
    text = BOMB.replace("i: &i", "Global:\n  model_dir: m\n  seed: &i").replace("a: &a", "x: &a")
    with pytest.raises(ConfigError) as caught:
        load_quantize_config(write(tmp_path / "q.yaml", text))
    assert len(str(caught.value)) < 300


def test_a_long_bad_value_is_truncated_in_the_error(tmp_path: Path):
    path = write(tmp_path / "q.yaml", f"Global:\n  model_dir: m\n  seed: {'x' * 100000}\n")
    with pytest.raises(ConfigError, match=r"Global.seed.*\.\.\.\)$") as caught:
        load_quantize_config(path)
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("resize", ["size: 30000", "size: 1e9", "resize_short: 100000", "size: .inf"])
def test_resize_sizes_are_bounded_at_load_time(tmp_path: Path, resize: str):
    with pytest.raises(ConfigError, match="ResizeImage|size"):
        load_inference_cls_yaml(write(tmp_path / "inference_cls.yaml", MODEL_YAML.format(resize=resize)))


@pytest.mark.parametrize(
    ("section", "line", "key"),
    [
        ("Global", "seed: -1", "Global.seed"),
        ("Global", "seed: 1e23", "Global.seed"),
        ("accuracy", "threads: 100000", "accuracy.threads"),
        ("QuantAware", "quantize_op_types: [frob]", "QuantAware.quantize_op_types"),
        ("PTQ", "batch_size: 100000000", "PTQ.batch_size"),
        ("Global", "output_dir: ''", "Global.output_dir"),
        ("Global", "output_dir: '   '", "Global.output_dir"),
    ],
)
def test_out_of_bounds_config_values_are_one_error_naming_the_key(tmp_path: Path, section: str, line: str, key: str):
    head = "Global:\n  model_dir: m\n" + (f"  {line}\n" if section == "Global" else f"{section}:\n  {line}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_quantize_config(write(tmp_path / "q.yaml", head))


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_learning_rate_is_refused(tmp_path: Path, value: str):
    text = f"Global:\n  model_dir: m\nTrainConfig:\n  train_iter: 1\n  learning_rate: {value}\n"
    with pytest.raises(ConfigError, match="learning_rate"):
        load_quantize_config(write(tmp_path / "q.yaml", text))


def test_dev_zero_and_a_fifo_are_refused_at_once(tmp_path: Path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    for path in (Path("/dev/zero"), fifo):
        with pytest.raises(ConfigError, match="not a regular file"):
            load_yaml(path)
        with pytest.raises(InputError, match="not a regular file"):
            read_bounded(path)


def test_a_file_over_the_cap_is_refused(tmp_path: Path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"0" * 2000)
    with pytest.raises(InputError, match="more than the 1000-byte limit"):
        read_bounded(big, 1000)
    assert read_bounded(big, 2000) == b"0" * 2000


def test_non_utf8_yaml_is_one_error(tmp_path: Path):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_yaml(path)


@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_empty_paths_are_refused(value: str):
    with pytest.raises(ConfigError, match="--output: an empty path is not allowed"):
        checked_path(value, "--output")


def _float_keys(model: type, prefix: str = "") -> list[str]:
    """Every key of `model` (sections recursed into) whose value is or holds a float."""
    import typing

    from pydantic import BaseModel

    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        members = [annotation, *typing.get_args(annotation)]
        sections = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if sections:
            keys += _float_keys(sections[0], f"{prefix}{name}.")
        elif "float" in str(annotation):
            keys.append(f"{prefix}{name}")
    return keys


def _nested_yaml(key: str, value: str) -> str:
    *sections, name = key.split(".")
    lines = [f"{'  ' * depth}{section}:" for depth, section in enumerate(sections)]
    return "\n".join([*lines, f"{'  ' * len(sections)}{name}: {value}"]) + "\n"


QUANTIZE_FLOAT_KEYS = _float_keys(QuantizeConfig)


def test_the_float_keys_are_found():
    assert {"Distillation.alpha", "TrainConfig.learning_rate.learning_rate", "PTQ.hist_percent"} <= set(
        QUANTIZE_FLOAT_KEYS
    )
    assert {"accuracy.max_drop", "TrainConfig.optimizer_builder.optimizer.momentum"} <= set(QUANTIZE_FLOAT_KEYS)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize("key", QUANTIZE_FLOAT_KEYS)
def test_non_finite_numbers_are_refused_in_every_float_key(tmp_path: Path, key: str, value: str):
    import yaml

    # A tuple key (PiecewiseDecay values) gets a list; TrainConfig gets its required length beside the key.
    holds_many = "tuple" in str(_annotation(QuantizeConfig, key))
    data = yaml.safe_load(_nested_yaml(key, f"[{value}]" if holds_many else value))
    data.setdefault("Global", {})["model_dir"] = "m"
    if "TrainConfig" in data:
        data["TrainConfig"]["train_iter"] = 1
    with pytest.raises(ConfigError, match=re.escape(key)) as caught:
        load_quantize_config(write(tmp_path / "q.yaml", yaml.safe_dump(data)))
    assert "finite" in str(caught.value) or "valid number" in str(caught.value), caught.value


def _annotation(model: type, key: str) -> object:
    import typing

    *sections, name = key.split(".")
    for section in sections:
        annotation = model.model_fields[section].annotation
        model = next(m for m in (annotation, *typing.get_args(annotation)) if isinstance(m, type))
    return model.model_fields[name].annotation


@pytest.mark.parametrize(
    "normalize", ["scale: .inf", "scale: '1e999'", "mean: [.nan, 0.5, 0.5]", "std: [.inf, 0.5, 0.5]"]
)
def test_non_finite_normalize_values_are_refused(tmp_path: Path, normalize: str):
    text = MODEL_YAML.format(resize="resize_short: 36").replace("- NormalizeImage: {}", f"- NormalizeImage: {{{normalize}}}")
    with pytest.raises(ConfigError, match="NormalizeImage"):
        load_inference_cls_yaml(write(tmp_path / "inference_cls.yaml", text))
