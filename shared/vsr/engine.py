"""Run a super-resolution ONNX model on batches of frames with ONNX Runtime (CPU, or CUDA on the GPU tier).

One `InferenceSession` per model per process (`get_upscaler` caches it), so a warm Lambda container pays
the session start once. Frames larger than a tile are processed in overlapping tiles (vsr.tiling) so memory
stays bounded on 1080p/4K. Threads follow the CPUs this process may actually use (affinity and cgroup
quota), not the host's core count.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vsr.cpus import available_cpus
from vsr.errors import ModelError
from vsr.guard import GUARD_OUTPUT, GuardSpec, GuardStats, regions_to_recompute, spec_from_metadata
from vsr.logs import get_logger
from vsr.models.registry import ModelInfo
from vsr.tiling import Tile, plan_tiles

log = get_logger(__name__)


def session_options(threads: int) -> ort.SessionOptions:
    """The options measured fastest for these convolution-heavy graphs (see bench/bench_model.py)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # incl. NCHWc conv kernels
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle ORT workers otherwise spin after each run, stealing the CPU from PyAV's decode/encode threads (and
    # from any other session); waking them costs microseconds per op against ~50 ms per convolution.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


CPU_ONLY: tuple[str, ...] = ("CPUExecutionProvider",)

_sessions: dict[tuple[str, int, tuple[str, ...]], ort.InferenceSession] = {}
_upscalers: dict[tuple[str, str, int, int, int, bool | None, tuple[str, ...], float | None], Upscaler] = {}
_lock = threading.Lock()
_fallbacks_logged: set[tuple[str, ...]] = set()


