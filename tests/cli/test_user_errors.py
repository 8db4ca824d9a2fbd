"""Every user mistake ends in one line: bad inputs through the real programs.

Each case runs a program's ``main`` in this process (``sys.argv`` set, the exit
caught), so the table costs one JAX import, not one process per case. Each
asserts a non-zero exit, no traceback, and one ``<program>: error:`` line naming
the culprit (the file, directory or option). Hydra's own errors (an unknown
config name, a bad override) print Hydra's message, which ends with its
HYDRA_FULL_ERROR hint instead of a traceback.

The cases fail before anything is compiled: they check options, config files
and input files, which come first.
"""

import contextlib
import importlib
import io
import logging
import os
import struct
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf

TINY = ["model=cnn_tiny", "data=phantoms_tiny", "trainer=smoke", "optim=adam"]
SEGMENTATION = ["task=segmentation", "model=unet_tiny", "data=phantoms_tiny",
                "trainer=smoke", "optim=adam"]
HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1"


def run_program(program: str, args: list[str]) -> tuple[int | str, str]:
    """Runs ``medjax-<program> ARGS`` in this process: (exit status, output)."""
    from hydra.core.global_hydra import GlobalHydra

    module = importlib.import_module(f"medjax.cli.{program}")
    output = io.StringIO()
    argv, sys.argv = sys.argv, [f"medjax-{program}", *args]
    status: int | str = 0
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            absl_writes_here()
            try:
                module.main()
            except SystemExit as stop:
                status = stop.code
                if isinstance(status, str):  # sys.exit(message): printed, status 1
                    print(status, file=sys.stderr)
                    status = 1
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return status, output.getvalue()


def absl_writes_here() -> None:
    """Points absl's log handler at the current ``sys.stderr``. Hydra's logging
    set-up closes every handler, and absl's closes its stream unless it is
    ``sys.stderr``: left on pytest's capture of an earlier phase, it would close
    that."""
    from absl import logging as absl_logging

    absl_logging.get_absl_handler().python_handler.stream = sys.stderr


# -- the bad inputs ------------------------------------------------------------------

def _nifti(path, shape=(9, 10, 11), dtype=np.int16):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros(shape, dtype), np.eye(4)), str(path))
    return path


def _dicom_bytes() -> bytes:
    from pydicom.data import get_testdata_file

    with open(get_testdata_file("CT_small.dcm"), "rb") as f:
        return f.read()


