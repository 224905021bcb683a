"""MLflow tracking: the run tracker, the store and the logged model.

The CLIs that read the store (report, sweep, runs, sync) import mlflow too.

``open_run`` returns a tracker whose context manager ends the MLflow run with the
status that really happened (FINISHED, FAILED, KILLED).
"""

from gradtrack.tracking.run import NullRun, TrackedRun, open_run
from gradtrack.tracking.store import resolve_tracking

__all__ = ["NullRun", "TrackedRun", "open_run", "resolve_tracking"]
