"""TensorBoard event files written from plain protos, so logging works on every Keras backend.

Keras's own TensorBoard callback needs TensorFlow; a run on the JAX backend (the GPU machines) has
none. TensorBoard's own EventFileWriter imports TensorFlow when it is installed (seconds, and its
start-up chatter in the launcher), so records are written here with its TF-free RecordWriter,
synchronously: an event is on disk when the call returns. The layout matches what that callback
writes (`train/` and `validation/` with `epoch_*` tags), so the HParams dashboard finds the
metrics under the names users know.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.record_writer import RecordWriter

from mnistsweep import fsio

# The metrics the HParams dashboard shows against each run's hyperparameters.
HPARAMS_METRICS = (
    ("validation", "epoch_accuracy", "validation accuracy"),
    ("validation", "epoch_loss", "validation loss"),
    ("test", "test_accuracy", "test accuracy (best checkpoint)"),
)


# The sweep's one HParams declaration ("tfevents" in its name is what TensorBoard reads).
HPARAMS_CONFIG_FILE = "events.out.tfevents.0.sweep-hparams.v2"

_file_counter = itertools.count()


def open_event_file(folder: Path) -> RecordWriter:
    """A new event file named as TensorBoard's writers name theirs, opened with its version."""
    folder.mkdir(parents=True, exist_ok=True)
    name = (
        f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}"
        f".{os.getpid()}.{next(_file_counter)}.v2"
    )
    writer = RecordWriter(open(folder / name, "wb"))  # noqa: SIM115 (RecordWriter.close closes it)
    writer.write(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
    return writer


class EventLog:
    """One TensorBoard run folder per group (`train`, `validation`, ...) under a log root."""

    def __init__(self, log_root: Path):
        self.log_root = log_root
        self._writers: dict[str, RecordWriter] = {}

    def _writer(self, group: str) -> RecordWriter:
        if group not in self._writers:
            self._writers[group] = open_event_file(self.log_root / group)
        return self._writers[group]

    def _write(self, group: str, summary: Summary, step: int = 0) -> None:
        event = Event(wall_time=time.time(), step=step, summary=summary)
        writer = self._writer(group)
        writer.write(event.SerializeToString())
        writer.flush()

    def scalars(self, group: str, values: Mapping[str, float], step: int) -> None:
        summary = Summary(
            value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()]
        )
        self._write(group, summary, step)

    def text(self, group: str, tag: str, markdown: str) -> None:
        self._write(group, text_summary.text_pb(tag, markdown))

    def hparams(self, values: Mapping[str, Any], trial_id: str) -> None:
        self._write(".", hparams_summary.hparams_pb(dict(values), trial_id=trial_id))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def write_hparams_config(log_root: Path, axes: Mapping[str, Sequence[Any]]) -> None:
    """Declare the sweep's axes and metrics at the sweep's log root (HParams dashboard): one
    file, rewritten in place by each launch, never one more per launch."""
    hparams = [
        hparams_summary.HParam(name, hparams_summary.Discrete(list(values)))
        if _discrete_ok(values)
        else hparams_summary.HParam(name)
        for name, values in axes.items()
    ]
    metrics = [
        hparams_summary.Metric(tag, group=group, display_name=display)
        for group, tag, display in HPARAMS_METRICS
    ]
    config = hparams_summary.hparams_config_pb(hparams, metrics)
    content = io.BytesIO()
    writer = RecordWriter(content)
    for event in (
        Event(wall_time=time.time(), file_version="brain.Event:2"),
        Event(wall_time=time.time(), summary=config),
    ):
        writer.write(event.SerializeToString())
    fsio.write_bytes(log_root / HPARAMS_CONFIG_FILE, content.getvalue())


def _discrete_ok(values: Sequence[Any]) -> bool:
    """TensorBoard's Discrete domain wants values of one type among str, bool and float."""
    kinds = {type(v) for v in values}
    return len(kinds) == 1 and kinds <= {str, bool, float, int} and None not in values
