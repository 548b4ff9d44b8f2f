"""Requests the served guard refuses, each with a message that names the problem (no model needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from flows.guard.input_checks import InvalidGuardInput, check_texts, validate_guard_input
from flows.guard.pyfunc import embed_text_frame

FEATURES = ["f0", "f1"]


class FakeEmbedder:
    def embed(self, texts, progress=False):
        return np.ones((len(texts), 2))


def test_a_column_given_twice_is_refused():
    frame = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["f0", "f1", "f1"])
    with pytest.raises(InvalidGuardInput, match=r"columns given more than once: \['f1'\]"):
        validate_guard_input(frame, FEATURES)


def test_two_text_columns_are_refused_not_scored_as_the_word_text():
    frame = pd.DataFrame([["hello", "world"]], columns=["text", "text"])
    with pytest.raises(MlflowException, match=r"more than once: \['text'\]"):
        embed_text_frame(FakeEmbedder(), frame, FEATURES)


def test_texts_longer_than_the_cap_are_refused_by_row(monkeypatch):
    monkeypatch.setenv("EBMOPS_MAX_TEXT_CHARS", "10")
    with pytest.raises(InvalidGuardInput, match=r"rows \[1\] are longer than 10 characters"):
        check_texts(["short", "x" * 11], "text")
    frame = pd.DataFrame({"text": ["fine", "y" * 50]})
    with pytest.raises(MlflowException, match="longer than 10"):
        embed_text_frame(FakeEmbedder(), frame, FEATURES)
    assert embed_text_frame(FakeEmbedder(), pd.DataFrame({"text": ["fine"]}), FEATURES).shape == (1, 2)


def test_blank_and_non_string_texts_are_refused():
    with pytest.raises(InvalidGuardInput, match=r"rows \[1, 2\]"):
        check_texts(["ok", "   ", None], "text")
