"""Every parameter declared once: in the signature and docstring of the public function that uses it.

A parameter's type, default and constraint are written once, in the signature of the function
(constraints as ``Annotated[int, Field(ge=2)]`` or a shared type of :mod:`scclust._types`), and its
description once, in the function's numpydoc ``Parameters`` section. Everything else derives from
those two:

- :func:`validated` checks the arguments of a call (pydantic's ``validate_call``) and turns a bad
  one into a one-line :class:`~scclust._errors.ConfigError` naming the argument and the valid
  choices; a cross-parameter rule (``check=``) runs on every call too;
- :func:`params_model` builds the pydantic model of a config section or of a step group from the
  same signature (defaults, constraints, the same ``check``) and docstring (descriptions); the
  JSON schema, the config reference and ``scclust init`` read them from there.

A **step group** (:class:`Group`: QC filters, HVGs, scaling + PCA, the kNN graph, the UMAP) is the
model of one step function's options; a pipeline function takes it as one argument
(``pp.prepare(adata, hvg={"n_top_genes": 2000})``) and a config nests it
(``prepare: {hvg: {n_top_genes: 2000}}``). A given mapping is merged into the group's defaults at
the place of use (:meth:`Group.with_defaults`).
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator, validate_call
from pydantic.fields import FieldInfo

from ._errors import ConfigError, format_validation_error

__all__ = ["Group", "Params", "param_docs", "params_model", "validated"]

F = TypeVar("F", bound=Callable[..., Any])

#: parameters of a public function that are not options (never in a config)
NOT_OPTIONS = frozenset({"adata", "copy", "show", "ax", "inplace"})


class Params(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Group(BaseModel):
    """A step group: the options of one step function, passed as one argument (a mapping or the model).

    Frozen, so a default instance in a signature is safe to share.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def with_defaults(cls, name: str, **defaults: Any) -> type[Group]:
        """The same group with other defaults (the place of use's); constraints and descriptions kept."""
        fields = {}
        for key, value in defaults.items():
            if key not in cls.model_fields:
                raise TypeError(f"{cls.__name__} has no field {key!r}")
            info = FieldInfo.merge_field_infos(cls.model_fields[key], default=_config_value(value))
            annotation = cls.model_fields[key].annotation
            if value is None and type(None) not in typing.get_args(annotation):
                annotation = annotation | None  # "not set": the place of use decides (documented there)
            fields[key] = (annotation, info)
        model = create_model(name, __base__=cls, __module__=cls.__module__, **fields)
        model.__doc__ = cls.__doc__
        return model


# ------------------------------------------------------------------------------------------ docstrings
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain(text: str) -> str:
    """reST markup removed (``:func:`~a.b``` -> ``a.b``, ````x```` -> ``x``), for schema descriptions."""
    return _ROLE.sub(r"\1", text).replace("``", "")


@functools.cache
def param_docs(func: Callable[..., Any]) -> dict[str, str]:
    """``{parameter: description}`` from a numpydoc ``Parameters`` section (``a, b`` entries shared)."""
    lines = (inspect.getdoc(inspect.unwrap(func)) or "").splitlines()
    out: dict[str, str] = {}
    try:
        i = next(
            i
            for i, line in enumerate(lines[:-1])
            if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}
        )
    except StopIteration:
        return out
    i += 2
    names: list[str] = []
    desc: list[str] = []

    def flush() -> None:
        text = " ".join(" ".join(desc).split())
        for n in names:
            out[n] = text

    while i < len(lines):
        line = lines[i]
        if line and not line[0].isspace():
            if i + 1 < len(lines) and lines[i + 1].strip() and set(lines[i + 1].strip()) == {"-"}:
                break  # the next section
            flush()
            names, desc = [n.strip().lstrip("*") for n in line.split(" : ")[0].split(",")], []
        elif line.strip():
            desc.append(line.strip())
        i += 1
    flush()
    return out


# ------------------------------------------------------------------------------------------ models
def _hints(target: Callable[..., Any]) -> dict[str, Any]:
    """The function's resolved annotations; names imported for type checking only (``Figure``,
    ``Axes``: never options) resolve to ``Any``, so reading a signature imports nothing heavy."""
    import builtins
    import sys

    globalns = vars(sys.modules[target.__module__])

    class _Names(dict):
        def __missing__(self, key: str) -> Any:
            if key in globalns:
                return globalns[key]
            return getattr(builtins, key, Any)

    return typing.get_type_hints(target, localns=_Names(), include_extras=True)


