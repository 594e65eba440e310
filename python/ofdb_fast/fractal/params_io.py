"""Reading and writing IFS parameter files.

Formats (chosen by the file extension):

- ``.npz`` (native): arrays ``systems [S, K, 2, 3]`` float64, ``n_maps [S]`` int32 and
  ``hparams_json`` (uint8 bytes of UTF-8 JSON; tuples are stored as lists and restored on load).
  Loaded with ``allow_pickle=False``: reading never runs code.
- ``.pkl`` (fractal4AD reference layout, reference a.1)::

      {"params": [{"system": ndarray(n, 2, 3) float64}, ...],
       "hparams": {"num_systems": int, "n": (min_n, max_n + 1), "bval": float, "beta": None | (lo, hi)}}

  Written with pickle protocol 4 (readable by every Python 3.8+). Read with a restricted
  unpickler that resolves only plain builtin containers/numbers and NumPy's array, dtype and
  scalar reconstruction callables (both ``numpy.core`` from NumPy 1.x pickles and ``numpy._core``
  from NumPy 2.x), so a malicious pickle is refused before anything in it runs. The
  reference-only extra keys (AF's ``sample_fn``) are kept in ``hparams`` if they are plain data.

Writes are atomic (a temporary file in the target directory, then ``os.replace``) and refuse
an existing file unless ``overwrite=True``. Loaded systems are validated: shape ``(n, 2, 3)``
with ``n >= 1``, finite, zero padding.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle

import numpy as np

from .._io import atomic_open, refuse_overwrite
from .ifs import IFSParams

FORMAT_VERSION = 1

_ALLOWED_GLOBALS = frozenset({
    *(("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float",
                                      "complex", "bool", "str", "bytes", "bytearray")),
    *((core + ".multiarray", name) for core in ("numpy.core", "numpy._core")
      for name in ("_reconstruct", "scalar")),
    # protocol-5 pickles of contiguous arrays use _frombuffer(buffer, dtype, shape, order)
    *((core + ".numeric", "_frombuffer") for core in ("numpy.core", "numpy._core")),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # protocol <= 2 pickles store bytes as _codecs.encode(str, "latin1"): a pure data conversion
    ("_codecs", "encode"),
})


def _numpy_core_module(module: str) -> str:
    """Pickles name ``numpy.core`` (NumPy 1.x) or ``numpy._core`` (2.x); use whichever exists here
    (``numpy.core`` on NumPy 2 is a deprecated shim that warns)."""
    for prefix in ("numpy.core.", "numpy._core."):
        if module.startswith(prefix):
            for candidate in ("numpy._core." + module[len(prefix):], "numpy.core." + module[len(prefix):]):
                try:
                    importlib.import_module(candidate)
                except ImportError:
                    continue
                return candidate
    return module


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _Refused(f"{self._path}: refusing to unpickle {module}.{name}: only plain containers, "
                           "numbers and NumPy arrays are allowed")
        return super().find_class(_numpy_core_module(module), name)


class _Refused(ValueError):
    """A forbidden global in a pickle (kept distinct so it is never re-wrapped)."""


def _check_overwrite(path: str, overwrite: bool) -> None:
    refuse_overwrite(path, overwrite, hint="pass overwrite=True (--overwrite) to replace it", error=FileExistsError)


def _atomic_write(path: str, write, overwrite: bool) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then move it into place."""
    _check_overwrite(path, overwrite)
    # fsync: parameter files define whole datasets and are cheap to sync (one file).
    with atomic_open(path, "wb", fsync=True) as f:
        write(f)
        _check_overwrite(path, overwrite)  # appeared while we were writing


def _to_json(value):
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist() if isinstance(value, np.ndarray) else value.item()
    return value


def _restore_tuples(hparams: dict) -> dict:
    hparams = dict(hparams)
    for key in ("n", "beta"):
        if isinstance(hparams.get(key), list):
            hparams[key] = tuple(hparams[key])
    return hparams


