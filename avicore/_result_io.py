"""Saving and loading fitted results (:class:`~avicore.inference.VIResult`) as one ``.npz`` file, without pickle.

The file holds every array of the result under its field name, plus one entry ``__avicore__``: the UTF-8 bytes of a
JSON document with the format tag, the scalar fields, and the recipes of the model and the encoder — each an
avicore class from a fixed list of known classes and its constructor arguments (nested objects such as GP kernels
and likelihoods are recipes too; arrays among the arguments are stored as arrays). Loading never unpickles and never
imports a class by a name read from the file: a file from elsewhere can at worst fail to load, not run code.

Floats go through JSON's shortest round-trip representation and arrays are stored as they are, so a round trip
returns the same numbers to the bit. The A-VI encoder's bound form (its input standardisation) is rebuilt from the
saved data exactly as the fit built it, so a loaded A-VI result still ``encode``s new observations.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import zipfile
from typing import Any

import numpy as np

FORMAT = "avicore.VIResult"
VERSION = 1
_META_KEY = "__avicore__"


def _known_classes() -> dict[str, type]:
    """Every class a recipe may name: avicore's models, encoders, GP kernels and likelihoods (no others)."""
    from . import encoders, models
    from .gp import kernels, likelihoods

    classes = [models.LinearHierarchical, models.NonlinearHierarchical, models.SawTimeSeries,
               models.GaussianRandomWalk, models.LinearGaussianSSM, models.BayesianDecoder, models.GaussianProcess,
               models.CustomHierarchical,
               encoders.Constant, encoders.Polynomial, encoders.MLP,
               kernels.RBF, kernels.Matern12, kernels.Matern32, kernels.Matern52, kernels.Periodic, kernels.Sum,
               kernels.Product,
               likelihoods.Gaussian, likelihoods.Poisson, likelihoods.Bernoulli, likelihoods.StudentT]
    return {cls.__name__: cls for cls in classes}


# Constructor arguments that an instance keeps under another name (or computes): (class name, argument) -> getter.
_ARGUMENT_GETTERS: dict[tuple[str, str], Any] = {
    ("LinearGaussianSSM", "A"): lambda m: m.params.A,
    ("LinearGaussianSSM", "Q"): lambda m: m.params.Q,
    ("LinearGaussianSSM", "C"): lambda m: m.params.C,
    ("LinearGaussianSSM", "R"): lambda m: m.params.R,
    ("LinearGaussianSSM", "m0"): lambda m: m.params.m0,
    ("LinearGaussianSSM", "P0"): lambda m: m.params.P0,
    ("BayesianDecoder", "obs_dim"): lambda m: m._obs_dim,
    ("GaussianProcess", "fit"): lambda m: list(m.global_names),
}