def _config_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def params_model(
    *funcs: Callable[..., Any],
    name: str,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
    fields: Mapping[str, Any] | None = None,
    base: type[BaseModel] = Params,
    doc: str | None = None,
) -> type[BaseModel]:
    """The pydantic model of the keyword-only options of ``funcs``, generated from their signatures and docstrings.

    Parameters
    ----------
    funcs
        One or more public functions (a stage that calls several, e.g. matrix -> clustering ->
        figure, takes the options of each; a name in several is taken from the first).
    name
        The model's class name.
    include, exclude
        Options to take (default: all keyword-only parameters but :data:`NOT_OPTIONS`) / leave out.
    defaults
        Other defaults at this place of use (a stage's, a group's).
    fields
        Further fields ``{name: (annotation, FieldInfo)}`` that the stage itself reads (figures, files).
    base
        :class:`Params` (a config section) or :class:`Group` (a step group).
    doc
        The model's docstring (default: the first paragraph of the first function's).

    Every option must be described in its function's docstring (a ``TypeError`` at import
    otherwise), so no config key is without a description. The functions' cross-parameter checks
    (``validated(check=)``) are applied to the model too.
    """
    wanted = None if include is None else list(include)
    skip = set(exclude) | NOT_OPTIONS
    spec: dict[str, Any] = {}
    checks = []
    for func in funcs:
        target = inspect.unwrap(func)
        hints = _hints(target)
        docs = param_docs(target)
        params = inspect.signature(target).parameters
        for pname in wanted if wanted is not None and len(funcs) == 1 else list(params):
            p = params[pname]
            if wanted is not None and pname not in wanted:
                continue
            if p.kind is not p.KEYWORD_ONLY or pname in spec or (wanted is None and pname in skip):
                if wanted is not None and p.kind is not p.KEYWORD_ONLY:
                    raise TypeError(f"{target.__qualname__}: {pname!r} is not a keyword-only parameter")
                continue
            if pname not in docs:
                raise TypeError(
                    f"{target.__module__}.{target.__qualname__}: parameter {pname!r} is not described in its docstring"
                )
            default = (defaults or {}).get(pname, p.default)
            info = Field(... if default is p.empty else _config_value(default), description=plain(docs[pname]))
            spec[pname] = (hints[pname], info)
        if getattr(target, "__scclust_check__", None) is not None:
            checks.append(target.__scclust_check__)
    spec.update(fields or {})
    validators = {}
    if checks:

        def _check(self: BaseModel) -> BaseModel:
            values = {k: getattr(self, k) for k in type(self).model_fields}
            for check in checks:
                check(values)
            return self

        validators["check_rules"] = model_validator(mode="after")(_check)
    first = inspect.unwrap(funcs[0])
    model = create_model(name, __base__=base, __module__=first.__module__, __validators__=validators, **spec)
    model.__doc__ = doc or plain((inspect.getdoc(first) or "").split("\n\n")[0])
    return model


# ------------------------------------------------------------------------------------------ calls
def validated(func: F | None = None, *, check: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """Validate a public function's arguments against its annotations (and ``check``).

    A bad argument raises :class:`~scclust._errors.ConfigError` with the one-line message a config
    gets (``leiden(): resolutions: every resolution must be > 0 (got [-1.0])``). Arguments are
    converted as the types say (a scalar resolution becomes a list, a mapping a step group).
    ``check(arguments)`` raises ``ValueError`` for a combination of values that is not valid; it is
    recorded on the function, and :func:`params_model` applies it to the config model too.
    Errors raised inside the function itself pass through unchanged.
    """
    if func is None:
        return functools.partial(validated, check=check)
    state = threading.local()
    hints = _hints(func)
    signature = inspect.signature(func)

    @functools.wraps(func)
    def body(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            try:
                check(dict(bound.arguments))
            except ValueError as err:
                raise ConfigError(f"{func.__name__}(): {err}") from None
        state.entered = True
        return func(*args, **kwargs)

    body.__annotations__ = hints
    checked = validate_call(body, config=ConfigDict(arbitrary_types_allowed=True))

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state.entered = False
        try:
            return checked(*args, **kwargs)
        except ValidationError as err:
            if getattr(state, "entered", False):
                raise
            message = format_validation_error(err, data=kwargs, argnames=list(signature.parameters))
            raise ConfigError(f"{func.__name__}(): {message}") from None

    if check is not None:
        func.__scclust_check__ = check  # type: ignore[attr-defined]
    wrapper.__scclust_validated__ = True  # type: ignore[attr-defined]
    return wrapper
