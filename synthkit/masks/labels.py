"""Which labels are tumour and which are head/brain: resolution from names or numbers.

``--label tumour`` or ``--label 2`` (repeatable, or comma separated) picks the tumour labels;
all picked labels move together as ONE object, so BraTS sub-labels (1, 2, 3 nested) keep their
arrangement. ``--head-label`` picks the labels that count as head/brain tissue (where a tumour
may go, and what a removed tumour becomes).

Defaults, from the cohort's label names when it has them: tumour = names containing
tumour/tumor/lesion or the BraTS parts (necrotic, edema, enhancing, NCR, ED, ET); head = names
containing one of :data:`HEAD_WORDS` (head, brain, tissue, ...). Without names: head = 1, tumour =
every other non-zero label.

:data:`HEAD_WORDS` is the one list of head/brain words in synthkit: :func:`is_head_name` (a label
named exactly one of them covers the whole head) is how sampling and training previews decide
whether "no label" means "outside the head".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from synthkit.errors import UsageError

_TUMOUR_WORDS = ("tumour", "tumor", "lesion", "necro", "edema", "oedema", "enhanc", "ncr", "net", "ed", "et")
#: Words that name a head/brain label (the union of the lists sampling and the mask tools once kept).
HEAD_WORDS = ("head", "brain", "tissue", "skull", "body", "foreground", "whole_head")


def is_head_name(name: str) -> bool:
    """Whether a label named ``name`` covers the whole head/brain: the name is one of
    :data:`HEAD_WORDS`, in any case (``"Brain"``, ``"whole_head"``; not ``"brain_tumour"``)."""
    return name.lower() in HEAD_WORDS


@dataclass(frozen=True)
class LabelRoles:
    """Label values playing each role. Background is always 0."""

    tumour: tuple[int, ...]
    head: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.tumour:
            raise UsageError("no tumour label given or found; pass --label NAME|VALUE")
        if not self.head:
            raise UsageError("no head/brain label given or found; pass --head-label NAME|VALUE "
                             "(raw BraTS masks have none: add a brain label first)")
        both = set(self.tumour) & set(self.head)
        if both:
            raise UsageError(f"labels {sorted(both)} cannot be both tumour and head labels")
        if 0 in self.tumour or 0 in self.head:
            raise UsageError("label 0 is the background; it cannot be a tumour or head label")


def parse_labels(items: Iterable[str | int], names: Mapping[str, int], what: str) -> tuple[int, ...]:
    """Label values from names or numbers (comma separated allowed); ``UsageError`` if unknown."""
    out: list[int] = []
    lower = {k.lower(): int(v) for k, v in names.items()}
    for item in items:
        for tok in str(item).split(","):
            tok = tok.strip()
            if not tok:
                continue
            if tok.lstrip("-").isdigit():
                out.append(int(tok))
            elif tok.lower() in lower:
                out.append(lower[tok.lower()])
            elif tok.lower() in ("tumour", "tumor"):
                matched = [v for k, v in lower.items() if _matches(k, _TUMOUR_WORDS)]
                if not matched:
                    raise UsageError(f"{what} {tok!r}: the cohort has no label with that name "
                                     f"(labels: {dict(names) or 'unnamed'})")
                out.extend(matched)
            else:
                raise UsageError(f"{what} {tok!r} is neither a number nor a label name "
                                 f"(labels: {dict(names) or 'unnamed'})")
    return tuple(dict.fromkeys(out))


def _matches(name: str, words: tuple[str, ...]) -> bool:
    parts = name.lower().replace("-", "_").replace(" ", "_").split("_")
    return any(w in name.lower() for w in words if len(w) > 3) or any(p in words for p in parts)


def resolve_roles(
    tumour: Iterable[str | int] | None,
    head: Iterable[str | int] | None,
    names: Mapping[str, int] | None = None,
    present: Iterable[int] = (),
) -> LabelRoles:
    """Turn CLI/user label choices into :class:`LabelRoles`.

    ``names`` maps label names to values (the cohort's ``labels``), ``present`` the values that
    occur in the masks (used only for the default tumour labels when there are no names).
    """
    names = dict(names or {})
    tumour = list(tumour or [])
    head = list(head or [])
    if head:
        head_v = parse_labels(head, names, "--head-label")
    else:
        head_v = tuple(v for k, v in names.items() if v != 0 and _matches(k, HEAD_WORDS))
        named_1 = [k for k, v in names.items() if v == 1]
        if not head_v and not (named_1 and _matches(named_1[0], _TUMOUR_WORDS)):
            head_v = (1,)  # the paper's convention: 1 head/brain, 2 tumour
    if tumour:
        tum_v = parse_labels(tumour, names, "--label")
    else:
        tum_v = tuple(v for k, v in names.items()
                      if v != 0 and v not in head_v and _matches(k, _TUMOUR_WORDS))
        if not tum_v:
            tum_v = tuple(sorted(v for v in set(present) | set(names.values())
                                 if v != 0 and v not in head_v))
    return LabelRoles(tumour=tuple(sorted(tum_v)), head=tuple(sorted(head_v)))