def _png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.arange(35 * 41, dtype=np.uint8).reshape(35, 41)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def _write(path, content: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory, data_dir):
    """The bad files and directories, by name."""
    root = tmp_path_factory.mktemp("bad")
    files = {}
    good = _nifti(root / "good.nii")
    content = good.read_bytes()
    files["nifti_truncated"] = _write(root / "truncated.nii", content[:400])
    big = _nifti(root / "big.nii.gz", (40, 40, 40), np.float32).read_bytes()
    files["nifti_gz_truncated"] = _write(root / "truncated.nii.gz", big[: len(big) // 2])
    files["nifti_empty"] = _write(root / "empty.nii.gz", b"")
    files["nifti_text"] = _write(root / "text.nii", b"not an image\n" * 40)
    files["nifti_not_gzip"] = _write(root / "plain.nii.gz", content)
    files["nifti_1d"] = _nifti(root / "line.nii", (50,))
    bad_dtype = bytearray(content)
    bad_dtype[70:72] = struct.pack("<h", 1234)  # datatype code nibabel does not know
    files["nifti_bad_header"] = _write(root / "header.nii", bytes(bad_dtype))
    dicom = _dicom_bytes()
    files["dicom_truncated"] = _write(root / "series_cut" / "slice.dcm", dicom[: len(dicom) // 2])
    files["dicom_header_only"] = _write(root / "header_only.dcm", dicom[:132])
    files["dicom_empty"] = _write(root / "empty.dcm", b"")
    files["dicom_text"] = _write(root / "text.dcm", b"DICOM? no\n" * 30)
    files["dicom_empty_dir"] = root / "no_slices"
    files["dicom_empty_dir"].mkdir()
    _write(root / "no_slices" / "README.txt", b"nothing here")
    png = _png_bytes()
    files["png_truncated"] = _write(root / "truncated.png", png[: len(png) // 2])
    files["png_empty"] = _write(root / "empty.png", b"")
    files["png_text"] = _write(root / "text.png", b"not a png\n" * 20)
    files["unknown_format"] = _write(root / "image.tif.txt", b"\x00" * 64)
    files["a_file"] = _write(root / "a_file", b"a file, not a directory")
    files["missing"] = root / "missing"
    files["volume"] = _nifti(root / "volume.nii.gz")
    files["volume_other_shape"] = _nifti(root / "volume_other.nii.gz", shape=(8, 8, 8))
    files["png_ok"] = _write(root / "ok.png", png)

    # run directories
    files["run_no_config"] = root / "run_no_config"
    files["run_no_config"].mkdir()
    foreign = root / "run_foreign"
    foreign.mkdir()
    (foreign / "config.yaml").write_text("model: resnet50\nlr: 0.1\nepochs: 90\n")
    files["run_foreign"] = foreign
    truncated = root / "run_truncated"
    truncated.mkdir()
    (truncated / "config.yaml").write_text("task:\n  _target_: [medjax.tasks.cl")
    files["run_truncated"] = truncated
    for name, overrides in (("run_classification", TINY), ("run_segmentation", SEGMENTATION)):
        from medjax.config import compose

        directory = root / name
        directory.mkdir()
        config = compose("train", [*overrides, f"data.data_dir={data_dir}"])
        OmegaConf.save(OmegaConf.create(OmegaConf.to_container(config, resolve=True)),
                       directory / "config.yaml")
        files[name] = directory  # a run's config, but no checkpoints yet

    # MedMNIST archives
    from tests.data.datasets.medmnist.files import write_medmnist_npz

    write_medmnist_npz(root / "npz_garbage", "pneumoniamnist")
    (root / "npz_garbage" / "pneumoniamnist.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    write_medmnist_npz(root / "npz_cut", "pneumoniamnist")
    npz = (root / "npz_cut" / "pneumoniamnist.npz").read_bytes()
    (root / "npz_cut" / "pneumoniamnist.npz").write_bytes(npz[: len(npz) // 2])
    write_medmnist_npz(root / "npz_damaged", "pneumoniamnist", counts={
        "train": 64, "val": 8, "test": 8})
    _damage_zip_member(root / "npz_damaged" / "pneumoniamnist.npz", "train_images.npy")
    files["npz_garbage"] = root / "npz_garbage"
    files["npz_cut"] = root / "npz_cut"
    files["npz_damaged"] = root / "npz_damaged"

    # Decathlon folders
    decathlon = root / "decathlon_bad_json"
    decathlon.mkdir()
    (decathlon / "dataset.json").write_text('{"training": [{"image": ')
    files["decathlon_bad_json"] = decathlon
    files["root"] = root
    return files


def _damage_zip_member(path, member: str) -> None:
    """Overwrites the middle of ``member``'s compressed bytes: the zip directory
    and the .npy header stay readable, the data does not."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    content = bytearray(path.read_bytes())
    header = 30 + len(info.filename.encode()) + len(info.extra)
    start = info.header_offset + header + info.compress_size // 2
    content[start : start + 64] = b"\xff" * 64
    path.write_bytes(bytes(content))


# (id, program, arguments, text the error must contain); {name} is a path of
# ``bad``, {data_dir} the session's data directory. An error of Hydra's own
# (kind "hydra") is Hydra's message, several lines, without a traceback.
CASES = [
    # options: wrong types and ranges
    ("lr_not_a_number", "train", [*TINY, "optim.lr=abc"], ["optim.lr", "a number", "'abc'"]),
    ("lr_negative", "train", [*TINY, "optim.lr=-1"], ["optim.lr", "> 0"]),
    ("max_steps_negative", "train", [*TINY, "trainer.max_steps=-1"], ["trainer.max_steps"]),
    ("max_steps_text", "train", [*TINY, "trainer.max_steps=ten"], ["trainer.max_steps", "'ten'"]),
    ("log_every_fraction", "train", [*TINY, "trainer.log_every=1.5"], ["trainer.log_every"]),
    ("best_mode", "train", [*TINY, "trainer.best_mode=up"], ["trainer.best_mode", "'up'"]),
    ("num_classes_text", "train", [*TINY, "task.num_classes=two"], ["task.num_classes"]),
    ("image_size_small", "train", [*TINY, "data.image_size=8"], ["data.image_size", ">= 16"]),
    ("data_kind", "train", [*TINY, "data.kind=torso4d"], ["data.kind", "'torso4d'"]),
    ("split_size_zero", "train", [*TINY, "data.split_sizes.train=0"], ["data.split_sizes.train"]),
    ("batch_size", "train", [*TINY, "data.batch_size=6"], ["data.batch_size=6"]),
    ("optimizer_name", "train", [*TINY, "optim.name=rmsprop"], ["optim.name", "rmsprop"]),
    ("seed_text", "train", [*TINY, "seed=abc"], ["seed", "'abc'"]),
    ("target_missing", "train", [*TINY, "model._target_=medjax.models.cnn.nosuch"],
     ["model._target_", "medjax.models.cnn.nosuch"]),
    ("transfer_without_checkpoint", "train", [*TINY, "transfer.mode=finetune"],
     ["transfer.checkpoint"]),
    ("transfer_missing_checkpoint", "train",
     [*TINY, "transfer.mode=finetune", "transfer.checkpoint={missing}"],
     ["transfer.checkpoint", "{missing}"]),
    # medjax-register: pairs that cannot be registered, bad stages
    ("register_dimensions", "register",
     ["fixed={volume}", "moving={png_ok}", "output={missing}_out"],
     ["moving image is 2D", "{png_ok}", "fixed={volume} is 3D"]),
    ("register_missing_fixed", "register",
     ["fixed={missing}", "moving={volume}", "output={missing}_out"], ["{missing}", "no such file"]),
    ("register_unreadable_moving", "register",
     ["fixed={volume}", "moving={nifti_truncated}", "output={missing}_out"],
     ["{nifti_truncated}", "NIfTI"]),
    ("register_stage_order", "register",
     ["fixed={volume}", "moving={volume}", "output={missing}_out", "method=[bspline,affine]"],
     ["bspline", "must come last"]),
    ("register_unknown_stage", "register",
     ["fixed={volume}", "moving={volume}", "output={missing}_out", "method=[elastic]"],
     ["transform: expected one of", "'elastic'"]),
    ("register_labels_shape", "register",
     ["fixed={volume}", "moving={volume}", "output={missing}_out", "labels={volume_other_shape}"],
     ["labels={volume_other_shape}", "(8, 8, 8)", "(9, 10, 11)"]),
    ("register_missing_options", "register", ["fixed={volume}"], ["moving", "output"]),
    ("register_learned_without_run", "register",
     ["fixed={volume}", "moving={volume}", "output={missing}_out", "method=learned"],
     ["the learned stage needs run_dir="]),
    ("register_run_without_learned", "register",
     ["fixed={volume}", "moving={volume}", "output={missing}_out", "run_dir={run_foreign}"],
     ["run_dir={run_foreign}", "add it to method"]),
    ("register_learned_not_last", "register",
     ["fixed={volume}", "moving={volume}", "output={missing}_out", "method=[learned,affine]",
      "run_dir={run_classification}"], ["learned stage (learned) must come last"]),
    ("register_learned_classification_run", "register",
     ["fixed={volume}", "moving={volume}", "output={missing}_out", "method=learned",
      "run_dir={run_classification}"],
     ["run_dir={run_classification}", "needs a task=registration run", "ClassificationTask"]),
    ("register_learned_foreign_run", "register",
     ["fixed={volume}", "moving={volume}", "output={missing}_out", "method=learned",
      "run_dir={run_foreign}"], ["{run_foreign}", "not the config of a medjax-train run"]),
    ("task_data_mismatch", "train", ["task=segmentation", "data=breast_cancer"],
     ["task=segmentation", "data=breast_cancer", "'image'"]),
    # unknown names and bad overrides: Hydra's messages
    ("unknown_model", "train", [*TINY, "model=nosuch"], ["model/nosuch"], "hydra"),
    ("unknown_experiment", "train", ["experiment=nosuch"], ["experiment/nosuch"], "hydra"),
    ("unknown_key", "train", [*TINY, "nosuchkey=1"], ["nosuchkey"], "hydra"),
    ("bad_override_syntax", "train", [*TINY, "optim.lr=[1,"], ["'[1,'", "override_grammar"], "hydra"),
    ("show_unknown_data", "show", ["data=nosuch"], ["data/nosuch"], "hydra"),
    # paths that cannot be written
    ("unwritable_data_dir", "train", [*TINY, "data.data_dir={a_file}/data"],
     ["data.data_dir", "{a_file}"]),
    ("unwritable_run_dir", "train", [*TINY, "hydra.run.dir={a_file}/run"],
     ["{a_file}/run"]),
    ("show_unwritable_data_dir", "show", ["data=phantoms_tiny", "data.data_dir={a_file}/d"],
     ["data.data_dir", "{a_file}"]),
    # data files
    ("medmnist_garbage", "train",
     ["experiment=medmnist_resnet18", "model=resnet_tiny", "data.flag=pneumoniamnist",
      "data.manual_dir={npz_garbage}", "data.data_dir={root}/tfds_garbage"],
     ["{npz_garbage}/pneumoniamnist.npz", ".npz"]),
    ("medmnist_truncated", "train",
     ["experiment=medmnist_resnet18", "model=resnet_tiny", "data.flag=pneumoniamnist",
      "data.manual_dir={npz_cut}", "data.data_dir={root}/tfds_cut"],
     ["{npz_cut}/pneumoniamnist.npz"]),
    ("medmnist_damaged_member", "train",
     ["experiment=medmnist_resnet18", "model=resnet_tiny", "data.flag=pneumoniamnist",
      "data.manual_dir={npz_damaged}", "data.data_dir={root}/tfds_damaged"],
     ["{npz_damaged}/pneumoniamnist.npz", "train_images"]),
    ("decathlon_missing_root", "train",
     ["task=segmentation", "data=decathlon", "data.root={missing}"], ["{missing}/dataset.json"]),
    ("decathlon_no_root", "train", ["task=segmentation", "data=decathlon"],
     ["missing data.root; give data.root=VALUE"]),
    ("decathlon_bad_json", "train",
     ["task=segmentation", "data=decathlon", "data.root={decathlon_bad_json}"],
     ["{decathlon_bad_json}/dataset.json", "JSON"]),
    # run directories
    ("eval_no_run_dir", "eval", [], ["run_dir"]),
    ("eval_missing_run_dir", "eval", ["run_dir={missing}"], ["{missing}", "no such directory"]),
    ("eval_run_dir_is_a_file", "eval", ["run_dir={a_file}"], ["{a_file}", "not a directory"]),
    ("eval_no_config", "eval", ["run_dir={run_no_config}"], ["{run_no_config}", "config.yaml"]),
    ("eval_foreign_config", "eval", ["run_dir={run_foreign}"],
     ["{run_foreign}/config.yaml", "not the config of a medjax-train run"]),
    ("eval_truncated_config", "eval", ["run_dir={run_truncated}"],
     ["{run_truncated}/config.yaml", "YAML"]),
    ("eval_no_checkpoints", "eval", ["run_dir={run_classification}"],
     ["{run_classification}", "no checkpoints"]),
    ("predict_no_run_dir", "predict", ["input=a.png", "output=b.png"], ["run_dir"]),
    ("predict_no_input", "predict", ["run_dir={run_segmentation}", "output=b.png"],
     ["missing input; give input=VALUE"]),
    ("predict_no_output", "predict", ["run_dir={run_segmentation}", "input=a.png"],
     ["missing output; give output=VALUE"]),
    # input images for medjax-predict
    *[
        (f"predict_{name}", "predict",
         ["run_dir={run_segmentation}", f"input={{{name}}}", "output={root}/out.nii.gz"],
         [f"{{{name}}}", *words])
        for name, words in (
            ("missing", ["no such file"]),
            ("nifti_truncated", ["NIfTI", "damaged"]),
            ("nifti_gz_truncated", ["NIfTI"]),
            ("nifti_empty", ["NIfTI", "Empty"]),
            ("nifti_text", ["NIfTI"]),
            ("nifti_not_gzip", ["gzip"]),
            ("nifti_1d", ["(50,)", "2D or 3D"]),
            ("nifti_bad_header", ["NIfTI", "1234"]),
            ("dicom_truncated", ["pixel data"]),
            ("dicom_header_only", ["no pixel data"]),
            ("dicom_empty", ["not a DICOM file"]),
            ("dicom_text", ["not a DICOM file"]),
            ("dicom_empty_dir", ["no DICOM image files"]),
            ("png_truncated", ["PNG"]),
            ("png_empty", ["PNG"]),
            ("png_text", ["PNG"]),
            ("unknown_format", ["unknown image format"]),
        )
    ],
]


def _filled(text: str, paths: dict, data_dir: str) -> str:
    return text.format(data_dir=data_dir, **{k: str(v) for k, v in paths.items()})


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_a_user_mistake_ends_in_one_line(case, bad, data_dir, tmp_path, monkeypatch):
    name, program, args, expected, *kind = case
    monkeypatch.chdir(tmp_path)  # predict's log, runs/ of a default run dir
    monkeypatch.setenv("MEDJAX_DATA", data_dir)
    args = [_filled(arg, bad, data_dir) for arg in args]
    if program == "train" and not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={tmp_path}/run")
    status, output = run_program(program, args)
    assert status not in (0, None), output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    expected = [_filled(text, bad, data_dir) for text in expected]
    if kind == ["hydra"]:
        assert HYDRA_HINT in output, output[-3000:]
        message = output
    else:
        errors = [line for line in output.splitlines() if line.startswith(f"medjax-{program}: error:")]
        assert len(errors) == 1, output[-3000:]
        message = errors[0]
        assert output.rstrip().endswith(message)
    for text in expected:
        assert text in message, output[-3000:]
    assert "parameters on" not in output  # failed before compiling a model
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
