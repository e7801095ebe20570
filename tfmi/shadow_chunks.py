"""Shadow models trained in chunks, anywhere: the unit of work that lets an audit's (or a benchmark
cell's) shadows run on several workers (`tfmi.executors`) or job-array shards.

A chunk (k0, k1) trains shadows k0..k1-1 of the K-shadow design; their masks and seeds depend only on
the seed and K, so it can train on any machine. It sends back only its logits on the records the
attacks will ask about (`tfmi.attacks.suite.shadow_queries`), and `ShadowChunkStore` keeps finished
chunks on disk so shards can share them and an interrupted run can continue (`train_shadows_on`
has an example).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfmi.data.dataset import Dataset
from tfmi.defenses.config import DefenseConfig, defense_cache_fields
from tfmi.executors import LocalExecutor, RayExecutor
from tfmi.training_config import TrainConfig


def _shadow_chunk_task(shared: tuple, chunk: tuple[int, int]):
    """One chunk of shadows as an executor unit, with deterministic ops (the same outputs anywhere)."""
    import tensorflow as tf

    from tfmi.attacks.shadow import train_shadow_outputs

    data, pool, config, queries, num_shadows, seed, defense, retrain_failed = shared
    tf.config.experimental.enable_op_determinism()
    return train_shadow_outputs(data, pool, config, queries, num_shadows=num_shadows, seed=seed, chunk=chunk,
                                defense=defense, retrain_failed=retrain_failed)


CHUNKS_DIR = "shadow-chunks"


class ShadowChunkStore:
    """Finished shadow chunks of one audit under ``out/shadow-chunks/``, one ``.npz`` per chunk, named by
    a hash of everything the chunk's outputs depend on (queries, pool, training, defense, K, seed,
    chunking) and written atomically: shards of a job array fill it side by side, and the final run
    (or a rerun after a crash) trains only what is missing. Files are read without pickle.
    """

    def __init__(self, out, data: Dataset, pool: np.ndarray, config: TrainConfig, queries: np.ndarray, *,
                 num_shadows: int, seed: int, per_task: int | None, defense: DefenseConfig | None,
                 retrain_failed: bool = False):
        import hashlib
        import json

        from tfmi.attacks.shadow import SHADOW_DESIGN

        self.folder = Path(out) / CHUNKS_DIR
        self.queries, self.retrain_failed = queries, retrain_failed
        digest = hashlib.sha256()
        for array in (np.ascontiguousarray(queries), np.asarray(pool, np.int64),
                      np.asarray(data.y[pool], np.int64)):
            digest.update(str(array.shape).encode() + array.dtype.str.encode())
            digest.update(array.tobytes())
        settings = {"train": config.to_dict(), **defense_cache_fields(defense or DefenseConfig()),
                    "design": SHADOW_DESIGN, "shadows": num_shadows, "seed": seed, "per_task": per_task,
                    "retrain_failed": retrain_failed}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        self.key = digest.hexdigest()[:20]

    def path(self, chunk: tuple[int, int]) -> Path:
        return self.folder / f"{self.key}-{chunk[0]}-{chunk[1]}.npz"

    def has(self, chunk: tuple[int, int]) -> bool:
        """Whether ``chunk`` has a cache file (for counting; `load` reads and checks it)."""
        return self.path(chunk).is_file()

    def load(self, chunk: tuple[int, int]):
        """The cached outputs of ``chunk``, or None (missing or unreadable: it will be trained again)."""
        from tfmi.attacks.shadow import ShadowOutputs

        try:
            with np.load(self.path(chunk), allow_pickle=False) as stored:
                return ShadowOutputs(int(stored["start"]), int(stored["stop"]), stored["logits"],
                                     stored["train_accuracy"], stored["test_accuracy"],
                                     stored["retrained"] if "retrained" in stored.files else None)
        except (OSError, ValueError, KeyError):
            return None

    def save(self, chunk: tuple[int, int], outputs) -> None:
        from tfmi.safe_write import MARKER_FILE, add_to_marker, atomic_file

        if not (self.folder.parent / MARKER_FILE).exists():  # the folder is an (unfinished) audit output
            self.folder.mkdir(parents=True, exist_ok=True)
            add_to_marker(self.folder.parent, "audit", [CHUNKS_DIR])
        with atomic_file(self.path(chunk), "wb") as handle:
            np.savez(handle, start=outputs.start, stop=outputs.stop, logits=outputs.logits,
                     train_accuracy=outputs.train_accuracy, test_accuracy=outputs.test_accuracy,
                     retrained=np.zeros(outputs.stop - outputs.start, np.int64) if outputs.retrained is None
                     else outputs.retrained)


def train_shadows_on(
    executor: LocalExecutor | RayExecutor, data: Dataset, pool: np.ndarray, config: TrainConfig,
    queries: np.ndarray, *, num_shadows: int, seed: int, per_task: int | None = None,
    defense: DefenseConfig | None = None, on_done=None, store: ShadowChunkStore | None = None,
    chunks: list[tuple[int, int]] | None = None, retrain_failed: bool = False,
):
    """`tfmi.attacks.shadow.train_shadows`, in chunks of ``per_task`` shadows (None: one chunk) run by
    ``executor`` (`tfmi.executors`); the chunks send back their logits on ``queries`` only
    (`tfmi.attacks.suite.shadow_queries`), which is all the attacks ask the shadows about.
    ``on_done(chunk, outputs)`` follows the chunks as they finish. The shadows are the same whichever
    executor trains them; with batched (undefended mlp/cnn) shadows they depend on ``per_task``.
    With a ``store`` the chunks it holds are not trained again and new ones are saved to it as they
    finish; ``chunks`` limits the training to those (a shard's) and returns None instead of a set.

    >>> from tfmi.data import load_dataset
    >>> data = load_dataset("digits")
    >>> shadows = train_shadows_on(LocalExecutor(), data, np.arange(64), TrainConfig("mlp", epochs=1),
    ...                            data.x[:64], num_shadows=4, seed=0, per_task=2)
    >>> shadows.logits(data.x[:5]).shape
    (4, 5, 10)
    """
    from tfmi.attacks.shadow import assemble_shadows, shadow_chunks

    wanted = shadow_chunks(num_shadows, per_task) if chunks is None else list(chunks)
    cached = {chunk: store.load(chunk) for chunk in wanted} if store is not None else {}
    parts = {chunk: outputs for chunk, outputs in cached.items() if outputs is not None}

    def finished(chunk, outputs):
        if store is not None:
            store.save(chunk, outputs)
        parts[chunk] = outputs
        if on_done is not None:
            on_done(chunk, outputs)

    for chunk, outputs in list(parts.items()):
        if on_done is not None:
            on_done(chunk, outputs)
    shared = (data, pool, config, queries, num_shadows, seed, defense, retrain_failed)
    executor.map(_shadow_chunk_task, shared,
                 [chunk for chunk in wanted if chunk not in parts], on_done=finished,
                 describe=lambda chunk: f"shadows {chunk[0]}..{chunk[1] - 1}")
    if chunks is not None:
        return None
    return assemble_shadows(data, pool, config, queries, num_shadows=num_shadows, seed=seed,
                            parts=list(parts.values()), defense=defense)


def train_shadow_set(
    data: Dataset, pool: np.ndarray, config: TrainConfig, *, num_shadows: int, seed: int,
    defense: DefenseConfig | None = None, retrain_failed: bool = False, queries: np.ndarray | None = None,
    executor: LocalExecutor | RayExecutor | None = None, per_task: int | None = None,
    store: ShadowChunkStore | None = None, chunks: list[tuple[int, int]] | None = None, progress=None,
):
    """The shadows of an audit or a benchmark cell: `tfmi.attacks.shadow.train_shadows` here, in one
    piece, unless an ``executor``, a chunk size ``per_task`` or a ``store`` asks for `train_shadows_on`
    (then ``queries``, from `tfmi.attacks.suite.shadow_queries`, are required; with ``chunks``, a
    shard's, it returns None). ``progress(done)`` counts the shadows trained (or found in the store).

    >>> from tfmi.data import load_dataset
    >>> data = load_dataset("digits")
    >>> here = train_shadow_set(data, np.arange(64), TrainConfig("mlp", epochs=1), num_shadows=2, seed=0)
    >>> chunked = train_shadow_set(data, np.arange(64), TrainConfig("mlp", epochs=1), num_shadows=2, seed=0,
    ...                            queries=data.x[:64], per_task=1)
    >>> here.logits(data.x[:3]).shape == chunked.logits(data.x[:3]).shape == (2, 3, 10)
    True
    """
    from tfmi.attacks.shadow import train_shadows

    if executor is None and per_task is None and store is None and chunks is None:
        return train_shadows(data, pool, config, num_shadows=num_shadows, seed=seed, defense=defense,
                             progress=progress, retrain_failed=retrain_failed)
    if queries is None:
        raise ValueError("shadows trained in chunks need the queries the attacks will ask (shadow_queries)")
    done = [0]

    def chunk_done(chunk, _outputs):
        done[0] += chunk[1] - chunk[0]
        if progress is not None:
            progress(done[0])

    return train_shadows_on(executor or LocalExecutor(), data, pool, config, queries, num_shadows=num_shadows,
                            seed=seed, per_task=per_task, defense=defense, on_done=chunk_done, store=store,
                            chunks=chunks, retrain_failed=retrain_failed)
