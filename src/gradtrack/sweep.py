"""One Hydra sweep, one MLflow parent run: its jobs are the child runs.

``MlflowSweepCallback`` is registered under ``hydra.callbacks`` in conf/config.yaml.

* ``on_multirun_start`` (main process) expands the sweep and composes + validates
  every job's config first, so a typo in one sweep value fails before any job runs
  and before any MLflow run exists. It then opens the store once (which also runs
  SQLite's schema migration once, not racing in N parallel jobs) and creates the
  parent run.
* ``on_job_start`` runs wherever the job runs (same process, a joblib worker, a Ray
  worker: Hydra pickles this callback with its state), and exports the parent run
  id, the sweep id and the job's overrides as environment variables that
  ``TrackedRun`` turns into tags.
* ``on_multirun_end`` (or, when a job failed and Hydra aborts the sweep with an
  error, an ``atexit`` hook) writes the summary onto the parent run and ends it.
"""

from __future__ import annotations

import atexit
import math
import os
import pickle
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from gradtrack.errors import ConfigError, GradtrackError
from gradtrack.tracking.naming import ENV_OVERRIDES, ENV_SWEPT, STEP_LOSS, job_key, job_label

ENV_PARENT = "GRADTRACK_PARENT_RUN_ID"
ENV_SWEEP = "GRADTRACK_SWEEP_ID"
# Sweep-metric values this close (relative) are a tie, not a ranking.
TIE_RTOL = 1e-9
TIE_BREAK = "earliest job"
CHAMPION = "champion"


class SweepConfigError(CompactHydraException, ConfigError):
    """A sweep value that would make a job fail at composition/validation time.

    A CompactHydraException, so Hydra prints just the message (no stack trace).
    """


@dataclass
class ChildRow:
    """One job of the sweep as seen in the store (plain data for the summary)."""

    overrides: str
    run_id: str | None  # None: the job never created a run
    status: str  # FINISHED, FAILED, KILLED, RUNNING, or NO_RUN
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    model_id: str | None = None  # the child's LoggedModel (linear/logistic runs)
    # the run this job's result came from ("earlier": a previous invocation of
    # this sweep), and which invocation created the child (tracking/reuse.py).
    reused: str = ""
    invocation: str = ""


def expand_sweep(config: DictConfig) -> list[list[str]]:
    """The job override lists the basic sweeper will launch, in launch order.

    Other sweepers (optuna, ...) choose jobs as they go: return [] and skip checks.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    target = OmegaConf.select(config, "hydra.sweeper._target_", default="")
    if not str(target).endswith("BasicSweeper"):
        return []
    args = [f"{k}={v}" for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
    args += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    parser = OverridesParser.create(config_loader=_loader())
    batches = BasicSweeper.split_arguments(parser.parse_overrides(args), None)
    return [list(job) for batch in batches for job in batch]


def check_jobs(
    config: DictConfig, jobs: list[list[str]], keep: bool = False
) -> tuple[list[Any], dict[str, str | None]]:
    """Compose every job's config exactly as the launcher will, validate it, and read
    its data as the job will (each distinct dataset once).

    Returns the typed configs and the digest of each dataset they read, by
    ``resume.dataset_key``; raises SweepConfigError naming every bad job, with the
    words a single run gets for a bad config or data file. With ``keep`` (the jobs the
    launcher will run), each composition is kept for the sweeper and launcher to reuse
    (gradtrack.sweep_compose).
    """
    from gradtrack.config import project_root, resolve_path, to_typed, validate
    from gradtrack.hydra_errors import explain
    from gradtrack.tracking.resume import dataset_key

    compose = _compose_memo(config).keep if keep else _loader().load_sweep_config
    problems: defaultdict[str, list[str]] = defaultdict(list)  # message -> its jobs
    typed: list[Any] = []
    # dataset_key -> the data's digest, or why it cannot be read
    data: dict[str, str | None | Exception] = {}
    for i, job in enumerate(jobs):
        label = f"job #{i} ({' '.join(job)})"
        try:
            cfg = compose(config, list(job))
            if "hydra" in cfg:  # the memo's keep leaves it out already
                with open_dict(cfg):
                    del cfg["hydra"]
            obj = to_typed(cfg)
            validate(obj)
        except Exception as exc:  # Hydra/OmegaConf raise many types; the text says what
            # gradtrack's own message, as a single run gets it, where there is one
            problems[explain(exc) or _first_lines(exc)].append(label)
            continue
        path = resolve_path(project_root(obj), obj.dataset.path)
        if path is not None and not path.exists():
            from gradtrack.data.sources import missing_file_hint

            # the words a single run gets (data.schema.read_header)
            problems[f"{path}: file not found. {missing_file_hint(path)}"].append(label)
            continue
        key = dataset_key(obj)
        if key not in data:
            data[key] = _read_data(obj, path)
        if isinstance(data[key], Exception):
            problems[str(data[key])].append(label)
            continue
        typed.append(obj)
    if problems:
        bad = sum(len(labels) for labels in problems.values())
        raise SweepConfigError(
            f"sweep not started: {bad} of {len(jobs)} jobs have an invalid "
            "config (no job ran, no MLflow run was created):\n  - "
            + "\n  - ".join(_jobs_with(labels) + f": {msg}" for msg, labels in problems.items())
            + "\nFix the sweep value(s) named above and rerun."
        )
    return typed, {k: v for k, v in data.items() if not isinstance(v, Exception)}


def _loader() -> Any:
    from hydra.core.global_hydra import GlobalHydra

    return GlobalHydra.instance().config_loader()


def _compose_memo(config: DictConfig) -> Any:
    """The sweep's ComposeMemo (gradtrack.sweep_compose), set for its launcher."""
    from gradtrack.sweep_compose import ComposeMemo

    memo = ComposeMemo.install(_loader())
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    memo.hits_per_job = 2 if launcher.endswith("BasicLauncher") else 1
    if memo.hits_per_job == 1:  # the launcher composes again in its workers
        memo.share()
    return memo


