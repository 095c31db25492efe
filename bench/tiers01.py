"""Throughput of Tiers 0 and 1 (sanitise + evaluate_rules) on one core.

Run from the repository root::

    python -m bench.tiers01 [--workload labelled|mix] [--domain healthcare] [--traces 400] [--rounds 5]

Two workloads of about 2 KB outputs, both deterministic:

- ``labelled`` (default): real-looking answers — each output joins
  randomly chosen outputs of the domain's traces in the labelled sets under
  ``tests/data`` (written as production traffic, half of them unsafe) until
  it reaches 2 KB; the input is the first one's question.
- ``mix``: a stress mix of generated clinical sentences (healthcare only)
  — safe advice, doses (some above the maximum), interacting drugs,
  personal data and emergencies — so dense that every rule kind of the
  healthcare pack has work on almost every trace (~4 findings each).

After a warm-up pass,
each trace is timed on its own; the script prints one JSON object with the
throughput, latency percentiles and, as a same-run baseline that makes the
figure comparable across machines, the time of one ``re.findall(r"\\w+",
output)`` pass over the same outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

import yaml

from domains import load_domain_pack
from evaluators.rules import evaluate_rules
from evaluators.rules.base import TraceScan
from evaluators.sanitize import sanitise

DRUGS = ["acetaminophen", "Tylenol", "ibuprofen", "Advil", "naproxen", "metformin", "sertraline"]
OTHER_DRUGS = ["warfarin", "lisinopril", "atorvastatin", "simvastatin", "clarithromycin", "lithium"]
LABELLED_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"
NAMES = ["Maria Lopez", "James Carter", "Aisha Khan", "Tom Becker", "Li Wei", "Sofia Rossi"]

SAFE = [
    "Rest, fluids and a light diet usually help while the body recovers from a viral illness. "
    "Most colds improve within seven to ten days without specific treatment.",
    "Keep a simple diary of when the symptoms start, how long they last and what seems to make them "
    "better or worse; it helps your clinician see the pattern at your next appointment.",
    "Regular physical activity, such as thirty minutes of brisk walking on most days, improves blood "
    "pressure, blood sugar and mood, and it is safe for most adults.",
    "Wash your hands often, avoid sharing cups and towels, and stay home until you have had no fever "
    "for at least twenty-four hours so that you do not pass the infection on.",
    "These symptoms are common and often have a harmless cause, but they can also point to several "
    "conditions, so it is worth having them checked by your doctor if they persist.",
    "Your pharmacist can review all of your medicines, including supplements and herbal remedies, and "
    "tell you whether any of them should not be taken together.",
]
DOSES = [
    "For pain or fever, adults can take {low} mg of {drug} every {hours} hours as needed. "
    "Do not exceed the maximum daily dose on the label, and ask your pharmacist if you are unsure.",
    "Take {count} tablets of {low} mg {drug} every {hours} hours with food.",
    "You can safely take up to {high} mg of {drug} a day.",
    "The usual starting dose of {drug} is {low} mg once daily, which your doctor may adjust.",
    "Never take more than {high} mg of {drug} in 24 hours; taking too much can cause liver damage.",
]
INTERACTIONS = [
    "Since you take {other}, you can use {drug} for the pain.",
    "{other} and {drug} interact, so do not combine them without talking to your doctor.",
]
EMERGENCIES = [
    "Chest pain that spreads to the arm or jaw can be a sign of a heart attack: call 911 immediately.",
    "If you notice facial droop or slurred speech, these are signs of a stroke.",
    "Difficulty breathing after a bee sting can be anaphylaxis; use your auto-injector and call 911.",
]
PII = [
    "Patient {name} (DOB: 03/14/1962), MRN 00482913, was seen on Monday.",
    "We will call you at (555) 123-4567 or write to {email} with the results.",
    "Your appointment is at 1200 Oak Street, Springfield, IL 62704.",
]
ADVICE = [
    "You should stop taking your blood pressure medication if you feel dizzy.",
    "Based on what you describe, you definitely have an ear infection.",
    "Please do not stop taking your antidepressant without speaking to your doctor first.",
    "I can't tell you which dose is right for you; please consult your pharmacist.",
]
QUESTIONS = [
    "I have had a headache for three days. What can I take?",
    "My 7-year-old has a fever of 38.5. How much medicine can I give?",
    "I take warfarin. Is it OK to take something for my back pain?",
    "What are the side effects of metformin?",
    "I have crushing chest pain and my left arm feels numb.",
    "Can you summarise my last visit? My email is maria.lopez@example.com.",
]


def make_trace(rng: random.Random, target_chars: int = 2000) -> tuple[str, str]:
    """One (input, output) pair of roughly ``target_chars`` output characters."""
    parts: list[str] = []
    while sum(len(part) + 1 for part in parts) < target_chars:
        roll = rng.random()
        drug = rng.choice(DRUGS)
        if roll < 0.40:
            parts.append(rng.choice(SAFE))
        elif roll < 0.65:
            parts.append(
                rng.choice(DOSES).format(
                    drug=drug,
                    low=rng.choice([200, 325, 500, 1000]),
                    high=rng.choice([3000, 4000, 6000]),
                    hours=rng.choice([3, 4, 6, 8]),
                    count=rng.choice([1, 2, 3]),
                )
            )
        elif roll < 0.75:
            parts.append(rng.choice(INTERACTIONS).format(other=rng.choice(OTHER_DRUGS), drug=drug))
        elif roll < 0.82:
            parts.append(rng.choice(EMERGENCIES))
        elif roll < 0.90:
            name = rng.choice(NAMES)
            email = name.lower().replace(" ", ".") + "@example.org"
            parts.append(rng.choice(PII).format(name=name, email=email))
        else:
            parts.append(rng.choice(ADVICE))
    separator = "\n\n" if rng.random() < 0.5 else " "
    return rng.choice(QUESTIONS), separator.join(parts)


def labelled_traces(
    domain: str, count: int, rng: random.Random, target_chars: int = 2000
) -> list[tuple[str, str]]:
    """``count`` (input, output) pairs whose outputs join labelled outputs of ``domain``."""
    pool = [
        trace
        for path in sorted(LABELLED_DIR.glob("*.yaml"))
        for trace in yaml.safe_load(path.read_text())["traces"]
        if trace["domain"] == domain and trace["output"].strip()
    ]
    if not pool:
        raise SystemExit(f"no labelled traces for domain {domain!r}")
    traces = []
    for _ in range(count):
        chosen = [rng.choice(pool)]
        while sum(len(t["output"]) + 2 for t in chosen) < target_chars:
            chosen.append(rng.choice(pool))
        traces.append((chosen[0]["input"], "\n\n".join(t["output"] for t in chosen)))
    return traces


def percentile(sorted_values: list[float], share: float) -> float:
    index = min(len(sorted_values) - 1, round(share * (len(sorted_values) - 1)))
    return sorted_values[index]


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every single-core benchmark of the tiers shares."""
    parser.add_argument("--domain", default="healthcare")
    parser.add_argument("--traces", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)


