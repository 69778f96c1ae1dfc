"""The procedural reference data set: articulated animal-like objects with ground-truth parts and masks."""

from kgexplain.data.synth.animals import ANIMALS, KEYPOINTS
from kgexplain.data.synth.dataset import GENERATOR_VERSION, SynthSource, write_synth
from kgexplain.data.synth.scene import BACKGROUND, CATEGORIES, SynthImage, render

__all__ = [
    "ANIMALS",
    "BACKGROUND",
    "CATEGORIES",
    "GENERATOR_VERSION",
    "KEYPOINTS",
    "SynthImage",
    "SynthSource",
    "render",
    "write_synth",
]
