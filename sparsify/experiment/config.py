"""The experiment's settings: :class:`ExperimentConfig`, read from a flat TOML file and/or flags.

Every value is checked once, up front (:meth:`ExperimentConfig.check`), before
any data is loaded, any network trained or any file written. Messages name the
setting as the user wrote it: the flag (``--s-size``) when it came from the
command line, the key and the file (``s_size (in exp.toml)``) otherwise.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .. import baselines as _baselines
from .._validation import check_choice, check_scalar
from ..bounds import DEFAULT_C, DEFAULT_DELTA
from ..data import DATASETS
from ..train import DERIVATIVES
from .models import MODELS

__all__ = [
    "BASELINE_METHODS",
    "ExperimentConfig",
    "METHODS",
    "MODES",
    "SIPP_METHODS",
    "ANALYSES",
    "DEFAULT_METHODS",
    "load_config",
    "parse_imbalance",
]

#: SiPP variants: experiment name -> (a method of :data:`sparsify.prune.METHODS`, an allocation of
#: :data:`sparsify.allocation.ALLOCATIONS` or None for the authors' default).
SIPP_METHODS = {
    "sipp-det": ("det", None),
    "sipp-rand": ("rand", None),
    "sipp-hybrid": ("hybrid", None),
    "sipp-det-balanced": ("det", "balanced"),
}
BASELINE_METHODS = tuple(_baselines.METHODS)
#: every method of the experiment; the position of a name seeds its random numbers, so the order is fixed.
METHODS = tuple(SIPP_METHODS) + BASELINE_METHODS
#: the methods a run uses when ``methods`` is not given (``undecayed`` is opt-in, so earlier runs resume).
DEFAULT_METHODS = tuple(m for m in METHODS if m != "undecayed")
MODES = ("oneshot", "retrain", "iterative", "during")
#: optional analyses of a finished run (:mod:`sparsify.experiment.analyses`).
ANALYSES = ("recall", "stability")
#: settings added after the first release: left out of ``config.json`` at their defaults, so a folder
#: written before them still matches its configuration and resumes.
_LATER_DEFAULTS = {"imbalance": {}, "analyses": [], "prune_every": 2, "model": "mlp", "calibration": 1000,
                   "lam": 1e-4}


def _setting(default=None, factory=None):
    """A field that is a setting (written to ``config.json``)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"setting": True})
    return field(default=default, metadata={"setting": True})


