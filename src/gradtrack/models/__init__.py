"""Problems (model + loss) by name. Only numpy is imported here."""

from __future__ import annotations

from gradtrack.models.base import InitSpec, Ops, Params, Problem


def get_problem(name: str, loss_form: str = "stable", tol: float = 1e-10) -> Problem:
    """The problem called ``name``; an unknown name lists the valid ones."""
    if name == "quadratic":
        from gradtrack.models.quadratic import Quadratic

        return Quadratic()
    if name == "fence":
        from gradtrack.models.fence import Fence

        return Fence()
    if name == "tanh_net":
        from gradtrack.models.tanh_net import TanhNet

        return TanhNet()
    if name == "linear":
        from gradtrack.models.linear import Linear

        return Linear()
    if name == "logistic":
        from gradtrack.models.logistic import Logistic

        return Logistic(loss_form=loss_form, tol=tol)
    raise ValueError(f"unknown model {name!r}; valid: quadratic, fence, tanh_net, linear, logistic")


__all__ = ["InitSpec", "Ops", "Params", "Problem", "get_problem"]
