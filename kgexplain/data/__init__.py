"""Data sources: image folders, the annotations JSON, CUB-200-2011 and the synthetic reference set."""

from kgexplain.data.annotations import AnnotatedImages, write_annotations
from kgexplain.data.base import Affine, Framed, Framing, ImageSource, Record
from kgexplain.data.cub import CubDataset
from kgexplain.data.folder import ImageFolder
from kgexplain.data.images import LoadReport, load_rgb
from kgexplain.data.subset import Subset

__all__ = [
    "Affine",
    "AnnotatedImages",
    "CubDataset",
    "Framed",
    "Framing",
    "ImageFolder",
    "ImageSource",
    "LoadReport",
    "Record",
    "Subset",
    "load_rgb",
    "write_annotations",
]
