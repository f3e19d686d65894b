"""The zc embedding: z and c of each crop side by side, pooled over the crop's frames."""

from __future__ import annotations

import numpy as np
import torch

from audiocpc import load_config
from audiocpc.evaluation.embed import embed_crops, embedding_dim
from audiocpc.models import build_cpc


def test_zc_meanstd_is_the_mean_and_std_of_z_and_c_side_by_side() -> None:
    config = load_config("cpc_tiny", ["model.z_dim=16", "model.c_dim=24", "model.encoder.filters=16"])
    torch.manual_seed(0)
    model = build_cpc(config).eval()
    crop = config.data.crop_samples
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(crop * 2).astype(np.float32) for _ in range(3)]
    starts = [np.array([0, crop // 2]), np.array([crop]), np.array([0])]
    rows, _ = embed_crops(model, waves, starts, crop, kind="zc", pool="meanstd", batch_size=2)
    assert rows.shape == (4, embedding_dim(config, "zc", "meanstd")) == (4, 2 * (16 + 24))
    with torch.no_grad():
        batch = torch.from_numpy(waves[0][crop // 2 : crop // 2 + crop]).unsqueeze(0)
        z = model.encode(batch)
        frames = torch.cat([z, model.contextualize(z)], dim=-1)[0]
    expected = torch.cat([frames.mean(0), frames.std(0, unbiased=False)]).numpy()
    np.testing.assert_allclose(rows[1], expected, rtol=1e-4, atol=1e-5)
    assert embedding_dim(config, "context", "meanstd") == 24  # one vector: not pooled


def test_the_python_api_pools_like_embed(tiny_run) -> None:  # type: ignore[no-untyped-def]
    import audiocpc

    model = audiocpc.load(tiny_run, device="cpu")
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(16000).astype(np.float32) * 0.1 for _ in range(2)]
    rows = model.embed_waveforms(waves, 8000, crops=2, kind="zc", pool="meanstd")
    config = model.config
    assert rows.shape == (2, embedding_dim(config, "zc", "meanstd"))
    sk = audiocpc.CPCTransformer(tiny_run, kind="zc", pool="meanstd", sample_rate=8000, crops=2,
                                 device="cpu")
    np.testing.assert_allclose(sk.transform(waves), rows, rtol=1e-5, atol=1e-6)


def test_context_is_c_at_the_crops_last_step_and_the_means_pool_every_frame() -> None:
    config = load_config("cpc_tiny", ["model.z_dim=16", "model.c_dim=24", "model.encoder.filters=16"])
    torch.manual_seed(0)
    model = build_cpc(config).eval()
    crop = config.data.crop_samples
    wave = np.random.default_rng(2).standard_normal(crop * 2).astype(np.float32)
    starts = [np.array([0, crop // 3])]
    with torch.no_grad():
        z = model.encode(torch.from_numpy(wave[crop // 3 : crop // 3 + crop]).unsqueeze(0))
        c = model.contextualize(z)
    assert c.shape[1] > 2   # a last step distinct from the ones before it
    expected = {"context": c[0, -1], "context_mean": c[0].mean(0), "z_mean": z[0].mean(0)}
    for kind, vector in expected.items():
        rows, _ = embed_crops(model, [wave], starts, crop, kind=kind, pool="mean", batch_size=2)
        np.testing.assert_allclose(rows[1], vector.numpy(), rtol=1e-4, atol=1e-5, err_msg=kind)
