"""Atomic writing, input reading and provenance (fingerprints, versions)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pickle
import platform
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from anndata import AnnData

from ._errors import InputError, MissingFileError, OutputError
from ._input import InputSpec, parse_input

#: Packages whose versions are recorded with every run.
RECORDED_PACKAGES = [
    "scclust",
    "scanpy",
    "anndata",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "igraph",
    "leidenalg",
    "harmonypy",
    "umap-learn",
    "matplotlib",
    "pydantic",
    "fastcluster",
    "hnswlib",
    "h5py",
]


#: errno values that mean "the user's output location cannot take the file", not a bug
_USER_OS_ERRORS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EISDIR,
    errno.ENAMETOOLONG,
    errno.ENOENT,
}


@contextlib.contextmanager
def output_errors(path: str | Path) -> Iterator[None]:
    """Turn a full disk, a read-only or not-writable location into :class:`OutputError` (one line)."""
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        full = (
            err.errno in (errno.ENOSPC, errno.EDQUOT)
            or "no space" in str(err).lower()
            or (err.errno is None and _disk_full(path))
        )  # h5py reports a full disk without an errno
        if not full and err.errno not in _USER_OS_ERRORS:
            raise
        what = "the disk is full; free space or" if full else f"{(err.strerror or str(err)).lower()};"
        raise OutputError(f"cannot write {str(path)!r}: {what} choose another outdir (--outdir)") from None


def _disk_full(path: str | Path, margin: int = 1 << 20) -> bool:
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free < margin
            except OSError:
                return False
    return False


@contextlib.contextmanager
def atomic_path(path: str | Path, *, private: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    A full disk or an unwritable location raises :class:`OutputError`; the temporary file is removed.
    ``private``: the file keeps the temporary file's mode, readable and writable by its owner only.
    """
    path = Path(path)
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with output_errors(path):
            yield tmp_path
        if not private:
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


def write_pickle(obj: object, path: str | Path) -> Path:
    """Pickle ``obj`` to ``path`` atomically, readable and writable by this user only (see
    :func:`read_pickle`). For scclust's own state (checkpoints), read back by the same installation."""
    with atomic_path(path, private=True) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return Path(path)


def read_pickle(path: str | Path) -> object:
    """Unpickle a file :func:`write_pickle` wrote: only one owned by this user that no one else can write
    (unpickling runs code, so a file another user could have placed or changed is refused)."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise PermissionError(
                f"{path} is not private to this user (owner {st.st_uid}, mode {st.st_mode & 0o777:o})"
            )
        return pickle.load(fh)


def read_marker_sets(path: str | Path) -> dict[str, list[str]]:
    """Marker sets ``{cell type: [gene, ...]}`` from a YAML file: a mapping of names to gene lists,
    at the top level or under ``sets:`` (``configs/markers_pbmc.yaml``), for
    :func:`scclust.tl.annotate`'s ``sets``."""
    import yaml

    from ._errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"marker set file not found: {str(path)!r} (a YAML mapping of cell types to gene "
            "lists, e.g. configs/markers_pbmc.yaml)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("sets"), dict):
        data = data["sets"]
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ConfigError(f"{path}: expected a mapping of cell types to gene lists (CD4 T: [CD3E, CD4, IL7R])")
    return {str(k): [str(g) for g in v] for k, v in data.items()}


def resolve_input(spec: str | InputSpec) -> InputSpec:
    """``data:NAME`` -> the spec of a registered real dataset's file, fetched into the cache and
    verified (:func:`scclust.datasets.fetch`); any other spec is returned parsed."""
    spec = parse_input(spec)
    if spec.kind == "data":
        from .datasets import fetch

        return parse_input(str(fetch(spec.name)))
    return spec


def _not_found(spec: InputSpec) -> MissingFileError:
    from .datasets import REMOTE

    return MissingFileError(
        f"input file not found: {spec} (give an .h5ad path, builtin:simulate / pbmc68k / counts / "
        f"integrated or data:{' / '.join(REMOTE)})"
    )


