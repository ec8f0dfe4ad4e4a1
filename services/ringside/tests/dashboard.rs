//! The dashboard end to end: `ringside up` (nodes, reducer, watcher, collector,
//! bridge) and the page in a real headless Chromium (Debian's, through chromedriver):
//! it shows the members, follows a node added and one removed, names each rebalance's
//! moved fraction, shows an earlier epoch and comes back to live, and its key probe
//! names the owner the reducer's `Lookup` names. Screenshots go to
//! `target/tmp/dashboard/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod up_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringside_events::pb;
use ringside_testkit::browser::Browser;
use serde_json::{Value, json};
use up_support::*;

/// The page in a browser, driven from this (synchronous) test.
struct Page {
    rt: tokio::runtime::Runtime,
    browser: Option<Browser>,
    shots: PathBuf,
}

impl Page {
    fn open(url: &str) -> Page {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let browser = rt.block_on(Browser::start(1400, 900)).unwrap();
        rt.block_on(browser.goto(url)).unwrap();
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
        std::fs::create_dir_all(&shots).unwrap();
        Page {
            rt,
            browser: Some(browser),
            shots,
        }
    }

    fn js(&self, script: &str, args: Vec<Value>) -> Value {
        let browser = self.browser.as_ref().unwrap();
        self.rt.block_on(browser.execute(script, args)).unwrap()
    }

    fn state(&self, what: &str) -> Value {
        self.js(
            &format!("return window.ringside ? window.ringside.state.{what} : null"),
            vec![],
        )
    }

    fn text(&self, selector: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
            vec![json!(selector)],
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    fn shot(&self, name: &str) {
        let browser = self.browser.as_ref().unwrap();
        let png = self.rt.block_on(browser.screenshot()).unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    fn close(mut self) {
        if let Some(browser) = self.browser.take() {
            self.rt.block_on(browser.close());
        }
    }
}

fn lookup(grpc: &str, key: &str) -> pb::LookupResponse {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client =
            pb::ring_service_client::RingServiceClient::connect(format!("http://{grpc}"))
                .await
                .unwrap();
        client
            .lookup(pb::LookupRequest {
                ring: "default".into(),
                key: key.as_bytes().to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
    })
}

/// The stored `RingRebalanced` at `seq`, as the bridge's API gives it.
fn rebalance_at(page: &Page, dashboard: SocketAddr, seq: u64) -> Value {
    let (status, body) = page
        .rt
        .block_on(ringside_testkit::http::get(
            dashboard,
            &format!("/api/events?from={seq}&to={seq}"),
        ))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    page["events"][0]["event"]["ringRebalanced"].clone()
}

/// Waits until the page shows the reducer's ring: its epoch and members.
fn wait_in_step(page: &Page, grpc: &str, within: Duration) -> (pb::RingSnapshot, Duration) {
    let ring = get_ring(grpc);
    let start = Instant::now();
    let want: Vec<String> = member_ids(&ring);
    wait_for(within, "the page to show the reducer's ring", || {
        page.state("epoch") == json!(ring.epoch) && page.state("members") == json!(want)
    });
    (ring, start.elapsed())
}

#[test]
fn the_dashboard_follows_the_ring_travels_in_time_and_probes_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (up, grpc) = Up::ready(dir.path(), 2, &[]);
    let dashboard: SocketAddr = up.record()["endpoints"]["bridge.dashboard"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let page = Page::open(&format!("http://{dashboard}/"));

    // The members, each with a row, and the epoch and checksum of the reducer's ring.
    let (ring, _) = wait_in_step(&page, &grpc, Duration::from_secs(30));
    for id in member_ids(&ring) {
        wait_for(Duration::from_secs(10), "a serving row per member", || {
            page.js(
                "const r = document.querySelector(`#members [data-member=\"${arguments[0]}\"]`); return r && r.dataset.state",
                vec![json!(id)],
            ) == json!("serving")
        });
    }
    assert_eq!(page.text("#epoch"), ring.epoch.to_string());
    assert_eq!(page.text("#checksum"), ring.checksum.to_string());
    assert_eq!(
        page.js(
            "return document.getElementById('conn').dataset.state",
            vec![]
        ),
        json!("live")
    );
    page.shot("1-live");

    // A node joins: the ring moves on the page, and the timeline names the move.
    ok(&up.ringside(&["scale", "3", "--wait", "30"]));
    let (three, took) = wait_in_step(&page, &grpc, Duration::from_secs(10));
    println!(
        "the page showed epoch {} {took:?} after the reducer served it",
        three.epoch
    );
    let event = rebalance_at(&page, dashboard, three.rebalance_sequence);
    let moved = event["movedFraction"].as_f64().unwrap();
    let entry = page.text(&format!(
        "#timeline [data-kind=\"rebalance\"][data-epoch=\"{}\"]",
        three.epoch
    ));
    let percent = format!("{:.1}%", moved * 100.0);
    assert!(entry.contains(&percent), "{entry:?} does not say {percent}");
    page.shot("2-joined");

    // A node leaves.
    ok(&up.ringside(&["scale", "2", "--wait", "30"]));
    let (two, _) = wait_in_step(&page, &grpc, Duration::from_secs(10));
    assert!(two.epoch > three.epoch);

    // Back in time to the epoch with three members, then back to live.
    page.js(
        "const t = document.getElementById('travel'); t.value = String(arguments[0]);
         t.dispatchEvent(new Event('input', {bubbles: true}));
         t.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![json!(three.rebalance_sequence)],
    );
    let asked = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "the page to show the past epoch",
        || {
            page.text("#epoch") == three.epoch.to_string()
                && page.js("return document.getElementById('banner').hidden", vec![])
                    == json!(false)
        },
    );
    println!(
        "the page showed sequence {} after {:?}",
        three.rebalance_sequence,
        asked.elapsed()
    );
    assert_eq!(page.state("members"), json!(member_ids(&three)));
    assert!(
        page.text("#banner")
            .contains(&three.rebalance_sequence.to_string()),
        "{}",
        page.text("#banner")
    );
    page.shot("3-history");
    page.js("document.getElementById('live').click()", vec![]);
    wait_for(Duration::from_secs(10), "the page to be live again", || {
        page.text("#epoch") == two.epoch.to_string()
            && page.js("return document.getElementById('banner').hidden", vec![]) == json!(true)
    });

    // The key probe names the owner the reducer names.
    page.js(
        "document.getElementById('probe-input').value = arguments[0];
         document.getElementById('probe-form').requestSubmit();",
        vec![json!("user:42")],
    );
    let owner = lookup(&grpc, "user:42").owner.unwrap().id;
    wait_for(Duration::from_secs(10), "the probe's answer", || {
        page.text("#probe-owner") == owner
    });
    page.shot("4-probe");

    let errors = page.js("return window.ringside.errors", vec![]);
    assert_eq!(errors, json!([]), "the page's console has errors");
    page.close();
    drop(up);
}
