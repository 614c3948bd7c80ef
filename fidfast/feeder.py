"""The feeder: image files → decoded, packed chunks in a ring of shared host buffers → the device.

FFCV's and DALI's shape, in plain Python: worker processes (forked, one thread each) decode runs of
consecutive images straight into a slot of a ring of shared memory (pinned for the GPU's DMA when the
device is CUDA) and hand back only the slot's number and each image's (offset, H, W, C). No pixels are
pickled through a queue and nothing is pinned per batch. The main process copies a slot to the device on a
side stream and gives the slot back once that copy is done, so decoding, the copy and the network
overlap. Chunks come out in input order whatever the workers' timing, and where one ends depends only on
the images' sizes, so the same images give the same chunks, batches and bits for any worker count.

Host memory is bounded by bytes, not images: the ring (``slots × SLOT_BYTES``) plus the images being
decoded. An image too large for a slot travels alone through the result pipe; images above
``LARGE_IMAGE_BYTES`` wait for a share of ``DECODE_BUDGET_BYTES`` before they are decoded, so many workers
never hold many huge photos at once (README: "Memory").
"""
from __future__ import annotations

import collections
import ctypes
import logging
import mmap
import multiprocessing as mp
import os
import signal
import tarfile
import tempfile
import traceback
import zlib
import lzma
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Deque, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from fidfast.decode import ImageReader, readable_tar
from fidfast.errors import FidfastError
from fidfast.preprocess import PackedBatch
from fidfast.sources import ImageRef, is_zip, ref_name

log = logging.getLogger("fidfast")

CHUNK_IMAGES = 64  # images per task: small enough to spread a batch over many workers
SLOT_BYTES = 32 << 20  # 64 images of 400×400×3; a slot holds fewer larger images, and one of ≤ 11 MP
LARGE_IMAGE_BYTES = 8 << 20  # decoded bytes above which an image takes a share of the decode budget
DECODE_BUDGET_BYTES = 1 << 30  # decoded bytes of large images all workers may hold at once
SPARE_SLOTS = 4  # slots beyond one per worker: decoded chunks waiting for the main process
STALL_SECONDS = 5.0  # how often a wait for workers checks that they are alive


@dataclass
class _Result:
    """What a worker hands back for the task (start, task_end): images start..end−1 are done."""

    start: int
    end: int
    task_end: int
    slot: int
    rows: List[Tuple[int, int, int, int]] = field(default_factory=list)  # (offset, H, W, C) in the slot
    bad: List[Tuple[str, str]] = field(default_factory=list)
    alone: Optional[np.ndarray] = None  # one image larger than a slot, sent through the pipe
    error: Optional[str] = None  # an unexpected failure in the worker (a traceback)


class _Budget:
    """Bytes of large decoded images that the workers hold together, at most ``limit`` (one image over the
    limit is let through alone)."""

    def __init__(self, ctx, limit: int) -> None:
        self.limit, self.cond, self.used = limit, ctx.Condition(), ctx.RawValue("q", 0)

    def acquire(self, n: int) -> None:
        with self.cond:
            while self.used.value and self.used.value + n > self.limit:
                self.cond.wait()
            self.used.value += n

    def release(self, n: int) -> None:
        with self.cond:
            self.used.value -= n
            self.cond.notify_all()


def decode_chunk(reader: ImageReader, ring: np.ndarray, start: int, end: int, slot: int,
                 budget: Optional[_Budget]) -> _Result:
    """Decode images start..end−1 into ``ring[slot]`` back to back, until the next one does not fit."""
    result = _Result(start, start, end, slot)
    buf, offset = ring[slot], 0
    for i in range(start, end):
        opened = reader.open(i)
        try:
            if opened.error is not None:
                result.bad.append((opened.name, opened.error))
                result.end = i + 1
                continue
            size = opened.nbytes
            if offset and size > buf.size - offset:
                break  # the next task starts here
            hold = size if budget is not None and size > LARGE_IMAGE_BYTES else 0
            if hold:
                budget.acquire(hold)
            try:
                img, err = reader.decode(opened)
                if img is None:
                    result.bad.append((opened.name, err))
                elif img.nbytes > buf.size - offset:  # only when the slot is empty: larger than a slot
                    result.alone = img  # alone, through the pipe
                    result.end = i + 1
                    return result
                else:
                    buf[offset:offset + img.nbytes].reshape(img.shape)[...] = img
                    result.rows.append((offset, *img.shape))
                    offset += img.nbytes
            finally:
                if hold:
                    budget.release(hold)
        finally:
            opened.close()
        result.end = i + 1
    return result