class ForkedCheck:
    """``check_jobs(config, jobs, keep=True)`` in a child process forked before this one
    imports MLflow, so that the two run side by side (see gradtrack.forking).

    The child composes each job and hands its composition to the workers through the
    memo's shared folder, as check_jobs does in this process, and sends back the typed
    configs and data digests (pickled, through a pipe); Hydra's sweeper here then reads
    the compositions from that folder. Should the child end without an answer (killed,
    out of memory), ``result`` runs the checks here instead.
    """

    NAME = "gt-sweep-check"  # what ps shows for the child

    def __init__(
        self, pid: int, answer_fd: int, config: DictConfig, jobs: list[list[str]], memo: Any = None
    ):
        self.pid, self._answer_fd, self._config, self._jobs = pid, answer_fd, config, jobs
        self._memo = memo

    def keep_compositions(self) -> None:
        """Have this process's memo keep the compositions the child shared, for the
        sweeper's check here (call it while waiting for the workers)."""
        if self._memo is not None:
            self._memo.keep_shared(self._config, self._jobs)

    @classmethod
    def start(cls, config: DictConfig, jobs: list[list[str]]) -> ForkedCheck | None:
        """The check under way in a child, or None when this process cannot fork one."""
        from gradtrack import forking

        if not forking.can_fork():
            return None
        memo = _compose_memo(config)  # before the fork: both share its folder
        read_fd, write_fd = os.pipe()
        pid = forking.fork(cls.NAME)
        if pid:
            os.close(write_fd)
            return cls(pid, read_fd, config, jobs, memo)
        code = 0
        try:
            os.close(read_fd)
            try:
                answer: tuple = ("checked", check_jobs(config, jobs, keep=True))
            except SweepConfigError as exc:
                answer = ("refused", str(exc))
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(answer, out, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:  # no answer: the main process checks the jobs itself
            code = 1
        finally:
            os._exit(code)

    def result(self) -> tuple[list[Any], dict[str, str | None]]:
        """check_jobs's answer (typed configs, data digests); raises its SweepConfigError."""
        with os.fdopen(self._answer_fd, "rb") as answer:
            blob = answer.read()
        os.waitpid(self.pid, 0)
        try:
            kind, value = pickle.loads(blob)
        except Exception:  # the child ended without an answer
            return check_jobs(self._config, self._jobs, keep=True)
        if kind == "refused":
            raise SweepConfigError(value)
        return value


def _read_data(obj: Any, path: Path | None) -> str | None | Exception:
    """The digest of a job's data, read and checked as the job will read it, or the
    error that stops the job: a bad file is found before any job runs, in the words a
    single run gets."""
    from gradtrack.data.load import load_dataset
    from gradtrack.hydra_errors import explain

    try:
        return load_dataset(obj.dataset, path, obj.dataset.task).digest
    except GradtrackError as exc:
        return exc
    except Exception as exc:  # an unreadable file: OSError, a decoding error, ...
        return ConfigError(explain(exc) or f"{path}: {_first_lines(exc)}")


def _jobs_with(labels: list[str]) -> str:
    """``job #0 (...)``, or for several jobs with the same problem, their count and the
    first three: one line per problem, however many jobs share it."""
    if len(labels) == 1:
        return labels[0]
    return f"{len(labels)} jobs ({first_few(labels, 3)})"


def first_few(names: list[str], n: int, rest_where: str = "") -> str:
    """The first ``n`` names, then how many more there are (and where they are)."""
    more = len(names) - n
    tail = f"; and {more} more{', ' + rest_where if rest_where else ''}" if more > 0 else ""
    return "; ".join(names[:n]) + tail


def _first_lines(exc: BaseException, n: int = 12) -> str:
    text = str(exc).strip() or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += f" ({str(cause).strip()})"
    return "\n    ".join(text.splitlines()[:n])


def _refuse(message: str) -> NoReturn:
    """Stop a sweep that must not start: its input is wrong (exit 2, as a single run)."""
    print(f"gradtrack: error: {message}", file=sys.stderr)
    sys.exit(2)


class MlflowSweepCallback(Callback):
    """Groups a Hydra multirun under one MLflow parent run (see module docstring)."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self.sweep_id: str | None = None
        self.tracking_uri: str | None = None
        self.experiment_id: str | None = None
        self.sweep_metric = "final_loss"
        self.jobs: list[str] = []
        self.swept: list[str] | None = None  # override keys that differ between jobs
        self.register_best: str | None = None
        self._finished = False
        # Set by a sweeper that picks its own jobs (the Optuna sweeper): failed jobs are
        # part of its search, and its direction decides which child is best.
        self.failed_jobs_ok = False
        self.maximize = False
        # this sweep's identity and this invocation of it (tracking/resume.py)
        self.sweep_fingerprint: str | None = None
        self.invocation: str | None = None
        self.interrupted = False

    # -- Hydra hooks -------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from gradtrack.sweep_workers import joblib_kwargs, launcher_problem, prewarm

        problem = launcher_problem(config)
        if problem is not None:
            _refuse(f"sweep not started: {problem}")
        jobs = expand_sweep(config)
        # joblib: the jobs are checked in a child while this process imports MLflow and
        # forks the workers' server, which imports the rest (gradtrack.forking)
        checking = None
        if jobs and joblib_kwargs(config) is not None:
            checking = ForkedCheck.start(config, jobs)
        workers = prewarm(config)
        try:
            typed, data_digests = self._check(config, jobs, checking)
            if workers is not None:  # only for a sweep that will run
                workers.start()
            self._start(config, jobs, typed, data_digests)
        except GradtrackError as exc:
            # The store cannot be opened (an unreachable server, an unwritable folder):
            # input, as for a single run. Hydra would turn any exception raised here into
            # a warning and launch every job anyway, each to fail the same way.
            _refuse(f"sweep not started: {exc}")
        if checking is not None:  # while the workers warm up
            checking.keep_compositions()
        # Not on the way out (a refused sweep, SIGTERM, Ctrl-C): the workers may need
        # seconds more to start, and the process ends without them.
        if workers is not None:
            workers.wait()

    def _check(
        self, config: DictConfig, jobs: list[list[str]], checking: ForkedCheck | None
    ) -> tuple[list[Any], dict[str, str | None]]:
        """Every job's typed config and the digests of their data, or exit 2."""
        try:
            if checking is not None:
                return checking.result()
            return check_jobs(config, jobs or sweeper_validation_jobs(config), keep=bool(jobs))
        except SweepConfigError as exc:
            # Hydra turns exceptions raised by callbacks into warnings and carries on;
            # SystemExit is not an Exception, so it really stops the sweep here.
            _refuse(str(exc))

    def _start(
        self,
        config: DictConfig,
        jobs: list[list[str]],
        typed: list[Any],
        data_digests: dict[str, str | None],
    ) -> None:
        self.jobs = [" ".join(j) for j in jobs]
        self.swept = swept_keys(jobs) if jobs else None
        first = typed[0] if typed else OmegaConf.to_object(_without_hydra(config))
        if not first.tracking.enabled:
            return
        from gradtrack.tracking import resume

        self.sweep_fingerprint = resume.sweep_fingerprint(config, typed, bool(jobs), data_digests)
        self.invocation = resume.new_invocation()
        self._open_parent(first, config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Runs in the job's own process: environment variables reach TrackedRun.
        _follow_launch_dir(config)
        if self.parent_run_id is None:
            return
        os.environ[ENV_PARENT] = self.parent_run_id
        os.environ[ENV_SWEEP] = self.sweep_id or ""
        os.environ[ENV_OVERRIDES] = " ".join(config.hydra.overrides.task)
        if self.invocation:
            os.environ["GRADTRACK_SWEEP_INVOCATION"] = self.invocation
        if self.swept is not None:
            os.environ[ENV_SWEPT] = ",".join(self.swept)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.finish()

    # -- parent run --------------------------------------------------------------
    def _open_parent(self, cfg: Any, config: DictConfig) -> None:
        from gradtrack.config import project_root, resolve_path
        from gradtrack.tracking import naming
        from gradtrack.tracking.owner import owner_tags
        from gradtrack.tracking.store import open_store, resolve_tracking

        target = resolve_tracking(
            cfg.tracking.uri, resolve_path(project_root(cfg), cfg.tracking.root)
        )
        client, self.experiment_id = open_store(target, cfg.tracking.experiment)
        self.tracking_uri = target.uri
        self.sweep_id = uuid.uuid4().hex[:12]
        self.sweep_metric = cfg.sweep_metric
        self.register_best = cfg.tracking.register_best or None
        if self._reopen(client):  # the same sweep ran before: continue it
            return
        task = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task)]
        sweep_args = " ".join(task)
        n_jobs = len(self.jobs) or _planned_jobs(config)  # a search sweeper: its trials
        name = naming.sweep_name(cfg, self.swept, n_jobs)
        note = (
            f"Hydra sweep of {n_jobs} jobs"
            + (f" over {', '.join(self.swept)}" if self.swept else "")
            + f"; each job is a child run.\n\nReproduce:\n\n    {naming.command(['-m', *task])}\n"
            + "\nIn the run list, expand this run (+) to see every job's Training/loss "
            + "curve in the chart view.\n"
        )
        run = client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                **naming.context_tags(cfg, project_root(cfg), task, note),
                "mlflow.runName": name,
                "sweep_id": self.sweep_id,
                "sweep_role": "parent",
                "sweep_overrides": sweep_args[:5000],
                "sweep_jobs": str(n_jobs),
                "sweep_metric": self.sweep_metric,
                "launcher": str(OmegaConf.select(config, "hydra.launcher._target_", default="")),
                **owner_tags(),
                **({"sweep_fingerprint": self.sweep_fingerprint} if self.sweep_fingerprint else {}),
            },
        )
        self.parent_run_id = run.info.run_id
        self._activate()
        print(f"gradtrack sweep {self.sweep_id}: {n_jobs} jobs, parent run {run.info.run_id}")

    def _reopen(self, client: Any) -> bool:
        """Reopen this sweep's previous parent run; False when there is none."""
        from gradtrack.tracking import resume

        if not self.sweep_fingerprint:
            return False
        old = resume.find_parent(client, self.experiment_id, self.sweep_fingerprint)
        if old is None:
            return False
        resume.reopen(client, old)
        self.parent_run_id = old.info.run_id
        self.sweep_id = old.data.tags.get("sweep_id") or self.sweep_id
        self._activate()
        print(
            f"gradtrack sweep {self.sweep_id}: resuming parent run {self.parent_run_id} "
            f"(last {old.info.status}); jobs with a FINISHED run are reused, the others run"
        )
        return True

    def _activate(self) -> None:
        global _ACTIVE
        _ACTIVE = self
        # Also exported here, so processes forked/spawned later inherit them.
        os.environ[ENV_PARENT] = self.parent_run_id
        os.environ[ENV_SWEEP] = self.sweep_id
        # A failed job makes Hydra raise out of the sweep (on_multirun_end never
        # runs); the parent must still get its summary and must not stay RUNNING.
        atexit.register(self.finish)
        if self.invocation:
            os.environ["GRADTRACK_SWEEP_INVOCATION"] = self.invocation

    def finish(self) -> None:
        """Summarise the children onto the parent run and end it (idempotent)."""
        if self._finished or self.parent_run_id is None:
            return
        self._finished = True
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        status = "FAILED"
        try:
            overlay = None
            if not self.interrupted:  # (Ctrl-C stopped the workers too: drawn here)
                # an idle joblib worker draws it while this process writes the tables
                from gradtrack.sweep_workers import start_in_a_worker

                overlay = start_in_a_worker(
                    sweep_overlay_from_store,
                    *(self.tracking_uri, self.experiment_id, self.parent_run_id, self.jobs),
                    *(self.sweep_metric, self.swept, self.maximize),
                )
            rows = collect_children(client, self.experiment_id, self.parent_run_id, self.jobs)
            self._record_reuse(client, rows)
            status = write_summary(
                client,
                self.parent_run_id,
                rows,
                self.sweep_metric,
                self.swept,
                maximize=self.maximize,
                overlay=overlay,
            )
            if status == "FAILED" and self.failed_jobs_ok:
                status = "FINISHED"
            if self.interrupted:  # Ctrl-C: the sweep did not run to its end
                status = "KILLED"
            if self.register_best and not register_champion(
                client, self.register_best, rows, self.sweep_metric, self.maximize
            ):
                status = "FAILED"
        finally:
            client.set_terminated(self.parent_run_id, status=status)
            global _ACTIVE, ended_status
            ended_status = status
            if _ACTIVE is self:
                _ACTIVE = None

    def end_killed(self, killed_by: str, seconds: float) -> None:
        """End the parent KILLED within ``seconds``, without its summary (after SIGTERM
        there is no time for one; rerunning the sweep resumes it and writes it)."""
        if self._finished or self.parent_run_id is None:
            return
        self._finished = True
        from mlflow.tracking import MlflowClient

        from gradtrack.tracking.spool import bounded

        client = MlflowClient(tracking_uri=self.tracking_uri)

        def end() -> None:
            client.set_tag(self.parent_run_id, "killed_by", killed_by)
            client.set_terminated(self.parent_run_id, status="KILLED")

        try:
            bounded(end, seconds)
        except Exception as exc:  # a parent left RUNNING is ended by the next gradtrack
            print(f"gradtrack: the sweep's parent run was not ended ({exc})", file=sys.stderr)

    def running_children(self, owners: list[int], seconds: float) -> list[str]:
        """This sweep's child runs still RUNNING in the processes ``owners`` (a stopped
        joblib sweep waits for them: sweep_workers.stop_workers)."""
        if self.parent_run_id is None:
            return []
        from mlflow.tracking import MlflowClient

        from gradtrack.tracking.spool import bounded

        client = MlflowClient(tracking_uri=self.tracking_uri)
        where = f"tags.mlflow.parentRunId = '{self.parent_run_id}' and status = 'RUNNING'"
        runs = bounded(
            lambda: client.search_runs([self.experiment_id], filter_string=where),
            max(seconds, 0.05),
        )
        mine = {str(pid) for pid in owners}
        return [r.info.run_id for r in runs if r.data.tags.get("owner_pid") in mine]

    def _record_reuse(self, client: Any, rows: list[ChildRow]) -> None:
        """Mark reused rows; tag and print how many jobs were reused/run/failed."""
        from mlflow.entities import Metric, RunTag

        from gradtrack.tracking import resume, reuse

        reuse.mark_rows(rows, self.invocation)
        counts = reuse.sweep_counts(rows, self.invocation)
        tags = resume.count_tags(counts)
        client.log_batch(
            self.parent_run_id,
            metrics=[Metric(f"sweep/{k}_jobs", float(v), now_ms(), 0) for k, v in counts.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
            synchronous=True,
        )
        stopped = f", {counts['stopped']} stopped" if counts["stopped"] else ""
        print(
            f"gradtrack sweep: {counts['reused']} jobs reused, {counts['run']} run, "
            f"{counts['failed']} failed{stopped}, {counts['not_run']} not run"
        )


# -- hooks for sweepers that choose their jobs as they go (the Optuna sweeper) ------

_ACTIVE: MlflowSweepCallback | None = None  # this process's sweep, once its parent exists


# The status the last sweep of this process ended its parent with (None: none ended).
# The command exits 1 when it is FAILED, even if no job raised (a job without a run).
ended_status: str | None = None


def active_sweep() -> MlflowSweepCallback | None:
    """The running sweep's callback (parent run id, tracking URI), for a sweeper to
    write its own results onto the parent before the parent ends; None if untracked."""
    return _ACTIVE


def sweeper_validation_jobs(config: DictConfig) -> list[list[str]]:
    """Jobs to validate before launch for a sweeper other than the basic one.

    A sweeper class may offer ``validation_jobs(config)`` (e.g. one job per bound and
    choice of its search space); a ValueError from it is a sweep config error.
    """
    from hydra.utils import get_class

    target = OmegaConf.select(config, "hydra.sweeper._target_", default="")
    try:
        hook = getattr(get_class(str(target)), "validation_jobs", None) if target else None
    except Exception:  # an unimportable sweeper fails later, with Hydra's own message
        return []
    if hook is None:
        return []
    try:
        return hook(config)
    except ValueError as exc:
        raise SweepConfigError(
            f"sweep not started: invalid search space or sweeper setting "
            f"(no job ran, no MLflow run was created): {exc}"
        ) from exc


def _planned_jobs(config: DictConfig) -> int:
    return int(OmegaConf.select(config, "hydra.sweeper.n_trials", default=0) or 0)


def swept_keys(jobs: list[list[str]]) -> list[str]:
    """Override keys whose value is not the same in every job (in first-seen order)."""
    from gradtrack.tracking.naming import override_key

    def value(job: list[str], key: str) -> str | None:
        return next((o for o in job if override_key(o) == key), None)

    keys = dict.fromkeys(override_key(o) for job in jobs for o in job)
    return [k for k in keys if len({value(job, k) for job in jobs}) > 1]


def _follow_launch_dir(config: DictConfig) -> None:
    """Run the job where the sweep was started, as the basic launcher does.

    With hydra.job.chdir=false, relative paths (data/, mlruns/) mean "where you
    started the command". A Ray worker starts elsewhere (wherever its raylet runs);
    on the same machine, step into the launch directory so paths mean the same.
    On another machine that directory may not exist: set paths.root there instead.
    """
    launch = OmegaConf.select(config, "hydra.runtime.cwd")
    if OmegaConf.select(config, "hydra.job.chdir") or not launch:
        return
    if os.getcwd() != launch and os.path.isdir(launch):
        os.chdir(launch)


def _without_hydra(config: DictConfig) -> DictConfig:
    cfg = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    from gradtrack.config import Config

    return OmegaConf.merge(OmegaConf.structured(Config), cfg)


def collect_children(
    client: Any, experiment_id: str, parent_run_id: str, jobs: list[str]
) -> list[ChildRow]:
    """One row per expected job (launch order), then any unexpected children."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=50_000,
    )
    by_overrides: dict[str, list[Any]] = {}

    def answer_first(r: Any) -> tuple:
        # A job's (earliest) FINISHED child answers for it, else its latest try; the
        # FAILED or KILLED tries that answer replaces (an earlier invocation of the
        # sweep) are left out of the rows, so that a rerun counts each job once.
        start = r.info.start_time or 0
        return (0, start) if r.info.status == "FINISHED" else (1, -start)

    for r in sorted(runs, key=answer_first):
        by_overrides.setdefault(job_key(r.data.tags.get("overrides", "")), []).append(r)
    rows: list[ChildRow] = []
    for job in jobs:
        found = by_overrides.get(job_key(job))
        if not found:
            rows.append(
                ChildRow(
                    job,
                    None,
                    "NO_RUN",
                    error="no run: the job did not start, or failed before creating its run",
                )
            )
            continue
        rows.append(_row(found.pop(0)))
        found[:] = [r for r in found if r.info.status == "FINISHED"]
    rows.extend(_row(r) for rest in by_overrides.values() for r in rest)
    return rows


def _row(run: Any) -> ChildRow:
    return ChildRow(
        overrides=run.data.tags.get("overrides", ""),
        run_id=run.info.run_id,
        status=run.info.status,
        metrics=dict(run.data.metrics),
        error=run.data.tags.get("error", "")[:300],
        model_id=_model_id(run),
        reused=run.data.tags.get("reused_from", ""),
        invocation=run.data.tags.get("sweep_invocation", ""),
    )


def _model_id(run: Any) -> str | None:
    outputs = getattr(run, "outputs", None)
    models = getattr(outputs, "model_outputs", None) or []
    return models[-1].model_id if models else None


@dataclass
class Ranking:
    """The sweep's best child and the children tied with it (same class, equal value)."""

    best: ChildRow | None
    tied: list[ChildRow]  # besides ``best``, in launch order
    ranked: list[ChildRow]  # every child with a finite metric, best first


def _baseline_failed(r: ChildRow) -> bool:
    # Only a child that ran the baseline check can fail it.
    return r.metrics.get("baseline/pass", 1.0) != 1.0


def rank(rows: list[ChildRow], metric: str, maximize: bool = False) -> Ranking:
    """Rank children: FINISHED first, then baseline passed (where checked), then
    ``metric`` (lower is better; ``maximize``: higher). Values within relative
    ``TIE_RTOL`` of the best, in the same class, tie with it; the tie is broken by
    launch order (earliest job)."""
    cands = [(i, r) for i, r in enumerate(rows) if math.isfinite(r.metrics.get(metric, math.nan))]
    order = sorted(
        cands,
        key=lambda ir: (
            ir[1].status != "FINISHED",
            _baseline_failed(ir[1]),
            -ir[1].metrics[metric] if maximize else ir[1].metrics[metric],
            ir[0],
        ),
    )
    ranked = [r for _, r in order]
    if not ranked or ranked[0].status != "FINISHED":
        return Ranking(None, [], ranked)
    top = ranked[0]

    def ties_with_top(r: ChildRow) -> bool:
        return (
            r.status == "FINISHED"
            and _baseline_failed(r) == _baseline_failed(top)
            and math.isclose(r.metrics[metric], top.metrics[metric], rel_tol=TIE_RTOL, abs_tol=0)
        )

    # cands is in launch order: among equals, the earliest job wins (TIE_BREAK).
    best, *tied = [r for _, r in cands if ties_with_top(r)]
    ranked = [best] + [r for r in ranked if r is not best]
    return Ranking(best, tied, ranked)


def best_row(rows: list[ChildRow], metric: str, maximize: bool = False) -> ChildRow | None:
    """The best finished child by :func:`rank`, or None."""
    return rank(rows, metric, maximize).best


def register_champion(
    client: Any, name: str, rows: list[ChildRow], metric: str, maximize: bool = False
) -> bool:
    """Register the best child's LoggedModel as a new version of ``name``, alias champion.

    Returns False (with a message on stderr) when nothing could be registered.
    """
    best = rank(rows, metric, maximize).best
    if best is None or best.model_id is None:
        why = "no child finished" if best is None else "the best child logged no model"
        print(
            f"gradtrack: error: tracking.register_best={name}: {why}; nothing registered "
            "(only linear/logistic runs with tracking.log_model=true log a model).",
            file=sys.stderr,
        )
        return False
    try:
        try:
            client.get_registered_model(name)
        except Exception:
            client.create_registered_model(name)
        # The model's own storage location: a models:/ source would be resolved
        # against MLflow's global tracking URI, not this client's store.
        model = client.get_logged_model(best.model_id)
        # The run that trained it: a reference child (reuse) only stands for that run.
        mv = client.create_model_version(
            name,
            source=model.artifact_location,
            run_id=model.source_run_id or best.run_id,
            model_id=best.model_id,
        )
        client.set_registered_model_alias(name, CHAMPION, mv.version)
        client.set_tag(best.run_id, "registered_as", f"{name}@{CHAMPION} (v{mv.version})")
    except Exception as exc:
        print(
            f"gradtrack: error: tracking.register_best={name}: registration failed ({exc}).",
            file=sys.stderr,
        )
        return False
    print(
        f"gradtrack sweep: registered {best.overrides} as models:/{name}@{CHAMPION} (v{mv.version})"
    )
    return True


# The sweep's last console line and its best_choice tag name at most this many tied or
# failed jobs, by their swept values; sweep_summary.md lists every one. Naming them all
# by their whole overrides made one line of ~5,000 characters for a 64-job sweep whose
# jobs converge to the same loss, and ten times that at 640 jobs.
NAMED_AT_MOST = 5


# How the last line groups the jobs that did not finish, by their child's status.
UNFINISHED = {
    "FAILED": "failed",
    "KILLED": "stopped",  # Ctrl-C or SIGTERM
    "RUNNING": "still running",  # a process that ended without ending its run
    "NO_RUN": "not run",  # never started, or failed before creating its run
}


def some_jobs(rows: list[ChildRow], swept: list[str] | None) -> str:
    """The first NAMED_AT_MOST of ``rows`` by label, and how many more there are."""
    labels = [job_label(r.overrides, swept) for r in rows[:NAMED_AT_MOST]]
    labels += [""] * (len(rows) - len(labels))  # counted, not named
    return first_few(labels, NAMED_AT_MOST, rest_where="listed in sweep_summary.md")


def best_sentence(ranking: Ranking, metric: str, swept: list[str] | None = None) -> str:
    """How the best child was chosen, ties and tie-break included (one line)."""
    best = ranking.best
    if best is None:
        return f"no finished job has a finite {metric}"
    text = f"best {metric}={best.metrics[metric]:.10g} ({best.overrides}, run {best.run_id})"
    if _baseline_failed(best):
        text += " [no job passed the baseline check]"
    if ranking.tied:
        text += (
            f"; tied within relative {TIE_RTOL:g} with {len(ranking.tied)} other job(s) "
            f"({some_jobs(ranking.tied, swept)}): chosen as the {TIE_BREAK}"
        )
    return text


def summary_line(
    rows: list[ChildRow], ranking: Ranking, metric: str, swept: list[str] | None = None
) -> str:
    """The sweep's last console line: jobs finished, which did not and why, the best
    job."""
    finished = sum(r.status == "FINISHED" for r in rows)
    line = f"gradtrack sweep: {finished}/{len(rows)} jobs finished"
    for status, word in UNFINISHED.items():
        some = [r for r in rows if r.status == status]
        if some:
            line += f", {len(some)} {word} ({some_jobs(some, swept)})"
    if ranking.best is not None:
        line += "; " + best_sentence(ranking, metric, swept)
    return line


def write_summary(
    client: Any,
    parent_run_id: str,
    rows: list[ChildRow],
    metric: str,
    swept: list[str] | None = None,
    maximize: bool = False,
    overlay: Callable[[], bytes] | None = None,
) -> str:
    """Log table (Markdown + CSV), overlaid loss curves, best child and failures.

    ``overlay`` gives the overlay's PNG when it is drawn elsewhere (sweep_overlay in a
    joblib worker, started before this); by default it is drawn here. Returns the
    parent's final status: FINISHED only if every job finished.
    """
    from mlflow.entities import Metric, RunTag

    from gradtrack import report

    unfinished = [r for r in rows if r.status != "FINISHED"]
    failed = [r for r in unfinished if r.status == "FAILED"]
    ranking = rank(rows, metric, maximize)
    best = ranking.best
    # which run answered a job ("earlier": a previous invocation of this sweep)
    reused = ["reused_from"] if any(r.reused for r in rows) else []
    header, body = report.metrics_table(
        [
            (
                [r.overrides, r.status, r.run_id or "", *([r.reused] if reused else [])],
                r.metrics,
                _first_line(r.error),
            )
            for r in rows
        ],
        ["overrides", "status", "run_id", *reused],
        first=metric,
        last="error",
    )
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "sweep_summary.csv").write_text(report.csv_table(header, body))
        (d / "sweep_summary.md").write_text(
            _markdown(report.markdown_table(header, body), rows, ranking, metric, maximize)
        )
        png = (
            overlay()
            if overlay is not None
            else sweep_overlay(client, rows, metric, swept, maximize)
        )
        (d / "loss_curves.png").write_bytes(png)
        client.log_artifacts(parent_run_id, str(d))
    # failed: FAILED children only; unfinished: every job without a FINISHED one (also
    # stopped, still running and never run), as the last line tells them apart
    tags = [
        RunTag("failed_jobs", str(len(failed))),
        RunTag("unfinished_jobs", str(len(unfinished))),
        RunTag("finished_jobs", str(len(rows) - len(unfinished))),
    ]
    for key, some in (("failed_overrides", failed), ("unfinished_overrides", unfinished)):
        if some:
            listing = "; ".join(f"{r.overrides} [{r.status}]" for r in some)
            tags.append(RunTag(key, listing[:5000]))
    # Counts as metrics too: the parent's Overview lists metrics, not its tags.
    now = now_ms()
    metrics = [Metric("sweep/finished_jobs", float(len(rows) - len(unfinished)), now, 0)]
    checked = [r for r in rows if "baseline/pass" in r.metrics]
    if checked:
        passed = sum(r.metrics["baseline/pass"] == 1.0 for r in checked)
        tags.append(RunTag("baseline_passed_jobs", f"{passed} of {len(checked)}"))
        metrics.append(Metric("sweep/baseline_passed_jobs", float(passed), now, 0))
    if best is not None:
        tags += [
            RunTag("best_run_id", best.run_id),
            RunTag("best_overrides", best.overrides),
            RunTag("best_tied_jobs", str(len(ranking.tied))),
            RunTag("best_choice", best_sentence(ranking, metric, swept)[:5000]),
        ]
        metrics.append(Metric(f"best/{metric}", best.metrics[metric], now, 0))
    client.log_batch(parent_run_id, metrics=metrics, tags=tags, synchronous=True)
    print(summary_line(rows, ranking, metric, swept), file=sys.stderr if unfinished else sys.stdout)
    if any(r.status == "KILLED" for r in rows):
        return "KILLED"
    return "FAILED" if unfinished else "FINISHED"


