"""`import audiocpc.hear`: the HEAR module (HEAR loads an API module by name).

    model = audiocpc.hear.load_model("results/cpc/mymodel")
    embeddings, timestamps = audiocpc.hear.get_timestamp_embeddings(audio, model)
    scene = audiocpc.hear.get_scene_embeddings(audio, model)

The implementation is in audiocpc/evaluation/hear.py.
"""

from audiocpc.evaluation.hear import (HEAR_SAMPLE_RATES, HearModel, get_scene_embeddings,
                                      get_timestamp_embeddings, load_model)

__all__ = ["HEAR_SAMPLE_RATES", "HearModel", "get_scene_embeddings", "get_timestamp_embeddings",
           "load_model"]
