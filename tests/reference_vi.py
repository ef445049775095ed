"""A conjugate Gaussian stand-in model with vector latents, written only for the engine tests, and its exact answers.

    θ ~ N(0, s² I_d),   zₙ ~ N(0, I_d),   xₙ | zₙ, θ ~ N(A zₙ + θ, diag σ²)      (A: d × d)

The joint is Gaussian, so the engine's mean-field family has a closed-form optimum (exact posterior means,
variances 1/diag(precision)), a closed-form ELBO for any mean-field Gaussian q, and the evidence is known.
``local_terms`` is plain NumPy on the counter generator's local noise (avicore.kernels._counter_normal), independent
of the model engineer's fused kernels; it records the row indices it is given (minibatch tests).
"""

from __future__ import annotations

import math

import numpy as np

from avicore.kernels._counter_normal import local_normals
from avicore.models.base import LatentVariableModel, LocalTerms, SimulatedData

LOG_2PI = math.log(2.0 * math.pi)


class ConjugateGaussian(LatentVariableModel):
    supported_backends = ("numpy",)

    def __init__(self, A, noise_sd, prior_scale: float = 2.0, record: bool = False) -> None:
        self.A = np.asarray(A, dtype=np.float64)
        self.noise_sd = np.asarray(noise_sd, dtype=np.float64)
        self.prior_scale = float(prior_scale)
        self.latent_dim = self.global_dim = self.obs_dim = self.A.shape[0]
        self.record = record
        self.seen: list[np.ndarray] = []

    def __repr__(self) -> str:
        return f"ConjugateGaussian(d={self.latent_dim})"

    def simulate(self, n, seed=None):
        rng = np.random.default_rng(seed)
        theta = rng.normal(0.0, self.prior_scale, self.global_dim)
        z = rng.standard_normal((n, self.latent_dim))
        x = z @ self.A.T + theta + self.noise_sd * rng.standard_normal((n, self.obs_dim))
        return SimulatedData(x=x, z=z, theta=theta)

    def log_prior_global(self, theta):
        s2 = self.prior_scale ** 2
        value = -0.5 * np.sum(theta ** 2, axis=1) / s2 - 0.5 * self.global_dim * (LOG_2PI + math.log(s2))
        return value, -theta / s2

    def local_terms(self, x, mean, log_scale, theta, *, seed, step, index, backend):
        if self.record:
            self.seen.append(index.copy())
        eps = local_normals(seed, step, index, theta.shape[0], self.latent_dim)  # (B, S, d)
        scale = np.exp(log_scale)
        z = mean[:, None, :] + scale[:, None, :] * eps
        inv_var = 1.0 / self.noise_sd ** 2
        r = x[:, None, :] - z @ self.A.T - theta[None, :, :]
        value = (-0.5 * np.sum(z ** 2, axis=2) - 0.5 * np.sum(r * r * inv_var, axis=2)
                 - self.latent_dim * LOG_2PI - np.sum(np.log(self.noise_sd)))
        g_theta = r * inv_var
        g_z = -z + g_theta @ self.A
        return LocalTerms(log_joint=value.sum(axis=0), grad_mean=g_z.mean(axis=1),
                          grad_log_scale=(g_z * eps).mean(axis=1) * scale, grad_global=g_theta.sum(axis=0))

    # -- exact answers --------------------------------------------------------------------------------------
    def _precisions(self, n):
        inv_var = 1.0 / self.noise_sd ** 2
        lam_z = np.eye(self.latent_dim) + self.A.T @ (inv_var[:, None] * self.A)
        lam_theta = n * np.diag(inv_var) + np.eye(self.global_dim) / self.prior_scale ** 2
        return lam_z, lam_theta

    def posterior_theta(self, x):
        n = x.shape[0]
        cov_x = self.A @ self.A.T + np.diag(self.noise_sd ** 2)
        prec = n * np.linalg.inv(cov_x) + np.eye(self.global_dim) / self.prior_scale ** 2
        mean = np.linalg.solve(prec, np.linalg.solve(cov_x, x.sum(axis=0)))
        return mean, prec

    def fvi_optimum(self, x):
        """(local_mean, local_sd, global_mean, global_sd) of the mean-field optimum."""
        lam_z, lam_theta = self._precisions(x.shape[0])
        mu, _ = self.posterior_theta(x)
        gain = np.linalg.solve(lam_z, self.A.T * (1.0 / self.noise_sd ** 2))
        local_mean = (x - mu) @ gain.T
        local_sd = np.tile(1.0 / np.sqrt(np.diag(lam_z)), (x.shape[0], 1))
        return local_mean, local_sd, mu, 1.0 / np.sqrt(np.diag(lam_theta))

    def exact_elbo(self, x, local_mean, local_sd, global_mean, global_sd):
        n, d = local_mean.shape
        v, vt, s2 = local_sd ** 2, global_sd ** 2, self.prior_scale ** 2
        inv_var = 1.0 / self.noise_sd ** 2
        prior = -0.5 * (global_mean @ global_mean + vt.sum()) / s2 - 0.5 * d * (LOG_2PI + math.log(s2))
        local_prior = -0.5 * (np.sum(local_mean ** 2) + v.sum()) - 0.5 * n * d * LOG_2PI
        r = x - local_mean @ self.A.T - global_mean
        # E (A z)_j² variance part: Σ_k A_jk² v_nk
        lik = (-0.5 * np.sum((r ** 2 + v @ (self.A ** 2).T + vt) * inv_var)
               - n * (0.5 * d * LOG_2PI + np.sum(np.log(self.noise_sd))))
        entropy = 0.5 * (LOG_2PI + 1.0) * (n * d + d) + np.sum(np.log(local_sd)) + np.sum(np.log(global_sd))
        return float(prior + local_prior + lik + entropy)

    def log_evidence(self, x):
        n, p = x.shape
        cov = np.kron(np.eye(n), self.A @ self.A.T + np.diag(self.noise_sd ** 2))
        cov += self.prior_scale ** 2 * np.kron(np.ones((n, n)), np.eye(p))
        _, logdet = np.linalg.slogdet(cov)
        flat = x.reshape(-1)
        return float(-0.5 * (flat @ np.linalg.solve(cov, flat) + logdet + n * p * LOG_2PI))
