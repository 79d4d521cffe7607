"""A named registry that other packages extend through a Python entry-point group.

Used twice: the rule registry (``mdc_jax.registry``, group ``mdc_jax.rules``) and the model
registry of `mdc-jax train` (``mdc_jax.experiment.models``, group ``mdc_jax.models``). An entry
point's object is one item, a list or tuple of items, or a module that registers its items when
imported; a single item's key must equal the entry point's name. Entry points are loaded once, on
the first lookup; a broken one is skipped with a warning.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Items of type ``cls`` keyed by ``key(item)``.

    Args:
      cls: the item type (``RuleSpec``, ``ModelSpec``).
      key: ``item -> str``, the name lookups use.
      group: the entry-point group other packages declare items in.
      noun, plural: how messages name an item and the list ("rule", "rules").
      register_name: the public function's name, for messages (``register_rule``).
    """

    def __init__(self, cls: type[T], key: Callable[[T], str], group: str, noun: str, plural: str,
                 register_name: str):
        self.cls, self.key, self.group = cls, key, group
        self.noun, self.plural, self.register_name = noun, plural, register_name
        self._items: dict[str, T] = {}
        self._plugins_loaded = False

    def register(self, item: T, *, overwrite: bool = False) -> T:
        if not isinstance(item, self.cls):
            raise ValueError(f"{self.register_name}: expected a {self.cls.__name__}; got {type(item).__name__}.")
        name = self.key(item)
        if name in self._items and self._items[name] is not item and not overwrite:
            raise ValueError(f"{self.register_name}: {name!r} is already registered; pass overwrite=True to replace it.")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        self._load_plugins()
        if name not in self._items:
            raise ValueError(f"unknown {self.noun} {name!r}; registered {self.plural}: "
                             f"{', '.join(sorted(self._items)) or 'none'}.")
        return self._items[name]

    def list(self) -> list[T]:
        self._load_plugins()
        return [self._items[k] for k in sorted(self._items)]

    def _load_plugins(self) -> None:
        """Loads every entry point of the group once. A broken one (an import error, a wrong type, a
        name taken by another package) is skipped with a warning naming it and its distribution, so
        one bad plugin does not stop the others or mdc-jax's own."""
        if self._plugins_loaded:
            return
        origin: dict[str, tuple[str, str]] = {}  # key -> (where, ep.value)
        for ep in entry_points(group=self.group):
            where = f"entry point {ep.name!r} = {ep.value!r} in group {self.group!r}" + (
                f" (distribution {ep.dist.name})" if getattr(ep, "dist", None) is not None else "")
            try:
                obj = ep.load()
            except Exception as err:  # a plugin's import error must not break every command
                warnings.warn(f"{where}: skipped, it failed to load: {type(err).__name__}: {err}", stacklevel=2)
                continue
            if isinstance(obj, types.ModuleType):
                continue  # a module that registered its items when imported
            items = list(obj) if isinstance(obj, list | tuple) else [obj]
            problem = next((f"holds a {type(i).__name__}, not a {self.cls.__name__}" for i in items
                            if not isinstance(i, self.cls)), None)
            if problem is None and not isinstance(obj, list | tuple) and self.key(obj) != ep.name:
                problem = f"names a {self.cls.__name__} called {self.key(obj)!r}; the two must agree"
            # A key another entry point declared is refused; the same object seen twice (one
            # distribution found on two paths) is not a conflict.
            taken = [self.key(i) for i in items if self.key(i) in origin and origin[self.key(i)][1] != ep.value]
            if problem is None and taken:
                problem = f"declares {taken[0]!r}, which {origin[taken[0]][0]} declares too"
            if problem:
                warnings.warn(f"{where}: skipped, it {problem}", stacklevel=2)
                continue
            for item in items:
                origin[self.key(item)] = (where, ep.value)
                self._items.setdefault(self.key(item), item)  # what the program registered itself wins
        self._plugins_loaded = True
