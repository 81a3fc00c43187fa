"""The benchmark harness's pure parts: wrk and /proc parsing, ratios, the route table. No load."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import pytest
import yaml

from benchmarks import procstat, route_table, servers
from benchmarks.sidebyside import parse_args
from benchmarks.summary import (
    RunResult,
    markdown_table,
    other_load_percent,
    summarize,
    worker_lines,
)
from benchmarks.worker_metrics import counter_by_label, worker_shares
from benchmarks.wrk_report import WrkOutputError, parse_wrk

WRK_CLEAN = """\
Running 5s test @ http://127.0.0.1:44385/api/items
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.03ms    1.08ms  12.88ms   92.43%
    Req/Sec    54.32k    16.34k   74.77k    64.00%
  Latency Distribution
     50%  724.00us
     75%    0.92ms
     90%    1.63ms
     99%    6.18ms
  270243 requests in 5.00s, 66.75MB read
Requests/sec:  54004.21
Transfer/sec:     13.34MB
"""

WRK_WITH_ERRORS = """\
Running 10s test @ http://127.0.0.1:9101/
  1 threads and 200 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    50.95ms   20.10ms    1.20s    90.00%
    Req/Sec     3.70k   300.00     4.10k    70.00%
  Latency Distribution
     50%   50.95ms
     75%   60.00ms
     90%  100.00ms
     99%    1.20s
  37010 requests in 10.01s, 8.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 12
  Non-2xx or 3xx responses: 7
