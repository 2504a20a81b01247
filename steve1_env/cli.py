"""The ``steve1-env`` command."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steve1_env.errors import ConfigurationError, Steve1EnvError, Steve1EnvWarning
from steve1_env.files import parse_json
from steve1_env.precision import POLICY_PRECISIONS

DEMO_INSTRUCTIONS = ("chop a tree", "get dirt", "collect seeds")


def _demo(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import steve1_env  # noqa: F401  (registers the env ids)

    instructions = args.instruction or list(DEMO_INSTRUCTIONS)
    encoder, policy_kwargs, encoder_kwargs = _component_kwargs(args)
    env = gym.make(
        "Steve1Skill-v0",
        world=args.world,
        policy=args.policy,
        prompt_encoder=encoder,
        world_kwargs=_world_options(args.world_option),
        policy_kwargs=policy_kwargs,
        prompt_encoder_kwargs=encoder_kwargs,
        instruction=instructions[0],
        k=args.k,
        device=args.device,
    )
    solved = 0
    with env:
        _, info = env.reset(seed=args.seed)
        print(
            f"steve1-env demo: world={args.world} policy={args.policy} "
            f"prompt_encoder={encoder} seed={args.seed} k={args.k}"
        )
        episode_over = False
        for instruction in instructions:
            for attempt in range(1, args.tries + 1):
                _, _, terminated, truncated, info = env.step(instruction)
                outcome = "success" if info["is_success"] else info["reason"]
                fired = f" ({info['detector']})" if info["detector"] else ""
                print(
                    f"  {instruction!r} try {attempt}: {outcome}{fired} after {info['steps']} "
                    f"low-level steps"
                )
                episode_over = terminated or truncated
                if info["is_success"] or episode_over:
                    break
            solved += bool(info["is_success"])
            if episode_over:
                print(f"  episode ended: {info['reason']}")
                break
        inventory = ", ".join(f"{k}={v}" for k, v in sorted(info["inventory"].items()))
        print(
            f"result: {solved}/{len(instructions)} skills succeeded in {info['total_steps']} "
            f"low-level steps; inventory: {inventory or 'empty'}"
        )
    return 0


def _component_kwargs(args: argparse.Namespace) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Returns the prompt encoder and the policy and encoder kwargs the stack options ask for."""
    encoder = args.prompt_encoder or ("steve1" if args.policy == "steve1" else "hash")
    weights = {"weights": args.weights} if args.weights else {}
    policy_kwargs = dict(weights) if args.policy in ("steve1", "steve1-official") else {}
    encoder_kwargs = weights if encoder in ("steve1", "steve1-official") else {}
    if args.dtype is not None:
        if args.policy != "steve1":
            raise ConfigurationError(
                f"--dtype selects the native policy's precision; --policy {args.policy} has "
                "none. Use --policy steve1, or leave --dtype out."
            )
        policy_kwargs["dtype"] = args.dtype
    return encoder, policy_kwargs, encoder_kwargs


def _world_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs or ():
        name, sep, text = pair.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigurationError(
                f"--world-option takes NAME=VALUE (such as tree_density=0.05), got {pair!r}."
            )
        if text.lstrip()[:1] in ("[", "{"):  # a list or a mapping: JSON, bounded in depth
            options[name] = parse_json(
                text, f"--world-option {name}", 'Give JSON such as [48, 64] or {"a": 1}.'
            )
            continue
        try:
            options[name] = json.loads(text)
        except ValueError:
            options[name] = text  # plain words need no JSON quotes
    return options


