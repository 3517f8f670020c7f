//! The load-test tooling itself: the k6 scripts type-check against k6's API types, the
//! benchmark harness produces a complete report on a tiny run, and the chaos harness runs every
//! scenario. No timing is asserted: figures go to reports, not to pass/fail.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn k6_scripts_type_check_against_the_k6_api() {
    let out = Command::new("bash")
        .arg(Path::new(ROOT).join("loadtest/k6/check.sh"))
        .output()
        .expect("bash runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tsc found errors (or npm is missing: scripts/setup):\n{text}"
    );
    assert!(text.contains("OK, no type errors"), "{text}");
}

/// The harnesses drive the service at saturation: run side by side on two cores, each would
/// measure the others (and the chaos scenarios' recovery waits would stretch). One at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static HARNESS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HARNESS.lock().unwrap_or_else(|e| e.into_inner())
}

fn number(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} missing or not a number in the report"))
}

/// Runs the Python script `loadtest/<script>` with `args` and `--binary` this test build; its
/// stdout, once it exited 0 (else the test fails with both outputs).
fn run_script(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("loadtest").join(script))
        .args(args)
        .args(["--binary", env!("CARGO_BIN_EXE_eaglerank")])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "loadtest/{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `loadtest/bench --smoke <args>` on the test build into `out_dir`: the markdown
/// report's path and the JSON report.
fn bench(args: &[&str], out_dir: &Path) -> (String, Value) {
    let out_dir = out_dir.to_str().expect("a UTF-8 path");
    let args = [&["--smoke"], args, &["--out", out_dir]].concat();
    let stdout = run_script("bench", &args);
    let md = stdout.trim().to_owned();
    let json = std::fs::read_to_string(md.replace(".md", ".json")).unwrap();
    (md, serde_json::from_str(&json).unwrap())
}

#[test]
fn the_benchmark_harness_writes_a_complete_report() {
    let _serial = one_at_a_time();
    let out_dir = tempfile::tempdir().unwrap();
    // With two CPUs or more, Redis runs on the last one alone (`--redis-cpus`), as the
    // README's run with Redis on cores of its own does; the report says where each ran.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let last = (cpus - 1).to_string();
    let pinned: &[&str] = if cpus >= 2 {
        &["--redis-cpus", &last]
    } else {
        &[]
    };
    let (md, report) = bench(pinned, out_dir.path());
    assert!(
        md.ends_with(if cpus >= 2 {
            "-smoke-redis-own-cpus.md"
        } else {
            "-smoke.md"
        }),
        "{md}"
    );

    for key in ["host", "cpu_model", "git_revision", "date", "wrk"] {
        assert!(
            report["machine"][key]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "machine.{key}"
        );
    }
    assert!(number(&report, "machine.cores") >= 1.0);
    let backends = report["backends"].as_array().unwrap();
    let names: Vec<&str> = backends
        .iter()
        .map(|b| b["backend"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["memory", "redis"]);
    let mut degraded_lines = Vec::new();
    for b in backends {
        // From the service's own counter. Not asserted zero: this debug build under saturation
        // on one CPU takes Redis calls past their 100 ms timeout now and then (14 of 453 feeds
        // in one run), which is what the line is there to show.
        let degraded = number(b, "saturation.degraded_feeds");
        assert!(degraded >= 0.0 && degraded.fract() == 0.0, "{b}");
        degraded_lines.push(format!(
            "Feeds served degraded (the popularity fallback) during the feed saturation run: {degraded:.0};"
        ));
        for run in ["healthz", "saturation"] {
            assert!(number(b, &format!("{run}.rps")) > 0.0, "{run}");
            assert_eq!(
                number(b, &format!("{run}.error_count")),
                0.0,
                "{run} had errors"
            );
            for p in ["p50", "p90", "p99", "p999"] {
                number(b, &format!("{run}.latency_ms.{p}"));
            }
        }
        assert!(!b["fixed_rate"].as_array().unwrap().is_empty());
        assert!(!b["saturation_timeline"].as_array().unwrap().is_empty());
        for key in [
            "idle_rss_mb",
            "cpu_ms_per_request",
            "components.inference.p50_ms",
            "components.inference.p99_ms",
            "components.feature_assembly.p50_ms",
            "components.store_fetch.memory.p50_ms",
            "ratios.inference_ceiling_rps",
            "ratios.throughput_vs_inference_ceiling",
            "ratios.throughput_vs_healthz",
            "ratios.p99_at_half_vs_inference_p99",
        ] {
            assert!(number(b, key) > 0.0, "{key}");
        }
    }
    for b in backends {
        // The service's CPU split into user and kernel time, which add up to the total.
        let (user, system) = (
            number(b, "cpu_user_ms_per_request"),
            number(b, "cpu_system_ms_per_request"),
        );
        assert!(user > 0.0 && system >= 0.0, "{b}");
        let total = number(b, "cpu_ms_per_request");
        assert!(
            (user + system - total).abs() <= 1e-9 * total.max(1.0),
            "{b}"
        );
    }
    // What a feed asks of Redis: its profile and history, two `GET`s, for every feed not
    // served degraded (a degraded one may have asked and timed out: more, never fewer).
    let redis = &backends[1];
    let feeds = number(redis, "saturation.requests");
    let served = feeds - number(redis, "saturation.degraded_feeds");
    let gets = number(redis, "redis_commands_per_request.get");
    assert!(
        gets * feeds >= 2.0 * served - 0.5 * feeds / 1e4,
        "{gets} GETs a feed"
    );
    assert!(backends[0].get("redis_commands_per_request").is_none());
    number(&backends[1], "components.store_fetch.redis.p50_ms");
    // Redis's own CPU per feed: what bounds the feeds/s one Redis serves to every replica.
    assert!(number(&backends[1], "redis_cpu_ms_per_request") > 0.0);
    assert!(backends[0].get("redis_cpu_ms_per_request").is_none());
    if cpus >= 2 {
        assert_eq!(backends[1]["redis_cpus"], last.as_str());
        for b in backends {
            let service = b["service_cpus"].as_str().unwrap();
            assert!(!service.contains(&last), "the service ran on {service}");
        }
    }
    let text = std::fs::read_to_string(&md).unwrap();
    for needle in [
        "feed saturation",
        "/healthz saturation",
        "inference ceiling",
        "idle RSS",
        "Redis CPU per feed request",
        "## Redis against the embedded store",
        "Redis commands per feed at saturation",
        "`get` ",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from the markdown report"
        );
    }
    for line in &degraded_lines {
        assert!(
            text.contains(line.as_str()),
            "{line} missing from the markdown report"
        );
    }
    let charts = std::fs::read_dir(out_dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "svg")
        })
        .count();
    assert_eq!(
        charts, 4,
        "latency-over-time and throughput-vs-latency, per backend"
    );
}

