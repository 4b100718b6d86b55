"""bgremove: remove an image's background through Pixazo, Apiframe, GMI Cloud, fal.ai,
Runflow (all five resell Bria RMBG 2.0) or Bria's own API, behind one interface.

A worked example of a client library tested against the rmbg-emulator; see ``examples/README.md``.

    from bgremove import create_remover

    with create_remover("fal", api_key) as remover:
        cutout = remover.remove("https://example.com/cat.jpg")   # RGBA PNG, checked
"""

from __future__ import annotations

from .errors import (
    AllVendorsFailed,
    AuthenticationError,
    BackgroundRemovalError,
    InvalidInput,
    InvalidResult,
    InvalidSignature,
    JobFailed,
    JobTimeout,
    MalformedWebhook,
    PaymentRequired,
    RateLimited,
    RequestRejected,
    UnknownJob,
    VendorError,
    VendorUnavailable,
    WebhookError,
)
from .failover import FailoverRemover
from .png import Cutout, data_uri, verify_cutout
from .timing import (
    Backoff,
    Clock,
    PollPolicy,
    RetryPolicy,
    SystemClock,
    VirtualClock,
    parse_retry_after,
)
from .vendors import (
    REGISTRY,
    VENDORS,
    ApiframeRemover,
    BackgroundRemover,
    BriaRemover,
    FalRemover,
    GmiCloudRemover,
    Job,
    JobStatus,
    PixazoRemover,
    RunflowRemover,
    Submission,
    create_remover,
)
from .webhooks import WebhookEvent, WebhookReceiver

__all__ = [
    "REGISTRY",
    "VENDORS",
    "AllVendorsFailed",
    "ApiframeRemover",
    "AuthenticationError",
    "BackgroundRemovalError",
    "BackgroundRemover",
    "Backoff",
    "BriaRemover",
    "Clock",
    "Cutout",
    "FailoverRemover",
    "FalRemover",
    "GmiCloudRemover",
    "InvalidInput",
    "InvalidResult",
    "InvalidSignature",
    "Job",
    "JobFailed",
    "JobStatus",
    "JobTimeout",
    "MalformedWebhook",
    "PaymentRequired",
    "PixazoRemover",
    "PollPolicy",
    "RateLimited",
    "RequestRejected",
    "RetryPolicy",
    "RunflowRemover",
    "Submission",
    "SystemClock",
    "UnknownJob",
    "VendorError",
    "VendorUnavailable",
    "VirtualClock",
    "WebhookError",
    "WebhookEvent",
    "WebhookReceiver",
    "create_remover",
    "data_uri",
    "parse_retry_after",
    "verify_cutout",
]
