"""A relay or a consumer as its own process, for the crash-injection test (killed with SIGKILL at random).

python plumbing_proc.py relay    --db URL --bootstrap HOST:PORT --prefix P
python plumbing_proc.py consumer --db URL --bootstrap HOST:PORT --prefix P --group G
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from ar_events_itest_support import TOPIC, TYPE, recorder

from ar_events.consumer import ConsumerRunner, stop_on_signals
from ar_events.db import make_engine, make_sessionmaker
from ar_events.relay import OutboxRelay
from ar_events.settings import ConsumerSettings, KafkaSettings, OutboxSettings


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["relay", "consumer"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--group", default="crash")
    parser.add_argument("--lease-ttl", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap, topic_prefix=args.prefix)
    engine = make_engine(args.db)
    sessions = make_sessionmaker(engine)
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        if args.role == "relay":
            relay = OutboxRelay(
                sessions, kafka, OutboxSettings(batch_size=200), name="crash-relay", lease_ttl=args.lease_ttl
            )
            await relay.run(stop)
        else:
            runner = ConsumerRunner(
                args.group,
                [TOPIC],
                sessions,
                {TYPE: recorder(args.group)},
                kafka,
                ConsumerSettings(batch_max_records=200),
            )
            await runner.run(stop)
            logging.info("consumer stopped cleanly: %s", runner.stats)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
