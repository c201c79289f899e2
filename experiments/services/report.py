"""Sections of experiments/services/results.md, rendered from the newest record of each ``records/<name>.jsonl``.

``metalab tables`` calls these functions for the file's ``<!-- metalab:render ... -->`` markers (see
:mod:`metalab.report.tables`) and ``metalab tables --check`` (a test) fails when the page is not what the
records give. Each function takes one record (:mod:`metalab.report.records`) and returns Markdown lines.
"""

from __future__ import annotations


def _env(record: dict) -> str:
    settings = record.get("settings", {})
    dirty = "-dirty" if record.get("dirty") else ""
    return (
        f"`{record['command']}` at commit `{record['commit']}{dirty}`, {settings.get('started', record['date'])}, "
        f"CPU {record['cpu']}, cores {settings.get('cpu_affinity')}, load average "
        f"{', '.join(f'{x:.1f}' for x in record['load_average'])}"
    )


def sequential(record: dict) -> list[str]:
    f = record["figures"][0]
    lines = [
        "## Experiment engine under continuous monitoring\n",
        f"{f['experiments']} simulated experiments per row, each analysed after every outcome up to "
        f"{f['horizon_outcomes']} outcomes (alpha {f['alpha']}, mixture_scale {f['mixture_scale']}, "
        f"min_samples_per_variant {f['min_samples_per_variant']}, {f['allocation']} allocation).\n",
        "| scenario | means | what | rate | 95% CI | mean outcomes to stop (rejections) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in f["scenarios"].items():
        stop = row["mean_stopping_time_of_rejections"]
        lines.append(
            f"| {name} | {row['means']} | {row['kind'].replace('_', ' ')} | {row['rejection_rate']:.3f} | "
            f"[{row['rejection_rate_ci95'][0]:.3f}, {row['rejection_rate_ci95'][1]:.3f}] | "
            f"{'-' if stop is None else f'{stop:.0f}'} |"
        )
    lines.append(f"\nRecord: {_env(record)}.\n")
    return lines


def bandits(record: dict) -> list[str]:
    f = record["figures"][0]
    lines = [
        "## Thompson sampling and UCB1 against MABWiser\n",
        f"Bernoulli arms {f['means']}, {f['pulls']} pulls; metalab {f['runs']} runs, {f['library']} "
        f"{f['library_runs']} runs. Mean cumulative regret (95% CI of the final value); "
        "R(T)/R(T/2) is 2 for linear regret.\n",
        "| policy | implementation | R(1000) | R(5000) | R(T) | 95% CI | R(T)/R(T/2) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for policy in ("thompson", "ucb"):
        for impl in ("ours", "mabwiser"):
            s = f[policy][impl]
            at = s["mean_at"]
            lines.append(
                f"| {policy} | {'metalab' if impl == 'ours' else 'MABWiser'} | {at.get('1000', float('nan')):.1f} | "
                f"{at.get('5000', float('nan')):.1f} | {s['final_mean']:.1f} | [{s['final_ci95'][0]:.1f}, "
                f"{s['final_ci95'][1]:.1f}] | {s['ratio_T_over_half_T']:.2f} |"
            )
        lines.append(
            f"| {policy} | Welch t-test of final regret (metalab - MABWiser) | | | "
            f"t = {f[policy]['welch_t_final']:.2f} | "
            f"p = {f[policy]['welch_p_final']:.3f} | |"
        )
    lines.append(
        f"\nUniform allocation would give R(T) = {f['thompson']['ours']['uniform_would_be']:.0f}. "
        "![regret](bandit_regret.png)\n\nRecord: " + _env(record) + ".\n"
    )
    return lines


def trust(record: dict) -> list[str]:
    f = record["figures"][0]
    r, b, p = f["ranking"], f["turned_bad"], f["patterns"]
    d = b["outcomes_until_below_threshold"]
    return [
        "## Trust and patterns (simulated agents with known accuracies)\n",
        f"- Ranking: {len(r['accuracies'])} agents, accuracies {r['accuracies'][0]}..{r['accuracies'][-1]}, "
        f"{r['outcomes_per_agent']} outcomes each, {r['seeds']} seeds: Spearman(trust, true accuracy) mean "
        f"{r['spearman']['mean']:.3f}, min {r['spearman']['min']:.3f}; >= 0.9 in "
        f"{100 * r['share_of_seeds_at_least_0.9']:.0f}% of seeds.",
        f"- Turned bad: accuracy {b['good']} for {b['outcomes_before']} outcomes, then {b['bad']}: trust fell to the "
        f"threshold ({f['trust_config']['threshold']}) after median {d['median']:.0f}, 95th percentile {d['p95']:.0f}, "
        f"at most {d['max']:.0f} outcomes ({b['seeds']} seeds; never within 500: {b['never_within_500']}).",
        f"- Patterns: {p['planted']} planted, {p['seeds']} seeds, discovered on {p['train_subjects']} subjects, "
        f"scored on "
        f"{p['test_subjects']} held-out subjects: precision mean {p['precision']['mean']:.3f} "
        f"(min {p['precision']['min']:.3f}), "
        f"recall mean {p['recall']['mean']:.3f} (min {p['recall']['min']:.3f}), held-out accuracy mean "
        f"{p['accuracy']['mean']:.3f} (min {p['accuracy']['min']:.3f}), coverage mean {p['coverage']['mean']:.3f} "
        f"(min {p['coverage']['min']:.3f}). Spurious patterns seen: {', '.join(p['spurious_seen']) or 'none'}; "
        f"missed: {', '.join(p['missed_seen']) or 'none'}.",
        f"\nRecord: {_env(record)}.\n",
    ]


def reliability(record: dict) -> list[str]:
    lines = [
        "## Reliability and load on a live server\n",
        "| backend | schemathesis (not_a_server_error) | outcomes | stored | lost (acknowledged missing) "
        "| duplicates | "
        "acknowledged/s | p50 ms | p99 ms | SIGKILL run: stored / expected, lost, duplicates |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for backend, r in record["figures"][0]["backends"].items():
        if "skipped" in r:
            lines.append(f"| {backend} | skipped: {r['skipped']} | | | | | | | | |")
            continue
        st = r.get("schemathesis", {})
        load, kill = r["load"], r["sigkill"]
        lat = load["latency_ms_first_attempt"]
        lines.append(
            f"| {backend} | {'passed' if st.get('passed') else 'FAILED'} "
            f"({st.get('max_examples')} examples/operation) | "
            f"{load['outcomes']} | {load['stored']} | {load['acknowledged_missing']} | {load['duplicates']} | "
            f"{load['acknowledged_per_second']} | {lat['p50']:.1f} | {lat['p99']:.1f} | "
            f"{kill['stored']} / {kill['expected']}, {kill['acknowledged_missing']}, {kill['duplicates']} "
            f"(killed after {kill['acknowledged_when_killed']} acknowledged) |"
        )
    lines.append(
        f"\n8 client threads, 5% of requests resent with the same Idempotency-Key. Record: {_env(record)}. "
        f"Busy processes at the end: {'; '.join(record['settings']['busy_processes_at_end'][:4])}.\n"
    )
    return lines


def _share(row: dict) -> str:
    return f"{row['share']:.2f} [{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}] ({row['count']}/{row['of']})"


def adaptive(record: dict) -> list[str]:
    f = record["figures"][0]
    new, old, aa, regret = (
        f["best_arm_rule"],
        f["previous_rule_control_comparisons"],
        f["aa_best_arm_rule"],
        f["regret"],
    )
    lines = [
        "## Bandit-allocated experiments that decide (issue 38)\n",
        f"Thompson allocation, Bernoulli arms {f['means']}, {f['pulls']} pulls, {f['runs']} runs, alpha {f['alpha']}, "
        "decisions after every outcome. Shares with Wilson 95% CI.\n",
        "| decision rule | decided | named the best arm | named a wrong arm | mean outcomes to decide |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, row in (
        ("an arm beats every other arm (engine, adaptive allocation)", new),
        ("previous: a variant beats the control", old),
    ):
        stop = row["mean_outcomes_to_decision"]
        lines.append(
            f"| {label} | {_share(row['decided'])} | {_share(row['correct'])} | {_share(row['wrong'])} | "
            f"{'-' if stop is None else f'{stop:.0f}'} |"
        )
    e, p = regret["engine_thompson"], regret["plain_thompson"]
    lines += [
        f"\nA/A ({aa['means']}, {f['aa_runs']} runs, same allocation and rule): false decisions {_share(aa['false'])}.",
        f"Regret over {f['pulls']} pulls: engine's Thompson {e['mean']:.1f} [{e['ci95'][0]:.1f}, {e['ci95'][1]:.1f}], "
        f"plain Beta-Bernoulli Thompson {p['mean']:.1f} [{p['ci95'][0]:.1f}, {p['ci95'][1]:.1f}] "
        f"(Welch t = {regret['welch_t']:.2f}, p = {regret['welch_p']:.2f}). The previous rule's winner only "
        "beat the control; the engine's rule names the best arm, a stronger claim that needs the 0.08 arm to "
        "beat the 0.06 arm too.",
        f"\nRecord: {_env(record)}.\n",
    ]
    return lines
