"""Explanatory graphs (Zhang et al., "Interpreting CNN knowledge via an Explanatory Graph")."""

from kgexplain.explanatory_graph.config import EGConfig
from kgexplain.explanatory_graph.graph import ExplanatoryGraph, Inference, LayerInference, LayerPatterns
from kgexplain.explanatory_graph.miner import ExplanatoryGraphMiner

__all__ = ["EGConfig", "ExplanatoryGraph", "ExplanatoryGraphMiner", "Inference", "LayerInference", "LayerPatterns"]
