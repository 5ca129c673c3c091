#!/usr/bin/env python3
"""Turns bench/results/latest/*.json (one meetup-loadgen result per file) into
docs/benchmarks.md. `--passes FILE` instead exits 0 when a relay result meets the
throughput criterion (no loss, p99 under 50 ms), for bench/run.sh's sweep.

For bench/replicas.sh: `--rpc-passes FILE` exits 0 when a gRPC result is sustained
(every RPC ok, p99 under 50 ms); `--replicas DIR [--machine M] [--splice FILE]`
prints the "Replicas (state in JetStream)" section made from DIR (default
bench/results/replicas), or puts it into FILE in place of the one there. The full
report includes that section whenever bench/results/replicas holds results."""
import json
import pathlib
import sys


def load(path):
    text = path.read_text().strip()
    return json.loads(text) if text else None


def passes(result):
    return bool(result) and result.get("lost", 1) == 0 and result["latency"].get("p99_ms", 1e9) < 50


def rpc_passes(result):
    """Sustained: every RPC answered ok, p99 under 50 ms."""
    if not result or "error" in result:
        return False
    calls = result.get("calls") or 0
    ok = (result.get("outcomes") or {}).get("ok", 0)
    return calls > 0 and ok == calls and (result.get("latency") or {}).get("p99_ms", 1e9) < 50


def fmt(x, digits=2):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def ratio(a, b, digits=1):
    if not a or not b:
        return "n/a"
    return f"{a / b:.{digits}f}x"


REPLICAS_HEADING = "## Replicas (state in JetStream)"


