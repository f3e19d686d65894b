"""Each registered similarity scores known vectors as documented, and a CPC model built
with it from a configuration learns (its loss falls over a few optimiser steps)."""

from __future__ import annotations

import math

import pytest
import torch

from audiocpc import load_config
from audiocpc.models import build_cpc, registered
from audiocpc.models.similarity import BilinearSimilarity, CosineSimilarity, DotSimilarity

PREDICTIONS = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
BANK = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [3.0, 4.0]])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: one thread is faster


COSINES = torch.tensor([[1.0, 0.0, -1.0, 0.6],
                        [0.6, 0.8, -0.6, 1.0]])


def test_dot_similarity_of_known_vectors() -> None:
    expected = torch.tensor([[2.0, 0.0, -1.0, 3.0], [6.0, 4.0, -3.0, 25.0]])
    torch.testing.assert_close(DotSimilarity(2)(PREDICTIONS, BANK), expected)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_cosine_similarity_is_divided_by_the_temperature(temperature: float) -> None:
    scores = CosineSimilarity(2, temperature=temperature)(PREDICTIONS, BANK)
    torch.testing.assert_close(scores, COSINES / temperature)


def test_cosine_similarity_ignores_the_lengths_of_the_vectors() -> None:
    similarity = CosineSimilarity(2, temperature=0.1)
    torch.testing.assert_close(similarity(PREDICTIONS * 7, BANK * 0.01), similarity(PREDICTIONS, BANK))


def test_bilinear_similarity_applies_its_matrix() -> None:
    similarity = BilinearSimilarity(2)
    torch.testing.assert_close(similarity(PREDICTIONS, BANK), DotSimilarity(2)(PREDICTIONS, BANK))
    with torch.no_grad():  # p^T W z with W = [[0, 1], [2, 0]]
        similarity.weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    expected = torch.tensor([[0.0, 1.0, 0.0, 4.0],   # p W = [0, 1]
                             [16.0, 3.0, -8.0, 36.0]])  # p W = [8, 3]
    torch.testing.assert_close(similarity(PREDICTIONS, BANK), expected)


def test_similarities_keep_leading_dimensions() -> None:
    predictions = torch.randn(2, 3, 4, 5)  # [B, P, K, D]
    for similarity in (DotSimilarity(5), CosineSimilarity(5), BilinearSimilarity(5)):
        assert similarity(predictions, torch.randn(7, 5)).shape == (2, 3, 4, 7)


def _waves(batch: int, samples: int, rate: int) -> torch.Tensor:
    """Tones at different pitches: each sequence's future follows from its past."""
    t = torch.arange(samples) / rate
    pitches = torch.tensor([220.0, 410.0, 780.0, 1300.0])[:batch]
    return torch.sin(2 * math.pi * pitches[:, None] * t) + 0.05 * torch.randn(batch, samples)


@pytest.mark.parametrize("name", registered("similarity"))
def test_cpc_model_learns_with_every_similarity(name: str) -> None:
    config = load_config("1dconv_tiny", ["model.z_dim=16", "model.c_dim=16",
                                         "model.encoder.filters=8", "data.N=4",
                                         f"model.similarity.type={name}"])
    torch.manual_seed(0)
    model = build_cpc(config).train()
    assert type(model.similarity).__name__.lower().startswith(name)
    waves = _waves(config.data.N, config.data.crop_samples, config.data.sample_rate)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    initial = {k: v.detach().clone() for k, v in model.similarity.state_dict().items()}
    losses = []
    for _ in range(12):
        out = model(waves)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.8 * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    for key, before in initial.items():  # a learned similarity (bilinear) is trained too
        assert not torch.equal(model.similarity.state_dict()[key], before), key


def test_configured_temperature_reaches_the_cosine_similarity() -> None:
    config = load_config("1dconv_tiny", ["model.z_dim=16", "model.c_dim=16", "model.encoder.filters=8",
                                         "model.similarity.type=cosine",
                                         "model.similarity.temperature=0.25"])
    similarity = build_cpc(config).similarity
    torch.testing.assert_close(similarity(PREDICTIONS, BANK), COSINES / 0.25)
