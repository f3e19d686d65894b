"""Model components (encoders, context networks, predictors, similarities) and the CPC model.

Importing the package registers the built-in components (each module's `@register`
decorators run), as timm's model modules do; `registry` itself imports none of them.
"""

from audiocpc.models import context, encoders, logmel, predictors, similarity  # noqa: F401  (registers)
from audiocpc.models.cpc import CPCModel, CPCOutput
from audiocpc.models.factory import build_cpc, build_encoder
from audiocpc.models.negatives import NegativeSampling
from audiocpc.models.registry import register, registered

__all__ = ["CPCModel", "CPCOutput", "NegativeSampling", "build_cpc", "build_encoder", "register",
           "registered"]
