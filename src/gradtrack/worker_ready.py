"""The last module a joblib sweep's fork server imports (sweep_workers.use_forkserver).

By then the server holds every module the jobs need: several hundred thousand objects
that live as long as any worker. ``gc.freeze()`` moves them to the permanent
generation, so the full collections of every worker forked from the server (loky
forces one after a worker's first job) traverse only what the jobs make. Garbage the
imports left is collected first, so that nothing dead is frozen.
"""

import gc

gc.collect()
gc.freeze()
