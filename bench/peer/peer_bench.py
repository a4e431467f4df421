#!/usr/bin/env python3
"""The LangGraph side of `cargo xtask bench-peer`: the same graphs as ax's
(bench/src/workflows.rs), one StateGraph node per step, a durable SQLite
checkpointer (langgraph-checkpoint-sqlite) on a file, one thread id per execution.
Prints one JSON line with the same fields as `ax-bench ax-run`.

  python peer_bench.py --scenario chain40|chain1000|fan100|review
      [--executions N] [--mode seq|async] [--durability sync|async|exit] --dir DIR

The mock LLM step is the same on both sides: after the step's latency
(time.sleep / asyncio.sleep; 0 = instant), answer "ok: " + the first 60
characters of the prompt.
"""

import argparse
import asyncio
import json
import operator
import os
import sqlite3
import sys
import threading
import time
from importlib.metadata import version
from typing import Annotated, TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph


class Mock:
    """Counts calls and the time actually slept (sleeps overshoot a little)."""

    def __init__(self, latency_s):
        self.latency = latency_s
        self.slept = 0.0
        self.calls = 0
        self.lock = threading.Lock()

    def _count(self, slept):
        with self.lock:
            self.calls += 1
            self.slept += slept

    def call(self, prompt):
        slept = 0.0
        if self.latency > 0:
            t = time.perf_counter()
            time.sleep(self.latency)
            slept = time.perf_counter() - t
        self._count(slept)
        return "ok: " + prompt[:60]

    async def acall(self, prompt):
        slept = 0.0
        if self.latency > 0:
            t = time.perf_counter()
            await asyncio.sleep(self.latency)
            slept = time.perf_counter() - t
        self._count(slept)
        return "ok: " + prompt[:60]


# ----------------------------------------------------------------- the graphs
# Node functions are sync for SqliteSaver runs and async for AsyncSqliteSaver runs.


class ChainState(TypedDict):
    last: str


def chain_graph(n, mock, is_async):
    g = StateGraph(ChainState)
    for i in range(n):

        def prompt(state, i=i):
            return "s0: start" if i == 0 else f"s{i}: next {state['last']}"

        if is_async:

            async def node(state, prompt=prompt):
                return {"last": await mock.acall(prompt(state))}

        else:

            def node(state, prompt=prompt):
                return {"last": mock.call(prompt(state))}

        g.add_node(f"s{i}", node)
    g.add_edge(START, "s0")
    for i in range(1, n):
        g.add_edge(f"s{i - 1}", f"s{i}")
    g.add_edge(f"s{n - 1}", END)
    return g


class FanState(TypedDict, total=False):
    root: str
    results: Annotated[list, operator.add]
    joined: str


def fan_graph(width, mock, is_async):
    g = StateGraph(FanState)

    def root_prompt(_state):
        return "root: start"

    def worker_prompt(i):
        return lambda state: f"w{i}: {state['root']}"

    def join_prompt(state):
        return f"join: {len(state['results'])} results"

    def make(prompt, key, as_list):
        if is_async:

            async def node(state):
                out = await mock.acall(prompt(state))
                return {key: [out] if as_list else out}

        else:

            def node(state):
                out = mock.call(prompt(state))
                return {key: [out] if as_list else out}

        return node

    g.add_node("root", make(root_prompt, "root", False))
    workers = [f"w{i}" for i in range(width)]
    for i, w in enumerate(workers):
        g.add_node(w, make(worker_prompt(i), "results", True))
        g.add_edge("root", w)
    g.add_node("join", make(join_prompt, "joined", False))
    g.add_edge(START, "root")
    g.add_edge(workers, "join")  # waits for every worker
    g.add_edge("join", END)
    return g


class ReviewState(TypedDict, total=False):
    git_diff: str
    parse: str
    security: str
    quality: str
    aggregate: str


def review_graph(mock, is_async):
    g = StateGraph(ReviewState)
    prompts = {
        "parse-changes": ("parse", lambda s: f"Parse git diff and extract changed files: {s['git_diff']}"),
        "security-audit": ("security", lambda s: f"Audit these changes for vulnerabilities: {s['parse']}"),
        "quality-check": ("quality", lambda s: f"Run tests and check code quality: {s['parse']}"),
        "aggregate-results": (
            "aggregate",
            lambda s: f"Aggregate: security={s['security']}, quality={s['quality']}",
        ),
    }
    for name, (key, prompt) in prompts.items():
        if is_async:

            async def node(state, key=key, prompt=prompt):
                return {key: await mock.acall(prompt(state))}

        else:

            def node(state, key=key, prompt=prompt):
                return {key: mock.call(prompt(state))}

        g.add_node(name, node)
    g.add_edge(START, "parse-changes")
    g.add_edge("parse-changes", "security-audit")
    g.add_edge("parse-changes", "quality-check")
    g.add_edge(["security-audit", "quality-check"], "aggregate-results")
    g.add_edge("aggregate-results", END)
    return g


def review_diff(i):
    return f"diff --git a/src/f{i}.rs b/src/f{i}.rs\n+fn f{i}() {{}}"


# ----------------------------------------------------------------- running


