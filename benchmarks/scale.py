"""A fast start on a big folder: the time from `python -m tfresnet.finetune`'s start to its first
training step, and its peak memory, on folders of 10,000 and 100,000 small JPEGs, first run and
`--resume`, against `keras.utils.image_dataset_from_directory`'s set-up on the same folders.

For each folder (photo-like 64x64 JPEGs, quality 90, in 4 class folders; written in a temporary
folder, then left 3 s, so that every file is older than the 2 s the kept results ask of a file;
the files are in the page cache for every variant alike):

(a) the command, in a fresh process: `python -m tfresnet.finetune --data-dir F --backbone
    resnet-tiny --weights none --image-size 64 --batch-size 32 --head-epochs 1 --epochs 0
    --output-dir O`, timed from its start to the end of its first training step (the first
    progress line Keras prints, `1/N`), then killed: Python and TensorFlow start-up, the
    listing, the file check, the dataset check (duplicates, leakage), the split, the pipeline,
    the model, and the first step (its tracing included). Its peak memory is the process's
    `ru_maxrss` (`os.wait4`). First run: an empty cache folder (`TFRESNET_CACHE_DIR`); then
    `--resume` of that killed run, which reads the results the first run kept. Each pair runs
    `--repeats` times (2), a new output and cache folder each time; the fastest of each is kept
    (other processes share this machine: every line gives the load average and every run).
(b) the same command, first run and `--resume`, on a folder of 200 images: the start-up that
    does not depend on the data (imports, model, tracing), subtracted from (a) to give the
    set-up that does ("data set-up").
(c) `keras.utils.image_dataset_from_directory(F, image_size=(64, 64), batch_size=32,
    validation_split=0.2, subset="both", seed=0)`, in a fresh process, timed from its start to
    its first training batch (and the call with its first batch alone), and its peak memory
    (the fastest of `--repeats` runs): a listing and a split, no check of the files (a bad file
    stops an epoch, no duplicate or leakage is looked for) and no model.
(d) one epoch's decoding at the run's image size: the run's own training pipeline
    (`from_folder(F, image_size=64, batch_size=32, seed=0).train`: a random crop decoded from
    each JPEG, resized to 64 px, flipped), iterated once in a fresh process, its set-up not
    counted.

Goals, on 100,000 files: the first run's first step within 3x (d); a `--resume` of an
unchanged folder whose data set-up is within 10 s; peak memory within 10% from 10,000 to 100,000
files.

Usage:
    python benchmarks/scale.py            # 10,000 and 100,000 JPEGs (about 12 minutes on 2 cores)
    python benchmarks/scale.py --quick    # 2,000 and 10,000 JPEGs
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SIDE = 64
CLASSES = 4
BATCH = 32
SMALL = 200  # the folder whose run measures the start-up that does not depend on the data
COMMAND = ["--backbone", "resnet-tiny", "--weights", "none", "--image-size", str(SIDE)]
COMMAND += ["--batch-size", str(BATCH), "--head-epochs", "1", "--epochs", "0", "--seed", "0"]
FIRST_STEP = re.compile(r"^\s*1/\d+\s")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 and 10,000 JPEGs")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="default: 10000 100000")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of (a), (b) and (c) each, the fastest kept (default: 2)"
    )
    parser.add_argument("--child", choices=("peer", "epoch"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    return parser


# === The folders ===


def _write(task: tuple[str, int, int]) -> None:
    """Writes images `start` to `stop` of the folder `root` (in a worker process)."""
    sys.path.insert(0, HERE)
    from check import photo

    root, start, stop = task
    for index in range(start, stop):
        path = os.path.join(root, f"class{index % CLASSES}", f"{index:06d}.jpg")
        photo(index, SIDE, SIDE).save(path, quality=90)


def write_folder(root: str, count: int) -> float:
    """Writes `count` photo-like JPEGs in `CLASSES` class folders; returns the seconds it took."""
    start = time.perf_counter()
    for label in range(CLASSES):
        os.makedirs(os.path.join(root, f"class{label}"))
    tasks = [(root, first, min(first + 2000, count)) for first in range(0, count, 2000)]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count(), mp_context=context) as pool:
        list(pool.map(_write, tasks))
    time.sleep(3)  # every file older than the kept results' margin of 2 s
    return time.perf_counter() - start


# === The processes timed ===


def timed_process(argv: list[str], until: re.Pattern, env: dict | None = None) -> dict:
    """Runs `argv`, from its start to its first stdout line matching `until` (then kills it);
    returns the seconds, the CPU seconds, its peak resident memory in MiB, the seconds at which
    its dataset check's table appeared (None if it did not), and its output until then."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=HERE
    )
    seen, seconds, checked = [], None, None
    for line in process.stdout:
        line = ANSI.sub("", line)
        seen.append(line)
        if checked is None and line.startswith("images "):
            checked = time.perf_counter() - start
        if until.search(line):
            seconds = time.perf_counter() - start
            break
    process.send_signal(signal.SIGKILL)
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = -signal.SIGKILL
    if seconds is None:
        raise RuntimeError(f"{' '.join(argv)} stopped before its first step:\n{''.join(seen[-20:])}")
    return {
        "seconds": seconds,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_mib": usage.ru_maxrss / 1024,
        "checked": checked,
        "output": seen,
        "load": os.getloadavg()[0],
    }


