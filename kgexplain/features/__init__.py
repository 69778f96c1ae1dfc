"""Feature extraction: hooks, batched extraction for several layers, and the float16 disk cache."""

from kgexplain.features.cache import FeatureSet, cache_root
from kgexplain.features.extract import Extraction, extract_features, normalise
from kgexplain.features.hooks import Captured, capture_layers

__all__ = ["Captured", "Extraction", "FeatureSet", "cache_root", "capture_layers", "extract_features", "normalise"]