/// `loadtest/alternate` (here the test build twice, on a Redis): one line per run with the
/// figures a comparison reads, then one mean per binary.
#[test]
fn the_alternate_script_times_binaries_in_turns() {
    let _serial = one_at_a_time();
    let exe = env!("CARGO_BIN_EXE_eaglerank");
    let stdout = run_script("alternate", &["--smoke", "--redis", "--binary", exe]);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "two runs and two means:\n{stdout}");
    for line in &lines {
        assert_eq!(line["binary"], exe);
        for key in [
            "feeds_per_second",
            "service_cpu_ms_per_feed",
            "redis_cpu_ms_per_feed",
        ] {
            assert!(number(line, key) > 0.0, "{key}: {line}");
        }
        assert_eq!(number(line, "errors"), 0.0, "{line}");
        let degraded = number(line, "degraded_feeds");
        assert!(degraded >= 0.0, "{line}");
    }
    assert!(lines[..2].iter().all(|l| l.get("mean_of").is_none()));
    assert!(lines[2..].iter().all(|l| number(l, "mean_of") == 1.0));
}

/// `loadtest/alternate --backends`: the test build on the embedded store, then on a Redis, in
/// turns; each round's ratio of feeds/s is printed, and their median, lowest and highest last.
#[test]
fn the_alternate_script_times_the_two_backends_in_turns() {
    let _serial = one_at_a_time();
    let stdout = run_script("alternate", &["--smoke", "--backends"]);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        6,
        "two runs, their ratio, two means, the summary:\n{stdout}"
    );
    let (embedded, redis) = (&lines[0], &lines[1]);
    assert_eq!(embedded["backend"], "embedded");
    assert_eq!(redis["backend"], "redis");
    // Only the run on Redis has Redis's CPU: the embedded run never reached it.
    assert!(
        embedded.get("redis_cpu_ms_per_feed").is_none(),
        "{embedded}"
    );
    assert!(number(redis, "redis_cpu_ms_per_feed") > 0.0, "{redis}");
    for run in [embedded, redis] {
        assert!(number(run, "feeds_per_second") > 0.0, "{run}");
        assert_eq!(number(run, "errors"), 0.0, "{run}");
    }
    let ratio = number(&lines[2], "redis_vs_embedded");
    let want = number(redis, "feeds_per_second") / number(embedded, "feeds_per_second") - 1.0;
    assert!((ratio - want).abs() < 1e-3, "{ratio} against {want}");
    assert_eq!(lines[3]["backend"], "embedded");
    assert_eq!(lines[4]["backend"], "redis");
    let summary = &lines[5]["redis_vs_embedded"];
    assert_eq!(number(summary, "rounds"), 1.0);
    for key in ["median", "lowest", "highest"] {
        assert!(
            (number(summary, key) - ratio).abs() < 1e-9,
            "{key}: {summary}"
        );
    }
    assert_eq!(summary["within_15_percent"], ratio >= -0.15);
}