Requests/sec:   3697.30
Transfer/sec:    818.00KB
"""


def test_wrk_report_is_parsed_with_units() -> None:
    report = parse_wrk(WRK_CLEAN)
    assert report.requests == 270243
    assert report.duration_s == pytest.approx(5.0)
    assert report.requests_per_s == pytest.approx(54004.21)
    assert report.latency_avg_ms == pytest.approx(1.03)
    assert report.latency_ms == pytest.approx({50: 0.724, 75: 0.92, 90: 1.63, 99: 6.18})
    assert report.errors == 0


def test_wrk_errors_and_non_2xx_are_counted() -> None:
    report = parse_wrk(WRK_WITH_ERRORS)
    assert report.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 12}
    assert report.non_2xx_3xx == 7
    assert report.errors == 22
    assert report.latency_ms[99] == pytest.approx(1200.0)
    assert report.duration_s == pytest.approx(10.01)


def test_wrk_failure_text_is_refused() -> None:
    with pytest.raises(WrkOutputError):
        parse_wrk("unable to connect to 127.0.0.1:9:Connection refused\n")


def test_pid_stat_survives_spaces_and_parentheses_in_comm() -> None:
    line = "4242 (nginx: worker (x) y) S 4241 4241 4241 0 -1 4194624 100 0 0 0 77 23 5 6 20 0 1"
    stat = procstat.parse_pid_stat(line)
    assert (stat.pid, stat.comm, stat.ppid) == (4242, "nginx: worker (x) y", 4241)
    assert (stat.utime, stat.stime, stat.cpu_ticks) == (77, 23, 100)


def test_core_usage_from_two_proc_stat_samples() -> None:
    before = procstat.parse_proc_stat(
        "cpu  10 0 10 100 0 0 0 0 0 0\n"
        "cpu0 10 0 10 100 0 0 0 0 0 0\n"
        "cpu1 0 0 0 100 0 0 0 0 0 0\n"
        "intr 1 2 3\n"
    )
    after = procstat.parse_proc_stat(
        "cpu0 60 5 30 115 5 0 5 0 0 0\n"  # +100 jiffies: 80 busy, 20 idle+iowait, 0 steal
        "cpu1 0 0 40 140 0 0 0 20 0 0\n"  # +100 jiffies: 40 busy, 40 idle, 20 steal
    )
    usage = procstat.core_usage(before, after)
    assert usage[0].busy_percent == pytest.approx(80.0)
    assert usage[0].steal_percent == pytest.approx(0.0)
    assert usage[1].busy_percent == pytest.approx(40.0)
    assert usage[1].steal_percent == pytest.approx(20.0)


def test_vm_hwm_is_read_from_status_text() -> None:
    text = "Name:\tnginx\nVmPeak:\t  20000 kB\nVmHWM:\t    9400 kB\nVmRSS:\t    9000 kB\n"
    assert procstat.parse_vm_hwm_kib(text) == 9400
    assert procstat.parse_vm_hwm_kib("Name:\tkthreadd\n") is None


def test_process_tree_and_cpu_deltas() -> None:
    stats = [
        procstat.ProcStat(pid, "p", ppid, 0, 0)
        for pid, ppid in [(1, 0), (10, 1), (11, 10), (12, 10), (13, 11), (20, 1)]
    ]
    assert procstat.descendants(10, stats) == [10, 11, 12, 13]
    deltas = procstat.cpu_seconds_delta({10: 100, 11: 50}, {10: 150, 11: 50, 12: 10})
    ticks = procstat.CLOCK_TICKS
    assert deltas == {10: 50 / ticks, 11: 0.0, 12: 10 / ticks}


def test_live_process_tree_of_this_process_is_read() -> None:
    ticks = procstat.tree_cpu_ticks(os.getpid())
    assert os.getpid() in ticks
    assert procstat.read_vm_hwm_kib(os.getpid()) is not None
    assert set(procstat.read_core_times()) >= {0}


def run(
    config: str,
    round_no: int,
    rps: float,
    cpu_s: float,
    *,
    process_cpu_s: Mapping[str, float] | None = None,
    non_2xx_3xx: int = 0,
    worker_request_shares: Mapping[str, float] | None = None,
) -> RunResult:
    return RunResult(
        config=config,
        round=round_no,
        requests=int(rps * 10),
        duration_s=10.0,
        requests_per_s=rps,
        p50_ms=1.0,
        p99_ms=5.0,
        cpu_s=cpu_s,
        process_cpu_s=process_cpu_s or {"1 proxy": cpu_s},
        core_busy_percent={0: 90.0, 1: 95.0},
        core_steal_percent={0: 1.0, 1: 2.0},
        socket_errors={"connect": 0, "read": 0, "write": 0, "timeout": 0},
        non_2xx_3xx=non_2xx_3xx,
        worker_request_shares=worker_request_shares,
    )


def test_ratios_come_from_the_same_round_then_the_median() -> None:
    # Round 1 is slow for everybody (a noisy neighbour): same-round ratios cancel it out.
    runs = [
        run("nginx", 0, 40_000, 0.88),
        run("fleetgate", 0, 32_000, 0.96),
        run("nginx", 1, 20_000, 0.44),
        run("fleetgate", 1, 16_000, 0.48),
        run("nginx", 2, 40_000, 0.88),
        run("fleetgate", 2, 36_000, 0.90, non_2xx_3xx=3),
    ]
    nginx, fleetgate = summarize(runs, peak_rss_kib={"nginx": 9 * 1024})
    assert nginx.rps_ratio == pytest.approx(1.0)
    assert fleetgate.rps_ratio == pytest.approx(0.8)  # ratios 0.8, 0.8, 0.9
    assert fleetgate.median_rps == 32_000
    assert (fleetgate.min_rps, fleetgate.max_rps) == (16_000, 36_000)
    # µs/req: nginx 2.2 every round; fleetgate 3.0, 3.0, 2.5 -> ratio median 3.0 / 2.2
    assert fleetgate.cpu_us_per_request == pytest.approx(3.0)
    assert fleetgate.cpu_ratio == pytest.approx(3.0 / 2.2)
    assert fleetgate.flagged_runs == 1
    assert nginx.peak_rss_mib == pytest.approx(9.0)
    assert fleetgate.peak_rss_mib is None
    table = markdown_table([nginx, fleetgate])
    assert "| fleetgate | 32,000 | 16,000-36,000 | 0.80 |" in table
    assert table.count("\n") == 3


def test_without_nginx_there_are_no_ratios() -> None:
    (haproxy,) = summarize([run("haproxy", 0, 40_000, 0.9)])
    assert haproxy.rps_ratio is None
    assert haproxy.cpu_ratio is None
    assert "| haproxy | 40,000 | 40,000-40,000 | - |" in markdown_table([haproxy])


def test_worker_shares_by_cpu_and_by_metrics() -> None:
    runs = [
        run("fleetgate", 0, 1000, 1.0, process_cpu_s={"1 parent": 0.0, "2 w": 0.6, "3 w": 0.4}),
        run("fleetgate", 1, 1000, 1.0, process_cpu_s={"1 parent": 0.0, "2 w": 0.4, "3 w": 0.6}),
    ]
    runs.append(run("nginx", 0, 1000, 1.0, worker_request_shares={"0": 0.45, "1": 0.55}))
    fleetgate, nginx = summarize(runs)
    assert fleetgate.worker_cpu_shares == pytest.approx({"1 parent": 0.0, "2 w": 0.5, "3 w": 0.5})
    assert nginx.worker_request_shares == pytest.approx({"0": 0.45, "1": 0.55})
    lines = worker_lines([fleetgate, nginx])
    assert lines[0] == "- fleetgate: CPU share by process: 2 w 50%, 3 w 50%"
    assert (
        lines[1] == "- nginx: request share by worker (admin /metrics): worker 0 45%, worker 1 55%"
    )


METRICS_BEFORE = """\
# HELP fleetgate_requests_total Requests answered.
# TYPE fleetgate_requests_total counter
fleetgate_requests_total{worker="0",status_class="2xx"} 100
fleetgate_requests_total{worker="1",status_class="2xx"} 50
fleetgate_requests_total{worker="1",status_class="5xx"} 1
"""
METRICS_AFTER = """\
# HELP fleetgate_requests_total Requests answered.
# TYPE fleetgate_requests_total counter
fleetgate_requests_total{worker="0",status_class="2xx"} 700
fleetgate_requests_total{worker="1",status_class="2xx"} 450
fleetgate_requests_total{worker="1",status_class="5xx"} 1
"""


def test_worker_request_shares_from_two_scrapes() -> None:
    assert counter_by_label(METRICS_BEFORE, "fleetgate_requests_total", "worker") == {
        "0": 100.0,
        "1": 51.0,
    }
    shares = worker_shares(
        METRICS_BEFORE, METRICS_AFTER, metric="fleetgate_requests_total", label="worker"
    )
    assert shares == pytest.approx({"0": 0.6, "1": 0.4})
    assert worker_shares(METRICS_BEFORE, METRICS_AFTER, metric="nope", label="worker") is None


def test_route_table_has_the_requested_routes_and_a_reachable_target() -> None:
    documents = list(yaml.safe_load_all(route_table.routes_yaml(100)))
    assert len(documents) == 100
    hostnames = [doc["spec"]["hostnames"][0] for doc in documents]
    assert len(set(hostnames)) == 100
    aim = route_table.target(100)
    assert aim.host in hostnames
    assert all(doc["apiVersion"] == "gateway.networking.k8s.io/v1" for doc in documents)
    ref = documents[0]["spec"]["rules"][0]["backendRefs"][0]
    assert ref == {"name": "web", "namespace": "shop", "port": 80}
    cluster = yaml.safe_load(route_table.member_cluster_yaml("127.0.0.1:9001"))
    assert cluster["kind"] == "MemberCluster"
    port = cluster["spec"]["services"][0]["ports"][0]
    assert port == {"port": 80, "endpoints": ["127.0.0.1:9001"]}


def test_backend_body_is_104_bytes_of_json_and_templates_need_every_value() -> None:
    assert len(servers.BACKEND_BODY.encode()) == 104
    assert json.loads(servers.BACKEND_BODY)["status"] == "ok"
    with pytest.raises(KeyError, match="backend_port"):
        servers.render("haproxy.cfg", {"port": 1, "workers": 1})
    conf = servers.render(
        "haproxy.cfg",
        {
            "port": 1,
            "backend_port": 2,
            "workers": 1,
            "global_log": "",
            "defaults_log": "",
            "server_check": "",
        },
    )
    assert "server s1 127.0.0.1:2 maxconn 4000" in conf
    assert "{{" not in conf


def test_other_load_on_the_proxy_core_is_what_the_proxy_did_not_use() -> None:
    busy = {0: 95.0, 1: 90.0}
    assert other_load_percent(busy, [1], 70.0) == pytest.approx(20.0)
    assert other_load_percent(busy, [1], 99.0) == 0.0  # tick rounding never goes negative
    assert other_load_percent(busy, [0, 1], 150.0) == pytest.approx(35.0)


def test_options_parse_taskset_lists_and_refuse_unknown_configs() -> None:
    options = parse_args(["--only", "nginx,haproxy", "--proxy-cpus", "0-1,3", "--rounds", "2"])
    assert options.only == ("nginx", "haproxy")
    assert options.proxy_cores == [0, 1, 3]
    assert options.rounds == 2
    with pytest.raises(SystemExit):
        parse_args(["--only", "envoy"])
    with pytest.raises(SystemExit):
        parse_args(["--rounds", "0"])
