"""Assertions shared by the CLI tests."""


def assert_one_line_error(result, exit_code: int, pattern: str) -> None:
    """A CLI failure: the expected exit code, no traceback, one line that contains `pattern`."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert pattern in lines[0], lines[0]
