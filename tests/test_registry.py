import json

from typer.testing import CliRunner

from paddlecls_q import registry
from paddlecls_q.cli import app
from paddlecls_q.errors import ConfigError

runner = CliRunner()


def test_registry_holds_the_seed_models_with_their_published_figures():
    resnet = registry.get_model("resnet50_VD")
    assert resnet.quantized.url.endswith("/resnet50_vd_ptq.tar")
    assert resnet.fp32.url.endswith("/ResNet50_vd_infer.tgz")
    assert resnet.input_name == "x" and resnet.input_shape == (1, 3, 224, 224)
    ort = next(row for row in resnet.reference if row.backend == "ort")
    assert ort.runtime_ms[:2] == (76.14, 35.43)
    # The seed's "max speedup" column is FP32 over the fastest INT8 variant.
    assert ort.max_speedup(ort.runtime_ms) == 2.15
    trt = next(row for row in registry.get_model("MobileNetV1_ssld").reference if row.backend == "trt")
    assert trt.max_speedup(trt.runtime_ms) == 2.12


def test_unknown_model_suggests():
    try:
        registry.get_model("ResNet50vd")
    except ConfigError as error:
        assert "did you mean 'ResNet50_vd'" in str(error)
    else:
        raise AssertionError("no error")


def test_cache_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PADDLECLS_Q_HOME", str(tmp_path))
    assert registry.model_dir("MobileNetV1_ssld", quantized=True) == tmp_path / "models" / "mobilenetv1_ssld_ptq"
    monkeypatch.delenv("PADDLECLS_Q_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.cache_home() == tmp_path / "xdg" / "paddlecls-q"


def test_models_command_table_and_json():
    table = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "ResNet50_vd" in table.output and "resnet50_vd_ptq.tar" in table.output
    assert "35.43" in table.output and "Seed's figures" in table.output
    result = runner.invoke(app, ["models", "--json"])
    document = json.loads(result.stdout)
    assert document["schema"] == "paddlecls-q/models" and document["version"] == 1
    names = [model["name"] for model in document["models"]]
    assert names == ["ResNet50_vd", "MobileNetV1_ssld", "demo"]
    demo = document["models"][2]
    assert demo["fp32_dir"] == str(registry.DEMO_MODEL_DIR)