def save_params(params: IFSParams, path, overwrite: bool = False) -> None:
    """Write ``params`` to ``path``: native ``.npz``, or the reference ``.pkl`` layout.

    Args:
        params: systems to write.
        path: ``*.npz`` or ``*.pkl``.
        overwrite: replace an existing file (otherwise ``FileExistsError``).

    Example:
        >>> save_params(sample_systems(100), "systems.npz")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if path.endswith(".pkl"):
        return save_params_pkl(params, path, overwrite=overwrite)
    if not path.endswith(".npz"):
        raise ValueError(f"{path}: parameter files must end in .npz (native) or .pkl (reference), got "
                         f"{os.path.splitext(path)[1] or 'no extension'!r}")
    _validate(params.systems, params.n_maps, path)
    hparams = dict(_to_json(params.hparams), format_version=FORMAT_VERSION)
    blob = np.frombuffer(json.dumps(hparams, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    arrays = {"systems": np.ascontiguousarray(params.systems, dtype=np.float64),
              "n_maps": np.ascontiguousarray(params.n_maps, dtype=np.int32), "hparams_json": blob}
    _atomic_write(path, lambda f: np.savez(f, **arrays), overwrite)


def save_params_pkl(params: IFSParams, path, overwrite: bool = False) -> None:
    """Write the fractal4AD ``.pkl`` layout exactly (module docstring), one unpadded system per entry."""
    path = os.fspath(path)
    _validate(params.systems, params.n_maps, path)
    h = params.hparams
    n = h.get("n")
    if n is None:
        n = (int(params.n_maps.min()), int(params.n_maps.max()) + 1) if len(params) else (1, 2)
    beta = h.get("beta")
    payload = {
        "params": [{"system": np.array(params.system(i), dtype=np.float64)} for i in range(len(params))],
        "hparams": {"num_systems": int(h.get("num_systems", len(params))),
                    "n": (int(n[0]), int(n[1])),
                    "bval": float(h.get("bval", 1.0)),
                    "beta": None if beta is None else (float(beta[0]), float(beta[1]))},
    }
    _atomic_write(path, lambda f: pickle.dump(payload, f, protocol=4), overwrite)


def _validate(systems, n_maps, path) -> None:
    systems, n_maps = np.asarray(systems), np.asarray(n_maps)
    if systems.ndim != 4 or systems.shape[2:] != (2, 3) or systems.dtype != np.float64:
        raise ValueError(f"{path}: systems must be float64 [S, K, 2, 3], got {systems.dtype} {systems.shape}")
    if n_maps.shape != systems.shape[:1] or n_maps.dtype.kind not in "iu":
        raise ValueError(f"{path}: n_maps must be integer [S] with S = {systems.shape[0]}, "
                         f"got {n_maps.dtype} {n_maps.shape}")
    if n_maps.size and (n_maps.min() < 1 or n_maps.max() > systems.shape[1]):
        raise ValueError(f"{path}: n_maps must be in [1, K = {systems.shape[1]}], "
                         f"got values in [{n_maps.min()}, {n_maps.max()}]")
    if not np.all(np.isfinite(systems)):
        raise ValueError(f"{path}: systems must be finite, got a NaN/inf in system "
                         f"{int(np.flatnonzero(~np.isfinite(systems).all(axis=(1, 2, 3)))[0])}")
    padding = np.arange(systems.shape[1])[None, :] >= n_maps[:, None]
    if np.any(systems[padding] != 0):
        raise ValueError(f"{path}: systems must be zero beyond n_maps (padding), got non-zero padding")


def load_params(path) -> IFSParams:
    """Read a ``.npz`` (native) or ``.pkl`` (reference) parameter file into :class:`IFSParams`.

    Raises ``ValueError`` naming ``path`` for an unknown extension, a corrupt/truncated file, a
    refused pickle global, or invalid content; ``FileNotFoundError`` if it does not exist.

    Example:
        >>> params = load_params("FractalDatabase-50000.pkl")  # doctest: +SKIP
        >>> params.systems.shape  # doctest: +SKIP
        (50000, 4, 2, 3)
    """
    path = os.fspath(path)
    if path.endswith(".pkl"):
        return _load_pkl(path)
    if not path.endswith(".npz"):
        raise ValueError(f"{path}: parameter files must end in .npz (native) or .pkl (reference), got "
                         f"{os.path.splitext(path)[1] or 'no extension'!r}")
    with open(path, "rb") as f:  # FileNotFoundError/PermissionError stay OSErrors
        try:
            with np.load(f, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in ("systems", "n_maps", "hparams_json") if name in npz.files}
        except Exception as exc:  # zipfile.BadZipFile, EOFError, zlib.error, object arrays, ...
            raise ValueError(f"{path}: not a readable .npz parameter file ({type(exc).__name__}: {exc})") from exc
    missing = {"systems", "n_maps", "hparams_json"} - set(arrays)
    if missing:
        raise ValueError(f"{path}: not an ofdb_fast parameter file (missing arrays {sorted(missing)})")
    systems, n_maps = arrays["systems"], arrays["n_maps"]
    try:
        hparams = json.loads(arrays["hparams_json"].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: hparams_json must hold UTF-8 JSON ({exc})") from exc
    if not isinstance(hparams, dict):
        raise ValueError(f"{path}: hparams_json must hold a JSON object, got {type(hparams).__name__}")
    _validate(systems, n_maps, path)
    hparams.pop("format_version", None)
    return IFSParams(np.ascontiguousarray(systems), n_maps.astype(np.int32), _restore_tuples(hparams))


def _load_pkl(path: str) -> IFSParams:
    with open(path, "rb") as f:
        try:
            obj = _RestrictedUnpickler(f, path).load()
        except _Refused:
            raise
        except Exception as exc:  # UnpicklingError, EOFError, truncated data, bad arguments, ...
            raise ValueError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("params"), (list, tuple)):
        keys = f" with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else ""
        raise ValueError(f"{path}: expected a dict with a 'params' list (fractal4AD layout), "
                         f"got {type(obj).__name__}{keys}")
    hparams = obj.get("hparams", {})
    if not isinstance(hparams, dict):
        raise ValueError(f"{path}: 'hparams' must be a dict, got {type(hparams).__name__}")
    systems = []
    for i, entry in enumerate(obj["params"]):
        if not isinstance(entry, dict) or "system" not in entry:
            raise ValueError(f"{path}: params[{i}] must be a dict with a 'system' array, "
                             f"got {type(entry).__name__}")
        try:
            system = np.asarray(entry["system"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: params[{i}]['system'] must be a numeric array ({exc})") from exc
        if system.ndim != 3 or system.shape[1:] != (2, 3) or system.shape[0] < 1:
            raise ValueError(f"{path}: params[{i}]['system'] must have shape (n, 2, 3) with n >= 1, "
                             f"got {system.shape}")
        if not np.all(np.isfinite(system)):
            raise ValueError(f"{path}: params[{i}]['system'] must be finite, got a NaN/inf")
        systems.append(system)
    n_maps = np.array([s.shape[0] for s in systems], dtype=np.int32)
    K = int(n_maps.max()) if systems else 1
    padded = np.zeros((len(systems), K, 2, 3))
    for i, system in enumerate(systems):
        padded[i, : system.shape[0]] = system
    hparams = _restore_tuples(_to_json(hparams))
    hparams.setdefault("num_systems", len(systems))
    hparams.setdefault("rng", "reference")
    return IFSParams(padded, n_maps, hparams)
