"""The client against the emulator: the round trip per vendor, retries, 402, failed, stuck and
broken jobs. Every wait runs on the emulator's virtual clock (no test sleeps)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from bgremove import (
    VENDORS,
    AuthenticationError,
    BackgroundRemover,
    Backoff,
    InvalidResult,
    JobFailed,
    JobTimeout,
    PaymentRequired,
    PollPolicy,
    RateLimited,
    RequestRejected,
    RetryPolicy,
    RunflowRemover,
    VendorUnavailable,
    VirtualClock,
)
from emulator.testing.plugin import EmulatorHandle

# A virtual clock (the client's sleeps move it), three status reads per job (queued,
# processing, done) and GrabCut (no model weights; milliseconds on a 64 x 48 picture). Leave
# ``engine`` out to use the default engine.
pytestmark = pytest.mark.rmbg_emulator(virtual_clock=True, progression="polls:2",
                                       engine="grabcut")

MakeRemover = Callable[..., BackgroundRemover]
#: The journal's operation name of each vendor's submit.
SUBMIT = {"pixazo": "submit", "apiframe": "submit", "gmicloud": "submit",
          "fal": "submit.remove", "runflow": "submit", "bria": "submit"}
#: What each vendor's 402 says (docs/vendors/).
PAYMENT_WORDS = {"pixazo": "Your wallet does not have enough balance",
                 "apiframe": "(INSUFFICIENT_CREDITS)", "gmicloud": "insufficient balance",
                 "fal": "Exhausted balance", "runflow": "Insufficient credits",
                 "bria": "Payment Required"}


def submits(emulator: EmulatorHandle, vendor: str) -> list[Any]:
    """Statuses of ``vendor``'s submits in the journal, in order."""
    return [e["status"] for e in emulator.journal(vendor=vendor, operation=SUBMIT[vendor])]


@pytest.mark.parametrize("vendor", VENDORS)
def test_round_trip(vendor: str, make_remover: MakeRemover, rmbg_emulator: EmulatorHandle,
                    image_uri: str, image_size: tuple[int, int], clock: VirtualClock,
                    api_key: str) -> None:
    cutout = make_remover(vendor).remove(image_uri)  # the size is read from the input

    assert (cutout.vendor, cutout.size) == (vendor, image_size)
    with Image.open(io.BytesIO(cutout.png)) as png:
        assert png.mode == "RGBA"
        alpha = np.asarray(png)[:, :, 3]
    assert alpha[24, 32] > 0                       # the disc is kept
    assert alpha[1, 1] == 0                        # the background is gone
    assert 0.05 < cutout.foreground < 0.6
    rmbg_emulator.verify(vendor=vendor, operation=SUBMIT[vendor], api_key=api_key, count=1)
    rmbg_emulator.verify(vendor=vendor, operation="status", count=3)
    assert clock.sleeps == [1.0, 2.0]              # the poll backoff, nothing else
    rmbg_emulator.verify(status=429, count=0)


@pytest.mark.parametrize("vendor", VENDORS)
def test_429_waits_retry_after_then_succeeds(
        vendor: str, make_remover: MakeRemover, rmbg_emulator: EmulatorHandle, image_uri: str,
        image_size: tuple[int, int], clock: VirtualClock) -> None:
    rmbg_emulator.inject(vendor=vendor, operation=SUBMIT[vendor], status=429, retry_after=3,
                         times=2)

    cutout = make_remover(vendor).remove(image_uri, expected_size=image_size)

    assert cutout.size == image_size
    assert clock.sleeps[:2] == [3.0, 3.0]
    assert submits(rmbg_emulator, vendor)[:2] == [429, 429]
    rmbg_emulator.verify(vendor=vendor, operation=SUBMIT[vendor], status=429, count=2)
    # The emulator saw the client come back no earlier than Retry-After, every time.
    rmbg_emulator.verify(vendor=vendor, early_retry=True, count=0)
    entries = rmbg_emulator.journal(vendor=vendor, operation=SUBMIT[vendor])
    assert all(b["at"] - a["at"] >= 3 for a, b in itertools.pairwise(entries))


