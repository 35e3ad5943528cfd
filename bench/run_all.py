"""Run every benchmark with its defaults, one after the other (``make bench``).

Each benchmark prints its own table; the output of each also goes to
``build/bench/<name>.txt``.  Expect about an hour on 2 cores: the ECP5
place-and-route runs and the MiniLM compression dominate.
"""

import subprocess
import sys
from pathlib import Path

BENCHES = ("bench_pe", "bench_sd", "bench_bc", "bench_compress", "bench_storage", "bench_sim", "bench_link",
           "bench_cnn", "bench_estimate")


def main():
    out = Path("build/bench")
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in BENCHES:
        print(f"[bench] {name} -> {out / (name + '.txt')}", file=sys.stderr, flush=True)
        with open(out / f"{name}.txt", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", f"sparrow.bench.{name}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            if proc.wait() != 0:
                failed.append(name)
    if failed:
        print(f"bench: {', '.join(failed)} failed (see build/bench/)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
