"""ORM models, one file a table; importing this package registers them all on ``Base.metadata``."""

from app.models.api_key import ApiKey
from app.models.attempt import Attempt
from app.models.base import Base
from app.models.job import Job
from app.models.job_event import JobEvent
from app.models.ledger import LedgerEntry
from app.models.output import Output
from app.models.team import Team
from app.models.webhook_delivery import WebhookDelivery
from app.models.webhook_receipt import WebhookReceipt

__all__ = [
    "ApiKey",
    "Attempt",
    "Base",
    "Job",
    "JobEvent",
    "LedgerEntry",
    "Output",
    "Team",
    "WebhookDelivery",
    "WebhookReceipt",
]
