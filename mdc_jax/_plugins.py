"""A named registry that other packages extend through a Python entry-point group.

Used twice: the rule registry (``mdc_jax.registry``, group ``mdc_jax.rules``) and the model
registry of `mdc-jax train` (``mdc_jax.experiment.models``, group ``mdc_jax.models``). An entry
point's object is one item, or a list or tuple of items; a single item's key must equal the entry
point's name. Entry points are loaded once, on the first lookup.
"""

from __future__ import annotations

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
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            obj = ep.load()
            items = list(obj) if isinstance(obj, list | tuple) else [obj]
            for item in items:
                if not isinstance(item, self.cls):
                    raise ValueError(f"entry point {ep.name!r} in group {self.group!r} ({ep.value}) holds a "
                                     f"{type(item).__name__}, not a {self.cls.__name__}")
            if len(items) == 1 and items[0] is obj and self.key(obj) != ep.name:
                raise ValueError(f"entry point {ep.name!r} ({ep.value}) names a {self.cls.__name__} called "
                                 f"{self.key(obj)!r}; the two must agree")
            for item in items:
                self._items.setdefault(self.key(item), item)  # what the program registered itself wins