def pin_to_one_core() -> None:
    """The figure is per core, and pinning keeps the scheduler from moving
    the process between cores mid-measurement."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=["labelled", "mix"], default="labelled")
    parser.add_argument(
        "--without-time-limits",
        action="store_true",
        help="run pack regexes without their time limit, to measure what the limit costs",
    )
    add_workload_arguments(parser)
    args = parser.parse_args()
    pin_to_one_core()
    if args.without_time_limits:
        # Each regex call with a time limit reads the process CPU clock.
        TraceScan.time_left = lambda self: None  # type: ignore[method-assign,assignment,return-value]

    rng = random.Random(args.seed)
    if args.workload == "mix":
        traces = [make_trace(rng) for _ in range(args.traces)]
    else:
        traces = labelled_traces(args.domain, args.traces, rng)
    pack = load_domain_pack(args.domain)
    word_re = re.compile(r"\w+")

    def tiers01(input_text: str, output_text: str) -> int:
        trace, _ = sanitise(input_text, output_text)
        return len(evaluate_rules(trace, pack).findings)

    # Warm-up: caches, lazily compiled internals, branch predictors.
    findings = sum(tiers01(i, o) for i, o in traces)
    for _, output in traces:
        word_re.findall(output)

    timings: list[float] = []
    baseline: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(args.rounds):
        for input_text, output_text in traces:
            start = clock()
            tiers01(input_text, output_text)
            timings.append((clock() - start) / 1000)
        for _, output_text in traces:
            start = clock()
            word_re.findall(output_text)
            baseline.append((clock() - start) / 1000)

    timings.sort()
    mean_us = statistics.fmean(timings)
    baseline_mean_us = statistics.fmean(baseline)
    result = {
        "workload": args.workload,
        "time_limits": not args.without_time_limits,
        "domain": args.domain,
        "pack_rules": len(pack.rules),
        "traces": len(traces),
        "rounds": args.rounds,
        "mean_output_chars": round(statistics.fmean(len(o) for _, o in traces)),
        "findings_per_trace": round(findings / len(traces), 2),
        "traces_per_second": round(1_000_000 / mean_us),
        "mean_us": round(mean_us, 1),
        "p50_us": round(percentile(timings, 0.50), 1),
        "p99_us": round(percentile(timings, 0.99), 1),
        "baseline": {"what": "re.findall(r'\\w+', output)", "mean_us": round(baseline_mean_us, 1)},
        "ratio_to_baseline": round(mean_us / baseline_mean_us, 1),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
