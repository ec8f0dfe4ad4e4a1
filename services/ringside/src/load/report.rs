//! What a run counted, and the summary printed at its end (a table, or `--output json`).
//!
//! - A request is *answered* when a response came back (any status); its latency
//!   counts. Transport failures (timeouts, refused connections) have no latency.
//! - An answer is *served* when the node handled the key: 2xx, or 404 for a read.
//!   Forwarding and each node's share (`Ringside-Served-By`) count over served answers.
//! - Every other outcome is an error, grouped by kind: `HTTP 503`, `timeout`,
//!   `connect: connection refused`, ...

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use super::client::Exchange;
use super::histogram::Histogram;
use super::targets::RingView;
use super::workload::Op;
use crate::output::{Output, write_json, write_table};

/// Counts of one kind of request.
#[derive(Debug, Default)]
struct OpStats {
    requests: u64,
    ok: u64,
    not_found: u64,
    errors: u64,
    latency: Histogram,
}

/// Everything a run counts.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    get: OpStats,
    put: OpStats,
    all: OpStats,
    errors: BTreeMap<String, u64>,
    served: u64,
    forwarded: u64,
    served_by: BTreeMap<String, u64>,
}

/// The name under which answers without `Ringside-Served-By` are counted.
const UNNAMED: &str = "(no served-by)";

impl Stats {
    /// Counts one finished request.
    pub(crate) fn add(&mut self, op: Op, exchange: &Exchange) {
        let per_op = match op {
            Op::Get => &mut self.get,
            Op::Put => &mut self.put,
        };
        let error = match &exchange.result {
            Err(kind) => Some(kind.clone()),
            Ok(reply) => {
                per_op.latency.record(exchange.latency);
                self.all.latency.record(exchange.latency);
                let found = (200..300).contains(&reply.status);
                let absent = op == Op::Get && reply.status == 404;
                if found || absent {
                    self.served += 1;
                    self.forwarded += u64::from(reply.forwarded);
                    let node = reply.served_by.as_deref().unwrap_or(UNNAMED);
                    *self.served_by.entry(node.to_owned()).or_default() += 1;
                }
                if found {
                    per_op.ok += 1;
                    self.all.ok += 1;
                } else if absent {
                    per_op.not_found += 1;
                    self.all.not_found += 1;
                }
                (!found && !absent).then(|| format!("HTTP {}", reply.status))
            }
        };
        per_op.requests += 1;
        self.all.requests += 1;
        if let Some(kind) = error {
            per_op.errors += 1;
            self.all.errors += 1;
            *self.errors.entry(kind).or_default() += 1;
        }
    }

    /// The progress line: errors, forwarded fraction, p99.
    pub(crate) fn line(&self) -> String {
        format!(
            "{} done, {} errors, {:.0}% forwarded, p99 {:.2} ms",
            self.all.requests,
            self.all.errors,
            100.0 * fraction(self.forwarded, self.served),
            ms(self.all.latency.quantile(0.99))
        )
    }
}

fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Milliseconds, to the microsecond the histogram keeps.
fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0, 3)
}

/// `v` with at most `digits` decimals, so JSON shows 0.407, not 0.40700000000000003.
fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// The operations table: reads, writes, all.
#[derive(Debug, Serialize)]
pub(crate) struct Ops {
    get: OpSummary,
    put: OpSummary,
    all: OpSummary,
}