def sweep_overlay(
    client: Any, rows: list[ChildRow], metric: str, swept: list[str] | None, maximize: bool
) -> bytes:
    """The summary's loss overlay (PNG): every job's loss history, ranked by ``metric``,
    its scale fitted to the finished jobs."""
    from gradtrack import report
    from gradtrack.artifacts import loss_overlay_png

    ranking = rank(rows, metric, maximize)
    labels = job_labels(rows, swept)
    runs = {labels[id(r)]: r.run_id for r in rows if r.run_id is not None}
    png, _ = loss_overlay_png(
        report.histories(client, runs, STEP_LOSS),
        "sweep: loss per job",
        order=[labels[id(r)] for r in ranking.ranked],
        by=metric,
        scale_from=[labels[id(r)] for r in rows if r.status == "FINISHED"],
    )
    return png


def sweep_overlay_from_store(
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    jobs: list[str],
    metric: str,
    swept: list[str] | None,
    maximize: bool,
) -> bytes:
    """``sweep_overlay`` drawn by a process that has only the store's address (a joblib
    worker): it reads the children itself, as the main process does meanwhile."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    rows = collect_children(client, experiment_id, parent_run_id, jobs)
    return sweep_overlay(client, rows, metric, swept, maximize)


def now_ms() -> int:
    """The timestamp of the parent's summary metrics. Each invocation of a sweep logs
    them again at step 0, and MLflow shows, of the values at one step, the newest (the
    largest, among equal timestamps): with timestamp 0, a rerun's counts never showed."""
    return int(time.time() * 1000)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _markdown(table: str, rows, ranking: Ranking, metric, maximize=False) -> str:
    """The summary document: the best job and how it was chosen, the table, the jobs
    that did not finish (every one, by status, with its error)."""
    finished = sum(r.status == "FINISHED" for r in rows)
    counts = [f"{finished} finished"] + [
        f"{n} {word}"
        for status, word in UNFINISHED.items()
        if (n := sum(r.status == status for r in rows))
    ]
    lines = [f"# Sweep summary ({len(rows)} jobs: {', '.join(counts)})", ""]
    best = ranking.best
    if best is not None:
        lines += [
            f"Best by `{metric}` ({'higher' if maximize else 'lower'} is better; FINISHED "
            "first, then baseline passed): "
            f"`{best.overrides}` = {best.metrics[metric]:.10g}, run `{best.run_id}`",
            "",
        ]
        if ranking.tied:
            lines += [
                f"Tied within relative {TIE_RTOL:g}: "
                + ", ".join(f"`{r.overrides}`" for r in ranking.tied)
                + f". Tie broken by the {TIE_BREAK}.",
                "",
            ]
    lines.append(table)
    unfinished = [r for r in rows if r.status != "FINISHED"]
    if unfinished:
        lines += ["", "## Jobs that did not finish", ""]
        lines += [f"- `{r.overrides}`: {r.status} {_first_line(r.error)}" for r in unfinished]
    return "\n".join(lines) + "\n"


def job_labels(rows: list[ChildRow], swept: list[str] | None) -> dict[int, str]:
    """id(row) → its distinct legend label (status and, for a repeated job, run id added)."""
    out: dict[int, str] = {}
    for r in rows:
        label = job_label(r.overrides, swept)
        if r.status != "FINISHED":
            label += f" [{r.status}]"
        if label in out.values() and r.run_id:  # the same job twice (e.g. a rerun)
            label += f" ({r.run_id[:6]})"
        out[id(r)] = label
    return out
