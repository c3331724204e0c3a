from pathlib import Path

import pytest

from paddlecls_q.config import (
    NormalizeImageOp,
    RuntimeOptions,
    choice,
    load_inference_cls_yaml,
    load_yaml,
    parse_scale,
    validate,
)
from paddlecls_q.errors import ConfigError

DATA = Path(__file__).parent / "data"


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"opts.yaml: unknown key 'thread'; did you mean 'threads'\?"):
        validate(RuntimeOptions, {"thread": 2}, "opts.yaml")


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"key 'threads'.*got 0"):
        validate(RuntimeOptions, {"threads": 0}, "opts.yaml")


def test_gpu_backends_default_to_the_gpu_and_cpu_rejects_fp16():
    assert validate(RuntimeOptions, {"backend": "trt"}, "cli").device == "gpu"
    assert validate(RuntimeOptions, {"backend": "ort"}, "cli").device == "cpu"
    with pytest.raises(ConfigError, match="need --device gpu"):
        validate(RuntimeOptions, {"backend": "ort", "fp16": True}, "cli")
    with pytest.raises(ConfigError, match="GPU only"):
        validate(RuntimeOptions, {"backend": "trt", "device": "cpu"}, "cli")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.0/255.0", 1 / 255), ("1/255", 1 / 255), ("0.00392157", 0.00392157), (0.5, 0.5), ("2e-3", 0.002)],
)
def test_scale_strings_are_parsed_without_eval(text, expected):
    assert parse_scale(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "1/0", "255/", "abc"])
def test_scale_rejects_anything_but_numbers(text):
    with pytest.raises(ConfigError, match="scale"):
        validate(NormalizeImageOp, {"scale": text}, "x.yaml")


def test_choice_normalises_case_and_quotes_and_suggests():
    assert choice("'ORT'", ("paddle", "ort"), "backend") == "ort"
    with pytest.raises(ConfigError, match="did you mean 'openvino'"):
        choice("openvin", ("paddle", "ort", "openvino"), "backend")


def test_real_paddleclas_yaml_loads(tmp_path):
    config = load_inference_cls_yaml(DATA / "configs" / "inference_cls.yaml")
    assert [type(op).__name__ for op in config.transform_ops] == [
        "ResizeImageOp", "CropImageOp", "NormalizeImageOp", "ToCHWImageOp"
    ]
    assert config.topk == 5


def test_yaml_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML at line"):
        load_yaml(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(listing)
    with pytest.raises(ConfigError, match="file not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_yaml_tags_are_not_executed(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("a: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(evil)