/// One row of the operations table.
#[derive(Debug, Serialize)]
pub(crate) struct OpSummary {
    requests: u64,
    ok: u64,
    not_found: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl From<&OpStats> for OpSummary {
    fn from(s: &OpStats) -> Self {
        Self {
            requests: s.requests,
            ok: s.ok,
            not_found: s.not_found,
            errors: s.errors,
            p50_ms: ms(s.latency.quantile(0.5)),
            p99_ms: ms(s.latency.quantile(0.99)),
            p999_ms: ms(s.latency.quantile(0.999)),
            max_ms: ms(s.latency.max()),
        }
    }
}

/// One node's share of the served requests, against its share of the ring.
#[derive(Debug, Serialize)]
pub(crate) struct NodeShare {
    node: String,
    /// Its API address, when the ring was read.
    address: Option<String>,
    served: u64,
    served_share: f64,
    /// Its share of the key space, when the ring was read.
    ring_share: Option<f64>,
}

/// The ring the load ran against.
#[derive(Debug, Serialize)]
pub(crate) struct RingSummary {
    /// Epoch when the load started.
    first_epoch: u64,
    /// Epoch when it ended (the shares are this ring's).
    last_epoch: u64,
    /// Re-reads of the ring that failed (the last targets were kept).
    refresh_failures: u64,
}

/// How the run went, besides the counts.
#[derive(Debug)]
pub(crate) struct RunFacts {
    /// The run id in every value and record line.
    pub(crate) run: u64,
    /// The seed of the request sequence (`--seed` repeats it).
    pub(crate) seed: u64,
    /// From the first request to the end of the last.
    pub(crate) elapsed: Duration,
    /// `--rate`.
    pub(crate) target_rate: f64,
    /// Requests sent.
    pub(crate) sent: u64,
    /// Requests due while `--max-in-flight` were in flight: not sent.
    pub(crate) skipped: u64,
    /// `--max-in-flight`.
    pub(crate) max_in_flight: usize,
    /// `--clients`.
    pub(crate) clients: usize,
    /// Stopped by Ctrl-C.
    pub(crate) interrupted: bool,
    /// The ring at the start, if read.
    pub(crate) first_ring: Option<RingView>,
    /// The ring at the end, if read.
    pub(crate) last_ring: Option<RingView>,
    /// Failed re-reads of the ring.
    pub(crate) refresh_failures: u64,
    /// `--record`.
    pub(crate) record: Option<String>,
}

/// The summary of a run.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    run: String,
    seed: u64,
    seconds: f64,
    target_rate: f64,
    achieved_rate: f64,
    sent: u64,
    skipped: u64,
    max_in_flight: usize,
    clients: usize,
    interrupted: bool,
    ops: Ops,
    errors: BTreeMap<String, u64>,
    served: u64,
    forwarded: u64,
    forwarded_fraction: f64,
    nodes: Vec<NodeShare>,
    ring: Option<RingSummary>,
    record: Option<String>,
}

impl Summary {
    /// The summary of what `stats` counted in the run `facts` describes.
    pub(crate) fn new(stats: &Stats, facts: RunFacts) -> Self {
        let members = facts.last_ring.as_ref().map(|r| &r.members);
        let mut ids: Vec<&String> = stats.served_by.keys().collect();
        ids.extend(members.into_iter().flat_map(|m| m.keys()));
        ids.sort();
        ids.dedup();
        let nodes = ids
            .into_iter()
            .map(|id| {
                let served = stats.served_by.get(id).copied().unwrap_or(0);
                let member = members.and_then(|m| m.get(id));
                NodeShare {
                    node: id.clone(),
                    address: member.map(|(address, _)| address.clone()),
                    served,
                    served_share: round(fraction(served, stats.served), 4),
                    // A node that served but is not (or no longer) in the ring owns none.
                    ring_share: members.map(|_| member.map_or(0.0, |&(_, share)| round(share, 4))),
                }
            })
            .collect();
        let ring = match (&facts.first_ring, &facts.last_ring) {
            (Some(first), Some(last)) => Some(RingSummary {
                first_epoch: first.epoch,
                last_epoch: last.epoch,
                refresh_failures: facts.refresh_failures,
            }),
            _ => None,
        };
        let seconds = facts.elapsed.as_secs_f64();
        Self {
            run: super::record::hex(facts.run),
            seed: facts.seed,
            seconds: round(seconds, 3),
            target_rate: facts.target_rate,
            achieved_rate: if seconds > 0.0 {
                round(facts.sent as f64 / seconds, 1)
            } else {
                0.0
            },
            sent: facts.sent,
            skipped: facts.skipped,
            max_in_flight: facts.max_in_flight,
            clients: facts.clients,
            interrupted: facts.interrupted,
            ops: Ops {
                get: (&stats.get).into(),
                put: (&stats.put).into(),
                all: (&stats.all).into(),
            },
            errors: stats.errors.clone(),
            served: stats.served,
            forwarded: stats.forwarded,
            forwarded_fraction: round(fraction(stats.forwarded, stats.served), 4),
            nodes,
            ring,
            record: facts.record,
        }
    }