def _eval(args: argparse.Namespace) -> int:
    from steve1_env.evaluation.runner import evaluate
    from steve1_env.evaluation.trial import RunSettings

    encoder, policy_kwargs, encoder_kwargs = _component_kwargs(args)
    if args.overlay and not args.video:
        raise ConfigurationError("--overlay draws on the videos: give --video too.")
    out = Path(args.out) if args.out else Path("results") / Path(args.task_set).stem
    settings = RunSettings(
        world=args.world,
        policy=args.policy,
        prompt_encoder=encoder,
        world_kwargs=_world_options(args.world_option),
        policy_kwargs=policy_kwargs,
        prompt_encoder_kwargs=encoder_kwargs,
        device=args.device,
        k=args.k,
        crash_retries=args.crash_retries,
        video_dir=str((out / "videos").resolve()) if args.video else None,
        overlay=args.overlay,
    )
    with _terminate_as_interrupt():
        result = evaluate(
            args.task_set,
            out,
            settings,
            trials=args.trials,
            max_steps=args.max_steps,
            horizon=args.horizon,
            baseline=args.baseline,
            tasks=args.tasks,
            resume=args.resume,
            retry_crashed=args.retry_crashed,
            executor=args.executor,
            workers=args.workers,
            address=args.address,
            cpus_per_actor=args.cpus_per_actor,
            gpus_per_actor=args.gpus_per_actor,
            envs_per_worker=args.envs_per_worker,
            progress=not args.quiet,
            allow_imports=args.allow_imports,
        )
    _print_summary(result.summary)
    for kind, path in result.reports.items():
        print(f"{kind} report: {path}")
    print(f"results: {result.directory / 'results.jsonl'} ({len(result.records)} trials)")
    if result.interrupted:
        print(
            f"interrupted: {result.missing} of {result.planned} trials not run yet; finish "
            "with the same command and --resume",
            file=sys.stderr,
        )
        return 130
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    """Prints the success table of a report summary."""

    def rate(row: dict[str, Any]) -> str:
        if row["success_rate"] is None:
            return "-"
        low, high = row["ci95"]
        return f"{100 * row['success_rate']:5.1f}%  [{100 * low:5.1f}, {100 * high:5.1f}]"

    rows = [(t["task"], t) for t in summary["tasks"]] + [("total", summary["totals"])]
    width = max(len(name) for name, _ in rows)
    print(f"{'task':{width}}  success  rate     95% CI           crashed")
    for name, row in rows:
        fraction = f"{row['successes']}/{row['judged']}"
        print(f"{name:{width}}  {fraction:>7}  {rate(row):24}  {row['crashes']}")
    baseline = (summary.get("baseline") or {}).get("totals")
    if baseline:
        fraction = f"{baseline['successes']}/{baseline['judged']}"
        print(f"unconditional baseline (apart from the rows above): {fraction}  {rate(baseline)}")
    if summary.get("metrics"):
        _print_metrics(summary["metrics"])


def _print_metrics(metrics: dict[str, Any]) -> None:
    """Prints each prompt's metric means, with the ratio to the unconditional baseline."""
    names = metrics["names"]
    prompts = metrics["prompts"]

    def label(prompt: dict[str, Any]) -> str:
        index = prompt["instruction_index"]
        return prompt["task"] if index == 0 else f"{prompt['task']}#{index}"

    def cell(prompt: dict[str, Any], condition: str, name: str) -> str:
        stats = prompt["conditions"].get(condition, {}).get("metrics", {}).get(name)
        if not stats or stats["mean"] is None:
            return "-"
        text = f"{stats['mean']:.2f}"
        ratio = prompt.get("ratio_to_baseline", {}).get(name, {}).get("ratio")
        return text if ratio is None or condition != "prompt" else f"{text} (x{ratio:.2f})"

    rows = [(label(p), [cell(p, "prompt", n) for n in names]) for p in prompts]
    rows = [row for row in rows if any(value != "-" for value in row[1])]
    baseline = metrics.get("baseline")
    if baseline:
        pooled = [baseline["metrics"].get(n, {}).get("mean") for n in names]
        # In parentheses: a task name cannot hold them, so no task's row is mistaken for it.
        rows.append(("(baseline)", ["-" if v is None else f"{v:.2f}" for v in pooled]))
    if not rows:
        return
    width = max(len("metric means"), *(len(name) for name, _ in rows))
    columns = [max(len(n), *(len(r[1][i]) for r in rows)) for i, n in enumerate(names)]
    print()
    print(
        f"{'metric means':{width}}  "
        + "  ".join(f"{n:>{w}}" for n, w in zip(names, columns, strict=True))
    )
    for name, values in rows:
        cells = "  ".join(f"{v:>{w}}" for v, w in zip(values, columns, strict=True))
        print(f"{name:{width}}  {cells}")
    if baseline:
        print("(xR: the prompt's mean over the unconditional baseline's on the same trials)")


def _report(args: argparse.Namespace) -> int:
    from steve1_env.evaluation.runner import report

    summary, paths = report(args.directory)
    _print_summary(summary)
    for kind, path in paths.items():
        print(f"{kind} report: {path}")
    return 0


def _clip_scorer(args: argparse.Namespace) -> Any:
    """The scorer of clips and run videos: MineCLIP's score of the instruction."""
    from steve1_env.prompt.mineclip_score import build_mineclip_scorer

    return build_mineclip_scorer(weights=args.weights, device=args.device).score_clip


def _calibrate(args: argparse.Namespace) -> int:
    from steve1_env.evaluation.calibration import calibrate
    from steve1_env.evaluation.calibration_report import write_calibration_report

    scorer = None if args.scores else _clip_scorer(args)
    report = calibrate(args.scores or args.source, scorer, instruction=args.instruction)
    paths = write_calibration_report(args.out, report)
    best = report.best
    print(
        f"threshold {best.threshold:.6g} (score >= threshold): F1 {best.f1:.3f}, precision "
        f"{best.precision:.3f}, recall {best.recall:.3f}; ROC AUC {report.roc.auc:.3f}"
    )
    for kind, path in paths.items():
        print(f"{kind} report: {path}")
    return 0