@dataclass
class ExperimentConfig:
    """Everything that defines a run (a TOML file holds the same keys, flat).

    Data and model: ``data`` ("digits", "generated" or "mnist:DIR"),
    ``data_seed`` (the split), ``model`` ("mlp", or the convolutional "lenet"
    and "resnet" of :mod:`sparsify.experiment.models`, which read the features
    as one-channel square images), and for the MLP its ``hidden`` widths and
    ``activation``.
    Training of the reference network: ``epochs, batch_size, lr, momentum,
    weight_decay, milestones, gamma`` (see :func:`sparsify.train.train`).
    Fine-tuning after pruning: ``retrain_epochs, retrain_lr, retrain_milestones``
    (batch size, momentum, weight decay and gamma as above).
    Pruning: ``methods``, the keep grid (``keeps`` explicitly, or
    ``keep_points`` values from ``keep_max`` down to ``keep_min``, geometric),
    ``seeds`` (a list, or an int n for 0..n-1), ``mode``, ``s_size`` (0 = the
    authors' ``ceil(3 ln(8 eta eta* / delta))``), ``delta`` and ``C``.
    Lottery panel: ``lottery``, ``lottery_method`` and ``lottery_keeps`` (empty =
    the whole grid).
    ``imbalance`` (``{"classes": [3, 5], "factor": 10}`` or ``"3,5:10"``; empty =
    none) subsamples the named classes of the training split by ``factor``;
    ``analyses`` (``["recall", "stability"]``) adds the analyses of
    :mod:`sparsify.experiment.analyses`; ``prune_every`` is the number of epochs
    between prune events of mode ``during``.
    Refit methods (``sipp-hybrid+ls``, ``obs``, ...; :mod:`sparsify.experiment.refit`):
    ``calibration`` training points added to S for the refit (0 = S alone) and
    ``lam``, the relative ridge of the refit (> 0; see :mod:`sparsify.reconstruct`).

    ``labels`` is not a setting: it maps a key to the way the user spelled it
    (``{"s_size": "--s-size"}``), so that messages name the flag or the file.
    """

    data: str = _setting("digits")
    data_seed: int = _setting(0)
    model: str = _setting("mlp")
    hidden: list = _setting(factory=lambda: [300, 100])
    activation: str = _setting("relu")
    epochs: int = _setting(30)
    batch_size: int = _setting(64)
    lr: float = _setting(0.05)
    momentum: float = _setting(0.9)
    weight_decay: float = _setting(5e-4)
    milestones: list = _setting(factory=lambda: [15, 25])
    gamma: float = _setting(0.1)
    retrain_epochs: int = _setting(10)
    retrain_lr: float = _setting(0.05)
    retrain_milestones: list = _setting(factory=lambda: [7])
    methods: list = _setting(factory=lambda: list(DEFAULT_METHODS))
    keeps: list = _setting(factory=list)
    keep_max: float = _setting(0.5)
    keep_min: float = _setting(0.02)
    keep_points: int = _setting(8)
    seeds: list = _setting(factory=lambda: [0, 1, 2])
    mode: str = _setting("retrain")
    s_size: int = _setting(0)
    delta: float = _setting(DEFAULT_DELTA)
    C: float = _setting(DEFAULT_C)
    lottery: bool = _setting(True)
    lottery_method: str = _setting("sipp-hybrid")
    lottery_keeps: list = _setting(factory=list)
    imbalance: dict = _setting(factory=dict)
    analyses: list = _setting(factory=list)
    prune_every: int = _setting(2)
    calibration: int = _setting(1000)
    lam: float = _setting(1e-4)
    #: where the cells run (None: here; "local", "local:N", "tcp://HOST:PORT"): not a setting, so a run
    #: started on Dask resumes here and the reverse
    dask: str | None = field(default=None, compare=False)
    labels: dict = field(default_factory=dict, repr=False, compare=False)

    # -- construction and checks --
    @classmethod
    def keys(cls) -> list[str]:
        """The names of the settings (the keys of a TOML file and of ``config.json``)."""
        return [f.name for f in fields(cls) if f.metadata.get("setting")]

    @classmethod
    def from_dict(cls, values: dict, source: str = "config", names: dict | None = None) -> "ExperimentConfig":
        """Build a config from a flat dict (TOML file or flags), checking every key.

        ``source`` says where the values came from (a file name, ``"flags"``);
        ``names`` maps keys to the user's spelling (``{"s_size": "--s-size"}``)
        and wins over ``source`` in messages.
        """
        known = cls.keys() + ["dask"]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {unknown}; known keys are {sorted(known)} (all flat, no tables)."
            )
        labels = {k: (names or {}).get(k) or (k if source == "config" else f"{k} (in {source})") for k in known}
        cfg = cls(labels=labels)
        for key, value in values.items():
            setattr(cfg, key, value)
        cfg.check()
        return cfg

    def label(self, key: str) -> str:
        """How the user spelled setting ``key`` (the flag, or the key and its file)."""
        return self.labels.get(key, key)

    def check(self) -> None:
        """Check every setting (types, ranges, names) and normalise lists and numbers in place."""
        name = self.label

        def scalar(key, kind="real", **bounds):
            setattr(self, key, check_scalar(getattr(self, key), name(key), kind=kind, **bounds))

        def int_list(key, low):
            value = getattr(self, key)
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{name(key)}: must be a list of integers >= {low}, got {value!r}.")
            setattr(self, key, [check_scalar(v, f"{name(key)}[{i}]", kind="int", low=low)
                                for i, v in enumerate(value)])

        def fractions(key):
            value = getattr(self, key)
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{name(key)}: must be a list of kept fractions in (0, 1), got {value!r}.")
            setattr(self, key, [check_scalar(v, f"{name(key)}[{i}]", low=0, high=1, low_open=True,
                                             high_open=True) for i, v in enumerate(value)])

        from .refit import all_methods, check_method

        def method(key):
            check_method(getattr(self, key), name(key))

        if not isinstance(self.data, str):
            raise TypeError(f"{name('data')}: must be a dataset name (str), got {self.data!r}.")
        if self.data not in DATASETS and not self.data.startswith("mnist:"):
            raise ValueError(f"{name('data')}: must be one of {list(DATASETS)} or 'mnist:DIR' (a folder with "
                             f"the MNIST IDX files), got {self.data!r}.")
        scalar("data_seed", "int", low=0)
        if not isinstance(self.model, str) or self.model not in MODELS:
            raise ValueError(f"{name('model')}: must be one of {list(MODELS)}, got {self.model!r}.")
        int_list("hidden", 1)
        check_choice(self.activation, name("activation"), DERIVATIVES)
        scalar("epochs", "int", low=0)
        scalar("retrain_epochs", "int", low=0)
        scalar("batch_size", "int", low=1)
        for key in ("lr", "retrain_lr", "gamma", "C"):
            scalar(key, low=0, low_open=True)
        scalar("momentum", low=0, high=0.999)
        scalar("weight_decay", low=0)
        int_list("milestones", 0)
        int_list("retrain_milestones", 0)
        if isinstance(self.methods, str):
            self.methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        if not isinstance(self.methods, (list, tuple)) or not self.methods:
            raise TypeError(f"{name('methods')}: must be a non-empty list drawn from {list(all_methods())}, "
                            f"got {self.methods!r}.")
        bad = [m for m in self.methods if not isinstance(m, str) or m not in all_methods()]
        for m in bad:
            if isinstance(m, str) and m.endswith("+ls"):
                check_method(m, name("methods"))  # names the unknown base method
        if bad:
            raise ValueError(f"{name('methods')}: unknown name(s) {bad}; choose from {list(METHODS)} or 'obs', "
                             "each optionally followed by '+ls' (least-squares refit).")
        self.methods = list(dict.fromkeys(self.methods))
        fractions("keeps")
        fractions("lottery_keeps")
        scalar("keep_max", low=0, high=1, low_open=True)
        scalar("keep_min", low=0, high=1, low_open=True)
        scalar("keep_points", "int", low=1)
        if self.keep_min > self.keep_max:
            raise ValueError(f"{name('keep_min')}: must not exceed {name('keep_max')} ({self.keep_max}), "
                             f"got {self.keep_min}.")
        if not self.keeps and self.keep_max >= 1.0:
            raise ValueError(f"{name('keep_max')}: must be < 1 (keep 1 is the dense network, always "
                             f"included), got {self.keep_max}.")
        self._check_seeds()
        if self.mode not in MODES:
            raise ValueError(f"{name('mode')}: must be one of {list(MODES)}, got {self.mode!r}.")
        scalar("s_size", "int", low=0)
        scalar("delta", low=0, high=1, low_open=True)
        if not isinstance(self.lottery, bool):
            raise TypeError(f"{name('lottery')}: must be true or false, got {self.lottery!r}.")
        method("lottery_method")
        scalar("calibration", "int", low=0)
        scalar("lam", low=0, low_open=True)
        if self.dask is not None:
            if not isinstance(self.dask, str):
                raise TypeError(f"{name('dask')}: must be 'local', 'local:N' or a scheduler address such as "
                                f"'tcp://10.0.0.5:8786', got {self.dask!r}.")
            from ..distributed import check_dask

            try:
                check_dask(self.dask)
            except ValueError as exc:
                raise ValueError(f"{name('dask')}: {str(exc).partition(': ')[2]}") from None
        self._check_later()

    def _check_later(self) -> None:
        """``imbalance``, ``analyses`` and ``prune_every`` (settings added with the analyses)."""
        name = self.label
        self.imbalance = parse_imbalance(self.imbalance, name("imbalance"))
        if isinstance(self.analyses, str):
            self.analyses = [a.strip() for a in self.analyses.split(",") if a.strip()]
        if not isinstance(self.analyses, (list, tuple)):
            raise TypeError(f"{name('analyses')}: must be a list drawn from {list(ANALYSES)}, got "
                            f"{self.analyses!r}.")
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad:
            raise ValueError(f"{name('analyses')}: unknown analysis {bad}; choose from {list(ANALYSES)}, e.g. "
                             "recall,stability.")
        self.analyses = [a for a in ANALYSES if a in self.analyses]
        self.prune_every = check_scalar(self.prune_every, name("prune_every"), kind="int", low=1)
        if self.mode == "during" and self.epochs <= self.prune_every:
            raise ValueError(f"{name('epochs')}: mode 'during' prunes every {self.prune_every} epochs "
                             f"({name('prune_every')}) while training, so it needs more epochs than that; got "
                             f"{self.epochs}. Raise {name('epochs')} or lower {name('prune_every')}.")

    def _check_seeds(self) -> None:
        rule = f"{self.label('seeds')}: must be a positive integer or a list of non-negative integers"
        value = self.seeds
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            if value < 1:
                raise ValueError(f"{rule}, got {value!r}; e.g. seeds = 3 for seeds 0, 1, 2.")
            value = list(range(int(value)))
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{rule}, got {value!r}.")
        if not value:
            raise ValueError(f"{rule}, got an empty list; name at least one seed.")
        for v in value:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{rule}, got {self.seeds!r}.")
            if v < 0:
                raise ValueError(f"{rule}, got {self.seeds!r}.")
        self.seeds = list(dict.fromkeys(int(v) for v in value))

    # -- derived values --
    def keep_grid(self) -> list[float]:
        """The kept fractions, largest first, rounded to 4 significant digits."""
        if self.keeps:
            grid = self.keeps
        elif self.keep_points == 1:
            grid = [self.keep_max]
        else:
            grid = np.geomspace(self.keep_max, self.keep_min, self.keep_points).tolist()
        return sorted({float(f"{k:.4g}") for k in grid}, reverse=True)

    def lottery_grid(self) -> list[float]:
        """The kept fractions of the lottery panel, largest first (empty without the panel)."""
        if not self.lottery:
            return []
        return sorted({float(f"{k:.4g}") for k in (self.lottery_keeps or self.keep_grid())}, reverse=True)

    def widths(self, n_in: int, n_out: int) -> list[int]:
        return [n_in, *self.hidden, n_out]

    def schedule(self) -> dict:
        """Keyword arguments of :func:`sparsify.train.train` for the reference network."""
        return dict(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                    weight_decay=self.weight_decay, milestones=self.milestones, gamma=self.gamma)

    def retrain_schedule(self) -> dict:
        """Keyword arguments of :func:`sparsify.train.train` for fine-tuning after a prune."""
        return dict(epochs=self.retrain_epochs, batch_size=self.batch_size, lr=self.retrain_lr,
                    momentum=self.momentum, weight_decay=self.weight_decay,
                    milestones=self.retrain_milestones, gamma=self.gamma)

    def prune_events(self) -> list[int]:
        """Epochs (counted from 0) at whose start mode ``during`` prunes: every ``prune_every`` epochs."""
        return list(range(self.prune_every, self.epochs, self.prune_every))

    def to_dict(self) -> dict:
        """The settings as a flat dict (what ``config.json`` holds); lists are copies.

        Settings added later (``imbalance``, ``analyses``, ``prune_every``,
        ``calibration``, ``lam``) are left out at their defaults, so an earlier
        run's folder still matches.
        """
        return {key: _copy(getattr(self, key)) for key in self.keys()
                if key not in _LATER_DEFAULTS or getattr(self, key) != _LATER_DEFAULTS[key]}


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return list(value) if isinstance(value, (list, tuple)) else value


