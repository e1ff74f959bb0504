"""Model registry: ``python -m dgmlab train NAME`` looks models up here by name."""

from __future__ import annotations

from dgmlab.models.base import Model, Output

REGISTRY: dict[str, type[Model]] = {}


def register(cls: type[Model]) -> type[Model]:
    """Class decorator: make a model available to the CLI and to checkpoints under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    REGISTRY[cls.name] = cls
    return cls


def get_model_class(name: str) -> type[Model]:
    _load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(sorted(REGISTRY))}") from None


def available_models() -> list[str]:
    _load_all()
    return sorted(REGISTRY)


def _load_all() -> None:
    # Importing the modules registers their classes; kept lazy so `import dgmlab` stays quick.
    import importlib
    import pkgutil

    import dgmlab.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in {"base"}:
            importlib.import_module(f"dgmlab.models.{info.name}")


__all__ = ["Model", "Output", "REGISTRY", "register", "get_model_class", "available_models"]
