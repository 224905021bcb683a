"""The first module a spawned fork server imports (sweep_workers.use_forkserver, when
the server cannot be forked from the main process: see gradtrack.forking).

It gives the server, and so every worker forked from it, gradtrack's collector schedule
before the server imports what the jobs need.

It also ties the server's life to the sweep's main process, and each worker's to the
server's. Each worker holds the server's "alive" pipe (so that it could fork through
the server itself), so the server never sees the main process go; and a loky worker
whose main process is gone waits for work until its idle timeout (300 s). A sweep
stopped by SIGTERM while its workers were still starting, or killed outright, left the
server and its workers running. With Linux's parent-death signal the server gets
SIGTERM when the main process ends, and each worker when the server ends: a worker in
the middle of a job then ends its run KILLED, as on any SIGTERM.
"""

import os
import sys

from gradtrack import gc_schedule
from gradtrack.forking import ENV_DIE_WITH, die_with_parent

gc_schedule.configure()
_main_pid = os.environ.pop(ENV_DIE_WITH, "")
if _main_pid:
    die_with_parent()
    if str(os.getppid()) != _main_pid:
        sys.exit(0)  # the main process ended before the signal was set
    os.register_at_fork(after_in_child=die_with_parent)
