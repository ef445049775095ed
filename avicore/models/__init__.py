"""Latent-variable models p(θ) ∏ₙ p(zₙ | θ) p(xₙ | zₙ, θ) that avicore's F-VI and A-VI engines fit."""

from __future__ import annotations

from .base import LatentVariableModel, LocalTerms, SimulatedData

__all__ = ["LatentVariableModel", "LocalTerms", "SimulatedData"]
