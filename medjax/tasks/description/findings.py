"""Structured findings of a torso phantom slice, their vocabulary and tokens.

A slice's finding is three fields, read from the phantom's known lesions
(``lesion_types [K]``, ``lesion_radii [K]`` equivalent radii in pixels,
``lesion_valid [K]``) and the pixel spacing in mm:

- ``count``: how many lesions the slice holds (0..``max_lesions``);
- ``type``: the kind of the largest lesion (by equivalent radius; ties: the
  first), an index of ``medjax.data.datasets.phantoms.torso.LESION_TYPES``
  (0 ``none`` when there is no lesion, 1 hypodense liver lesion, 2 hyperdense
  liver lesion, 3 lung nodule; the organ follows from the kind);
- ``size``: the largest lesion's equivalent diameter, ``2 * radius * spacing``
  mm, rounded to the nearest multiple of ``size_bin_mm`` and clipped to
  ``[min_size_mm, max_size_mm]`` (0 when there is no lesion).

Its text, one word per token (the same words for the same fields, always):

- no lesion: ``no lesion``;
- one lesion: ``<kind> , <size> mm``, e.g. ``hypodense liver lesion , 40 mm``;
- several: the largest, then the count: ``lung nodule , 20 mm ; 2 lesions``.

Tokens are ``<bos> words <eos>`` padded with ``<pad>`` (id 0) to
``max_length``; the vocabulary is fixed by the options (:class:`FindingCoder`),
so ``tokens -> fields`` inverts ``fields -> tokens`` exactly and a generated
sequence that does not follow the grammar parses to -1 in the fields it gets
wrong (scored as a miss).
"""

import dataclasses
import functools

import numpy as np

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
#: Words of each lesion kind, indexed like ``torso.LESION_TYPES`` (0: none).
KIND_WORDS = (
    ("no", "lesion"),
    ("hypodense", "liver", "lesion"),
    ("hyperdense", "liver", "lesion"),
    ("lung", "nodule"),
)
FIELDS = ("count", "type", "size")
_GRAMMAR_WORDS = (
    "no",
    "lesion",
    "lesions",
    "hypodense",
    "hyperdense",
    "liver",
    "lung",
    "nodule",
    ",",
    ";",
    "mm",
)


