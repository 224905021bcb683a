"""DVC stage commands: prepare one dataset, train one experiment, summarise the metrics.

dvc.yaml at the project root wires these into ``fetch → prepare_* → train@<exp> →
summarise``; each command here is small so its deps in dvc.yaml stay exact.
"""
