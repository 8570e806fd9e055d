"""An engine shared by several pages takes their requests in turns (web/src/workers/fair_queue.js),
and a page that closes in the middle of its stream frees the engine: the checks that
test_shared_engine.py (a shared worker, a leader tab) and test_extension.py (an extension's
pages) make alike. Each page holds `engine`, a client of the one engine."""

from __future__ import annotations

from typing import Any

MESSAGES = [{"role": "user", "content": "Say something about kilns."}]
# ignore_eos: the random-weight model could end early, and the streams below must run long.
REQUEST = {"messages": MESSAGES, "max_tokens": 8, "temperature": 0, "ignore_eos": True}
OTHER = {**REQUEST, "messages": [{"role": "user", "content": "And about glaze?"}]}

ASK = "async (r) => (await engine.chat.completions.create(r)).choices"
# Starts a long stream and reads one chunk of it: the engine's turn stays with this page.
HOLD = """async (r) => {
    const stream = await engine.chat.completions.create({...r, max_tokens: 100, stream: true});
    window.held = stream[Symbol.asyncIterator]();
    await held.next();
}"""
# Sends requests without awaiting them; `done` lists each one's index and reply id.
SEND = """(requests) => {
    window.done = [];
    window.answers = Promise.all(requests.map(async (r, i) => {
        const reply = await engine.chat.completions.create(r);
        done.push([i, reply.id]);
        return reply.choices;
    }));
}"""
# The answers of SEND, or a string if they do not come (a closed page held the engine): the
# bound only turns that hang into a failure that says so, far above the tiny model's answers
# (well under a second each), so that a loaded machine does not reach it.
ANSWERS = """Promise.race([answers,
    new Promise((resolve) => setTimeout(() => resolve("no answer in 120 s"), 120_000))])"""


def started(reply_id: str) -> int:
    """Where the request of `reply_id` came among the engine's requests."""
    return int(reply_id.rsplit("-", 1)[1], 36)


def check_rotation(first: Any, second: Any, third: Any, expected: dict[str, list]) -> None:
    """While the first page's stream holds the engine, the second page sends three requests,
    then the third page one: the third's runs after the second's first, not after all three.
    `expected`: the choices of REQUEST ("request") and OTHER ("other") asked alone."""
    first.evaluate(HOLD, REQUEST)
    second.evaluate(SEND, [REQUEST, REQUEST, OTHER])
    third.evaluate(SEND, [OTHER])
    first.evaluate("async () => { while (!(await held.next()).done); }")
    assert second.evaluate(ANSWERS) == [expected["request"]] * 2 + [expected["other"]]
    assert third.evaluate(ANSWERS) == [expected["other"]]
    # The order the engine ran them in: a reply id's last part counts the engine's requests (the
    # times the replies reach the pages would not do: a busy page reads its reply late).
    runs = sorted(
        [("second", i, started(id)) for i, id in second.evaluate("done")]
        + [("third", i, started(id)) for i, id in third.evaluate("done")],
        key=lambda run: run[2],
    )
    assert [(who, i) for who, i, _ in runs] == [
        ("second", 0),
        ("third", 0),
        ("second", 1),
        ("second", 2),
    ]


def check_closed_mid_stream(first: Any, second: Any, third: Any, expected: dict[str, list]) -> None:
    """The first page closes in the middle of its stream, the others' requests waiting: its
    request is aborted, its turn freed, and theirs run."""
    first.evaluate(HOLD, REQUEST)
    second.evaluate(SEND, [REQUEST])
    third.evaluate(SEND, [OTHER])
    first.close()
    assert second.evaluate(ANSWERS) == [expected["request"]]
    assert third.evaluate(ANSWERS) == [expected["other"]]
