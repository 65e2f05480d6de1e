"""Atomic writing, input reading and provenance (fingerprints, versions)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import tempfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from anndata import AnnData

from ._errors import InputError, MissingFileError

#: Packages whose versions are recorded with every run.
RECORDED_PACKAGES = [
    "scclust", "scanpy", "anndata", "numpy", "scipy", "pandas", "scikit-learn", "igraph", "leidenalg",
    "harmonypy", "umap-learn", "matplotlib", "pydantic", "fastcluster", "hnswlib", "h5py",
]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the usual permissions (0666 minus the umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_h5ad(adata: AnnData, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return Path(path)


def read_input(spec: str) -> tuple[AnnData, dict[str, object]]:
    """Read ``builtin:NAME`` or an .h5ad path fully into memory; return it with its fingerprint.

    The file is opened read-only and never written to.
    """
    import anndata as ad

    if spec.startswith("builtin:"):
        from .datasets import load_builtin

        adata = load_builtin(spec.removeprefix("builtin:"))
        return adata, {"source": spec, "sha256": fingerprint_adata(adata)}
    path = Path(spec)
    if not path.is_file():
        raise MissingFileError(f"input file not found: {spec} (give an .h5ad path or builtin:simulate / builtin:pbmc68k)")
    try:
        adata = ad.read_h5ad(path)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputError(f"cannot read {spec} as .h5ad: {type(err).__name__}: {err}") from None
    return adata, {"source": str(path.resolve()), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint_adata(adata: AnnData) -> str:
    """A content hash of an in-memory AnnData (names, ``.obsm`` arrays, ``.X`` data)."""
    from scipy import sparse

    h = hashlib.sha256()
    h.update("\n".join(adata.obs_names).encode())
    h.update("\n".join(adata.var_names).encode())
    for key in sorted(adata.obsm):
        h.update(key.encode())
        h.update(np.ascontiguousarray(np.asarray(adata.obsm[key])).tobytes())
    X = adata.X
    h.update(np.ascontiguousarray(X.data if sparse.issparse(X) else np.asarray(X)).tobytes())
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in RECORDED_PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out