    /// Prints the summary as `output` asks.
    pub(crate) fn write(&self, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
        if output == Output::Json {
            return write_json(out, self);
        }
        writeln!(
            out,
            "ringside load (seed {}): {} requests in {:.1} s ({:.1}/s of {} asked), {} skipped at {} in flight, {} clients{}",
            self.seed,
            self.sent,
            self.seconds,
            self.achieved_rate,
            self.target_rate,
            self.skipped,
            self.max_in_flight,
            self.clients,
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            }
        )?;
        writeln!(out)?;
        let ops = [
            ("GET", &self.ops.get),
            ("PUT", &self.ops.put),
            ("ALL", &self.ops.all),
        ];
        let rows: Vec<Vec<String>> = ops
            .iter()
            .filter(|(name, op)| op.requests > 0 || *name == "ALL")
            .map(|(name, op)| {
                vec![
                    (*name).to_owned(),
                    op.requests.to_string(),
                    op.ok.to_string(),
                    op.not_found.to_string(),
                    op.errors.to_string(),
                    format!("{:.2}", op.p50_ms),
                    format!("{:.2}", op.p99_ms),
                    format!("{:.2}", op.p999_ms),
                    format!("{:.2}", op.max_ms),
                ]
            })
            .collect();
        write_table(
            out,
            &[
                "OP",
                "REQUESTS",
                "OK",
                "NOT FOUND",
                "ERRORS",
                "P50 MS",
                "P99 MS",
                "P999 MS",
                "MAX MS",
            ],
            &rows,
        )?;
        if !self.errors.is_empty() {
            writeln!(out)?;
            let rows: Vec<Vec<String>> = self
                .errors
                .iter()
                .map(|(kind, n)| vec![kind.clone(), n.to_string()])
                .collect();
            write_table(out, &["ERROR", "COUNT"], &rows)?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "forwarded: {} of {} served ({:.1}%)",
            self.forwarded,
            self.served,
            100.0 * self.forwarded_fraction
        )?;
        if let Some(ring) = &self.ring {
            writeln!(
                out,
                "ring: epoch {} at the start, {} at the end (shares below), {} failed re-reads",
                ring.first_epoch, ring.last_epoch, ring.refresh_failures
            )?;
        }
        writeln!(out)?;
        let rows: Vec<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.node.clone(),
                    n.address.clone().unwrap_or_else(|| "-".into()),
                    n.served.to_string(),
                    format!("{:.3}", n.served_share),
                    n.ring_share
                        .map_or_else(|| "-".into(), |s| format!("{s:.3}")),
                ]
            })
            .collect();
        write_table(
            out,
            &["NODE", "ADDRESS", "SERVED", "SERVED SHARE", "RING SHARE"],
            &rows,
        )?;
        if let Some(record) = &self.record {
            writeln!(out, "\nwrites recorded in {record}")?;
        }
        Ok(())
    }
}

/// The result of `--verify`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct VerifyReport {
    /// The run the record is of.
    pub(crate) run: String,
    /// Keys in the record.
    pub(crate) keys: u64,
    /// Keys with at least one acknowledged write.
    pub(crate) acknowledged_keys: u64,
    /// Read back as expected.
    pub(crate) ok: u64,
    /// Absent although a write was acknowledged.
    pub(crate) missing: u64,
    /// Older than an acknowledged write.
    pub(crate) stale: u64,
    /// Not the bytes written for the key.
    pub(crate) corrupt: u64,
    /// Written later by another run: not judged.
    pub(crate) other_run: u64,
    /// A value of this run the record lacks.
    pub(crate) unrecorded: u64,
    /// Could not be read (every attempt failed).
    pub(crate) unreadable: u64,
    /// The last failure of each unreadable key, by kind.
    pub(crate) read_errors: BTreeMap<String, u64>,
    /// Keys whose acknowledged write is lost or damaged, or that could not be read.
    pub(crate) failed: u64,
}