#[test]
fn the_soak_reports_rss_over_time_for_both_backends() {
    let _serial = one_at_a_time();
    let out_dir = tempfile::tempdir().unwrap();
    let (md, report) = bench(&["--soak", "0.2", "--soak-only"], out_dir.path());
    assert!(md.ends_with("-soak0.2m.md"), "{md}");
    let backends = report["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    for b in backends {
        assert!(b["soak"]["samples"].as_array().unwrap().len() >= 2);
        assert!(number(b, "soak.summary.plateau_mb") > 0.0);
        assert!(number(b, "soak.summary.feeds_per_s_mean") > 0.0);
        assert!(number(b, "soak.wrk.rps") > 0.0);
        assert_eq!(number(b, "soak.wrk.error_count"), 0.0);
    }
    let text = std::fs::read_to_string(&md).unwrap();
    for needle in ["## Soak: memory", "## Soak: redis", "RSS plateau"] {
        assert!(text.contains(needle), "{needle} missing");
    }
}

/// `loadtest/memory` on a tiny run: Redis bytes per served feed, the embedded store's seed time
/// and bytes per entity, and the Redis backend's RSS per cached item, as numbers.
#[test]
fn the_memory_script_measures_both_backends() {
    let _serial = one_at_a_time();
    let run =
        |args: &[&str]| -> Value { serde_json::from_str(&run_script("memory", args)).unwrap() };
    // 1 000 feeds, not 200: a bucket of the served-feed log past 128 feeds leaves Redis's
    // compact hash encoding, and 200 feeds measured either side of that depending on the
    // clock (525 or 649 bytes a feed); at 1 000 the encoding's cost is amortized (~290).
    let redis = run(&["redis", "--feeds", "1000"]);
    // A served feed's entry in Redis: a few hundred bytes, not nothing and not kilobytes.
    let per_feed = number(&redis, "bytes_per_first_page");
    assert!((50.0..=600.0).contains(&per_feed), "{redis}");
    assert!(number(&redis, "second_pages") > 0.0);
    let embedded = run(&["embedded", "--items", "2000", "--users", "300"]);
    assert!(
        number(&embedded, "seeded.estimated_bytes_per_item") > 100.0,
        "{embedded}"
    );
    assert!(number(&embedded, "seeded.estimated_bytes_per_user") > 100.0);
    assert_eq!(number(&embedded, "seeded.entries.items"), 2000.0);
    assert!(number(&embedded, "seeded.rss_mb") > number(&embedded, "empty.rss_mb"));
    // Every item read once lands in the Redis-backed replica's local cache, and costs RSS.
    let cache = run(&["item-cache", "--items", "3000"]);
    assert!(number(&cache, "cache_misses") >= 3000.0, "{cache}");
    let per_item = number(&cache, "rss_bytes_per_cached_item");
    assert!((1.0..=65_536.0).contains(&per_item), "{cache}");
}

