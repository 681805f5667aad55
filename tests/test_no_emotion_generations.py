"""Generated text without an emotion word (issue 13): only the explanation part is scored,
and such generations are counted (the no-emotion rate)."""

from __future__ import annotations

import pytest

from sevlm.text import parse_generation
from sevlm.names import EVAL_METRIC_NAMES
from sevlm.training.evaluation import Generations, score_generations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sad because it is dark", (None, "it is dark")),
        ("very Sad because of the rain because", (None, "of the rain because")),
        ("because it is dark", (None, "it is dark")),
        ("dark colours everywhere", (None, "dark colours everywhere")),
        ("awe because the sky because it is big", ("awe", "the sky because it is big")),
    ],
)
def test_without_an_emotion_only_the_part_after_because_is_the_explanation(text, expected):
    assert parse_generation(text) == expected


class _Reader:
    """Reads "dark" as fear, anything else as contentment."""

    def predict(self, texts):
        return ["fear" if "dark" in t else "contentment" for t in texts]


def test_no_emotion_rate_and_explanations_scored():
    generations = Generations(
        texts={
            "a": "fear because the sky is dark",
            "b": "sad because the sky is dark",
            "c": "gloomy because the water is dark",
            "d": "contentment because the field is green",
        },
        closed_set={"a": "fear", "b": "fear", "c": "fear", "d": "contentment"},
    )
    references = {p: ["the sky is dark", "the water is dark"] for p in "abcd"}
    dominant = {"a": "fear", "b": "fear", "c": "fear", "d": "contentment"}
    evaluation = score_generations(generations, references, dominant, _Reader(), "test", use_meteor=False)
    assert "no_emotion_rate" in EVAL_METRIC_NAMES
    assert evaluation.metrics["test/no_emotion_rate"] == pytest.approx(50.0)
    assert evaluation.metrics["test/acc"] == pytest.approx(50.0)  # no emotion counts as wrong
    explained = evaluation.predictions.set_index("painting_id")["explanation"]
    assert explained["b"] == "the sky is dark" and explained["c"] == "the water is dark"
    assert evaluation.predictions.set_index("painting_id").loc["b", "bleu4"] == pytest.approx(
        evaluation.predictions.set_index("painting_id").loc["a", "bleu4"]
    )


def test_the_tracking_schema_never_optimises_the_no_emotion_rate():
    from trainables import tracking_schema as schema

    assert "test/no_emotion_rate" in schema.TEST_METRICS
    assert "val/no_emotion_rate" not in schema.OPTIMIZABLE_METRICS
