"""Orbax checkpoints of the learner state plus a small JSON of host state.

Each checkpoint step ``checkpoints/<iteration>/`` holds two items:

* ``state``: the learner state pytree (``ocp.args.StandardSave``);
* ``host``: JSON with the iteration, the run's identity (algorithm, config,
  family, seed, ...), cumulative wall time and a SHA-256 digest of the state's
  bytes.

Orbax writes a step into a temporary directory and renames it when complete,
so a process killed mid-save leaves only a ``*.orbax-checkpoint-tmp-*``
directory that is never listed as a step (and is removed here). A step that
is listed but cannot be restored, or whose restored bytes do not match the
digest (a corrupted file), is skipped with a warning and the next older step
is used; the bad steps are deleted so the resumed run can write them again.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from metarl_jax.sharding import to_host

_TMP_MARKER = ".orbax-checkpoint-tmp"


def state_digest(state: Any) -> str:
    """SHA-256 over the structure, shapes, dtypes and bytes of a pytree's leaves.

    Leaves spread over several processes are read with
    :func:`metarl_jax.sharding.to_host` (a replicated leaf from its local
    copy, a split one gathered: every process saves and restores together),
    so a checkpoint written by several processes verifies in one and back.
    """
    digest = hashlib.sha256(str(jax.tree.structure(state)).encode())
    for leaf in jax.tree.leaves(state):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        array = np.asarray(to_host(leaf))
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class Restored(NamedTuple):
    """A checkpoint read back: iteration, learner state and host-side JSON."""

    iteration: int
    state: Any
    host: dict


class Checkpointer:
    """Saves and restores ``(iteration, state, host)`` in ``directory``.

    Saves are asynchronous (orbax copies the arrays to host memory, then
    writes in a background thread while training continues); call
    :meth:`wait` before reading the files and :meth:`close` at the end.
    """

    def __init__(self, directory: Path, max_to_keep: int | None = 3):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def steps(self) -> list[int]:
        """Iterations of the complete checkpoints on disk, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, iteration: int, state: Any, host: dict) -> None:
        """Start saving ``state`` and ``host`` (plus the state digest) as step ``iteration``."""
        host = {**host, "iteration": int(iteration), "digest": state_digest(state)}
        self._manager.save(
            int(iteration),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    host=ocp.args.JsonSave(host)),
        )

    def restore(self, iteration: int, target: Any) -> Restored:
        """Restore step ``iteration`` into the structure and shardings of ``target``.

        Raises ``ValueError`` if the step cannot be read or fails its digest.
        """
        try:
            restored = self._manager.restore(
                int(iteration),
                args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                        host=ocp.args.JsonRestore()),
            )
        except Exception as err:  # orbax/tensorstore raise many types for bad files
            raise ValueError(f"checkpoint {iteration} cannot be read: {err}") from err
        host = dict(restored.host)
        if host.get("digest") != state_digest(restored.state):
            raise ValueError(f"checkpoint {iteration} is corrupt: its state digest does not match")
        return Restored(int(host["iteration"]), restored.state, host)

    def restore_latest(self, target: Any, repair: bool = True) -> Restored | None:
        """The newest step that restores and verifies, or ``None`` if there is none.

        Only complete steps are considered. Unreadable or corrupt newer steps
        are reported with a ``RuntimeWarning``; with ``repair`` (when resuming
        training, not when merely reading a run) they and the temporary
        directories of killed saves are deleted, so the resumed run can write
        those steps again.
        """
        if repair:
            self._remove_partial_saves()
        bad = []
        restored = None
        for step in reversed(self.steps()):
            try:
                restored = self.restore(step, target)
                break
            except ValueError as err:
                warnings.warn(f"skipping {err}", RuntimeWarning, stacklevel=2)
                bad.append(step)
        if bad and repair:
            if jax.process_index() == 0:
                for step in bad:
                    shutil.rmtree(self.directory / str(step), ignore_errors=True)
            self._manager.reload()
        return restored

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release orbax's resources."""
        self._manager.close()

    def _remove_partial_saves(self) -> None:
        """Delete temporary directories left by a save that was killed."""
        if not self.directory.is_dir() or jax.process_index() != 0:
            return
        for path in self.directory.iterdir():
            if _TMP_MARKER in path.name:
                warnings.warn(f"removing incomplete checkpoint {path.name}", RuntimeWarning,
                              stacklevel=3)
                shutil.rmtree(path, ignore_errors=True)