impl VerifyReport {
    /// Prints the report as `output` asks.
    pub(crate) fn write(&self, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
        if output == Output::Json {
            return write_json(out, self);
        }
        writeln!(
            out,
            "ringside load --verify: run {}, {} keys ({} with an acknowledged write)",
            self.run, self.keys, self.acknowledged_keys
        )?;
        writeln!(out)?;
        let rows: Vec<Vec<String>> = [
            ("ok", self.ok),
            ("missing", self.missing),
            ("stale", self.stale),
            ("corrupt", self.corrupt),
            ("other run", self.other_run),
            ("unrecorded", self.unrecorded),
            ("unreadable", self.unreadable),
        ]
        .iter()
        .map(|(name, n)| vec![(*name).to_owned(), n.to_string()])
        .collect();
        write_table(out, &["KEYS", "COUNT"], &rows)?;
        if !self.read_errors.is_empty() {
            writeln!(out)?;
            let rows: Vec<Vec<String>> = self
                .read_errors
                .iter()
                .map(|(kind, n)| vec![kind.clone(), n.to_string()])
                .collect();
            write_table(out, &["READ ERROR", "COUNT"], &rows)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::client::Reply;

    fn answered(status: u16, node: &str, forwarded: bool, ms: u64) -> Exchange {
        Exchange {
            latency: Duration::from_millis(ms),
            result: Ok(Reply {
                status,
                served_by: Some(node.into()),
                forwarded,
                body: bytes::Bytes::new(),
            }),
        }
    }

    #[test]
    fn outcomes_are_counted_by_kind() {
        let mut stats = Stats::default();
        stats.add(Op::Get, &answered(200, "a", true, 1));
        stats.add(Op::Get, &answered(404, "b", false, 2));
        stats.add(Op::Put, &answered(204, "a", false, 3));
        stats.add(Op::Put, &answered(404, "a", false, 3));
        stats.add(Op::Put, &answered(503, "a", false, 4));
        stats.add(
            Op::Get,
            &Exchange {
                latency: Duration::from_secs(10),
                result: Err("timeout".into()),
            },
        );
        assert_eq!(
            (stats.get.requests, stats.get.ok, stats.get.not_found),
            (3, 1, 1)
        );
        assert_eq!(
            (stats.put.requests, stats.put.ok, stats.put.errors),
            (3, 1, 2)
        );
        assert_eq!(stats.all.errors, 3);
        assert_eq!(
            stats.errors,
            [
                ("HTTP 404".into(), 1),
                ("HTTP 503".into(), 1),
                ("timeout".into(), 1)
            ]
            .into()
        );
        // Served: the 200, the read's 404, the 204.
        assert_eq!((stats.served, stats.forwarded), (3, 1));
        assert_eq!(stats.served_by, [("a".into(), 2), ("b".into(), 1)].into());
        // The timeout has no latency.
        assert_eq!(stats.all.latency.max(), Duration::from_millis(4));
    }

    #[test]
    fn the_summary_lists_served_nodes_and_ring_members() {
        let mut stats = Stats::default();
        stats.add(Op::Get, &answered(200, "a", false, 1));
        stats.add(Op::Get, &answered(200, "gone", false, 1));
        let ring = RingView {
            epoch: 3,
            members: [
                ("a".into(), ("127.0.0.1:1".into(), 0.6)),
                ("b".into(), ("127.0.0.1:2".into(), 0.4)),
            ]
            .into(),
        };
        let summary = Summary::new(
            &stats,
            RunFacts {
                run: 1,
                seed: 2,
                elapsed: Duration::from_secs(2),
                target_rate: 1.0,
                sent: 2,
                skipped: 0,
                max_in_flight: 1,
                clients: 1,
                interrupted: false,
                first_ring: Some(ring.clone()),
                last_ring: Some(ring),
                refresh_failures: 0,
                record: None,
            },
        );
        let json = serde_json::to_value(&summary).unwrap();
        let nodes = json["nodes"].as_array().unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "gone"]);
        assert_eq!(nodes[0]["served_share"], 0.5);
        assert_eq!(nodes[1]["served"], 0);
        assert_eq!(nodes[2]["ring_share"], 0.0);
        assert_eq!(json["achieved_rate"], 1.0);
        let mut table = Vec::new();
        summary.write(Output::Table, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(
            table.contains("RING SHARE") && table.contains("127.0.0.1:2"),
            "{table}"
        );
    }
}
