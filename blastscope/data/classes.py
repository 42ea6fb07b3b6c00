"""Which class is positive, read from the class names; and class names compared as people read them.

A binary classifier's sensitivity, specificity, ROC-AUC, PR-AUC and its decision threshold are all about one class,
the *positive* one: the finding a screen must not miss. In blastscope that is the leukemic blast. Class names come
from folder names or a manifest's labels, so the positive class is found by what its name *means*, never by where it
sorts (with folders ``ALL/`` and ``HEM/``, alphabetical order would make HEM positive).

**The words.** A name is split into word tokens (at anything that is not a letter or digit, at camelCase humps and
between letters and digits; ``ALL_cells`` -> ``all cells``, ``LeukemicBlast`` -> ``leukemic blast``) and each token is
compared case-insensitively, a plural ``s`` allowed, with two lists:

* :data:`POSITIVE_WORDS` (malignant, or more generally "the finding"): ``all`` (C-NMC's folder name for acute
  lymphoblastic leukaemia), the other leukaemias ``aml cll cml apl mds``, ``blast lymphoblast myeloblast``,
  ``leukemic leukaemic leukemia leukaemia``, ``malignant malignancy abnormal cancer cancerous carcinoma tumor tumour
  neoplasm neoplastic lymphoma myeloma lesion``, the generic ``positive disease diseased pathologic pathological``,
  and ``infected parasitized parasitised`` (the NIH malaria cell images, a common microscopy benchmark).
* :data:`NEGATIVE_WORDS` (benign, "no finding"): ``hem`` (C-NMC's folder name for normal cells, hematogones),
  ``hematogone haematogone normal benign healthy negative control reactive uninfected unaffected``.

A positive word next to a negation (:data:`NEGATIONS`: ``non not no without free negative neg``), or carrying
``non``/``not``/``no`` as a prefix, reads as negative: ``non-cancer``, ``no_tumor``, ``notumor``, ``tumor-free``,
``nonleukemic``. Whole tokens only: ``small`` and ``overall`` are not ``all``, ``abnormal`` is not ``normal``. A name
with both kinds of word (``normal_blast``) reads as neither.

**The rule** (:func:`positive_class`) for two classes: one name reads positive and the other negative, or one reads
either way and the other reads as neither (``blast`` vs ``lymphocyte``: the blast; ``normal`` vs ``sickle``: sickle,
the one that is not normal). Everything else (``cats``/``dogs``, ``ALL``/``AML``, ``HEM``/``normal``) stops with a
one-line error asking for ``--positive-class NAME``, which always wins when given. A wrong guess would silently swap
sensitivity and specificity, so an unclear pair is never settled by order. Data with more classes has no positive
class: each cell gets its most probable class.

Sources: the C-NMC 2019 challenge names its classes ``all`` and ``hem`` (Gupta & Gupta, ISBI 2019); other public
cell and pathology sets name theirs ``normal``/``abnormal``, ``benign``/``malignant``, ``healthy``/``leukemia``,
``Parasitized``/``Uninfected``, ``no_tumor``/``tumor``, ``negative``/``positive``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from blastscope.errors import DataError

POSITIVE_WORDS = frozenset(
    {
        # C-NMC 2019: "all" is acute lymphoblastic leukaemia; the other leukaemias and myelodysplasia
        "all",
        "aml",
        "cll",
        "cml",
        "apl",
        "mds",
        # the malignant cells themselves
        "blast",
        "lymphoblast",
        "myeloblast",
        "leukemic",
        "leukaemic",
        "leukemia",
        "leukaemia",
        # general words for malignancy
        "malignant",
        "malignancy",
        "abnormal",
        "cancer",
        "cancerous",
        "carcinoma",
        "tumor",
        "tumour",
        "neoplasm",
        "neoplastic",
        "lymphoma",
        "myeloma",
        "lesion",
        # generic "the finding"
        "positive",
        "disease",
        "diseased",
        "pathologic",
        "pathological",
        "infected",
        "parasitized",
        "parasitised",
    }
)
"""Tokens that make a class name read as the positive (malignant) class."""

NEGATIVE_WORDS = frozenset(
    {
        "hem",  # C-NMC 2019: normal cells (hematogones)
        "hematogone",
        "haematogone",
        "normal",
        "benign",
        "healthy",
        "negative",
        "control",
        "reactive",
        "uninfected",
        "unaffected",
    }
)
"""Tokens that make a class name read as the negative (benign) class."""

NEGATIONS = frozenset({"non", "not", "no", "without", "free", "negative", "neg"})
"""Tokens that turn a positive word in the same name negative (``non-cancer``, ``tumor-free``)."""

NEGATING_PREFIXES = ("non", "not", "no")
"""Prefixes that turn a positive word negative within one token (``nonleukemic``, ``notumor``)."""

POSITIVE, NEGATIVE = "positive", "negative"

# camelCase humps (``ALLCells`` -> ALL Cells, ``leukemicBlast`` -> leukemic Blast), runs of letters, runs of digits
_HUMP = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+")


def name_tokens(name: str) -> list[str]:
    """The lower-case word tokens of a class name: ``"leukemic-Blast_2"`` -> ``["leukemic", "blast", "2"]``.

    Names split at anything but letters and digits, between letters and digits, and at camelCase humps, except
    that a run of letters that is itself a known word stays whole whatever its case (``aLl`` is ``all``).
    """
    tokens = []
    for run in re.findall(r"[A-Za-z]+|\d+", name):
        if run.isdigit() or _known(run.lower()):
            tokens.append(run.lower())
        else:
            tokens.extend(hump.lower() for hump in _HUMP.findall(run))
    return tokens


def _known(token: str) -> bool:
    return (
        _is_word(token, POSITIVE_WORDS)
        or _is_word(token, NEGATIVE_WORDS)
        or token in NEGATIONS
        or _negated_positive(token)
    )


def _negated_positive(token: str) -> bool:
    """``nonleukemic``, ``notumor``: a positive word behind a negating prefix."""
    return any(
        token.startswith(prefix) and _is_word(token[len(prefix) :], POSITIVE_WORDS) for prefix in NEGATING_PREFIXES
    )


def name_meaning(name: str) -> str | None:
    """``"positive"`` (malignant), ``"negative"`` (benign) or ``None`` (unknown or contradictory) for a class name."""
    tokens = name_tokens(name)
    negated = any(token in NEGATIONS for token in tokens)
    positive = negative = False
    for token in tokens:
        if _is_word(token, POSITIVE_WORDS):
            if negated:
                negative = True
            else:
                positive = True
        elif _is_word(token, NEGATIVE_WORDS) or _negated_positive(token):
            negative = True
    if positive == negative:
        return None
    return POSITIVE if positive else NEGATIVE


def _is_word(token: str, words: frozenset[str]) -> bool:
    return token in words or (len(token) > 3 and token.endswith("s") and token[:-1] in words)


def match_class(name: str, classes: Sequence[str]) -> str | None:
    """The class ``name`` stands for: the class spelled exactly so, else the one class equal to it ignoring case."""
    if name in classes:
        return name
    found = [label for label in classes if label.casefold() == name.casefold()]
    return found[0] if len(found) == 1 else None


def positive_class(classes: Sequence[str], explicit: str | None = None) -> str | None:
    """The positive class of binary data, by ``explicit`` (``--positive-class``) or else by the class names' meaning.

    Parameters
    ----------
    classes : sequence of str
        The data's class names (any order).
    explicit : str, optional
        A class the user named; matched ignoring case. It always wins.

    Returns
    -------
    str or None
        The positive class, spelled as in ``classes``; ``None`` for data with more than two classes (decided by the
        most probable class).

    Raises
    ------
    DataError
        If ``explicit`` is no class, is given for data without exactly two classes, or if the names of two classes
        do not say which is positive and nothing was given.
    """
    classes = tuple(classes)
    if explicit is not None:
        if len(classes) != 2:
            raise DataError(
                f"--positive-class {explicit}: a positive class needs exactly two classes, this data has "
                f"{len(classes)} ({', '.join(classes)}) and is decided by the most probable class; leave it out"
            )
        found = match_class(explicit, classes)
        if found is None:
            raise DataError(f"--positive-class {explicit}: no such class; the classes are {' and '.join(classes)}")
        return found
    if len(classes) != 2:
        return None
    meanings = {name_meaning(name) for name in classes}
    by_meaning = {name_meaning(name): name for name in classes}
    if meanings in ({POSITIVE, NEGATIVE}, {POSITIVE, None}):
        return by_meaning[POSITIVE]
    if meanings == {NEGATIVE, None}:
        return by_meaning[None]  # the class that is not the normal one
    first, second = classes
    raise DataError(
        f"cannot tell from the class names {first} and {second} which one is positive (malignant, the finding); "
        f"pass --positive-class {first} or --positive-class {second}"
    )


def positive_class_line(
    positive: str | None, classes: Sequence[str], how: str, display: Callable[[str], str] = str
) -> str:
    """The line a command prints before it starts, e.g. ``positive class: ALL (by its name; ...)``.

    ``how`` says where the choice came from: ``name`` (read from the class names at training), ``given``
    (``--positive-class`` or a re-run's config), ``recorded`` (kept from the run on resume) or ``run`` (the run's
    operating point, for evaluate, predict and serve). ``display`` spells a class name for people
    (``blastscope.metrics.display_name`` writes C-NMC's ``all`` as ALL); this module stays free of PyTorch.
    """
    if positive is None:
        names = ", ".join(display(name) for name in classes)
        return f"no positive class: {len(classes)} classes ({names}), each cell gets its most probable class"
    reasons = {
        "name": "by its name; --positive-class to change",
        "given": "as given by --positive-class or the config",
        "recorded": "recorded in the run",
        "run": "the run's; sensitivity, ROC-AUC, PR-AUC and the threshold are about it",
    }
    return f"positive class: {display(positive)} ({reasons[how]})"


def match_class_names(found: Sequence[str], known: Sequence[str]) -> dict[str, str] | None:
    """Map every name of ``found`` to the name of ``known`` it stands for, ignoring case; ``None`` if one is not
    among ``known`` or two stand for one.

    ``ALL``/``HEM`` maps onto a run's ``all``/``hem``; ``found`` may be any part of ``known`` (new cells of one
    class, such as one new person's normal cells, are scored by a two-class run).
    """
    mapping = {name: match_class(name, known) for name in found}
    if None in mapping.values() or len(set(mapping.values())) != len(mapping):
        return None
    return mapping  # type: ignore[return-value]


def canonical_spellings(labels: Iterable[str]) -> dict[str, str]:
    """Map every spelling of a label to one spelling per class ignoring case: the most frequent (ties: the first in
    sorted order), so that a manifest labelled ``ALL`` and ``all`` has one class, not two."""
    counts = Counter(labels)
    by_class: dict[str, list[str]] = {}
    for spelling in sorted(counts):
        by_class.setdefault(spelling.casefold(), []).append(spelling)
    return {
        spelling: min(spellings, key=lambda chosen: (-counts[chosen], chosen))
        for spellings in by_class.values()
        for spelling in spellings
    }
