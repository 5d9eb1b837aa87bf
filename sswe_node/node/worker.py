"""Workers: take pending cases in batches, run the pipeline, store outputs and queue sends."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import Dataset, dcmread, dcmwrite

from sswe_node.config import Settings
from sswe_node.node.background import QueueThread
from sswe_node.node.case_warnings import sendable
from sswe_node.node.intake import missing_identity, split_by_bytes
from sswe_node.node.leases import process_owner
from sswe_node.node.metrics import Metrics
from sswe_node.node.records import CaseFinish, CaseOutcome, ClaimedCase, OutputRecord, Target
from sswe_node.node.schema import DONE, FAILED
from sswe_node.node.storage import atomic_write_many, output_path, sync_folder_of
from sswe_node.node.store import CaseStore
from sswe_node.node.stow_server import STOW_CALLING_AE
from sswe_node.outputs.uids import UID_SALT_ATTRIBUTE

LOGGER = logging.getLogger(__name__)

BATCH_GAP_SECONDS = 0.05
"""A worker collecting a batch stops waiting for more instances after this long without one
(the whole wait is bounded by ``processing.batch_wait_seconds``). Instances of a burst arrive
10-50 ms apart on one association; a scanner's steady stream (5 captures/s) 200 ms apart, and
there every millisecond of waiting is latency: on 2 busy cores a batch of one or two captures
takes 0.3-0.5 s, so a worker that waits longer falls behind the stream."""


def load_node_model(settings: Settings) -> Any:
    """Load the configured model, or with ``[[routing]]`` rules every model they name.

    Imports TensorFlow: call from a worker thread, once. Returns a model, or a
    :class:`~sswe_node.routing.ModelRouter` holding several.
    """
    from sswe_node.model import load_model

    def load(name: str) -> Any:
        return load_model(
            name,
            models_dir=settings.model.models_dir,
            device=settings.model.device,
            mc_precision=settings.trust.mc_precision,
        )

    if not settings.routing:
        return load(settings.model.name)
    from sswe_node.routing import ModelRouter

    return ModelRouter.load(settings, load)


def _scanner_stats(store: Any) -> Any:
    """Per-scanner latent statistics in the case store (``None`` for a store without them)."""
    try:
        from sswe_node.node.scanner_stats import StoredScannerStats

        return StoredScannerStats(store) if hasattr(store, "session") else None
    except ImportError:  # pragma: no cover - a store without the scanner_stats table
        return None


def targets_for(case: ClaimedCase, settings: Settings) -> list[Target]:
    """Return where the outputs of ``case`` go: the destinations, and the caller if asked.

    With ``node.send_back_to_caller``, a calling AE listed in ``[[callers]]`` is sent to at its
    ``host`` (empty: the address it called from) and ``port``; any other calling AE at the
    address it called from and ``node.caller_port`` (0: not sent back). A caller that is also a
    configured destination (same AE title, host and port) gets the outputs once.
    """
    targets = [
        Target(d.name, d.ae_title, d.host, d.port, d.tls, d.url) for d in settings.destinations
    ]
    caller = caller_target(case.calling_ae, case.peer_address, settings)
    if caller is not None and not any(
        (t.ae_title, t.host, t.port) == (caller.ae_title, caller.host, caller.port) for t in targets
    ):
        targets.append(caller)
    return targets


def caller_target(calling_ae: str, peer_address: str, settings: Settings) -> Target | None:
    """Return the calling AE as a send target, or ``None`` when outputs do not go back to it."""
    if not settings.node.send_back_to_caller or not calling_ae:
        return None
    if calling_ae == STOW_CALLING_AE:  # a STOW-RS client has no AE to send back to
        return None
    name = f"caller:{calling_ae}"
    for known in settings.callers:
        if known.ae_title == calling_ae:
            host = known.host or peer_address
            return Target(name, calling_ae, host, known.port, known.tls) if host else None
    if settings.node.caller_port and peer_address:
        return Target(name, calling_ae, peer_address, settings.node.caller_port)
    return None


def write_file(handle: BinaryIO, ds: Dataset) -> None:
    """Write a derived dataset in the DICOM file format to ``handle`` (no copy in memory)."""
    dcmwrite(handle, ds, enforce_file_format=True)


#: The simulated captures the warm-up runs (scripts/make_warm_up_captures.py).
WARM_UP_CAPTURES = ("data", "warm_up")


def warm_up_captures() -> list[Dataset]:
    """Return the warm-up captures shipped with the package (none when they are missing)."""
    from importlib import resources
    from io import BytesIO

    folder = resources.files("sswe_node").joinpath(*WARM_UP_CAPTURES)
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".dcm"))
    return [dcmread(BytesIO(folder.joinpath(name).read_bytes())) for name in names]


def warm_up(model: Any, settings: Settings | None = None) -> None:
    """Run the shipped warm-up captures through the pipeline of every resident model.

    Without it the first batch after start-up pays for graph tracing, imports and the
    compiled kernels of the reading core and the output builders: about a second in a later
    process, ~14 s on a fresh installation (the kernels compile once, then load from their
    cache). Three simulated captures (a dual SWE display, a full-screen B-mode and a second
    scanner's, :func:`warm_up_captures`) go through ``process_batch`` as a batch does:
    ``trust.mc_passes`` passes, OOD scores, and scanner alignment with its level passes
    through a throwaway in-memory aligner (nothing is added to the case store's scanner
    statistics; the outputs are dropped). Without the captures each model runs on two
    random frames instead. A failure is only logged: the first batch retries.
    """
    started = time.perf_counter()
    try:
        import dataclasses

        import numpy as np

        from sswe_node.alignment import MemoryScannerStats, make_aligner
        from sswe_node.config import load_settings
        from sswe_node.pipeline import process_batch

        settings = settings if settings is not None else load_settings()
        trial = dataclasses.replace(
            settings, trust=dataclasses.replace(settings.trust, align_min_frames=1)
        )
        captures = warm_up_captures()
        rng = np.random.default_rng(0)
        for each in getattr(model, "models", {"": model}).values():
            if captures:
                process_batch(captures, each, trial, scanner_stats=MemoryScannerStats())
                continue
            rows, cols = each.manifest.grid
            frames = rng.random((2, rows, cols), dtype=np.float32)
            if not hasattr(each, "infer"):
                each.predict(frames)
                continue
            aligner = make_aligner(
                each,
                ["warm-up"] * 2,
                MemoryScannerStats(),
                min_frames=1,
                enabled=settings.trust.align_scanners,
            )
            each.infer(frames, passes=settings.trust.mc_passes or None, aligner=aligner)
    except Exception as exc:  # noqa: BLE001 - the node keeps going; the first batch is slower
        LOGGER.warning("event=warm-up-failed error=%s", type(exc).__name__)
        return
    LOGGER.info("event=warm-up seconds=%.2f", time.perf_counter() - started)


class Worker(QueueThread):
    """A background thread that processes pending cases in batches.

    Parameters
    ----------
    store : CaseStore
        The case store.
    settings : Settings
        The node settings (``processing.*``, ``reading.*``, ``destinations``).
    wake : threading.Event
        Set by the SCP when an instance arrives.
    stop : threading.Event
        Set to stop after the current batch.
    sends_queued : threading.Event
        Set after outputs are queued, to wake the sender.
    metrics : Metrics
        Counters and latencies.
    model_loader : callable
        Returns the model; called once, in this thread, at start-up (default: the configured
        packaged model).
    model : object, optional
        An already loaded model shared between workers (then ``model_loader`` is not used).
    """

    def __init__(
        self,
        store: CaseStore,
        settings: Settings,
        wake: threading.Event,
        stop: threading.Event,
        sends_queued: threading.Event,
        metrics: Metrics,
        model_loader: Callable[[Settings], Any] = load_node_model,
        model: Any = None,
        name: str = "sswe-worker",
    ) -> None:
        super().__init__(name, store, wake, stop, metrics)
        self.settings = settings
        self.sends_queued = sends_queued
        self.model_loader = model_loader
        self.model = model
        self.ready = threading.Event()
        self.error: str | None = None
        self.storage_dir = Path(settings.node.storage_dir)
        self.scanner_stats = _scanner_stats(store)
        self.owner = process_owner()
        self.lease_seconds = settings.processing.lease_seconds
        self._held: set[int] = set()
        self._held_lock = threading.Lock()

    def idle_seconds(self) -> float:
        """Return the longest sleep before looking for pending cases again."""
        return self.settings.processing.poll_seconds

    def _renew_leases(self) -> None:
        """Renew the leases of the cases this worker holds, a few times per lease, until stopped.

        A case whose lease was lost (it expired, e.g. while the process was stopped, and
        another worker took it back) is dropped: its outcome will not be recorded here.
        """
        interval = max(0.2, self.lease_seconds / 3)
        while not self.stop_event.wait(interval):
            with self._held_lock:
                held = set(self._held)
            if not held:
                continue
            try:
                kept = self.store.renew(sorted(held), self.owner, self.lease_seconds)
            except Exception as exc:  # noqa: BLE001 - retried at the next interval
                LOGGER.warning("event=lease-renew-failed error=%s", type(exc).__name__)
                continue
            lost = held - kept
            if lost:
                LOGGER.warning("event=lease-lost cases=%s", ",".join(map(str, sorted(lost))))
                with self._held_lock:
                    self._held -= lost

    def run(self) -> None:
        """Load the model, then process batches until stopped."""
        if self.model is None:
            started = time.perf_counter()
            try:
                self.model = self.model_loader(self.settings)
            except Exception as exc:  # noqa: BLE001 - the node keeps receiving
                self.error = f"{type(exc).__name__}: {exc}"
                LOGGER.error("event=model-load-failed error=%s", self.error)
                return
            LOGGER.info(
                "event=model-loaded name=%s version=%s seconds=%.2f",
                self.model.manifest.name,
                self.model.manifest.version,
                time.perf_counter() - started,
            )
        try:
            from sswe_node.pipeline import process_batch
        except Exception as exc:  # noqa: BLE001 - the node keeps receiving
            self.error = f"{type(exc).__name__}: {exc}"
            LOGGER.error("event=pipeline-import-failed error=%s", self.error)
            return
        self._process_batch = process_batch
        warm_up(self.model, self.settings)
        threading.Thread(target=self._renew_leases, name=f"{self.name}-leases", daemon=True).start()
        self.ready.set()
        self.drain()

    def step(self) -> int:
        """Claim a batch of pending cases and process it; return how many cases it held."""
        batch = self._next_batch()
        if batch:
            try:
                limit = int(self.settings.processing.batch_max_mb * 1024 * 1024)
                for part in split_by_bytes(batch, [c.path for c in batch], limit):
                    self.process(part)  # a batch is read whole: bounded by bytes too
            except Exception:  # noqa: BLE001 - recorded on each case of the batch
                LOGGER.exception("event=batch-error cases=%d", len(batch))
                outcome = CaseOutcome(FAILED, "internal", "internal: batch error")
                self.store.finish_many([CaseFinish(c.id, outcome) for c in batch], self.owner)
            finally:
                with self._held_lock:
                    self._held -= {case.id for case in batch}
        return len(batch)

    def _claim(self, limit: int) -> list[ClaimedCase]:
        claimed = self.store.claim(limit, self.owner, self.lease_seconds)
        with self._held_lock:
            self._held.update(case.id for case in claimed)
        return claimed

    def _take_back_dead_work(self) -> None:
        """Make cases of this host's workers that died pending again (every few seconds)."""
        if not self.dead_work_check_due():
            return
        taken = self.store.resume(self.owner)
        if taken:
            LOGGER.info("event=dead-work-taken-back count=%d", taken)

    def _next_batch(self) -> list[ClaimedCase]:
        """Claim up to ``batch_size`` cases, waiting briefly for more while a burst arrives.

        Waits at most ``processing.batch_wait_seconds`` in all, and stops waiting as soon as
        :data:`BATCH_GAP_SECONDS` pass without a new instance: a burst (instances a few tens
        of milliseconds apart) fills the batch, while a capture of a steady stream (a scanner
        sending one every 200 ms) is processed at once instead of waiting out the full time.
        """
        self._take_back_dead_work()
        size = self.settings.processing.batch_size
        batch = self._claim(size)
        if batch and len(batch) < size and self.settings.processing.batch_wait_seconds > 0:
            deadline = time.monotonic() + self.settings.processing.batch_wait_seconds
            while len(batch) < size and not self.stop_event.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                woken = self.wake.wait(min(left, BATCH_GAP_SECONDS))
                self.wake.clear()
                more = self._claim(size - len(batch))
                if not more and not woken:
                    break  # nothing arrived for BATCH_GAP_SECONDS: not a burst
                batch += more
        return batch

    def process(self, batch: Sequence[ClaimedCase]) -> None:
        """Process one batch of claimed cases and record every outcome.

        Every output of the batch is written (each file ``fsync``-ed, several at a time), the
        outputs folder is ``fsync``-ed once, then every case is recorded and its sends queued in
        one transaction, and the sender is woken: outputs are durable before they are queued.
        """
        from sswe_node.imaging.pixels import LAZY_PIXEL_BYTES

        started = time.perf_counter()
        datasets: list[Dataset] = []
        readable: list[ClaimedCase] = []
        finished: list[tuple[ClaimedCase, CaseOutcome, list[OutputRecord]]] = []
        salts = self.store.uid_salts([case.id for case in batch])
        for case in batch:
            try:
                # a large Pixel Data stays in the file: only the frames used are read
                ds = dcmread(case.path, defer_size=LAZY_PIXEL_BYTES)
                problem = missing_identity(ds)
            except Exception as exc:  # noqa: BLE001 - recorded as the case's reason
                problem = f"corrupt: not readable DICOM ({type(exc).__name__})"
            if problem:
                finished.append((case, CaseOutcome(FAILED, "corrupt", problem), []))
                continue
            if case.id in salts:  # other content under a known UID: outputs get new UIDs
                setattr(ds, UID_SALT_ATTRIBUTE, salts[case.id])
            datasets.append(ds)
            readable.append(case)
        results = self._run_pipeline(readable, datasets) if datasets else []
        manifest = self.model.manifest
        outcomes: list[CaseOutcome] = []
        items: list[tuple[int, Path, Dataset]] = []  # (case position, file, output)
        for position, result in enumerate(results):
            outcomes.append(
                CaseOutcome(
                    status=result.status,
                    reason=result.reason,
                    message=result.message,
                    layout=result.layout,
                    frames=result.frames,
                    model_name=getattr(result, "model_name", "") or manifest.name,
                    model_version=getattr(result, "model_version", "") or str(manifest.version),
                    timings=dict(result.timings),
                    warnings=tuple(getattr(result, "warnings", ())),
                    ood_score=getattr(result, "ood_score", None),
                    scale_min=getattr(result, "scale_min", None),
                    scale_max=getattr(result, "scale_max", None),
                    scale_unit=getattr(result, "scale_unit", None),
                    scale_source=getattr(result, "scale_source", None),
                )
            )
            for ds in result.outputs:
                items.append((position, output_path(self.storage_dir, str(ds.SOPInstanceUID)), ds))
        # Every output of the batch written, then fsync-ed together (the disk writes them back
        # at the same time), each renamed into place once synced.
        errors = atomic_write_many(
            [(path, functools.partial(write_file, ds=ds)) for _, path, ds in items]
        )
        written = [path for (_, path, _), error in zip(items, errors, strict=True) if not error]
        for position, case in enumerate(readable):
            mine = [(path, ds, error) for (p, path, ds), error in zip(items, errors, strict=True)
                    if p == position]  # fmt: skip
            failed = next((error for _, _, error in mine if error is not None), None)
            if failed is not None:  # e.g. disk full while writing outputs
                finished.append((case, _output_write_failed(failed), []))
                continue
            records = [
                OutputRecord(str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(path))
                for path, ds, _ in mine
            ]
            finished.append((case, outcomes[position], records))
        if written:
            try:
                for path in {path.parent: path for path in written}.values():
                    sync_folder_of(path)  # once per folder
            except OSError as exc:  # the renames may not be durable: queue nothing
                finished = [
                    (case, _output_write_failed(exc), []) if records else (case, outcome, records)
                    for case, outcome, records in finished
                ]
        queued = self._record(finished)
        if queued:
            self.sends_queued.set()
        self.metrics.observe("batch_seconds", time.perf_counter() - started)
        self.metrics.inc("batches_total")

    def _run_pipeline(self, cases: Sequence[ClaimedCase], datasets: Sequence[Dataset]) -> list[Any]:
        """Run the pipeline on each routed model's share of the batch (results in order)."""
        from sswe_node.pipeline import InstanceResult
        from sswe_node.routing import NO_MODEL, ModelRouter

        router = self.model
        if not isinstance(router, ModelRouter):
            router = ModelRouter.single(self.model, self.settings)
        results: list[Any] = [None] * len(datasets)
        groups: dict[str, list[int]] = {}
        for i, (case, ds) in enumerate(zip(cases, datasets, strict=True)):
            name = router.route(ds, case.called_ae, case.calling_ae)
            if name is None:
                results[i] = InstanceResult(
                    str(ds.get("SOPInstanceUID", "") or ""),
                    status="skipped",
                    reason=NO_MODEL,
                    message=f"{NO_MODEL}: no [[routing]] rule matches the instance",
                )
            else:
                groups.setdefault(name, []).append(i)
        for name, indices in groups.items():
            share = self._process_batch(
                [datasets[i] for i in indices],
                router.models[name],
                self.settings,
                scanner_stats=self.scanner_stats,
            )
            for i, result in zip(indices, share, strict=True):
                results[i] = result
        return results

    def _record(
        self, finished: Sequence[tuple[ClaimedCase, CaseOutcome, list[OutputRecord]]]
    ) -> int:
        """Record a batch's outcomes in one transaction; return how many sends were queued."""
        queued = self.store.finish_many(
            [
                CaseFinish(
                    case.id,
                    outcome,
                    records,
                    targets_for(case, self.settings) if sendable(outcome, self.settings) else [],
                )
                for case, outcome, records in finished
            ],
            owner=self.owner,
        )
        for case, outcome, records in finished:
            self.metrics.inc("processed_total", status=outcome.status)
            for warning in outcome.warnings:
                self.metrics.inc("case_warnings_total", warning=warning)
            for stage, seconds in outcome.timings.items():
                self.metrics.observe("stage_seconds", seconds, stage=stage)
            log = LOGGER.info if outcome.status == DONE else LOGGER.warning
            log(
                "event=case-%s case=%d layout=%s frames=%d outputs=%d reason=%s",
                outcome.status,
                case.id,
                outcome.layout,
                outcome.frames,
                len(records),
                outcome.reason or "-",
            )
        return queued


def _output_write_failed(exc: BaseException) -> CaseOutcome:
    return CaseOutcome(FAILED, "output-write", f"output-write: {type(exc).__name__}")
