"""Records: a job and a result file as JSON values, and back (what a state store keeps).

A :class:`~emulator.core.jobs.Job` carries runtime-only parts (its ``done`` event, its
output-fault function); its record keeps everything else but long inline inputs (base64
text, data URIs: only their description, as :func:`emulator.core.jobs.runner.forget_inline`
keeps them), so a record is a few hundred bytes.
"""

from __future__ import annotations

from typing import Any

from emulator.core.billing import usd, usd_text
from emulator.core.files import FileStore, StoredFile
from emulator.core.inputs import ImageSource
from emulator.core.jobs.model import Job, JobStatus, Task
from emulator.core.jobs.runner import KEEP_INLINE_CHARS

#: Job attributes kept as they are (JSON values).
PLAIN_FIELDS = (
    "id", "vendor", "operation", "api_key", "created_at", "origin", "metadata",
    "updated_at", "started_at", "completed_at", "status_reads", "floor_stage", "stuck",
    "work_started_at", "work_ended_at", "error", "error_code", "faults",
    "output_ttl_s",
)
#: Job amounts (USD, :class:`~decimal.Decimal`), kept as exact decimal strings.
MONEY_FIELDS = ("price_usd", "charged_usd")  # read back in job_from_record


def job_record(job: Job) -> dict[str, Any]:
    """``job`` as JSON values: its plain attributes, ``status`` and ``outcome`` (canonical
    words), ``task`` (``{kind, params, sources: [[kind, value]]}``; an inline input longer
    than ``KEEP_INLINE_CHARS`` is kept as its short description, as a loaded job keeps it:
    a restored job is never run again), ``outputs`` (file ids)
    and ``planned`` (``[status, message, code]`` or ``None``); amounts (``price_usd``,
    ``charged_usd``) as exact decimal strings."""
    record = {name: getattr(job, name) for name in PLAIN_FIELDS}
    for name in MONEY_FIELDS:
        record[name] = usd_text(getattr(job, name))
    record["status"] = job.status.value
    record["outcome"] = job.outcome.value if job.outcome is not None else None
    record["task"] = {"kind": job.task.kind, "params": job.task.params,
                      "sources": [[s.kind, s.value if s.kind == "url"
                                   or len(s.value) <= KEEP_INLINE_CHARS else s.describe()]
                                  for s in job.task.sources]}
    record["outputs"] = [f.id for f in job.outputs]
    record["planned"] = ([job.planned[0].value, job.planned[1], job.planned[2]]
                         if job.planned is not None else None)
    return record


def job_from_record(record: dict[str, Any], files: FileStore, generation: int) -> Job:
    """The job of :func:`job_record`'s ``record``; its outputs are looked up in ``files``
    (one no longer there is left out: it answers as expired). ``generation`` is the engine's
    generation now (a restored job is billed by the engine that restores it)."""
    task = record["task"]
    job = Job(
        task=Task(kind=task["kind"], params=task["params"],
                  sources=tuple(ImageSource(kind=k, value=v) for k, v in task["sources"])),
        status=JobStatus(record["status"]),
        outcome=JobStatus(record["outcome"]) if record["outcome"] is not None else None,
        generation=generation,
        price_usd=usd(record["price_usd"]),
        charged_usd=usd(record["charged_usd"]),
        **{name: record[name] for name in PLAIN_FIELDS},
    )
    job.outputs = [f for i in record["outputs"] if (f := files.get(i)) is not None]
    planned = record["planned"]
    if planned is not None:
        job.planned = (JobStatus(planned[0]), planned[1], planned[2])
    return job


def file_meta(record: StoredFile) -> dict[str, Any]:
    """A file's attributes but its bytes, as JSON values."""
    return {"id": record.id, "name": record.name, "content_type": record.content_type,
            "width": record.width, "height": record.height, "created_at": record.created_at,
            "expires_at": record.expires_at}


def file_from_meta(meta: dict[str, Any], data: bytes) -> StoredFile:
    """The file of :func:`file_meta`'s ``meta`` with its bytes ``data``."""
    return StoredFile(data=data, **meta)


__all__ = ["file_from_meta", "file_meta", "job_from_record", "job_record"]
