"""Latent-variable models p(θ) ∏ₙ p(zₙ | θ) p(xₙ | zₙ, θ) that avicore's F-VI and A-VI engines fit."""

from __future__ import annotations

from .base import LatentVariableModel, LocalTerms, SimulatedData
from .custom import CustomHierarchical
from .decoder import BayesianDecoder
from .gaussian_process import GaussianProcess
from .hierarchical import FVIOptimum, HierarchicalModel, LinearHierarchical, LogJoint, NonlinearHierarchical
from .saw import SawTimeSeries
from .state_space import GaussianRandomWalk, LinearGaussianSSM, MeanFieldOptimum

__all__ = ["BayesianDecoder", "CustomHierarchical", "FVIOptimum", "GaussianProcess", "GaussianRandomWalk",
           "HierarchicalModel", "LatentVariableModel", "LinearGaussianSSM", "LinearHierarchical", "LocalTerms",
           "LogJoint", "MeanFieldOptimum", "NonlinearHierarchical", "SawTimeSeries", "SimulatedData"]