def _find_task(name: str, task_set: str | None, allow_imports: bool) -> tuple[str, Any]:
    """Returns the set and the `TaskSpec` named `name`: of `task_set`, else of a built-in set.

    Without a set, the built-in sets are searched in order, quick_harvest first.
    """
    from steve1_env.tasks.spec import builtin_task_sets, load_task_set

    if task_set is not None:
        sets = [load_task_set(task_set, allow_imports=allow_imports)]
    else:
        names = builtin_task_sets()
        first = [n for n in ("quick_harvest", "early_game", "paper") if n in names]
        sets = [load_task_set(n) for n in [*first, *(n for n in names if n not in first)]]
    for loaded in sets:
        for task in loaded.tasks:
            if task.name == name:
                return loaded.name, task
    known = sorted({task.name for loaded in sets for task in loaded.tasks})
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    where = f"task set {task_set!r}" if task_set is not None else "the built-in task sets"
    raise ConfigurationError(
        f"--task {name!r}: no such task in {where}.{hint} Tasks there: {', '.join(known)}."
    )


@dataclass(frozen=True)
class _RunPlan:
    """What `run` pursues: the flags, filled in from ``--task`` where they are not given."""

    instruction: str
    detector: Any  # None: the instruction's default detector
    world_options: dict[str, Any]
    max_steps: int
    seed: int
    visual_goal: str | None
    cond_scale: float | None
    task: str | None  # "set:name"


def _run_plan(args: argparse.Namespace) -> _RunPlan:
    from steve1_env.tasks.detectors import build_detector
    from steve1_env.tasks.spec import parse_detector

    if args.task_set is not None and args.task is None:
        raise ConfigurationError("--task-set names where --task is found: give --task NAME too.")
    task, label = None, None
    if args.task is not None:
        set_name, task = _find_task(args.task, args.task_set, args.allow_imports)
        label = f"{set_name}:{task.name}"
    instruction = args.instruction or (task.instructions[0] if task is not None else None)
    if not instruction:
        raise ConfigurationError(
            'Give the INSTRUCTION to pursue (e.g. "chop a tree"), or --task NAME for a task\'s.'
        )
    detector = None
    if args.success is not None:
        detector = parse_detector(
            args.success, instruction, "--success", allow_imports=args.allow_imports
        )
    elif task is not None:
        detector = build_detector(task.success, instruction)  # checked when the set loaded
    if task is None:
        return _RunPlan(
            instruction, detector, _world_options(args.world_option), args.max_steps or 3000,
            0 if args.seed is None else args.seed, args.visual_goal, args.cond_scale, None,
        )  # fmt: skip
    return _RunPlan(
        instruction,
        detector,
        {**task.world_options, **_world_options(args.world_option)},
        args.max_steps or task.max_steps,
        args.seed if args.seed is not None else (task.seeds[0] if task.seeds else task.seed),
        args.visual_goal or task.visual_goal,
        args.cond_scale if args.cond_scale is not None else task.cond_scale,
        label,
    )