def test_the_journal_catches_a_client_that_comes_back_early(
        rmbg_emulator: EmulatorHandle, image_uri: str, api_key: str) -> None:
    """The check above can fail: a retry one second into a three-second Retry-After is
    flagged."""
    rmbg_emulator.inject(vendor="pixazo", operation="submit", status=429, retry_after=3,
                         times=1)
    headers = {"Ocp-Apim-Subscription-Key": api_key}
    with rmbg_emulator.client() as http:
        path = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"
        assert http.post(path, json={"image_url": image_uri}, headers=headers
                         ).headers["Retry-After"] == "3"
        rmbg_emulator.advance(1)
        assert http.post(path, json={"image_url": image_uri}, headers=headers
                         ).status_code == 202
    rmbg_emulator.verify(vendor="pixazo", early_retry=True, count=1)
    with pytest.raises(AssertionError, match="journal verify failed"):
        rmbg_emulator.verify(vendor="pixazo", early_retry=True, count=0)


def test_rate_limited_for_longer_than_the_client_waits(
        make_remover: MakeRemover, rmbg_emulator: EmulatorHandle, image_uri: str,
        image_size: tuple[int, int], clock: VirtualClock) -> None:
    rmbg_emulator.inject(vendor="fal", status=429, retry_after=600)
    remover = make_remover("fal", retry=RetryPolicy(max_retry_after_s=60))

    with pytest.raises(RateLimited) as info:
        remover.remove(image_uri, expected_size=image_size)

    assert info.value.retry_after == 600
    assert clock.sleeps == []
    rmbg_emulator.verify(vendor="fal", count=1)


def test_server_errors_and_dropped_connections_are_retried(
        make_remover: MakeRemover, rmbg_emulator: EmulatorHandle, image_uri: str,
        image_size: tuple[int, int], clock: VirtualClock) -> None:
    rmbg_emulator.inject(vendor="apiframe", operation="submit", connection="reset", times=1)
    rmbg_emulator.inject(vendor="apiframe", operation="status", status=503, times=2)

    cutout = make_remover("apiframe").remove(image_uri, expected_size=image_size)

    assert cutout.size == image_size
    assert submits(rmbg_emulator, "apiframe") == [None, 202]  # None: no answer at all
    statuses = [e["status"] for e in rmbg_emulator.journal(vendor="apiframe",
                                                            operation="status")]
    assert statuses == [503, 503, 200, 200, 200]
    # backoff 0.5 after the reset; 0.5, 1.0 after the 503s; then the poll backoff 1.0, 2.0
    assert clock.sleeps == [0.5, 0.5, 1.0, 1.0, 2.0]


def test_a_vendor_that_stays_down_raises_vendor_unavailable(
        make_remover: MakeRemover, rmbg_emulator: EmulatorHandle, image_uri: str,
        image_size: tuple[int, int], clock: VirtualClock) -> None:
    rmbg_emulator.inject(vendor="runflow", status=502)
    with pytest.raises(VendorUnavailable) as info:
        make_remover("runflow").remove(image_uri, expected_size=image_size)
    assert info.value.status == 502
    rmbg_emulator.verify(vendor="runflow", status=502, count=4)  # RetryPolicy(attempts=4)
    assert clock.sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("vendor", VENDORS)
def test_402_is_raised_at_once(vendor: str, make_remover: MakeRemover,
                               rmbg_emulator: EmulatorHandle, image_uri: str,
                               image_size: tuple[int, int], clock: VirtualClock,
                               api_key: str) -> None:
    rmbg_emulator.set_balance(api_key, 0)

    with pytest.raises(PaymentRequired) as info:
        make_remover(vendor).remove(image_uri, expected_size=image_size)

    assert (info.value.vendor, info.value.status) == (vendor, 402)
    assert PAYMENT_WORDS[vendor] in info.value.message
    assert submits(rmbg_emulator, vendor) == [402]  # never retried
    assert clock.sleeps == []


@pytest.mark.parametrize(("status", "error"), [(401, AuthenticationError),
                                               (403, AuthenticationError),
                                               (422, RequestRejected)])
def test_client_errors_are_not_retried(status: int, error: type[Exception],
                                       make_remover: MakeRemover,
                                       rmbg_emulator: EmulatorHandle, image_uri: str,
                                       image_size: tuple[int, int]) -> None:
    rmbg_emulator.inject(vendor="gmicloud", status=status, message="told you so")
    with pytest.raises(error, match="told you so"):
        make_remover("gmicloud").remove(image_uri, expected_size=image_size)
    rmbg_emulator.verify(vendor="gmicloud", count=1)