def parse_imbalance(value, name: str = "imbalance") -> dict:
    """``{"classes": [...], "factor": f}`` from a dict or a ``"3,5:10"`` string; ``{}`` for none.

    Classes are distinct non-negative integers (checked against the data when it
    is loaded); the factor is a real number >= 1 (1 changes nothing).
    """
    rule = (f"{name}: must be {{classes = [3, 5], factor = 10}} (TOML) or '3,5:10' (classes, a colon, the "
            "factor by which their training points are subsampled)")
    if value is None or value == "" or value == {}:
        return {}
    if isinstance(value, str):
        head, sep, tail = value.partition(":")
        try:
            classes = [int(v) for v in head.split(",") if v.strip()]
            factor = float(tail)
        except ValueError:
            raise ValueError(f"{rule}, got {value!r}.") from None
        if not sep:
            raise ValueError(f"{rule}, got {value!r}.")
        value = {"classes": classes, "factor": factor}
    if not isinstance(value, dict):
        raise TypeError(f"{rule}, got {value!r}.")
    if set(value) != {"classes", "factor"}:
        raise ValueError(f"{rule}, got keys {sorted(value)}.")
    classes = value["classes"]
    if not isinstance(classes, (list, tuple)) or not classes:
        raise ValueError(f"{rule}; classes must be a non-empty list, got {classes!r}.")
    classes = [check_scalar(c, f"{name}.classes[{i}]", kind="int", low=0) for i, c in enumerate(classes)]
    if len(set(classes)) != len(classes):
        raise ValueError(f"{rule}; classes must be distinct, got {classes}.")
    factor = check_scalar(value["factor"], f"{name}.factor", low=1.0)
    factor = int(factor) if float(factor).is_integer() else float(factor)
    return {"classes": sorted(classes), "factor": factor}


def load_config(path) -> dict:
    """Read a flat TOML config file into a dict (checked by :meth:`ExperimentConfig.from_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config: file {str(path)!r} does not exist; pass a TOML file such as experiment.toml.")
    try:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config: {str(path)!r} is not valid TOML ({exc}).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"config: {str(path)!r} could not be read ({exc}).") from None
    tables = sorted(k for k, v in values.items() if isinstance(v, dict) and k != "imbalance")
    if tables:
        raise ValueError(
            f"config: {str(path)!r} has table(s) {tables}; write every key at the top level "
            "(e.g. epochs = 40, not [train] epochs = 40)."
        )
    return values
