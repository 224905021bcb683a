"""Error types users see. Each message names the input, the problem and the fix."""


class GradtrackError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(GradtrackError):
    """An invalid configuration value or combination (raised before any run exists)."""


class DataError(GradtrackError):
    """A data file that is missing, malformed or inconsistent with the config."""


class TrackingError(GradtrackError):
    """The tracking store cannot be reached or written."""


class DivergedError(GradtrackError):
    """Training produced a non-finite loss; the run is marked FAILED with diverged=true."""

    # What to try, unless the run says what applies to it (train.divergence_advice).
    ADVICE = (
        "Lower optimizer.lr, set optimizer.clip_norm, or standardize the features "
        "(dataset.standardize=true)."
    )

    def __init__(
        self,
        step: int,
        last_finite_step: int,
        last_finite_loss: float | None,
        advice: str | None = None,
    ):
        self.step = step
        self.last_finite_step = last_finite_step
        self.last_finite_loss = last_finite_loss
        self.advice = advice
        self.history = None  # the finite steps' RunResult, set by train._train
        super().__init__(
            f"training diverged: the loss became non-finite at step {step} "
            f"(last finite loss {last_finite_loss!r} at step {last_finite_step}). "
            + (advice or self.ADVICE)
        )

    def __reduce__(self):
        # Pickled with its own arguments: a joblib worker sends a failed job's exception
        # back to the main process, which must be able to rebuild it (the history
        # stays behind: the run's files hold it).
        return type(self), (self.step, self.last_finite_step, self.last_finite_loss, self.advice)
