"""O(N²) Newton steps on the mean of a mean-field q(f) under a GP prior: preconditioned conjugate gradients.

With the variances fixed, the mean-field ELBO in the mean m is F(m) = Σₙ Eₙ(mₙ) − ½ mᵀK⁻¹m (K here is the
jittered K + jitter·I the model factorised). Its gradient is G = g − α with g = ∂ΣE/∂m and α = K⁻¹m, its Hessian
−(K⁻¹ + Λ), Λ = diag(λ), λₙ = −2 ∂Eₙ/∂vₙ. The solvers carry α alongside m (m = Kα), so no K⁻¹ is ever applied,
and write the Newton step Δm = (K⁻¹ + Λ)⁻¹G as (Rasmussen & Williams 2006, Alg. 3.1, with W = Λ)::

    B z = Λ^½ K G,    B = I + Λ^½ K Λ^½,    δα = G − Λ^½ z,    Δm = K δα = KG − K Λ^½ z.

B has eigenvalues in [1, 1 + max λ · ‖K‖] whatever K's condition number, and is solved by conjugate gradients
(one symmetric K-matvec, N² memory reads, per step; KΛ^½z is accumulated from the steps' own products, so Δm costs
no extra matvec). The preconditioner is B with K replaced by a pivoted-Cholesky factor VVᵀ (rank ≤ ``max_rank``,
computed once per K, O(N r²)) plus the residual diagonal — exact for the smooth kernels (RBF: rank ~30 captures K
to 1e-10 of its trace, and CG converges in one or two steps), still a large saving for rough ones (Matérn-1/2).
CG from z = 0 increases cᵀz monotonically towards cᵀB⁻¹c, so every truncated solve gives an ascent direction
(GᵀΔm = GᵀKG − cᵀz ≥ Gᵀ(K⁻¹ + Λ)⁻¹G ≥ 0): the line search on the exact ELBO keeps the iteration globally
convergent however loosely it is solved. The solve stops at the relative residual η = min(10⁻³, ‖c‖/‖c₀‖)
(an inexact-Newton forcing term that tightens as the gradient falls, c₀ the first system's right-hand side).

When the preconditioner is exact to rounding — max λ · tr(K − VVᵀ) ≤ ``DIRECT_TOL``, a bound on ‖B − P‖₂ — the
step skips CG: δα = (I + ΛK̃)⁻¹G with K̃ = VVᵀ + diag(K − VVᵀ + jitter), O(N r), and Δm = Kδα by the iteration's
one K-matvec, so m = Kα stays exact and the line search sees the true ELBO. The step is used when its slope GᵀΔm
is positive (an ascent direction), else the CG solve is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import dsymv

#: Largest rank of the pivoted-Cholesky preconditioner, its stopping tolerance (residual trace relative to tr K),
#: the largest and smallest forcing term, and the most CG steps in one solve.
MAX_RANK = 100
RANK_RTOL = 1e-10
ETA_MAX, ETA_MIN = 1e-3, 1e-12
MAX_CG = 200
#: The preconditioner counts as exact, and its own solve is taken as the step (no CG), when max λ · tr(K − VVᵀ),
#: a bound on ‖B − P‖₂, is at most this.
DIRECT_TOL = 1e-6


def kernel_matvec(factor: object, x: np.ndarray) -> np.ndarray:
    """(K + jitter·I) x by BLAS symv on the F-ordered view Kᵀ = K (one triangle read, no copy)."""
    out = dsymv(1.0, factor.K.T, x)
    if factor.jitter:
        out += factor.jitter * x
    return out


def pivoted_cholesky(K: np.ndarray, max_rank: int = MAX_RANK, rtol: float = RANK_RTOL
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Partial pivoted Cholesky K ≈ VVᵀ (Harbrecht, Peters & Schneider 2012): (V of shape (n, r), the residual
    diagonal diag(K − VVᵀ) ≥ 0). Stops when the residual trace falls below ``rtol``·tr K or at rank ``max_rank``."""
    n = K.shape[0]
    d = np.diag(K).astype(np.float64, copy=True)
    stop = rtol * float(d.sum())
    Vt = np.zeros((min(max_rank, n), n))  # Vᵀ: each new column of V is a contiguous row here
    for k in range(Vt.shape[0]):
        if float(d.sum()) <= stop:
            return Vt[:k].T, d
        i = int(np.argmax(d))
        col = K[i] - Vt[:k, i] @ Vt[:k]  # K symmetric: its row i (contiguous) is its column i
        col /= np.sqrt(d[i])
        Vt[k] = col
        d -= col * col
        d[i] = 0.0
        np.maximum(d, 0.0, out=d)
    return Vt.T, d


