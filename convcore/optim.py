"""Optimisers with PyTorch's update rules: SGD (momentum, dampening, Nesterov, weight
decay) and Adam. Updates run in place on the parameters' backend (cuda: small
elementwise kernels in kernels/optim/, so parameters and state stay on the device).
"""
from __future__ import annotations

from ._update import adam_update_, sgd_update_
from .nn.module import Parameter, zeros_like


class Optimizer:
    def __init__(self, params, defaults: dict):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for index, param in enumerate(self.params):
            if not isinstance(param, Parameter):
                raise TypeError(f"{type(self).__name__}: params[{index}] is {type(param).__name__}, not a Parameter")
        self.defaults = defaults
        self.state = {}  # id(param) -> dict of state arrays, on the parameter's backend

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (the next backward writes fresh ones)."""
        for param in self.params:
            if set_to_none or param.grad is None:
                param.grad = None
            else:
                param.grad = zeros_like(param.grad)

    def step(self) -> None:
        for param in self.params:
            if param.grad is not None:
                self._update(param, self.state.setdefault(id(param), {}))
                param.bump_version()  # updated in place

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({args})"


def _check(name, value, low=0.0):
    if not value >= low:
        raise ValueError(f"invalid {name}: {value} (must be >= {low})")


class SGD(Optimizer):
    """``torch.optim.SGD``: d = g + λ·p; b = μ·b + (1−τ)·d (b = d at the first step);
    d = d + μ·b (Nesterov) or b; p = p − lr·d."""

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            _check(name, value)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                                      "nesterov": nesterov})

    def _update(self, param, state):
        first = "momentum_buffer" not in state
        if first and self.defaults["momentum"]:
            state["momentum_buffer"] = zeros_like(param.data)
        # Without momentum the buffer is never read; the grad stands in for it.
        buffer = state.get("momentum_buffer", param.grad)
        sgd_update_(param.data, param.grad, buffer, first=first, **self.defaults)


class Adam(Optimizer):
    """``torch.optim.Adam``: m = β₁m + (1−β₁)g; v = β₂v + (1−β₂)g²;
    p = p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε), with g = grad + λ·p."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        _check("lr", lr)
        _check("eps", eps)
        _check("weight_decay", weight_decay)
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def _update(self, param, state):
        if not state:
            state.update(step=0, exp_avg=zeros_like(param.data), exp_avg_sq=zeros_like(param.data))
        state["step"] += 1
        beta1, beta2 = self.defaults["betas"]
        adam_update_(param.data, param.grad, state["exp_avg"], state["exp_avg_sq"], lr=self.defaults["lr"],
                     beta1=beta1, beta2=beta2, eps=self.defaults["eps"], weight_decay=self.defaults["weight_decay"],
                     step=state["step"])