def _run(args: argparse.Namespace) -> int:
    from steve1_env.env import Steve1SkillEnv
    from steve1_env.evaluation.video import FrameRecordingPolicy, VideoWriter
    from steve1_env.registry import POLICIES, WORLDS

    plan = _run_plan(args)
    instruction = plan.instruction
    encoder, policy_kwargs, encoder_kwargs = _component_kwargs(args)
    if args.overlay and not args.video:
        raise ConfigurationError("--overlay draws on the video: give --video FILE too.")
    writer = VideoWriter(args.video, overlay=args.overlay) if args.video else None
    if writer is not None:
        writer.check_writable()  # before the world starts, not after the episode
    # Built here rather than by the env so that the policy can be wrapped to record frames.
    world = WORLDS.make(args.world, **plan.world_options)
    policy: FrameRecordingPolicy | None = None
    try:
        policy = FrameRecordingPolicy(
            POLICIES.make(args.policy, world=world, device=args.device, **policy_kwargs)
        )
        policy.writer = writer
        with Steve1SkillEnv(
            world=world,
            policy=policy,
            prompt_encoder=encoder,
            prompt_encoder_kwargs=encoder_kwargs,
            instruction=instruction,
            success=plan.detector,
            k=args.k,
            max_low_level_steps=plan.max_steps,
            terminate_on_success=True,
            render_mode="rgb_array",
            device=args.device,
            mineclip_kwargs={"weights": args.weights} if args.weights != "random" else None,
        ) as env:
            options: dict[str, Any] = {}
            if plan.visual_goal:
                options = {"visual_goal": plan.visual_goal, "instruction": instruction}
                if plan.cond_scale is not None:
                    options["cond_scale"] = plan.cond_scale
            _, info = env.reset(seed=plan.seed, options=options)
            task = f" task={plan.task}" if plan.task else ""
            print(
                f"steve1-env run: {instruction!r}{task} world={args.world} policy={args.policy} "
                f"prompt_encoder={encoder} seed={plan.seed} k={args.k} "
                f"max_steps={plan.max_steps}"
            )
            print(f"  detector: {info['detector_spec'] or 'none (success is not judged)'}")
            done = False
            while not done:
                # "" keeps the current goal, the visual one included.
                _, _, terminated, truncated, info = env.step("")
                done = terminated or truncated
                inventory = ", ".join(f"{k}={v}" for k, v in sorted(info["inventory"].items()))
                fired = f" ({info['detector']})" if info["detector"] else ""
                print(
                    f"  step {info['high_level_steps']:3d}: {info['steps']:4d} low-level steps, "
                    f"{info['total_steps']:5d} in all, {info['reason']}{fired}; inventory: "
                    f"{inventory or 'empty'}"
                )
                policy.outcome = f"step: {info['reason']}{fired}"
                policy.mineclip_score = (info.get("mineclip") or {}).get("score")
            if writer is not None:
                policy.outcome = f"result: {info['reason']}{fired}"
                writer.write(env.render(), policy.caption(info["inventory"]))
            outcome = "succeeded" if info["is_success"] else f"did not succeed ({info['reason']})"
            print(f"result: {instruction!r} {outcome} after {info['total_steps']} steps")
        if writer is not None:
            path = writer.close()
            print(f"video: {path} ({writer.frames} frames)")
    finally:
        if writer is not None:
            writer.discard()  # a no-op once closed
        if policy is not None:
            policy.close()
        world.close()
    return 0 if info["is_success"] else 1


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Handles SIGTERM like Ctrl-C, so a killed evaluation still ends cleanly."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _weights(args: argparse.Namespace) -> int:
    from steve1_env import download
    from steve1_env.prompt import visual_prompts
    from steve1_env.weights import OFFICIAL_FILES, find_mirror, weights_dir

    hub = args.action == "download" and args.source == "hub" and not args.visual_prompts
    if args.revision is not None and not hub:
        # Ignored, it would fetch the official files instead of the revision asked for.
        raise ConfigurationError(
            "--revision pins a revision of the Hugging Face mirror: use it with "
            "`weights download --source hub`."
        )
    if hub and args.only:
        raise ConfigurationError(
            "--only picks official files; --source hub fetches the mirror's one file (the "
            "three models) and 2x.model: drop --only, or drop --source hub."
        )
    directory = weights_dir(args.dir)
    if args.action == "where":
        print(directory)
        for name in [*OFFICIAL_FILES.values(), visual_prompts.VISUAL_PROMPTS_FILE]:
            path = directory / name
            state = f"{path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "missing"
            print(f"  {name:18} {state}")
        mirror = find_mirror(directory)
        if mirror is not None:
            size = mirror.stat().st_size / 1e6
            print(f"  the Hub mirror {mirror} ({size:.1f} MB): read for any model file missing")
        return 0
    if args.action == "download" and args.visual_prompts:
        path = visual_prompts.download_visual_prompts(directory, progress=not args.quiet)
        print(f"the paper's visual prompts are in {path}")
        return 0
    if args.action == "download" and args.source == "hub":
        # The mirror's one file holds the three models; the architecture (2x.model, 581
        # bytes) is only on OpenAI's blob.
        mirror = download.download_hub(directory, revision=args.revision, progress=not args.quiet)
        print(f"the Hugging Face mirror is in {mirror}")
        for path in download.download_official(directory, ["2x.model"], progress=not args.quiet):
            print(f"downloaded {path}")
        return 0
    if args.action == "download":
        fetched = download.download_official(directory, args.only, progress=not args.quiet)
        for path in fetched:
            print(f"downloaded {path}")
        print(f"all official files are in {directory}")
        return 0
    statuses = download.verify(directory)
    prompts = visual_prompts.check_visual_prompts(directory)  # optional: missing is fine
    for status in [*statuses, prompts]:
        print(f"  {status.name:18} {status.detail}")
    bad = [s for s in statuses if not s.ok] + (
        [prompts] if prompts.present and not prompts.ok else []
    )
    print("all files verified" if not bad else f"{len(bad)} file(s) missing or corrupt")
    return 0 if not bad else 1


