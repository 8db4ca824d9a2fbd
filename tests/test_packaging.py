"""The configs travel with the package: a wheel built from the repository,
installed into a fresh virtual environment, runs ``medjax-train`` from an empty
directory with the ``medjax.conf`` it carries; an editable install finds the
checkout's ``conf/`` from any directory."""

import importlib.metadata
import json
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# What a build needs; copied, so that building writes nothing into the checkout.
SOURCES = ("pyproject.toml", "setup.py", "README.md", "medjax", "conf")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info")
WHERE = """
import importlib.resources, json, medjax, medjax.conf
from medjax.config import CONFIG_DIR, CONFIG_PATH, compose
cfg = compose("train", ["model=cnn_tiny"])
print(json.dumps({
    "medjax": medjax.__file__,
    "train_yaml": str(importlib.resources.files("medjax.conf") / "train.yaml"),
    "config_dir": CONFIG_DIR,
    "config_path": CONFIG_PATH,
    "model": cfg.model._target_,
}))
"""


def _clean_env() -> dict[str, str]:
    # No PYTHONPATH: a source tree on it would win over the installed package (and
    # its medjax.egg-info, if any, would tell pip that medjax is installed).
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _run(command, env=None, **kwargs):
    result = subprocess.run(
        command, env=env or _clean_env(), capture_output=True, text=True, timeout=900,
        **kwargs,
    )
    assert result.returncode == 0, (
        f"{command}\n{result.stdout[-2000:]}{result.stderr[-4000:]}"
    )
    return result


def _copy_sources(destination: Path) -> Path:
    destination.mkdir(parents=True)
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=IGNORED)
        else:
            shutil.copy2(source, destination / name)
    return destination


def _fresh_venv(path: Path, *install: str) -> Path:
    """A virtual environment with medjax installed by ``pip install --no-deps
    *install`` that also sees this environment's other packages (jax, flax...);
    returns its ``python``.

    ``--system-site-packages`` alone would show the base interpreter's packages,
    not those of the virtual environment running the tests, so a ``.pth`` file
    adds this environment's site-packages after the new one's own, once medjax is
    installed (before, pip would find this environment's medjax and install
    nothing). Python runs no ``.pth`` file found in a directory that a ``.pth``
    file adds, so an editable medjax installed here stays out.
    """
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(path)
    python = path / "bin" / "python"
    # This environment's pip, installing into the other one: no ensurepip there.
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    env = _clean_env()
    if "--no-build-isolation" in install:
        # pip runs the build backend with the new environment's interpreter, whose
        # own setuptools is the old one venv bundles: let it import this one's,
        # alone (a link to it), so that pip does not see this environment's medjax.
        import setuptools

        tools = path.parent / f"{path.name}_build_tools"
        tools.mkdir()
        (tools / "setuptools").symlink_to(Path(setuptools.__file__).parent)
        env["PYTHONPATH"] = str(tools)
    _run([*pip, "install", "--no-deps", "--quiet", *install], env=env)
    here = "\n".join(site.getsitepackages()) + "\n"
    (_site_packages(python) / "medjax_test_parent_env.pth").write_text(here)
    return python


def _site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    return Path(_run([python, "-c", code]).stdout.strip())


def _build_isolation() -> list[str]:
    """Builds with this environment's setuptools when it can build wheels by
    itself (setuptools >= 70.1, the ``dev`` extra), else in pip's isolated build
    environment (setuptools from the package index)."""
    try:
        major, minor = importlib.metadata.version("setuptools").split(".")[:2]
    except importlib.metadata.PackageNotFoundError:
        return []
    return ["--no-build-isolation"] if (int(major), int(minor)) >= (70, 1) else []


def _where(python: Path, cwd: Path) -> dict:
    return json.loads(_run([python, "-c", WHERE], cwd=cwd).stdout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = _copy_sources(work / "source")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", *_build_isolation()]
    _run([*command, "-w", str(work / "dist"), str(source)])
    (built,) = (work / "dist").glob("medjax-*.whl")
    return built


def test_the_wheel_carries_every_config(wheel):
    configs = {
        f"medjax/conf/{path.relative_to(ROOT / 'conf').as_posix()}"
        for path in (ROOT / "conf").rglob("*.yaml")
    }
    assert len(configs) > 40 and "medjax/conf/train.yaml" in configs
    names = set(zipfile.ZipFile(wheel).namelist())
    assert configs <= names, sorted(configs - names)
    assert "medjax/conf/__init__.py" in names  # Hydra reads only such packages
    assert not any(name.startswith(("conf/", "tests/")) for name in names)


def test_installed_wheel_trains_from_an_empty_directory(wheel, tmp_path):
    python = _fresh_venv(tmp_path / "venv", str(wheel))
    site_packages = _site_packages(python)
    assert site_packages.is_relative_to(tmp_path / "venv")
    empty = tmp_path / "empty"
    empty.mkdir()

    where = _where(python, empty)
    assert where["medjax"] == str(site_packages / "medjax" / "__init__.py")
    assert where["train_yaml"] == str(site_packages / "medjax" / "conf" / "train.yaml")
    assert where["config_dir"] == str(site_packages / "medjax" / "conf")
    assert where["config_path"] == "pkg://medjax.conf"
    assert where["model"] == "medjax.models.cnn.cnn_tiny"

    train = [
        str(python.parent / "medjax-train"),
        "model=cnn_tiny",
        "data=phantoms_tiny",
        "trainer=smoke",
        "optim=adam",
        "trainer.max_steps=2",
        "trainer.eval_every=2",
        "trainer.checkpoint_every=2",
        "optim.warmup_steps=0",
        "compilation_cache=null",
        f"data.data_dir={tmp_path / 'data'}",
        "hydra.run.dir=run",
    ]
    _run(train, cwd=empty)
    with open(empty / "run" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2]
    assert [r["step"] for r in records if r["split"] == "validation"] == [2]
    # Hydra names where it composed the run from: the installed package.
    runtime = OmegaConf.load(empty / "run" / ".hydra" / "hydra.yaml").hydra.runtime
    (main,) = [s for s in runtime.config_sources if s.provider == "main"]
    assert (main.schema, main.path) == ("pkg", "medjax.conf")
    assert sorted(os.listdir(empty)) == ["run"]  # nothing else written there


def test_an_editable_install_finds_the_checkout_configs_anywhere(tmp_path):
    source = _copy_sources(tmp_path / "checkout")
    python = _fresh_venv(tmp_path / "venv", *_build_isolation(), "-e", str(source))
    empty = tmp_path / "empty"
    empty.mkdir()
    # medjax.conf straight from setuptools' editable finder, before medjax.config
    code = "import medjax.conf; print(medjax.conf.__file__)"
    found = _run([python, "-c", code], cwd=empty)
    assert found.stdout.strip() == str(source / "conf" / "__init__.py")
    where = _where(python, empty)
    assert where["medjax"] == str(source / "medjax" / "__init__.py")
    assert where["train_yaml"] == str(source / "conf" / "train.yaml")
    assert where["config_dir"] == str(source / "conf")
    assert where["model"] == "medjax.models.cnn.cnn_tiny"
