"""Hostile config files: bounded YAML, bounded values, short error lines, regular files only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from paddlecls_q.config import load_inference_cls_yaml, load_quantize_config, load_yaml
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
