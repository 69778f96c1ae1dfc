"""Models: the registry of architectures, weights loading, layer names and the toy net."""

from kgexplain.models.layers import LayerSpec
from kgexplain.models.registry import ARCHITECTURES, ModelHandle, load_model

__all__ = ["ARCHITECTURES", "LayerSpec", "ModelHandle", "load_model"]
