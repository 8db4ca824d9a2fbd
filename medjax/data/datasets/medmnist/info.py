"""What MedMNIST publishes of each dataset: ``INFO``, the table of
``medmnist/info.py`` of MedMNIST/MedMNIST (release 3.0.2, the one that points at
Zenodo record 10519652): task types, channels, class names and official split
sizes, with the accessors the configs' ``${medmnist:...}`` resolver calls.

Release 3 re-exported OrganA/C/SMNIST with a few examples fewer than release 2
(e.g. organamnist train 34561, was 34581). A data table: long by design.
"""

import dataclasses
from collections.abc import Mapping

from medjax.errors import ConfigError

ZENODO_RECORD = "https://zenodo.org/records/10519652"
HOMEPAGE = "https://medmnist.com/"
SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)
SPLITS = ("train", "validation", "test")
# MedMNIST's name of each split, as the npz keys spell it.
NPZ_SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}
MULTI_LABEL = "multi-label, binary-class"
TASK_TYPES = ("multi-class", "binary-class", MULTI_LABEL, "ordinal-regression")
MANUAL_DIR_ENV = "MEDMNIST_DIR"
CITATION = """@article{medmnistv2,
  title={MedMNIST v2-A large-scale lightweight benchmark for 2D and 3D biomedical
         image classification},
  author={Yang, Jiancheng and Shi, Rui and Wei, Donglai and Liu, Zequan and
          Zhao, Lin and Ke, Bilian and Pfister, Hanspeter and Ni, Bingbing},
  journal={Scientific Data}, volume={10}, number={1}, pages={41}, year={2023}
}"""


@dataclasses.dataclass(frozen=True)
class FlagInfo:
    """What MedMNIST's ``INFO[flag]`` says of one dataset.

    Attributes:
        task: the task type exactly as MedMNIST names it (one of ``TASK_TYPES``).
        spatial_dims: 2 for images, 3 for volumes.
        num_channels: 1 (grey) or 3 (RGB).
        labels: class names, index ``i`` = label ``i``; for the multi-label
            chestmnist, the name of each of the 14 binary labels.
        num_samples: official examples per split (``validation`` is ``val``).
        license: the data's licence.
    """

    task: str
    spatial_dims: int
    num_channels: int
    labels: tuple[str, ...]
    num_samples: Mapping[str, int]
    license: str


# From medmnist/info.py of github.com/MedMNIST/MedMNIST (release 3.0.2).
# The 11 abdominal organs of OrganA/C/SMNIST and OrganMNIST3D (same order).
ORGAN_LABELS = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)

