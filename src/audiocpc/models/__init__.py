"""Model components (encoders, context networks, predictors, similarities) and the CPC model."""

from audiocpc.models.cpc import CPCModel, CPCOutput
from audiocpc.models.registry import register, registered

__all__ = ["CPCModel", "CPCOutput", "register", "registered"]
