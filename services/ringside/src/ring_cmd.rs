//! `ringside ring`: what-if planning on a ring computed locally, no server needed.
//!
//! `lookup` prints the owner of each key; `plan` prints what a membership change would
//! move (ranges, moved fraction against the ideal). Both build the ring exactly as the
//! reducer does: members join in the order given, which matters for the balanced
//! strategy (a [`RingBuilder`], so a ring of many members costs what its tokens cost).
//!
//! Members are `id` or `id=weight`: ids are ordinary strings, `host:port` and IPv6
//! addresses included, so the weight's separator is one no such id contains.

use std::io::Write;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use ringside_ring::{Member, Ring, RingBuilder, RingConfig, RingDiff, Strategy};
use serde::Serialize;

use crate::output::{MovedRangeRow, Output, write_json, write_moved_ranges, write_table};

/// `ringside ring ...`
#[derive(Debug, Args)]
pub(crate) struct RingArgs {
    #[command(subcommand)]
    command: RingCommand,
}

#[derive(Debug, Subcommand)]
enum RingCommand {
    /// Print the owner of each key.
    Lookup(LookupArgs),
    /// Print what adding or removing members would move.
    Plan(PlanArgs),
}

/// The ring to compute: members and token configuration.
#[derive(Debug, Args)]
struct RingOpts {
    /// Members in join order, comma separated; `id=weight` sets a weight (default 1).
    #[arg(long, value_delimiter = ',', value_parser = parse_member, required = true)]
    members: Vec<Member>,
    /// Virtual nodes (tokens) per member.
    #[arg(long, default_value_t = RingConfig::default().vnodes)]
    vnodes: u32,
    /// Token strategy: random or balanced.
    #[arg(long, default_value_t = RingConfig::default().strategy)]
    strategy: Strategy,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, Args)]
struct LookupArgs {
    #[command(flatten)]
    ring: RingOpts,
    /// Keys to look up (bytes of the UTF-8 string).
    #[arg(required = true)]
    keys: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["add", "remove"])))]
struct PlanArgs {
    #[command(flatten)]
    ring: RingOpts,
    /// Members to add (after the removals), comma separated, `id=weight` allowed.
    #[arg(long, value_delimiter = ',', value_parser = parse_member)]
    add: Vec<Member>,
    /// Member ids to remove, comma separated.
    #[arg(long, value_delimiter = ',')]
    remove: Vec<String>,
    /// At most this many moved ranges in the table (JSON always has all of them).
    #[arg(long, default_value_t = 20)]
    max_ranges: usize,
}

/// Runs `ringside ring ...`, writing the result to `out`.
pub(crate) fn run(args: RingArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    match args.command {
        RingCommand::Lookup(args) => lookup(args, out),
        RingCommand::Plan(args) => plan(args, out),
    }
}

/// Parses `id` or `id=weight` (the last `=` separates the weight, so an id holding
/// one is written with its weight: `a=b=1`).
fn parse_member(spec: &str) -> Result<Member, String> {
    let (id, weight) = match spec.rsplit_once('=') {
        Some((id, weight)) => (id, parse_weight(id, weight)?),
        None => (spec, 1),
    };
    if id.is_empty() {
        return Err(format!("empty member id in '{spec}'"));
    }
    Ok(Member {
        id: id.to_owned(),
        weight,
    })
}

/// A member's weight: a whole number that fits a weight (0 is refused by the ring,
/// which says why).
fn parse_weight(id: &str, weight: &str) -> Result<u32, String> {
    weight.parse::<u32>().map_err(|_| {
        let digits = !weight.is_empty() && weight.bytes().all(|b| b.is_ascii_digit());
        if digits || weight.parse::<i128>().is_ok() {
            format!(
                "weight {weight} of member '{id}' is out of range: weights go from 1 to {}",
                u32::MAX
            )
        } else {
            format!("weight '{weight}' of member '{id}' is not a whole number")
        }
    })
}

fn build_ring(opts: &RingOpts) -> anyhow::Result<Ring> {
    let config = RingConfig::new(opts.strategy, opts.vnodes)?;
    let mut ring = RingBuilder::new(config);
    ring.change([], opts.members.iter().cloned())?;
    Ok(ring.build())
}

#[derive(Debug, Serialize)]
struct Lookup<'a> {
    key: &'a str,
    hash: String,
    owner: &'a str,
}

fn lookup(args: LookupArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let ring = build_ring(&args.ring)?;
    let mut rows = Vec::with_capacity(args.keys.len());
    for key in &args.keys {
        let owner = ring
            .owner(key.as_bytes())
            .with_context(|| format!("cannot look up key '{key}'"))?;
        rows.push(Lookup {
            key,
            hash: format!("{:#018x}", ringside_ring::hash_key(key.as_bytes())),
            owner,
        });
    }
    match args.ring.output {
        Output::Json => write_json(out, &rows),
        Output::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| vec![r.key.to_owned(), r.hash.clone(), r.owner.to_owned()])
                .collect();
            write_table(out, &["KEY", "HASH", "OWNER"], &cells)
        }
    }
}