def describe(found: dict) -> str:
    """One process's figures, for its line: the fastest run's, and the seconds of every run."""
    checked = "" if found["checked"] is None else f" (dataset check done after {found['checked']:.1f} s)"
    runs = ", ".join(f"{seconds:.1f}" for seconds in found["all"])
    return (
        f"{found['seconds']:.1f} s{checked}, {found['cpu']:.1f} CPU-s, peak {found['peak_mib']:,.0f} MiB; "
        f"load {found['load']:.1f}; best of {len(found['all'])} runs ({runs} s)"
    )


def run_command(folder: str, output: str, cache: str, *, resume: bool) -> dict:
    """(a), (b): the command until its first training step."""
    env = {**os.environ, "TFRESNET_CACHE_DIR": cache}
    argv = [sys.executable, "-m", "tfresnet.finetune", "--data-dir", folder, *COMMAND, "--output-dir", output]
    return timed_process(argv + (["--resume"] if resume else []), FIRST_STEP, env)


def command_runs(folder: str, root: str, tag: str, repeats: int) -> tuple[dict, dict]:
    """(a), (b): the first run (an empty cache folder) and its `--resume`, `repeats` times; the
    fastest of each, with every run's seconds."""
    firsts, resumes = [], []
    for repeat in range(repeats):
        output, cache = os.path.join(root, f"run-{tag}-{repeat}"), os.path.join(root, f"cache-{tag}-{repeat}")
        firsts.append(run_command(folder, output, cache, resume=False))
        resumes.append(run_command(folder, output, cache, resume=True))
    return best(firsts), best(resumes)


def best(runs: list[dict]) -> dict:
    """The fastest of `runs`, with the seconds of them all."""
    return {**min(runs, key=lambda run: run["seconds"]), "all": [run["seconds"] for run in runs]}


def run_child(kind: str, folder: str, cache: str) -> dict:
    """(c), (d) in a fresh process; the figures it prints as its last line."""
    env = {**os.environ, "TFRESNET_CACHE_DIR": cache}
    argv = [sys.executable, os.path.abspath(__file__), "--child", kind, "--folder", folder]
    found = timed_process(argv, re.compile("^{"), env)
    return {**found, **json.loads(found["output"][-1])}


def peer_child(folder: str) -> None:
    """(c): `image_dataset_from_directory`'s set-up and first batch, in this process."""
    import keras

    start = time.perf_counter()
    train, _ = keras.utils.image_dataset_from_directory(
        folder,
        image_size=(SIDE, SIDE),
        batch_size=BATCH,
        validation_split=0.2,
        subset="both",
        seed=0,
        verbose=False,
    )
    next(iter(train))
    print(json.dumps({"call": time.perf_counter() - start}), flush=True)


def epoch_child(folder: str) -> None:
    """(d): one pass of the run's training pipeline, its set-up not counted."""
    from tfresnet.data import from_folder

    data = from_folder(folder, image_size=SIDE, batch_size=BATCH, seed=0)
    start, cpu = time.perf_counter(), time.process_time()
    images = sum(int(batch[1].shape[0]) for batch in data.train)
    print(
        json.dumps(
            {"epoch": time.perf_counter() - start, "epoch_cpu": time.process_time() - cpu, "images": images}
        ),
        flush=True,
    )


# === The comparison ===


