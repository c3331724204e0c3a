"""postprocess.py: probabilities (softmax only for logits) and top-k, as infer, evaluate and bench use them."""

import numpy as np
import pytest

from paddlecls_q.postprocess import are_probabilities, in_top_k, to_probabilities, top_k, top_k_probabilities


@pytest.mark.parametrize(
    "outputs",
    [
        np.random.default_rng(0).dirichlet(np.ones(1000), size=2).astype(np.float32),  # already softmax
        np.random.default_rng(1).standard_normal((3, 1000)).astype(np.float32),  # logits
        np.array([[0.5, 0.5005]], np.float32),  # sum just outside allclose's tolerance
        np.array([[0.5, 0.50099]], np.float32),  # just inside
        np.array([[np.nan, 1.0]], np.float32),
        np.array([[0.5, 0.50101]], np.float32),  # sums at the tolerance, one image and a batch
        np.array([[0.5, 0.501011]], np.float32),
        np.array([[0.5, 0.49899], [0.5, 0.501011]], np.float32),
        np.array([[np.inf, 0.0]], np.float32),
        np.random.default_rng(2).standard_normal((1, 10, 1, 1)),  # float64, 4-D
    ],
)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the inf case, in both
def test_probabilities_equal_the_allclose_definition(outputs: np.ndarray) -> None:
    np.testing.assert_array_equal(to_probabilities(outputs), allclose_probabilities(outputs))


@pytest.mark.parametrize("softmax", [True, False])
def test_top_k_probabilities_match_the_full_softmax(softmax: bool) -> None:
    rng = np.random.default_rng(5)
    scores = (rng.standard_normal(1000) * 3).astype(np.float32)
    if not softmax:
        scores = to_probabilities(scores[None])[0]
    expected = to_probabilities(scores[None])[0]
    pairs = top_k_probabilities(scores, 5, softmax)
    assert [index for index, _ in pairs] == np.argsort(-expected, kind="stable")[:5].tolist()
    np.testing.assert_allclose([p for _, p in pairs], expected[[index for index, _ in pairs]], rtol=1e-6)


def test_are_probabilities_is_to_probabilities_test() -> None:
    rng = np.random.default_rng(4)
    assert are_probabilities(rng.dirichlet(np.ones(10), size=3))
    assert not are_probabilities(rng.standard_normal((1, 10)))
    assert not are_probabilities(np.array([[0.2, 0.2]], np.float32))
    assert not are_probabilities(np.array([[np.nan, 1.0]], np.float32))


def test_top_k_is_best_first() -> None:
    probabilities = np.array([0.1, 0.4, 0.05, 0.3, 0.15, 0.3], np.float32)
    assert top_k(probabilities, 3) == [1, 3, 5]
    assert top_k(probabilities, 9) == [1, 3, 5, 4, 0, 2]
    scores = np.random.default_rng(3).random(1000).astype(np.float32)
    assert top_k(scores, 5) == np.argsort(-scores, kind="stable")[:5].tolist()
    for k in (1, 5, 6):  # the partition's edges: one class, all but one, all
        assert top_k(probabilities, k) == [1, 3, 5, 4, 0, 2][:k]


def test_fast_probabilities_agree_at_the_tolerance_edge() -> None:
    """Sums from 1 - 2e-3 to 1 + 2e-3 in float32 steps: both functions must take the same branch everywhere."""
    base = np.float32(0.5)
    for other in np.arange(np.float32(0.498), np.float32(0.502), np.float32(1e-7), dtype=np.float32)[::7]:
        outputs = np.array([[base, other]], np.float32)
        np.testing.assert_array_equal(to_probabilities(outputs), allclose_probabilities(outputs))


def allclose_probabilities(outputs: np.ndarray) -> np.ndarray:
    """The plain definition `to_probabilities` must match: softmax unless rows already sum to 1."""
    outputs = outputs.reshape(outputs.shape[0], -1).astype(np.float32)
    if outputs.min() >= 0 and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_in_top_k_counts_a_label_among_the_k_best_of_each_row() -> None:
    scores = np.array([[0.1, 0.5, 0.2, 0.2], [0.7, 0.1, 0.1, 0.1], [0.0, 0.0, 0.3, 0.7]], np.float32)
    labels = np.array([2, 3, 0])
    assert in_top_k(scores, labels, 1).tolist() == [False, False, False]
    assert in_top_k(scores, labels, 3).tolist() == [True, False, False]
    assert in_top_k(scores, labels, 4).tolist() == [True, True, True]  # k covers every class
    best_first = np.argsort(-scores, axis=1, kind="stable")
    for k in (1, 2):
        expected = [label in row[:k] for row, label in zip(best_first, labels)]
        assert in_top_k(scores, labels, k).tolist() == expected
