"""The model registry: a dict of builders and a decorator that fills it."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a public builder under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model: ``create_model("shufflenet2plus1d", num_classes=101)``.

    Keyword arguments go to the builder unchanged; the builder's defaults are the paper's settings.
    The model remembers its name and arguments (``model.model_name``, ``model.model_kwargs``) so a
    checkpoint can rebuild it.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    model = _MODELS[name](**kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


_CHECKPOINTS = re.compile(r"^\s*Checkpoints:\s*(.*?)\s*(?:\n\s*\n|\Z)", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class ModelCard:
    """What a registered model is, read from its builder and a default build (see :func:`model_card`)."""

    name: str
    summary: str  # the first sentence of the builder's docstring
    parameters: int  # of the default build
    taps: tuple  # TapInfo of each named feature map: channels, stride (t, h, w)
    checkpoints: str  # which published checkpoints load into it
    arguments: dict[str, Any]  # the builder's keyword arguments and their defaults

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "parameters": self.parameters,
            "taps": [{"name": t.name, "channels": t.channels, "stride": list(t.stride)} for t in self.taps],
            "checkpoints": self.checkpoints,
            "arguments": {k: list(v) if isinstance(v, tuple) else v for k, v in self.arguments.items()},
        }


def model_card(name: str) -> ModelCard:
    """Describe the registered model ``name``: its builder's first sentence, the parameters of its default
    build (made on the meta device, so nothing is allocated), its taps, its builder arguments, and the
    checkpoints that load into it, from a ``Checkpoints:`` paragraph of the builder's docstring."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    builder = _MODELS[name]
    doc = inspect.getdoc(builder) or ""
    doc = doc.replace("``", "")
    summary = " ".join(doc.split("\n\n")[0].split())
    found = _CHECKPOINTS.search(doc)
    checkpoints = " ".join(found[1].split()) if found else "not stated by its builder"
    arguments = {p.name: p.default for p in inspect.signature(builder).parameters.values()
                 if p.default is not inspect.Parameter.empty}
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated, even for a large model
            model = create_model(name)
    except (NotImplementedError, RuntimeError):  # a builder that needs real tensors while it builds
        model = create_model(name)
    parameters = sum(p.numel() for p in model.parameters())
    return ModelCard(name, summary, parameters, tuple(getattr(model, "feature_info", ())), checkpoints, arguments)
