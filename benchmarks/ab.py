"""A/B of two authproxy source trees on the P1 and P3 workloads, interleaved in one session.

    taskset -c 1 ../venv/bin/python benchmarks/ab.py --b-tree ../authproxy-old [--rounds 4]

Each daemon runs from its own tree (PYTHONPATH; make the other one with ``git worktree add
../authproxy-old REV``), on core 0, one loaded at a time, with the placement of
``benchmarks/run``. Each round, per daemon: wrk's requests/s (16 connections), then an
open-loop fixed rate (``--rate``) with authproxy's CPU per request, p50 and p99. Rounds
interleave, so the machine's noise hits both alike: a difference smaller than the spread
of the rounds is noise. P3: refresh-token chains (16 connections) for ``--seconds``, each
round continuing the chains of the round before.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import harness
from httpclient import Connection, fixed_rate


async def amain(options: argparse.Namespace) -> None:
    bench = harness.Bench(argparse.Namespace(log_level="warn", seconds=options.seconds))
    try:
        await bench.start_backend()
        bench.init_keys()
        daemons: dict[str, tuple[Any, int, str]] = {}
        chains: dict[str, tuple[Any, list[str]]] = {}
        for name, tree in (("A", options.a_tree), ("B", options.b_tree)):
            await bench.start_authproxy(Path(tree).resolve(), bench.json_backend_port)
            assert bench.authproxy is not None and bench.client is not None
            daemons[name] = (bench.authproxy, bench.authproxy_port, bench.token)
            chains[name] = (bench.client, await refresh_seeds(bench.client, bench.authproxy_port))
            harness.log(f"{name}: {tree}")
        for _, port, token in daemons.values():
            await bench.wrk(port, token, 1)  # warm-up
        for round_ in range(options.rounds):
            for name, (proc, port, token) in daemons.items():
                wrk = await bench.wrk(port, token, options.seconds)
                before = harness.cpu_seconds(proc.pid)
                result = await fixed_rate(
                    harness.HOST, port, bench.p1_request(port, token), options.rate,
                    options.seconds,
                )  # fmt: skip
                cpu_us = (harness.cpu_seconds(proc.pid) - before) * 1e6 / max(1, result.sent)
                summary = result.summary()
                refresh = {"per_s": 0.0}
                if options.p3:
                    client, seeds = chains[name]
                    refresh = await bench.refresh_chains(
                        harness.HOST, port, seeds, client.refresh_request
                    )
                    chains[name] = (client, bench.refresh_seeds)
                print(
                    f"round {round_ + 1} {name}: P1 {wrk['rps']:.0f} req/s; at {options.rate}/s "
                    f"{cpu_us:.0f} µs CPU/request, p50 {summary['p50_ms']:.2f} ms, "
                    f"p99 {summary['p99_ms']:.2f} ms, failed {result.failed}; "
                    f"P3 {refresh['per_s']:.0f} refresh grants/s",
                    flush=True,
                )
    finally:
        bench.stop_all()


async def refresh_seeds(client: Any, port: int, n: int = 16) -> list[str]:
    """``n`` refresh tokens, each from a real code redemption: the heads of P3's chains."""
    seeds = []
    for code in await client.codes(n):
        conn = await Connection.open(harness.HOST, port)
        response = await conn.request(client.code_request(code))
        conn.close()
        seeds.append(json.loads(response.body)["refresh_token"])
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a-tree", default=str(harness.REPO), help="default: this checkout")
    parser.add_argument("--b-tree", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rate", type=int, default=1900, help="open-loop requests/s")
    parser.add_argument("--no-p3", dest="p3", action="store_false", help="P1 only")
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
