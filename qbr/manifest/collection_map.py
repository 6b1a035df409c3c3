"""The glob algebra of collection selectors and restore maps, with no I/O and no wording.

A backup's `collections` is a list of globs, the last match deciding and '!' excluding. A
restore's `collections` maps source globs to targets, the first match winning; a target may
hold one '*', which receives what the source's one '*' matched. From that algebra come the
answers the checks need: which entries are shadowed and which can write into the same name.
Only the standard library is imported here, so the dataclasses can use it for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Iterable, Iterator

_GLOB_CHARS = frozenset("*?[")


def selects(globs: Iterable[str], collection: str) -> bool:
    """Whether `globs` select `collection`: the last glob that matches decides; '!' excludes."""
    selected = False
    for glob in globs:
        exclude = glob.startswith("!")
        if fnmatchcase(collection, glob[1:] if exclude else glob):
            selected = not exclude
    return selected


def target_name(entries: Iterable[tuple[str, str]], source: str) -> str | None:
    """The name `source` is restored into: the first matching entry decides; None when none matches."""
    for left, right in entries:
        if not fnmatchcase(source, left):
            continue
        if right == "*":
            return source
        if "*" in right:
            left_prefix, left_suffix = left.split("*", 1)
            right_prefix, right_suffix = right.split("*", 1)
            middle = source[len(left_prefix) : len(source) - len(left_suffix)]
            return right_prefix + middle + right_suffix
        return right
    return None


def has_glob(text: str) -> bool:
    return any(char in _GLOB_CHARS for char in text)


def split_star(pattern: str) -> tuple[str, str] | None:
    """(prefix, suffix) of a pattern with exactly one '*' and no other glob syntax; else None."""
    if pattern.count("*") != 1 or "?" in pattern or "[" in pattern:
        return None
    prefix, suffix = pattern.split("*", 1)
    return prefix, suffix


def shadowing_entry(entries: list[tuple[str, str]], index: int) -> str | None:
    """The earlier source that takes every name entry `index` could match (the first match wins); None if none."""
    left = entries[index][0]
    return next(
        (earlier for earlier, _ in entries[:index] if earlier == "*" or (not has_glob(left) and fnmatchcase(left, earlier))),
        None,
    )


def first_match(entries: list[tuple[str, str]], source: str) -> int | None:
    """The index of the entry that decides where `source` goes: the first whose glob matches it."""
    for index, (left, _) in enumerate(entries):
        if fnmatchcase(source, left):
            return index
    return None


@dataclass(frozen=True)
class OntoItself:
    """Entry `index` keeps the name of `source` (a collection, or every one a glob matches)."""

    index: int
    source: str


@dataclass(frozen=True)
class Clash:
    """Entries `later` and `earlier` can both restore into `target` (names matching it if it holds '*')."""

    later: int
    earlier: int
    target: str


def restore_collisions(
    entries: list[tuple[str, str]], usable: list[int], selectors: list[str], same_cluster: bool
) -> Iterator[OntoItself | Clash]:
    """Where the `usable` entries of a restore map would write one name twice, or (restoring onto the
    backup's own cluster) a collection onto itself; in the order the checks report them."""
    includes = [s for s in selectors if not s.startswith("!")]
    if includes and not any(has_glob(s) for s in includes):
        # The backup names its collections: check the map on exactly those.
        sources = [s for s in dict.fromkeys(includes) if selects(selectors, s)]
        targets: dict[str, tuple[int, str]] = {}
        for source in sources:
            index = first_match(entries, source)
            if index is None or index not in usable:
                continue
            target = target_name(entries, source)
            assert target is not None
            if same_cluster and target == source:
                yield OntoItself(index, source)
            if target in targets and targets[target][1] != source:
                earlier = targets[target][0]
                yield Clash(max(index, earlier), min(index, earlier), target)
            else:
                targets[target] = (index, source)
        return

    # Otherwise reason about the patterns themselves.
    def reaches(source: str, index: int) -> bool:
        """Whether `source` is selected by the backup and reaches entry `index` (first match wins)."""
        return selects(selectors, source) and first_match(entries, source) == index

    if same_cluster:
        for index in usable:
            left, right = entries[index]
            if right == "*" or right == left:
                yield OntoItself(index, left)

    for later_pos, j in enumerate(usable):
        for i in usable[:later_pos]:
            target = _targets_meet(entries, i, j, reaches)
            if target is not None:
                yield Clash(j, i, target)
                break


def _star_patterns_meet(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether two one-star patterns can match the same name."""
    prefixes = a[0].startswith(b[0]) or b[0].startswith(a[0])
    suffixes = a[1].endswith(b[1]) or b[1].endswith(a[1])
    return prefixes and suffixes


def _targets_meet(entries: list[tuple[str, str]], i: int, j: int, reaches: Any) -> str | None:
    """A name entries i and j could both restore into, from different sources; None if none is seen."""
    forms = [_target_form(*entries[i]), _target_form(*entries[j])]
    kinds = {forms[0][0], forms[1][0]}
    if kinds == {"name"}:
        return forms[0][1] if forms[0][1] == forms[1][1] else None
    if kinds == {"same"}:
        return None  # names map to themselves: distinct sources stay distinct
    if "name" in kinds:
        (name_index, name_form), (other_index, other_form) = (
            ((i, forms[0]), (j, forms[1])) if forms[0][0] == "name" else ((j, forms[1]), (i, forms[0]))
        )
        target = name_form[1]
        if other_form[0] == "same":
            # `{docs: docs_dr, "*": "*"}` only clashes if the source holds a collection named
            # docs_dr; whether it does is known at plan time, where the planner refuses it.
            return None
        (lp, ls), (rp, rs) = other_form[1], other_form[2]
        if target.startswith(rp) and target.endswith(rs) and len(target) >= len(rp) + len(rs):
            middle = target[len(rp) : len(target) - len(rs)]
            source = lp + middle + ls
            if reaches(source, other_index) and source != entries[name_index][0]:
                return target
        return None
    # Two patterns: compare their one-star shapes when both have one.
    shapes = []
    for form in forms:
        shape = split_star(form[1]) if form[0] == "same" else form[2]
        if shape is None:
            return None
        shapes.append(shape)
    if _star_patterns_meet(shapes[0], shapes[1]):
        return f"{max(shapes[0][0], shapes[1][0], key=len)}*{max(shapes[0][1], shapes[1][1], key=len)}"
    return None


def _target_form(left: str, right: str) -> tuple[Any, ...]:
    """('name', n): one target; ('same', glob): names kept; ('pattern', left_shape, right_shape)."""
    if right == "*":
        return ("same", left) if has_glob(left) else ("name", left)
    if "*" in right:
        return ("pattern", split_star(left), split_star(right))
    return ("name", right)