/// `loadtest/catalog-writes` on a tiny run: the three phases, feeds served in each, and new
/// items accepted only while writing.
#[test]
fn the_catalog_writes_script_times_feeds_around_an_import() {
    let _serial = one_at_a_time();
    let stdout = run_script(
        "catalog-writes",
        &[
            "--items",
            "500",
            "--seconds",
            "1",
            "--batch",
            "5",
            "--every",
            "0.1",
        ],
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let phases = report["phases"].as_array().unwrap();
    let writes: Vec<bool> = phases
        .iter()
        .map(|p| p["writes"].as_bool().unwrap())
        .collect();
    assert_eq!(writes, [false, true, false], "{report}");
    for p in phases {
        assert!(p["feeds"].as_u64().unwrap() > 0, "{p}");
        assert!(
            p["max_ms"].as_f64().unwrap() >= p["p50_ms"].as_f64().unwrap(),
            "{p}"
        );
        let added = p["items_added"].as_u64().unwrap();
        assert_eq!(added > 0, p["writes"].as_bool().unwrap(), "{p}");
    }
    assert!(stdout.contains("with writes"), "{stdout}");
}

/// The soak's reading of an RSS curve: a plateau, when it was reached, growth at the end.
#[test]
fn the_soak_summary_finds_the_plateau_and_the_late_growth() {
    let script = r#"
import importlib.machinery, importlib.util, json, sys
loader = importlib.machinery.SourceFileLoader("bench", sys.argv[1])
bench = importlib.util.module_from_spec(importlib.util.spec_from_loader("bench", loader))
loader.exec_module(bench)
# 10 minutes every 5 s: RSS rises 100 -> 300 MB over the first 2 minutes, then stays flat.
flat = [{"t": t, "rps": 1000.0, "rss_mb": min(100 + t * 200 / 120, 300)} for t in range(0, 605, 5)]
# The same, but growing 0.1 MB/s from minute 4 on.
leak = [dict(s, rss_mb=s["rss_mb"] + max(0, s["t"] - 240) * 0.1) for s in flat]
print(json.dumps([bench.soak_summary(flat), bench.soak_summary(leak)]))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(Path::new(ROOT).join("loadtest/bench"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let [flat, leak]: [Value; 2] = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(number(&flat, "plateau_mb"), 300.0);
    // Within 2 % of 300 MB (294 MB) from 120 s on.
    assert_eq!(number(&flat, "plateau_reached_s"), 120.0);
    assert_eq!(number(&flat, "growth_last_5min_mb"), 0.0);
    assert_eq!(number(&flat, "slope_last_5min_mb_per_min"), 0.0);
    // 300 s at 0.1 MB/s: 30 MB in the last 5 minutes, a trend of 6 MB a minute.
    assert!((number(&leak, "growth_last_5min_mb") - 30.0).abs() < 0.5);
    assert!((number(&leak, "slope_last_5min_mb_per_min") - 6.0).abs() < 0.01);
    assert!(number(&leak, "growth_last_5min_pct") > 5.0);
}

#[test]
fn the_chaos_harness_runs_every_scenario_and_prints_both_tables() {
    let _serial = one_at_a_time();
    // One second per fault and two connections: the tooling works end to end; the figures of
    // a real run are the README's.
    let stdout = run_script("chaos", &["--fault-seconds", "1", "--connections", "2"]);
    let row = |scenario: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {scenario} |")))
            .unwrap_or_else(|| panic!("no row for {scenario}:\n{stdout}"))
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    // Redis hung or killed: every feed answered 200, and the fault was seen (degraded feeds).
    // How many, and how fast, is the figure of a real run (README): a 1 s hang with the debug
    // binary is mostly the first feeds meeting the command timeout.
    for scenario in ["redis-hang", "redis-kill"] {
        let r = row(scenario);
        assert_eq!(r[3], "0", "{scenario}: non-200 answers\n{stdout}");
        let degraded: f64 = r[5].trim_end_matches('%').parse().unwrap();
        assert!(degraded > 0.0, "{scenario}: degraded share\n{stdout}");
    }
    // A corrupted model file: rejected by the reload, nothing failed.
    let r = row("model-corrupt");
    assert_eq!((r[3].as_str(), r[10].as_str()), ("0", "1"), "{stdout}");
    // Poison messages: every valid event applied, none of the poison.
    let r = row("kafka-poison");
    let (accepted, applied) = r[6].split_once(" / ").unwrap();
    assert_eq!(accepted, applied, "{stdout}");
    assert_ne!(r[8], "0", "poison dead-lettered\n{stdout}");
    assert_eq!(r[9], "0 (0)", "no restart\n{stdout}");
    // Brokers down: what was accepted is applied.
    let r = row("kafka-down");
    let (accepted, applied) = r[6].split_once(" / ").unwrap();
    assert_eq!(accepted, applied, "{stdout}");
    // Panics: restarts happened, and the feeds went on.
    let r = row("actor-panics");
    assert_ne!(r[9], "0 (0)", "{stdout}");
}
