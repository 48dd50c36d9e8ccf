"""`ingest/acked_publish.py` against real nats-servers (each line): a publish is answered as nats-py's
`js.publish` answers it (the stream sequence, the same sequence for a duplicate, the same error class
and codes for every refusal), many at once; no answer in time is a timeout that leaves nothing
behind, and an answer that comes later is dropped; a restart of the server costs nothing after it.
`DeadLetters` through it sends the smaller forms when the dead-letter stream refuses the full one;
the daemon's letters, nats-server restarted while they are published, are one per bad message.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js.api import StreamConfig

from tests.integration.daemon_harness import (
    daemon_config,
    database,
    reconnecting_client,
    running_daemon,
    wait_for,
    wait_for_checkpoint,
)
from tests.integration.test_bad_input import INSTRUMENT, INSTRUMENT_MAP, ORDER, TRADER, fresh_order, pack
from tests.integration.test_fuzz_ingest import DEAD_STREAM, read_dead_letters
from tradecache.bus import BusFault, classify_nats
from tradecache.dev.stack import NatsServer
from tradecache.errors import EventRejected, RejectReason
from tradecache.ingest.acked_publish import AckedPublisher
from tradecache.ingest.deadletter import DeadLetters, Form
from tradecache.ingest.intake import Delivery, Refused
from tradecache.model.identifiers import ClientOrderId
from tradecache.wire import Subjects

pytestmark = pytest.mark.integration
T = TypeVar("T")


@pytest.fixture
async def nc(nats_line_server: NatsServer) -> AsyncIterator[Any]:
    client = await nats.connect(nats_line_server.url)
    yield client
    await client.close()


async def _stream(nc: Any, **config: Any) -> tuple[str, str]:
    """A fresh stream of its own subject: (stream, subject)."""
    name = "ACK" + uuid.uuid4().hex[:10].upper()
    subject = f"acked.{name.lower()}"
    await nc.jetstream().add_stream(StreamConfig(name=name, subjects=[f"{subject}.>"], **config))
    return name, subject


async def test_publishes_at_once_are_answered_with_their_stream_sequences(nc: Any) -> None:
    stream, subject = await _stream(nc)
    publisher = AckedPublisher(nc)
    bodies = [f"letter {index}".encode() for index in range(300)]
    seqs = await asyncio.gather(
        *(publisher.publish(f"{subject}.x", body, {"Nats-Msg-Id": f"m-{index}", "X-Index": str(index)})
          for index, body in enumerate(bodies))
    )  # fmt: skip
    assert sorted(ack.seq for ack in seqs) == list(range(1, 301)) and not any(ack.duplicate for ack in seqs)
    assert publisher.in_flight == 0
    js = nc.jetstream()
    for seq in (seqs[0].seq, seqs[150].seq, seqs[299].seq):
        stored = await js.get_msg(stream, seq)
        index = int(stored.headers["X-Index"])
        assert stored.data == bodies[index] and stored.headers["Nats-Msg-Id"] == f"m-{index}"
    await publisher.close()


async def test_a_duplicate_is_answered_with_the_first_copy_s_sequence_as_js_publish_does(nc: Any) -> None:
    _, subject = await _stream(nc)
    publisher = AckedPublisher(nc)
    first = await publisher.publish(f"{subject}.x", b"one", {"Nats-Msg-Id": "same"})
    again = await publisher.publish(f"{subject}.x", b"one", {"Nats-Msg-Id": "same"})
    theirs = await nc.jetstream().publish(f"{subject}.x", b"one", headers={"Nats-Msg-Id": "same"})
    assert first.seq == again.seq == theirs.seq and again.duplicate and theirs.duplicate and not first.duplicate


async def _raised(publish: Any) -> BaseException:
    try:
        await publish
    except Exception as exc:  # compared below
        return exc
    raise AssertionError("the publish was answered without an error")


@pytest.mark.parametrize("case", ["no stream", "expected another stream", "over the stream's max_msg_size"])
async def test_each_refusal_raises_what_js_publish_raises(nc: Any, case: str) -> None:
    stream, subject = await _stream(nc, max_msg_size=64)
    target, headers, body = f"{subject}.x", {"Nats-Msg-Id": "r-1"}, b"small"
    if case == "no stream":
        target = f"nostream.{uuid.uuid4().hex}"
    elif case == "expected another stream":
        headers["Nats-Expected-Stream"] = "NOT" + stream
    else:
        body = b"x" * 200
    mine = await _raised(AckedPublisher(nc).publish(target, body, dict(headers)))
    theirs = await _raised(nc.jetstream().publish(target, body, headers=dict(headers)))
    assert type(mine) is type(theirs)
    assert (getattr(mine, "code", None), getattr(mine, "err_code", None)) == (
        getattr(theirs, "code", None), getattr(theirs, "err_code", None))  # fmt: skip
    expected = BusFault.UNAVAILABLE if case == "no stream" else BusFault.REFUSED
    assert classify_nats(mine) == expected


async def test_no_answer_in_time_is_a_timeout_and_a_late_answer_is_dropped(nc: Any) -> None:
    subject = f"slow.{uuid.uuid4().hex}"
    answers: list[asyncio.Task[None]] = []

    async def answer_late(msg: Any) -> None:
        async def later() -> None:
            await asyncio.sleep(0.3)
            await nc.publish(msg.reply, b'{"stream":"S","seq":7}')

        answers.append(asyncio.ensure_future(later()))

    await nc.subscribe(subject, cb=answer_late)
    publisher = AckedPublisher(nc, timeout=0.1)
    with pytest.raises(nats.errors.TimeoutError):
        await publisher.publish(subject, b"late")
    assert publisher.in_flight == 0
    await asyncio.gather(*answers)
    await nc.flush()
    await asyncio.sleep(0.05)  # the late answer arrives, finds nothing waiting, and is dropped
    assert publisher.in_flight == 0 and nc.is_connected
    assert classify_nats(nats.errors.TimeoutError()) == BusFault.UNAVAILABLE


async def test_answers_that_are_not_publish_acks_are_errors_not_sequences(nc: Any) -> None:
    subject = f"odd.{uuid.uuid4().hex}"
    replies = iter([b"not json", b"[1, 2]", b'{"stream":"S"}', b'{"stream":"S","seq":true}', b'{"error":"x"}',
                    b'{"error":{"code":503,"description":"x"}}'])  # fmt: skip

    async def answer(msg: Any) -> None:
        await nc.publish(msg.reply, next(replies))

    await nc.subscribe(subject, cb=answer)
    publisher = AckedPublisher(nc)
    for expected in (nats.js.errors.APIError,) * 5 + (nats.js.errors.ServiceUnavailableError,):
        with pytest.raises(expected):
            await publisher.publish(subject, b"?")
    assert publisher.in_flight == 0


async def _while_unavailable(attempt: Callable[[], Awaitable[T]], seconds: float = 10.0) -> T:
    """`attempt` retried while it fails as the daemon would retry (JetStream may need a moment to
    load its streams after a restart); any other failure, or the last one, is raised."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await attempt()
        except Exception as exc:  # only what the daemon would retry
            if classify_nats(exc) != BusFault.UNAVAILABLE or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_publishes_go_on_after_the_server_restarts(tmp_path: Any) -> None:
    with NatsServer(data_dir=tmp_path / "nats") as server:
        nc, reconnected = await reconnecting_client(server.url)
        try:
            _, subject = await _stream(nc)
            publisher = AckedPublisher(nc, timeout=2.0)
            assert (await publisher.publish(f"{subject}.x", b"before", {"Nats-Msg-Id": "b"})).seq == 1
            server.stop()
            server.start()
            await asyncio.wait_for(reconnected.wait(), timeout=15)
            seq = await _while_unavailable(lambda: publisher.publish(f"{subject}.x", b"after", {"Nats-Msg-Id": "a"}))
            assert seq.seq == 2 and publisher.in_flight == 0
        finally:
            await nc.close()


