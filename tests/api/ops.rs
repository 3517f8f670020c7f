//! The built-in ops page: its data from the service's own state, and the page itself rendered
//! by a real browser (headless Chromium, installed by `scripts/setup`) after some traffic.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{DEMO_A_KEY, DEMO_B_KEY, spawn_app, spawn_app_with};

#[actix_rt::test]
async fn the_ops_data_counts_the_last_minute_per_tenant() {
    let app = spawn_app().await;
    let data = || async {
        let res = app.client.get(app.url("/ops/data")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()
    };
    // The first call is the window's start.
    let before = data().await;
    assert_eq!(before["tenants"][0]["feeds"], 0);
    for n in 0..30 {
        let res = app
            .feed("demo-a", DEMO_A_KEY, &format!("user_id=u{n}"))
            .await;
        assert_eq!(res.status(), 200);
    }
    for n in 0..10 {
        assert_eq!(
            app.feed("demo-b", DEMO_B_KEY, &format!("user_id=u{n}"))
                .await
                .status(),
            200
        );
    }
    let d = data().await;
    let tenant = |id: &str| {
        d["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == id)
            .unwrap()
            .clone()
    };
    let (a, b) = (tenant("demo-a"), tenant("demo-b"));
    assert_eq!(
        (a["feeds"].as_u64(), b["feeds"].as_u64()),
        (Some(30), Some(10)),
        "{d}"
    );
    assert!(a["feeds_per_second"].as_f64().unwrap() > 0.0);
    let (p50, p99) = (a["p50_ms"].as_f64().unwrap(), a["p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p99 >= p50, "{a}");
    assert_eq!(a["error_ratio"], 0.0);
    assert_eq!(a["degraded_ratio"], 0.0);
    let actors = d["actors"].as_array().unwrap();
    assert!(
        actors
            .iter()
            .any(|x| x["name"] == "gateway" && x["up"] == true),
        "{d}"
    );
    assert_eq!(d["store"]["backend"], "memory");
    assert_eq!(d["kafka"]["enabled"], false);
    assert_eq!(d["models"][0]["canary_ok"], true);
    assert!(d["ready"].as_bool().unwrap());
}

#[actix_rt::test]
async fn the_ops_page_renders_in_a_real_browser() {
    let app = spawn_app().await;
    for n in 0..20 {
        assert_eq!(
            app.feed("demo-a", DEMO_A_KEY, &format!("user_id=u{n}"))
                .await
                .status(),
            200
        );
    }
    let page = app.client.get(app.url("/ops")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    // Self-contained: nothing fetched from elsewhere.
    for external in ["src=\"http", "href=\"http", "@import", "<link"] {
        assert!(!html.contains(external), "{external}");
    }

    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ops-page");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("ops.png");
    let url = app.url("/ops");
    let chromium = |extra: &[String]| {
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--virtual-time-budget=5000")
        .args(extra)
        .arg(&url);
        // The browser talks to the server running in this test's own event loop.
        std::thread::spawn(move || {
            let out = cmd
                .output()
                .expect("chromium runs (scripts/setup installs it)");
            drop(profile);
            out
        })
    };
    let dom = chromium(&["--dump-dom".into()]);
    let shot = chromium(&[
        format!("--screenshot={}", screenshot.display()),
        "--window-size=1400,1000".into(),
    ]);
    let (dom, shot) = loop {
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
        if dom.is_finished() && shot.is_finished() {
            break (dom.join().unwrap(), shot.join().unwrap());
        }
    };
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8(dom.stdout).unwrap();
    std::fs::write(artifacts.join("ops.html"), &dom).unwrap();
    // Rendered by the page's script from /ops/data: the status, a row per tenant with numbers,
    // the actor table.
    assert!(
        dom.contains(r#"<span id="status" class="ok">ready</span>"#),
        "{dom}"
    );
    let row = dom
        .split(r#"<tr data-tenant="demo-a">"#)
        .nth(1)
        .expect("a demo-a row")
        .split("</tr>")
        .next()
        .unwrap();
    let numbers: Vec<f64> = row
        .split("<td class=\"num")
        .skip(1)
        .filter_map(|c| {
            c.split('>')
                .nth(1)?
                .split('<')
                .next()?
                .trim_end_matches(" %")
                .parse()
                .ok()
        })
        .collect();
    assert!(
        numbers.len() >= 3 && numbers[0] > 0.0,
        "feeds/s, p50, p99 …: {row}"
    );
    assert!(dom.contains(r#"<tr data-tenant="demo-b">"#));
    for actor in ["gateway", "candidates", "ranker"] {
        assert!(
            dom.contains(&format!(r#"<tr data-actor="{actor}">"#)),
            "{actor}"
        );
    }
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "a screenshot at {screenshot:?}"
    );
}

#[actix_rt::test]
async fn the_ops_page_can_be_turned_off() {
    let app = spawn_app_with(&[("ops.enabled", false.into())]).await;
    for path in ["/ops", "/ops/data"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
}
