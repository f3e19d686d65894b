"""The positive candidate sits at index 0 of the logits, for every step; the loss is
cross-entropy on those logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from audiocpc.models.loss import POSITIVE_INDEX, candidate_logits, info_nce
from audiocpc.models.negatives import sample_negatives, target_indices
from audiocpc.models.similarity import DotSimilarity

B, L, K = 4, 10, 3
D = B * L  # one orthonormal direction per frame


def _orthogonal_setup() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z rows are orthonormal, so a prediction equal to one z scores 1 on it and 0 elsewhere."""
    z = torch.eye(B * L).reshape(B, L, B * L)
    positions = torch.tensor([L - K - 1])
    targets = target_indices(B, L, positions, K)  # [B, 1, K]
    predictions = z.reshape(B * L, -1)[targets]  # each prediction equals its own positive
    return z, targets, predictions


def _reference_layout_logits(predictions: torch.Tensor, z: torch.Tensor, targets: torch.Tensor,
                             negatives: torch.Tensor) -> torch.Tensor:
    """The reference framework's defect: candidates stacked candidate-major
    ([all positive steps, then each negative's steps]) but read back step-major."""
    bank = z.reshape(-1, z.shape[-1])
    index = torch.cat([targets.unsqueeze(-1), negatives], dim=-1)  # [B, P, K, 1+M]
    cand = bank[index.transpose(-1, -2)]  # [B, P, 1+M, K, D]: candidate-major
    cand = cand.reshape(*index.shape, -1)  # misread as [B, P, K, 1+M, D]
    return (predictions.unsqueeze(-2) * cand).sum(-1)


def positive_first_violations(logits: torch.Tensor, predictions: torch.Tensor, z: torch.Tensor,
                              targets: torch.Tensor) -> int:
    """How many (b, p, k) have at index 0 something other than the score of their positive."""
    bank = z.reshape(-1, z.shape[-1])
    expected = (predictions * bank[targets]).sum(-1)
    return int((~torch.isclose(logits[..., POSITIVE_INDEX], expected)).sum())


def test_positive_is_at_index_zero_for_every_step() -> None:
    z, targets, predictions = _orthogonal_setup()
    negatives = sample_negatives("other_sequences", targets, B, L, None)
    logits = candidate_logits(predictions, z, targets, negatives, DotSimilarity(D))
    assert logits.shape == (B, 1, K, 1 + (B - 1))
    assert positive_first_violations(logits, predictions, z, targets) == 0
    # every positive scores 1, every negative 0: the positive wins for every step
    assert torch.all(logits[..., 0] == 1) and torch.all(logits[..., 1:] == 0)
    out = info_nce(logits, torch.full((K,), 1.0 / K))
    assert torch.all(out.step_accuracy == 1)


def test_reference_layout_is_caught_by_the_check() -> None:
    z, targets, predictions = _orthogonal_setup()
    negatives = sample_negatives("other_sequences", targets, B, L, None)
    wrong = _reference_layout_logits(predictions, z, targets, negatives)
    # step 1 happens to be right; steps 2 and 3 read another sequence's window as "positive"
    assert positive_first_violations(wrong, predictions, z, targets) > 0
    assert torch.all(wrong[:, :, 1:, 0] == 0)


def test_exhaustive_negatives_are_the_other_sequences_at_the_target_step() -> None:
    positions = torch.tensor([5])
    targets = target_indices(B, L, positions, K)
    negatives = sample_negatives("other_sequences", targets, B, L, None)
    assert negatives.shape == (B, 1, K, B - 1)
    for b in range(B):
        for j in range(K):
            got = sorted(negatives[b, 0, j].tolist())
            want = sorted(other * L + 5 + j + 1 for other in range(B) if other != b)
            assert got == want