async def test_dead_letters_refused_in_full_are_sent_reduced_then_as_headers_only(nc: Any) -> None:
    dead_stream, subject = await _stream(nc, max_msg_size=1024)
    subjects = Subjects(subject, "T-1")  # letters go to <subject>.dead.T-1, in the stream above
    letters = DeadLetters(AckedPublisher(nc), subjects, "SOURCE", dead_stream, lambda: int(nc.max_payload))
    error = EventRejected(RejectReason.MALFORMED, "not msgpack")

    def refused(seq: int, body: bytes) -> Refused:
        return Refused(Delivery(f"{subject}.orders.T-1", body, {"Nats-Msg-Id": f"o-{seq}"}, seq, seq, 0, 0, ""),
                       "order", "?", error)  # fmt: skip

    assert await letters.publish(refused(1, b"\xc1 small")) == Form.FULL
    # Over the stream's max_msg_size in full; the reduced form cuts the body to the server's
    # max_payload, still over the stream's limit; the headers alone fit.
    assert await letters.publish(refused(2, b"\xc1" * 5000)) == Form.HEADERS_ONLY
    assert letters.reduced == 1 and letters.failed == 0
    stored = await nc.jetstream().get_msg(dead_stream, 2)
    assert stored.data in (b"", None)
    assert stored.headers["Tradecache-Stream-Seq"] == "2" and stored.headers["Tradecache-Original-Size"] == "5000"


