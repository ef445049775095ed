"""Inference functions for amortized VI: ``Constant``, ``Polynomial`` and ``MLP`` encoders, and input windows.

An encoder maps the inputs uₙ of each observation to the parameters of its variational factor,
q(zₙ) = N(mean(uₙ), diag exp(log_scale(uₙ))²). Its parameters are one flat float64 vector φ, so that the optimizer
updates them in one vectorised step, and its forward and backward passes are hand-written and batched over the
rows (NumPy matmuls, i.e. BLAS). The MLP's passes run in fixed blocks of rows on avicore's threads
(:mod:`avicore._threads`; one BLAS thread per block during a fit), each block's gradient kept apart and the blocks
added in order, so the results are the same bits for any :func:`avicore.set_num_threads`.

An :class:`Encoder` is an immutable specification (``MLP(16)``). :meth:`Encoder.bind` fixes it to a data set and a
latent dimension and returns a :class:`BoundEncoder`, which owns the parameter-free preprocessing of the inputs
(the standardisation affine maps, the polynomial features) so that fresh data is transformed exactly like the
training data.

Expanded input domain (windows)
-------------------------------
For time series the encoder may need zₙ's Markov blanket, e.g. (xₙ, xₙ₊₁). :func:`window_inputs` builds, for a
``window`` of integer offsets k, the row

    uₙ = (x_{n+k₁}, …, x_{n+k_W}, mask_{n,k} for every k ≠ 0 in the window)

where x_{n+k} is replaced by zeros when n + k falls outside its sequence, and mask_{n,k} = 1 if n + k lies inside
it, else 0 (offset 0 always lies inside, so it has no mask column). The mask columns come last.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._threads import row_blocks, run_blocks
from ._validate import as_float_array, check_allocation, check_bool, check_choice, check_int, check_random_state

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "softplus")
HEADS = ("shared", "separate")
_LEAKY_SLOPE = 0.01


# ---------------------------------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------------------------------

def check_window(window: object) -> tuple[int, ...]:
    """Validate a window of offsets: a non-empty sequence of distinct integers → tuple of int."""
    if isinstance(window, (str, bytes)) or not isinstance(window, Sequence):
        raise TypeError(f"window must be a sequence of distinct integer offsets such as (0,) or (0, 1); "
                        f"got {type(window).__name__}.")
    offsets = tuple(check_int(k, f"window[{i}]") for i, k in enumerate(window))
    if not offsets:
        raise ValueError("window must hold at least one offset; got an empty sequence.")
    if len(set(offsets)) != len(offsets):
        raise ValueError(f"window must hold distinct offsets; got {offsets}.")
    return offsets


def window_inputs(x: np.ndarray, window: Sequence[int] = (0,), offsets: np.ndarray | None = None) -> np.ndarray:
    """Encoder inputs of an expanded domain: each row's window of observations and its edge masks.

    Parameters
    ----------
    x : array-like of shape (n_obs, n_features)
        Per-observation inputs (finite reals).
    window : sequence of int
        Distinct offsets k; row n sees x_{n+k} for each k, in the order given.
    offsets : ndarray of shape (n_sequences + 1,), int64, optional
        Sequence boundaries (``avicore._validate.check_lengths``): a neighbour in another sequence counts as
        missing. Default: one sequence.

    Returns
    -------
    ndarray of shape (n_obs, len(window) * n_features + n_masks)
        The blocks x_{n+k} (zeros where n + k leaves the sequence), then one 0/1 mask column for each nonzero
        offset (``n_masks`` = number of nonzero offsets). ``window=(0,)`` returns a copy of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.encoders import window_inputs
    >>> window_inputs(np.array([[1.0], [2.0], [3.0]]), window=(0, 1))
    array([[1., 2., 1.],
           [2., 3., 1.],
           [3., 0., 0.]])
    """
    offs = check_window(window)
    x = as_float_array(x, "x", ndim=2)
    n, f = x.shape
    if offsets is None:
        offsets = np.array([0, n], dtype=np.int64)
    seq = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    start, stop = offsets[seq], offsets[seq + 1]
    nonzero = [k for k in offs if k != 0]
    out = np.zeros((n, len(offs) * f + len(nonzero)))
    rows = np.arange(n)
    col_mask = len(offs) * f
    for i, k in enumerate(offs):
        src = rows + k
        inside = (src >= start) & (src < stop)
        out[inside, i * f:(i + 1) * f] = x[src[inside]]
        if k != 0:
            out[:, col_mask] = inside
            col_mask += 1
    return out


def _n_masks(window: Sequence[int]) -> int:
    return sum(1 for k in window if k != 0)


# ---------------------------------------------------------------------------------------------------------------
# Standardisation
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Affine:
    """The column-wise affine map u ↦ (u − shift) / scale fixed on the training inputs.

    Attributes
    ----------
    shift, scale : ndarray of shape (n_columns,)
        Column means and standard deviations of the training inputs (scale 1 for constant columns; shift 0 and
        scale 1 for columns left as they are).
    """

    shift: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, u: np.ndarray, keep: int = 0) -> Affine:
        """Standardise every column of ``u`` but the last ``keep`` (mask columns pass through unchanged)."""
        f = u.shape[1]
        shift = np.zeros(f)
        scale = np.ones(f)
        k = f - keep
        if k > 0 and u.shape[0] > 0:
            cols = u[:, :k]
            with np.errstate(over="ignore", invalid="ignore"):
                shift[:k] = cols.mean(axis=0)
                sd = cols.std(axis=0)
            if not (np.isfinite(shift[:k]).all() and np.isfinite(sd).all()):  # |u| near the float64 limit:
                big = np.abs(cols).max(axis=0)  # the same moments of u / max|u|, scaled back
                big[big == 0] = 1.0
                shift[:k] = (cols / big).mean(axis=0) * big
                sd = (cols / big).std(axis=0) * big
            scale[:k] = np.where(sd > 1e-12 * np.maximum(1.0, np.abs(shift[:k])), sd, 1.0)
        return cls(shift=shift, scale=scale)

    def __call__(self, u: np.ndarray) -> np.ndarray:
        return (u - self.shift) / self.scale


# ---------------------------------------------------------------------------------------------------------------
# Specifications and bound encoders
# ---------------------------------------------------------------------------------------------------------------

class BoundEncoder(ABC):
    """An encoder fixed to its input columns and latent dimension.

    Attributes
    ----------
    n_inputs : int
        Columns of the raw inputs u (:func:`window_inputs`).
    latent_dim : int
        d, the dimension of each zₙ.
    n_params : int
        Length of the flat parameter vector φ.

    Notes
    -----
    The pass over the rows is split in two: :meth:`design` (parameter-free: standardisation, polynomial features),
    computed once per data set, and :meth:`forward` / :meth:`backward` on the design rows, run every iteration.
    """

    n_inputs: int
    latent_dim: int
    n_params: int

    @abstractmethod
    def design(self, u: np.ndarray) -> np.ndarray:
        """Parameter-free transform of raw inputs (n, n_inputs) → design rows (n, n_design)."""

    @abstractmethod
    def init_params(self, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Initial flat parameter vector (n_params,)."""

    @abstractmethod
    def forward(self, params: np.ndarray, design: np.ndarray,
                keep: bool = False) -> tuple[np.ndarray, np.ndarray, object]:
        """Design rows → (mean (n, d), log_scale (n, d), cache for :meth:`backward` if ``keep`` else None)."""

    @abstractmethod
    def backward(self, params: np.ndarray, cache: object, grad_mean: np.ndarray,
                 grad_log_scale: np.ndarray) -> np.ndarray:
        """Gradient of Σₙ (g_meanₙ · meanₙ + g_log_scaleₙ · log_scaleₙ) w.r.t. φ, flat (n_params,)."""

    def jacobian(self, params: np.ndarray, design: np.ndarray) -> np.ndarray:
        """Per-row Jacobian of the outputs: shape (n, 2d, n_params), rows (mean₀ … mean_d−1, log_scale₀ …).

        The default takes central differences of :meth:`forward` (step 1e-6 of max(1, |φⱼ|)); the encoders linear
        in φ (Constant, Polynomial) and :class:`MLP` override it with exact ones.
        """
        n, d = design.shape[0], self.latent_dim
        jac = self._jacobian_array(n)
        for j in range(self.n_params):
            h = 1e-6 * max(1.0, abs(float(params[j])))
            up, down = params.copy(), params.copy()
            up[j] += h
            down[j] -= h
            mp, lp, _ = self.forward(up, design)
            mm, lm, _ = self.forward(down, design)
            jac[:, :d, j] = (mp - mm) / (2.0 * h)
            jac[:, d:, j] = (lp - lm) / (2.0 * h)
        return jac

    def _jacobian_array(self, n: int) -> np.ndarray:
        """A zeroed (n, 2d, n_params) Jacobian, refused (ValueError naming ``design``) beyond physical memory."""
        d = self.latent_dim
        check_allocation(8 * n * 2 * d * self.n_params, "design",
                         f"{n} rows × {2 * d} outputs × {self.n_params} parameters (a dense Jacobian)")
        return np.zeros((n, 2 * d, self.n_params))

    def log_scale_bias(self, params: np.ndarray) -> np.ndarray:
        """The view of ``params`` added to every row's log_scale (the log-scale head's output bias), shape (d,).

        :meth:`init_params` leaves every row's output at the bias alone, so adding c to this view starts every
        q(zₙ) at scale exp(c) (A-VI starts the encoder at the model's initial local scale this way).
        """
        raise NotImplementedError(f"{type(self).__name__} does not expose a log-scale output bias.")

    def __call__(self, params: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, log_scale) of raw inputs ``u`` (n, n_inputs)."""
        mean, log_scale, _ = self.forward(params, self.design(u))
        return mean, log_scale


class Encoder(ABC):
    """Specification of an inference function; :meth:`bind` returns the :class:`BoundEncoder` that runs it."""

    @abstractmethod
    def bind(self, u: np.ndarray, latent_dim: int, *, n_masks: int = 0) -> BoundEncoder:
        """Fix the encoder to training inputs ``u`` (n, n_inputs) whose last ``n_masks`` columns are 0/1 masks."""


class _LinearInParams(BoundEncoder):
    """A bound encoder whose outputs are linear in φ with no offset (forward(0) = 0): Constant, Polynomial."""

    def jacobian(self, params, design):
        """Exact, and the same at every φ: column j is the forward pass at the unit vector eⱼ."""
        d = self.latent_dim
        jac = self._jacobian_array(design.shape[0])
        for j in range(self.n_params):
            e = np.zeros(self.n_params)
            e[j] = 1.0
            mean, log_scale, _ = self.forward(e, design)
            jac[:, :d, j], jac[:, d:, j] = mean, log_scale
        return jac


def _check_inputs(u: object, n_masks: int) -> np.ndarray:
    arr = as_float_array(u, "u", ndim=2)
    if not 0 <= n_masks <= arr.shape[1]:
        raise ValueError(f"n_masks must lie in [0, {arr.shape[1]}]; got {n_masks}.")
    return arr


# -- Constant ----------------------------------------------------------------------------------------------------

class Constant(Encoder):
    """The same factor for every observation: mean(uₙ) = b_m, log_scale(uₙ) = b_s (2·d parameters).

    The constant encoder is the least expressive amortized family; for the linear hierarchical model it leaves an
    amortization gap of τ² Σₙ (xₙ − x̄)² / (2σ²(σ² + τ²)) nats.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.encoders import Constant
    >>> enc = Constant().bind(np.zeros((3, 1)), latent_dim=2)
    >>> enc.n_params
    4
    """

    def __repr__(self) -> str:
        return "Constant()"

    def bind(self, u: np.ndarray, latent_dim: int, *, n_masks: int = 0) -> BoundEncoder:
        arr = _check_inputs(u, n_masks)
        return _BoundConstant(arr.shape[1], check_int(latent_dim, "latent_dim", minimum=1))


class _BoundConstant(_LinearInParams):
    def __init__(self, n_inputs: int, latent_dim: int) -> None:
        self.n_inputs, self.latent_dim, self.n_params = n_inputs, latent_dim, 2 * latent_dim

    def design(self, u: np.ndarray) -> np.ndarray:
        return np.empty((u.shape[0], 0))

    def init_params(self, seed: int | np.random.Generator | None = None) -> np.ndarray:
        return np.zeros(self.n_params)

    def log_scale_bias(self, params: np.ndarray) -> np.ndarray:
        return params[self.latent_dim:]

    def forward(self, params, design, keep=False):
        n, d = design.shape[0], self.latent_dim
        mean = np.broadcast_to(params[:d], (n, d)).copy()
        log_scale = np.broadcast_to(params[d:], (n, d)).copy()
        return mean, log_scale, None

    def backward(self, params, cache, grad_mean, grad_log_scale):
        return np.concatenate([grad_mean.sum(axis=0), grad_log_scale.sum(axis=0)])


# -- Polynomial --------------------------------------------------------------------------------------------------

class Polynomial(Encoder):
    """Mean and log-scale affine in the monomials of the inputs up to a total degree.

    Parameters
    ----------
    degree : int
        Highest total degree (>= 1). ``Polynomial(1)`` is affine in the inputs.
    whiten : bool, default False
        Also decorrelate the monomial columns (see Notes). Same family of functions, better conditioned fits when
        the inputs are strongly correlated (e.g. a wide window over a random walk).

    Notes
    -----
    Conditioning: the value columns of the inputs are first standardised (v = (u − ū)/sd(u), column-wise, on the
    training inputs), then every monomial of v of total degree 1 … ``degree`` is formed (products included), and
    each monomial column is standardised again (centred and scaled to unit variance on the training inputs). Mask
    columns of a window enter linearly and unscaled. Both affine maps are stored in the bound encoder and applied
    unchanged to new inputs, so the fitted function is a fixed polynomial of the raw inputs. With P monomial
    columns Φ, mean = b_m + Φ W_m and log_scale = b_s + Φ W_s: (P + 1)·2d parameters, initialised to zero (the
    objective is smooth in them; no symmetry to break).

    With ``whiten=True`` the standardised monomial columns are further mapped by a fixed linear map W (from the SVD
    of the training columns: Φ W has identity covariance; directions with singular value < 1e-10 of the largest are
    dropped), and each mask column m is replaced by its missing-indicator 1 − m (sparse, so nearly orthogonal to the
    bias). Both maps are invertible on the span, so the family is unchanged; only Adam's conditioning improves.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.encoders import Polynomial
    >>> enc = Polynomial(2).bind(np.random.default_rng(0).normal(size=(50, 2)), latent_dim=1)
    >>> enc.n_params  # monomials x, y, x², xy, y² plus a bias, times (mean, log-scale)
    12
    """

    def __init__(self, degree: int, whiten: bool = False) -> None:
        self.degree = check_int(degree, "degree", minimum=1)
        self.whiten = check_bool(whiten, "whiten")

    def __repr__(self) -> str:
        return f"Polynomial({self.degree}, whiten=True)" if self.whiten else f"Polynomial({self.degree})"

    def bind(self, u: np.ndarray, latent_dim: int, *, n_masks: int = 0) -> BoundEncoder:
        arr = _check_inputs(u, n_masks)
        return _BoundPolynomial(self.degree, arr, check_int(latent_dim, "latent_dim", minimum=1), n_masks,
                                self.whiten)


class _BoundPolynomial(_LinearInParams):
    def __init__(self, degree: int, u: np.ndarray, latent_dim: int, n_masks: int, whiten: bool = False) -> None:
        self.n_inputs, self.latent_dim, self.n_masks = u.shape[1], latent_dim, n_masks
        n_values = u.shape[1] - n_masks
        n_terms = math.comb(n_values + degree, degree) - 1
        check_allocation(8 * n_terms * (u.shape[0] + 64), "degree",
                         f"degree={degree} with {n_values} inputs ({n_terms} monomials per row)")
        self.terms = [c for deg in range(1, degree + 1)
                      for c in itertools.combinations_with_replacement(range(n_values), deg)]
        self.inputs_map = Affine.fit(u, keep=n_masks)
        with np.errstate(over="ignore", invalid="ignore"):
            monomials = self._monomials(self.inputs_map(u))
        if not np.isfinite(monomials).all():
            raise ValueError(f"degree must keep the monomials of the standardised inputs finite; got degree={degree}, "
                             "whose powers overflow float64. Lower the degree.")
        self.monomial_map = Affine.fit(monomials, keep=n_masks)
        self.whiten_map = None
        if whiten:
            cols = self.monomial_map(self._monomials(self.inputs_map(u)))[:, :len(self.terms)]
            _, sv, vt = np.linalg.svd(cols - cols.mean(axis=0), full_matrices=False)
            keep = sv > 1e-10 * max(sv[0] if sv.size else 0.0, 1e-300)
            self.whiten_map = np.ascontiguousarray(vt[keep].T / sv[keep] * np.sqrt(u.shape[0]))
        self.n_design = (len(self.terms) if self.whiten_map is None else self.whiten_map.shape[1]) + n_masks
        self.n_params = (self.n_design + 1) * 2 * latent_dim

    def _monomials(self, v: np.ndarray) -> np.ndarray:
        out = np.empty((v.shape[0], len(self.terms) + self.n_masks))
        for j, term in enumerate(self.terms):
            col = v[:, term[0]].copy()
            for i in term[1:]:
                col *= v[:, i]
            out[:, j] = col
        if self.n_masks:
            out[:, len(self.terms):] = v[:, v.shape[1] - self.n_masks:]
        return out

    def design(self, u: np.ndarray) -> np.ndarray:
        phi = self.monomial_map(self._monomials(self.inputs_map(u)))
        if self.whiten_map is None:
            return np.ascontiguousarray(phi)
        p = len(self.terms)
        return np.ascontiguousarray(np.hstack([phi[:, :p] @ self.whiten_map, 1.0 - phi[:, p:]]))

    def init_params(self, seed: int | np.random.Generator | None = None) -> np.ndarray:
        return np.zeros(self.n_params)

    def log_scale_bias(self, params: np.ndarray) -> np.ndarray:
        return self._unpack(params)[1][self.latent_dim:]

    def _unpack(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = 2 * self.latent_dim
        return params[:self.n_design * k].reshape(self.n_design, k), params[self.n_design * k:]

    def forward(self, params, design, keep=False):
        w, b = self._unpack(params)
        out = design @ w + b
        d = self.latent_dim
        return np.ascontiguousarray(out[:, :d]), np.ascontiguousarray(out[:, d:]), (design if keep else None)

    def backward(self, params, cache, grad_mean, grad_log_scale):
        g = np.concatenate([grad_mean, grad_log_scale], axis=1)
        return np.concatenate([(cache.T @ g).ravel(), np.ones(g.shape[0]) @ g])


# -- MLP ---------------------------------------------------------------------------------------------------------

class MLP(Encoder):
    """A fully connected network from the (standardised) inputs to (mean, log_scale).

    Parameters
    ----------
    width : int
        Units of every hidden layer (>= 1).
    depth : int
        Number of hidden layers (>= 1).
    activation : {"relu", "leaky_relu", "tanh", "softplus"}
        Hidden-layer nonlinearity (leaky ReLU slope 0.01).
    heads : {"shared", "separate"}
        ``"shared"``: one network whose last layer outputs both mean and log-scale (2d outputs). ``"separate"``: two
        networks of the same shape, one for the mean and one for the log-scale.

    Notes
    -----
    Inputs are standardised column-wise with the training inputs' means and standard deviations (mask columns of
    a window pass unchanged); the affine map is stored in the bound encoder. Hidden weights are drawn from the
    seed: He-normal (variance 2/fan_in) for ReLU-type activations, Glorot-normal (variance 2/(fan_in + fan_out))
    for tanh and softplus. The output layer and every bias start at zero, so every q(zₙ) starts at N(0, I) (F-VI's
    starting point) instead of at random, possibly extreme, scales. The layout of φ is, per tower and layer,
    the weight matrix (fan_in, fan_out) row-major, then the bias. Cost per pass: O(n · width² · depth).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.encoders import MLP
    >>> u = np.random.default_rng(0).normal(size=(5, 1))
    >>> enc = MLP(4).bind(u, latent_dim=1)
    >>> mean, log_scale = enc(enc.init_params(seed=0), u)
    >>> mean.shape, enc.n_params  # (1·4 + 4) + (4·4 + 4) + (4·2 + 2)
    ((5, 1), 38)
    """

    def __init__(self, width: int, depth: int = 2, activation: str = "relu", heads: str = "shared") -> None:
        self.width = check_int(width, "width", minimum=1)
        self.depth = check_int(depth, "depth", minimum=1)
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.heads = check_choice(heads, "heads", HEADS)

    def __repr__(self) -> str:
        return f"MLP({self.width}, depth={self.depth}, activation={self.activation!r}, heads={self.heads!r})"

    def bind(self, u: np.ndarray, latent_dim: int, *, n_masks: int = 0) -> BoundEncoder:
        arr = _check_inputs(u, n_masks)
        return _BoundMLP(self, arr, check_int(latent_dim, "latent_dim", minimum=1), n_masks)


def _act(name: str, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if name == "relu":
        return np.maximum(a, 0.0, out=out)
    if name == "leaky_relu":
        return np.maximum(a, _LEAKY_SLOPE * a, out=out)  # = a for a > 0, slope·a otherwise (slope < 1)
    if name == "tanh":
        return np.tanh(a, out=out)
    return np.logaddexp(0.0, a, out=out)  # softplus


def _apply_act_grad(name: str, g: np.ndarray, a: np.ndarray, h: np.ndarray, work: np.ndarray) -> None:
    """g ← g ⊙ activation'(a), in place (``h`` = activation(a); ``work`` a scratch array of g's shape)."""
    if name == "relu":
        np.greater(h, 0.0, out=work)
    elif name == "leaky_relu":
        np.greater(a, 0.0, out=work)
        work *= 1.0 - _LEAKY_SLOPE
        work += _LEAKY_SLOPE
    elif name == "tanh":
        np.multiply(h, h, out=work)
        np.subtract(1.0, work, out=work)
    else:  # softplus: the sigmoid, overflow-free
        np.multiply(a, 0.5, out=work)
        np.tanh(work, out=work)
        work += 1.0
        work *= 0.5
    g *= work


class _BoundMLP(BoundEncoder):
    def __init__(self, spec: MLP, u: np.ndarray, latent_dim: int, n_masks: int) -> None:
        self.spec, self.n_inputs, self.latent_dim = spec, u.shape[1], latent_dim
        self.inputs_map = Affine.fit(u, keep=n_masks)
        n_towers, n_out = (1, 2 * latent_dim) if spec.heads == "shared" else (2, latent_dim)
        w, d = spec.width, spec.depth  # parameters, Adam's two moments and the gradient: 32 bytes a parameter
        n_params = n_towers * ((u.shape[1] + 1) * w + (d - 1) * (w + 1) * w + (w + 1) * n_out)
        check_allocation(32 * n_params, "width", f"width={w}, depth={d} ({n_params} parameters)")
        sizes = [u.shape[1]] + [spec.width] * spec.depth + [n_out]
        # layers[t] = list of (w_start, w_stop, b_stop, fan_in, fan_out) slices into the flat vector.
        self.towers: list[list[tuple[int, int, int, int, int]]] = []
        pos = 0
        for _ in range(n_towers):
            layers = []
            for fan_in, fan_out in itertools.pairwise(sizes):
                w_stop = pos + fan_in * fan_out
                layers.append((pos, w_stop, w_stop + fan_out, fan_in, fan_out))
                pos = w_stop + fan_out
            self.towers.append(layers)
        self.n_params = pos
        self._buffers: dict[tuple, np.ndarray] = {}
        self._ones: np.ndarray | None = None

    def design(self, u: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.inputs_map(u))

    def init_params(self, seed: int | np.random.Generator | None = None) -> np.ndarray:
        rng = check_random_state(seed)
        params = np.zeros(self.n_params)
        relu_like = self.spec.activation in ("relu", "leaky_relu")
        for layers in self.towers:
            for w0, w1, _, fan_in, fan_out in layers[:-1]:
                var = 2.0 / fan_in if relu_like else 2.0 / (fan_in + fan_out)
                params[w0:w1] = rng.normal(0.0, math.sqrt(var), size=w1 - w0)
        # The output layer starts at zero: every q(zₙ) starts at N(0, I), F-VI's initial factor, whatever the input
        # (random output weights can start extreme inputs at huge scales, whose gradients Adam remembers for
        # thousands of steps). The hidden layers' random weights break the symmetry from the first step on.
        return params

    def log_scale_bias(self, params: np.ndarray) -> np.ndarray:
        _, w1, b1, _, _ = self.towers[-1][-1]  # the output layer's bias: (mean, log_scale) shared, else its own tower
        return params[w1 + self.latent_dim:b1] if len(self.towers) == 1 else params[w1:b1]

    def _buffer(self, key: tuple, shape: tuple[int, int]) -> np.ndarray:
        """A work array reused from call to call: fresh (N, width) arrays every iteration cost more in page faults
        than the arithmetic that fills them."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape:
            buf = self._buffers[key] = np.empty(shape)
        return buf

    def _hidden_buffers(self, n: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Per tower and hidden layer, the reused (pre-activation, activation) arrays of a training step."""
        return [[(self._buffer(("a", t, i), (n, fan_out)), self._buffer(("h", t, i), (n, fan_out)))
                 for i, (_, _, _, _, fan_out) in enumerate(layers[:-1])] for t, layers in enumerate(self.towers)]

    def _tower_forward(self, params, layers, h, hidden, out):
        """One block of rows through one tower: ``h`` (rows, fan_in) → ``out`` (rows, n_out); the hidden layers
        write into ``hidden`` (views of the reused buffers for a training step) or, when it is None, fresh arrays."""
        act = self.spec.activation
        for i, (w0, w1, b1, fan_in, fan_out) in enumerate(layers):
            w = params[w0:w1].reshape(fan_in, fan_out)
            last = i == len(layers) - 1
            a = out if last else (None if hidden is None else hidden[i][0])
            if fan_in == 1:  # a K = 1 matmul is slower than broadcasting
                a = np.multiply(h, w[0], out=a)
            else:
                a = np.matmul(h, w, out=a)
            a += params[w1:b1]
            if last:
                return
            h = _act(act, a, out=None if hidden is None else hidden[i][1])

    def forward(self, params, design, keep=False):
        # Row blocks of ROW_BLOCK rows on avicore's threads (avicore._threads): each block runs through the whole
        # network on one thread, so the outputs do not depend on the thread count.
        d, n = self.latent_dim, design.shape[0]
        outs = [np.empty((n, layers[-1][4])) for layers in self.towers]
        hidden = self._hidden_buffers(n) if keep else None
        blocks = row_blocks(n)

        def run(b: int) -> None:
            r0, r1 = blocks[b]
            for t, layers in enumerate(self.towers):
                self._tower_forward(params, layers, design[r0:r1],
                                    None if hidden is None else [(a[r0:r1], h[r0:r1]) for a, h in hidden[t]],
                                    outs[t][r0:r1])

        run_blocks(run, len(blocks))
        if len(outs) == 1:
            mean, log_scale = outs[0][:, :d], outs[0][:, d:]
        else:
            mean, log_scale = outs
        cache = (design, hidden) if keep else None
        return np.ascontiguousarray(mean), np.ascontiguousarray(log_scale), cache

    def _tower_backward(self, params, layers, design, hidden, g, grad, scratch):
        """One block's gradient of one tower into ``grad`` (n_params,): ``g`` the output gradient of the block's
        rows, ``hidden`` its rows of the forward's buffers, ``scratch`` per layer (g, work) arrays of its rows."""
        act = self.spec.activation
        ones = self._ones[:g.shape[0]]
        for i in range(len(layers) - 1, -1, -1):
            w0, w1, b1, fan_in, fan_out = layers[i]
            h_in = design if i == 0 else hidden[i - 1][1]
            grad[w0:w1] = (h_in.T @ g).ravel()
            grad[w1:b1] = ones @ g  # column sums by BLAS (faster than g.sum(axis=0))
            if i > 0:
                a_prev, h_prev = hidden[i - 1]
                g_buf, work = scratch[i]
                g = np.matmul(g, params[w0:w1].reshape(fan_in, fan_out).T, out=g_buf)
                _apply_act_grad(act, g, a_prev, h_prev, work)

    def backward_blocks(self, params, cache):
        """The gradient by row blocks, for a caller that runs each block's backward in a task of its own (A-VI's
        model pass and backward in one pool task): → (``run(b, grad_mean, grad_log_scale)``, ``total()``).

        ``run`` takes block b's rows of the output gradients and writes its private gradient; ``total`` adds the
        blocks' gradients in block order once every block has run (the same bits for any thread count).
        """
        design, hidden = cache
        n = design.shape[0]
        blocks = row_blocks(n)
        longest = max((r1 - r0 for r0, r1 in blocks), default=0)
        if self._ones is None or self._ones.shape[0] < longest:
            self._ones = np.ones(longest)
        partial = self._buffer(("partial",), (len(blocks), self.n_params))
        scratch = [{i: (self._buffer(("g", t, i), (n, layers[i][3])), self._buffer(("work", t, i), (n, layers[i][3])))
                    for i in range(1, len(layers))} for t, layers in enumerate(self.towers)]
        g_cat = self._buffer(("g_out",), (n, 2 * self.latent_dim)) if len(self.towers) == 1 else None

        def run(b: int, grad_mean: np.ndarray, grad_log_scale: np.ndarray) -> None:
            r0, r1 = blocks[b]
            if g_cat is None:
                g_outs = [grad_mean, grad_log_scale]
            else:
                g_outs = [np.concatenate([grad_mean, grad_log_scale], axis=1, out=g_cat[r0:r1])]
            for t, layers in enumerate(self.towers):
                self._tower_backward(params, layers, design[r0:r1], [(a[r0:r1], h[r0:r1]) for a, h in hidden[t]],
                                     g_outs[t], partial[b],
                                     {i: (g[r0:r1], w[r0:r1]) for i, (g, w) in scratch[t].items()})

        def total() -> np.ndarray:
            return partial[0].copy() if len(blocks) == 1 else partial.sum(axis=0)

        return run, total

    def jacobian(self, params, design):
        """The exact per-row Jacobian (n, 2d, n_params): per tower and output unit, one backward pass that keeps
        each row's layer gradients (the outer products of a layer's input and its back-propagated signal)."""
        n, d = design.shape[0], self.latent_dim
        jac = self._jacobian_array(n)
        _, _, (_, hidden) = self.forward(params, design, keep=True)
        act = self.spec.activation
        for t, layers in enumerate(self.towers):
            n_out = layers[-1][4]
            for o in range(n_out):
                row = o if len(self.towers) == 1 else t * d + o  # shared: (mean, log_scale) columns of one tower
                g = np.zeros((n, n_out))
                g[:, o] = 1.0
                for i in range(len(layers) - 1, -1, -1):
                    w0, w1, b1, fan_in, fan_out = layers[i]
                    h_in = design if i == 0 else hidden[t][i - 1][1]
                    jac[:, row, w0:w1] = (h_in[:, :, None] * g[:, None, :]).reshape(n, -1)
                    jac[:, row, w1:b1] = g
                    if i > 0:
                        a_prev, h_prev = hidden[t][i - 1]
                        g = g @ params[w0:w1].reshape(fan_in, fan_out).T
                        _apply_act_grad(act, g, a_prev, h_prev, np.empty_like(g))
        return jac

    def backward(self, params, cache, grad_mean, grad_log_scale):
        # Per block of rows a private gradient (a row of ``partial``), added in block order: the same bits for
        # any thread count.
        run, total = self.backward_blocks(params, cache)
        blocks = row_blocks(cache[0].shape[0])
        run_blocks(lambda b: run(b, grad_mean[blocks[b][0]:blocks[b][1]], grad_log_scale[blocks[b][0]:blocks[b][1]]),
                   len(blocks))
        return total()
