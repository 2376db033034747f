"""Chaos, bounded, across hosts: a whole host (network namespace) is SIGKILLed while
5,000 short tasks run on three; the tasks it had are retried on the other two, and
every result is right (issue 13, "Chaos")."""

from __future__ import annotations

import json

PASSWORD = "5241590000000000"


def test_a_host_killed_mid_run_has_its_tasks_retried_elsewhere(three_hosts):
    a, b, c = three_hosts
    started = a.rayipy("start", "--head", "--node-ip-address", a.ip, "--num-cpus", "1",
                       "--password", PASSWORD)
    assert started.returncode == 0, started.stderr
    for host in (b, c):
        joined = host.rayipy("start", f"--address={a.ip}:6379", "--password", PASSWORD,
                             "--num-cpus", "1")
        assert joined.returncode == 0, joined.stderr
    driver = a.popen_python("""
        import json, socket, sys, time
        import rayipy
        rayipy.init(address="auto")

        @rayipy.remote(max_retries=5)
        def square(i):
            time.sleep(0.005)
            return i * i, socket.gethostbyname(socket.gethostname())

        while len([n for n in rayipy.nodes() if n["Alive"]]) < 3:
            time.sleep(0.05)
        refs = [square.remote(i) for i in range(5000)]
        # Midway: hostC has run some of them, and has more queued or running.
        done, _ = rayipy.wait(refs, num_returns=1000, timeout=60)
        print("midway", len(done), flush=True)
        sys.stdin.readline()            # hostC dies meanwhile
        results = rayipy.get(refs, timeout=120)
        status = rayipy.cluster_status()["tasks"]
        print(json.dumps({"right": [r for r, _ in results] == [i * i for i in range(5000)],
                          "hosts": sorted({h for _, h in results}),
                          "retried": status.get("retried", 0),
                          "alive": sorted(n["NodeManagerAddress"] for n in rayipy.nodes()
                                          if n["Alive"])}), flush=True)
        rayipy.shutdown()
    """)
    try:
        line = driver.stdout.readline()
        assert line.split()[:1] == ["midway"], line + driver.stderr.read()
        c.kill_everything()
        out, err = driver.communicate("go\n", timeout=120)
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["right"], summary
        assert summary["retried"] >= 1, summary     # what ran on hostC went again
        assert c.ip in summary["hosts"] and a.ip in summary["hosts"], summary
        assert summary["alive"] == sorted([a.ip, b.ip]), summary
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        a.rayipy("stop")
        b.rayipy("stop")
