"""The paper's experiment: train, prune with SiPP and baselines, (re)train, compare.

One run is a grid of **cells** ``(mode, method, keep, seed)``. For every seed a
reference network is trained from a seeded initialisation (its accuracy is the
``dense`` row at keep 1), a batch S is drawn from the validation split, and every
method prunes the network to every kept fraction of the geometric grid:

* ``oneshot`` — prune once and evaluate;
* ``retrain`` — prune, evaluate (``accuracy_after_prune``), fine-tune with the
  mask fixed for ``retrain_epochs`` and evaluate again (``test_accuracy``);
* ``iterative`` — a prune–retrain cascade down the grid (largest keep first):
  each step prunes the previous step's retrained network;
* ``during`` — prune while training from the initialisation, every
  ``prune_every`` epochs, reaching the kept fraction at the last event.

``analyses = ["recall", "stability"]`` adds recall distortion
(:mod:`~sparsify.experiment.analyses`) and generalization–stability
(:mod:`~sparsify.experiment.stability`) tables and plots; ``sparsify report``
re-renders a finished run (:func:`render_report`).

``drop_after_prune`` is the accuracy of the network that was pruned (the dense
network, or the previous step of the cascade) minus the accuracy right after
pruning, before any retraining. With ``lottery = true`` a lottery-ticket panel
adds cells of mode ``lottery``: the mask of ``lottery_method`` and a random mask
with the same kept count in every layer, each applied to the original
initialisation and trained with the full schedule.

Outputs in the run's folder: ``results.csv`` (one row per finished cell, appended
as cells finish, so an interrupted run resumes where it stopped), ``results.json``
(configuration, rows with per-class recall and per-layer counts, summary),
``summary.txt``, ``config.json`` and the plots ``accuracy.png``, ``layers.png``
and ``lottery.png``. Trained reference networks are kept in ``networks/`` so a
resumed run does not retrain them.

Method names: ``sipp-det``, ``sipp-rand``, ``sipp-hybrid`` (SiPP with the
authors' default allocations), ``sipp-det-balanced`` (det with the balanced
allocation), ``magnitude-global``, ``magnitude-layer``, ``random``, ``snip``,
``wanda``, ``undecayed`` (:mod:`sparsify.baselines`), and ``dense``. Refit methods
(:mod:`~sparsify.experiment.refit`): any of these followed by ``+ls`` (the same
selection, then the kept weights and biases refitted by least squares on S plus
``calibration`` training points, ridge ``lam``), ``obs`` and ``obs+ls``.

Modules: :mod:`~sparsify.experiment.config` (settings, TOML),
:mod:`~sparsify.experiment.results` (``results.csv``: append, read back
strictly), :mod:`~sparsify.experiment.summary` (accuracy tables, commensurate
prune ratios), :mod:`~sparsify.experiment.plots`,
:mod:`~sparsify.experiment.folder` (the run's folder and cached networks),
:mod:`~sparsify.experiment.run` (the grid of cells, resume, final files),
:mod:`~sparsify.experiment.refit` (the refit methods: ``+ls``, ``obs``),
:mod:`~sparsify.experiment.analyses` (recall distortion),
:mod:`~sparsify.experiment.stability` (generalization–stability),
:mod:`~sparsify.experiment.during` (mode ``during``, class imbalance),
:mod:`~sparsify.experiment.analysis_output` (the analyses' files) and
:mod:`~sparsify.experiment.rerender` (``sparsify report``).
"""
from __future__ import annotations

from .config import (ANALYSES, BASELINE_METHODS, DEFAULT_METHODS, METHODS, MODES, SIPP_METHODS, ExperimentConfig,
                     load_config, parse_imbalance)
from .folder import load_cached_network, prepare_out
from .plots import plot_results
from .refit import REFIT_METHODS, all_methods, format_comparison
from .results import CSV_COLUMNS, LEGACY_COLUMNS, append_row, cell_key, read_results_csv, write_results_csv
from .run import ExperimentResult, finish, prune_with, reprune, run_experiment
from .analyses import format_recall, intensification_slope, intensified_fraction, recall_table, relative_recall, t_interval
from .during import imbalance_dataset
from .rerender import render_report
from .stability import bootstrap_spearman, format_stability, instability, spearman, stability_table
from .summary import (TOLERANCES, accuracy_table, commensurate_prune_ratios, dense_accuracy, format_layers,
                      format_summary)

__all__ = [
    "ANALYSES",
    "BASELINE_METHODS",
    "DEFAULT_METHODS",
    "bootstrap_spearman",
    "format_recall",
    "format_stability",
    "imbalance_dataset",
    "instability",
    "intensification_slope",
    "intensified_fraction",
    "parse_imbalance",
    "recall_table",
    "relative_recall",
    "render_report",
    "spearman",
    "stability_table",
    "t_interval",
    "CSV_COLUMNS",
    "LEGACY_COLUMNS",
    "ExperimentConfig",
    "ExperimentResult",
    "METHODS",
    "MODES",
    "REFIT_METHODS",
    "SIPP_METHODS",
    "TOLERANCES",
    "accuracy_table",
    "all_methods",
    "append_row",
    "cell_key",
    "commensurate_prune_ratios",
    "dense_accuracy",
    "finish",
    "format_comparison",
    "format_layers",
    "format_summary",
    "load_cached_network",
    "load_config",
    "plot_results",
    "prepare_out",
    "prune_with",
    "read_results_csv",
    "reprune",
    "run_experiment",
    "write_results_csv",
]