@pytest.mark.parametrize("vendor", VENDORS)
def test_failed_job(vendor: str, make_remover: MakeRemover, rmbg_emulator: EmulatorHandle,
                    image_uri: str, image_size: tuple[int, int]) -> None:
    rmbg_emulator.inject(vendor=vendor, job="failed", message="no subject found")

    with pytest.raises(JobFailed, match="no subject found") as info:
        make_remover(vendor).remove(image_uri, expected_size=image_size)

    job = rmbg_emulator.jobs(vendor=vendor)[0]
    assert info.value.job_id == job["id"]
    assert job["status"] == "failed"


def test_stuck_job_times_out(make_remover: MakeRemover, rmbg_emulator: EmulatorHandle,
                             image_uri: str, image_size: tuple[int, int],
                             clock: VirtualClock) -> None:
    rmbg_emulator.inject(vendor="pixazo", job="stuck")
    remover = make_remover("pixazo", poll=PollPolicy(backoff=Backoff(initial_s=1, max_s=8),
                                                     timeout_s=30))

    with pytest.raises(JobTimeout) as info:
        remover.remove(image_uri, expected_size=image_size)

    assert (info.value.waited_s, info.value.last_status) == (30.0, "PROCESSING")
    assert clock.sleeps == [1, 2, 4, 8, 8, 7]   # backoff, capped, cut at the deadline
    rmbg_emulator.verify(vendor="pixazo", operation="status", count=7)
    assert rmbg_emulator.jobs(vendor="pixazo")[0]["status"] == "processing"


def test_retried_submits_count_against_the_calls_timeout(
        make_remover: MakeRemover, rmbg_emulator: EmulatorHandle, image_uri: str,
        image_size: tuple[int, int], clock: VirtualClock) -> None:
    """``remove(timeout_s=T)`` answers within T of the call: the time its submit spent on
    retries comes out of the wait (found by ``fuzz-client``: three 500s, then a stuck job,
    overran the run's deadline)."""
    rmbg_emulator.inject(vendor="pixazo", operation="submit", status=500, times=3)
    rmbg_emulator.inject(vendor="pixazo", job="stuck")
    remover = make_remover("pixazo", poll=PollPolicy(backoff=Backoff(initial_s=1, max_s=8)))

    with pytest.raises(JobTimeout) as info:
        remover.remove(image_uri, expected_size=image_size, timeout_s=30)

    retried = sum(clock.sleeps) - info.value.waited_s
    assert retried > 0, clock.sleeps                    # the submit did wait between retries
    assert sum(clock.sleeps) == pytest.approx(30.0)     # and all of it fits in the 30 s
    assert info.value.waited_s == pytest.approx(30.0 - retried)


@pytest.mark.parametrize(("fault", "why"), [("truncated-png", "does not decode"),
                                            ("rgb-no-alpha", "mode RGB"),
                                            ("empty-alpha", "alpha is 0 everywhere")])
def test_a_broken_result_is_refused(fault: str, why: str, make_remover: MakeRemover,
                                    rmbg_emulator: EmulatorHandle, image_uri: str,
                                    image_size: tuple[int, int]) -> None:
    rmbg_emulator.inject(vendor="runflow", image=fault)
    with pytest.raises(InvalidResult, match=why):
        make_remover("runflow").remove(image_uri, expected_size=image_size)


def test_an_expired_result_is_refused(make_remover: MakeRemover,
                                      rmbg_emulator: EmulatorHandle, image_uri: str,
                                      image_size: tuple[int, int]) -> None:
    rmbg_emulator.inject(vendor="apiframe", job="expired")
    with pytest.raises(InvalidResult, match=r"cannot be downloaded: .*404"):
        make_remover("apiframe").remove(image_uri, expected_size=image_size)


def test_a_result_of_the_wrong_size_is_refused(make_remover: MakeRemover,
                                               image_uri: str) -> None:
    with pytest.raises(InvalidResult, match="size 64x48, the input is 640x480"):
        make_remover("pixazo").remove(image_uri, expected_size=(640, 480))


def test_the_client_also_takes_an_httpx_client(rmbg_emulator: EmulatorHandle,
                                               image_uri: str, clock: VirtualClock) -> None:
    """Bring your own ``httpx.Client`` (proxies, event hooks, transports): it is used as is."""
    seen: list[str] = []
    with httpx.Client(event_hooks={"request": [lambda r: seen.append(r.method)]},
                      verify=rmbg_emulator.ca_file or True) as http:
        remover = RunflowRemover("k", base_url=rmbg_emulator.url, http=http, clock=clock)
        remover.remove(image_uri)
        remover.close()                 # not ours: left open
        assert not http.is_closed
    assert seen == ["POST", "GET", "GET", "GET", "GET"]