def read_input(
    spec: str | InputSpec,
    *,
    progress: Callable[[str], None] | None = None,
    lazy: bool = False,
    chunk_cells: int | None = None,
) -> tuple[AnnData, dict[str, object]]:
    """Read ``builtin:NAME``, ``data:NAME`` (:func:`resolve_input`) or an .h5ad path fully into memory;
    return it with its fingerprint.

    ``lazy``: ``.X`` stays on disk as a Dask array of CSR chunks (:func:`scclust.pp.read_counts_lazy`;
    ``.h5ad``, ``.zarr``, 10x ``.h5``); ``.obs`` / ``.var`` are read. The file is opened read-only
    and never written to.
    """
    import anndata as ad

    spec = resolve_input(spec)
    if lazy and not spec.is_builtin:
        from .pp._lazy import read_counts_lazy

        path = spec.path
        if not path.exists():
            raise MissingFileError(f"input not found: {spec} (give an .h5ad, a .zarr store or a 10x .h5 file)")
        adata = read_counts_lazy(path, chunk_cells=chunk_cells)
        return adata, {"source": str(path.resolve()), **_store_fingerprint(path)}

    if spec.is_builtin:
        from .datasets import load_builtin

        if progress is not None and spec.name == "simulate":
            progress("simulating counts and running QC -> normalize -> HVG -> PCA -> Harmony -> UMAP (20-40 s)")
        adata = load_builtin(spec)
        if "counts_store" in adata.uns:  # written to the cache and read lazily
            path = Path(adata.uns["counts_store"]["path"])
            return adata, {"source": spec.text, "store": str(path), **_store_fingerprint(path)}
        return adata, {"source": spec.text, "sha256": fingerprint_adata(adata)}
    path = spec.path
    if not path.is_file():
        raise _not_found(spec)
    digest = _Sha256InBackground(path)  # hashing releases the GIL: it overlaps with the reading
    try:
        adata = ad.read_h5ad(path)
    except Exception as err:
        raise InputError(f"cannot read {spec} as .h5ad: {type(err).__name__}: {err}") from None
    return adata, {"source": str(path.resolve()), "sha256": digest.result(), "bytes": path.stat().st_size}


class _Sha256InBackground:
    """:func:`sha256_file` of ``path`` in a daemon thread, started at once; :meth:`result` waits for it."""

    def __init__(self, path: Path) -> None:
        self._value: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), name="scclust-sha256", daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._value = sha256_file(path)
        except BaseException as err:
            self._error = err

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _store_fingerprint(path: Path) -> dict[str, object]:
    """sha256 of a file, or of a ``.zarr`` directory's file names, sizes and small metadata files (the
    chunks themselves are not hashed: at 1M cells that would mean reading 10 GB before starting)."""
    if path.is_file():
        return {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    h = hashlib.sha256()
    total = 0
    for p in sorted(path.rglob("*")):
        if p.is_file():
            size = p.stat().st_size
            total += size
            h.update(f"{p.relative_to(path)}\t{size}\n".encode())
            if p.name in ("zarr.json", ".zarray", ".zattrs", ".zgroup"):
                h.update(p.read_bytes())
    return {"sha256": h.hexdigest(), "bytes": total, "fingerprint": "zarr: names, sizes and metadata"}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (read into one reused buffer; the hashing releases the GIL)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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


def read_input_summary(spec: str | InputSpec) -> AnnData:
    """The input without its expression matrix in memory (``backed="r"``): enough for
    :func:`scclust.workflow.preflight` (names, ``.obs``, ``.obsm``, ``.uns``). Built-ins are built
    small (the same keys and genes); ``data:NAME`` is fetched (:func:`resolve_input`)."""
    import anndata as ad

    spec = resolve_input(spec)
    if spec.is_builtin:
        # a built-in has the same keys and genes at any size: a small one is made to check against
        from .datasets import load_builtin

        name = "counts" if spec.name == "counts_store" else spec.name
        small = {k: v for k, v in spec.params.items() if k not in ("n_cells", "n_genes", "mean_counts")}
        if name in ("simulate", "counts", "integrated"):
            small["n_cells"] = "400"
        return load_builtin(InputSpec(f"{spec.text} (small)", "builtin", name=name, params=small))
    path = spec.path
    if path.suffix in (".zarr", ".h5") and path.exists():  # read lazily: names and .obs only
        from .pp._lazy import read_counts_lazy

        return read_counts_lazy(path)
    if not path.is_file():
        raise _not_found(spec)
    try:
        return ad.read_h5ad(path, backed="r")
    except Exception as err:
        raise InputError(f"cannot read {spec} as .h5ad: {type(err).__name__}: {err}") from None
