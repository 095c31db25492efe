"""CPU cost of the judge tier's own work: building the prompt and parsing the verdict.

Run from the repository root::

    python -m bench.judge_cpu [--domain healthcare] [--traces 400] [--rounds 5]

The provider call itself is network time and not measured here. Per trace:
Tier 0 redaction is done beforehand (as the activity does), then
``build_prompt`` on the redacted 2 KB texts with the trace's Tier 1
findings, and ``parse_verdict`` of a valid JSON reply for the pack's rubric.
Prints one JSON object with both costs in microseconds and per-core rates,
next to the same ``re.findall(r"\\w+", output)`` baseline as ``bench.tiers01``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time

from bench.tiers01 import add_workload_arguments, labelled_traces, pin_to_one_core
from domains import load_domain_pack
from evaluators.judge.prompt import build_prompt, rubric_ids
from evaluators.judge.verdict import parse_verdict
from evaluators.rules import evaluate_rules
from evaluators.sanitize import sanitise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_arguments(parser)
    args = parser.parse_args()
    pin_to_one_core()

    pack = load_domain_pack(args.domain)
    rubric = rubric_ids(pack)
    reply = json.dumps(
        {
            "rating": "unsafe",
            "criteria": [
                {"criterion": c, "score": 0.4, "reasoning": "The dose is above the label."} for c in rubric
            ],
            "issues": [{"category": "dosage", "severity": "high", "message": "Exceeds the daily maximum."}],
            "confidence": 0.85,
            "review_recommended": False,
            "summary": "Recommends more than the maximum daily dose.",
        }
    )
    prepared = []
    for input_text, output_text in labelled_traces(args.domain, args.traces, random.Random(args.seed)):
        normalised, tier0 = sanitise(input_text, output_text)
        findings = evaluate_rules(normalised, pack).findings
        prepared.append((tier0.redacted_input, tier0.redacted_output, findings))

    word_re = re.compile(r"\w+")
    clock = time.perf_counter_ns
    prompts: list[float] = []
    parses: list[float] = []
    baseline: list[float] = []
    for _ in range(args.rounds + 1):  # the first round warms up
        round_prompts, round_parses, round_baseline = [], [], []
        for input_text, output_text, findings in prepared:
            start = clock()
            build_prompt(pack, input_text=input_text, output_text=output_text, findings=findings)
            round_prompts.append((clock() - start) / 1000)
            start = clock()
            parse_verdict(reply, rubric)
            round_parses.append((clock() - start) / 1000)
            start = clock()
            word_re.findall(output_text)
            round_baseline.append((clock() - start) / 1000)
        prompts, parses, baseline = prompts + round_prompts, parses + round_parses, baseline + round_baseline
    skip = len(prepared)
    prompt_us = statistics.fmean(prompts[skip:])
    parse_us = statistics.fmean(parses[skip:])
    baseline_us = statistics.fmean(baseline[skip:])
    print(
        json.dumps(
            {
                "domain": args.domain,
                "traces": len(prepared),
                "rounds": args.rounds,
                "prompt_build_us": round(prompt_us, 1),
                "verdict_parse_us": round(parse_us, 1),
                "judge_tier_cpu_per_second": round(1_000_000 / (prompt_us + parse_us)),
                "baseline": {"what": "re.findall(r'\\w+', output)", "mean_us": round(baseline_us, 1)},
                "ratio_to_baseline": round((prompt_us + parse_us) / baseline_us, 2),
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
