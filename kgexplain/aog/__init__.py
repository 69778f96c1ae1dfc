"""And-Or graphs for semantic parts (Zhang et al. 2018, §4.5; Zhang et al., AAAI 2016): learn from a few
annotated examples which explanatory-graph patterns keep a consistent offset to a part, then localise the part
on new images by letting those patterns vote."""

from kgexplain.aog.detections import Detections
from kgexplain.aog.learn import learn_part
from kgexplain.aog.model import AOGConfig, PartModel, Template
from kgexplain.aog.vote import Localisation, localise

__all__ = ["AOGConfig", "Detections", "Localisation", "PartModel", "Template", "learn_part", "localise"]
