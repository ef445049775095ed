"""A deep generative model with a Bayesian MLP decoder: zₙ ~ N(0, I), xₙ ~ N(Ω_θ(zₙ), σ² I).

The paper's largest experiment (Margossian & Blei 2024, §6: FashionMNIST). θ holds every weight and bias of the
decoder Ω and is the global factor of the variational family (mean-field Gaussian, or a point estimate with
``global_q="point"``); the zₙ are the local latents, fitted per image by F-VI or by an encoder in A-VI.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validate import as_float_array, check_choice, check_count, check_int, check_random_state, check_scalar
from .base import LatentVariableModel, LocalTerms, SimulatedData

_LOG_2PI = math.log(2.0 * math.pi)
ACTIVATIONS = ("leaky_relu", "relu", "tanh")


class BayesianDecoder(LatentVariableModel):
    """Deep generative model zₙ ~ N(0, I_d), xₙ ~ N(Ω_θ(zₙ), obs_scale² I) with an MLP decoder Ω_θ.

    Parameters
    ----------
    latent_dim : int
        Dimension d of each zₙ (>= 1).
    hidden : sequence of int
        Widths of the decoder's hidden layers (each >= 1; may be empty for a linear decoder).
    activation : {"leaky_relu", "relu", "tanh"}
        Hidden-layer nonlinearity (leaky ReLU slope 0.01). The output layer is linear.
    obs_scale : float
        Standard deviation σ of the Gaussian likelihood (> 0).
    weight_prior_scale : float
        Standard deviation of the prior N(0, s²) on every weight and bias (> 0).
    obs_dim : int, optional
        Dimension D of each xₙ (pixels). Default: taken from the first data the model sees (``validate_data``,
        called by the engines), after which it is fixed.
    init_weight_sd : float
        Initial standard deviation of q(θ) (> 0); the means start at He-normal weights (drawn from ``init_seed``),
        zero hidden biases and the data's column means as output biases.
    init_local_sd : float
        Initial standard deviation of F-VI's q(zₙ) (> 0; means start at 0). The default 0.01 matters: starting at
        sd 1 drowns the decoder's input in noise, the decoder learns to ignore z and F-VI, whose locals move once
        per epoch under minibatching, takes hundreds of epochs to recover (measured on 1,000 digits, 200 epochs
        of B = 100: training MSE 0.080 from sd 1 at lr 0.01, 0.010 from sd 0.01 at lr 0.01 decaying to 0.001).
    init_seed : int
        Seed of the initial weight means (the model is otherwise deterministic).

    Notes
    -----
    Layout of θ (``global_dim`` = Σ_l (fan_in_l + 1) · fan_out_l): per layer l = 1 … L+1 the weight matrix W_l of
    shape (fan_in, fan_out), row-major, then the bias b_l. The decoder is

        h₀ = z,   h_l = act(h_{l-1} W_l + b_l) (l ≤ L),   Ω_θ(z) = h_L W_{L+1} + b_{L+1},

    and the log joint of one row is the correctly normalised

        log p(zₙ, xₙ | θ) = −½‖zₙ‖² − ½ d log 2π − ‖xₙ − Ω_θ(zₙ)‖² / (2σ²) − D (½ log 2π + log σ).

    :meth:`local_terms` runs each Monte-Carlo sample s (its own θ_s) as one batched forward pass through the layers
    (BLAS matrix products) and one hand-written backward pass that writes ∂/∂θ into ``grad_global[s]`` in place
    and back-propagates to zₙ. Backends ``"numpy"`` (reference) and ``"numba"`` (fused serial kernels for the
    latent draws, the activations, their derivatives and the residual; :mod:`avicore.kernels.decoder`) agree to
    rounding. Cost per sample: O(B · Σ fan_in · fan_out) for the forward pass and twice that backward.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.models import BayesianDecoder
    >>> model = BayesianDecoder(2, hidden=(8,), obs_dim=5)
    >>> model.global_dim  # (2 + 1)·8 + (8 + 1)·5
    69
    >>> x = model.simulate(10, seed=0).x
    >>> terms = model.local_terms(x, np.zeros((10, 2)), np.zeros((10, 2)), np.zeros((3, 69)), seed=0, step=0,
    ...                           index=np.arange(10), backend="numpy")
    >>> terms.log_joint.shape, terms.grad_mean.shape, terms.grad_global.shape
    ((3,), (10, 2), (3, 69))
    """

    supported_backends = ("numpy", "numba", "cuda")
    supports_minibatch = True

    def __init__(self, latent_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "leaky_relu",
                 obs_scale: float = 1.0, weight_prior_scale: float = 1.0, *, obs_dim: int | None = None,
                 init_weight_sd: float = 0.01, init_local_sd: float = 0.01, init_seed: int = 0) -> None:
        self.latent_dim = check_int(latent_dim, "latent_dim", minimum=1)
        if isinstance(hidden, (int, np.integer)) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden must be a sequence of layer widths such as (256, 256); got {hidden!r}.")
        self.hidden = tuple(check_int(h, "hidden width", minimum=1) for h in hidden)
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.obs_scale = check_scalar(obs_scale, "obs_scale", positive=True)
        self.weight_prior_scale = check_scalar(weight_prior_scale, "weight_prior_scale", positive=True)
        self.init_weight_sd = check_scalar(init_weight_sd, "init_weight_sd", positive=True)
        self.init_local_sd = check_scalar(init_local_sd, "init_local_sd", positive=True)
        self.init_seed = check_int(init_seed, "init_seed", minimum=0)
        self._obs_dim: int | None = None if obs_dim is None else check_int(obs_dim, "obs_dim", minimum=1)

    def __repr__(self) -> str:
        return (f"BayesianDecoder({self.latent_dim}, hidden={self.hidden}, activation={self.activation!r}, "
                f"obs_scale={self.obs_scale}, weight_prior_scale={self.weight_prior_scale}, obs_dim={self._obs_dim})")

    # -- shapes ------------------------------------------------------------------------------------------------
    @property
    def obs_dim(self) -> int:  # type: ignore[override]
        if self._obs_dim is None:
            raise ValueError("obs_dim must be known; got a BayesianDecoder that has seen no data. Pass obs_dim= "
                             "or fit it to data first.")
        return self._obs_dim

    @property
    def layer_shapes(self) -> tuple[tuple[int, int], ...]:
        """(fan_in, fan_out) of every layer, input to output."""
        widths = (self.latent_dim, *self.hidden, self.obs_dim)
        return tuple(itertools.pairwise(widths))

    @property
    def global_dim(self) -> int:  # type: ignore[override]
        return sum((fi + 1) * fo for fi, fo in self.layer_shapes)

    @property
    def global_names(self) -> tuple[str, ...]:  # type: ignore[override]
        names: list[str] = []
        for l, (fi, fo) in enumerate(self.layer_shapes, start=1):
            names += [f"W{l}[{i},{j}]" for i in range(fi) for j in range(fo)]
            names += [f"b{l}[{j}]" for j in range(fo)]
        return tuple(names)

    def validate_data(self, x: object, name: str = "x") -> np.ndarray:
        if self._obs_dim is None:
            arr = as_float_array(x, name)
            if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
                raise ValueError(f"{name} must have shape (n_obs, obs_dim) with n_obs, obs_dim >= 1; got "
                                 f"{np.shape(x)}.")
            self._obs_dim = int(arr.shape[1])
        return super().validate_data(x, name)

    def unpack(self, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views (W_l (fan_in, fan_out), b_l (fan_out,)) into one flat θ of shape (global_dim,)."""
        layers, o = [], 0
        for fi, fo in self.layer_shapes:
            w = theta[o:o + fi * fo].reshape(fi, fo)
            o += fi * fo
            layers.append((w, theta[o:o + fo]))
            o += fo
        return layers

    # -- the model ---------------------------------------------------------------------------------------------
    def decode(self, z: object, theta: object) -> np.ndarray:
        """The decoder's output Ω_θ(z).

        Parameters
        ----------
        z : array-like of shape (n, latent_dim)
            Latent codes.
        theta : array-like of shape (global_dim,)
            Decoder weights (e.g. ``result.global_mean``).

        Returns
        -------
        ndarray of shape (n, obs_dim)

        Examples
        --------
        >>> import numpy as np
        >>> from avicore.models import BayesianDecoder
        >>> model = BayesianDecoder(2, hidden=(4,), obs_dim=3)
        >>> model.decode(np.zeros((5, 2)), np.zeros(model.global_dim)).shape
        (5, 3)
        """
        from ..kernels.decoder import ACTIVATION_CODES, activation_numpy

        za = as_float_array(z, "z", shape=(None, self.latent_dim))
        th = as_float_array(theta, "theta", shape=(self.global_dim,))
        code = ACTIVATION_CODES[self.activation]
        layers = self.unpack(th)
        h = za
        for l, (w, b) in enumerate(layers):
            h = h @ w + b
            if l < len(layers) - 1:
                activation_numpy(h, code)
        return h

    def simulate(self, n: int, seed: int | np.random.Generator | None = None, *,
                 theta: object = None) -> SimulatedData:
        """Draw θ from its prior (unless given), zₙ ~ N(0, I) and xₙ ~ N(Ω_θ(zₙ), σ² I).

        Examples
        --------
        >>> from avicore.models import BayesianDecoder
        >>> BayesianDecoder(2, hidden=(4,), obs_dim=3).simulate(6, seed=0).x.shape
        (6, 3)
        """
        n = check_count(n, "n", 32 * (self.obs_dim + self.latent_dim), "observations")
        rng = check_random_state(seed)
        if theta is None:
            th = rng.normal(0.0, self.weight_prior_scale, self.global_dim)
        else:
            th = as_float_array(theta, "theta", shape=(self.global_dim,)).copy()
        z = rng.standard_normal((n, self.latent_dim))
        x = self.decode(z, th) + self.obs_scale * rng.standard_normal((n, self.obs_dim))
        return SimulatedData(x=x, z=z, theta=th)

    def log_prior_global(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log p(θ) = Σ_j log N(θ_j; 0, s²) per row of ``theta`` (S, global_dim), and its gradient −θ/s²."""
        s2 = self.weight_prior_scale ** 2
        const = theta.shape[1] * (0.5 * _LOG_2PI + math.log(self.weight_prior_scale))
        value = -0.5 * np.einsum("ij,ij->i", theta, theta) / s2 - const
        return value, theta * (-1.0 / s2)

    def init_global(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """He-normal weight means (variance 2/fan_in; 1/fan_in for the output layer), zero hidden biases, the data's
        column means as output biases, and sd ``init_weight_sd`` everywhere."""
        rng = np.random.default_rng(self.init_seed)
        mean = np.zeros(self.global_dim)
        layers = self.unpack(mean)
        for l, (w, _) in enumerate(layers):
            gain = 1.0 if l == len(layers) - 1 else 2.0
            w[...] = rng.normal(0.0, math.sqrt(gain / w.shape[0]), w.shape)
        layers[-1][1][...] = x.mean(axis=0)
        return mean, np.full(self.global_dim, math.log(self.init_weight_sd))

    def init_local(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F-VI's initial q(zₙ): mean 0 and sd ``init_local_sd``."""
        n = x.shape[0]
        return np.zeros((n, self.latent_dim)), np.full((n, self.latent_dim), math.log(self.init_local_sd))

    def local_terms(self, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray, theta: np.ndarray, *,
                    seed: int, step: int, index: np.ndarray, backend: str) -> LocalTerms:
        """The batched reparameterised forward/backward pass (see :class:`~avicore.models.base.LocalTerms`)."""
        from ..kernels.decoder import ACTIVATION_CODES, KERNELS
        from .hierarchical import check_local_inputs

        check_local_inputs(self, x, mean, log_scale, theta, index)
        if backend not in self.supported_backends:
            raise ValueError(f"backend must be one of {self.supported_backends} for BayesianDecoder; got {backend!r}.")
        code = ACTIVATION_CODES[self.activation]
        n_samples, n_rows, d = theta.shape[0], x.shape[0], self.latent_dim
        inv_var = 1.0 / self.obs_scale ** 2
        const = n_rows * (d * 0.5 * _LOG_2PI + self.obs_dim * (0.5 * _LOG_2PI + math.log(self.obs_scale)))
        if backend == "cuda":  # the same pass with every intermediate array on the device
            from ..kernels._decoder_cuda import local_terms_cuda

            return local_terms_cuda(self.layer_shapes, code, inv_var, const, x, mean, log_scale, theta, seed, step,
                                    index)
        draw, act, act_grad, residual = KERNELS[backend]
        z_all, eps = draw(seed, step, index, mean, log_scale, n_samples)
        log_joint = np.empty(n_samples)
        grad_global = np.empty_like(theta)
        grad_mean = np.zeros_like(mean)
        grad_log_scale = np.zeros_like(mean)
        for s in range(n_samples):
            z = z_all[s]
            layers = self.unpack(theta[s])
            grads = self.unpack(grad_global[s])
            hs = [z]
            for l, (w, b) in enumerate(layers):  # forward: hs[l] is the input of layer l
                h = hs[-1] @ w
                h += b
                if l < len(layers) - 1:
                    act(h, code)
                hs.append(h)
            g = hs.pop()  # the output Ω(z), overwritten by ∂ log p / ∂Ω = (x − Ω)/σ²
            sq = residual(x, g, inv_var)
            for l in range(len(layers) - 1, -1, -1):  # backward: g = ∂ log p / ∂(pre-activation of layer l)
                w = layers[l][0]
                gw, gb = grads[l]
                np.matmul(hs[l].T, g, out=gw)
                np.sum(g, axis=0, out=gb)
                g = g @ w.T
                if l > 0:
                    act_grad(g, hs[l], code)
            g -= z  # ∂/∂z of the local prior −½‖z‖²
            log_joint[s] = -0.5 * inv_var * sq - 0.5 * float(np.einsum("ij,ij->", z, z)) - const
            grad_mean += g
            g *= eps[s]
            grad_log_scale += g
        grad_mean /= n_samples
        grad_log_scale *= np.exp(log_scale) / n_samples
        return LocalTerms(log_joint=log_joint, grad_mean=grad_mean, grad_log_scale=grad_log_scale,
                          grad_global=grad_global)


def reconstruction_mse(result: Any, x: object = None, *, n_iter: int = 500, lr: float = 0.05,
                       n_samples: int | None = None, seed: int | np.random.Generator | None = 0) -> float:
    """Mean squared reconstruction error of Ω(mean of q(zₙ); mean of q(θ)) per pixel.

    Parameters
    ----------
    result : VIResult
        An F-VI or A-VI fit of a :class:`BayesianDecoder`.
    x : array-like of shape (n, obs_dim), optional
        Images to reconstruct. None (default): the training data, with the fitted q(zₙ).
        Held-out images get their q(zₙ) from the encoder for A-VI (:meth:`~avicore.VIResult.encode`) and, for F-VI
        (which has no inference function), from a new F-VI fit of the locals alone with the decoder frozen at the
        fitted q(θ): ``FVI(model).fit(x, fix_global=result, ...)``.
    n_iter, lr, n_samples, seed :
        Settings of that held-out F-VI fit (full batch; ``n_samples`` defaults to the result's); unused otherwise.

    Returns
    -------
    float
        mean over images and pixels of (xₙ − Ω(mₙ; μ_θ))².

    Examples
    --------
    >>> import avicore
    >>> from avicore.encoders import MLP
    >>> from avicore.models import BayesianDecoder
    >>> from avicore.models.decoder import reconstruction_mse
    >>> model = BayesianDecoder(2, hidden=(8,), obs_dim=4, obs_scale=0.3)
    >>> data = model.simulate(60, seed=0)
    >>> res = avicore.AVI(model, MLP(8), n_samples=2, elbo_samples=2).fit(data.x[:50], n_iter=50, lr=0.01, seed=0)
    >>> train, held_out = reconstruction_mse(res), reconstruction_mse(res, data.x[50:])
    >>> bool(train > 0 and held_out > 0)
    True
    """
    model = getattr(result, "model", None)
    if not isinstance(model, BayesianDecoder):
        raise TypeError(f"result must be a VIResult of a BayesianDecoder fit; got {type(result).__name__}.")
    if x is None:
        xa, z = result.x, result.local_mean
    else:
        xa = model.validate_data(x, "x")
        if result.method == "A-VI":
            z, _ = result.encode(xa)
        else:
            from ..inference import FVI

            point = bool(np.all(result.global_sd == 0))
            samples = result.n_samples if n_samples is None else check_int(n_samples, "n_samples", minimum=1)
            engine = FVI(model, n_samples=samples, backend=result.backend, elbo_samples=2,
                         global_q="point" if point else "gaussian")
            z = engine.fit(xa, n_iter=n_iter, lr=lr, seed=seed, fix_global=result).local_mean
    recon = model.decode(z, result.global_mean)
    return float(np.mean((xa - recon) ** 2))