def usable_providers(preferred: tuple[str, ...], available: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The preferred providers this ONNX Runtime build has, in order, always ending with the CPU provider; a
    missing one (the GPU provider in a CPU wheel, or without a driver) is logged once per process."""
    have = tuple(ort.get_available_providers()) if available is None else available
    usable = tuple(p for p in preferred if p in have)
    if "CPUExecutionProvider" not in usable:
        usable += ("CPUExecutionProvider",)
    missing = tuple(p for p in preferred if p not in have)
    if missing and missing not in _fallbacks_logged:
        _fallbacks_logged.add(missing)
        log.warning("engine.provider_missing", missing=list(missing), using=list(usable), available=list(have))
    return usable


def _session(path: Path, threads: int, providers: tuple[str, ...] = CPU_ONLY) -> ort.InferenceSession:
    key = (str(path), threads, providers)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            started = time.perf_counter()
            session = ort.InferenceSession(str(path), session_options(threads), providers=list(providers))
            _sessions[key] = session
            log.info(
                "session_created",
                model=str(path),
                threads=threads,
                providers=session.get_providers(),
                seconds=round(time.perf_counter() - started, 3),
            )
    return session


class Upscaler:
    """Upscale NHWC float32 RGB batches in 0..1 by `model.scale`.

    `tile`: window side in input pixels; None -> settings `model.tile`, 0 -> never tile.
    `tile_overlap`: context pixels on each side of a tile; None -> settings `model.tile_overlap`.
    `threads`: CPUs to use; None -> `available_cpus()`.
    `parallel`: run independent frames/tiles concurrently, one ORT thread each, instead of one at a time on
    all threads (no thread barriers per op, so it holds up better when decode/encode compete for the CPUs);
    None -> True (see bench/bench_model.py for the measurement) on CPU; a GPU session runs one at a time.
    `providers`: ONNX Runtime execution providers in order of preference (the tier's typed setting); those
    this build lacks are dropped (`usable_providers`), and `self.providers` says what the session really uses.
    `guard_max_clipped`: for an int8 model with a saturation guard (vsr.guard), recompute in fp32 the parts
    where more (layer, channel) pairs than this clipped (settings `model.int8_guard.max_clipped_channels`);
    `fallback`: the fp32 model that recomputes them (None: the registry's fp32 original of `model`).
    """

    def __init__(
        self,
        model: ModelInfo,
        tile: int = 0,
        tile_overlap: int = 0,
        threads: int | None = None,
        parallel: bool | None = None,
        providers: tuple[str, ...] = CPU_ONLY,
        guard_max_clipped: float | None = None,
        fallback: ModelInfo | None = None,
    ) -> None:
        self.model = model
        self.scale = int(model.scale)
        self.tile = int(tile)
        self.tile_overlap = int(tile_overlap)
        self.threads = threads or available_cpus()
        self._requested = usable_providers(providers)
        self.session = _session(Path(model.path), self.threads, self._requested)
        self.providers: tuple[str, ...] = tuple(self.session.get_providers())
        self.on_gpu = self.providers[0] != "CPUExecutionProvider"
        # several CPU sessions side by side beat one on all threads; a GPU wants one stream of work
        self.parallel = (not self.on_gpu) if parallel is None else parallel
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.guard: GuardSpec | None = None
        self.fallback: ModelInfo | None = None
        if GUARD_OUTPUT in {o.name for o in self.session.get_outputs()}:
            if guard_max_clipped is None:
                raise ModelError(
                    f"{model.name} has a saturation guard: pass guard_max_clipped "
                    "(settings model.int8_guard.max_clipped_channels)"
                )
            self.guard = spec_from_metadata(self.session.get_modelmeta().custom_metadata_map, guard_max_clipped)
            if fallback is None:
                from vsr.models.registry import with_precision

                fallback = with_precision(model, "fp32")
            self.fallback = fallback

    def _run(self, session: ort.InferenceSession, nchw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(model output, guard counts or None)."""
        names = [self.output_name] if self.guard is None else [self.output_name, GUARD_OUTPUT]
        outs = session.run(names, {self.input_name: nchw})
        out = outs[0]
        expected = (nchw.shape[0], 3, nchw.shape[2] * self.scale, nchw.shape[3] * self.scale)
        if out.shape != expected:
            raise ValueError(f"model {self.model.name} returned {out.shape}, expected {expected}")
        return out, (outs[1] if self.guard is not None else None)

    def _recompute(
        self, frame: np.ndarray, t: Tile, counts: np.ndarray, out: np.ndarray, threads: int
    ) -> tuple[int, int]:
        """Overwrite with fp32 output the parts of tile `t`'s core the guard flags; (pixels, regions) redone."""
        assert self.guard is not None and self.fallback is not None
        spec, s = self.guard, self.scale
        fp32 = _session(Path(self.fallback.path), threads, self._requested)
        height, width = frame.shape[:2]
        redone = regions = 0
        for r in regions_to_recompute(counts, spec, t.y1 - t.y0, t.x1 - t.x0):
            y0, y1 = max(t.cy0, r.y0 + t.y0), min(t.cy1, r.y1 + t.y0)
            x0, x1 = max(t.cx0, r.x0 + t.x0), min(t.cx1, r.x1 + t.x0)
            if y1 <= y0 or x1 <= x0:
                continue
            wy0, wy1 = max(0, y0 - spec.radius), min(height, y1 + spec.radius)
            wx0, wx1 = max(0, x0 - spec.radius), min(width, x1 + spec.radius)
            window = np.ascontiguousarray(frame[wy0:wy1, wx0:wx1].transpose(2, 0, 1), np.float32)[None]
            result = fp32.run(None, {self.input_name: window})[0][0]
            core = result[:, (y0 - wy0) * s : (y1 - wy0) * s, (x0 - wx0) * s : (x1 - wx0) * s]
            out[y0 * s : y1 * s, x0 * s : x1 * s] = core.transpose(1, 2, 0)
            redone += (y1 - y0) * (x1 - x0)
            regions += 1
        return redone, regions

    def upscale(self, batch: np.ndarray, stats: GuardStats | None = None) -> np.ndarray:
        """[N, H, W, 3] float32 in 0..1 -> [N, sH, sW, 3] float32 clipped to [0, 1]. With a guarded int8 model,
        the flagged parts come from the fp32 model, and `stats` (when given) counts input pixels and those
        recomputed."""
        if batch.ndim != 4 or batch.shape[3] != 3:
            raise ValueError(f"expected an [N, H, W, 3] batch, got shape {batch.shape}")
        n, height, width, _ = batch.shape
        s = self.scale
        out = np.empty((n, height * s, width * s, 3), dtype=np.float32)
        items = [(i, t) for i in range(n) for t in plan_tiles(height, width, self.tile, self.tile_overlap)]
        workers = min(len(items), self.threads) if self.parallel else 1
        # one frame (or tile) per ORT call: batching several in one call does not pay on CPU (bench_model.py)
        session = (
            self.session
            if workers == 1
            else _session(Path(self.model.path), max(1, self.threads // workers), self._requested)
        )

        def work(item: tuple[int, Tile]) -> None:
            i, t = item
            window = np.ascontiguousarray(batch[i, t.y0 : t.y1, t.x0 : t.x1].transpose(2, 0, 1), np.float32)[None]
            result, counts = self._run(session, window)
            rows, cols = t.core_in_window(s)
            out[i, t.cy0 * s : t.cy1 * s, t.cx0 * s : t.cx1 * s] = result[0][:, rows, cols].transpose(1, 2, 0)
            if counts is not None:
                redone, regions = self._recompute(batch[i], t, counts, out[i], max(1, self.threads // workers))
                if stats is not None:
                    stats.add((t.cy1 - t.cy0) * (t.cx1 - t.cx0), redone, regions)

        if workers == 1:
            for item in items:
                work(item)
        else:
            list(_pool(workers).map(work, items))  # ORT and NumPy copies release the GIL
        np.clip(out, 0.0, 1.0, out=out)
        return out


_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="vsr-infer")
    return pool


def get_upscaler(
    model: ModelInfo,
    tile: int = 0,
    tile_overlap: int = 0,
    threads: int | None = None,
    parallel: bool | None = None,
    providers: tuple[str, ...] = CPU_ONLY,
    guard_max_clipped: float | None = None,
) -> Upscaler:
    """A process-wide Upscaler per (model, tile, overlap, threads, parallel, providers); ORT sessions are shared
    per model. `tile` 0 never tiles; the callers at the edge pass settings model.tile / model.tile_overlap and
    the tier's providers (Settings.providers)."""
    resolved_tile = int(tile)
    resolved_overlap = int(tile_overlap)
    resolved_threads = threads or available_cpus()
    key = (
        str(model.path),
        model.sha256,
        resolved_tile,
        resolved_overlap,
        resolved_threads,
        parallel,
        providers,
        guard_max_clipped,
    )
    with _lock:
        upscaler = _upscalers.get(key)
    if upscaler is None:
        upscaler = Upscaler(
            model, resolved_tile, resolved_overlap, resolved_threads, parallel, providers, guard_max_clipped
        )
        with _lock:
            upscaler = _upscalers.setdefault(key, upscaler)
    return upscaler
