"""One registry of model components, in the spirit of timm's `create_model`.

A component is an `nn.Module` class (or factory) registered under a kind and a name.
The configuration names it by that name or by an import path `package.module:Class`;
its other keys are keyword arguments, checked against the signature at load time.

This module is a leaf: it imports no component. `audiocpc.models` (the package) imports the
built-in component modules, whose decorators fill the table, before anyone can get here.

Arguments the model wires itself (dimensions, sample rate, number of steps) are passed by
the builder and may not be set in the configuration; each kind's are listed in `WIRING`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable

from pydantic import TypeAdapter, ValidationError

from audiocpc.errors import ConfigError, short_repr

KINDS = ("encoder", "context", "predictor", "similarity")

# Arguments each kind receives from the model builder, never from the configuration.
WIRING: dict[str, tuple[str, ...]] = {
    "encoder": ("z_dim", "sample_rate", "window_samples"),
    "context": ("in_dim", "out_dim", "max_len"),
    "predictor": ("c_dim", "z_dim", "steps"),
    "similarity": ("dim",),
}

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator: `@register("encoder", "conv1d")`."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[kind][name] = factory
        return factory

    return decorator


def registered(kind: str) -> list[str]:
    return sorted(_REGISTRY[kind])


def resolve(kind: str, type_name: str) -> Callable[..., Any]:
    """The factory for a registered name or an import path `module:attr`."""
    if ":" in type_name:
        module_name, _, attr = type_name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"type: cannot import module '{module_name}' ({exc})") from None
        factory = getattr(module, attr, None)
        if factory is None or not callable(factory):
            raise ConfigError(f"type: module '{module_name}' has no callable '{attr}'")
        return factory
    table = _REGISTRY[kind]
    if type_name not in table:
        close = difflib.get_close_matches(type_name, list(table), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"type: unknown {kind} '{type_name}'.{hint} Registered: {', '.join(sorted(table))}"
            " (or an import path 'package.module:Class')."
        )
    return table[type_name]


def resolve_component_params(kind: str, type_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check `params` against the component's signature; return them with defaults filled.

    Raises ConfigError with one line per problem, each naming the argument.
    """
    factory = resolve(kind, type_name)
    signature = _signature(factory)
    accepted = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in WIRING[kind]
    }
    takes_var_kwargs = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    problems: list[str] = []
    resolved: dict[str, Any] = {}
    for name, value in params.items():
        if name in WIRING[kind]:
            problems.append(
                f"{name}: set by audiocpc from the model's dimensions, not in model.{kind}"
                + (" (use model.z_dim / model.c_dim)" if "dim" in name else "")
            )
        elif name not in accepted and not takes_var_kwargs:
            close = difflib.get_close_matches(name, list(accepted), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(
                f"{name}: unknown argument for {kind} '{type_name}'{hint} "
                f"Accepted: {', '.join(accepted) or 'none'}"
            )
    for name, p in accepted.items():
        if name in params:
            value = params[name]
            if p.annotation is not inspect.Parameter.empty:
                try:
                    value = TypeAdapter(p.annotation).validate_python(value)
                except ValidationError as exc:
                    problems.append(f"{name}: {_reasons(exc)} (got {short_repr(params[name])})")
                    continue
                except Exception:  # an annotation pydantic cannot check: pass it on as is
                    pass
            resolved[name] = value
        elif p.default is not inspect.Parameter.empty:
            resolved[name] = p.default
        else:
            problems.append(f"{name}: required argument of {kind} '{type_name}' is missing")
    if takes_var_kwargs:
        resolved.update({k: v for k, v in params.items() if k not in accepted and k not in WIRING[kind]})
    if problems:
        raise ConfigError(problems)
    # Tuples from annotations become lists, so the config stays plain YAML data.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}


def _reasons(error: ValidationError) -> str:
    """pydantic's reasons in one line: a Union gives one per alternative (tagged by its loc's
    first entry, then the item that failed), e.g. "Input should be 'auto' or 'matmul'; or
    item 2: Input should be 'matmul' or 'conv1d'"."""
    reasons = []
    for entry in error.errors():
        loc = entry["loc"][1:] if len(error.errors()) > 1 else entry["loc"]
        where = ".".join(str(part) for part in loc)
        reasons.append(f"item {where}: {entry['msg']}" if where else entry["msg"])
    return "; or ".join(dict.fromkeys(reasons))


def _signature(factory: Callable[..., Any]) -> inspect.Signature:
    """The factory's signature with its annotations as types, not strings (modules written with
    `from __future__ import annotations`), so a Literal or int argument is checked at load time."""
    try:
        return inspect.signature(factory, eval_str=True)
    except Exception:  # an annotation that names what its module cannot see: left unchecked
        return inspect.signature(factory)


def build(kind: str, type_name: str, params: dict[str, Any], **wiring: Any) -> Any:
    """Instantiate a component with its configured params and the builder's wiring. A
    component rejects a combination of settings with ValueError (e.g. a width its heads do
    not divide): that is a configuration error, one line that names the setting."""
    factory = resolve(kind, type_name)
    accepted = inspect.signature(factory).parameters
    passed = {k: v for k, v in wiring.items() if k in accepted or _has_var_kwargs(factory)}
    try:
        return factory(**params, **passed)
    except ValueError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(("model.", "data.")) else
                          f"model.{kind}: {message}") from None


def _has_var_kwargs(factory: Callable[..., Any]) -> bool:
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
