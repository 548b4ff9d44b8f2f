"""Named errors so callers can tell a bad input from a diverged run from a missing fit."""


class ShapeError(ValueError):
    """A tensor did not have the shape an energy or sampler expects."""


class NonFiniteError(FloatingPointError):
    """A NaN or infinity appeared where a finite value is required."""


class NonFiniteLossError(NonFiniteError):
    """Training produced a non-finite loss; the run stops (it is never replaced by a constant)."""

    def __init__(self, step: int, loss: float, detail: str = ""):
        self.step = step
        self.loss = loss
        message = f"non-finite loss {loss} at training step {step}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class NotFittedError(RuntimeError):
    """The detector was used before `fit`."""


class NotCalibratedError(RuntimeError):
    """The detector was asked for a threshold-dependent answer before `calibrate`."""


class CalibrationError(ValueError):
    """The calibration cannot give a guard that works: too few calibration rows for a finite threshold
    at the asked rate, every row scored the same, or a stored threshold that its calibration does not
    reproduce. A guard that would flag nothing (or everything) is refused, never saved as working."""
