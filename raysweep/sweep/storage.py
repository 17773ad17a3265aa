"""Where a sweep's results live: a local folder, or shared storage every node can reach (s3://, gs://,
or any URI pyarrow knows). Ray Tune writes its experiment there itself; raysweep's own files
(results.json, a trial's log, the pipeline's state) go through these few functions.

S3-compatible servers other than AWS are reached through the standard AWS_ENDPOINT_URL variable, which
pyarrow, boto3 and so MLflow all honour."""
from __future__ import annotations

import os
import posixpath
import shutil
import uuid

STORAGE_VAR = "RAYSWEEP_STORAGE_PATH"  # the default storage_path of specs that set none (cluster.yaml sets it)
STORAGE_ENV = ("AWS_", "GOOGLE_", "AZURE_", "MLFLOW_S3_")  # what a worker needs to reach the storage


def is_uri(path: str | None) -> bool:
    return bool(path) and "://" in path


def resolve(path: str) -> str:
    """A local path made absolute (every node resolves it alike); a URI as given."""
    return path.rstrip("/") if is_uri(path) else os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if is_uri(base) else os.path.join(base, *parts)


def uri_of(path: str, filesystem) -> str:
    """A path as Tune hands it (without scheme, with its filesystem) as a URI (a plain path if local)."""
    kind = getattr(filesystem, "type_name", "local")
    return path if kind == "local" else f"{kind}://{path}"


def filesystem_of(path: str, filesystem=None):
    """(pyarrow filesystem, path on it) of a local path or a URI."""
    import pyarrow.fs as pafs

    if filesystem is not None:
        return filesystem, path
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def read_text(path: str, filesystem=None) -> str | None:
    """The file's text, or None if there is none (a missing file is an answer, not an error)."""
    import pyarrow.fs as pafs

    fs, p = filesystem_of(path, filesystem)
    if fs.get_file_info(p).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def write_text(path: str, text: str) -> None:
    """Write a file whole: locally through a temporary file and a rename, so a kill leaves the old file
    or the new one; to object storage in one put, which is atomic there."""
    if not is_uri(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return
    fs, p = filesystem_of(path)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


def exists(path: str) -> bool:
    import pyarrow.fs as pafs

    fs, p = filesystem_of(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def remove_tree(path: str) -> None:
    """Remove a folder or a file; nothing if it is not there."""
    import pyarrow.fs as pafs

    fs, p = filesystem_of(path)
    kind = fs.get_file_info(p).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif kind == pafs.FileType.File:
        fs.delete_file(p)


def copy_tree(source: str, destination: str) -> None:
    """Copy a folder between local disk and storage, either way (its files replace the destination's)."""
    import pyarrow.fs as pafs

    src_fs, src = filesystem_of(source)
    dst_fs, dst = filesystem_of(destination)
    dst_fs.create_dir(dst, recursive=True)
    pafs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)


MIN_FREE_BYTES = 200 * 2**20


def check_writable(path: str) -> str | None:
    """Why results cannot be written under `path` (no bucket, no credentials, read-only, full disk), or
    None. Asked before any trial starts: a sweep should not learn this after an hour of training."""
    probe = join(path, f".raysweep-write-test-{uuid.uuid4().hex[:8]}")
    try:
        write_text(probe, "ok")
        fs, p = filesystem_of(probe)
        fs.delete_file(p)
    except Exception as e:  # noqa: BLE001 - whatever the filesystem says, the user gets it in one line
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'cannot write'}"
    if not is_uri(path):
        free = shutil.disk_usage(path).free
        if free < MIN_FREE_BYTES:  # checkpoints and logs would fill it mid-sweep
            return f"only {free / 2**20:.1f} MB free there; a sweep needs at least {MIN_FREE_BYTES // 2**20} MB"
    return None


def worker_env() -> dict:
    """The driver's storage credentials and endpoints, for every worker of the job (a trial on another
    node writes its checkpoints there too)."""
    return {k: v for k, v in os.environ.items() if k.startswith(STORAGE_ENV)}
