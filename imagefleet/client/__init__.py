"""The Python client of the imagefleet API: `ImageFleetClient` (sync) and
`AsyncImageFleetClient` (asyncio), typed from the protocol models (docs/client.md)."""

from imagefleet.client.aio import AsyncImageFleetClient
from imagefleet.client.retry import RetryPolicy
from imagefleet.client.sync import ApiError, ImageFleetClient, JobStillRunning, verify_webhook
from imagefleet.events_protocol import JobEvent, JobEventType

__all__ = [
    "ApiError",
    "AsyncImageFleetClient",
    "ImageFleetClient",
    "JobEvent",
    "JobEventType",
    "JobStillRunning",
    "RetryPolicy",
    "verify_webhook",
]
