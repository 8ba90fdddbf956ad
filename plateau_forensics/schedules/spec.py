"""Parse a scheduler written as a constructor call, ``"CosineAnnealingWarmRestarts(T_0=10, T_mult=2)"``, into
an unbound scheduler (``plateau-trace --schedule``). Its own parser: names, numbers (constant arithmetic
allowed), strings, ``True``/``False``/``None``, lists, nested schedulers and ``lambda epoch: ...``; nothing is
evaluated by Python. A pasted ``torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)`` works: the module
path and a leading optimizer name are ignored.
"""

from __future__ import annotations

import inspect
from typing import Any

from plateau_forensics.schedules.base import LRScheduler
from plateau_forensics.schedules.errors import ExpressionError, ScheduleConfigError
from plateau_forensics.schedules.expr import Expression, Parser, tokenize


def scheduler_classes() -> dict[str, type[LRScheduler]]:
    """Every scheduler class by torch's name."""
    from plateau_forensics.schedules import basic, chains, cyclic

    out: dict[str, type[LRScheduler]] = {}
    for module in (basic, cyclic, chains):
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, LRScheduler)
                and not name.startswith("_")
                and obj.__module__ == module.__name__
            ):
                out[name] = obj
    return out


def parameters(cls: type[LRScheduler]) -> list[str]:
    """The constructor's argument names in torch's order, without the optimizer."""
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "optimizer")]


class _SpecParser(Parser):
    def __init__(self, text: str) -> None:
        super().__init__(tokenize(text, "schedule"), text, "schedule")
        self.classes = scheduler_classes()

    def _dotted(self) -> tuple[str, Any]:
        first = self.expect("name")
        parts = [first.value]
        while self.accept("op", "."):
            parts.append(self.expect("name").value)
        return ".".join(parts), first

    def scheduler(self) -> LRScheduler:
        self._nest()
        try:
            dotted, tok = self._dotted()
            name = dotted.rsplit(".", 1)[-1]
            if name == "ReduceLROnPlateau":
                raise ScheduleConfigError(
                    "ReduceLROnPlateau needs the metric every epoch: give a loss log "
                    "(plateau-trace LOSSES --patience ... --schedule ...) instead"
                )
            cls = self.classes.get(name)
            if cls is None:
                raise self.error(
                    f"unknown scheduler {dotted!r} (one of {', '.join(sorted(self.classes))})", tok
                )
            self.expect("op", "(")
            args, kwargs = self._arguments()
            return _build(cls, args, kwargs, self.text)
        finally:
            self.depth -= 1

    def _arguments(self) -> tuple[list[Any], dict[str, Any]]:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        first = True
        while not self.accept("op", ")"):
            t = self.tok
            nxt = self.tokens[self.i + 1]
            if t.kind == "name" and nxt.kind == "op" and nxt.value == "=":
                self.i += 2
                if t.value in kwargs:
                    raise self.error(f"argument {t.value!r} given twice", t)
                kwargs[t.value] = self.value()
            else:
                if kwargs:
                    raise self.error("positional argument after a keyword argument", t)
                if (
                    first
                    and t.kind == "name"
                    and nxt.kind == "op"
                    and nxt.value in (",", ")")
                    and t.value not in ("True", "False", "None")
                ):
                    self.i += 1  # StepLR(optimizer, ...): the optimizer is ours
                else:
                    args.append(self.value())
            first = False
            if self.accept("op", ")"):
                break
            self._comma(")")
        return args, kwargs

    def _comma(self, close: str) -> None:
        if not self.accept("op", ","):
            got = "the end" if self.tok.kind == "end" else repr(self.tok.value)
            raise self.error(f"expected ',' or {close!r}, found {got}")

    def value(self) -> Any:
        t = self.tok
        if self.accept("op", "["):
            return self._sequence("]")
        if t.kind == "op" and t.value == "(" and self._is_tuple():
            self.i += 1
            return tuple(self._sequence(")"))
        if self.accept("str"):
            return t.value
        if t.kind == "name":
            if t.value in ("True", "False", "None"):
                self.i += 1
                return {"True": True, "False": False, "None": None}[t.value]
            if t.value == "lambda":
                self.i += 1
                var = self.expect("name").value
                self.expect("op", ":")
                start = self.tok.pos
                tree = self.expression()
                source = self.text[start : self.tok.pos].strip()
                return Expression.from_tree(tree, source, var)
            if self._is_call():
                return self.scheduler()
        tree = self.expression()
        try:
            return Expression.from_tree(tree, self.text, "")(None)
        except ExpressionError as exc:
            raise self.error(f"a value must be a number, a string, a list or a scheduler ({exc})", t) from exc
        except (ArithmeticError, ValueError) as exc:
            raise self.error(f"{type(exc).__name__}: {exc}", t) from exc

    def _sequence(self, close: str) -> list[Any]:
        items: list[Any] = []
        while not self.accept("op", close):
            items.append(self.value())
            if self.accept("op", close):
                break
            self._comma(close)
        return items

    def _is_call(self) -> bool:
        j = self.i
        while (
            self.tokens[j].kind == "name"
            and self.tokens[j + 1].kind == "op"
            and self.tokens[j + 1].value == "."
        ):
            j += 2
        return (
            self.tokens[j].kind == "name"
            and self.tokens[j + 1].kind == "op"
            and self.tokens[j + 1].value == "("
            and self.tokens[j].value in self.classes | {"ReduceLROnPlateau": None}
        )

    def _is_tuple(self) -> bool:
        depth, j = 0, self.i
        while self.tokens[j].kind != "end":
            tok = self.tokens[j]
            if tok.kind == "op" and tok.value in "([":
                depth += 1
            elif tok.kind == "op" and tok.value in ")]":
                depth -= 1
                if depth == 0:
                    return False
            elif depth == 1 and tok.kind == "op" and tok.value == ",":
                return True
            j += 1
        return False


def _build(cls: type[LRScheduler], args: list[Any], kwargs: dict[str, Any], text: str) -> LRScheduler:
    names = parameters(cls)
    if len(args) > len(names):
        raise ScheduleConfigError(
            f"schedule {text!r}: {cls.__name__} takes {len(names)} arguments "
            f"({', '.join(names)}), got {len(args)} positional"
        )
    merged = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key not in names:
            hint = " (torch 2.7 removed verbose)" if key == "verbose" else ""
            raise ScheduleConfigError(
                f"schedule {text!r}: {cls.__name__} has no argument {key!r}{hint}; its "
                f"arguments are {', '.join(names)}"
            )
        if key in merged:
            raise ScheduleConfigError(f"schedule {text!r}: {cls.__name__} got {key!r} twice")
        merged[key] = value
    sig = inspect.signature(cls.__init__)
    missing = [n for n in names if n not in merged and sig.parameters[n].default is inspect.Parameter.empty]
    if missing:
        raise ScheduleConfigError(f"schedule {text!r}: {cls.__name__} needs {', '.join(missing)}")
    return cls(**merged)


def parse_schedule(text: str) -> LRScheduler:
    """The unbound scheduler a constructor call describes, e.g. ``parse_schedule("StepLR(step_size=3)")``.

    Raises:
        ScheduleConfigError: an unknown scheduler or argument, a missing required argument.
        ExpressionError: text that is not a constructor call of numbers, strings, lists and schedulers.
    """
    p = _SpecParser(text)
    s = p.scheduler()
    if p.tok.kind != "end":
        raise p.error(f"unexpected {p.tok.value!r} after the scheduler")
    return s
