"""The first module a joblib sweep's fork server imports (sweep_workers.use_forkserver).

It gives the server, and so every worker forked from it, gradtrack's collector schedule
before the server imports what the jobs need.
"""

from gradtrack import gc_schedule

gc_schedule.configure()
