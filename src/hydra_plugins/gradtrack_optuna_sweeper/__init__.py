"""gradtrack's Optuna sweeper for Hydra: ``hydra/sweeper=optuna`` on a maintained Optuna.

Hydra finds it by scanning the ``hydra_plugins`` namespace package. Modules whose
names start with ``_`` are skipped by that scan, so Optuna is imported only when a
sweep actually uses this sweeper.
"""