async def test_the_daemon_s_letters_across_a_nats_restart_are_one_per_bad_message(
    tmp_path: Any, redis_server: Any
) -> None:
    """A flood of bad messages, nats-server restarted while their letters are being published:
    every bad message has exactly one letter (a letter whose ack was lost is published again and
    dropped by the stream's duplicate window), and an order published after it is written."""
    bad = 3000
    with NatsServer(data_dir=tmp_path / "nats") as server:
        config = daemon_config(redis_server.url, server.url, TRADER)
        nc = await nats.connect(server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
        try:
            async with running_daemon(config) as daemon:
                js = nc.jetstream()
                start = (await js.stream_info(DEAD_STREAM)).state.last_seq + 1
                await js.publish(INSTRUMENT, pack(INSTRUMENT_MAP))
                for index in range(bad):
                    await nc.publish(ORDER, b"\xc1 not msgpack %d" % index)
                await nc.flush()

                async def letters_stored() -> int:
                    return int((await js.stream_info(DEAD_STREAM)).state.last_seq) - start + 1

                deadline = asyncio.get_running_loop().time() + 30
                while await letters_stored() < 300:  # letters are being published: restart now
                    assert asyncio.get_running_loop().time() < deadline, "no letters published"
                    await asyncio.sleep(0.01)
                assert await letters_stored() < bad, "every letter was out before the restart"
                server.stop()
                server.start()
                await wait_for(lambda: nc.is_connected, timeout=15)
                order = fresh_order()
                for event in order:
                    last = await _while_unavailable(lambda event=event: js.publish(ORDER, pack(event)))
                await wait_for_checkpoint(redis_server.url, TRADER, last.seq, timeout=60)
                assert daemon.is_ready()
            letters = await read_dead_letters(js, f"tradecache.dead.{TRADER}", start, bad)
        finally:
            await nc.close()
    seqs = [int(letter.headers["Tradecache-Stream-Seq"]) for letter in letters]
    assert len(seqs) == bad and len(set(seqs)) == bad
    assert sorted(letter.data for letter in letters) == sorted(b"\xc1 not msgpack %d" % i for i in range(bad))
    loaded = database(redis_server.url, TRADER).load_order(ClientOrderId(order[0]["client_order_id"]))
    assert loaded is not None and loaded.event_count == len(order)