def _worker(reader: ImageReader, ring_buffer: mmap.mmap, slots: int, tasks, results, budget: _Budget) -> None:
    """A worker process: decode tasks until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    torch.set_num_threads(1)
    ring = np.frombuffer(ring_buffer, dtype=np.uint8).reshape(slots, -1)
    while True:
        task = tasks.get()
        if task is None:
            return
        start, end, slot = task
        try:
            result = decode_chunk(reader, ring, start, end, slot, budget)
        except BaseException:  # noqa: BLE001 - reported by the main process, with the traceback
            result = _Result(start, start, end, slot, error=traceback.format_exc())
        results.put(result)


class Feeder:
    """Decoded, packed chunks of ``refs`` in order, each a :class:`PackedBatch` of at most ``CHUNK_IMAGES``
    images living in a slot of the ring; use as a context manager (workers stop on exit).

    A chunk's pixels stay valid until the next chunk is asked for, unless it was handed to
    :meth:`to_device`, whose copy is then waited for before the slot is used again. A bad image raises
    :class:`FidfastError` naming it, unless ``skip_bad_images``: then chunks carry their bad images in
    ``.bad``.

    Args:
        refs: the images (files or archive members).
        device: where chunks go: CUDA pins the ring and copies on a side stream.
        num_workers: decoding processes (0: this process decodes, chunk by chunk, when asked).
        chunk: images per chunk at most.
        skip_bad_images: report unreadable images in ``.bad`` instead of raising.
    """

    def __init__(self, refs: Sequence[ImageRef], device: torch.device, num_workers: int,
                 chunk: int = CHUNK_IMAGES, skip_bad_images: bool = False, fast_jpeg: bool = False) -> None:
        self.refs, self.device, self.chunk, self.skip_bad_images = list(refs), device, max(1, chunk), skip_bad_images
        ctx_name = "fork" if "fork" in mp.get_all_start_methods() else None
        self.workers = num_workers if ctx_name else 0  # without fork (Windows), this process decodes
        self.slots = self.workers + SPARE_SLOTS if self.workers else 1
        self._scratch = tempfile.TemporaryDirectory(prefix="fidfast-")
        self.reader = ImageReader(self.refs, _readable_tars(self.refs, Path(self._scratch.name)), fast_jpeg)
        # Anonymous shared memory: forked workers write into it; it is not /dev/shm, so a container's small
        # /dev/shm does not limit it.
        self._buffer = mmap.mmap(-1, self.slots * SLOT_BYTES)
        self._ring = np.frombuffer(self._buffer, dtype=np.uint8).reshape(self.slots, SLOT_BYTES)
        self._host = torch.from_numpy(self._ring)
        self._pinned = False
        self._procs: List[mp.Process] = []
        self._free: List[int] = list(range(self.slots))
        self._copies: Deque[Tuple[int, torch.cuda.Event]] = collections.deque()  # slots whose copy is queued
        self._todo: Deque[Tuple[int, int]] = collections.deque(
            (s, min(s + self.chunk, len(self.refs))) for s in range(0, len(self.refs), self.chunk))
        self._done: Dict[int, _Result] = {}
        self._in_flight: Set[int] = set()
        self._budget: Optional[_Budget] = None
        self._lent: Optional[int] = None  # the slot of the chunk last given out
        self._copy_stream = None
        if self.workers:
            ctx = mp.get_context(ctx_name)
            self._tasks, self._results = ctx.SimpleQueue(), ctx.SimpleQueue()
            self._budget = _Budget(ctx, DECODE_BUDGET_BYTES)
            for _ in range(self.workers):
                p = ctx.Process(target=_worker, daemon=True,
                                args=(self.reader, self._buffer, self.slots, self._tasks, self._results,
                                      self._budget))
                p.start()
                self._procs.append(p)
        self._dispatch()  # decoding starts now, while the caller builds its network

    # -- scheduling ------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Give free slots to the next ranges of images (workers only; this process decodes on demand)."""
        self._reclaim()
        while self.workers and self._free and self._todo:
            start, end = self._todo.popleft()
            slot = self._free.pop()
            self._in_flight.add(start)
            self._tasks.put((start, end, slot))

    def _reclaim(self, wait_for_one: bool = False) -> None:
        """Slots whose copy to the device is done are free again (``wait_for_one``: wait for the oldest)."""
        while self._copies and (wait_for_one or self._copies[0][1].query()):
            slot, event = self._copies.popleft()
            event.synchronize()
            self._free.append(slot)
            wait_for_one = False

    def _result(self, start: int) -> _Result:
        """The result of the task that starts at ``start``, decoding it here when there are no workers."""
        if not self.workers:
            if not self._free:
                self._reclaim(wait_for_one=True)
            begin, end = self._todo.popleft()
            return decode_chunk(self.reader, self._ring, begin, end, self._free.pop(), None)
        while start not in self._done:
            if start not in self._in_flight:  # its range waits for a slot that a queued copy holds
                if not (self._free or self._copies):
                    raise RuntimeError("fidfast: feeder stalled: no slot is free or being copied (a bug)")
                self._reclaim(wait_for_one=not self._free)
                self._dispatch()
                continue
            ready = wait([self._results._reader, *(p.sentinel for p in self._procs)], STALL_SECONDS)
            if self._results._reader in ready:
                r = self._results.get()
                self._in_flight.discard(r.start)
                self._done[r.start] = r
            elif ready:
                dead = next(p for p in self._procs if p.sentinel in ready)
                dead.join(timeout=1)  # its sentinel can turn ready a moment before the exit is reported
                raise FidfastError(f"a decoding worker died (exit code {dead.exitcode}) while images "
                                   f"{self._name(start)} onwards were being decoded; rerun with --num-workers 0 "
                                   "to see what fails")
        return self._done.pop(start)

    def _name(self, i: int) -> str:
        return ref_name(self.refs[i])

    # -- the chunks ------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[PackedBatch]:
        position = 0
        while position < len(self.refs):
            self._dispatch()
            r = self._result(position)
            if r.error is not None:
                raise RuntimeError(f"fidfast: decoding images from {self._name(r.start)} failed in a worker:\n"
                                   f"{r.error}")
            if r.bad and not self.skip_bad_images:
                raise FidfastError(f"{r.bad[0][1]} (pass --skip-bad-images to skip such files)")
            if r.end < r.task_end:
                self._todo.appendleft((r.end, r.task_end))  # the rest of the range, next in line
            position = r.end
            if r.alone is not None:
                self._free.append(r.slot)
                img = torch.from_numpy(r.alone)
                meta = torch.tensor([[0, *r.alone.shape]], dtype=torch.int64)
                yield PackedBatch(img.view(-1), meta, r.bad)
                continue
            used = r.rows[-1][0] + int(np.prod(r.rows[-1][1:])) if r.rows else 0
            meta = torch.tensor(r.rows, dtype=torch.int64).reshape(-1, 4)
            self._lent = r.slot
            yield PackedBatch(self._host[r.slot, :used], meta, r.bad)
            if self._lent is not None:  # not handed to to_device: free now
                self._free.append(self._lent)
                self._lent = None

    def to_device(self, batch: PackedBatch) -> PackedBatch:
        """The chunk just given out, on the device: copied on a side stream (the current stream waits for
        it), its slot given back once the copy is done. On the CPU the chunk itself."""
        if self.device.type != "cuda":
            return batch
        if not self._pinned:
            self._pin()
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            data = batch.data.to(self.device, non_blocking=True)
            event = self._copy_stream.record_event()
        current.wait_event(event)
        data.record_stream(current)  # allocated on the copy stream, used on the current one
        if self._lent is not None:
            self._copies.append((self._lent, event))
            self._lent = None
        return PackedBatch(data, batch.meta, batch.bad)

    def _pin(self) -> None:
        """Page-lock the ring for the device's DMA (after the workers forked: pinned pages are not
        inherited). Unpinned, copies still work, at pageable speed."""
        self._pinned = True
        err = int(torch.cuda.cudart().cudaHostRegister(self._host.data_ptr(), self._host.numel(), 0))
        if err:
            log.info("fidfast: could not pin the decode ring (CUDA error %s); copies run unpinned", err)
            self._pinned = None
            _clear_cuda_error()


    # -- shutdown --------------------------------------------------------------------------------------
    def __enter__(self) -> "Feeder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (without waiting for decoding nobody needs) and free the ring."""
        procs, self._procs = self._procs, []
        for p in procs:
            p.terminate()  # queued tasks are abandoned; a worker mid-chunk is not waited for
        for p in procs:
            p.join(timeout=1)
        if self._copies:
            self._copies[-1][1].synchronize()
            self._copies.clear()
        if self._pinned:
            torch.cuda.cudart().cudaHostUnregister(self._host.data_ptr())
            self._pinned = False
        self._scratch.cleanup()


def _readable_tars(refs: Sequence[ImageRef], folder: Path) -> Dict[Path, Path]:
    """Each tar archive among ``refs`` as a tar that gives its members by random access (compressed ones
    are copied, uncompressed, into ``folder``)."""
    tars: Dict[Path, Set[str]] = {}
    for ref in refs:
        if isinstance(ref, tuple) and not is_zip(ref[0]):
            tars.setdefault(ref[0], set()).add(ref[1])
    readable = {}
    for tar, members in tars.items():
        try:
            readable[tar] = readable_tar(tar, members, folder)
        except (OSError, EOFError, tarfile.TarError, zlib.error, lzma.LZMAError) as exc:
            raise FidfastError(f"{tar}: cannot decompress ({exc.__class__.__name__}: {exc})") from None
    return readable


def _clear_cuda_error() -> None:
    """Reset the CUDA runtime's last error, which a failed registration leaves behind for the next kernel
    launch's check to report as its own (torch exposes no cudaGetLastError: the runtime torch loaded is
    reached by name)."""
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            ctypes.CDLL(name).cudaGetLastError()
            return
        except (OSError, AttributeError):
            continue
