#!/usr/bin/env python3
"""Runs one meetup-loadgen command and adds to its JSON result line the CPU time
each process spent during the run: the processes named with --pid (read from
/proc/<pid>/stat before and after) and the load generator itself (its rusage).

    bench/cpu_time.py --pid nats=123 --pid presence-1=456 -- ./target/release/meetup-loadgen presence ...

Prints the result line with "cpu_s" ({name: seconds}), "cpu_busy" ({name:
seconds of CPU per second of wall time, 1.0 = one core}) and "wall_s" added.
Exits with the command's status."""
import json
import os
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process (and its waited-for children), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces: the fields after it start past the ")".
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICKS


def main():
    args = sys.argv[1:]
    pids = {}
    while args and args[0] == "--pid":
        name, pid = args[1].split("=", 1)
        pids[name] = int(pid)
        args = args[2:]
    if not args or args[0] != "--":
        sys.exit(__doc__)
    command = args[1:]
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate()
    wall = time.monotonic() - start
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    # The child has been waited for: its rusage is in our children's times.
    own = os.times()
    lines = [line for line in out.splitlines() if line.strip()]
    if child.returncode != 0 or not lines:
        sys.stdout.write(out)
        sys.exit(child.returncode or 1)
    result = json.loads(lines[-1])
    cpu = {
        name: round(after[name] - before[name], 3)
        for name in pids
        if before[name] is not None and after[name] is not None
    }
    cpu["loadgen"] = round(own.children_user + own.children_system, 3)
    result["wall_s"] = round(wall, 3)
    result["cpu_s"] = cpu
    result["cpu_busy"] = {name: round(seconds / wall, 3) for name, seconds in cpu.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