def _doctor(args: argparse.Namespace) -> int:
    from steve1_env.doctor import missing_pieces, report, run_checks

    required = args.require or []
    checks = run_checks(args.dir)
    print(in_cli_words(report(checks, required)))
    broken = any(check.broken for check in checks)
    return 1 if broken or missing_pieces(checks, required) else 0


def _pieces(text: str) -> list[str]:
    """Parses ``--require``'s comma list, refusing unknown pieces before anything is checked."""
    from steve1_env.doctor import PIECES

    # Each piece once, in order: "minerl,minerl" is one requirement, not two lines of output.
    pieces = list(dict.fromkeys(piece.strip() for piece in text.split(",") if piece.strip()))
    if not pieces:
        # An empty list (a shell variable left unset) would require nothing and pass.
        raise argparse.ArgumentTypeError(
            f"names no piece (got {text!r}); give one or more of {', '.join(PIECES)}, "
            "separated by commas"
        )
    for piece in pieces:
        if piece not in PIECES:
            close = difflib.get_close_matches(piece, list(PIECES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise argparse.ArgumentTypeError(
                f"unknown piece {piece!r}{hint}; the pieces are {', '.join(PIECES)}"
            )
    return pieces


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def _add_stack_options(parser: argparse.ArgumentParser, default_policy: str) -> None:
    parser.add_argument("--world", default="synthetic", help="world name (default: synthetic)")
    parser.add_argument(
        "--world-option",
        action="append",
        metavar="NAME=VALUE",
        help="a world argument, value as JSON (repeatable), e.g. tree_density=0.05",
    )
    parser.add_argument(
        "--policy",
        default=default_policy,
        help=f"policy name: steve1, scripted, random, steve1-official (default: {default_policy})",
    )
    parser.add_argument(
        "--prompt-encoder",
        help="prompt encoder name (default: steve1 with --policy steve1, else hash)",
    )
    parser.add_argument(
        "--weights",
        help="for the steve1 stack: a weights directory, or 'random' for untrained networks "
        "(default: $STEVE1_WEIGHTS_DIR, else ~/.cache/steve1_env/weights)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--dtype",
        choices=POLICY_PRECISIONS,
        help="the steve1 policy's precision (default: float32, exact); bfloat16-mixed is the "
        "fast CPU mode",
    )


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of ``steve1-env``."""
    from steve1_env import __version__

    parser = argparse.ArgumentParser(
        prog="steve1-env", description="STEVE-1 as a Gymnasium skill environment."
    )
    parser.add_argument("--version", action="version", version=f"steve1-env {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a short episode on the synthetic world and print the result",
        description="Pursue a few instructions in one episode and print what happened.",
    )
    demo.add_argument(
        "--instruction",
        action="append",
        help=f"an instruction to pursue (repeatable; default: {', '.join(DEMO_INSTRUCTIONS)})",
    )
    _add_stack_options(demo, default_policy="scripted")
    demo.add_argument("--seed", type=_non_negative, default=0, help="episode seed (default: 0)")
    demo.add_argument(
        "--k", type=_positive, default=200, help="low-level steps per try (default: 200)"
    )
    demo.add_argument(
        "--tries", type=_positive, default=3, help="tries per instruction (default: 3)"
    )
    demo.set_defaults(run=_demo)

    weights = commands.add_parser(
        "weights",
        help="download, verify or locate the official weight files",
        description="Manage the official STEVE-1 files (2x.model, steve1.weights, "
        "steve1_prior.pt, attn.pth) and, optionally, the paper's visual prompts "
        "(visual_prompts.npz) in the weights directory.",
    )
    weights.add_argument("action", choices=["download", "verify", "where"])
    weights.add_argument(
        "--dir",
        help="weights directory (default: $STEVE1_WEIGHTS_DIR, else ~/.cache/steve1_env/weights)",
    )
    weights.add_argument("--only", nargs="+", help="download only these file names")
    weights.add_argument("--quiet", action="store_true", help="no progress output")
    weights.add_argument(
        "--visual-prompts",
        action="store_true",
        help="download: fetch the paper's 11 visual prompts (visual_prompts.npz) instead of "
        "the official files",
    )
    weights.add_argument(
        "--source",
        choices=["official", "hub"],
        default="official",
        help="download: 'official' fetches the four files from their publishers (OpenAI, "
        "Google Drive); 'hub' fetches MineStudio's Hugging Face mirror (one file with the "
        "policy, MineCLIP and the prior; needs the hub extra; honours $HF_ENDPOINT) and "
        "2x.model",
    )
    weights.add_argument(
        "--revision",
        help="with --source hub: the mirror's branch, tag or commit hash to pin (default: main)",
    )
    weights.set_defaults(run=_weights)

    evaluate = commands.add_parser(
        "eval",
        help="run a task set many times and report success rates",
        description="Run every task x trial of a task set, append each finished trial to "
        "OUT/results.jsonl, and write report.json, report.md and report.html.",
    )
    evaluate.add_argument(
        "--task-set",
        default="quick_harvest",
        help="a built-in set (quick_harvest, early_game, paper) or a task file .yaml "
        "(default: quick_harvest)",
    )
    evaluate.add_argument("--tasks", nargs="+", help="run only these tasks of the set")
    evaluate.add_argument(
        "--allow-imports",
        action="store_true",
        help="let the task file import the modules its custom detectors name (runs their "
        "code: only for task files you trust as code)",
    )
    evaluate.add_argument(
        "--trials",
        type=_positive,
        help="trials per task instruction (default: the task set's)",
    )
    budget = evaluate.add_mutually_exclusive_group()
    budget.add_argument(
        "--max-steps", type=_positive, help="low-level steps per trial (default: the task's)"
    )
    budget.add_argument(
        "--horizon",
        type=_positive,
        help="run every trial for exactly N low-level steps, not stopping at success, and "
        "record its first success step and the paper's metrics (the paper: 3000)",
    )
    evaluate.add_argument(
        "--baseline",
        choices=["none", "unconditional", "both"],
        default="none",
        help="unconditional: run each trial with the zero goal instead of its prompt (the "
        "paper's unconditional agent, same seeds); both: run both (default: none)",
    )
    evaluate.add_argument("--out", help="run directory (default: results/<task set>)")
    evaluate.add_argument(
        "--resume", action="store_true", help="continue the run in --out, skipping recorded trials"
    )
    _add_stack_options(evaluate, default_policy="steve1")
    evaluate.add_argument(
        "--k", type=_positive, default=100, help="low-level steps per env step (default: 100)"
    )
    evaluate.add_argument(
        "--crash-retries",
        type=_non_negative,
        default=2,
        help="reruns of a trial whose world crashed (default: 2)",
    )
    evaluate.add_argument(
        "--executor",
        choices=["local", "processes", "ray"],
        default="local",
        help="local: one worker here; processes: parallel worker processes on this machine; "
        "ray: workers as Ray actors on a cluster; each worker hosts --envs-per-worker worlds "
        "(default: local)",
    )
    evaluate.add_argument(
        "--workers", type=_positive, help="parallel workers (processes: 2; ray: one per CPU)"
    )
    evaluate.add_argument(
        "--envs-per-worker",
        type=_positive,
        help="worlds each worker (local, process or Ray actor) hosts with ONE policy, batched "
        "into one policy call per tick; records do not depend on it (default: 1)",
    )
    evaluate.add_argument(
        "--retry-crashed",
        action="store_true",
        help="with --resume: run again the trials whose world crashed on every try",
    )
    evaluate.add_argument("--address", help="Ray cluster address, e.g. auto")
    evaluate.add_argument(
        "--cpus-per-actor", type=float, help="CPUs each Ray actor reserves (default: 1)"
    )
    evaluate.add_argument(
        "--gpus-per-actor",
        type=float,
        help="GPUs each Ray actor reserves (default: 0; e.g. 0.5 with --device cuda)",
    )
    evaluate.add_argument(
        "--video", action="store_true", help="record an mp4 of every trial under OUT/videos"
    )
    evaluate.add_argument(
        "--overlay",
        action="store_true",
        help="with --video: draw instruction, tick, outcome, inventory changes and MineCLIP "
        "score on the frames",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress output")
    evaluate.set_defaults(run=_eval)

    report = commands.add_parser(
        "report",
        help="rewrite a run's reports from its results.jsonl",
        description="Read DIR/results.jsonl and DIR/run.json and write the reports again.",
    )
    report.add_argument("directory", help="the run directory given to eval --out")
    report.set_defaults(run=_report)

    calibrate = commands.add_parser(
        "calibrate",
        help="find the score threshold that best separates labelled examples",
        description=(
            "Score labelled examples and report the score distribution per label, the ROC "
            "curve and the threshold maximising F1. SOURCE is a clips folder (positive/*.mp4, "
            "negative/*.mp4; needs --instruction) or an eval run directory recorded with "
            "--video (successes positive, failures negative, crashes left out). Thresholds "
            "hold only for the weights that produced the scores."
        ),
    )
    source = calibrate.add_mutually_exclusive_group(required=True)
    source.add_argument("source", nargs="?", help="clips folder or eval run directory")
    source.add_argument(
        "--scores",
        metavar="FILE",
        help='precomputed scores, JSON lines {"label": "positive"|"negative", "score": x}',
    )
    calibrate.add_argument(
        "--instruction",
        help="the instruction clips are scored for; for a run or scores file, keep only it",
    )
    calibrate.add_argument(
        "--out", default="calibration", help="report folder (default: ./calibration)"
    )
    calibrate.add_argument(
        "--weights",
        help="MineCLIP's attn.pth, or the folder holding it (default: the weights directory)",
    )
    calibrate.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    calibrate.set_defaults(run=_calibrate)

    run = commands.add_parser(
        "run",
        help="pursue one instruction for one episode, printing every step",
        description="Pursue one instruction (or a task's) until it succeeds or the step budget "
        "runs out. Success is judged by --success if given, else by the task's detector, else "
        "by the default detector of the instruction's skill kind.",
    )
    run.add_argument(
        "instruction",
        nargs="?",
        help='what to do, e.g. "chop a tree" (default with --task: the task\'s first)',
    )
    run.add_argument(
        "--success",
        metavar="DETECTOR",
        help="how success is judged, as a task file's success field in YAML or JSON: a skill "
        "kind such as wood, or e.g. '{type: inventory, items: dirt, count: 2}' (default: the "
        "task's, else the instruction's skill kind)",
    )
    run.add_argument(
        "--task",
        metavar="NAME",
        help="take the instruction, detector, world options, step budget and seed of this "
        "task (of --task-set, else of the first built-in set that has it: quick_harvest, "
        "early_game, paper); the other flags override them",
    )
    run.add_argument("--task-set", help="the built-in set or .yaml task file --task is taken from")
    run.add_argument(
        "--allow-imports",
        action="store_true",
        help="let --success or the task set import the modules its custom detectors name "
        "(runs their code)",
    )
    _add_stack_options(run, default_policy="steve1")
    run.add_argument("--seed", type=int, help="episode seed (default: the task's first, else 0)")
    run.add_argument(
        "--k", type=_positive, default=100, help="low-level steps per printed step (default: 100)"
    )
    run.add_argument(
        "--max-steps",
        type=_positive,
        help="low-level step budget (default: the task's, else 3000)",
    )
    run.add_argument("--video", help="write the low-level frames to this mp4 file")
    run.add_argument(
        "--overlay",
        action="store_true",
        help="with --video: draw instruction, tick, outcome, inventory changes and MineCLIP "
        "score on the frames",
    )
    run.add_argument(
        "--visual-goal",
        metavar="CLIP",
        help="pursue a clip instead of the text: a video file (its last 16 frames) or "
        "paper:<name>; INSTRUCTION then names it and picks its detector",
    )
    run.add_argument(
        "--cond-scale", type=float, help="guidance scale of the visual goal (default: 7.0)"
    )
    run.set_defaults(run=_run)

    from steve1_env.doctor import PIECES

    doctor = commands.add_parser(
        "doctor",
        help="report what is installed and usable, with fixes for what is not",
        description="Check torch and CUDA, Java 8 and xvfb-run (MineRL), the optional "
        "packages (MineRL, MineStudio, the official STEVE-1 package) and the weight files, "
        "printing a fix for each piece that is missing or broken. Exits 1 if a file present "
        "is damaged or a piece given to --require is missing, else 0. The synthetic world "
        "with --policy scripted (or --weights random) needs none of these pieces.",
        epilog="pieces: " + "; ".join(f"{name}: {what}" for name, what in PIECES.items()),
    )
    doctor.add_argument("--dir", help="weights directory to check")
    doctor.add_argument(
        "--require",
        type=_pieces,
        metavar="PIECE,...",
        help=f"exit 1 unless these pieces are usable: a comma list of {', '.join(PIECES)}",
    )
    doctor.set_defaults(run=_doctor)
    _add_logging_options(parser)
    return parser


# Library messages name Python arguments (``resume=True``); on the command line the same advice
# names the flags that set them. Tests keep every phrase present in the library's messages.
CLI_WORDING: tuple[tuple[str, str], ...] = (
    ("resume=True", "--resume"),
    (
        "steve1_env.download.download_hub fetches it from the Hugging Face Hub",
        "steve1-env weights download --source hub fetches it from the Hugging Face Hub",
    ),
    ("retry_crashed=True", "--retry-crashed"),
    ("allow_imports=True", "--allow-imports"),
    ("(out=)", "(--out)"),
    ("(tasks=)", "(--tasks)"),
    ("world (world_kwargs)", "world (--world-option)"),
    ("pass address=None", "drop --address"),
    ("address=", "--address"),
    ("cpus_per_actor=", "--cpus-per-actor"),
    ("gpus_per_actor=", "--gpus-per-actor"),
    ("executor='processes' (or 'ray')", "--executor processes (or ray)"),
    ("executor='ray'", "--executor ray"),
    ("(the `endpoint` argument or $HF_ENDPOINT)", "($HF_ENDPOINT)"),
    ("the `directory` argument", "`--dir DIR`"),
    ("the weights argument", "--weights"),
    (
        "prompt_encoder='steve1' (with prompt_encoder_kwargs={'weights': 'random'} to run offline)",
        "--prompt-encoder steve1 (with --weights random to run offline)",
    ),
    ("(instruction=)", "(--instruction)"),
    (
        "Pass success={instruction: detector} (see steve1_env.success).",
        "Give `steve1-env run` a detector with --success (a skill kind such as wood, or "
        "'{type: inventory, items: dirt}') or take a task's with --task NAME.",
    ),
    ("policy='scripted' (or weights='random')", "--policy scripted (or --weights random)"),
    ("world='synthetic'", "--world synthetic"),
    ("world='minerl'", "--world minerl"),
    ("world='minestudio'", "--world minestudio"),
    ("policy='steve1-official'", "--policy steve1-official"),
    ("policy='scripted' is an oracle", "--policy scripted is an oracle"),
    ("a pair (height, width) such as (128, 128)", "a pair [height, width] such as [128, 128]"),
    (
        "a directory holding it, or None for the weights directory",
        "a directory holding it, or no --weights for the weights directory",
    ),
    ("(steve1_env.registry.POLICIES.names() lists them)", "(--help lists them)"),
    ("prompt_encoder='steve1-official'", "--prompt-encoder steve1-official"),
    ("recorded (video_dir)", "recorded (eval --video)"),
    (
        "steve1_env.prompt.visual_prompts.download_visual_prompts()",
        "`steve1-env weights download --visual-prompts`",
    ),
    (
        "gym.make('Steve1Skill-v0', policy_kwargs={'weights': 'random'}, "
        "prompt_encoder_kwargs={'weights': 'random'})",
        "`--policy steve1 --weights random`",
    ),
    (
        "gym.make('Steve1Skill-v0', policy='scripted', prompt_encoder='hash')",
        "`--policy scripted --prompt-encoder hash`",
    ),
)
"""Library phrase -> what a command-line user types instead, applied by `in_cli_words`."""


def in_cli_words(message: str) -> str:
    """Returns a library message with the Python arguments it names replaced by their flags.

    Longer phrases are replaced first, so ``pass address=None`` is not read as ``address=``.
    """
    for phrase, words in sorted(CLI_WORDING, key=lambda pair: -len(pair[0])):
        message = message.replace(phrase, words)
    return message


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Prints the package's warnings as one line each, like its errors (no source line)."""
    original = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, Steve1EnvWarning):
            print(f"steve1-env: warning: {in_cli_words(str(message))}", file=sys.stderr)
        else:
            original(message, category, *args, **kwargs)

    with warnings.catch_warnings():  # restores showwarning afterwards
        warnings.showwarning = show
        yield


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
"""The names ``--log-level`` takes (any case)."""


def _add_logging_options(parser: argparse.ArgumentParser, at_top: bool = True) -> None:
    """Adds ``-v`` and ``--log-level`` to `parser` and to each of its (sub)commands.

    On a command they default to nothing at all, so that ``steve1-env -v eval`` and
    ``steve1-env eval -v`` both work and the command does not undo the top level's.
    """
    default: dict[str, Any] = {} if at_top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="log what the package does on stderr: -v for INFO, -vv for DEBUG",
        **({"default": 0} if at_top else default),
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        help=f"log records of LEVEL and above on stderr ({', '.join(LOG_LEVELS)})",
        **default,
    )
    for action in parser._actions:  # argparse keeps its subcommands here only
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):  # aliases: one parser
                _add_logging_options(command, at_top=False)


class _LogLines(logging.Handler):
    """Writes each record as a line on the current stderr, above any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        """Writes `record` through tqdm, so a live progress bar is redrawn below it."""
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _logging_to_stderr(args: argparse.Namespace) -> Iterator[None]:
    """Shows the package's log records on stderr at the level ``-v``/``--log-level`` ask.

    Nothing is shown without either (the package logs to a `logging.NullHandler`); only the
    ``steve1_env`` logger is configured, and it is restored afterwards.
    """
    verbose = getattr(args, "verbose", 0) or 0
    level_name = getattr(args, "log_level", None)
    if level_name is None and not verbose:
        yield
        return
    level = getattr(logging, level_name) if level_name else max(logging.DEBUG, 30 - 10 * verbose)
    logger = logging.getLogger("steve1_env")
    handler = _LogLines(level)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``steve1-env``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        with _warnings_as_lines(), _logging_to_stderr(args):
            return args.run(args)
    except Steve1EnvError as exc:
        print(f"steve1-env: error: {in_cli_words(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("steve1-env: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
