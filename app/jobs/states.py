"""The job state machine, written down once.

A job's state is its public ``status`` (the seed's five values) plus an internal ``stage``.
``TRANSITIONS`` lists every allowed move; ``check_transition`` raises on anything else, and the
repository's guarded update (``WHERE status = :from AND stage = :from AND lease_epoch = :mine``)
makes a move that lost a race change zero rows instead of overwriting someone else's.

    queued ──▶ submitting ──▶ upstream_queued ──▶ running ──▶ finalizing ──▶ completed
      │            │  ▲              │                │            │
      │            │  └── queued ◀───┴── (failover) ──┘            │
      └────────────┴──────────┴─────────▶ failed / cancelled ◀─────┘
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Stage(StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    UPSTREAM_QUEUED = "upstream_queued"
    RUNNING = "running"
    FINALIZING = "finalizing"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class JobState:
    status: Status
    stage: Stage

    @property
    def is_terminal(self) -> bool:
        return self.stage is Stage.DONE

    def __str__(self) -> str:
        return f"{self.status}/{self.stage}"


QUEUED = JobState(Status.PENDING, Stage.QUEUED)
SUBMITTING = JobState(Status.PENDING, Stage.SUBMITTING)
UPSTREAM_QUEUED = JobState(Status.PENDING, Stage.UPSTREAM_QUEUED)
RUNNING = JobState(Status.PROCESSING, Stage.RUNNING)
FINALIZING = JobState(Status.PROCESSING, Stage.FINALIZING)
COMPLETED = JobState(Status.COMPLETED, Stage.DONE)
FAILED = JobState(Status.FAILED, Stage.DONE)
CANCELLED = JobState(Status.CANCELLED, Stage.DONE)

ALL_STATES = (
    QUEUED,
    SUBMITTING,
    UPSTREAM_QUEUED,
    RUNNING,
    FINALIZING,
    COMPLETED,
    FAILED,
    CANCELLED,
)

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    QUEUED: frozenset({SUBMITTING, FAILED, CANCELLED}),
    # A synchronous upstream answers with the finished result: straight to finalizing.
    # NotAccepted sends the job back to the queue for the next candidate.
    SUBMITTING: frozenset({UPSTREAM_QUEUED, RUNNING, FINALIZING, QUEUED, FAILED, CANCELLED}),
    UPSTREAM_QUEUED: frozenset({RUNNING, FINALIZING, QUEUED, FAILED, CANCELLED}),
    RUNNING: frozenset({FINALIZING, QUEUED, FAILED, CANCELLED}),
    FINALIZING: frozenset({COMPLETED, FAILED, CANCELLED}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

# Where a job is in the hands of an upstream (cancel must reach the upstream too).
AT_UPSTREAM = frozenset({SUBMITTING, UPSTREAM_QUEUED, RUNNING})


class IllegalTransition(Exception):
    pass


def state_of(status: str, stage: str) -> JobState:
    return JobState(Status(status), Stage(stage))


def check_transition(current: JobState, target: JobState) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current} -> {target} is not an allowed transition")
