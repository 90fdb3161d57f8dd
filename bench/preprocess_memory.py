"""Peak anonymous memory of preprocess.py, summed over the process and its worker processes.

    python bench/preprocess_memory.py --input_dir DIR --out_dir DIR [preprocess.py options ...]

Runs preprocess.py with these arguments as a subprocess and samples RssAnon (resident anonymous
memory, /proc/PID/status) of it and of every process below it every --interval seconds. File-backed
pages, such as those of the memory-mapped .npy files or the page cache, do not count. Prints the
peak of that sum beside the size of the X arrays written and the wall time.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parents_by_pid() -> dict[int, int]:
    """Parent pid of every process now running."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return parents


def process_tree(root: int) -> list[int]:
    """root and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents_by_pid().items():
        children.setdefault(parent, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def rss_anon_mb(pid: int) -> float:
    """RssAnon of a process in MB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure(command: list[str], interval: float) -> dict:
    """Run command; return its exit status, wall seconds and the peak of the summed RssAnon (with its parts)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT)
    peak = {"total_mb": 0.0, "main_mb": 0.0, "others_mb": 0.0, "processes": 1}
    while proc.poll() is None:
        tree = process_tree(proc.pid)
        sizes = [rss_anon_mb(pid) for pid in tree]
        if sum(sizes) > peak["total_mb"]:
            peak = {"total_mb": sum(sizes), "main_mb": sizes[0], "others_mb": sum(sizes[1:]), "processes": len(tree)}
        time.sleep(interval)
    return {"returncode": proc.returncode, "seconds": time.perf_counter() - start, **peak}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_dir", type=Path, required=True)
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--interval", type=float, default=0.05, help="seconds between samples")
    args, extra = p.parse_known_args()
    command = [sys.executable, str(ROOT / "preprocess.py"), "--input_dir", str(args.input_dir),
               "--out_dir", str(args.out_dir), *extra]
    result = measure(command, args.interval)
    if result["returncode"] != 0:
        print(f"preprocess.py failed (exit {result['returncode']}); nothing measured", file=sys.stderr)
        return 1
    counts = json.loads((args.out_dir / "meta.json").read_text())["counts"]
    x_gb = sum((args.out_dir / f"X_{split}.npy").stat().st_size for split in counts) / 1e9
    print(f"records written:              {sum(counts.values())} ({counts})")
    print(f"X arrays:                     {x_gb:.2f} GB")
    print(f"peak anonymous memory (sum):  {result['total_mb']:.0f} MB over {result['processes']} processes "
          f"(main {result['main_mb']:.0f} MB, others {result['others_mb']:.0f} MB)")
    print(f"wall time:                    {result['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
