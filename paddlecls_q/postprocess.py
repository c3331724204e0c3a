"""Scores → probabilities → top-k classes: the one postprocessing of infer, evaluate, bench and quantize."""

from __future__ import annotations

import math

import numpy as np


def are_probabilities(outputs: np.ndarray) -> bool:
    """Whether every row is non-negative and sums to 1 (np.allclose(sums, 1, atol=1e-3)), in few numpy calls.

    np.allclose(sums, 1, atol=1e-3) is |sums - 1| <= 1e-3 + 1e-5 * 1 (its default rtol) in float32:
    written out it skips allclose's temporaries, and one image takes two reductions. Right after an
    engine call numpy's code is out of the caches and each call costs ~10-30 us, so the count matters.
    """
    outputs = outputs.reshape(outputs.shape[0], -1)
    if outputs.dtype != np.float32:
        outputs = outputs.astype(np.float32)
    if not outputs.min() >= 0:
        return False
    if outputs.shape[0] == 1:
        return bool(abs(outputs.sum(dtype=np.float32) - np.float32(1.0)) <= np.float32(1e-3 + 1e-5))
    return bool(np.all(np.abs(outputs.sum(axis=1) - 1.0) <= 1e-3 + 1e-5))


def to_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Models exported by PaddleClas end in softmax; apply it only to models that output logits."""
    outputs = outputs.reshape(outputs.shape[0], -1)
    if outputs.dtype != np.float32:
        outputs = outputs.astype(np.float32)
    if are_probabilities(outputs):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest scores, best first, equal scores in index order.

    Among scores tied exactly at the k-th place, which ones make the cut is up to np.argpartition.
    """
    return [index for index, _ in _ranked(probabilities, k)]


def top_k_probabilities(scores: np.ndarray, k: int, softmax: bool) -> list[tuple[int, float]]:
    """The end-to-end postprocessing of one image: (class, probability) of the k best classes, best first.

    With `softmax` (a model that outputs logits) only the k returned probabilities are computed, over the
    full normalizer: softmax keeps the order of the logits, so ranking them needs no exponentials.
    """
    ranked = _ranked(scores, k)
    if not softmax:
        return ranked
    peak = float(scores.max())
    total = float(np.exp(scores - np.float32(peak), dtype=np.float32).sum(dtype=np.float32))
    return [(index, math.exp(value - peak) / total) for index, value in ranked]


def in_top_k(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per row of an (N, classes) score array: whether its label is among the k highest scores."""
    if k >= scores.shape[1]:
        return np.ones(scores.shape[0], bool)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def _ranked(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    # Few numpy calls: this runs right after the engine, when each one costs tens of microseconds cold.
    # The ndarray method skips np.argpartition's Python wrapper (~25 us of the ~100 us cold, bench's loop).
    item, count = scores.item, scores.shape[0]
    if k >= count:
        pairs = [(index, item(index)) for index in range(count)]
    else:
        first = count - k
        pairs = [(index, item(index)) for index in scores.argpartition(first)[first:].tolist()]
    pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return pairs