INFO: dict[str, FlagInfo] = {
    "pathmnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=3,
        labels=(
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ),
        num_samples={"train": 89996, "validation": 10004, "test": 7180},
        license="CC BY 4.0",
    ),
    "chestmnist": FlagInfo(
        task="multi-label, binary-class",
        spatial_dims=2,
        num_channels=1,
        labels=(
            "atelectasis",
            "cardiomegaly",
            "effusion",
            "infiltration",
            "mass",
            "nodule",
            "pneumonia",
            "pneumothorax",
            "consolidation",
            "edema",
            "emphysema",
            "fibrosis",
            "pleural",
            "hernia",
        ),
        num_samples={"train": 78468, "validation": 11219, "test": 22433},
        license="CC BY 4.0",
    ),
    "dermamnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=3,
        labels=(
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ),
        num_samples={"train": 7007, "validation": 1003, "test": 2005},
        license="CC BY-NC 4.0",
    ),
    "octmnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=1,
        labels=(
            "choroidal neovascularization",
            "diabetic macular edema",
            "drusen",
            "normal",
        ),
        num_samples={"train": 97477, "validation": 10832, "test": 1000},
        license="CC BY 4.0",
    ),
    "pneumoniamnist": FlagInfo(
        task="binary-class",
        spatial_dims=2,
        num_channels=1,
        labels=(
            "normal",
            "pneumonia",
        ),
        num_samples={"train": 4708, "validation": 524, "test": 624},
        license="CC BY 4.0",
    ),
    "retinamnist": FlagInfo(
        task="ordinal-regression",
        spatial_dims=2,
        num_channels=3,
        labels=(
            "0",
            "1",
            "2",
            "3",
            "4",
        ),
        num_samples={"train": 1080, "validation": 120, "test": 400},
        license="CC BY 4.0",
    ),
    "breastmnist": FlagInfo(
        task="binary-class",
        spatial_dims=2,
        num_channels=1,
        labels=(
            "malignant",
            "normal, benign",
        ),
        num_samples={"train": 546, "validation": 78, "test": 156},
        license="CC BY 4.0",
    ),
    "bloodmnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=3,
        labels=(
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
        num_samples={"train": 11959, "validation": 1712, "test": 3421},
        license="CC BY 4.0",
    ),
    "tissuemnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=1,
        labels=(
            "Collecting Duct, Connecting Tubule",
            "Distal Convoluted Tubule",
            "Glomerular endothelial cells",
            "Interstitial endothelial cells",
            "Leukocytes",
            "Podocytes",
            "Proximal Tubule Segments",
            "Thick Ascending Limb",
        ),
        num_samples={"train": 165466, "validation": 23640, "test": 47280},
        license="CC BY 4.0",
    ),
    "organamnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=1,
        labels=ORGAN_LABELS,
        num_samples={"train": 34561, "validation": 6491, "test": 17778},
        license="CC BY 4.0",
    ),
    "organcmnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=1,
        labels=ORGAN_LABELS,
        num_samples={"train": 12975, "validation": 2392, "test": 8216},
        license="CC BY 4.0",
    ),
    "organsmnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=1,
        labels=ORGAN_LABELS,
        num_samples={"train": 13932, "validation": 2452, "test": 8827},
        license="CC BY 4.0",
    ),
    "organmnist3d": FlagInfo(
        task="multi-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "liver",
            "kidney-right",
            "kidney-left",
            "femur-right",
            "femur-left",
            "bladder",
            "heart",
            "lung-right",
            "lung-left",
            "spleen",
            "pancreas",
        ),
        num_samples={"train": 971, "validation": 161, "test": 610},
        license="CC BY 4.0",
    ),
    "nodulemnist3d": FlagInfo(
        task="binary-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "benign",
            "malignant",
        ),
        num_samples={"train": 1158, "validation": 165, "test": 310},
        license="CC BY 4.0",
    ),
    "adrenalmnist3d": FlagInfo(
        task="binary-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "normal",
            "hyperplasia",
        ),
        num_samples={"train": 1188, "validation": 98, "test": 298},
        license="CC BY 4.0",
    ),
    "fracturemnist3d": FlagInfo(
        task="multi-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "buckle rib fracture",
            "nondisplaced rib fracture",
            "displaced rib fracture",
        ),
        num_samples={"train": 1027, "validation": 103, "test": 240},
        license="CC BY 4.0",
    ),
    "vesselmnist3d": FlagInfo(
        task="binary-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "vessel",
            "aneurysm",
        ),
        num_samples={"train": 1335, "validation": 191, "test": 382},
        license="CC BY 4.0",
    ),
    "synapsemnist3d": FlagInfo(
        task="binary-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "inhibitory synapse",
            "excitatory synapse",
        ),
        num_samples={"train": 1230, "validation": 177, "test": 352},
        license="CC BY 4.0",
    ),
}


def _flag_info(flag: str) -> FlagInfo:
    if flag not in INFO:
        raise ConfigError(f"data.flag={flag!r}: expected one of {list(INFO)}")
    return INFO[flag]


def task_type(flag: str) -> str:
    """MedMNIST's task type of ``flag``, e.g. ``"multi-class"``."""
    return _flag_info(flag).task


def num_classes(flag: str) -> int:
    """The number of classes (multi-label chestmnist: of binary labels, 14)."""
    return len(_flag_info(flag).labels)


def class_names(flag: str) -> tuple[str, ...]:
    """The official class (or, for chestmnist, label) names, in label order."""
    return _flag_info(flag).labels


def spatial_dims(flag: str) -> int:
    """2 for the image datasets, 3 for the ``*mnist3d`` volumes."""
    return _flag_info(flag).spatial_dims


def num_channels(flag: str) -> int:
    """Channels of the images: 3 for pathmnist, dermamnist, retinamnist,
    bloodmnist, else 1."""
    return _flag_info(flag).num_channels


def is_multi_label(flag: str) -> bool:
    """Whether ``flag`` has several binary labels per image (chestmnist)."""
    return _flag_info(flag).task == MULTI_LABEL


def available_sizes(flag: str) -> tuple[int, ...]:
    """Image sizes published for ``flag``: 28, 64, 128, 224 (2D); 28, 64 (3D)."""
    return SIZES_2D if _flag_info(flag).spatial_dims == 2 else SIZES_3D


def check_flag_and_size(flag: str, size: int) -> None:
    sizes = available_sizes(flag)
    if size not in sizes:
        raise ConfigError(
            f"data.size={size!r}: expected one of {list(sizes)} for {flag} "
            f"({spatial_dims(flag)}D)"
        )


def npz_filename(flag: str, size: int) -> str:
    """The official file name: ``<flag>.npz`` at size 28, else
    ``<flag>_<size>.npz``."""
    check_flag_and_size(flag, size)
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def npz_url(flag: str, size: int) -> str:
    """Where the file is published (for messages; nothing here downloads it)."""
    return f"{ZENODO_RECORD}/files/{npz_filename(flag, size)}?download=1"


def image_shape(flag: str, size: int) -> tuple[int, ...]:
    """Shape of one record's image: ``[S, S, C]`` (2D) or ``[S, S, S, 1]`` (3D)."""
    check_flag_and_size(flag, size)
    return (size,) * spatial_dims(flag) + (num_channels(flag),)
