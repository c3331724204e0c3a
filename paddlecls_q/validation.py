"""Loading and validating user files: bounded safe YAML, pydantic models whose errors are one line naming file,
key and value (echoed values cut short), and "did you mean" suggestions. `config.py` builds every config on these.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from paddlecls_q.errors import ConfigError, InputError
from paddlecls_q.fsutil import MAX_CONFIG_BYTES, read_bounded

# A YAML document may expand to at most this many nodes once aliases are followed ("billion laughs").
MAX_YAML_NODES = 100_000
MAX_ECHO_CHARS = 80

Model = TypeVar("Model", bound=BaseModel)


def shorten(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """repr(value) cut to `limit` characters: every value echoed in an error line goes through this."""
    text = repr(value) if not isinstance(value, str) or len(value) <= limit * 4 else repr(value[: limit * 4])
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...]) -> str:
    """A "; did you mean 'x'?" suffix when a close candidate exists, else ""."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    """Validate a CLI choice (case-insensitive) with a did-you-mean suggestion."""
    normalized = value.strip().strip("'\"").lower()
    if normalized not in allowed:
        raise ConfigError(
            f"unknown {what} {value!r}{did_you_mean(normalized, allowed)}; choose from {', '.join(allowed)}"
        )
    return normalized


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are validated, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _key_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def validate(model: type[Model], data: Any, source: str) -> Model:
    """Build `model` from `data`, or raise ConfigError "source: key 'a.b' ..." for the first problem."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        key = _key_path(first["loc"])
        if first["type"] == "extra_forbidden":
            parent: type[BaseModel] | None = model
            for part in first["loc"][:-1]:
                field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
                annotation = getattr(field, "annotation", None)
                parent = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            known = list(parent.model_fields) if parent is not None else []
            name = str(first["loc"][-1])
            raise ConfigError(f"{source}: unknown key {shorten(key)}{did_you_mean(name, known)}") from None
        message = first["msg"].removeprefix("Value error, ")
        where = f"key {key!r}" if key else "value"
        raise ConfigError(f"{source}: {where}: {message[:200]} (got {shorten(first.get('input'))})") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with yaml.safe_load; every failure is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES, "YAML file").decode("utf-8")
    except InputError as error:
        raise ConfigError(str(error)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8 text") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_nodes(node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"{path}: YAML aliases expand to more than {MAX_YAML_NODES} nodes; refusing it")
        data = loader.construct_document(node) if node is not None else None
    except (yaml.YAMLError, RecursionError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _expanded_nodes(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many nodes `node` stands for with every alias expanded (shared nodes counted once per use)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_YAML_NODES + 1  # a node reached again while being counted: a cycle, refuse
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_nodes(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_nodes(k, memo) + _expanded_nodes(v, memo) for k, v in node.value)
    memo[id(node)] = min(total, MAX_YAML_NODES + 1)
    return memo[id(node)]
