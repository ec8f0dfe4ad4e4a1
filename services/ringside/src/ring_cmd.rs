//! `ringside ring`: what-if planning on a ring computed locally, no server needed.
//!
//! `lookup` prints the owner of each key; `plan` prints what a membership change would
//! move (ranges, moved fraction against the ideal). Both build the ring exactly as the
//! reducer does: members join in the order given, which matters for the balanced
//! strategy.

use std::io::Write;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use ringside_ring::{Member, Ring, RingConfig, RingDiff, Strategy};
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
    /// Members in join order, comma separated; `id:weight` sets a weight (default 1).
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
    /// Members to add (after the removals), comma separated, `id:weight` allowed.
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

/// Parses `id` or `id:weight`.
fn parse_member(spec: &str) -> Result<Member, String> {
    let (id, weight) = match spec.split_once(':') {
        Some((id, weight)) => {
            let weight = weight
                .parse::<u32>()
                .map_err(|_| format!("weight '{weight}' of member '{id}' is not a whole number"))?;
            (id, weight)
        }
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

fn build_ring(opts: &RingOpts) -> anyhow::Result<Ring> {
    let config = RingConfig::new(opts.strategy, opts.vnodes)?;
    let mut ring = Ring::new(config);
    for member in &opts.members {
        ring.add(member.clone())?;
    }
    Ok(ring)
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
    let mut after = before.clone();
    for id in &args.remove {
        after
            .remove(id)
            .with_context(|| format!("cannot remove '{id}'"))?;
    }
    for member in &args.add {
        after
            .add(member.clone())
            .with_context(|| format!("cannot add '{}'", member.id))?;
    }
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
        moved_over_ideal: (diff.ideal_fraction > 0.0)
            .then(|| diff.moved_fraction / diff.ideal_fraction),
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
        assert_eq!(
            parse_member("a"),
            Ok(Member {
                id: "a".into(),
                weight: 1
            })
        );
        assert_eq!(
            parse_member("node-1:3"),
            Ok(Member {
                id: "node-1".into(),
                weight: 3
            })
        );
        assert!(parse_member(":3").is_err());
        assert!(parse_member("a:x").is_err());
        assert!(parse_member("a:-1").is_err());
    }
}
