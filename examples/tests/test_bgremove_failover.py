"""Failover: from a vendor that keeps failing to the next one, and back after a rest."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bgremove import (
    AllVendorsFailed,
    BackgroundRemover,
    Backoff,
    FailoverRemover,
    PaymentRequired,
    RequestRejected,
    RetryPolicy,
    VendorUnavailable,
    VirtualClock,
)
from emulator.testing.plugin import EmulatorHandle

pytestmark = pytest.mark.rmbg_emulator(virtual_clock=True, progression="polls:2",
                                       engine="grabcut")

MakeRemover = Callable[..., BackgroundRemover]


def submit_statuses(emulator: EmulatorHandle, vendor: str) -> list[int | None]:
    """Statuses of ``vendor``'s submits in the journal."""
    return [e["status"] for e in emulator.journal(vendor=vendor, operation="submit")]


def test_failover_when_the_first_vendor_keeps_failing(
        make_remover: MakeRemover, rmbg_emulator: EmulatorHandle, image_uri: str,
        image_size: tuple[int, int], clock: VirtualClock) -> None:
    rmbg_emulator.inject(vendor="pixazo", operation="submit", status=503, times=4)
    pixazo = make_remover("pixazo", retry=RetryPolicy(attempts=2, backoff=Backoff(0.5)))
    failover = FailoverRemover([pixazo, make_remover("apiframe")], trip_after=2, rest_s=300,
                               clock=clock)

    # 1st and 2nd call: Pixazo answers 503 twice each time; Apiframe does the job.
    for _ in range(2):
        assert failover.remove(image_uri, expected_size=image_size).vendor == "apiframe"
    assert submit_statuses(rmbg_emulator, "pixazo") == [503, 503, 503, 503]
    assert failover.health["pixazo"].failures == 2

    # Two failures in a row: Pixazo rests; the 3rd call does not even try it.
    assert [r.vendor for r in failover.available()] == ["apiframe"]
    assert failover.remove(image_uri, expected_size=image_size).vendor == "apiframe"
    assert submit_statuses(rmbg_emulator, "pixazo") == [503, 503, 503, 503]
    assert submit_statuses(rmbg_emulator, "apiframe") == [202, 202, 202]

    # After the rest Pixazo is tried again; it has recovered, and is first choice once more.
    clock.sleep(300)
    cutout = failover.remove(image_uri, expected_size=image_size)
    assert (cutout.vendor, cutout.size) == ("pixazo", image_size)
    assert failover.health["pixazo"].failures == 0
    assert submit_statuses(rmbg_emulator, "apiframe") == [202, 202, 202]


def test_every_vendor_failing_raises_all_vendors_failed(
        make_remover: MakeRemover, rmbg_emulator: EmulatorHandle, image_uri: str,
        image_size: tuple[int, int], api_key: str) -> None:
    rmbg_emulator.set_balance(api_key, 0)
    rmbg_emulator.inject(vendor="fal", status=500)
    failover = FailoverRemover([make_remover("runflow"), make_remover("fal")])

    with pytest.raises(AllVendorsFailed) as info:
        failover.remove(image_uri, expected_size=image_size)

    assert [(e.vendor, type(e)) for e in info.value.errors] == [
        ("runflow", PaymentRequired), ("fal", VendorUnavailable)]
    assert "runflow: PaymentRequired" in str(info.value)


def test_a_bad_request_does_not_fail_over(
        make_remover: MakeRemover, rmbg_emulator: EmulatorHandle, image_uri: str,
        image_size: tuple[int, int]) -> None:
    rmbg_emulator.inject(vendor="gmicloud", status=400, message="payload.image is not an image")
    failover = FailoverRemover([make_remover("gmicloud"), make_remover("pixazo")])

    with pytest.raises(RequestRejected, match=r"payload\.image is not an image"):
        failover.remove(image_uri, expected_size=image_size)

    rmbg_emulator.verify(vendor="pixazo", count=0)
    assert failover.health["gmicloud"].failures == 0