#[derive(Debug, Serialize)]
struct ShareChange {
    id: String,
    before: f64,
    after: f64,
}

#[derive(Debug, Serialize)]
struct Plan {
    strategy: String,
    vnodes: u32,
    members_before: usize,
    members_after: usize,
    added: Vec<String>,
    removed: Vec<String>,
    moved_fraction: f64,
    ideal_fraction: f64,
    moved_over_ideal: Option<f64>,
    checksum_before: String,
    checksum_after: String,
    shares: Vec<ShareChange>,
    ranges: Vec<MovedRangeRow>,
}

fn plan(args: PlanArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let before = build_ring(&args.ring)?;
    let mut after = RingBuilder::from(before.clone());
    after
        .change(
            args.remove.iter().map(String::as_str),
            args.add.iter().cloned(),
        )
        .context("cannot make the change")?;
    let after = after.build();
    if after.is_empty() {
        bail!("the plan removes every member; a ring needs at least one");
    }
    let diff = ringside_ring::diff(&before, &after);
    let plan = describe_plan(&args, &before, &after, &diff);
    match args.ring.output {
        Output::Json => write_json(out, &plan),
        Output::Table => write_plan_table(out, &plan, args.max_ranges),
    }
}

fn describe_plan(args: &PlanArgs, before: &Ring, after: &Ring, diff: &RingDiff) -> Plan {
    let mut shares: Vec<ShareChange> = before
        .ownership()
        .into_iter()
        .map(|s| ShareChange {
            id: s.id.to_string(),
            before: s.fraction,
            after: 0.0,
        })
        .collect();
    for share in after.ownership() {
        match shares.iter_mut().find(|c| c.id == share.id) {
            Some(change) => change.after = share.fraction,
            None => shares.push(ShareChange {
                id: share.id.to_string(),
                before: 0.0,
                after: share.fraction,
            }),
        }
    }
    shares.sort_by(|a, b| a.id.cmp(&b.id));
    let ranges = diff.ranges.iter().map(MovedRangeRow::from).collect();
    Plan {
        strategy: args.ring.strategy.to_string(),
        vnodes: args.ring.vnodes,
        members_before: before.len(),
        members_after: after.len(),
        added: args.add.iter().map(|m| m.id.clone()).collect(),
        removed: args.remove.clone(),
        moved_fraction: diff.moved_fraction,
        ideal_fraction: diff.ideal_fraction,
        moved_over_ideal: diff.moved_over_ideal(),
        checksum_before: format!("{:#018x}", before.checksum()),
        checksum_after: format!("{:#018x}", after.checksum()),
        shares,
        ranges,
    }
}

fn write_plan_table(out: &mut dyn Write, plan: &Plan, max_ranges: usize) -> anyhow::Result<()> {
    let mut change = Vec::new();
    if !plan.removed.is_empty() {
        change.push(format!("-{}", plan.removed.join(" -")));
    }
    if !plan.added.is_empty() {
        change.push(format!("+{}", plan.added.join(" +")));
    }
    writeln!(
        out,
        "plan: {} -> {} members ({}), strategy {}, {} vnodes",
        plan.members_before,
        plan.members_after,
        change.join(" "),
        plan.strategy,
        plan.vnodes
    )?;
    let ratio = plan
        .moved_over_ideal
        .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}"));
    writeln!(
        out,
        "moved {:.4} of the key space (ideal {:.4}, moved/ideal {ratio}) in {} ranges",
        plan.moved_fraction,
        plan.ideal_fraction,
        plan.ranges.len()
    )?;
    writeln!(
        out,
        "checksum {} -> {}\n",
        plan.checksum_before, plan.checksum_after
    )?;
    let share_rows: Vec<Vec<String>> = plan
        .shares
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                format!("{:.4}", s.before),
                format!("{:.4}", s.after),
                format!("{:+.4}", s.after - s.before),
            ]
        })
        .collect();
    write_table(out, &["MEMBER", "BEFORE", "AFTER", "CHANGE"], &share_rows)?;
    writeln!(out)?;
    write_moved_ranges(out, &plan.ranges, max_ranges)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_member_reads_ids_and_weights() {
        let member = |id: &str, weight| Ok(Member::new(id, weight));
        assert_eq!(parse_member("a"), member("a", 1));
        assert_eq!(parse_member("node-1=3"), member("node-1", 3));
        // Ids with colons are ids: host:port, IPv6.
        assert_eq!(parse_member("web-0:8080"), member("web-0:8080", 1));
        assert_eq!(parse_member("fe80::1=2"), member("fe80::1", 2));
        assert_eq!(parse_member("a=b=4"), member("a=b", 4));
        assert!(parse_member("=3").unwrap_err().contains("empty member id"));
        for bad in ["a=x", "a=", "a=1.5"] {
            assert!(
                parse_member(bad)
                    .unwrap_err()
                    .contains("not a whole number"),
                "{bad}"
            );
        }
        for far in [
            "a=4294967296",
            "a=-1",
            "a=99999999999999999999999999999999999999999",
        ] {
            assert!(
                parse_member(far).unwrap_err().contains("out of range"),
                "{far}"
            );
        }
    }
}