def replicas_section(out, machine=None):
    """The "Replicas (state in JetStream)" section, from bench/replicas.sh's results."""
    r = {p.stem: load(p) for p in sorted(pathlib.Path(out).glob("*.json"))}
    lines = []
    w = lines.append

    def busy(res, *names):
        """Cores used (CPU seconds per wall second) by the processes named `names*`."""
        cpu = (res or {}).get("cpu_busy") or {}
        values = [v for k, v in cpu.items() if any(k == n or k.startswith(n + "-") for n in names)]
        return sum(values) if values else None

    w(REPLICAS_HEADING)
    w("")
    w("Measured by `bench/replicas.sh` (results in `bench/results/replicas/`, `QUICK=1` for a smoke")
    w(f"run){f' on {machine}' if machine else ''}: one nats-server with JetStream (bucket replicas 1), the")
    w("services as separate processes holding no state, and the load generator, all on the same")
    w("2 cores. Every RPC measurement starts from a fresh nats-server and store directory. CPU is")
    w("given in cores (CPU seconds per second of the run, from `/proc/<pid>/stat`; 2.0 = the whole")
    w("machine), so the tables show where the time goes.")
    w("")

    w("### RPC/s, one replica and two")
    w("")
    w("Each service alone, open loop, the RPCs of each group (presence: register, get, get,")
    w("unregister; calls: start, join, get, leave, leave) spread round-robin over the replicas as a")
    w("gateway balances them, so consecutive steps of one user or call meet on different replicas,")
    w("over 4 HTTP/2 connections in all whatever the number of replicas (at low rates the latency")
    w("depends on how RPCs land on connections: one replica over 8 connections measured p50 9.5 ms")
    w("where 4 gave 2.8 ms, at 1,000 calls RPC/s).")
    w("The presence mix never lists (`--list-every 0`): `ListUsers` is now a scan of the whole")
    w("bucket, a cost of the bucket's size rather than of a replica. Sweeps are off in these runs")
    w("(`SWEEP_INTERVAL_MS=0`): the load generator's sessions name a gateway that holds no lease.")
    w("Sustained = every RPC ok and p99 < 50 ms; a service's sweep stops at its first rate not sustained.")
    w("")
    w("| service | replicas | offered RPC/s | ok RPC/s | not ok | p50 ms | p99 ms | sustained | nats-server cores | replica cores | load generator cores | total cores |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|")
    best = {}
    most_ok = {}
    top_passed = {}
    rpc = [n for n in r if n.startswith("rpc-")]
    rpc.sort(key=lambda n: (n.split("-")[1], n.split("-")[2], int(n.split("-")[3])))
    for name in rpc:
        _, service, replicas, rate = name.split("-")
        res = r[name] or {}
        replicas = int(replicas[1:])
        ok = rpc_passes(res)
        key = (service, replicas)
        if ok:
            best[key] = max(best.get(key, 0), int(rate))
        top_passed[key] = ok
        most_ok[key] = max(most_ok.get(key, 0), res.get("completed_ok_per_s") or 0)
        lat = res.get("latency") or {}
        not_ok = (res.get("calls") or 0) - (res.get("outcomes") or {}).get("ok", 0) if "error" not in res else None
        per_replica = [fmt((res.get("cpu_busy") or {}).get(f"{service}-{i}")) for i in range(1, replicas + 1)]
        w(f"| {service} | {replicas} | {fmt(res.get('offered_per_s'), 0)} | {fmt(res.get('completed_ok_per_s'), 0)} | "
          f"{fmt(not_ok) if not_ok is not None else res.get('error')} | {fmt(lat.get('p50_ms'), 3)} | {fmt(lat.get('p99_ms'), 3)} | {'yes' if ok else 'no'} | "
          f"{fmt(busy(res, 'nats'))} | {' + '.join(per_replica)} | {fmt(busy(res, 'loadgen'))} | {fmt(busy(res, 'nats', service, 'loadgen'))} |")
    w("")
    w("| service | highest sustained, one replica | two replicas | two / one | target: two >= 1.5x one | most ok RPC/s in any run, one / two replicas |")
    w("|---|---|---|---|---|---|")
    verdicts = {}
    for service in sorted({k[0] for k in top_passed}):
        one, two = best.get((service, 1)), best.get((service, 2))
        at_least = "at least " if top_passed.get((service, 2)) else ""
        if one and two:
            x = two / one
            # Two replicas that pass the top of the sweep may go higher: then the ratio is a floor.
            if x >= 1.5:
                verdict = f"met ({at_least}{x:.2f}x)"
            elif at_least:
                verdict = f"not shown: {x:.2f}x at the top of the sweep"
            else:
                verdict = f"**missed** by {1.5 - x:.2f}x ({x:.2f}x, {100 * (1 - x / 1.5):.0f}% short)"
            ratio_text = f"{at_least}{x:.2f}x"
        else:
            verdict, ratio_text = "**missed** (no rate sustained)", "n/a"
        verdicts[service] = verdict
        w(f"| {service} | {fmt(one, 0)} RPC/s | {fmt(two, 0)} RPC/s{' (top of the sweep)' if at_least else ''} | {ratio_text} | {verdict} | "
          f"{fmt(most_ok.get((service, 1)), 0)} / {fmt(most_ok.get((service, 2)), 0)} |")
    w("")

    churn = r.get("churn-x") or {}
    w("### Call churn across two gateways")
    w("")
    w("Two gateways (`PRESENCE_URL` and `CALLS_URL` listing both replicas of each service), two")
    w("replicas of each service with sweeps every 500 ms, 20 workers, each pair's two users on")
    w("different gateways: start, join, 3 relays, two leaves; latency per step is the ack round trip.")
    w("")
    w("| run | calls/s | errors | start p50/p99 ms | join p50/p99 ms | relay p50/p99 ms | leave p50/p99 ms | nats-server cores | service cores | gateway cores | load generator cores |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    if churn:
        cells = [f"{fmt((churn.get(s) or {}).get('p50_ms'), 2)} / {fmt((churn.get(s) or {}).get('p99_ms'), 2)}" for s in ("start_call", "join_call", "relay", "leave_call")]
        w(f"| 2 gateways, 2+2 replicas | {fmt(churn.get('calls_per_s'), 1)} | {fmt(churn.get('errors'))} | " + " | ".join(cells)
          + f" | {fmt(busy(churn, 'nats'))} | {fmt(busy(churn, 'presence', 'calls'))} | {fmt(busy(churn, 'gateway'))} | {fmt(busy(churn, 'loadgen'))} |")
    w("")

    w("### Join storm and relay latency across the cluster")
    w("")
    storms = [n for n in r if n.startswith("storm-")]
    storm = r.get(storms[0]) if storms else None
    echo = r.get("echo-unloaded") or {}
    relay = r.get("relay-unloaded-x") or {}
    echo_p50 = (echo.get("round_trip") or {}).get("p50_ms")
    relay_p50 = (relay.get("latency") or {}).get("p50_ms")
    w("| run | result | target | verdict |")
    w("|---|---|---|---|")
    if storm and "error" not in storm:
        t = storm.get("converge_s")
        met = storm.get("converged_clients") == storm.get("users") and t is not None and t < 5
        by = f"{5 - t:.2f} s to spare" if met else (f"{t - 5:.2f} s over" if t is not None else "did not converge")
        w(f"| storm: {fmt(storm.get('users'))} users over two gateways | all registered {fmt(storm.get('all_registered_s'))} s, every client on the full list {fmt(t)} s "
          f"({fmt(storm.get('converged_clients'))} converged, {fmt(storm.get('clients_on_a_stale_list'))} on a stale list) | < 5 s | {'met' if met else '**missed**'}, {by} |")
        verdicts["storm"] = f"{'met' if met else '**missed**'}: {fmt(t)} s ({by})"
    elif storm:
        w(f"| storm | {storm.get('error')} | < 5 s | **missed** |")
        verdicts["storm"] = "**missed**: the run failed"
    w(f"| raw WebSocket echo, round trip (10 pairs x 10 msg/s) | p50 {fmt(echo_p50, 3)} ms, p99 {fmt((echo.get('round_trip') or {}).get('p99_ms'), 3)} ms | | |")
    if relay_p50 and echo_p50:
        x = relay_p50 / echo_p50
        met = x <= 2
        by = f"{2 - x:.2f}x to spare" if met else f"{x - 2:.2f}x over"
        w(f"| relay across two gateways, unloaded (10 pairs x 10 msg/s) | p50 {fmt(relay_p50, 3)} ms, p99 {fmt((relay.get('latency') or {}).get('p99_ms'), 3)} ms, "
          f"lost {fmt(relay.get('lost'))}: {x:.2f}x the echo p50 | p50 <= 2x echo | {'met' if met else '**missed**'}, {by} |")
        verdicts["relay"] = f"{'met' if met else '**missed**'}: {x:.2f}x ({by})"
    w("")

    w("### Targets")
    w("")
    w("| target | result |")
    w("|---|---|")
    for service in ("presence", "calls"):
        if service in verdicts:
            w(f"| {service}: two replicas at least 1.5x one replica's RPC/s | {verdicts[service]} |")
    if "storm" in verdicts:
        w(f"| {fmt(storm.get('users'))}-user storm across the cluster under 5 s | {verdicts['storm']} |")
    if "relay" in verdicts:
        w(f"| unloaded relay p50 across two gateways at most 2x the echo round trip | {verdicts['relay']} |")
    w("")
    notes = pathlib.Path("bench/replicas-notes.md")
    if notes.exists():
        w(notes.read_text().rstrip())
        w("")
    return lines


def splice(path, section):
    """Puts `section` into the markdown file at `path`, in place of the section with the
    same heading (up to the next heading of its level) or at its end."""
    path = pathlib.Path(path)
    old = path.read_text().rstrip("\n").split("\n") if path.exists() else []
    if REPLICAS_HEADING in old:
        start = old.index(REPLICAS_HEADING)
        end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
        new = old[:start] + section + old[end:]
    else:
        new = old + [""] + section
    path.write_text("\n".join(new).rstrip("\n") + "\n")


def per_conn(res):
    return (res or {}).get("rss_per_connection_kib")


def verdict(value, limit, unit="x", lower_is_better=True):
    """"met" or "**missed**", with by how much."""
    if value is None:
        return "**not measured**"
    ok = value <= limit if lower_is_better else value >= limit
    if ok:
        return f"met ({value:.2f}{unit}, target {limit}{unit})"
    return f"**missed** ({value:.2f}{unit}, target {limit}{unit}: {abs(value - limit):.2f}{unit} {'over' if lower_is_better else 'short'})"


def memory_section(r):
    lines = []
    w = lines.append
    w("## Memory per connection")
    w("")
    w("Every figure on a fresh process of its own (RSS after minus RSS before, divided by the")
    w("connections), the same load generator for all. `bare socketioxide` is a Socket.IO server that")
    w("only accepts connections (`meetup-loadgen bare-server`, hyper HTTP/1 like the gateway), with")
    w("the library's 4 KiB websocket read buffer and with the gateway's 512 B: what is above it is ours.")
    w("Registered runs: every connection sends `user-joined`; `delta` clients ask for presence deltas")
    w("(one list when they register, then `user-joined` / `user-left`), `full` ones get every list.")
    w("")
    w("| system | connections | RSS before KiB | RSS after KiB | KiB per connection | vs Node |")
    w("|---|---|---|---|---|---|")
    node_conn = per_conn(r.get("idle-conn-node"))
    rows = [("idle-sio-4096", "bare socketioxide, 4 KiB read buffer", node_conn),
            ("idle-sio-512", "bare socketioxide, 512 B read buffer", node_conn),
            ("idle-conn", "ours, connected only", node_conn),
            ("idle-conn-node", "Node, connected only", node_conn)]
    regs = sorted({int(n.split("-")[-1]) for n in r if n.startswith("idle-reg-node-")})
    for n in regs:
        node_reg = per_conn(r.get(f"idle-reg-node-{n}"))
        rows += [(f"idle-delta-{n}", f"ours, {n:,} registered, delta clients", node_reg),
                 (f"idle-full-{n}", f"ours, {n:,} registered, full lists", node_reg),
                 (f"idle-reg-node-{n}", f"Node, {n:,} registered", node_reg)]
    for name, label, base in rows:
        res = r.get(name) or {}
        w(f"| {label} | {fmt(res.get('users'))} | {fmt(res.get('rss_before_kib'))} | {fmt(res.get('rss_after_kib'))} | "
          f"{fmt(per_conn(res))} | {ratio(per_conn(res), base, 2)} |")
    w("")
    many = r.get("idle-many") or {}
    limits = r.get("limits") or {}
    if many:
        w(f"Many idle websockets on one gateway: {fmt(many.get('connections_open'))} of {fmt(many.get('users'))} open "
          f"(from {many.get('sources')} loopback source addresses), {fmt(per_conn(many))} KiB per connection, "
          f"{fmt(many.get('cpu_busy_at_idle'), 3)} cores busy at idle (over 20 s: the engine's pings). "
          f"50,000 could not be tried: this machine caps a process at {fmt(limits.get('nofile_hard'))} file descriptors "
          "(the hard `RLIMIT_NOFILE`, which root cannot raise here), so one gateway cannot hold more sockets than that.")
        w("")
    ours, bare = per_conn(r.get("idle-conn")), per_conn(r.get("idle-sio-512"))
    w("| target | result |")
    w("|---|---|")
    w(f"| connections only: at most 1.1x Node's bytes per connection | {verdict(ours / node_conn if ours and node_conn else None, 1.1)} |")
    w(f"| our overhead above the bare server (same engine settings): at most 2 KiB | {verdict(ours - bare if ours and bare else None, 2.0, ' KiB')} |")
    for n in regs:
        d, nr = per_conn(r.get(f"idle-delta-{n}")), per_conn(r.get(f"idle-reg-node-{n}"))
        w(f"| {n:,} registered with presence deltas: at most 0.5x Node's registered figure | {verdict(d / nr if d and nr else None, 0.5)} |")
    w("")
    return lines


def cpu_total(res, *names):
    cpu = (res or {}).get("cpu_s") or {}
    values = [v for k, v in cpu.items() if any(k == n or k.startswith(n + "-") for n in names)]
    return sum(values) if values else None


def churn_section(r):
    lines = []
    w = lines.append
    w("## Call churn (20 workers: start, join, 3 relays, two leaves; latency per step is the ack round trip)")
    w("")
    w("As fast as each system goes (each worker starts its next call when the last is done):")
    w("")
    w("| system | calls/s | errors | start p50/p99 ms | join p50/p99 ms | relay p50/p99 ms | leave p50/p99 ms |")
    w("|---|---|---|---|---|---|---|")
    for name, label in [("churn", "ours, one gateway (embedded)"), ("churn-node", "Node reference")]:
        res = r.get(name) or {}
        cells = [f"{fmt((res.get(s) or {}).get('p50_ms'), 2)} / {fmt((res.get(s) or {}).get('p99_ms'), 2)}" for s in ("start_call", "join_call", "relay", "leave_call")]
        w(f"| {label} | {fmt(res.get('calls_per_s'), 1)} | {fmt(res.get('errors'))} | " + " | ".join(cells) + " |")
    w("")
    rate = (r.get("churn-rate") or {}).get("offered_calls_per_s")
    w(f"At one offered rate ({fmt(rate, 0)} calls/s), CPU per call = the CPU seconds of the processes named")
    w("(user + system, from `/proc`) divided by the calls completed; the floor is the raw WebSocket echo")
    w("server moving the same 16 frames per call (8 round trips):")
    w("")
    w("| system | calls/s | errors | step p99 ms (start / join / relay / leave) | processes | CPU s | CPU per call ms | vs Node |")
    w("|---|---|---|---|---|---|---|---|")
    node = r.get("churn-rate-node") or {}
    node_cpu = cpu_total(node, "node")
    node_per = node_cpu * 1000 / node["calls_completed"] if node_cpu and node.get("calls_completed") else None
    per = {}
    for name, label, names in [("churn-rate", "ours, embedded", ("gateway",)),
                               ("churn-rate-cluster", "ours, cluster (NATS, presence, calls, 2 gateways)", ("nats", "presence", "calls", "gateway")),
                               ("churn-rate-node", "Node reference", ("node",))]:
        res = r.get(name) or {}
        cpu = cpu_total(res, *names)
        calls = res.get("calls_completed")
        per[name] = cpu * 1000 / calls if cpu and calls else None
        p99 = " / ".join(fmt((res.get(s) or {}).get("p99_ms"), 2) for s in ("start_call", "join_call", "relay", "leave_call"))
        w(f"| {label} | {fmt(res.get('calls_per_s'), 1)} | {fmt(res.get('errors'))} | {p99} | {', '.join(names)} | {fmt(cpu, 2)} | {fmt(per[name], 3)} | {ratio(per[name], node_per, 2)} |")
    echo = r.get("echo-floor") or {}
    echo_cpu = cpu_total(echo, "echo")
    trips = (echo.get("received") or 0)
    floor = echo_cpu * 1000 / (trips / 8) if echo_cpu and trips else None
    w(f"| floor: raw echo, {fmt(echo.get('offered_per_s'), 0)} round trips/s | | | | echo | {fmt(echo_cpu, 2)} | {fmt(floor, 3)} | {ratio(floor, node_per, 2)} |")
    w("")
    single = r.get("churn-rate") or {}
    worst_p99 = max(((single.get(s) or {}).get("p99_ms") or 0) for s in ("start_call", "join_call", "relay", "leave_call")) if single else None
    w("| target | result |")
    w("|---|---|")
    w(f"| embedded: CPU per call at most half of Node's at {fmt(rate, 0)} calls/s | {verdict(per['churn-rate'] / node_per if per.get('churn-rate') and node_per else None, 0.5)} |")
    w(f"| embedded: call steps p99 under 5 ms at that rate | {verdict(worst_p99, 5.0, ' ms')} |")
    w(f"| embedded: at least 2x Node's calls per second, as fast as each goes | {verdict((get_num(r, 'churn', 'calls_per_s') or 0) / get_num(r, 'churn-node', 'calls_per_s') if get_num(r, 'churn-node', 'calls_per_s') else None, 2.0, 'x', lower_is_better=False)} |")
    w(f"| cluster: CPU per call of every process of ours at most Node's one process | {verdict(per['churn-rate-cluster'] / node_per if per.get('churn-rate-cluster') and node_per else None, 1.0)} |")
    w("")
    return lines


def get_num(r, name, key):
    value = (r.get(name) or {}).get(key)
    return value if isinstance(value, (int, float)) else None


def delta_section(r):
    lines = []
    w = lines.append
    names = sorted((n for n in r if n.startswith("storm-delta-")), key=lambda n: int(n.split("-")[-1]))
    if not names:
        return lines
    w("## Presence deltas: join storms of delta clients (one gateway)")
    w("")
    w("Every client connects with `presence: \"delta\"` and registers at once; converged = every")
    w("client holds exactly the storm's users (its one `users-list` plus every `user-joined` and")
    w("`user-left` since). Presence bytes: every `users-list`, `user-joined` and `user-left` received.")
    w("")
    w("| users | failed clients | all registered s | every client exact s | users-list messages | presence bytes per client | clients not exact |")
    w("|---|---|---|---|---|---|---|")
    for name in names:
        res = r[name] or {}
        w(f"| {fmt(res.get('users'))} | {fmt(res.get('failed_clients'))} | {fmt(res.get('all_registered_s'))} | {fmt(res.get('converge_s'))} | "
          f"{fmt(res.get('users_list_messages'))} | {fmt(res.get('presence_bytes_per_client'), 0)} | {fmt(res.get('clients_on_a_stale_list'))} |")
    w("")
    big = r.get("storm-delta-10000") or {}
    t = big.get("converge_s")
    w("| target | result |")
    w("|---|---|")
    w(f"| 10,000 delta clients on one gateway converge in under 5 s | {verdict(t, 5.0, ' s') if t is not None else '**missed**: did not converge (' + fmt(big.get('failed_clients')) + ' clients failed)' if big else '**not measured**'} |")
    w("")
    return lines


def main():
    args = sys.argv[1:]
    if args and args[0] == "--passes":
        sys.exit(0 if passes(load(pathlib.Path(args[1]))) else 1)
    if args and args[0] == "--rpc-passes":
        sys.exit(0 if rpc_passes(load(pathlib.Path(args[1]))) else 1)
    if args and args[0] == "--replicas":
        options = dict(zip(args[2::2], args[3::2]))
        section = replicas_section(args[1], options.get("--machine"))
        if "--splice" in options:
            splice(options["--splice"], section)
        else:
            print("\n".join(section))
        return
    machine = "this machine"
    if args and args[0] == "--machine":
        machine, args = args[1], args[2:]
    out = pathlib.Path(args[0] if args else "bench/results/latest")
    r = {p.stem: load(p) for p in sorted(out.glob("*.json"))}

    def get(name, *keys):
        value = r.get(name)
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    lines = []
    w = lines.append
    w("# Benchmarks: the Rust system beside the Node.js reference")
    w("")
    w(f"Machine: {machine}. Everything ran on this one machine at the same time as the load")
    w("generator (`meetup-loadgen`, release build), over loopback. Reproduce every figure with")
    w("`bench/run.sh` (writes `bench/results/latest/*.json` and this file; `QUICK=1` for a")
    w("smoke run). Systems under test, all release builds: one embedded gateway (`single`),")
    w("a cluster of nats-server + presence + calls + two gateways (`cluster`), and the Node")
    w("reference (`bench/node-reference`, socket.io 4.8). The raw WebSocket echo server")
    w("(`meetup-loadgen echo-server`) is the physical floor and shows the tool is not the limit.")
    w("Latency is measured from each message's intended send time (open loop, no coordinated")
    w("omission) into HDR histograms.")
    w("")

    w("## Relay latency, unloaded (10 pairs x 10 msg/s)")
    w("")
    echo = get("echo-unloaded", "round_trip", "p50_ms")
    w("| system | p50 ms | p99 ms | max ms | p50 vs echo round trip | target |")
    w("|---|---|---|---|---|---|")
    w(f"| raw WebSocket echo (round trip) | {fmt(echo, 3)} | {fmt(get('echo-unloaded', 'round_trip', 'p99_ms'), 3)} | {fmt(get('echo-unloaded', 'round_trip', 'max_ms'), 3)} | 1.0x | |")
    for name, label, target in [("relay-unloaded", "ours, one gateway", 2), ("relay-unloaded-x", "ours, across two gateways", 3), ("relay-unloaded-node", "Node reference", None)]:
        p50 = get(name, "latency", "p50_ms")
        verdict = ""
        if target and p50 and echo:
            verdict = f"<= {target}x: {'met' if p50 <= target * echo else 'missed'}"
        w(f"| {label} | {fmt(p50, 3)} | {fmt(get(name, 'latency', 'p99_ms'), 3)} | {fmt(get(name, 'latency', 'max_ms'), 3)} | {ratio(p50, echo)} | {verdict} |")
    w("")

    w("## Relay across two gateways at 10,000 msg/s offered")
    w("")
    w("| run | offered/s | delivered/s | lost | out of order | p50 ms | p99 ms | p99.9 ms | max ms | target |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for name, label in [("echo-10k", "raw echo (round trip)"), ("relay-10k-x", "ours, cluster, cross-gateway")]:
        lat = get(name, "latency") or get(name, "round_trip") or {}
        verdict = ""
        if name == "relay-10k-x" and r.get(name):
            ok = r[name]["lost"] == 0 and lat.get("p99_ms", 1e9) < 5
            verdict = f"zero loss, p99 < 5 ms: {'met' if ok else 'missed'}"
        w(f"| {label} | {fmt(get(name, 'offered_per_s'), 0)} | {fmt(get(name, 'delivered_per_s'), 0)} | {fmt(get(name, 'lost'))} | {fmt(get(name, 'out_of_order'))} | {fmt(lat.get('p50_ms'), 3)} | {fmt(lat.get('p99_ms'), 3)} | {fmt(lat.get('p999_ms'), 3)} | {fmt(lat.get('max_ms'), 3)} | {verdict} |")
    w("")

    w("## Sustained relay throughput at p99 under 50 ms (one gateway / one Node process)")
    w("")
    w("| system | offered msg/s | delivered msg/s | lost | p99 ms | passes |")
    w("|---|---|---|---|---|---|")
    best = {}
    for name in sorted(r, key=lambda n: (n.split("-")[1] if n.startswith("sweep-") else "", int(n.split("-")[-1]) if n.startswith("sweep-") else 0)):
        if not name.startswith("sweep-"):
            continue
        system = name.split("-")[1]
        res = r[name]
        ok = passes(res)
        if ok:
            best[system] = max(best.get(system, 0), res["delivered_per_s"])
        w(f"| {system} | {fmt(res['offered_per_s'], 0)} | {fmt(res['delivered_per_s'], 0)} | {fmt(res['lost'])} | {fmt(res['latency'].get('p99_ms'), 2)} | {'yes' if ok else 'no'} |")
    w("")
    ceiling = sorted((n for n in r if n.startswith("echo-") and n.split("-")[1].isdigit()), key=lambda n: int(n.split("-")[1]))
    if ceiling:
        w("")
        w("The tool's own ceiling: the same traffic against the raw echo server at the sweep's top rates")
        w("(round trips, so twice the messages of a one-way relay):")
        w("")
        w("| echo run | offered msg/s | delivered msg/s | lost | p50 ms | p99 ms |")
        w("|---|---|---|---|---|---|")
        for name in ceiling:
            res = r[name]
            w(f"| {name} | {fmt(res['offered_per_s'], 0)} | {fmt(res['delivered_per_s'], 0)} | {fmt(res['lost'])} | {fmt(res['round_trip'].get('p50_ms'), 2)} | {fmt(res['round_trip'].get('p99_ms'), 2)} |")
        w("")
    w(f"Highest passing rate: ours {fmt(best.get('single'), 0)} msg/s, Node {fmt(best.get('node'), 0)} msg/s: "
      f"**{ratio(best.get('single'), best.get('node'))}** (target at least 5x). The sweep stops at the first failing rate; "
      "a system that passes the top of the sweep may go higher.")
    w("")

    w("## Join storm")
    w("")
    w("| run | users | all registered s | every client on the full list s | users-list messages | users-list bytes | clients on a stale list |")
    w("|---|---|---|---|---|---|---|")
    storms = sorted(n for n in r if n.startswith("storm-") and not n.startswith("storm-delta-"))
    for name in storms:
        res = r[name]
        w(f"| {name} | {fmt(res['users'])} | {fmt(res['all_registered_s'])} | {fmt(res.get('converge_s'))} | {fmt(res['users_list_messages'])} | {fmt(res['users_list_bytes'])} | {fmt(res['clients_on_a_stale_list'])} |")
    small = [n for n in storms if not n.endswith("-node")]
    if small:
        ours = r[small[0]]
        node = r.get(small[0] + "-node")
        if node:
            w("")
            w(f"{ours['users']} users: ours converge {ratio(node.get('converge_s'), ours.get('converge_s'))} faster than Node "
              f"(target at least 20x) with {ratio(node['users_list_bytes'], ours['users_list_bytes'])} fewer users-list bytes (target at least 10x).")
    w("")

    lines.extend(memory_section(r))
    lines.extend(churn_section(r))
    lines.extend(delta_section(r))

    w("## gRPC services on their own (open loop)")
    w("")
    w("| service | offered RPC/s | ok RPC/s | outcomes | p50 ms | p99 ms | max ms | target |")
    w("|---|---|---|---|---|---|---|---|")
    for name in ("presence-grpc", "calls-grpc"):
        res = r.get(name) or {}
        lat = res.get("latency") or {}
        ok = (res.get("completed_ok_per_s") or 0) >= 20000 and lat.get("p99_ms", 1e9) < 10
        w(f"| {name} | {fmt(res.get('offered_per_s'), 0)} | {fmt(res.get('completed_ok_per_s'), 0)} | {json.dumps(res.get('outcomes'))} | {fmt(lat.get('p50_ms'), 3)} | {fmt(lat.get('p99_ms'), 3)} | {fmt(lat.get('max_ms'), 3)} | 20,000/s, p99 < 10 ms: {'met' if ok else 'missed'} |")
    w("")
    notes = pathlib.Path("bench/notes.md")
    if notes.exists():
        w(notes.read_text().rstrip())
        w("")
    # Sections from benchmarks of their own are kept as they are when this
    # run has no results for them: the resume soak's, the history service's
    # (tests/examples/history_bench.rs, run by hand) and, unless
    # bench/results/replicas holds bench/replicas.sh's results, the replicas'.
    previous = pathlib.Path("docs/benchmarks.md")
    text = previous.read_text() if previous.exists() else ""

    def kept(heading):
        start = text.find("\n" + heading)
        if start < 0:
            return None
        end = text.find("\n## ", start + 1)
        return text[start:end if end >= 0 else len(text)].rstrip("\n")

    history = kept("## History service")
    if history:
        lines.append(history)
    if any(pathlib.Path("bench/results/replicas").glob("*.json")):
        lines.extend(replicas_section("bench/results/replicas"))
    elif kept(REPLICAS_HEADING):
        lines.append(kept(REPLICAS_HEADING))
    # bench/resume.sh's soak: written by hand from its results, kept as it is.
    resume = kept("## Resume soak")
    if resume:
        lines.append(resume)
    # bench/churn.sh's comparison of two builds: written by hand, kept as it is.
    before_after = kept("## Call churn before and after")
    if before_after:
        lines.append(before_after)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
