"""Packaging: the dependency metadata, constraints.txt, and a wheel that runs outside the checkout.

The wheel test builds a wheel of the project (``pip wheel --no-deps``, offline, from a copy
of the sources), installs it with ``--no-deps`` into a new, empty virtual environment, and
makes the project's installed dependencies importable there through a ``.pth`` line naming
this environment's site-packages (a plain path: its ``.pth`` files, among them the editable
install of this checkout, are not run). Then, from a folder outside the checkout, it runs
``sswe-node --help``, ``simulate`` + ``convert`` on a simulated capture, and ``serve`` answering
a C-ECHO from dcmtk's echoscu and from ``sswe-node echo``, then processing a capture sent by
dcmtk's storescu with the shipped model.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.peers import dcmtk_env, free_port

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
TENSORFLOW_DISTRIBUTIONS = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel"}
#: What only the training toolkit needs: never in the node's base install.
TRAINING_ONLY = {"h5py", "matplotlib", "scikit-learn", "pymust", "tensorboard", "psycopg"}
#: Imported only for a feature the install leaves to the user: psycopg for a PostgreSQL case
#: store (the ``postgres`` extra), another Keras backend than TensorFlow.
OPTIONAL_IMPORTS = {"psycopg", "jax", "torch"}
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "sswe_node", "training")


def _requirements(extra: str | None = None) -> list[Requirement]:
    if extra is None:
        return [Requirement(r) for r in PROJECT["dependencies"]]
    return [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]


def _names(requirements: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements}


def test_base_install_is_lean() -> None:
    assert _names(_requirements()) & TRAINING_ONLY == set()
    assert {"h5py", "matplotlib", "scikit-learn", "pymust", "tensorboard"} <= _names(
        _requirements("training")
    )
    assert _names(_requirements("postgres")) == {"psycopg"}


def test_one_tensorflow_distribution_in_every_install() -> None:
    base = _names(_requirements()) & TENSORFLOW_DISTRIBUTIONS
    assert len(base) == 1
    for extra in PROJECT["optional-dependencies"]:
        extra_tf = _names(_requirements(extra)) & TENSORFLOW_DISTRIBUTIONS
        assert extra_tf <= base, f"extra {extra!r} adds a second TensorFlow: {extra_tf}"


@pytest.mark.parametrize("name", ["tensorflow", "keras", "pynetdicom", "pydicom"])
def test_major_versions_have_an_upper_bound(name: str) -> None:
    found = [r for r in _requirements() if canonicalize_name(r.name) == name]
    assert found, f"{name} is not a base dependency"
    for req in found:
        assert any(s.operator == "<" for s in req.specifier), f"{req} has no upper bound"
    gpu = [r for r in _requirements("gpu") if canonicalize_name(r.name) == name]
    assert all(any(s.operator == "<" for s in r.specifier) for r in gpu)


def test_constraints_pin_every_dependency_within_its_range() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    wanted = _requirements()
    for extra in ("training", "postgres", "test"):
        wanted += _requirements(extra)
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not pinned in constraints.txt (run `make constraints`)"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])


def _third_party_imports(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    local = {"sswe_node", "training", "__editable___sswe_node_0_1_0_finder"}
    return {m for m in found - local if m not in sys.stdlib_module_names}


def _closure(requirements: list[Requirement]) -> set[str]:
    """Distributions installed for ``requirements`` (following installed metadata)."""
    from importlib.metadata import PackageNotFoundError, distribution

    seen: set[tuple[str, tuple[str, ...]]] = set()
    found: set[str] = set()
    todo = [(r, "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        name = canonicalize_name(req.name)
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        if (name, tuple(sorted(req.extras))) in seen:
            continue
        seen.add((name, tuple(sorted(req.extras))))
        found.add(name)
        for candidate in [name, *(["tensorflow-cpu"] if name == "tensorflow" else [])]:
            try:
                dist = distribution(candidate)
            except PackageNotFoundError:
                continue
            found.add(canonicalize_name(candidate))
            for line in dist.requires or []:
                todo += [(Requirement(line), e) for e in ("", *sorted(req.extras))]
            break
    return found


@pytest.mark.parametrize(("package", "extras"), [("sswe_node", ()), ("training", ("training",))])
def test_every_import_comes_with_the_install(package: str, extras: tuple[str, ...]) -> None:
    """A module of the node imports only what the base install brings; training, + its extra."""
    wanted = _requirements()
    for extra in extras:
        wanted += _requirements(extra)
    installed = _closure(wanted)
    providers = packages_distributions()
    missing = {}
    for module in sorted(_third_party_imports(package) - OPTIONAL_IMPORTS):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & installed:
            missing[module] = sorted(dists)
    assert missing == {}, "imported but not required by pyproject.toml"


# -- the wheel, outside the checkout -----------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    (source / "config").mkdir()
    shutil.copy2(ROOT / "config" / "node.toml", source / "config" / "node.toml")
    models = source / "models"
    models.mkdir()
    shutil.copy2(ROOT / "models" / "README.md", models / "README.md")
    for manifest in (ROOT / "models").glob("*/model.toml"):
        folder = models / manifest.parent.name
        folder.mkdir()
        for path in manifest.parent.iterdir():
            if path.is_file():
                shutil.copy2(path, folder / path.name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (found,) = out.glob("sswe_node-*.whl")
    return found


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # Plain path lines: the dependencies become importable; this environment's own .pth
    # files (the editable install of the checkout) are not run.
    Path(site, "zz_project_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return venv


def _env() -> dict[str, str]:
    env = dcmtk_env()
    env.pop("PYTHONPATH", None)
    env.pop("SSWE_NODE_CONFIG", None)
    for name in list(env):
        if name.startswith("SSWE_NODE__"):
            del env[name]
    return env


def _run(venv: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "sswe-node"), *args],
        cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_wheel_carries_the_configuration_and_the_models(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "sswe_node/_data/config/node.toml" in names
    for manifest in (ROOT / "models").glob("*/model.toml"):
        for path in manifest.parent.iterdir():  # weights, manifest and sidecars (trust.npz)
            if path.is_file():
                assert f"sswe_node/_data/models/{manifest.parent.name}/{path.name}" in names
    assert "sswe_node/node/migrations/env.py" in names
    assert any(n.startswith("sswe_node/node/migrations/versions/0001") for n in names)


@pytest.mark.slow
def test_wheel_runs_outside_the_checkout(fresh_venv: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c",
         "import sswe_node, training; print(sswe_node.__file__); print(training.__file__)"],
        cwd=work, env=_env(), capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(fresh_venv) for p in where), where

    helped = _run(fresh_venv, work, "--help")
    assert helped.returncode == 0 and "serve" in helped.stdout and "convert" in helped.stdout

    simulated = _run(
        fresh_venv, work, "simulate", "--patients", "1", "--images-per-patient", "1",
        "--no-other-scanner", "--out", "sim", "-q",
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr
    converted = _run(fresh_venv, work, "convert", "sim/dicom", "--out", "out", "--json")
    assert converted.returncode == 0, converted.stderr
    summary = json.loads(converted.stdout)
    assert summary["converted"] >= 1 and summary["failed"] == [], summary
    assert "site-packages/sswe_node/_data/models/prostate-sim" in converted.stderr
    assert "cpu_feature_guard" not in converted.stderr and "oneDNN" not in converted.stderr

    port = free_port()
    log = (work / "serve.log").open("w")
    serve = subprocess.Popen(
        [str(fresh_venv / "bin" / "sswe-node"), "serve", "--port", str(port)],
        cwd=work, env=_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "event=listening" not in (work / "serve.log").read_text():
            assert serve.poll() is None, (work / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not start listening"
            time.sleep(0.2)
        echo = _run(fresh_venv, work, "echo", f"SSWE_NODE@127.0.0.1:{port}", "-q")
        assert echo.returncode == 0 and "C-ECHO success" in echo.stdout, echo.stderr
        echoscu = shutil.which("echoscu", path="/usr/bin")
        storescu = shutil.which("storescu", path="/usr/bin")
        if echoscu and storescu:
            dcmtk = subprocess.run(
                [echoscu, "-aec", "SSWE_NODE", "127.0.0.1", str(port)],
                env=_env(), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert dcmtk.returncode == 0, dcmtk.stderr
            # A dual capture through the node: stored, processed by the shipped model.
            archive = json.loads((work / "sim" / "archive.json").read_text())
            dual = next(i for i in archive["instances"] if i["kind"] == "dual")
            sent = subprocess.run(
                [storescu, "-xs", "-aec", "SSWE_NODE", "127.0.0.1", str(port),
                 str(work / "sim" / dual["path"])],
                env=_env(), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            deadline = time.monotonic() + 180
            while True:
                listed = _run(fresh_venv, work, "cases", "--json", "-q")
                cases = json.loads(listed.stdout) if listed.returncode == 0 else []
                if cases and cases[0]["status"] not in ("received", "processing"):
                    break
                assert time.monotonic() < deadline, (work / "serve.log").read_text()
                time.sleep(1)
            assert cases[0]["status"] == "done", cases[0]
            assert "_data/models/prostate-sim" in (work / "serve.log").read_text()
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=120)
        log.close()
    assert code == 0, (work / "serve.log").read_text()
    assert (work / "var" / "sswe-node.db").is_file()  # the default configuration's relative paths


def test_a_checkout_finds_its_own_configuration_and_models() -> None:
    from sswe_node.config import DEFAULT_CONFIG_PATH
    from sswe_node.model import resolve_model_dir

    assert DEFAULT_CONFIG_PATH == ROOT / "config" / "node.toml"
    assert resolve_model_dir("prostate-sim").resolve() == ROOT / "models" / "prostate-sim"


def test_no_shadowing_pynetdicom_scripts_in_the_environment() -> None:
    """scripts/setup.sh removes them, so dcmtk's storescu works with the venv activated."""
    bin_dir = Path(sys.prefix) / "bin"
    for tool in ("echoscu", "storescu", "storescp", "findscu", "getscu", "movescu"):
        script = bin_dir / tool
        assert not (script.is_file() and "pynetdicom" in script.read_text(errors="replace")), tool


@pytest.mark.skipif(not os.access("/usr/bin/storescu", os.X_OK), reason="dcmtk not installed")
def test_dcmtk_storescu_is_found_first_with_the_environment_activated() -> None:
    path = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    assert shutil.which("storescu", path=path) == "/usr/bin/storescu"
