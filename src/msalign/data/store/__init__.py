"""The on-disk feature store: datasets larger than memory, read row by row.

A MOSEI-sized feature set (16k training clips x 500 frames; text 50x768, audio 500x74, vision
500x35 float32) is about 6 GB for the training split and 8.5 GB in all. A store keeps it on disk
and training reads each batch's rows when it needs them, so the process holds a batch, not the
dataset. ``msalign convert SOURCE OUT`` turns anything :func:`~msalign.data.load_dataset` loads
(an MMSA pickle, a feature directory, ``synthetic:...``, another store) into a store, and
:class:`StoreWriter` builds one chunk by chunk without ever holding the dataset in memory.

Layout of a store folder::

    store.json                 the manifest (below); written last, so a folder without it is no store
    train/text.npy             (N, L, D) float32 features, zero beyond each row's length
    train/text_lengths.npy     (N,) int64, 1 <= length <= L
    train/audio.npy ...        one pair per modality
    train/labels.npy           (N,) float32 scores, or int64 class indices
    train/ids.npy              (N,) str
    train/raw_text.npy         (N,) str, when the source has transcripts
    valid/..., test/...

Every array is a plain ``.npy`` file, so ``np.load(path, mmap_mode="r")`` reads it too.
``store.json`` holds ``format`` (``"msalign-feature-store"``), ``version``, ``name``,
``metric_set``, ``task``, ``num_classes``, ``feature_spec`` (the source's, see below),
``modalities`` (``{m: {"dim": D, "max_len": L}}``), ``splits`` (``{split: {"rows": N,
"raw_text": bool}}``), ``source`` (what it was converted from), ``msalign_version`` and
``validated``: the record that every feature value was checked while the store was written
(finite, lengths in 1..L, padding zero, no clip all padding in every modality; labels and ids).
:func:`read_manifest` gives it as a :class:`StoreManifest`, whose ``to_json``/``from_json`` are the format.

Reading: positioned reads, not memory maps. :class:`DiskArray` serves ``x[rows, :longest]``
(what the training collate does), ``x[start:stop]``, ``x[index]`` and ``x[i]`` by reading only
the requested rows - and of each only the first ``longest`` frames - with ``os.preadv`` straight
into a preallocated numpy buffer. Why not ``np.memmap``: every page of a memory map that an epoch
touches is a file-backed resident page of the process and counts toward its RSS until the kernel
needs the memory back, so a memory-mapped reader's RSS climbs to the size of the data over an
epoch (memory limits of containers and schedulers count it; the OOM killer sees it). With
positioned reads the process holds one batch; the OS page cache keeps whatever of the files fits
in free memory, reclaimable and not charged to the process as RSS. Requested rows are sorted
before reading (reads go forward on disk, consecutive full rows in one read) and put back in the
requested order (duplicates allowed). A DiskArray pickles as its path, offset and shape only and
reopens its file lazily in each process (also after a fork, checked by ``os.getpid()``), so
DataLoader workers and process-pool or Ray trial workers receive a dataset cheaply.

Loading (:func:`load_store`) reads the manifest and the small arrays (lengths, labels, ids) and
checks every ``.npy`` header against the manifest (dtype, shape, file size: a truncated file is
an error naming it), then runs the metadata checks of :func:`~msalign.data.validate.validate_dataset`
(shapes, lengths, labels, duplicate ids) - but not the scans that read every feature value: those
ran when the store was written and the manifest records it. ``verify=True`` rescans everything
(chunk by chunk); a store whose manifest lacks the ``validated`` record is always rescanned.

``feature_spec`` is the source's, unchanged: the features ARE the source's, and
:func:`~msalign.training.checkpoint.check_feature_spec` compares every ``feature_spec`` key except
``source``, ``n_*`` and ``describer``, so adding store facts there would make a checkpoint trained
on a store refuse its own source data (and the reverse), and would make training on the store a
different run (``run_identity``) from training on the source. The store's own facts (format
version, source path, validation record) live at the top level of ``store.json`` instead. When a
subset of a pickle's or feature directory's modalities is loaded from a store, the per-modality
entries of ``feature_spec`` are trimmed to it, as those loaders do, so the spec equals what loading
the source with the same modalities gives.

What reads a feature array whole when given a DiskArray: ``np.asarray(x)`` (and anything that
calls it) and ``Split.subset`` (it reads the subset's rows - meant for small subsets). Everything
else reads in pieces: the training collate (one batch), DashFusion's hard-negative sampler (the
training split in batches of 256 through the same collate), validation (chunks of 512 rows, only
on ``verify``), the modality ablation of :mod:`msalign.evaluation.ablation` (chunked training mean, lazy
permuted and mean-filled views), prediction and report figures (through the data loader); the
profiler and models look at shapes only.

Converting reads the source through its loader (an MMSA pickle is read into memory whole, as it
is for training); sources larger than memory are written with :class:`StoreWriter` by whatever
produces them. A conversion writes into a hidden temporary folder beside OUT and renames it into
place at the end: a killed conversion leaves that ``.OUT.*.partial`` folder (safe to delete), never
a half store that loads.
"""

from msalign.data.store.disk_array import DiskArray
from msalign.data.store.manifest import (
    FORMAT,
    MANIFEST,
    VERSION,
    ModalityEntry,
    SplitEntry,
    StoreManifest,
    ValidationRecord,
    is_store,
    read_manifest,
)
from msalign.data.store.reader import SplitSize, load_store, store_sizes
from msalign.data.store.writer import StoreWriter, write_store

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "DiskArray",
    "ModalityEntry",
    "SplitEntry",
    "SplitSize",
    "StoreManifest",
    "StoreWriter",
    "ValidationRecord",
    "is_store",
    "load_store",
    "read_manifest",
    "store_sizes",
    "write_store",
]
