"""Assertions shared by the CLI tests."""


def assert_one_line_error(result, exit_code: int, pattern: str) -> None:
    """A CLI failure: the expected exit code, no traceback, one line that contains `pattern`."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert pattern in lines[0], lines[0]


def build(transform_ops: list[dict]):
    """Our Preprocessor from yaml-style ops, validated by config.py as an inference_cls.yaml would be."""
    from paddlecls_q.config import TRANSFORM_OPS
    from paddlecls_q.preprocess import Preprocessor

    ops = []
    for item in transform_ops:
        ((name, params),) = item.items()
        ops.append(TRANSFORM_OPS[name].model_validate(params or {}))
    return Preprocessor(ops)