def test_info_nce_is_cross_entropy_on_logits() -> None:
    torch.manual_seed(0)
    logits = torch.randn(B, 2, K, 6) * 5
    weights = torch.tensor([0.5, 0.3, 0.2])
    out = info_nce(logits, weights)
    per_step = torch.stack([
        F.cross_entropy(logits[:, :, j].reshape(-1, 6), torch.zeros(B * 2, dtype=torch.long))
        for j in range(K)])
    assert torch.allclose(out.step_loss, per_step)
    assert math.isclose(out.loss.item(), float((per_step * weights).sum()), rel_tol=1e-6)


def test_info_nce_stays_finite_for_huge_logits() -> None:
    logits = torch.full((2, 1, K, 5), 1e4)
    logits[..., 0] = 2e4  # exp() of these overflows float32; log-softmax does not
    out = info_nce(logits, torch.full((K,), 1.0 / K))
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(0.0, abs=1e-6)


def test_ties_do_not_count_as_correct() -> None:
    out = info_nce(torch.zeros(2, 1, K, 5), torch.full((K,), 1.0 / K))
    assert torch.all(out.step_accuracy == 0)
    assert out.loss.item() == pytest.approx(math.log(5), rel=1e-6)


def test_step_accuracy_counts_per_step_against_every_negative() -> None:
    """Found by mutation testing: nothing checked the per-step accuracy beyond ties. Two
    sequences, one position, three steps, three negatives; worked out by hand."""
    logits = torch.tensor([
        [[[2.0, 1.0, 0.0, 0.0],     # step 1: positive wins
          [1.0, 3.0, 0.0, 0.0],     # step 2: the first negative wins (not the last)
          [1.0, 0.0, 0.0, 5.0]]],   # step 3: the last negative wins
        [[[0.0, 1.0, 0.0, 0.0],     # step 1: the first negative wins
          [4.0, 0.0, 3.0, 0.0],     # step 2: positive wins
          [2.0, 0.0, 0.0, 1.0]]],   # step 3: positive wins
    ])
    out = info_nce(logits, torch.full((3,), 1.0 / 3))
    assert out.step_accuracy.shape == (3,)
    assert out.step_accuracy.tolist() == [0.5, 0.5, 0.5]
    assert info_nce(logits[:1], torch.full((3,), 1.0 / 3)).step_accuracy.tolist() == [1.0, 0.0, 0.0]


def test_cosine_and_bilinear_similarities_by_hand() -> None:
    """Found by mutation testing: no test used the cosine or bilinear similarity."""
    from audiocpc.models.similarity import BilinearSimilarity, CosineSimilarity

    predictions = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]])   # [2, 1, D=2]
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-6.0, -8.0]])  # [M=3, D]
    cosine = CosineSimilarity(2, temperature=0.5)(predictions, bank)
    # cos = (p / |p|) . (b / |b|), divided (not multiplied) by the temperature
    expected = torch.tensor([[[0.6, 0.8, -1.0]], [[1.0, 0.0, -0.6]]]) / 0.5
    assert cosine.shape == (2, 1, 3) and torch.allclose(cosine, expected)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        CosineSimilarity(2, temperature=0.0)

    bilinear = BilinearSimilarity(2)
    assert torch.equal(bilinear.weight, torch.eye(2))  # starts as the dot product
    assert torch.allclose(bilinear(predictions, bank), predictions @ bank.T)
    with torch.no_grad():
        bilinear.weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    # p W b: p = (3, 4) -> p W = (8, 3); against (1, 0), (0, 2), (-6, -8): 8, 6, -72
    assert bilinear(predictions, bank)[0, 0].tolist() == [8.0, 6.0, -72.0]
    assert [name for name, _ in bilinear.named_parameters()] == ["weight"]  # learned


def test_info_nce_makes_its_targets_on_the_logits_device() -> None:
    # torch's default device set to meta, the logits on the CPU: targets made without
    # device= (on a GPU run: CPU labels beside CUDA logits) land on meta and cannot mix
    logits = torch.randn(B, 2, K, 6)
    with torch.device("meta"):
        out = info_nce(logits, torch.full((K,), 1.0 / K, device="cpu"))
    assert out.loss.device.type == "cpu" and bool(torch.isfinite(out.loss))