@dataclasses.dataclass(frozen=True)
class FindingCoder:
    """Fields of a slice's lesions, their words and their token ids.

    Attributes:
        max_lesions: the most lesions a slice holds (the phantoms' ``K``).
        size_bin_mm: sizes are rounded to multiples of this.
        min_size_mm, max_size_mm: sizes are clipped to this range (multiples of
            ``size_bin_mm``).
        max_length: tokens per finding, ``<bos>`` and ``<eos>`` included; the
            longest finding needs 11.
    """

    max_lesions: int = 3
    size_bin_mm: int = 10
    min_size_mm: int = 10
    max_size_mm: int = 70
    max_length: int = 12

    def __post_init__(self):
        if self.max_lesions < 1:
            raise ValueError(f"task.max_lesions: expected >= 1, got {self.max_lesions}")
        if (
            self.size_bin_mm < 1
            or self.min_size_mm % self.size_bin_mm
            or (self.max_size_mm % self.size_bin_mm)
            or not 0 < self.min_size_mm <= self.max_size_mm
        ):
            raise ValueError(
                "task.size_bin_mm, min_size_mm, max_size_mm: expected a bin >= 1 and "
                "0 < min <= max, both multiples of the bin, got "
                f"{self.size_bin_mm}, {self.min_size_mm}, {self.max_size_mm}"
            )
        longest = (
            1 + max(map(len, KIND_WORDS)) + 3 + (3 if self.max_lesions > 1 else 0) + 1
        )
        if self.max_length < longest:
            raise ValueError(
                f"task.max_length: the longest finding needs {longest} tokens "
                f"(<bos> and <eos> included), got {self.max_length}"
            )

    # -- vocabulary --------------------------------------------------------------

    @property
    def sizes_mm(self) -> tuple[int, ...]:
        return tuple(range(self.min_size_mm, self.max_size_mm + 1, self.size_bin_mm))

    @functools.cached_property
    def words(self) -> tuple[str, ...]:
        """The vocabulary: ``<pad>`` (0), ``<bos>``, ``<eos>``, the grammar's
        words, the counts 2..max_lesions, then the sizes."""
        counts = tuple(str(n) for n in range(2, self.max_lesions + 1))
        sizes = tuple(str(s) for s in self.sizes_mm)
        return (PAD, BOS, EOS, *_GRAMMAR_WORDS, *counts, *sizes)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    @functools.cached_property
    def word_ids(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.words)}

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    # -- lesions -> fields (numpy or jax.numpy) -------------------------------------

    def fields_from_lesions(self, types, radii, valid, spacing_mm: float, xp=np):
        """Each slice's finding fields from its lesions.

        Args:
            types: ``[..., K]`` lesion kinds (``torso.LESION_TYPES`` indices).
            radii: ``[..., K]`` equivalent radii in pixels.
            valid: ``[..., K]`` which rows are real lesions.
            spacing_mm: in-plane pixel spacing.
            xp: ``numpy`` or ``jax.numpy`` (inside jit).

        Returns:
            ``count``, ``type``, ``size_bin`` (index into ``sizes_mm``, 0 when there
            is no lesion), each ``[...]`` int32.
        """
        valid = xp.asarray(valid, bool)
        count = xp.sum(valid, axis=-1).astype(xp.int32)
        largest = xp.argmax(xp.where(valid, radii, -1.0), axis=-1)[..., None]
        radius = xp.take_along_axis(xp.asarray(radii, xp.float32), largest, axis=-1)[
            ..., 0
        ]
        kind = xp.take_along_axis(xp.asarray(types), largest, axis=-1)[..., 0]
        diameter = 2.0 * radius * spacing_mm
        size_bin = xp.clip(
            xp.round(diameter / self.size_bin_mm)
            - self.min_size_mm // self.size_bin_mm,
            0,
            len(self.sizes_mm) - 1,
        ).astype(xp.int32)
        present = count > 0
        return (
            count,
            xp.where(present, kind, 0).astype(xp.int32),
            xp.where(present, size_bin, 0).astype(xp.int32),
        )

    # -- fields <-> words <-> tokens (host) -----------------------------------------

    def finding_words(self, count: int, kind: int, size_bin: int) -> list[str]:
        """The finding's words (no special tokens); see the module docstring."""
        if count == 0:
            return list(KIND_WORDS[0])
        if not 1 <= kind < len(KIND_WORDS):
            raise ValueError(f"finding: a lesion of kind {kind} has no words")
        words = [*KIND_WORDS[kind], ",", str(self.sizes_mm[size_bin]), "mm"]
        if count > 1:
            words += [";", str(count), "lesions"]
        return words

    def encode(self, words: list[str]) -> np.ndarray:
        """``[max_length]`` int32: ``<bos> words <eos> <pad>...``."""
        ids = [self.bos_id, *(self.word_ids[w] for w in words), self.eos_id]
        tokens = np.full(self.max_length, self.pad_id, np.int32)
        tokens[: len(ids)] = ids
        return tokens

    def decode_words(self, tokens) -> list[str]:
        """The words of ``tokens [L]``: after a leading ``<bos>`` (if any), up to
        the first ``<eos>`` or ``<pad>``."""
        tokens = [int(t) for t in tokens]
        if tokens and tokens[0] == self.bos_id:
            tokens = tokens[1:]
        words = []
        for t in tokens:
            if t in (self.eos_id, self.pad_id):
                break
            words.append(self.words[t])
        return words

    def parse(self, words: list[str]) -> tuple[int, int, int]:
        """``(count, type, size_bin)`` of a finding's words; -1 in each field
        that does not follow the grammar (the other fields are still read)."""
        if words == list(KIND_WORDS[0]):
            return 0, 0, 0
        kind = next(
            (
                k
                for k in range(1, len(KIND_WORDS))
                if words[: len(KIND_WORDS[k])] == list(KIND_WORDS[k])
            ),
            -1,
        )
        rest = words[len(KIND_WORDS[kind]) :] if kind > 0 else []
        size_bin = -1
        if len(rest) >= 3 and rest[0] == "," and rest[2] == "mm":
            sizes = [str(s) for s in self.sizes_mm]
            size_bin = sizes.index(rest[1]) if rest[1] in sizes else -1
            rest = rest[3:]
        elif kind > 0:
            rest = None  # the size clause is malformed: the count is unknown too
        if rest == []:
            count = 1 if kind > 0 else -1
        elif (
            rest is not None
            and len(rest) == 3
            and rest[0] == ";"
            and (
                rest[2] == "lesions"
                and rest[1].isdigit()
                and 2 <= int(rest[1]) <= self.max_lesions
            )
        ):
            count = int(rest[1])
        else:
            count = -1
        return count, kind, size_bin

    @functools.cached_property
    def token_table(self) -> np.ndarray:
        """``[max_lesions + 1, len(KIND_WORDS), len(sizes_mm), max_length]`` int32:
        the tokens of every finding, for a gather inside jit (rows of count 0
        are ``no lesion`` whatever the kind and size)."""
        table = np.zeros(
            (
                self.max_lesions + 1,
                len(KIND_WORDS),
                len(self.sizes_mm),
                self.max_length,
            ),
            np.int32,
        )
        for count in range(self.max_lesions + 1):
            for kind in range(len(KIND_WORDS)):
                for size_bin in range(len(self.sizes_mm)):
                    if count and not kind:
                        kind_words = 1  # unused (no lesion of kind none); any finding
                    else:
                        kind_words = kind
                    table[count, kind, size_bin] = self.encode(
                        self.finding_words(count, kind_words, size_bin)
                    )
        return table

    def text(self, tokens) -> str:
        """The finding ``tokens [L]`` say, as one line."""
        return " ".join(self.decode_words(tokens))