def measure(count: int, root: str, repeats: int) -> dict:
    """Every variant on a new folder of `count` JPEGs."""
    folder, cache = os.path.join(root, f"images{count}"), os.path.join(root, f"cache-{count}-0")
    written = write_folder(folder, count)
    print(
        f"{count:,} JPEGs of {SIDE}x{SIDE} px in {CLASSES} class folders written in {written:.0f} s",
        flush=True,
    )
    first, resumed = command_runs(folder, root, str(count), repeats)
    print(f"  (a) first run: first step after {describe(first)}", flush=True)
    print(f"  (a) --resume: first step after {describe(resumed)}", flush=True)
    peer = best([run_child("peer", folder, cache) for _ in range(repeats)])
    print(
        f"  (c) image_dataset_from_directory: first batch after {describe(peer)}; "
        f"{peer['call']:.1f} s after its imports",
        flush=True,
    )
    epoch = run_child("epoch", folder, cache)
    print(
        f"  (d) one epoch of the run's pipeline: {epoch['epoch']:.1f} s ({epoch['images']:,} images, "
        f"{epoch['images'] / epoch['epoch']:,.0f} images/s, {epoch['epoch_cpu']:.0f} CPU-s); load "
        f"{epoch['load']:.1f}",
        flush=True,
    )
    kept = sum(
        os.path.getsize(os.path.join(cache, "checks", name))
        for name in os.listdir(os.path.join(cache, "checks"))
    )
    print(f"  kept results: {kept / 2**20:.1f} MiB", flush=True)
    return {"first": first, "resumed": resumed, "peer": peer, "epoch": epoch}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        (peer_child if args.child == "peer" else epoch_child)(args.folder)
        return 0
    sys.path.insert(0, HERE)
    from label_issues import cpu_flags
    from pipeline import describe_machine, load_average

    sizes = args.sizes or ([2000, 10000] if args.quick else [10000, 100000])
    began = time.perf_counter()
    print(describe_machine())
    print(f"CPU flags: {cpu_flags()}")
    print(f"load average before: {load_average()}", flush=True)
    print(f"command: python -m tfresnet.finetune --data-dir F {' '.join(COMMAND)} --output-dir O [--resume]")
    results = {}
    with tempfile.TemporaryDirectory() as root:
        small = os.path.join(root, "small")
        write_folder(small, SMALL)
        base = dict(zip((False, True), command_runs(small, root, "small", args.repeats)))
        print(f"(b) {SMALL} images, first run: first step after {describe(base[False])}", flush=True)
        print(f"(b) {SMALL} images, --resume: first step after {describe(base[True])}", flush=True)
        for count in sizes:
            results[count] = measure(count, root, args.repeats)
    print(f"load average after: {load_average()}; {time.perf_counter() - began:.0f} s in all")
    print()
    print(summary(results, base))
    return 0


def summary(results: dict, base: dict) -> str:
    """The figures and ratios of each folder, and the headline as the last line."""
    rows = []
    for count, found in results.items():
        first, resumed, peer = (
            found["first"]["seconds"],
            found["resumed"]["seconds"],
            found["peer"]["seconds"],
        )
        epoch = found["epoch"]["epoch"]
        rows.append(
            f"{count:>7,} files: first run {first:6.1f} s (data set-up "
            f"{first - base[False]['seconds']:5.1f} s) = {first / epoch:.2f}x one epoch's decoding "
            f"({epoch:.1f} s); --resume {resumed:5.1f} s (data "
            f"set-up {resumed - base[True]['seconds']:4.1f} s); image_dataset_from_directory {peer:5.1f} s; "
            f"first run / image_dataset_from_directory {first / peer:.1f}x, --resume / it "
            f"{resumed / peer:.1f}x"
        )
        peaks = [found[name]["peak_mib"] for name in ("first", "resumed", "peer")]
        rows.append(
            f"{count:>7,} files: peak MiB: first run {peaks[0]:,.0f}, --resume {peaks[1]:,.0f}, "
            f"image_dataset_from_directory {peaks[2]:,.0f}"
        )
    small, large = min(results), max(results)
    growth = {
        name: results[large][name]["peak_mib"] / results[small][name]["peak_mib"]
        for name in ("first", "resumed", "peer")
    }
    rows.append(
        f"peak memory from {small:,} to {large:,} files: first run {growth['first']:.3f}x, --resume "
        f"{growth['resumed']:.3f}x, image_dataset_from_directory {growth['peer']:.3f}x (goal for tfresnet: "
        f"at most 1.10x)"
    )
    found = results[large]
    first, resumed = found["first"]["seconds"], found["resumed"]["seconds"]
    rows.append(
        f"{large:,} files: first step after {first:.0f} s ({first / found['epoch']['epoch']:.1f}x one "
        f"epoch's decoding), --resume {resumed:.0f} s ({resumed - base[True]['seconds']:.1f} s of data "
        f"set-up); image_dataset_from_directory {found['peer']['seconds']:.0f} s"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