@dataclass(frozen=True)
class NewtonStep:
    """A (possibly truncated) Newton step: ``dm`` = Δm, ``dalpha`` = δα = K⁻¹Δm, ``slope`` = GᵀΔm ≥ 0 (twice the
    predicted gain; an upper bound on the exact Newton decrement when truncated) and ``cg_steps``."""

    dm: np.ndarray
    dalpha: np.ndarray
    slope: float
    cg_steps: int


class NewtonCG:
    """The Newton solves for one prior factor (see the module notes); ``c0`` is the first right-hand side's norm."""

    def __init__(self, factor: object, max_rank: int = MAX_RANK) -> None:
        self.factor = factor
        V, residual = pivoted_cholesky(factor.K, max_rank)
        self.V = np.ascontiguousarray(V)
        self.residual = residual + factor.jitter
        self.residual_trace = float(residual.sum())
        self.c0: float | None = None

    def smooth(self, target: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(α, m = Kα) with α = (K̃ + diag(noise))⁻¹ target, K̃ = VVᵀ + diag(K − VVᵀ + jitter): a GP-regression
        smoothing of ``target`` in O(N r²) by Woodbury, m exact by one K-matvec (no K⁻¹ product)."""
        D = self.residual + noise
        Vd = self.V / D[:, None]
        inner = self.V.T @ Vd
        inner[np.diag_indices_from(inner)] += 1.0
        alpha = target / D - Vd @ np.linalg.solve(inner, Vd.T @ target)
        return alpha, kernel_matvec(self.factor, alpha)

    def step(self, lam: np.ndarray, G: np.ndarray) -> NewtonStep:
        """The Newton step for the curvatures ``lam`` ≥ 0 and the gradient ``G`` = g − α."""
        factor, root = self.factor, np.sqrt(lam)
        direct = float(lam.max(initial=0.0)) * self.residual_trace <= DIRECT_TOL
        # Preconditioner P = D + WWᵀ, D = I + Λ·diag(K − VVᵀ + jitter), W = Λ^½V; P⁻¹ by Woodbury.
        D = 1.0 + lam * self.residual
        W = root[:, None] * self.V
        Wd = W / D[:, None]
        inner = W.T @ Wd
        inner[np.diag_indices_from(inner)] += 1.0
        inner_inv = np.linalg.inv(inner)  # r × r, eigenvalues ≥ 1

        def precondition(x: np.ndarray) -> np.ndarray:
            return x / D - Wd @ (inner_inv @ (Wd.T @ x))

        if direct:
            # P = B up to ‖B − P‖ ≤ DIRECT_TOL: δα = (I + ΛK̃)⁻¹G with K̃ = VVᵀ + diag(K − VVᵀ + jitter) (O(N r)),
            # and Δm = K δα exactly, by the iteration's one K-matvec (m = Kα stays exact whatever δα is).
            dalpha = G - root * precondition(root * (self.V @ (self.V.T @ G) + self.residual * G))
            dm = kernel_matvec(factor, dalpha)
            slope = float(G @ dm)
            if slope > 0.0 or not G.any():
                return NewtonStep(dm=dm, dalpha=dalpha, slope=max(slope, 0.0), cg_steps=0)
        KG = kernel_matvec(factor, G)
        c = root * KG
        c_norm = float(np.sqrt(c @ c))
        if self.c0 is None:
            self.c0 = c_norm
        eta = max(ETA_MIN, min(ETA_MAX, c_norm / self.c0 if self.c0 > 0.0 else 0.0))
        z, Kz = np.zeros_like(c), np.zeros_like(c)
        res = c.copy()
        s = precondition(res)
        p, rs = s, float(res @ s)
        steps = 0
        while steps < MAX_CG and float(np.sqrt(res @ res)) > eta * c_norm:
            Kp = kernel_matvec(factor, root * p)
            Bp = p + root * Kp
            pBp = float(p @ Bp)
            if not pBp > 0.0:  # rounding at convergence
                break
            step = rs / pBp
            z += step * p
            Kz += step * Kp
            res -= step * Bp
            s = precondition(res)
            rs_new = float(res @ s)
            p = s + (rs_new / rs) * p
            rs = rs_new
            steps += 1
        dm = KG - Kz
        return NewtonStep(dm=dm, dalpha=G - root * z, slope=float(G @ dm), cg_steps=steps)
