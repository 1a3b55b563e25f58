"""Build pydantic models from values that are already valid, as fast as the interpreter allows.

``model_construct`` walks every field's aliases and defaults on each call; on the scheduler's hot path (a
statement of N lines is ~4N+3 models per reminder) that walk dominated the step. ``build`` sets the instance
dict directly when *every* field is given (the same end state as ``model_construct``) and falls back to
``model_construct`` otherwise, so a missing field still gets its default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_setattr = object.__setattr__


def _plain_fields(cls: type[BaseModel]) -> frozenset[str] | None:
    """The field names of ``cls`` when a direct build is equivalent to ``model_construct``, else None."""
    if cls.__pydantic_post_init__ or cls.__pydantic_root_model__ or cls.model_config.get("extra") == "allow":
        return None
    fields = cls.__pydantic_fields__
    if any(f.alias is not None or f.validation_alias is not None for f in fields.values()):
        return None
    return frozenset(fields)


_FIELDS: dict[type[BaseModel], frozenset[str] | None] = {}


def build(cls: type[M], **values: Any) -> M:
    """``cls.model_construct(**values)`` for trusted values; a direct build when every field is given."""
    try:
        names = _FIELDS[cls]
    except KeyError:
        names = _FIELDS[cls] = _plain_fields(cls)
    if names is None or values.keys() != names:
        return cls.model_construct(**values)
    m = cls.__new__(cls)
    _setattr(m, "__dict__", values)
    _setattr(m, "__pydantic_fields_set__", set(values))
    _setattr(m, "__pydantic_extra__", None)
    _setattr(m, "__pydantic_private__", None)
    return m


def maker(cls: type[M]) -> Callable[..., M]:
    """A constructor for trusted values of ``cls`` taking every field by keyword (a missing or unknown one
    raises ``TypeError``): ``build`` without its per-call checks, for the models built once per step or line."""
    names = _plain_fields(cls)
    if names is None:
        raise TypeError(f"{cls.__name__} cannot be built directly")
    order = list(cls.__pydantic_fields__)
    params = ", ".join(order)
    values = ", ".join(f"{n!r}: {n}" for n in order)
    fields_set = ", ".join(repr(n) for n in order)
    src = (
        f"def make_{cls.__name__}(*, {params}):\n"
        "    m = _new(_C)\n"
        f"    _set(m, '__dict__', {{{values}}})\n"
        f"    _set(m, '__pydantic_fields_set__', {{{fields_set}}})\n"
        "    _set(m, '__pydantic_extra__', None)\n"
        "    _set(m, '__pydantic_private__', None)\n"
        "    return m\n"
    )
    scope: dict[str, Any] = {"_new": object.__new__, "_set": _setattr, "_C": cls}
    exec(src, scope)  # noqa: S102  (field names of our own models, generated once at import)
    fn: Callable[..., M] = scope[f"make_{cls.__name__}"]
    return fn
