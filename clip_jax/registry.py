"""Named plug-ins of one kind: image towers, losses, data sources, tokenizers, evaluators.

Each is registered where it is implemented (a plug-in's in its own module, named in
model.plugins), and the settings check a name against its registry, so every name is written
once. A name registered twice is an error, not a replacement.
"""

from __future__ import annotations

from typing import Generic, TypeVar

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
  """The registered entries of one kind, by name, in the order they were registered."""

  def __init__(self, what: str, name_field: str = "name"):
    self.what = what  # "image tower", "loss", ...: what an error message calls an entry.
    self._name_field = name_field  # the entry's attribute holding its name
    self._entries: dict[str, Entry] = {}

  def register(self, entry: Entry) -> Entry:
    name = getattr(entry, self._name_field)
    if name in self._entries:
      raise ValueError(f"A {self.what} named {name!r} is registered already.")
    self._entries[name] = entry
    return entry

  def names(self) -> list[str]:
    return list(self._entries)

  def entries(self) -> list[Entry]:
    return list(self._entries.values())

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def allowed(self) -> str:
    """The registered names, for an error message."""
    return ", ".join(repr(name) for name in self._entries)

  def get(self, name: str, key: str) -> Entry:
    """The entry named `name`; `key` names the setting in an error."""
    if name not in self._entries:
      raise ValueError(f"{key}={name!r} is not a registered {self.what}; allowed: "
                       f"{self.allowed()} (or a plug-in's, named in model.plugins).")
    return self._entries[name]
