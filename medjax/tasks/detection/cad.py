"""The classical computer-aided detection (CAD) pipeline that deep detectors
replaced: candidates from blob detection inside the body, hand-crafted
features per candidate (``cad_features``), and a scikit-learn classifier whose
probability of "this candidate hits a lesion" is the candidate's score.

A candidate is labelled a hit by LUNA16's rule, the one ``froc`` scores with
(``medjax.metrics.detection.match_candidates``): within a lesion's radius of
its centre, or on a voxel of its instance mask. Everything runs on the host.

Example::

    cad = CADDetector(random_state=0).fit(train_hu, train_lesions)
    detections = cad.detect(test_hu)  # one Detections per image
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import joblib
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from medjax.metrics.detection import match_candidates
from medjax.tasks.detection import cad_features
from medjax.tasks.detection.cad_features import Candidates

CLASSIFIERS = ("random_forest", "gradient_boosting")


@dataclass(frozen=True)
class Lesions:
    """The truth of one image.

    Attributes:
        centers: ``[L, ndim]`` voxel coordinates.
        radii: ``[L]`` voxels.
        instance_map: ``[*S]`` lesion ids ``1..L`` (row ``l`` is id ``l + 1``),
            or None to judge hits by the radius alone.
    """

    centers: np.ndarray
    radii: np.ndarray
    instance_map: np.ndarray | None = None


@dataclass(frozen=True)
class Detections:
    """Scored candidates of one image, best first.

    Attributes:
        points: ``[K, ndim]`` voxel coordinates.
        scores: ``[K]`` probability of a lesion, in [0, 1].
        radii: ``[K]`` blob radius, voxels.
    """

    points: np.ndarray
    scores: np.ndarray
    radii: np.ndarray


def lesions_from_fields(
    centers: np.ndarray,
    radii: np.ndarray,
    valid: np.ndarray,
    instance_map: np.ndarray | None = None,
) -> list[Lesions]:
    """Per-image ``Lesions`` from padded batch fields (the phantoms'
    ``lesion_centers [N, K, ndim]``, ``lesion_radii [N, K]``, ``lesion_valid
    [N, K]`` and ``lesion_mask [N, *S]``)."""
    return [
        Lesions(
            np.asarray(centers[i])[valid[i]],
            np.asarray(radii[i])[valid[i]],
            None if instance_map is None else np.asarray(instance_map[i]),
        )
        for i in range(len(valid))
    ]


def candidate_hits(points: np.ndarray, lesions: Lesions) -> np.ndarray:
    """``[K]`` bool: which candidates hit a lesion, by ``match_candidates``'s
    rule (the candidates get distinct scores; those it does not count as false
    positives are the hits)."""
    order = np.arange(len(points), dtype=np.float64)
    match = match_candidates(
        points,
        order,
        lesions.centers,
        lesions.radii,
        instance_map=lesions.instance_map,
    )
    return ~np.isin(order, match.false_positive_scores)


@dataclass
class CADDetector:
    """Blob candidates, hand-crafted features and a classifier.

    Attributes:
        radius_range: lesion radii the blob detector looks for, voxels (the
            64-pixel phantoms' lesions are 1.9 to 5.8).
        num_sigma: LoG scales.
        threshold: LoG threshold on the windowed [0, 1] image.
        window_center, window_width: display window of the blob detector and
            the texture, HU.
        body_threshold_hu: the body is what lies above, holes filled.
        dedup_distance: candidates closer than this (voxels) are one.
        classifier: ``random_forest`` or ``gradient_boosting``.
        n_estimators: trees (forest) or boosting iterations.
        random_state: of the classifier.
        n_jobs: joblib processes over images for candidates and features.
    """

    radius_range: tuple[float, float] = (1.4, 6.4)
    num_sigma: int = 12
    threshold: float = 0.02
    window_center: float = 40.0
    window_width: float = 400.0
    body_threshold_hu: float = -500.0
    dedup_distance: float = 2.0
    classifier: str = "random_forest"
    n_estimators: int = 300
    random_state: int = 0
    n_jobs: int = 1
    model_: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.classifier not in CLASSIFIERS:
            raise ValueError(
                f"classifier: expected one of {list(CLASSIFIERS)}, "
                f"got {self.classifier!r}"
            )

    def candidates(self, hu: np.ndarray) -> tuple[Candidates, np.ndarray]:
        """Candidates of one image ``[*S]`` (HU) and their features
        ``[K, len(FEATURE_NAMES)]``."""
        hu = np.asarray(hu)
        body = cad_features.body_mask(hu, self.body_threshold_hu)
        window = {"center": self.window_center, "width": self.window_width}
        found = cad_features.blob_candidates(
            hu,
            radius_range=self.radius_range,
            num_sigma=self.num_sigma,
            threshold=self.threshold,
            window_center=window["center"],
            window_width=window["width"],
            body=body,
            dedup_distance=self.dedup_distance,
        )
        features = cad_features.candidate_features(
            hu,
            found,
            window_center=window["center"],
            window_width=window["width"],
            body=body,
        )
        return found, features

    def extract(self, images: Sequence[np.ndarray]) -> list:
        """``candidates`` of every image ``[N, *S]`` (HU), in order; joblib
        processes when ``n_jobs > 1``."""
        if self.n_jobs > 1:
            return joblib.Parallel(n_jobs=self.n_jobs)(
                joblib.delayed(self.candidates)(image) for image in images
            )
        return [self.candidates(image) for image in images]

    def fit(self, images: Sequence[np.ndarray], lesions: Sequence[Lesions]):
        """Trains the classifier on the candidates of ``images`` ``[N, *S]``
        (HU) labelled by ``lesions``; returns self."""
        return self.fit_extracted(self.extract(images), lesions)

    def fit_extracted(self, extracted: Sequence, lesions: Sequence[Lesions]):
        """``fit`` on the output of ``extract`` (extract once, fit many)."""
        if len(extracted) != len(lesions):
            raise ValueError(
                f"lesions: expected one per image ({len(extracted)}), "
                f"got {len(lesions)}"
            )
        features = np.concatenate(
            [f for _, f in extracted] + [np.zeros((0, len(cad_features.FEATURE_NAMES)))]
        )
        labels = np.concatenate(
            [candidate_hits(c.points, t) for (c, _), t in zip(extracted, lesions)]
            + [np.zeros(0, bool)]
        )
        if labels.all() or not labels.any():
            raise ValueError(
                "fit: the candidates need both hits and misses, got "
                f"{labels.sum()} hits of {len(labels)}"
            )
        self.model_ = self._new_model().fit(features, labels)
        return self

    def _new_model(self):
        if self.classifier == "random_forest":
            # Balanced per tree: hits are a few percent of the candidates.
            return RandomForestClassifier(
                n_estimators=self.n_estimators,
                min_samples_leaf=2,
                class_weight="balanced_subsample",
                random_state=self.random_state,
                n_jobs=1,
            )
        return HistGradientBoostingClassifier(
            max_iter=self.n_estimators,
            learning_rate=0.05,
            early_stopping=False,
            random_state=self.random_state,
        )

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Scored candidates of every image ``[N, *S]`` (HU)."""
        return self.score_extracted(self.extract(images))

    def score_extracted(self, extracted: Sequence) -> list[Detections]:
        """``detect`` on the output of ``extract``."""
        if self.model_ is None:
            raise RuntimeError("CADDetector: call fit before detect")
        out = []
        for found, features in extracted:
            if len(features):
                scores = self.model_.predict_proba(features)[:, 1]
            else:
                scores = np.zeros(0)
            order = np.argsort(-scores, kind="stable")
            out.append(
                Detections(found.points[order], scores[order], found.radii[order])
            )
        return out
