"""Peak memory of ``connect`` on ``digits_cnn`` and how it grows with the number of beads.

Each threshold runs in a fresh subprocess so that its peak is its own. On CPU the figure is the growth of the
process's peak resident set during ``connect`` (after the endpoints are trained); on CUDA it is
``torch.cuda.max_memory_allocated``. Prints one JSON line per threshold with the number of beads and the peak.
The device is resolved once here (a CUDA device on a machine without CUDA exits 2) and passed to each child.

    python benchmarks/connect_memory.py [--device cpu|cuda] [--thresholds 0.5 0.3 0.2 0.12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import add_device_argument, parse_device

CHILD = r"""
import json, resource, sys, time, torch
import envs
from envs.devices import resolve_device
from geodesics import DSSConfig, ParamSpace, connect, train_to_threshold
device, threshold = resolve_device(sys.argv[1]), float(sys.argv[2])
task = envs.make_task("digits_cnn", device=device)
a, b = train_to_threshold(task, 0, threshold), train_to_threshold(task, 1, threshold)
space = ParamSpace(task)
space.batched_eval_loss(torch.stack([a, b]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
if device.type == "cuda":
    torch.cuda.synchronize(device)
start = time.perf_counter()
string = connect(space, a, b, threshold, DSSConfig(keep_snapshots=False))
if device.type == "cuda":
    torch.cuda.synchronize(device)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else after - before
print(json.dumps({"threshold": threshold, "num_beads": string.num_beads, "connected": string.connected,
                  "peak_bytes": peak, "peak_mib": peak / 2**20, "seconds": seconds, "params": space.num_params,
                  "strategy": space.strategy}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(parser)
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.5, 0.3, 0.2, 0.12])
    args = parser.parse_args()
    device = str(parse_device(parser, args.device))
    for threshold in args.thresholds:
        out = subprocess.run([sys.executable, "-c", CHILD, device, str(threshold)], capture_output=True, text=True)
        if out.returncode != 0:
            print(json.dumps({"threshold": threshold, "error": out.stderr.strip().splitlines()[-1]}))
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps({"benchmark": "connect_memory", "task": "digits_cnn", "device": device, **result}))


if __name__ == "__main__":
    main()
