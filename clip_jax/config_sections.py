"""One section of a run's config read over its defaults, the same way for every section."""

from __future__ import annotations

from typing import Any, Mapping


def is_count(value: Any) -> bool:
  """An int that is not a bool (a ConfigDict holds True where a count was meant, too)."""
  return isinstance(value, int) and not isinstance(value, bool)


def read_section(name: str, section: Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
  """`section` (a ConfigDict; None or empty: all defaults) over `defaults`.

  A key that is not in `defaults` raises a ValueError naming it and the allowed keys, so that a
  misspelt setting fails at once instead of being ignored.
  """
  given = dict(section.items()) if section else {}
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f"{name}.{unknown[0]}={given[unknown[0]]!r} is not a setting; allowed: "
                     f"{', '.join(defaults)}.")
  return {**defaults, **given}
