"""Run files that survive a kill, a full disk or a moved run folder.

Every file of a run is written to a temporary file in its own folder, flushed, fsynced and renamed over the old one
(``os.replace`` is atomic within a file system), so a kill or a full disk during a write leaves the previous complete
file in place. Lightning's own atomic save stages the file in the system's temporary folder and moves it from there,
which is a copy, not a rename, when the run folder is on another disk.
"""

from __future__ import annotations

import errno
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from blastscope.errors import BlastscopeError
from blastscope.storage import nearest_existing, probe_writable, write_atomically

# write errors that no retry fixes and that the person at the terminal can: a full, read-only or forbidden disk
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def storage_error(folder: Path, error: OSError, run_dir: Path | None = None) -> BlastscopeError:
    """The one-line error for a write that failed in ``folder``: what failed and, for a new run or for the started
    run ``run_dir``, what to do about it."""
    reason = error.strerror or str(error)
    if run_dir is None:
        fix = "make it writable or free space there, or choose another --out"
    else:
        fix = (
            f"the finished epochs are kept: free space (or move {run_dir} to another disk) and continue with "
            f"`blastscope train --resume {run_dir}`"
        )
    return BlastscopeError(f"cannot write in {folder} ({reason}); {fix}")


@contextmanager
def storage_errors(folder: Path, run_dir: Path | None = None) -> Iterator[None]:
    """Turn a full, read-only or forbidden disk met while writing into :func:`storage_error`'s one line, naming the
    folder of the file that failed (``folder`` if the error names none)."""
    try:
        yield
    except OSError as error:
        if error.errno not in STORAGE_ERRNOS:
            raise
        failed = Path(error.filename).parent if error.filename else folder
        raise storage_error(failed, error, run_dir) from error


def ensure_writable(folder: Path, run_dir: Path | None = None) -> None:
    """Check that files can be created in ``folder`` (or, if it does not exist yet, in its nearest existing parent)
    by creating and removing one, before any work starts; ``run_dir`` names the started run it belongs to, if any.

    Raises
    ------
    BlastscopeError
        If the probe file cannot be created or removed (read-only file system, no permission, full disk), or if a
        file stands where a folder is needed.
    """
    existing = nearest_existing(folder)
    if not existing.is_dir():
        raise BlastscopeError(f"{folder}: {existing} is a file, not a folder; choose another --out")
    try:
        probe_writable(existing)
    except OSError as error:
        raise storage_error(existing, error, run_dir) from error


def remove_partial_writes(folder: Path) -> None:
    """Delete the temporary files that writes cut short by a kill left in ``folder`` (never read, only in the way)."""
    for leftover in Path(folder).glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing each checkpoint with :func:`write_atomically`.

    The checkpoint is serialised in memory first (as Lightning does), so a full disk shows as an ``OSError`` of the
    file write rather than as PyTorch's zip-writer error.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomically(Path(path), lambda handle: handle.write(buffer.getbuffer()))


class RunCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose state follows its run folder, and whose timed saves never fall on an epoch's end.

    Lightning forgets the best score when a checkpoint is restored into another folder, so a run moved before
    ``--resume`` would count its next epoch as best, whatever its score. Here the stored paths are moved into the new
    folder instead. A timed (mid-epoch) save is skipped after an epoch's last batch: Lightning resumes such a
    checkpoint as a finished epoch without its validation, scheduler step and epoch-end checkpoints, and the
    epoch-end ``last.ckpt`` follows a moment later anyway.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath")
        if saved is not None and self.dirpath is not None and str(saved) != str(self.dirpath):
            state_dict = _relocated(state_dict, Path(saved), Path(self.dirpath))
        super().load_state_dict(state_dict)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._train_time_interval is not None and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def _relocated(state: dict[str, Any], old: Path, new: Path) -> dict[str, Any]:
    """``state`` with every checkpoint path inside ``old`` moved to the same name inside ``new``."""

    def move(path: Any) -> Any:
        return str(new / Path(path).name) if path and Path(path).parent == old else path

    moved = {
        key: move(state[key]) for key in ("best_model_path", "kth_best_model_path", "last_model_path") if key in state
    }
    if "best_k_models" in state:
        moved["best_k_models"] = {move(path): score for path, score in state["best_k_models"].items()}
    return {**state, **moved, "dirpath": str(new)}