def build(scenario, mock, is_async):
    if scenario == "chain40":
        return chain_graph(40, mock, is_async), 40
    if scenario == "chain1000":
        return chain_graph(1000, mock, is_async), 1000
    if scenario == "fan100":
        return fan_graph(100, mock, is_async), 102
    if scenario == "review":
        return review_graph(mock, is_async), 4
    raise SystemExit(f"unknown scenario {scenario}")


def inputs(scenario, i):
    if scenario == "review":
        return {"git_diff": review_diff(i)}
    if scenario == "fan100":
        return {"results": []}
    return {"last": ""}


def config(i, steps):
    # recursion_limit counts supersteps (25 by default): a 1,000-step chain needs more.
    return {"configurable": {"thread_id": f"t{i}"}, "recursion_limit": steps + 10}


def check(scenario, out):
    key = {"chain40": "last", "chain1000": "last", "fan100": "joined", "review": "aggregate"}[scenario]
    if not out.get(key, "").startswith("ok: "):
        raise SystemExit(f"the run did not finish: {out!r}"[:500])


def run_sync(scenario, db, executions, durability, mock):
    graph, steps = build(scenario, mock, False)
    with SqliteSaver.from_conn_string(db) as saver:
        saver.setup()
        app = graph.compile(checkpointer=saver)
        pragmas = {
            "synchronous": saver.conn.execute("PRAGMA synchronous").fetchone()[0],
            "journal_mode": saver.conn.execute("PRAGMA journal_mode").fetchone()[0],
        }
        start = time.perf_counter()
        for i in range(executions):
            out = app.invoke(inputs(scenario, i), config(i, steps), durability=durability)
            check(scenario, out)
        wall = time.perf_counter() - start
    return wall, pragmas


async def run_async(scenario, db, executions, durability, mock):
    graph, steps = build(scenario, mock, True)
    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        await saver.setup()
        app = graph.compile(checkpointer=saver)
        pragmas = {}
        for p in ("synchronous", "journal_mode"):
            async with saver.conn.execute(f"PRAGMA {p}") as cur:
                pragmas[p] = (await cur.fetchone())[0]
        start = time.perf_counter()

        async def one(i):
            out = await app.ainvoke(inputs(scenario, i), config(i, steps), durability=durability)
            check(scenario, out)

        await asyncio.gather(*(one(i) for i in range(executions)))
        wall = time.perf_counter() - start
    return wall, pragmas


def peak_rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def size(p):
    return os.path.getsize(p) if os.path.exists(p) else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="chain40")
    ap.add_argument("--executions", type=int, default=None)
    ap.add_argument("--mode", choices=["seq", "async"], default="seq")
    ap.add_argument("--durability", choices=["sync", "async", "exit"], default="sync")
    ap.add_argument("--latency-ms", type=float, default=None)
    ap.add_argument("--dir", default=".")
    ap.add_argument("--versions", action="store_true", help="print the versions and exit")
    a = ap.parse_args()
    versions = {
        p: version(p)
        for p in ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "langchain-core", "aiosqlite")
    }
    versions["python"] = sys.version.split()[0]
    versions["sqlite"] = sqlite3.sqlite_version
    if a.versions:
        print(json.dumps(versions))
        return
    executions = a.executions or (1000 if a.scenario == "review" else 1)
    if a.scenario != "review":
        executions = 1
    latency = a.latency_ms if a.latency_ms is not None else (10.0 if a.scenario == "chain40" else 0.0)
    os.makedirs(a.dir, exist_ok=True)

    # Warm up on a separate database (imports, graph compilation code paths).
    warm = Mock(0.0)
    with SqliteSaver.from_conn_string(os.path.join(a.dir, "warmup.db")) as saver:
        app = chain_graph(3, warm, False).compile(checkpointer=saver)
        for i in range(2):
            app.invoke({"last": ""}, config(i, 3), durability=a.durability)

    db = os.path.join(a.dir, "peer.db")
    mock = Mock(latency / 1000.0)
    if a.mode == "seq":
        wall, pragmas = run_sync(a.scenario, db, executions, a.durability, mock)
    else:
        wall, pragmas = asyncio.run(run_async(a.scenario, db, executions, a.durability, mock))
    c = sqlite3.connect(db)
    cps, cp_bytes = c.execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(checkpoint) + LENGTH(metadata)), 0) FROM checkpoints"
    ).fetchone()
    writes, writes_bytes = c.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM writes").fetchone()
    c.close()
    sync_names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    print(
        json.dumps(
            {
                "engine": "langgraph",
                "scenario": a.scenario,
                "durability": f"durability={a.durability}, synchronous={sync_names.get(pragmas['synchronous'], pragmas['synchronous'])}",
                "mode": a.mode,
                "executions": executions,
                "steps": mock.calls,
                "wallS": wall,
                "sleptS": mock.slept,
                "checkpointsWritten": cps,
                "checkpointsKept": cps,
                "checkpointBytes": cp_bytes,
                "writesRows": writes,
                "writesBytes": writes_bytes,
                "dbBytes": size(db),
                "walBytes": size(db + "-wal"),
                "peakRssKiB": peak_rss_kib(),
                "journalMode": pragmas["journal_mode"],
                "versions": versions,
            }
        )
    )


if __name__ == "__main__":
    main()