class _Writer:
    """Turns objects into JSON recipes, collecting their arrays under numbered keys."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.known = _known_classes()

    def value(self, obj: Any, where: str) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, (int, np.integer)):
            return int(obj)
        if isinstance(obj, (float, np.floating)):
            return _float(float(obj))
        if isinstance(obj, np.ndarray):
            key = f"__arg{len(self.arrays)}"
            self.arrays[key] = obj
            return {"__array__": key}
        if isinstance(obj, (list, tuple)):
            return {"__tuple__" if isinstance(obj, tuple) else "__list__": [self.value(v, where) for v in obj]}
        return self.recipe(obj, where)

    def recipe(self, obj: Any, where: str) -> dict:
        name = type(obj).__name__
        if self.known.get(name) is not type(obj):
            raise TypeError(f"{where} must be an avicore model, encoder, GP kernel or likelihood to be saved; got "
                            f"{type(obj).__module__}.{name}.")
        if name == "CustomHierarchical":  # its log density is user code: record only that it must be passed again
            return {"__class__": name, "repr": repr(obj),
                    "dims": [obj.latent_dim, obj.global_dim, obj.obs_dim]}
        args = {}
        for param in list(inspect.signature(type(obj).__init__).parameters.values())[1:]:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            getter = _ARGUMENT_GETTERS.get((name, param.name))
            if getter is None and not hasattr(obj, param.name):
                raise TypeError(f"{where} ({name}) keeps no attribute for its constructor argument {param.name!r}: "
                                f"it cannot be saved.")
            value = getter(obj) if getter is not None else getattr(obj, param.name)
            args[param.name] = self.value(value, f"{where}.{param.name}")
        return {"__class__": name, "args": args}


def _float(x: float) -> Any:
    return x if np.isfinite(x) else {"__float__": repr(x)}


class _Reader:
    """The inverse of :class:`_Writer`: recipes back into objects, arrays taken from the file."""

    def __init__(self, arrays: Any, path: str, model: Any) -> None:
        self.arrays, self.path, self.model = arrays, path, model
        self.known = _known_classes()

    def value(self, obj: Any) -> Any:
        if isinstance(obj, list):
            raise ValueError(f"path {self.path!r} holds a malformed recipe (a bare list).")
        if not isinstance(obj, dict):
            return obj
        if "__array__" in obj:
            return self.array(obj["__array__"])
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__tuple__" in obj:
            return tuple(self.value(v) for v in obj["__tuple__"])
        if "__list__" in obj:
            return [self.value(v) for v in obj["__list__"]]
        if "__class__" in obj:
            return self.build(obj)
        raise ValueError(f"path {self.path!r} holds a malformed recipe: {sorted(obj)}.")

    def array(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise ValueError(f"path {self.path!r} is damaged: the array {key!r} its metadata names is missing.")
        return self.arrays[key]

    def build(self, recipe: dict) -> Any:
        name = recipe["__class__"]
        cls = self.known.get(name)
        if cls is None:
            raise ValueError(f"path {self.path!r} names an unknown class {name!r}; a result file holds only "
                             f"avicore's own models and encoders ({sorted(self.known)}).")
        if name == "CustomHierarchical":
            if self.model is None:
                raise ValueError(f"path {self.path!r} holds a fit of a CustomHierarchical model "
                                 f"({recipe.get('repr')}), whose log density is your own function and is not saved: "
                                 f"pass the model again, load_result(path, model=CustomHierarchical(...)).")
            dims = [getattr(self.model, a, None) for a in ("latent_dim", "global_dim", "obs_dim")]
            if type(self.model) is not cls or dims != recipe.get("dims"):
                raise ValueError(f"model must be the CustomHierarchical the result was fitted with "
                                 f"({recipe.get('repr')}); got {self.model!r}.")
            return self.model
        args = {k: self.value(v) for k, v in recipe["args"].items()}
        return cls(**args)


def save_result(result: Any, path: str | os.PathLike[str]) -> None:
    """Write ``result`` (a :class:`~avicore.inference.VIResult`) to ``path`` as one ``.npz`` file; see the module
    docstring for the format. ``numpy.savez`` adds ``.npz`` to a path without that suffix."""
    from .inference import VIResult

    if not isinstance(result, VIResult):
        raise TypeError(f"result must be an avicore VIResult; got {type(result).__name__}.")
    writer = _Writer()
    arrays: dict[str, np.ndarray] = {}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(result):
        if f.name.startswith("_"):
            continue  # derived state (the bound encoder) is rebuilt on load
        value = getattr(result, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = value
        elif f.name in ("model", "encoder"):
            fields[f.name] = None if value is None else writer.recipe(value, f.name)
        else:
            fields[f.name] = writer.value(value, f.name)
    meta = {"format": FORMAT, "version": VERSION, "fields": fields, "arrays": sorted(arrays)}
    payload = {**arrays, **writer.arrays,
               _META_KEY: np.frombuffer(json.dumps(meta, allow_nan=False).encode(), dtype=np.uint8)}
    np.savez(path, **payload)


def load_result(path: str | os.PathLike[str], *, model: Any = None) -> Any:
    """Read a result written by :meth:`VIResult.save <avicore.inference.VIResult.save>`.

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file.
    model : LatentVariableModel, optional
        Needed only for a fit of a :class:`~avicore.models.CustomHierarchical` model, whose log density (your own
        function) cannot be saved: pass the same model again.

    Returns
    -------
    VIResult
        Equal to the saved result field by field, to the bit; an A-VI result can ``encode`` new data.

    Raises
    ------
    ValueError
        If the file is not an avicore result (a foreign or damaged ``.npz``), or names a class avicore does not
        know, or holds a CustomHierarchical fit and ``model`` is not given.
    FileNotFoundError
        If there is no such file.

    Examples
    --------
    >>> import os, tempfile, avicore
    >>> from avicore.encoders import Polynomial
    >>> from avicore.models import LinearHierarchical
    >>> model = LinearHierarchical()
    >>> x = model.simulate(100, seed=0).x
    >>> res = avicore.AVI(model, Polynomial(1), elbo_samples=10).fit(x, n_iter=50, lr=0.05, seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "fit.npz")
    >>> res.save(path)
    >>> back = avicore.load_result(path)
    >>> bool(back.elbo == res.elbo), back.encode([[0.5]])[0].shape
    (True, (1, 1))
    """
    from .encoders import window_inputs
    from .inference import VIResult

    name = os.fspath(path)
    arrays = None
    try:
        # Our own file handle: numpy's leaks when the zip directory is unreadable.
        with open(name, "rb") as fh:
            data = np.load(fh, allow_pickle=False)
            if isinstance(data, np.lib.npyio.NpzFile):  # else a plain .npy: not ours either
                with data:
                    arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"path {name!r} is not a readable .npz file ({type(exc).__name__}: {exc}).") from exc
    except (ValueError, TypeError) as exc:  # a pickled object array, a damaged member
        raise ValueError(f"path {name!r} is not an avicore result file ({exc}).") from exc
    if arrays is None or _META_KEY not in arrays:
        raise ValueError(f"path {name!r} is not an avicore result file (no {_META_KEY!r} entry); "
                         f"write one with VIResult.save.")
    try:
        meta = json.loads(arrays.pop(_META_KEY).tobytes().decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"path {name!r} has a damaged metadata entry ({exc}).") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"path {name!r} is not an avicore result file (format {found!r}).")
    if meta.get("version") != VERSION:
        raise ValueError(f"path {name!r} was written in format version {meta.get('version')!r}; this avicore reads "
                         f"version {VERSION}.")
    reader = _Reader(arrays, name, model)
    try:
        values = {k: reader.value(v) for k, v in meta["fields"].items()}
        for key in meta["arrays"]:
            values[key] = reader.array(key)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"path {name!r} holds a malformed result ({type(exc).__name__}: {exc}).") from exc
    expected = {f.name for f in dataclasses.fields(VIResult) if not f.name.startswith("_")}
    if set(values) != expected:
        raise ValueError(f"path {name!r} holds the fields {sorted(set(values) ^ expected)} that do not match this "
                         f"avicore's VIResult.")
    bound = None
    if values["method"] == "A-VI":
        result_model, encoder, window = values["model"], values["encoder"], values["window"]
        n_masks = sum(1 for k in window if k != 0)
        u = window_inputs(result_model.encoder_inputs(values["x"]), window)
        bound = encoder.bind(u, result_model.latent_dim, n_masks=n_masks)
    return VIResult(**values, _bound=bound)
